//! Traffic splitting (`routes[].split`, `routes[].split_on`): a route that sends shares of
//! its requests to several upstreams by weight, as Envoy's weighted clusters and nginx's
//! `split_clients` (canary releases, blue/green moves). Choosing the upstream per request is
//! the engine's (`engine/src/split.rs`).

use serde::Deserialize;

use crate::balance::{hash_key, HashOn, HASH_KEYS};
use crate::validate::Checker;
use crate::Upstream;

/// A weight's upper bound (the same as endpoints', [`crate::MAX_WEIGHT`]).
const MAX_WEIGHT: u32 = crate::MAX_WEIGHT;

/// One entry of `routes[].split`.
#[derive(Debug, Deserialize)]
pub struct RawArm {
    pub upstream: String,
    /// 1 unless set, as an endpoint's.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// How a route's requests are shared between upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// `(upstream index, weight)` in file order; weights 0..=1000, at least one above 0.
    pub arms: Vec<(usize, u32)>,
    /// With a key, a request goes where its key's bucket lies (the same key, the same
    /// upstream, on every worker and gateway); requests without it, and every request
    /// without `split_on`, go by smooth weighted round robin.
    pub on: Option<HashOn>,
}

/// `split` and `split_on` of the route at `path`; None (with errors) when they do not hold.
pub(crate) fn build(
    c: &mut Checker,
    path: &str,
    arms: &[RawArm],
    on: Option<&str>,
    upstreams: &[Upstream],
) -> Option<Split> {
    let mut out = Vec::with_capacity(arms.len());
    for (i, arm) in arms.iter().enumerate() {
        let at = format!("{path}.split[{i}]");
        let Some(u) = upstreams.iter().position(|u| u.name == arm.upstream) else {
            c.err(format!("{at}.upstream"), format!("no upstream named {:?}", arm.upstream));
            continue;
        };
        if out.iter().any(|&(seen, _)| seen == u) {
            c.err(format!("{at}.upstream"), format!("{:?} is listed twice", arm.upstream));
        }
        if arm.weight > MAX_WEIGHT {
            c.err(format!("{at}.weight"), format!("{} is over {MAX_WEIGHT}", arm.weight));
        }
        out.push((u, arm.weight.min(MAX_WEIGHT)));
    }
    if arms.is_empty() {
        c.err(format!("{path}.split"), "needs at least one upstream");
    } else if arms.iter().all(|a| a.weight == 0) {
        c.err(format!("{path}.split"), "every weight is 0: at least one must take requests");
    }
    let on = on.and_then(|key| {
        let parsed = hash_key(key);
        if parsed.is_none() {
            c.err(format!("{path}.split_on"), format!("{key:?} is not a key ({HASH_KEYS})"));
        }
        parsed
    });
    (out.len() == arms.len()).then_some(Split { arms: out, on })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(keys: &str) -> Result<crate::Route, String> {
        crate::testing::route(&["v1", "v2"], keys)
    }

    #[test]
    fn splits_parse() {
        let r = route("split = [{ upstream = \"v1\", weight = 90 }, { upstream = \"v2\", weight = 10 }]").unwrap();
        assert_eq!(r.action, crate::Action::Split(Split { arms: vec![(0, 90), (1, 10)], on: None }));
        let r = route("split = [{ upstream = \"v2\", weight = 0 }, { upstream = \"v1\", weight = 1 }]\nsplit_on = \"cookie:user\"")
            .unwrap();
        assert_eq!(
            r.action,
            crate::Action::Split(Split { arms: vec![(1, 0), (0, 1)], on: Some(HashOn::Cookie("user".into())) })
        );
    }

    #[test]
    fn split_routes_proxy_for_the_other_keys() {
        let r = route(
            "split = [{ upstream = \"v1\" }, { upstream = \"v2\" }]\ncache = { ttl = \"5s\" }\ncompress = {}\nwebsocket = true",
        )
        .unwrap();
        assert!(r.cache.is_some() && r.compress.is_some() && r.websocket);
        assert_eq!(r.action.upstreams(), [0, 1]);
    }

    #[test]
    fn split_errors_name_their_keys() {
        for (keys, path, msg) in [
            ("split = [{ upstream = \"v3\", weight = 1 }]", "routes[0].split[0].upstream", "no upstream named"),
            (
                "split = [{ upstream = \"v1\", weight = 1 }, { upstream = \"v1\", weight = 2 }]",
                "routes[0].split[1].upstream",
                "listed twice",
            ),
            ("split = [{ upstream = \"v1\", weight = 1001 }]", "routes[0].split[0].weight", "over 1000"),
            ("split = [{ upstream = \"v1\", weight = 0 }]", "routes[0].split", "every weight is 0"),
            ("split = []", "routes[0].split", "at least one"),
            (
                "split = [{ upstream = \"v1\", weight = 1 }]\nsplit_on = \"path:x\"",
                "routes[0].split_on",
                "is not a key",
            ),
            ("upstream = \"v1\"\nsplit_on = \"client_ip\"", "routes[0].split_on", "needs split"),
            (
                "upstream = \"v1\"\nsplit = [{ upstream = \"v1\", weight = 1 }]",
                "routes[0]",
                "exactly one of upstream, split, respond and redirect",
            ),
            ("split = [{ upstream = \"v1\", extra = 2 }]", "routes[0].split[0].extra", "unknown"),
        ] {
            let err = route(keys).unwrap_err();
            assert!(err.contains(path) && err.contains(msg), "{keys}: {err}");
        }
    }
}
