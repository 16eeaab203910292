//! Request mirroring (`routes[].mirror`): a copy of a route's requests sent to another
//! upstream, whose answers are read and dropped (Envoy's request mirror policy, nginx's
//! `mirror`): trying a new version or a new datastore on real traffic without a client
//! seeing it. Sending the copies is the engine's (`engine/src/mirror.rs`).

use serde::Deserialize;

use crate::validate::Checker;
use crate::Upstream;

/// `routes[].mirror` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawMirror {
    pub upstream: Option<String>,
    /// Share of the route's requests mirrored, 0-100 (default 100).
    pub percent: Option<f64>,
    /// Copies in flight per worker and route, at most (default 64).
    pub max_in_flight: Option<usize>,
}

/// A route's mirror.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    /// Index into [`crate::Config::upstreams`].
    pub upstream: usize,
    /// Share of requests copied, in percent (0 < percent ≤ 100): every worker copies exactly
    /// that share of its requests, spread evenly.
    pub percent: f64,
    /// Copies in flight from one worker for the route; a request beyond it is not copied.
    pub max_in_flight: u32,
}

pub(crate) fn build(c: &mut Checker, path: &str, raw: &RawMirror, upstreams: &[Upstream]) -> Option<Mirror> {
    let upstream =
        c.upstream_ref(&format!("{path}.upstream"), raw.upstream.as_ref(), upstreams, "the upstream the copies go to");
    let percent = raw.percent.unwrap_or(100.0);
    if !(percent > 0.0 && percent <= 100.0) {
        c.err(format!("{path}.percent"), format!("{percent} is not a share above 0 and at most 100"));
    }
    let max_in_flight = c.bounded(&format!("{path}.max_in_flight"), raw.max_in_flight, 64, 1, 100_000) as u32;
    Some(Mirror { upstream: upstream?, percent, max_in_flight })
}

#[cfg(test)]
mod tests {
    fn route(keys: &str) -> Result<crate::Route, String> {
        crate::testing::route(
            &["api", "shadow"],
            &format!(
                "upstream = \"api\"
{keys}"
            ),
        )
    }

    #[test]
    fn mirrors_parse_with_defaults() {
        let m = route("mirror = { upstream = \"shadow\" }").unwrap().mirror.unwrap();
        assert_eq!((m.upstream, m.percent, m.max_in_flight), (1, 100.0, 64));
        let m = route("mirror = { upstream = \"shadow\", percent = 2.5, max_in_flight = 8 }").unwrap().mirror.unwrap();
        assert_eq!((m.percent, m.max_in_flight), (2.5, 8));
        assert_eq!(route("mirror = { upstream = \"shadow\", percent = 10 }").unwrap().mirror.unwrap().percent, 10.0);
    }

    #[test]
    fn mirror_errors_name_their_keys() {
        for (keys, path, msg) in [
            ("mirror = {}", "routes[0].mirror.upstream", "missing"),
            ("mirror = { upstream = \"nope\" }", "routes[0].mirror.upstream", "no upstream named"),
            ("mirror = { upstream = \"shadow\", percent = 0 }", "routes[0].mirror.percent", "above 0"),
            ("mirror = { upstream = \"shadow\", percent = 101 }", "routes[0].mirror.percent", "at most 100"),
            ("mirror = { upstream = \"shadow\", max_in_flight = 0 }", "routes[0].mirror.max_in_flight", ""),
            ("mirror = { upstream = \"shadow\", every = 2 }", "routes[0].mirror.every", "unknown"),
            ("mirror = { upstream = \"api\" }", "routes[0].mirror.upstream", "the route's own upstream"),
        ] {
            let err = route(keys).unwrap_err();
            assert!(err.contains(path) && err.contains(msg), "{keys}: {err}");
        }
        let text = "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[upstreams]]\nname = \"shadow\"\nendpoints = [\"127.0.0.1:2\"]\n[[routes]]\npath = \"/\"\nrespond = { status = 200 }\nmirror = { upstream = \"shadow\" }\n";
        let err = crate::Config::parse(text).unwrap_err().to_string();
        assert!(err.contains("routes[0].mirror") && err.contains("needs a route that proxies"), "{err}");
    }
}
