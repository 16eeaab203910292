//! External authorization (`auth = "external"`, `[auth.external]`): before a request is
//! proxied, a check goes to the authorization service (one of the upstreams) and its answer
//! decides: 2xx lets the request through, with chosen fields of the answer added to it; 3xx
//! and 4xx are the client's answer (status, fields and body: a 401 with its challenge, a
//! redirect to a login page); a 5xx, a broken answer or none in time is a failure, answered
//! 503 unless failures are set to let requests through. nginx's `auth_request`, Envoy's
//! HTTP `ext_authz` and Traefik's `forwardAuth` behave so.
//!
//! Left to others: the connection, its pooling and the endpoint's health (`upstream::aside`),
//! reading bodies (`body`), what the allowed request carries upstream (`forward`).

use bytes::Bytes;
use config::ExternalAuth;
use proto_http::write::{field, request_line};
use proto_http::{is_hop_by_hop, Method, RequestHead, ResponseBody};

use crate::body::{discard, read_whole, Leg};
use crate::error::{Error, Kind, Side};
use crate::forward::{connection_values, named_by_connection};
use crate::io::Conn;
use crate::local::{send_error, send_local, Reply};
use crate::policy::Identity;
use crate::proxy::{Next, Tags};
use crate::worker::Worker;

/// What became of a check, as `coregate_external_auth_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Allowed,
    Denied,
    /// Answered 503.
    Failed,
    /// Let through (`failure = "allow"`).
    FailedOpen,
}

/// The names of [`Outcome`]s, in order.
pub(crate) const NAMES: [&str; 4] = ["allowed", "denied", "failed", "failed_open"];

/// The answer of a denying check, passed to the client.
#[derive(Debug)]
pub(crate) struct Denial {
    pub status: u16,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Bytes,
}

/// What the service said.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Let the request through as this identity (its fields go upstream).
    Allow(Identity),
    Deny(Box<Denial>),
    /// No usable answer.
    Failed(Error),
}

/// The largest denial body passed on: login pages and problem documents are small, and the
/// body is held whole while it is read.
const MAX_DENIAL_BODY: usize = 64 * 1024;

/// Asks the authorization service about `req`. `client_ip`: the client's address as text;
/// `https`: the request came over TLS; `tags`: its request id and trace context, which the
/// check carries too.
pub(crate) async fn check(
    w: &Worker,
    ext: &ExternalAuth,
    req: &RequestHead,
    client_ip: &[u8],
    https: bool,
    tags: Tags<'_>,
) -> Verdict {
    let mut head = Vec::with_capacity(req.bytes.len() + 256);
    check_head(&mut head, ext, req, client_ip, https, tags, || w.cfg.upstreams[ext.upstream].endpoint_host(0));
    let limits = &w.cfg.limits.wire;
    let ask = crate::upstream::aside(w, ext.upstream, head, false, ext.timeout, async |up, resp| {
        let status = resp.meta.status;
        let mut verdict = match status {
            200..=299 => {
                let mut identity = Identity::default();
                for (name, value) in resp.headers() {
                    if ext.upstream_headers.iter().any(|h| h.as_bytes().eq_ignore_ascii_case(name)) {
                        identity.claim_fields.push((name.to_ascii_lowercase(), value.to_vec()));
                    }
                    if ext.identity_header.as_ref().is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(name)) {
                        identity.subject = std::str::from_utf8(value).ok().map(str::to_string);
                    }
                }
                Verdict::Allow(identity)
            }
            300..=499 => {
                let fields = resp
                    .headers()
                    .filter(|(n, _)| passed_back(n))
                    .map(|(n, v)| (n.to_ascii_lowercase(), v.to_vec()))
                    .collect();
                Verdict::Deny(Box::new(Denial { status, fields, body: Bytes::new() }))
            }
            _ => Verdict::Failed(Error::new(Kind::Io, Side::Upstream, "the authorization service answered 5xx")),
        };
        let meta = resp.meta;
        // The head's bytes share the connection's buffer: released before the body reads.
        drop(resp.bytes);
        if let Verdict::Deny(denial) = &mut verdict {
            let leg =
                Leg { from: Side::Upstream, to: Side::Client, read_timeout: ext.timeout, write_timeout: ext.timeout };
            match read_whole(up, meta.body, MAX_DENIAL_BODY, limits, &leg).await? {
                Some(body) => denial.body = body,
                None => {
                    discard(up, meta.body, limits, ext.timeout).await?;
                    let e = if meta.body == ResponseBody::Close {
                        "the authorization service's denial has no length (close-delimited)"
                    } else {
                        "the authorization service's denial has a body over 64 KiB"
                    };
                    verdict = Verdict::Failed(Error::new(Kind::Io, Side::Upstream, e));
                }
            }
        } else {
            discard(up, meta.body, limits, ext.timeout).await?;
        }
        Ok((meta, verdict))
    });
    let deadline = w.timers.deadline(ext.timeout);
    monoio::select! {
        biased;
        r = ask => r.unwrap_or_else(Verdict::Failed),
        _ = w.timers.wait(deadline) => {
            Verdict::Failed(Error::new(Kind::Timeout, Side::Upstream, "no answer from the authorization service in time"))
        }
    }
}

/// Runs the route's check and acts on it: the identity to proxy the request as, or the
/// answer the client got (a denial passed on, or 503 for a failed check).
pub(crate) async fn authorize(
    w: &Worker,
    client: &mut Conn,
    route: usize,
    req: &RequestHead,
    client_ip: &[u8],
    tags: Tags<'_>,
    reply: Reply<'_>,
) -> Result<Identity, Next> {
    let ext = w.cfg.external_auth.as_ref().expect("auth = \"external\" routes have [auth.external]");
    let verdict = check(w, ext, req, client_ip, client.tls.is_some(), tags).await;
    let outcome = match &verdict {
        Verdict::Allow(_) => Outcome::Allowed,
        Verdict::Deny(_) => Outcome::Denied,
        Verdict::Failed(_) if ext.fail_open => Outcome::FailedOpen,
        Verdict::Failed(_) => Outcome::Failed,
    };
    if let Some(stats) = &w.stats {
        stats.external_auth(route, outcome);
    }
    match verdict {
        Verdict::Allow(identity) => Ok(identity),
        Verdict::Deny(d) => {
            let fields: Vec<(&[u8], &[u8])> = d.fields.iter().map(|(n, v)| (&n[..], &v[..])).collect();
            // RFC 9110 9.3.2: no body in an answer to HEAD.
            let body = if req.meta.method == Method::Head { &[][..] } else { &d.body[..] };
            Err(send_local(w, client, d.status, &fields, body, reply).await)
        }
        Verdict::Failed(e) if ext.fail_open => {
            log::warn!("authorization check failed, request let through (failure = \"allow\"): {e}");
            Ok(Identity::default())
        }
        Verdict::Failed(e) => {
            log::warn!("authorization check failed: {e}");
            Err(send_error(w, client, 503, "the authorization service is unavailable", &[], reply).await)
        }
    }
}

/// Fields of a denial that go to the client: not those that frame the message or belong to
/// its connection (coregate writes its own), nor Date and Server (written once, by coregate).
fn passed_back(name: &[u8]) -> bool {
    !(is_hop_by_hop(name)
        || name.eq_ignore_ascii_case(b"content-length")
        || name.eq_ignore_ascii_case(b"date")
        || name.eq_ignore_ascii_case(b"server"))
}

/// The check's head: `GET {path}` with the client's Host (the upstream's first address
/// without one), what the request was in `X-Forwarded-Method`, `-Uri`, `-Host`, `-Proto`
/// and `-For`, and the client's fields (those `request_headers` lists, or every end-to-end
/// one). No body: the check is about the request's head. A client's own `X-Forwarded-*`
/// fields never reach the service, which must be able to trust them.
fn check_head(
    out: &mut Vec<u8>,
    ext: &ExternalAuth,
    req: &RequestHead,
    client_ip: &[u8],
    https: bool,
    tags: Tags<'_>,
    fallback_host: impl FnOnce() -> String,
) {
    request_line(out, b"GET", ext.path.as_bytes());
    match req.host() {
        Some(h) => field(out, b"host", h),
        None => field(out, b"host", fallback_host().as_bytes()),
    }
    field(out, b"x-forwarded-method", req.method());
    field(out, b"x-forwarded-uri", req.path());
    if let Some(h) = req.host() {
        field(out, b"x-forwarded-host", h);
    }
    field(out, b"x-forwarded-proto", if https { b"https" } else { b"http" });
    field(out, b"x-forwarded-for", client_ip);
    if let Some((name, id)) = tags.request_id {
        field(out, name, id);
    }
    if let Some(tp) = tags.traceparent {
        field(out, b"traceparent", tp);
    }
    let other_tokens = req.meta.connection.other;
    for (name, value) in req.headers() {
        let wanted = match &ext.request_headers {
            Some(list) => list.iter().any(|h| h.as_bytes().eq_ignore_ascii_case(name)),
            None => {
                !(is_hop_by_hop(name)
                    || name.eq_ignore_ascii_case(b"content-length")
                    || name.eq_ignore_ascii_case(b"expect")
                    || (other_tokens && named_by_connection(connection_values(req.headers()), name)))
            }
        };
        let written = name.eq_ignore_ascii_case(b"host")
            || (name.len() > 12 && name[..12].eq_ignore_ascii_case(b"x-forwarded-"))
            || tags.request_id.is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
            || (tags.traceparent.is_some() && name.eq_ignore_ascii_case(b"traceparent"));
        if wanted && !written {
            field(out, name, value);
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_http::{parse_request, Limits};

    fn ext(request_headers: Option<&[&str]>) -> ExternalAuth {
        ExternalAuth {
            upstream: 0,
            path: "/verify".into(),
            timeout: std::time::Duration::from_secs(1),
            request_headers: request_headers.map(|l| l.iter().map(|s| s.to_string()).collect()),
            upstream_headers: Vec::new(),
            identity_header: None,
            fail_open: false,
        }
    }

    fn head(ext: &ExternalAuth, text: &str, tags: Tags<'_>) -> String {
        let meta = parse_request(text.as_bytes(), &Limits::default()).unwrap().unwrap();
        let req = RequestHead::new(Bytes::copy_from_slice(text.as_bytes()), meta);
        let mut out = Vec::new();
        check_head(&mut out, ext, &req, b"10.0.0.7", true, tags, || "127.0.0.1:9".into());
        String::from_utf8(out).unwrap()
    }

    const REQ: &str = "POST /orders?id=1 HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer t\r\nCookie: s=1\r\nContent-Length: 5\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nX-Forwarded-Uri: /public\r\nX-Forwarded-For: 1.2.3.4\r\nExpect: 100-continue\r\nX-Request-Id: client-made\r\n\r\n";

    #[test]
    fn a_check_carries_what_the_request_was_and_its_end_to_end_fields() {
        let tags = Tags { request_id: Some((b"x-request-id", b"gw-1")), traceparent: None };
        assert_eq!(
            head(&ext(None), REQ, tags),
            "GET /verify HTTP/1.1\r\nhost: api.example.com\r\nx-forwarded-method: POST\r\nx-forwarded-uri: /orders?id=1\r\nx-forwarded-host: api.example.com\r\nx-forwarded-proto: https\r\nx-forwarded-for: 10.0.0.7\r\nx-request-id: gw-1\r\nAuthorization: Bearer t\r\nCookie: s=1\r\n\r\n"
        );
    }

    #[test]
    fn a_check_carries_only_the_listed_fields_when_there_is_a_list() {
        let only = ext(Some(&["cookie", "x-forwarded-uri", "x-request-id"]));
        let text = head(&only, REQ, Tags::default());
        assert!(
            text.ends_with("x-forwarded-for: 10.0.0.7\r\nCookie: s=1\r\nX-Request-Id: client-made\r\n\r\n"),
            "{text}"
        );
        // Without a Host, the upstream's address stands in.
        let text = head(&only, "GET / HTTP/1.0\r\n\r\n", Tags::default());
        assert!(text.starts_with("GET /verify HTTP/1.1\r\nhost: 127.0.0.1:9\r\nx-forwarded-method: GET\r\n"), "{text}");
        assert!(!text.contains("x-forwarded-host"), "{text}");
    }

    #[test]
    fn denials_pass_back_end_to_end_fields_only() {
        for (name, passed) in [
            (&b"WWW-Authenticate"[..], true),
            (b"location", true),
            (b"set-cookie", true),
            (b"content-type", true),
            (b"Content-Length", false),
            (b"transfer-encoding", false),
            (b"connection", false),
            (b"date", false),
            (b"server", false),
        ] {
            assert_eq!(passed_back(name), passed, "{}", String::from_utf8_lossy(name));
        }
    }
}
