//! Raw TOML to validated [`Config`]: every problem is collected with its key path, so one
//! `coregate check` run lists them all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::consumers::{build_api_key, build_consumers};
use crate::policy::build_route;
use crate::raw::RawConfig;
use crate::server::{build_server, check_route_paths};
use crate::upstream::build_upstream;
use crate::{AccessLog, Config, ConfigError, Errors, Limits, ProxyProtocol, Timeouts, Upstream, WireLimits};

/// Collects errors while building typed values.
pub(crate) struct Checker {
    pub(crate) errors: Vec<ConfigError>,
    /// The directory of the configuration file: relative file names in it start there.
    base: Option<PathBuf>,
}

impl Checker {
    /// A file named in the configuration: relative to the configuration file's directory
    /// (as nginx and HAProxy resolve theirs), or to the working directory for text parsed
    /// without a file.
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        match &self.base {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    pub(crate) fn err(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.errors.push(ConfigError::new(path, msg));
    }

    /// A duration that has no default: `None` when left out (or invalid, with the error noted).
    pub(crate) fn optional_duration(&mut self, path: &str, raw: Option<&String>) -> Option<Duration> {
        raw.map(|_| self.duration(path, raw, Duration::ZERO)).filter(|d| !d.is_zero())
    }

    pub(crate) fn duration(&mut self, path: &str, raw: Option<&String>, default: Duration) -> Duration {
        match raw {
            None => default,
            Some(s) => match parse_duration(s) {
                Some(d) if !d.is_zero() => d,
                Some(_) => {
                    self.err(path, "must be greater than zero");
                    default
                }
                None => {
                    self.err(path, format!("invalid duration {s:?} (use a number with ms, s, m or h, such as \"5s\")"));
                    default
                }
            },
        }
    }

    /// The index of the upstream `name` names, for a setting at `path` that needs one
    /// (`what` says what it is for); an error when it is missing or names none.
    pub(crate) fn upstream_ref(
        &mut self,
        path: &str,
        name: Option<&String>,
        upstreams: &[crate::Upstream],
        what: &str,
    ) -> Option<usize> {
        let Some(name) = name else {
            self.err(path, format!("missing: {what}"));
            return None;
        };
        let found = upstreams.iter().position(|u| &u.name == name);
        if found.is_none() {
            self.err(path, format!("no upstream named {name:?}"));
        }
        found
    }

    pub(crate) fn bounded(&mut self, path: &str, raw: Option<usize>, default: usize, min: usize, max: usize) -> usize {
        match raw {
            None => default,
            Some(v) if (min..=max).contains(&v) => v,
            Some(v) => {
                self.err(path, format!("{v} is out of range {min}..={max}"));
                default
            }
        }
    }

    pub(crate) fn addr(&mut self, path: &str, s: &str) -> Option<SocketAddr> {
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    path,
                    format!("invalid address {s:?} (expected IP:PORT such as \"127.0.0.1:8080\" or \"[::1]:8080\")"),
                );
                None
            }
        }
    }
}

/// Parses `"250ms"`, `"5s"`, `"2m"`, `"1h"`.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// A key's path as the other errors write it: `upstreams[0].tls.sni`, where serde_ignored
/// writes `upstreams.0.tls.?.sni` (`?` for a table behind an `Option`).
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        P::Map { parent, key } => match key_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => key_path(parent),
    }
}

pub(crate) fn parse(text: &str, base: Option<&Path>) -> Result<Config, Errors> {
    let mut unknown = Vec::new();
    let de = toml::Deserializer::new(text);
    let raw: RawConfig = serde_ignored::deserialize(de, |path| unknown.push(key_path(&path)))
        .map_err(|e| Errors(vec![ConfigError::new("", format!("invalid TOML: {}", e.to_string().trim_end()))]))?;
    let errors = unknown.into_iter().map(|p| ConfigError::new(p, "unknown key")).collect();
    let mut c = Checker { errors, base: base.map(Path::to_path_buf) };
    let config = build(&mut c, &raw);
    if c.errors.is_empty() {
        Ok(config)
    } else {
        Err(Errors(c.errors))
    }
}

fn build(c: &mut Checker, raw: &RawConfig) -> Config {
    let server = build_server(c, raw);
    let t = &raw.timeouts;
    let timeouts = Timeouts {
        client_header: c.duration("timeouts.client_header", t.client_header.as_ref(), Duration::from_secs(10)),
        client_idle: c.duration("timeouts.client_idle", t.client_idle.as_ref(), Duration::from_secs(60)),
        client_body: c.duration("timeouts.client_body", t.client_body.as_ref(), Duration::from_secs(30)),
        client_send: c.duration("timeouts.client_send", t.client_send.as_ref(), Duration::from_secs(30)),
        upstream_connect: c.duration("timeouts.upstream_connect", t.upstream_connect.as_ref(), Duration::from_secs(3)),
        upstream_response: c.duration(
            "timeouts.upstream_response",
            t.upstream_response.as_ref(),
            Duration::from_secs(60),
        ),
        upstream_send: c.duration("timeouts.upstream_send", t.upstream_send.as_ref(), Duration::from_secs(30)),
        upstream_idle: c.duration("timeouts.upstream_idle", t.upstream_idle.as_ref(), Duration::from_secs(30)),
        tunnel_idle: c.duration("timeouts.tunnel_idle", t.tunnel_idle.as_ref(), Duration::from_secs(60)),
        drain: c.duration("timeouts.drain", t.drain.as_ref(), Duration::from_secs(10)),
    };
    let l = &raw.limits;
    let d = WireLimits::default();
    let wire = WireLimits {
        max_head_bytes: c.bounded("limits.max_head_bytes", l.max_head_bytes, d.max_head_bytes, 256, 1 << 20),
        max_headers: c.bounded("limits.max_headers", l.max_headers, d.max_headers, 1, WireLimits::HEADER_CAP),
        max_uri_bytes: c.bounded("limits.max_uri_bytes", l.max_uri_bytes, d.max_uri_bytes, 16, 1 << 20),
        max_chunk_ext_bytes: c.bounded(
            "limits.max_chunk_ext_bytes",
            l.max_chunk_ext_bytes,
            d.max_chunk_ext_bytes,
            0,
            1 << 16,
        ),
        max_trailer_bytes: c.bounded("limits.max_trailer_bytes", l.max_trailer_bytes, d.max_trailer_bytes, 0, 1 << 20),
    };
    if wire.max_uri_bytes >= wire.max_head_bytes {
        c.err("limits.max_uri_bytes", "must be smaller than limits.max_head_bytes");
    }
    let limits = Limits { wire, max_body_bytes: l.max_body_bytes.unwrap_or(100 << 20) };

    let upstreams: Vec<Upstream> = raw
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| build_upstream(c, &format!("upstreams[{i}]"), u, &timeouts))
        .collect();
    for (i, u) in upstreams.iter().enumerate() {
        if u.slow_start.is_some() && matches!(u.balance, crate::Balance::Hash(_)) {
            c.err(
                format!("upstreams[{i}].slow_start"),
                "not with balance = \"hash\": a ramping weight would move keys back and forth",
            );
        }
        if !u.name.is_empty() && upstreams[..i].iter().any(|p| p.name == u.name) {
            c.err(format!("upstreams[{i}].name"), format!("duplicate upstream name {:?}", u.name));
        }
    }
    let mut consumers = build_consumers(c, &raw.consumers);
    let basic = crate::basic::build(c, &raw.auth.basic, &mut consumers);
    let api_key = build_api_key(c, &raw.auth.api_key);
    let jwt = crate::jwt::build_jwt(c, &raw.auth.jwt, &upstreams);
    let external_auth = raw.auth.external.as_ref().and_then(|e| crate::external::build(c, e, &upstreams));
    let mut routes = raw
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let auths =
                crate::policy::Auths { consumers: &consumers, jwt: &jwt, external: raw.auth.external.is_some() };
            build_route(c, i, &format!("routes[{i}]"), r, &upstreams, &auths)
        })
        .collect::<Vec<_>>();
    if raw.routes.is_empty() {
        c.err("routes", "at least one [[routes]] entry is required");
    }
    check_route_paths(c, server.paths, &raw.routes);
    let cache = crate::cache::build_cache(c, &raw.cache);
    crate::cache::check_entries(c, &cache, &mut routes);
    let tls = crate::tls::build_tls(c, &raw.tls);
    if let ProxyProtocol::Only(addrs) = &server.proxy_protocol {
        for (i, a) in addrs.iter().enumerate() {
            if !server.listen.contains(a) && !tls.listen.contains(a) {
                c.err(format!("server.proxy_protocol[{i}]"), format!("{a} is not in server.listen or tls.listen"));
            }
        }
    }
    if tls.client_auth.is_none() {
        for (i, _) in routes.iter().enumerate().filter(|(_, r)| r.require_client_cert) {
            c.err(
                format!("routes[{i}].require_client_cert"),
                "needs tls.client_ca_file: no client is asked for a certificate",
            );
        }
    }
    if raw.server.listen.is_empty() && raw.tls.listen.is_empty() {
        c.err("server.listen", "at least one listen address (server.listen or tls.listen) is required");
    }
    let admin = raw.admin.listen.as_deref().and_then(|a| c.addr("admin.listen", a));
    let access_log = raw.access_log.as_ref().and_then(|l| match l.path.as_deref() {
        Some("-") => Some(AccessLog::Stdout),
        Some(p) if !p.is_empty() => Some(AccessLog::File(c.file(p))),
        _ => {
            c.err("access_log.path", "a file name, or \"-\" for standard output");
            None
        }
    });
    let mut names = std::collections::HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        if !names.insert(&r.name) {
            c.err(format!("routes[{i}].name"), format!("another route is named {:?}", r.name));
        }
    }
    Config {
        server,
        timeouts,
        limits,
        upstreams,
        routes,
        consumers,
        api_key,
        jwt,
        basic,
        external_auth,
        tls,
        admin,
        access_log,
        cache,
        tracing: raw.tracing.as_ref().and_then(|t| crate::tracing::build(c, t)),
        errors: crate::error_pages::build(c, &raw.errors),
    }
}

/// With request paths normalised, a route path that normalisation changes or refuses can
/// never match: an error, naming the spelling that would.
/// `{section}.keepalive_requests` (of `[server]` or an upstream): at least 1 when set.
pub(crate) fn keepalive_requests(c: &mut Checker, section: &str, raw: Option<usize>) -> Option<u32> {
    raw.map(|n| c.bounded(&format!("{section}.keepalive_requests"), Some(n), 1, 1, u32::MAX as usize) as u32)
}

/// `{section}.keepalive_time` (of `[server]` or an upstream): a duration when set.
pub(crate) fn keepalive_time(c: &mut Checker, section: &str, raw: Option<&String>) -> Option<Duration> {
    raw.map(|t| c.duration(&format!("{section}.keepalive_time"), Some(t), Duration::from_secs(3600)))
}

/// Status codes (`502`) and classes (`"5xx"`) from `min` up to 599, as inclusive ranges;
/// each entry that is neither is an error at `path[i]`.
pub(crate) fn statuses(c: &mut Checker, path: &str, list: &[toml::Value], min: u16) -> Vec<(u16, u16)> {
    list.iter()
        .enumerate()
        .filter_map(|(i, v)| {
            let range = match v {
                toml::Value::Integer(n) if (i64::from(min)..=599).contains(n) => Some((*n as u16, *n as u16)),
                toml::Value::String(s) => match s.as_bytes() {
                    [d @ b'1'..=b'5', b'x', b'x'] if u16::from(d - b'0') * 100 >= min => {
                        let lo = u16::from(d - b'0') * 100;
                        Some((lo, lo + 99))
                    }
                    _ => None,
                },
                _ => None,
            };
            if range.is_none() {
                let class = format!("{}xx", (min / 100).max(2));
                c.err(format!("{path}[{i}]"), format!("a status code ({min}-599) or a class (\"{class}\")"));
            }
            range
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IoMode;

    const MINIMAL: &str = r#"
[server]
listen = ["127.0.0.1:8080"]
workers = 2
io = "auto"

[[upstreams]]
name = "api"
endpoints = ["127.0.0.1:9000"]

[[routes]]
path = "/"
upstream = "api"
"#;

    #[test]
    fn minimal_contract_parses() {
        let c = parse(MINIMAL, None).unwrap();
        assert_eq!(c.server.workers.get(), 2);
        assert_eq!(c.server.io, IoMode::Auto);
        assert_eq!(c.routes[0].upstream(), Some(0));
        assert_eq!(c.upstreams[0].endpoints[0], "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.timeouts.client_header, Duration::from_secs(10));
        assert_eq!(c.timeouts.tunnel_idle, Duration::from_secs(60));
        assert!(c.routes[0].websocket, "WebSocket upgrades are forwarded unless a route says not");
        let edge = proto_http::PathRules { merge_slashes: true, reject_encoded_slashes: false };
        assert_eq!(c.server.paths, Some(edge), "paths are normalised and slashes merged by default");
    }

    #[test]
    fn path_rules_and_via_are_read_and_checked() {
        let with = |lines: &str| parse(&MINIMAL.replace("io = \"auto\"", lines), None);
        let c = with("merge_slashes = false\nescaped_slashes = \"reject\"").unwrap();
        let want = proto_http::PathRules { merge_slashes: false, reject_encoded_slashes: true };
        assert_eq!(c.server.paths, Some(want));
        assert_eq!(with("normalize_path = false").unwrap().server.paths, None);
        assert_eq!(with("via = \"gw-1\"").unwrap().server.via.as_deref(), Some("gw-1"));
        let errs = with("via = \"gw 1\"").unwrap_err();
        assert_eq!(errs.0[0].path, "server.via");
        let errs = with("normalize_path = false\nmerge_slashes = true\nescaped_slashes = \"decode\"").unwrap_err();
        let paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["server.escaped_slashes", "server.merge_slashes", "server.escaped_slashes"]);
    }

    #[test]
    fn batched_waits_are_read_and_checked() {
        let with = |lines: &str| parse(&MINIMAL.replace("io = \"auto\"", lines), None);
        assert_eq!(with("").unwrap().server.io_batch, None, "off by default");
        assert_eq!(with("batch_wait_us = 0").unwrap().server.io_batch, None);
        let b = with("batch_wait_us = 50").unwrap().server.io_batch;
        assert_eq!(b, Some(crate::IoBatch { completions: 16, wait_us: 50 }));
        let b = with("io = \"io_uring\"\nbatch_wait_us = 10000\nbatch_completions = 2").unwrap().server.io_batch;
        assert_eq!(b, Some(crate::IoBatch { completions: 2, wait_us: 10_000 }));
        let refused = |lines: &str| {
            let errs = with(lines).unwrap_err();
            errs.0.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>()
        };
        assert_eq!(refused("batch_wait_us = 10001"), ["server.batch_wait_us: 10001 is out of range 0..=10000"]);
        assert_eq!(
            refused("batch_wait_us = 50\nbatch_completions = 1"),
            ["server.batch_completions: 1 is out of range 2..=1024"]
        );
        assert_eq!(
            refused("batch_completions = 8"),
            ["server.batch_completions: has no effect without server.batch_wait_us"]
        );
        assert_eq!(
            refused("io = \"epoll\"\nbatch_wait_us = 50"),
            ["server.batch_wait_us: needs io_uring (io = \"auto\" or \"io_uring\"); the epoll driver does not batch"]
        );
    }

    #[test]
    fn route_paths_that_normalising_changes_are_refused() {
        let routes = "[[routes]]\npath = \"/a/../b\"\nupstream = \"api\"\n\
                      [[routes]]\npath_exact = \"/%7euser\"\nupstream = \"api\"\n\
                      [[routes]]\npath = \"/x|y\"\nupstream = \"api\"\n\
                      [[routes]]\npath = \"/ok/%2F\"\nupstream = \"api\"\n";
        let errs = parse(&format!("{MINIMAL}{routes}"), None).unwrap_err().to_string();
        assert!(
            errs.contains("routes[1].path: \"/a/../b\" can never match") && errs.contains("reads \"/b\""),
            "{errs}"
        );
        assert!(
            errs.contains("routes[2].path_exact: \"/%7euser\" can never match") && errs.contains("\"/~user\""),
            "{errs}"
        );
        assert!(errs.contains("routes[3].path") && errs.contains("invalid character in the path"), "{errs}");
        assert!(!errs.contains("routes[4]"), "{errs}");
        let off = MINIMAL.replace("io = \"auto\"", "normalize_path = false");
        assert!(parse(&format!("{off}{routes}"), None).is_ok(), "paths as sent: routes as written");
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let text = r#"
[server]
listen = ["nonsense"]
io = "kqueue"
colour = "blue"
trusted_proxies = ["10.0.0.0/8", "a proxy"]

[timeouts]
client_idle = "5 parsecs"
tunnel_idle = "soon"

[[upstreams]]
name = "api"
endpoints = ["127.0.0.1"]
typo = 1
max_requests = 0

[[routes]]
path = "/"
upstream = "missing"

[[routes]]
path = "nope"
upstream = "api"

[[routes]]
path = "/static"
respond = { status = 204 }
websocket = true

[[routes]]
path = "/r"
scheme = "gopher"
redirect = { location = "https://{host}{client_ip}" }

[[routes]]
path = "/w"
upstream = "api"
rewrite = "/x{uri}"
require_claims = { role = 7 }

[[consumers]]
name = "c"
keys = ["12345678"]
rate_limits = [{ rate = 1, key = "ip" }, { rate = 0 }]
"#;
        let errs = parse(text, None).unwrap_err();
        let paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "server.colour",
            "server.trusted_proxies[1]",
            "upstreams[0].typo",
            "upstreams[0].max_requests",
            "server.listen[0]",
            "server.io",
            "timeouts.client_idle",
            "upstreams[0].endpoints[0]",
            "routes[0].upstream",
            "routes[1].path",
            "timeouts.tunnel_idle",
            "routes[2].websocket",
            "routes[3].scheme",
            "routes[3].redirect.location",
            "routes[4].rewrite",
            "routes[4].require_claims.role",
            "routes[4].require_claims",
            "consumers[0].rate_limits[0].key",
            "consumers[0].rate_limits[1].rate",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
        assert!(errs.to_string().contains("no upstream named \"missing\""), "{errs}");
    }

    #[test]
    fn schemes_and_redirect_templates() {
        let text = MINIMAL.replace(
            "upstream = \"api\"",
            "scheme = \"https\"\nredirect = { location = \"https://{host}:8443{uri}\", status = 301 }",
        );
        let route = &parse(&text, None).unwrap().routes[0];
        assert_eq!(route.https, Some(true));
        let crate::Action::Redirect { location, .. } = &route.action else { panic!("{:?}", route.action) };
        assert_eq!(
            location.0,
            [
                crate::Piece::Text("https://".into()),
                crate::Piece::Host,
                crate::Piece::Text(":8443".into()),
                crate::Piece::Uri
            ]
        );
        // A route for one scheme does not hide a later one for the other.
        let two = format!("{MINIMAL}\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n").replacen(
            "path = \"/\"\nupstream",
            "path = \"/\"\nscheme = \"http\"\nupstream",
            1,
        );
        assert!(parse(&two, None).unwrap().warnings().is_empty());
    }

    #[test]
    fn path_regexes() {
        // 17 captures named c0 to c16, each between `open` and `close`.
        let many = |open: &str, close: &str| (0..17).map(|i| format!("{open}{i}{close}")).collect::<String>();
        let with = |route: &str| MINIMAL.replace("path = \"/\"", route);
        let text = with("path_regex = '/u/(?P<id>[0-9]+)'\nrewrite = \"/users/{id}\"");
        let crate::PathMatch::Regex(re) = &parse(&text, None).unwrap().routes[0].path else { panic!("a regex route") };
        assert_eq!(re.names().collect::<Vec<_>>(), ["id"]);
        assert!(re.regex().is_match(b"/u/12") && !re.regex().is_match(b"/u/12/x"), "the whole path must match");
        for (route, key, says) in [
            ("path_regex = '/u/('", "routes[0].path_regex", "is not a regular expression"),
            ("path_regex = '/u/(?P<a.b>x)'", "routes[0].path_regex", "letters, digits and '_'"),
            ("path = \"/u\"\npath_regex = '/u'", "routes[0]", "set one of"),
            ("path_regex = '/u/(?P<id>x)'\nrewrite = \"/{other}\"", "routes[0].rewrite", "unknown placeholder"),
            (&format!("path_template = \"{}\"", many("/{c", "}")), "routes[0].path_template", "more than 16 captures"),
            (&format!("path_regex = '{}'", many("/(?P<c", ">x)")), "routes[0].path_regex", "more than 16 named groups"),
        ] {
            let errs = parse(&with(route), None).unwrap_err();
            assert!(errs.0.iter().any(|e| e.path == key && e.message.contains(says)), "{route}: {errs}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("-1s"), None);
    }

    #[test]
    fn hosts_and_syntax_errors() {
        let text = MINIMAL.replace("path = \"/\"", "path = \"/\"\nhost = \"*.Example.com\"");
        assert_eq!(parse(&text, None).unwrap().routes[0].host, crate::HostMatch::Suffix(".example.com".into()));
        let err = parse("[server\n", None).unwrap_err();
        assert!(err.to_string().contains("invalid TOML"), "{err}");
    }
}
