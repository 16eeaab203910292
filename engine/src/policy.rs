//! The gateway policies a route applies before proxying, in this fixed order:
//! authentication (API keys, consumer allow-list), rate limits, and then the route's
//! action when it answers by itself (direct response, redirect). Also the target rewrite
//! (prefix stripping, API key removed from the query). Each refusal is a small response with
//! the fields a client needs (WWW-Authenticate, Retry-After, RateLimit-*).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use config::{Action, ApiKeyAuth, AuthKind, LimitKey, PathMatch, Required, Route};
use proto_http::RequestHead;

use crate::auth::{presented_key, query_param, KeySource};
use crate::forward;
use crate::io::Conn;
use crate::jwt::{self, JwtError};
use crate::local::{send_error, send_local, Reply};
use crate::proxy::Next;
use crate::ratelimit::{bucket_key, Decision};
use crate::tls::Tls;
use crate::worker::Worker;

/// A policy's answer instead of the upstream's.
pub(crate) struct Refusal {
    status: u16,
    headers: Vec<(&'static [u8], Vec<u8>)>,
    detail: &'static str,
}

impl Refusal {
    pub(crate) async fn send(self, w: &Worker, client: &mut Conn, reply: Reply<'_>) -> Next {
        let extra: Vec<(&[u8], &[u8])> = self.headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        send_error(w, client, self.status, self.detail, &extra, reply).await
    }
}

/// Answers a CORS preflight (OPTIONS with Origin and Access-Control-Request-Method) for a
/// route with a CORS policy: 204 with the allowed methods and headers, or 403 for an origin
/// the policy does not allow. `None` when the request is not a preflight.
pub(crate) async fn preflight(
    w: &Worker,
    client: &mut Conn,
    route: &Route,
    req: &RequestHead,
    reply: Reply<'_>,
) -> Option<Next> {
    let cors = route.cors.as_ref()?;
    if req.method() != b"OPTIONS" {
        return None;
    }
    let origin = req.header(b"origin")?;
    req.header(b"access-control-request-method")?;
    if !cors.allows_origin(origin) {
        let r = Refusal { status: 403, headers: Vec::new(), detail: "origin not allowed" };
        return Some(r.send(w, client, reply).await);
    }
    let max_age = cors.max_age_secs.to_string();
    let mut fields: Vec<(&[u8], &[u8])> = vec![
        (b"access-control-allow-origin", if cors.origins.is_empty() { b"*" } else { origin }),
        (b"access-control-allow-methods", cors.methods.as_bytes()),
        (b"access-control-max-age", max_age.as_bytes()),
        (b"vary", b"origin, access-control-request-method, access-control-request-headers"),
    ];
    // Allowed request headers: the configured list, or (when none is configured) whatever
    // the browser asks for.
    let asked = req.header(b"access-control-request-headers").unwrap_or(b"");
    let allowed = if cors.headers.is_empty() { asked } else { cors.headers.as_bytes() };
    if !allowed.is_empty() {
        fields.push((b"access-control-allow-headers", allowed));
    }
    if cors.credentials {
        fields.push((b"access-control-allow-credentials", b"true"));
    }
    Some(send_local(w, client, 204, &fields, b"", reply).await)
}

/// The origin to answer on a CORS route's actual response, when it is allowed.
pub(crate) fn cors_origin<'a>(route: &'a Route, req: &'a RequestHead) -> Option<(&'a config::Cors, &'a [u8])> {
    let cors = route.cors.as_ref()?;
    let origin = req.header(b"origin")?;
    cors.allows_origin(origin).then_some((cors, origin))
}

/// 403 when the client's address is denied, or not in a non-empty allow list, or when the
/// route requires a client certificate and the connection presented none (`tls` is the
/// client connection's TLS state).
pub(crate) fn check_access(route: &Route, peer: SocketAddr, tls: Option<&Tls>) -> Result<(), Refusal> {
    if !route.access.admits(peer.ip()) {
        return Err(Refusal { status: 403, headers: Vec::new(), detail: "client address not allowed" });
    }
    if route.require_client_cert && !tls.is_some_and(Tls::has_client_cert) {
        return Err(Refusal { status: 403, headers: Vec::new(), detail: "client certificate required" });
    }
    Ok(())
}

/// Who sent a request, as far as the route's authentication established it.
#[derive(Debug, Default)]
pub(crate) struct Identity {
    /// The API-key consumer.
    pub consumer: Option<usize>,
    /// The JWT `sub` claim, or the name an authorization service gave.
    pub subject: Option<String>,
    /// Where the API key was found (to strip it).
    pub key_source: Option<KeySource>,
    /// Fields added to the request: JWT claims, or an authorization service's (lower-case
    /// name, value).
    pub claim_fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// All claims of a verified JWT, for `{claim:NAME}` templates.
    pub claims: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Identity {
    /// The name used for `{consumer}` and consumer rate limits: the API-key consumer's name,
    /// or the JWT subject.
    pub(crate) fn name<'a>(&'a self, cfg: &'a config::Config) -> Option<&'a [u8]> {
        self.consumer.map(|c| cfg.consumers[c].name.as_bytes()).or(self.subject.as_deref().map(str::as_bytes))
    }
}

/// Authenticates the request as the route requires: 401 without valid credentials, 403 for
/// an API-key or Basic consumer the route does not allow.
pub(crate) fn authenticate(w: &Worker, route: &Route, req: &RequestHead) -> Result<Identity, Refusal> {
    match route.auth {
        AuthKind::None => Ok(Identity::default()),
        AuthKind::External => unreachable!("external checks are `external_auth::authorize`'s"),
        AuthKind::ApiKey => {
            let challenge = || {
                vec![(
                    &b"www-authenticate"[..],
                    format!("ApiKey realm=\"coregate\", header=\"{}\"", w.cfg.api_key.header).into_bytes(),
                )]
            };
            let Some((key, source)) = presented_key(req, &w.cfg.api_key) else {
                return Err(Refusal { status: 401, headers: challenge(), detail: "an API key is required" });
            };
            let Some(consumer) = w.keys.consumer(key) else {
                return Err(Refusal { status: 401, headers: challenge(), detail: "invalid API key" });
            };
            allowed(route, consumer)?;
            Ok(Identity { consumer: Some(consumer), key_source: Some(source), ..Identity::default() })
        }
        AuthKind::Basic => match w.basic.check(&w.cfg.consumers, req) {
            Ok(consumer) => {
                allowed(route, consumer)?;
                Ok(Identity {
                    consumer: Some(consumer),
                    key_source: Some(KeySource::Authorization),
                    ..Identity::default()
                })
            }
            Err(why) => {
                // RFC 7617 2: the realm, and UTF-8 for user-ids and passwords.
                let challenge = format!("Basic realm=\"{}\", charset=\"UTF-8\"", w.cfg.basic.realm).into_bytes();
                let detail = match why {
                    crate::basic_auth::Refused::Missing => "credentials are required",
                    crate::basic_auth::Refused::Invalid => "invalid credentials",
                };
                Err(Refusal { status: 401, headers: vec![(b"www-authenticate", challenge)], detail })
            }
        },
        AuthKind::Jwt => match jwt::verify(&w.cfg.jwt, req) {
            Ok(claims) => {
                let claim_fields = w
                    .cfg
                    .jwt
                    .claims_to_headers
                    .iter()
                    .filter_map(|(claim, header)| {
                        claims
                            .get(claim)
                            .and_then(jwt::claim_value)
                            .map(|v| (header.as_bytes().to_vec(), v.into_bytes()))
                    })
                    .collect();
                if !jwt::meets(&route.require_claims, &claims) {
                    // RFC 6750 3.1: a valid token without the rights the resource needs.
                    let value = b"Bearer realm=\"coregate\", error=\"insufficient_scope\"".to_vec();
                    return Err(Refusal {
                        status: 403,
                        headers: vec![(b"www-authenticate", value)],
                        detail: "the token lacks a claim this route requires",
                    });
                }
                let subject = claims.get("sub").and_then(jwt::claim_value);
                Ok(Identity { subject, claim_fields, claims: Some(claims), ..Identity::default() })
            }
            Err(e) => {
                if e == JwtError::UnknownKey {
                    // The server fetches the key set again (never more often than every 10 s);
                    // this request is refused now, later ones signed with that key pass.
                    let _ = w.jwks_wanted.try_send(());
                }
                let (value, detail) = match e {
                    JwtError::Missing => ("Bearer realm=\"coregate\"", "a bearer token is required"),
                    JwtError::Invalid | JwtError::UnknownKey => {
                        ("Bearer realm=\"coregate\", error=\"invalid_token\"", "invalid bearer token")
                    }
                };
                Err(Refusal { status: 401, headers: vec![(b"www-authenticate", value.as_bytes().to_vec())], detail })
            }
        },
    }
}

/// 403 unless the route admits `consumer` (an empty list admits every authenticated one).
fn allowed(route: &Route, consumer: usize) -> Result<(), Refusal> {
    if route.consumers.is_empty() || route.consumers.contains(&consumer) {
        return Ok(());
    }
    Err(Refusal { status: 403, headers: Vec::new(), detail: "this consumer may not use this route" })
}

/// How long a request may wait for the bank's answer when its worker has spent its credit
/// (normally well under a millisecond; the bank is one thread for all workers).
const LEASE_WAIT: Duration = Duration::from_millis(20);

/// Takes a token from every limit of the route, then from every limit of the request's
/// consumer (`consumers[].rate_limits`); 429 from the first that has none.
pub(crate) async fn rate_limit(
    w: &Worker,
    route_idx: usize,
    route: &Route,
    req: &RequestHead,
    peer: SocketAddr,
    identity: &Identity,
) -> Result<(), Refusal> {
    let plan = identity.consumer.map(|c| (c, &w.cfg.consumers[c].rate_limits[..])).filter(|(_, l)| !l.is_empty());
    if route.rate_limits.is_empty() && plan.is_none() {
        return Ok(());
    }
    let Some(buckets) = &w.buckets else { return Ok(()) };
    let first_id = w.limit_ids[route_idx];
    let ip_bytes = match peer.ip() {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(a) => a.octets(),
    };
    for (i, limit) in route.rate_limits.iter().enumerate() {
        let k: &[u8] = match &limit.key {
            LimitKey::Route => b"",
            LimitKey::ClientIp => &ip_bytes,
            LimitKey::Consumer => identity.name(&w.cfg).unwrap_or_default(),
            LimitKey::Header(name) => req.header(name.as_bytes()).unwrap_or(b""),
        };
        take(w, buckets, first_id + i as u32, k, limit).await?;
    }
    if let Some((consumer, limits)) = plan {
        // Each consumer's limits have ids of their own: the bucket needs no other key.
        for (i, limit) in limits.iter().enumerate() {
            take(w, buckets, w.consumer_limit_ids[consumer] + i as u32, b"", limit).await?;
        }
    }
    Ok(())
}

/// Takes a token from limit `id`'s bucket for key `k`, waiting up to [`LEASE_WAIT`] for a
/// lease when this worker's credit is spent.
async fn take(
    w: &Worker,
    buckets: &std::cell::RefCell<crate::ratelimit::Buckets>,
    id: u32,
    k: &[u8],
    limit: &config::RateLimit,
) -> Result<(), Refusal> {
    let give_up = Instant::now() + LEASE_WAIT;
    loop {
        let decision = {
            let mut key = w.scratch.borrow_mut();
            bucket_key(&mut key, id, k);
            buckets.borrow_mut().check(&key, Instant::now())
        };
        match decision {
            Decision::Allow => return Ok(()),
            Decision::Wait if Instant::now() < give_up => monoio::time::sleep(Duration::from_micros(200)).await,
            Decision::Wait | Decision::Deny => return Err(too_many(limit.rate, limit.burst)),
        }
    }
}

/// 429 with RateLimit-* fields (draft-ietf-httpapi-ratelimit-headers): the quota is the
/// burst, refilled at `rate`; a token is back in 1/rate seconds.
fn too_many(rate: f64, burst: u32) -> Refusal {
    let reset = (1.0 / rate).ceil().max(1.0) as u64;
    Refusal {
        status: 429,
        headers: vec![
            (b"retry-after", reset.to_string().into_bytes()),
            (b"ratelimit-limit", burst.to_string().into_bytes()),
            (b"ratelimit-remaining", b"0".to_vec()),
            (b"ratelimit-reset", reset.to_string().into_bytes()),
        ],
        detail: "rate limit exceeded",
    }
}

/// Answers a route whose action is a direct response or a redirect.
pub(crate) async fn respond(
    w: &Worker,
    client: &mut Conn,
    action: &Action,
    req: &RequestHead,
    route_idx: usize,
    reply: Reply<'_>,
) -> Next {
    match action {
        Action::Respond { status, headers, body } => {
            let fields: Vec<(&[u8], &[u8])> = headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
            send_local(w, client, *status, &fields, body.as_bytes(), reply).await
        }
        Action::Redirect { status, location } => {
            let location = redirect_location(w, location, req, route_idx);
            let fields: [(&[u8], &[u8]); 1] = [(b"location", &location)];
            send_local(w, client, *status, &fields, b"", reply).await
        }
        Action::Proxy { .. } | Action::Split(_) => unreachable!("proxy routes are not answered locally"),
    }
}

/// A redirect's Location (RFC 9110 10.2.2): the route's template with `{host}`, `{uri}` and
/// the path captures filled (the configuration refuses other placeholders there).
fn redirect_location(w: &Worker, t: &config::Template, req: &RequestHead, route_idx: usize) -> Vec<u8> {
    let captures = w.routes.captures(&w.cfg.routes, route_idx, req.path_only());
    let mut out = Vec::with_capacity(128);
    for piece in &t.0 {
        match piece {
            config::Piece::Text(s) => out.extend_from_slice(s.as_bytes()),
            config::Piece::Host => forward::push_host(&mut out, req),
            config::Piece::Uri => out.extend_from_slice(req.path()),
            config::Piece::Capture(n) => forward::expand_capture(&mut out, &captures, n),
            config::Piece::ClientIp | config::Piece::Consumer | config::Piece::Claim(_) => {}
        }
    }
    out
}

/// Whether a route's conditions beyond host and path hold: scheme, method, fields, query.
/// `https`: the request came over TLS.
pub(crate) fn conditions_hold(route: &Route, req: &RequestHead, https: bool) -> bool {
    if route.https.is_some_and(|want| want != https) {
        return false;
    }
    if !crate::route::method_matches(&route.methods, req.method()) {
        return false;
    }
    let holds = |found: Option<&[u8]>, want: &Required| match (found, want) {
        (None, _) => false,
        (Some(_), Required::Present) => true,
        (Some(v), Required::Equals(e)) => v == e.as_bytes(),
    };
    route.headers.iter().all(|(name, want)| holds(req.header(name.as_bytes()), want))
        && route.query.iter().all(|(name, want)| holds(query_param(req.path(), name.as_bytes()), want))
}

/// How the target sent upstream differs from the client's: a rewrite from the path's
/// captures (or the matched prefix stripped), query parameters removed and added, and the
/// API key's query parameter removed. Written straight into the request head
/// ([`TargetEdit::write`]), so that changing it allocates nothing.
pub(crate) struct TargetEdit<'a> {
    route: &'a Route,
    /// The query parameter that carried the API key, removed.
    key_param: Option<&'a [u8]>,
    /// Parameters are removed or added (the route's, or the key's): the query is rebuilt.
    query_edits: bool,
}

/// The route's changes to the target, or `None` when the client's goes upstream as it is.
pub(crate) fn target_edit<'a>(route: &'a Route, key: Option<KeySource>, api: &'a ApiKeyAuth) -> Option<TargetEdit<'a>> {
    let key_param = (key == Some(KeySource::Query)).then_some(api.query.as_deref()).flatten().map(str::as_bytes);
    let query_edits = !route.query_remove.is_empty() || !route.query_add.is_empty() || key_param.is_some();
    (route.rewrite.is_some() || route.strip_prefix || query_edits).then_some(TargetEdit {
        route,
        key_param,
        query_edits,
    })
}

impl TargetEdit<'_> {
    /// Appends the upstream target for the client's target `full` to `out`; `captures` are
    /// the route's path captures.
    pub(crate) fn write(&self, out: &mut Vec<u8>, full: &[u8], captures: &[(&str, &[u8])]) {
        let route = self.route;
        let (path, query) = match full.iter().position(|&b| b == b'?') {
            Some(i) => (&full[..i], &full[i..]),
            None => (full, &full[full.len()..]),
        };
        if let Some(rewrite) = &route.rewrite {
            for piece in &rewrite.0 {
                match piece {
                    config::Piece::Text(s) => out.extend_from_slice(s.as_bytes()),
                    config::Piece::Capture(n) => forward::expand_capture(out, captures, n),
                    // Other placeholders are refused in rewrites at load time.
                    config::Piece::ClientIp
                    | config::Piece::Consumer
                    | config::Piece::Claim(_)
                    | config::Piece::Host
                    | config::Piece::Uri => {}
                }
            }
        } else if let (true, PathMatch::Prefix(prefix)) = (route.strip_prefix, &route.path) {
            let cut = prefix.trim_end_matches('/').len().min(path.len());
            if !path[cut..].starts_with(b"/") {
                out.push(b'/');
            }
            out.extend_from_slice(&path[cut..]);
        } else {
            out.extend_from_slice(path);
        }
        if !self.query_edits {
            out.extend_from_slice(query);
            return;
        }
        // The client's parameters in their order, less the removed ones, those added (an
        // added one replaces the client's) and empty ones; then the added ones.
        let dropped = |name: &[u8]| {
            self.key_param == Some(name)
                || route.query_remove.iter().any(|n| n.as_bytes() == name)
                || route.query_add.iter().any(|(n, _)| n.as_bytes() == name)
        };
        let mut sep = b'?';
        let kept = query.get(1..).unwrap_or_default().split(|&b| b == b'&').filter(|pair| {
            let name = pair.split(|&b| b == b'=').next().unwrap_or(pair);
            !pair.is_empty() && !dropped(name)
        });
        for pair in kept {
            out.push(std::mem::replace(&mut sep, b'&'));
            out.extend_from_slice(pair);
        }
        for (k, v) in &route.query_add {
            out.push(std::mem::replace(&mut sep, b'&'));
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The target sent upstream for `target` by the one route of `route_keys`, with the API
    /// key (parameter `key`) presented in the query when `key_in_query`.
    fn upstream(route_keys: &str, target: &str, key_in_query: bool) -> String {
        let cfg = config::Config::parse(&format!(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[auth.api_key]\nquery = \"key\"\n\
             [[upstreams]]\nname = \"u\"\nendpoints = [\"127.0.0.1:2\"]\n[[routes]]\n{route_keys}\nupstream = \"u\"\n"
        ))
        .unwrap();
        let route = &cfg.routes[0];
        let source = key_in_query.then_some(KeySource::Query);
        let Some(edit) = target_edit(route, source, &cfg.api_key) else { return target.to_string() };
        let table = crate::route::RouteTable::new(&cfg.routes);
        let path_only = target.split('?').next().unwrap().as_bytes();
        let mut out = b"kept:".to_vec();
        edit.write(&mut out, target.as_bytes(), &table.captures(&cfg.routes, 0, path_only));
        String::from_utf8(out.split_off(5)).unwrap()
    }

    #[test]
    fn upstream_targets() {
        let cases = [
            ("path = \"/p\"", "/p/x?a=1", false, "/p/x?a=1"),
            ("path = \"/p\"", "/p/x?a=1&key=abc&b=2", true, "/p/x?a=1&b=2"),
            ("path = \"/p\"", "/p?key=abc", true, "/p"),
            ("path = \"/p\"", "/p", true, "/p"),
            ("path = \"/p\"\nstrip_prefix = true", "/p/x?q", false, "/x?q"),
            ("path = \"/p/\"\nstrip_prefix = true", "/p", false, "/"),
            ("path = \"/p\"\nquery_remove = [\"d\"]", "/p?d=1&&e=2&d&f", false, "/p?e=2&f"),
            ("path = \"/p\"\nquery_remove = [\"d\"]", "/p?d=1", false, "/p"),
            ("path = \"/p\"\nquery_add = { z = \"1\", a = \"2\" }", "/p?a=0&b=1", false, "/p?b=1&a=2&z=1"),
            ("path = \"/p\"\nquery_add = { a = \"2\" }", "/p?", false, "/p?a=2"),
            (
                "path_template = \"/u/{id}\"\nrewrite = \"/users/{id}\"\nquery_remove = [\"x\"]",
                "/u/7?x=1&y=2",
                true,
                "/users/7?y=2",
            ),
            ("path_regex = '/r/(?P<a>[0-9]+)/(?P<b>.*)'\nrewrite = \"/{b}/{a}\"", "/r/1/s/t?k", false, "/s/t/1?k"),
        ];
        for (route, target, key_in_query, want) in cases {
            assert_eq!(upstream(route, target, key_in_query), want, "{route} {target}");
        }
    }
}
