//! Traffic splitting (`routes[].split`): which upstream of a split route a request goes
//! to. Without `split_on`, each worker keeps its own smooth weighted round robin over the
//! route's upstreams (exact shares per worker, no coordination); with it, the request's key
//! picks a bucket, the same on every worker and gateway, so a client stays on its side.
//! Choosing the endpoint inside that upstream is `balance`'s.

use std::cell::Cell;
use std::net::SocketAddr;

use config::{Config, Split};
use proto_http::RequestHead;

use crate::balance::{key, mix, smooth_weighted};

/// Mixed into a split key before bucketing, so that the bucket and an upstream's own
/// hashing of the same key (`balance = "hash"` on the same field) are independent.
const SALT: u64 = 0x5d1f_7a3c_94e2_b06b;

/// This worker's round-robin state of every split route.
pub(crate) struct Splitter {
    /// Per route: the running weights of its arms (empty for routes without a split).
    current: Vec<Vec<Cell<i64>>>,
}

impl Splitter {
    pub(crate) fn new(cfg: &Config) -> Splitter {
        let current = cfg
            .routes
            .iter()
            .map(|r| match &r.action {
                config::Action::Split(s) => s.arms.iter().map(|_| Cell::new(0)).collect(),
                _ => Vec::new(),
            })
            .collect();
        Splitter { current }
    }

    /// The upstream (index into the configuration's) for this request of route `route`.
    pub(crate) fn choose(&self, route: usize, split: &Split, req: &RequestHead, peer: SocketAddr) -> usize {
        let arm = match split.on.as_ref().and_then(|on| key(on, req, peer)) {
            Some(k) => bucket(k, &split.arms),
            None => {
                let weighted = split.arms.iter().enumerate().map(|(i, &(_, w))| (i, w)).filter(|&(_, w)| w > 0);
                smooth_weighted(&self.current[route], weighted).unwrap_or(0)
            }
        };
        split.arms[arm].0
    }
}

/// The arm whose share of `[0, total weight)` holds the key's point. The arms keep their
/// order in the file, so raising one arm's weight at another's expense (the total kept)
/// moves keys onto it and none off it.
fn bucket(key: u64, arms: &[(usize, u32)]) -> usize {
    let total: u64 = arms.iter().map(|&(_, w)| u64::from(w)).sum();
    // Multiply-shift: a uniform point in [0, total) from 64 uniform bits.
    let mut point = ((u128::from(mix(key ^ SALT)) * u128::from(total)) >> 64) as u64;
    for (i, &(_, w)) in arms.iter().enumerate() {
        if point < u64::from(w) {
            return i;
        }
        point -= u64::from(w);
    }
    arms.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::fnv1a;

    fn config(split: &str) -> Config {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[[upstreams]]\nname = \"a\"\nendpoints = [\"127.0.0.1:2\"]\n[[upstreams]]\nname = \"b\"\nendpoints = [\"127.0.0.1:3\"]\n[[upstreams]]\nname = \"c\"\nendpoints = [\"127.0.0.1:4\"]\n[[routes]]\npath = \"/\"\n{split}\n"
        );
        Config::parse(&text).unwrap()
    }

    fn split_of(cfg: &Config) -> &Split {
        match &cfg.routes[0].action {
            config::Action::Split(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn round_robin_gives_exact_shares_and_skips_zero_weights() {
        let cfg = config(
            "split = [{ upstream = \"a\", weight = 3 }, { upstream = \"b\", weight = 0 }, { upstream = \"c\", weight = 1 }]",
        );
        let s = Splitter::new(&cfg);
        let text = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        let meta = proto_http::parse_request(text, &Default::default()).unwrap().unwrap();
        let req = RequestHead::new(bytes::Bytes::from_static(text), meta);
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let picks: Vec<usize> = (0..8).map(|_| s.choose(0, split_of(&cfg), &req, peer)).collect();
        // Smooth: a a c a, twice; b (weight 0) never.
        assert_eq!(picks, [0, 0, 2, 0, 0, 0, 2, 0]);
    }

    #[test]
    fn buckets_follow_weights_and_move_keys_one_way() {
        let keys: Vec<u64> = (0..10_000u32).map(|k| fnv1a(&k.to_le_bytes())).collect();
        let at = |arms: &[(usize, u32)]| keys.iter().map(|&k| bucket(k, arms)).collect::<Vec<_>>();
        let ninety = at(&[(0, 90), (1, 10)]);
        let canary = ninety.iter().filter(|&&a| a == 1).count();
        assert!((900..1100).contains(&canary), "{canary}");
        // The canary grows to 20 of 100: everyone on it stays, about as many again join.
        let eighty = at(&[(0, 80), (1, 20)]);
        assert!(ninety.iter().zip(&eighty).all(|(was, now)| *was == 0 || *now == 1));
        let grown = eighty.iter().filter(|&&a| a == 1).count();
        assert!((1800..2200).contains(&grown), "{grown}");
        // A weight of 0 takes no key.
        assert!(at(&[(0, 0), (1, 5)]).iter().all(|&a| a == 1));
    }
}
