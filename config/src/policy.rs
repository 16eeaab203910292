//! Validation of routes and the policies on them: path and method matching, actions
//! (proxy, respond, redirect), rate limits and header edits. Consumers and the lists of
//! them a route admits are `crate::consumers`'.

use std::collections::BTreeMap;

use crate::raw::{RawCors, RawHeaderOps, RawRateLimit, RawRoute};
use crate::validate::{parse_duration, Checker};
use crate::{
    Action, AuthKind, Consumer, Cors, HeaderOps, HostMatch, IpRules, LimitKey, PathMatch, Piece, RateLimit, Required,
    Route, Segment, Template, Upstream,
};

/// RFC 9110 5.6.2 token characters.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Every entry of `list` as a token (RFC 9110 5.6.2) passed through `norm`; the others are
/// reported as not being `what`.
fn tokens(c: &mut Checker, path: &str, list: &[String], what: &str, norm: fn(&str) -> String) -> Vec<String> {
    list.iter()
        .enumerate()
        .filter_map(|(i, t)| {
            if is_token(t) {
                Some(norm(t))
            } else {
                c.err(format!("{path}[{i}]"), format!("{t:?} is not {what}"));
                None
            }
        })
        .collect()
}

/// Field values may hold visible characters, spaces and tabs; never CR, LF or NUL.
pub(crate) fn is_field_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

/// A template: text with `{client_ip}`, `{consumer}`, and any of `captures`.
fn template_with(c: &mut Checker, path: &str, v: &str, captures: &[String]) -> Template {
    let mut pieces = Vec::new();
    let mut rest = v;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_string()));
        }
        let Some(close) = rest[open..].find('}') else {
            c.err(path, format!("unclosed '{{' in {v:?}"));
            return Template(pieces);
        };
        match &rest[open + 1..open + close] {
            "client_ip" => pieces.push(Piece::ClientIp),
            "consumer" => pieces.push(Piece::Consumer),
            "host" => pieces.push(Piece::Host),
            "uri" => pieces.push(Piece::Uri),
            other if captures.iter().any(|n| n == other) => pieces.push(Piece::Capture(other.to_string())),
            other if other.strip_prefix("claim:").is_some_and(|n| !n.is_empty()) => {
                pieces.push(Piece::Claim(other["claim:".len()..].to_string()))
            }
            other => c.err(
                path,
                format!("unknown placeholder {{{other}}} (known: {{client_ip}}, {{consumer}}, {{claim:NAME}}, {{host}}, {{uri}} and the path captures)"),
            ),
        }
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Template(pieces)
}

/// Fields that frame a message or belong to one connection (RFC 9110 7.6.1, RFC 9112 6):
/// coregate writes them itself, and an edit of them would break the framing both sides rely
/// on.
pub(crate) const MANAGED: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "expect",
];

fn header_ops(c: &mut Checker, path: &str, raw: &RawHeaderOps, captures: &[String]) -> HeaderOps {
    // Host may only be replaced, on the request: a request has exactly one (RFC 9112 3.2).
    let request = path.ends_with("request_headers");
    let mut pairs = |kind: &str, map: &BTreeMap<String, String>| -> Vec<(String, Template)> {
        map.iter()
            .filter_map(|(k, v)| {
                let p = format!("{path}.{kind}.{k}");
                if !is_token(k) {
                    c.err(&p, "not a header name");
                    return None;
                }
                if MANAGED.iter().any(|m| k.eq_ignore_ascii_case(m)) {
                    c.err(&p, "a framing or connection field, which coregate writes itself");
                    return None;
                }
                if k.eq_ignore_ascii_case("host") && !(request && kind == "set") {
                    c.err(&p, "Host can only be replaced (request_headers.set), never added or sent twice");
                    return None;
                }
                if !is_field_value(v) {
                    c.err(&p, "header values may not hold control characters");
                    return None;
                }
                Some((k.to_ascii_lowercase(), template_with(c, &p, v, captures)))
            })
            .collect()
    };
    let set = pairs("set", &raw.set);
    let add = pairs("add", &raw.add);
    let remove = tokens(c, &format!("{path}.remove"), &raw.remove, "a header name", str::to_ascii_lowercase);
    for (i, name) in remove.iter().enumerate() {
        if MANAGED.contains(&name.as_str()) || (request && name == "host") {
            c.err(format!("{path}.remove[{i}]"), format!("{name:?} is a field coregate writes itself"));
        }
    }
    HeaderOps { remove, set, add }
}

pub(crate) fn rate_limit(c: &mut Checker, path: &str, r: &RawRateLimit) -> Option<RateLimit> {
    let rate = match r.rate {
        Some(v) if v > 0.0 && v.is_finite() => v,
        _ => {
            c.err(format!("{path}.rate"), "a positive number of requests per second is required");
            return None;
        }
    };
    let burst = r.burst.unwrap_or_else(|| rate.ceil() as u32).max(1);
    let key = match r.key.as_deref().unwrap_or("route") {
        "route" => LimitKey::Route,
        "ip" => LimitKey::ClientIp,
        "consumer" => LimitKey::Consumer,
        other => match other.strip_prefix("header:") {
            Some(h) if is_token(h) => LimitKey::Header(h.to_ascii_lowercase()),
            _ => {
                c.err(format!("{path}.key"), format!("{other:?}: expected route, ip, consumer or header:<name>"));
                return None;
            }
        },
    };
    Some(RateLimit { rate, burst, key })
}

fn host_match(c: &mut Checker, path: &str, host: Option<&str>) -> Option<HostMatch> {
    Some(match host {
        None => HostMatch::Any,
        Some(h) => match h.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 => {
                HostMatch::Suffix(suffix.to_ascii_lowercase())
            }
            Some(_) => {
                c.err(format!("{path}.host"), format!("{h:?}: a wildcard host must look like \"*.example.com\""));
                return None;
            }
            None if !h.is_empty() && !h.contains(|ch: char| ch.is_ascii_whitespace() || ch == '/' || ch == ':') => {
                HostMatch::Exact(h.to_ascii_lowercase())
            }
            None => {
                c.err(format!("{path}.host"), format!("{h:?} is not a host name (no port, scheme or path)"));
                return None;
            }
        },
    })
}

fn path_template(c: &mut Checker, path: &str, t: &str) -> Option<PathMatch> {
    let mut segments = Vec::new();
    for part in t[1..].split('/') {
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
                if segments.iter().any(|s| matches!(s, Segment::Capture(n) if n == name)) {
                    c.err(path, format!("capture {{{name}}} appears twice"));
                }
                segments.push(Segment::Capture(name.to_string()));
            }
            Some(_) => c.err(path, format!("{part:?}: a capture is {{name}} with letters, digits and '_'")),
            None if part.contains(['{', '}']) => c.err(path, format!("{part:?}: a capture takes a whole segment")),
            None => segments.push(Segment::Literal(part.to_string())),
        }
    }
    if segments.iter().filter(|s| matches!(s, Segment::Capture(_))).count() > crate::MAX_CAPTURES {
        c.err(path, format!("more than {} captures", crate::MAX_CAPTURES));
    }
    Some(PathMatch::Template(segments))
}

pub(crate) fn valid_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.contains(|ch: char| ch.is_ascii_whitespace() || ch.is_ascii_control() || ch == '?' || ch == '#')
}

/// What routes' `auth` and `consumers` keys refer to.
pub(crate) struct Auths<'a> {
    pub consumers: &'a [Consumer],
    pub jwt: &'a crate::JwtAuth,
    /// `[auth.external]` is present.
    pub external: bool,
}

pub(crate) fn build_route(
    c: &mut Checker,
    index: usize,
    path: &str,
    r: &RawRoute,
    upstreams: &[Upstream],
    auths: &Auths<'_>,
) -> Option<Route> {
    let Auths { consumers, jwt, external } = *auths;
    let before = c.errors.len();
    let path_match = match [&r.path, &r.path_exact, &r.path_template, &r.path_regex] {
        [Some(p), None, None, None] if valid_path(p) => Some(PathMatch::Prefix(p.clone())),
        [None, Some(p), None, None] if valid_path(p) => Some(PathMatch::Exact(p.clone())),
        [None, None, Some(t), None] if valid_path(t) => path_template(c, &format!("{path}.path_template"), t),
        [None, None, None, Some(re)] => match crate::PathRegex::new(re) {
            Ok(re) => Some(PathMatch::Regex(re)),
            Err(e) => {
                c.err(format!("{path}.path_regex"), e);
                None
            }
        },
        [Some(p), None, None, None] | [None, Some(p), None, None] | [None, None, Some(p), None] => {
            c.err(format!("{path}.path"), format!("{p:?} must start with '/' and hold no whitespace, '?' or '#'"));
            None
        }
        [None, None, None, None] => {
            c.err(format!("{path}.path"), "missing path (a prefix), path_exact, path_template or path_regex");
            None
        }
        _ => {
            c.err(path, "set one of path (a prefix), path_exact, path_template and path_regex");
            None
        }
    };
    let capture_names: Vec<String> = match &path_match {
        Some(PathMatch::Template(segs)) => segs
            .iter()
            .filter_map(|s| match s {
                Segment::Capture(n) => Some(n.clone()),
                Segment::Literal(_) => None,
            })
            .collect(),
        Some(PathMatch::Regex(re)) => re.names().map(str::to_string).collect(),
        _ => Vec::new(),
    };
    let required =
        |c: &mut Checker, kind: &str, map: &BTreeMap<String, String>, lower: bool| -> Vec<(String, Required)> {
            map.iter()
                .filter_map(|(k, v)| {
                    if (lower && !is_token(k)) || k.is_empty() || !is_field_value(v) {
                        c.err(format!("{path}.{kind}.{k}"), "invalid name or value");
                        return None;
                    }
                    let name = if lower { k.to_ascii_lowercase() } else { k.clone() };
                    Some((name, if v == "*" { Required::Present } else { Required::Equals(v.clone()) }))
                })
                .collect()
        };
    let header_conditions = required(c, "headers", &r.headers, true);
    let query_conditions = required(c, "query", &r.query, false);
    let rewrite = r.rewrite.as_ref().map(|t| {
        if !t.starts_with('/') || t.contains(|ch: char| ch.is_ascii_whitespace() || ch == '?' || ch == '#') {
            c.err(format!("{path}.rewrite"), "must start with '/' and hold no whitespace, '?' or '#'");
        }
        let tpl = template_with(c, &format!("{path}.rewrite"), t, &capture_names);
        if tpl.0.iter().any(|p| !matches!(p, Piece::Text(_) | Piece::Capture(_))) {
            c.err(format!("{path}.rewrite"), "a rewrite takes path captures only");
        }
        tpl
    });
    let query_add: Vec<(String, String)> = r.query_add.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (k, v) in &query_add {
        if k.is_empty() || !k.bytes().chain(v.bytes()).all(|b| b.is_ascii_graphic() && !b"&#=?".contains(&b)) {
            c.err(format!("{path}.query_add.{k}"), "names and values must be visible ASCII without & # = ?");
        }
    }
    let https = match r.scheme.as_deref() {
        None => None,
        Some("http") => Some(false),
        Some("https") => Some(true),
        Some(other) => {
            c.err(format!("{path}.scheme"), format!("{other:?} is not \"http\" or \"https\""));
            None
        }
    };
    let host = host_match(c, path, r.host.as_deref());
    let methods = tokens(
        c,
        &format!("{path}.methods"),
        r.methods.as_deref().unwrap_or_default(),
        "a method",
        str::to_ascii_uppercase,
    );
    if r.split_on.is_some() && r.split.is_none() {
        c.err(format!("{path}.split_on"), "split_on needs split");
    }
    let action = match (&r.upstream, &r.split, &r.respond, &r.redirect) {
        (None, Some(arms), None, None) => {
            crate::split::build(c, path, arms, r.split_on.as_deref(), upstreams).map(Action::Split)
        }
        (Some(name), None, None, None) => match upstreams.iter().position(|u| &u.name == name) {
            Some(i) => Some(Action::Proxy { upstream: i }),
            None => {
                c.err(format!("{path}.upstream"), format!("no upstream named {name:?}"));
                None
            }
        },
        (None, None, Some(resp), None) => {
            let status = resp.status.unwrap_or(200);
            if !(200..=599).contains(&status) {
                c.err(format!("{path}.respond.status"), format!("{status} is not a final status code"));
            }
            let mut headers = Vec::new();
            for (k, v) in &resp.headers {
                if is_token(k) && is_field_value(v) {
                    headers.push((k.to_ascii_lowercase(), v.clone()));
                } else {
                    c.err(format!("{path}.respond.headers.{k}"), "invalid header name or value");
                }
            }
            Some(Action::Respond { status, headers, body: resp.body.clone().unwrap_or_default() })
        }
        (None, None, None, Some(red)) => {
            let status = red.status.unwrap_or(302);
            if ![301, 302, 303, 307, 308].contains(&status) {
                c.err(
                    format!("{path}.redirect.status"),
                    format!("{status} is not a redirect status (301, 302, 303, 307, 308)"),
                );
            }
            let at = format!("{path}.redirect.location");
            match &red.location {
                Some(l) if !l.is_empty() && is_field_value(l) => {
                    let location = template_with(c, &at, l, &capture_names);
                    if location.0.iter().any(|p| matches!(p, Piece::ClientIp | Piece::Consumer | Piece::Claim(_))) {
                        c.err(at, "a redirect takes {host}, {uri} and path captures");
                    }
                    Some(Action::Redirect { status, location })
                }
                _ => {
                    c.err(at, "missing or invalid location");
                    None
                }
            }
        }
        (None, None, None, None) => {
            c.err(format!("{path}.upstream"), "missing upstream (or split, respond, or redirect)");
            None
        }
        _ => {
            c.err(path, "set exactly one of upstream, split, respond and redirect");
            None
        }
    };
    let auth = match r.auth.as_deref() {
        None => AuthKind::None,
        Some("api_key") => {
            if consumers.is_empty() {
                c.err(format!("{path}.auth"), "auth = \"api_key\" needs at least one [[consumers]] entry");
            }
            AuthKind::ApiKey
        }
        Some("jwt") => {
            if jwt.keys.is_empty() && jwt.remote.is_none() {
                c.err(format!("{path}.auth"), "auth = \"jwt\" needs keys in [auth.jwt] (keys, jwks_file or jwks)");
            }
            AuthKind::Jwt
        }
        Some("basic") => {
            if !consumers.iter().any(|k| !k.passwords.is_empty()) {
                c.err(
                    format!("{path}.auth"),
                    "auth = \"basic\" needs at least one consumer with a password (consumers[].passwords or auth.basic.users_file)",
                );
            }
            AuthKind::Basic
        }
        Some("external") => {
            if !external {
                c.err(format!("{path}.auth"), "auth = \"external\" needs [auth.external]");
            }
            AuthKind::External
        }
        Some(other) => {
            c.err(
                format!("{path}.auth"),
                format!("unknown auth {other:?} (expected \"api_key\", \"jwt\", \"basic\" or \"external\")"),
            );
            AuthKind::None
        }
    };
    let allowed = crate::consumers::admitted(c, path, r, consumers, auth);
    let require_claims: Vec<(String, Vec<String>)> = r
        .require_claims
        .iter()
        .filter_map(|(claim, v)| {
            let at = format!("{path}.require_claims.{claim}");
            let values: Option<Vec<String>> = match v {
                toml::Value::String(s) => Some(vec![s.clone()]),
                toml::Value::Array(items) if !items.is_empty() => {
                    items.iter().map(|i| i.as_str().map(str::to_string)).collect()
                }
                _ => None,
            };
            if values.is_none() {
                c.err(&at, "expected a string, or a non-empty list of strings of which any will do");
            }
            values.map(|v| (claim.clone(), v))
        })
        .collect();
    if !r.require_claims.is_empty() && auth != AuthKind::Jwt {
        c.err(format!("{path}.require_claims"), "require_claims needs auth = \"jwt\"");
    }
    let rate_limits: Vec<RateLimit> = r
        .rate_limits
        .iter()
        .enumerate()
        .filter_map(|(i, l)| rate_limit(c, &format!("{path}.rate_limits[{i}]"), l))
        .collect();
    let strip_prefix = r.strip_prefix.unwrap_or(false);
    if strip_prefix && !matches!(path_match, Some(PathMatch::Prefix(_))) {
        c.err(format!("{path}.strip_prefix"), "strip_prefix needs a path prefix");
    }
    let response_timeout = c.optional_duration(&format!("{path}.response_timeout"), r.response_timeout.as_ref());
    let timeout = c.optional_duration(&format!("{path}.timeout"), r.timeout.as_ref());
    let access = IpRules {
        deny: cidrs(c, &format!("{path}.deny_ips"), &r.deny_ips),
        allow: cidrs(c, &format!("{path}.allow_ips"), &r.allow_ips),
    };
    let cors = r.cors.as_ref().map(|raw| cors(c, &format!("{path}.cors"), raw));
    let proxies = r.upstream.is_some() || r.split.is_some();
    // What only an exchange with an upstream uses is refused elsewhere, not ignored.
    let upstream_keys = [
        ("response_timeout", r.response_timeout.is_some()),
        ("timeout", r.timeout.is_some()),
        ("retries", r.retries.is_some()),
    ];
    for (key, _) in upstream_keys.iter().filter(|(_, set)| *set && !proxies) {
        c.err(format!("{path}.{key}"), "applies to a route that proxies (upstream or split)");
    }
    let request_headers = header_ops(c, &format!("{path}.request_headers"), &r.request_headers, &capture_names);
    let response_headers = header_ops(c, &format!("{path}.response_headers"), &r.response_headers, &capture_names);
    if r.websocket == Some(true) && !proxies {
        c.err(format!("{path}.websocket"), "websocket needs an upstream to tunnel to");
    }
    let fault = r.fault.as_ref().map(|raw| crate::fault::build(c, &format!("{path}.fault"), raw));
    let cache = r.cache.as_ref().map(|rc| crate::cache::route_cache(c, &format!("{path}.cache"), rc, proxies));
    let compress =
        r.compress.as_ref().map(|rc| crate::compress::route_compress(c, &format!("{path}.compress"), rc, proxies));
    let mirror = r.mirror.as_ref().and_then(|raw| {
        let at = format!("{path}.mirror");
        if !proxies {
            c.err(at, "mirror needs a route that proxies (upstream or split)");
            return None;
        }
        let m = crate::mirror::build(c, &at, raw, upstreams)?;
        if action.as_ref().is_some_and(|a| a.upstreams().contains(&m.upstream)) {
            c.err(format!("{at}.upstream"), "is the route's own upstream: mirror to another");
        }
        Some(m)
    });
    if rewrite.is_some() && strip_prefix {
        c.err(format!("{path}.rewrite"), "use rewrite or strip_prefix, not both");
    }
    if c.errors.len() > before {
        return None;
    }
    Some(Route {
        name: match &r.name {
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') => n.clone(),
            Some(n) => {
                c.err(format!("{path}.name"), format!("{n:?} is not a name (printable, no quotes or backslashes)"));
                return None;
            }
            None => index.to_string(),
        },
        host: host?,
        path: path_match?,
        methods,
        https,
        headers: header_conditions,
        query: query_conditions,
        rewrite,
        query_add,
        query_remove: r.query_remove.clone(),
        action: action?,
        response_timeout,
        timeout,
        max_body_bytes: r.max_body_bytes,
        retries: r.retries.map(|n| c.bounded(&format!("{path}.retries"), Some(n), 0, 0, 10) as u32),
        auth,
        consumers: allowed,
        rate_limits,
        strip_prefix,
        request_headers,
        response_headers,
        access,
        cors,
        websocket: r.websocket.unwrap_or(true),
        require_client_cert: r.require_client_cert.unwrap_or(false),
        cache,
        compress,
        mirror,
        fault,
        require_claims,
    })
}

pub(crate) fn cidrs(c: &mut Checker, path: &str, list: &[String]) -> Vec<ipnet::IpNet> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            // A bare address is a /32 (or /128).
            let parsed = s.parse::<ipnet::IpNet>().or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(n) => Some(n.trunc()),
                Err(_) => {
                    c.err(format!("{path}[{i}]"), format!("{s:?} is not an address or CIDR (such as \"10.0.0.0/8\")"));
                    None
                }
            }
        })
        .collect()
}

fn cors(c: &mut Checker, path: &str, raw: &RawCors) -> Cors {
    let origins: Vec<String> = if raw.origins.iter().any(|o| o == "*") { Vec::new() } else { raw.origins.clone() };
    if raw.origins.is_empty() {
        c.err(format!("{path}.origins"), "list the allowed origins, or [\"*\"]");
    }
    for (i, o) in raw.origins.iter().enumerate() {
        if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) || !is_field_value(o) {
            c.err(format!("{path}.origins[{i}]"), format!("{o:?} is not an origin (scheme://host[:port])"));
        }
    }
    let credentials = raw.credentials.unwrap_or(false);
    if credentials && origins.is_empty() {
        c.err(format!("{path}.credentials"), "credentials cannot be allowed for any origin (\"*\")");
    }
    let list = |c: &mut Checker, key: &str, v: &[String], default: &str| {
        if v.iter().any(|m| !is_token(m)) {
            c.err(format!("{path}.{key}"), "every entry must be a token");
        }
        if v.is_empty() {
            default.to_string()
        } else {
            v.join(", ")
        }
    };
    let max_age_secs = match &raw.max_age {
        None => 600,
        Some(s) => parse_duration(s).map(|d| d.as_secs()).unwrap_or_else(|| {
            c.err(format!("{path}.max_age"), format!("invalid duration {s:?}"));
            600
        }),
    };
    Cors {
        origins,
        methods: list(c, "methods", &raw.methods, "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        headers: list(c, "headers", &raw.headers, ""),
        expose_headers: list(c, "expose_headers", &raw.expose_headers, ""),
        max_age_secs,
        credentials,
    }
}
