//! How an upstream spreads requests over its endpoints: `balance` (round robin, least
//! request, consistent hash) and `hash_on` (the weights are written in `endpoints`, see
//! `endpoints`). Choosing an endpoint per request is the engine's.

use crate::policy::is_token;
use crate::validate::Checker;

/// Weights run from 1 to this (nginx's `weight=` has no bound; Envoy's is 1-128).
pub const MAX_WEIGHT: u32 = 1000;

/// The endpoint a request goes to first (the others follow when it fails).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Balance {
    /// In turn, each worker on its own; with weights, nginx's smooth weighted round robin.
    #[default]
    RoundRobin,
    /// The endpoint with the fewest requests in flight from this worker, relative to its
    /// weight (ties in turn): slow endpoints get less.
    LeastRequest,
    /// Rendezvous (highest random weight) hashing of the key: the same key goes to the
    /// same endpoint from every worker and across restarts, and when an endpoint leaves
    /// only its keys move. Requests without the key go round robin.
    Hash(HashOn),
}

/// The key of `balance = "hash"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The client's IP address (the TCP peer, or the client a PROXY protocol header or
    /// trusted proxies name).
    ClientIp,
    /// A request field's value (name in lower case).
    Header(String),
    /// A cookie's value (RFC 6265 5.4 `Cookie` pairs).
    Cookie(String),
    /// A query parameter's value, as sent (not percent-decoded).
    Query(String),
}

/// `balance` and `hash_on` of the upstream at `path`.
pub(crate) fn balance(c: &mut Checker, path: &str, balance: Option<&str>, hash_on: Option<&str>) -> Balance {
    let chosen = match balance {
        None | Some("round_robin") => Balance::RoundRobin,
        Some("least_request") => Balance::LeastRequest,
        Some("hash") => match hash_on {
            Some(key) => match hash_key(key) {
                Some(on) => Balance::Hash(on),
                None => {
                    c.err(format!("{path}.hash_on"), format!("{key:?} is not a hash key ({HASH_KEYS})"));
                    Balance::RoundRobin
                }
            },
            None => {
                c.err(format!("{path}.hash_on"), "balance = \"hash\" needs hash_on");
                Balance::RoundRobin
            }
        },
        Some(other) => {
            c.err(
                format!("{path}.balance"),
                format!("unknown balance {other:?} (expected \"round_robin\", \"least_request\" or \"hash\")"),
            );
            Balance::RoundRobin
        }
    };
    if hash_on.is_some() && balance != Some("hash") {
        c.err(format!("{path}.hash_on"), "hash_on needs balance = \"hash\"");
    }
    chosen
}

/// The forms of a hash key, for error messages.
pub(crate) const HASH_KEYS: &str = "\"client_ip\", \"header:NAME\", \"cookie:NAME\" or \"query:NAME\"";

/// A `hash_on` (or `split_on`) key.
pub(crate) fn hash_key(key: &str) -> Option<HashOn> {
    if key == "client_ip" {
        return Some(HashOn::ClientIp);
    }
    let (kind, name) = key.split_once(':')?;
    // A cookie name is an RFC 9110 token too (RFC 6265 4.1.1).
    if name.is_empty() || !is_token(name) {
        return None;
    }
    match kind {
        "header" => Some(HashOn::Header(name.to_ascii_lowercase())),
        "cookie" => Some(HashOn::Cookie(name.to_string())),
        "query" => Some(HashOn::Query(name.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(keys: &str) -> Result<crate::Upstream, String> {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[upstreams]]\nname = \"api\"\n{keys}\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n"
        );
        crate::Config::parse(&text).map(|c| c.upstreams[0].clone()).map_err(|e| e.to_string())
    }

    #[test]
    fn endpoints_with_weights_and_balance() {
        let u = upstream(
            "endpoints = [\"127.0.0.1:1\", { address = \"127.0.0.1:2\", weight = 3 }]\nbalance = \"least_request\"",
        )
        .unwrap();
        assert_eq!(u.endpoints, ["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()]);
        assert_eq!((u.weights, u.balance), (vec![1, 3], Balance::LeastRequest));
        for (hash_on, want) in [
            ("client_ip", HashOn::ClientIp),
            ("header:X-User", HashOn::Header("x-user".into())),
            ("cookie:Session", HashOn::Cookie("Session".into())),
            ("query:user", HashOn::Query("user".into())),
        ] {
            let u = upstream(&format!("endpoints = [\"127.0.0.1:1\"]\nbalance = \"hash\"\nhash_on = \"{hash_on}\""));
            assert_eq!(u.unwrap().balance, Balance::Hash(want));
        }
        assert_eq!(upstream("endpoints = [\"127.0.0.1:1\"]").unwrap().balance, Balance::RoundRobin);
        assert_eq!(upstream("endpoints = [\"127.0.0.1:1\"]").unwrap().pipeline, 1);
        assert_eq!(upstream("endpoints = [\"127.0.0.1:1\"]\npipeline = 8").unwrap().pipeline, 8);
    }

    #[test]
    fn errors_name_their_keys() {
        for (keys, path, says) in [
            ("endpoints = [{ address = \"127.0.0.1:1\", weight = 0 }]", "upstreams[0].endpoints[0].weight", "1..=1000"),
            (
                "endpoints = [{ address = \"127.0.0.1:1\", weight = 1001 }]",
                "upstreams[0].endpoints[0].weight",
                "weight",
            ),
            (
                "endpoints = [{ address = \"127.0.0.1:1\", weight = \"2\" }]",
                "upstreams[0].endpoints[0].weight",
                "weight",
            ),
            (
                "endpoints = [{ address = \"127.0.0.1:1\", wieght = 2 }]",
                "upstreams[0].endpoints[0].wieght",
                "unknown key",
            ),
            ("endpoints = [{ weight = 2 }]", "upstreams[0].endpoints[0].address", "missing"),
            ("endpoints = [{ address = \"local_host:1\" }]", "upstreams[0].endpoints[0].address", "invalid address"),
            ("endpoints = [\"localhost:0\"]", "upstreams[0].endpoints[0]", "invalid address"),
            ("endpoints = [\"nothing.invalid:80\"]", "upstreams[0].endpoints[0]", "cannot resolve"),
            ("endpoints = [\"127.0.0.1:1\"]\nresolve = \"5s\"", "upstreams[0].resolve", "no endpoint is a name"),
            ("endpoints = [\"localhost:1\"]\nresolve = \"100ms\"", "upstreams[0].resolve", "at least 1s"),
            ("endpoints = [\"localhost:1\"]\nresolve = \"soon\"", "upstreams[0].resolve", "invalid duration"),
            ("endpoints = [\"127.0.0.1:1\", 7]", "upstreams[0].endpoints[1]", "not integer"),
            ("endpoints = [\"127.0.0.1:1\"]\nbalance = \"random\"", "upstreams[0].balance", "unknown balance"),
            ("endpoints = [\"127.0.0.1:1\"]\npipeline = 0", "upstreams[0].pipeline", "1..=64"),
            ("endpoints = [\"127.0.0.1:1\"]\npipeline = 65", "upstreams[0].pipeline", "1..=64"),
            (
                "endpoints = [\"127.0.0.1:1\"]\npipeline = 4\nbalance = \"hash\"\nhash_on = \"client_ip\"",
                "upstreams[0].pipeline",
                "does not combine",
            ),
            ("endpoints = [\"127.0.0.1:1\"]\npipeline = 4\n[upstreams.tls]", "upstreams[0].pipeline", "plain HTTP"),
            ("endpoints = [\"127.0.0.1:1\"]\nbalance = \"hash\"", "upstreams[0].hash_on", "needs hash_on"),
            ("endpoints = [\"127.0.0.1:1\"]\nhash_on = \"client_ip\"", "upstreams[0].hash_on", "needs balance"),
            (
                "endpoints = [\"127.0.0.1:1\"]\nbalance = \"hash\"\nhash_on = \"header:\"",
                "upstreams[0].hash_on",
                "not a hash key",
            ),
            (
                "endpoints = [\"127.0.0.1:1\"]\nbalance = \"hash\"\nhash_on = \"header:a b\"",
                "upstreams[0].hash_on",
                "not a hash key",
            ),
            (
                "endpoints = [\"127.0.0.1:1\"]\nbalance = \"hash\"\nhash_on = \"path:a\"",
                "upstreams[0].hash_on",
                "not a hash key",
            ),
            (
                "endpoints = [\"127.0.0.1:1\"]\nbalance = \"hash\"\nhash_on = \"query:a=b\"",
                "upstreams[0].hash_on",
                "not a hash key",
            ),
        ] {
            let e = upstream(keys).expect_err(keys);
            assert!(e.contains(path) && e.contains(says), "{keys}: {e}");
        }
    }
}
