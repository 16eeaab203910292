//! External authorization settings (`[auth.external]`, and `auth = "external"` on a route):
//! an authorization service, one of the upstreams, asked about each request before it is
//! proxied (nginx's `auth_request`, Envoy's `ext_authz` over HTTP, Traefik's `forwardAuth`).
//! Asking it and acting on its answer are the engine's (`engine/src/external_auth.rs`).

use std::time::Duration;

use serde::Deserialize;

use crate::policy::{is_token, valid_path, MANAGED};
use crate::validate::Checker;
use crate::Upstream;

/// `[auth.external]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawExternal {
    /// The upstream that answers the checks.
    pub upstream: Option<String>,
    /// The target of every check (default `/`).
    pub path: Option<String>,
    /// The whole check, connect to answer (default 1s).
    pub timeout: Option<String>,
    /// Client fields sent with a check (default: every end-to-end field).
    pub request_headers: Option<Vec<String>>,
    /// Fields of an allowing answer put on the proxied request.
    pub upstream_headers: Vec<String>,
    /// A field of an allowing answer naming the client (`{consumer}`, `key = "consumer"`).
    pub identity_header: Option<String>,
    /// `"deny"` (default) or `"allow"`: what a failed check means.
    pub failure: Option<String>,
}

/// `[auth.external]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalAuth {
    /// Index into [`crate::Config::upstreams`]: its endpoints, balancing, pools, health and
    /// TLS serve the checks.
    pub upstream: usize,
    /// The origin-form target of every check; the client's own goes in `X-Forwarded-Uri`.
    pub path: String,
    /// Bounds a whole check, from taking a connection to the end of the answer's body.
    pub timeout: Duration,
    /// The client fields a check carries (lower case); `None`: every end-to-end field but
    /// the framing and connection ones.
    pub request_headers: Option<Vec<String>>,
    /// Fields of an allowing answer sent upstream with the request (lower case), in place
    /// of any the client sent under those names.
    pub upstream_headers: Vec<String>,
    /// A field of an allowing answer that names the client, for `{consumer}` templates and
    /// `key = "consumer"` limits (lower case).
    pub identity_header: Option<String>,
    /// A failed check (no answer in time, a connection or protocol failure, a 5xx) lets the
    /// request through; otherwise it is answered 503.
    pub fail_open: bool,
}

/// The default check timeout: checks sit in front of every request of their routes, and a
/// slow authorization service should fail fast rather than hold clients (Envoy's
/// ext_authz defaults to 200 ms, nginx to its proxy's 60 s; a second is between).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) fn build(c: &mut Checker, raw: &RawExternal, upstreams: &[Upstream]) -> Option<ExternalAuth> {
    let p = "auth.external";
    let upstream = c.upstream_ref(
        &format!("{p}.upstream"),
        raw.upstream.as_ref(),
        upstreams,
        "the upstream that answers the checks",
    );
    let path = raw.path.clone().unwrap_or_else(|| "/".into());
    if !valid_path(&path) || path.contains('?') {
        c.err(format!("{p}.path"), format!("{path:?} is not a path starting with '/'"));
    }
    let timeout = c.duration(&format!("{p}.timeout"), raw.timeout.as_ref(), DEFAULT_TIMEOUT);
    // Host and the X-Forwarded fields are coregate's to write, on the check and upstream.
    let mut name = |at: String, n: &str| -> Option<String> {
        let lower = n.to_ascii_lowercase();
        if !is_token(n) {
            c.err(at, format!("{n:?} is not a header name"));
            None
        } else if MANAGED.contains(&lower.as_str()) || lower == "host" || lower.starts_with("x-forwarded-") {
            c.err(at, format!("{n:?} is a field coregate writes itself"));
            None
        } else {
            Some(lower)
        }
    };
    let request_headers = raw
        .request_headers
        .as_ref()
        .map(|l| l.iter().enumerate().filter_map(|(i, n)| name(format!("{p}.request_headers[{i}]"), n)).collect());
    let upstream_headers = (raw.upstream_headers.iter().enumerate())
        .filter_map(|(i, n)| name(format!("{p}.upstream_headers[{i}]"), n))
        .collect();
    let identity_header = raw.identity_header.as_ref().and_then(|n| name(format!("{p}.identity_header"), n));
    let fail_open = match raw.failure.as_deref() {
        None | Some("deny") => false,
        Some("allow") => true,
        Some(other) => {
            c.err(format!("{p}.failure"), format!("{other:?} is not \"deny\" or \"allow\""));
            false
        }
    };
    Some(ExternalAuth {
        upstream: upstream?,
        path,
        timeout,
        request_headers,
        upstream_headers,
        identity_header,
        fail_open,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn external(keys: &str) -> Result<Option<ExternalAuth>, String> {
        crate::testing::config(
            &["api", "authz"],
            &format!("upstream = \"api\"\nauth = \"external\"\n[auth.external]\n{keys}"),
        )
        .map(|c| c.external_auth)
    }

    #[test]
    fn external_auth_parses_with_defaults() {
        let e = external("upstream = \"authz\"").unwrap().unwrap();
        assert_eq!((e.upstream, e.path.as_str(), e.timeout, e.fail_open), (1, "/", DEFAULT_TIMEOUT, false));
        assert_eq!((e.request_headers, e.upstream_headers.len(), e.identity_header), (None, 0, None));
        let e = external(
            "upstream = \"authz\"\npath = \"/verify\"\ntimeout = \"250ms\"\nrequest_headers = [\"Authorization\", \"cookie\"]\nupstream_headers = [\"X-User\"]\nidentity_header = \"x-user\"\nfailure = \"allow\"",
        )
        .unwrap()
        .unwrap();
        assert_eq!((e.path.as_str(), e.timeout, e.fail_open), ("/verify", Duration::from_millis(250), true));
        assert_eq!(e.request_headers.unwrap(), ["authorization", "cookie"]);
        assert_eq!((e.upstream_headers, e.identity_header.as_deref()), (vec!["x-user".to_string()], Some("x-user")));
    }

    #[test]
    fn external_auth_errors_name_their_keys() {
        for (keys, needle) in [
            ("path = \"/\"", "auth.external.upstream: missing"),
            ("upstream = \"nope\"", "auth.external.upstream: no upstream named"),
            ("upstream = \"authz\"\npath = \"verify\"", "auth.external.path"),
            ("upstream = \"authz\"\npath = \"/v?x=1\"", "auth.external.path"),
            ("upstream = \"authz\"\ntimeout = \"soon\"", "auth.external.timeout"),
            ("upstream = \"authz\"\nrequest_headers = [\"a b\"]", "auth.external.request_headers[0]"),
            ("upstream = \"authz\"\nrequest_headers = [\"Content-Length\"]", "auth.external.request_headers[0]"),
            ("upstream = \"authz\"\nupstream_headers = [\"x-ok\", \"host\"]", "auth.external.upstream_headers[1]"),
            ("upstream = \"authz\"\nrequest_headers = [\"X-Forwarded-For\"]", "auth.external.request_headers[0]"),
            ("upstream = \"authz\"\nidentity_header = \"connection\"", "auth.external.identity_header"),
            ("upstream = \"authz\"\nfailure = \"open\"", "auth.external.failure"),
            ("upstream = \"authz\"\nheaders = []", "auth.external.headers"),
        ] {
            let err = external(keys).unwrap_err();
            assert!(err.contains(needle), "{keys}: {err}");
        }
    }

    #[test]
    fn routes_need_the_section_and_no_consumer_list() {
        let err = crate::testing::config(&["api"], "upstream = \"api\"\nauth = \"external\"").unwrap_err();
        assert!(err.contains("routes[0].auth: auth = \"external\" needs [auth.external]"), "{err}");
        let err = crate::testing::config(
            &["api", "authz"],
            "upstream = \"api\"\nauth = \"external\"\nconsumers = [\"a\"]\n[[consumers]]\nname = \"a\"\nkeys = [\"k\"]\n[auth.external]\nupstream = \"authz\"",
        )
        .unwrap_err();
        assert!(err.contains("routes[0].consumers"), "{err}");
    }
}
