//! The endpoint a request tries first, per upstream and worker (`upstreams[].balance`):
//! round robin (smooth weighted round robin when weights differ), least request, or
//! rendezvous hashing of a request key. Each worker keeps its own cursors and counts
//! (shared-nothing, as Envoy's per-worker load balancers). What follows a failed attempt
//! (the next endpoints in turn, health, retries) is `upstream::acquire`'s.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use config::{Balance, Config, HashOn, Upstream};
use proto_http::RequestHead;

/// This worker's balancing state of every upstream.
pub(crate) struct Balancer {
    upstreams: Vec<State>,
}

struct State {
    /// Plain round robin (equal weights): nothing but the cursor.
    plain: bool,
    cursor: Cell<usize>,
    /// Smooth weighted round robin's current weights (when weights differ).
    current: Vec<Cell<i64>>,
    /// Requests in flight from this worker per endpoint (least request).
    active: Vec<Cell<u32>>,
    /// Each endpoint's hash of its address (hash): a key's endpoint follows the address,
    /// not its place in the list.
    seeds: Vec<u64>,
    /// Slow start, when configured.
    ramp: Option<Ramp>,
}

/// Slow start (`upstreams[].slow_start`): per endpoint, whether it was in service when last
/// looked at, since when it is back, and its weight now (in hundredths of its configured
/// weight, so that 10% of a weight of 1 is still a weight).
struct Ramp {
    window: Duration,
    in_service: Vec<Cell<bool>>,
    back_since: Vec<Cell<Option<Instant>>>,
    weight: Vec<Cell<u32>>,
}

/// The share a returning endpoint starts with (Envoy's `min_weight_percent` default).
const RAMP_FLOOR: f64 = 0.1;

impl Balancer {
    pub(crate) fn new(cfg: &Config) -> Balancer {
        let upstreams = cfg
            .upstreams
            .iter()
            .map(|u| {
                let n = u.endpoints.len();
                // Slow start varies the weights: it needs the weighted machinery.
                let weighted = u.weights.iter().any(|&w| w != u.weights[0]) || u.slow_start.is_some();
                State {
                    plain: !weighted && u.balance == Balance::RoundRobin,
                    cursor: Cell::new(0),
                    current: if weighted { (0..n).map(|_| Cell::new(0)).collect() } else { Vec::new() },
                    active: match u.balance {
                        Balance::LeastRequest => (0..n).map(|_| Cell::new(0)).collect(),
                        _ => Vec::new(),
                    },
                    seeds: match u.balance {
                        Balance::Hash(_) => u.endpoints.iter().map(|a| mix(fnv1a(a.to_string().as_bytes()))).collect(),
                        _ => Vec::new(),
                    },
                    ramp: u.slow_start.map(|window| Ramp {
                        window,
                        in_service: (0..n).map(|_| Cell::new(true)).collect(),
                        back_since: (0..n).map(|_| Cell::new(None)).collect(),
                        weight: u.weights.iter().map(|&w| Cell::new(w * 100)).collect(),
                    }),
                }
            })
            .collect();
        Balancer { upstreams }
    }

    /// The endpoint to try first, or for plain round robin the cursor (any number: the
    /// caller takes it modulo the endpoint count). `key`: the request's hash key ([`key`]),
    /// for `hash`; `retry`: a retry after a failure, which leaves the round-robin cursor
    /// where it is (the next request goes where it would have gone); `usable`: whether an
    /// endpoint may take this request (health, and not the one a retry comes from). When
    /// none is usable every endpoint counts (the panic rule, see `upstream::acquire`).
    #[inline]
    pub(crate) fn first(
        &self,
        upstream: usize,
        up: &Upstream,
        key: Option<u64>,
        retry: bool,
        usable: impl Fn(usize) -> bool,
    ) -> usize {
        let s = &self.upstreams[upstream];
        let start = s.cursor.get();
        if !retry {
            s.cursor.set(start.wrapping_add(1));
        }
        if s.plain {
            // In turn: `acquire` skips what is not usable from here.
            return start;
        }
        s.choose(up, start, key, usable)
    }

    /// Slow start: notes which endpoints of `upstream` came back into service (`healthy`)
    /// and sets their weights for `now`. Called before [`Balancer::first`] for upstreams
    /// with `slow_start`.
    pub(crate) fn ramp(&self, upstream: usize, up: &Upstream, now: Instant, healthy: impl Fn(usize) -> bool) {
        let Some(r) = &self.upstreams[upstream].ramp else { return };
        for e in 0..up.endpoints.len() {
            let now_in = healthy(e);
            if now_in && !r.in_service[e].get() {
                r.back_since[e].set(Some(now));
            }
            r.in_service[e].set(now_in);
            let full = up.weights[e] * 100;
            let weight = match r.back_since[e].get() {
                Some(t) if now.saturating_duration_since(t) < r.window => {
                    let share = now.saturating_duration_since(t).as_secs_f64() / r.window.as_secs_f64();
                    ((f64::from(full) * share.max(RAMP_FLOOR)) as u32).max(1)
                }
                _ => {
                    r.back_since[e].set(None);
                    full
                }
            };
            r.weight[e].set(weight);
        }
    }

    /// Counts a request in flight to `endpoint` until the guard drops (least request only).
    pub(crate) fn started(&self, upstream: usize, endpoint: usize) -> Option<InFlight<'_>> {
        let count = self.upstreams[upstream].active.get(endpoint)?;
        count.set(count.get() + 1);
        Some(InFlight(count))
    }
}

impl State {
    /// An endpoint's weight now: its configured one, or slow start's.
    fn weight(&self, up: &Upstream, e: usize) -> u32 {
        self.ramp.as_ref().map_or(up.weights[e], |r| r.weight[e].get())
    }

    /// [`Balancer::first`] for everything but plain round robin.
    fn choose(&self, up: &Upstream, start: usize, key: Option<u64>, usable: impl Fn(usize) -> bool) -> usize {
        let n = up.endpoints.len();
        if n == 1 || (self.current.is_empty() && self.active.is_empty() && key.is_none()) {
            return start % n;
        }
        let usable = &usable;
        let any = (0..n).any(usable);
        let candidates = || (0..n).map(move |k| (start + k) % n).filter(move |&e| !any || usable(e));
        if let (Some(key), false) = (key, self.seeds.is_empty()) {
            return rendezvous(key, &self.seeds, &up.weights, candidates());
        }
        if !self.active.is_empty() {
            // Fewest in flight relative to weight: a/wa < b/wb, as a*wb < b*wa; ties in turn.
            let load = |e: usize| (u64::from(self.active[e].get()), u64::from(self.weight(up, e)));
            return candidates()
                .reduce(|best, e| {
                    let ((a, wa), (b, wb)) = (load(e), load(best));
                    if a * wb < b * wa {
                        e
                    } else {
                        best
                    }
                })
                .unwrap_or(start % n);
        }
        // In list order, as nginx, so that ties go to the earlier endpoint.
        let candidates = (0..n).filter(|&e| !any || usable(e)).map(|e| (e, self.weight(up, e)));
        smooth_weighted(&self.current, candidates).unwrap_or(start % n)
    }
}

/// nginx's smooth weighted round robin over `(index, weight)` candidates: every candidate
/// gains its weight, the highest goes and loses the candidates' total. Over a cycle each
/// gets its share, spread out rather than in runs; ties go to the earlier candidate.
/// `current`: the running weights, one per index. None without candidates.
pub(crate) fn smooth_weighted(current: &[Cell<i64>], candidates: impl Iterator<Item = (usize, u32)>) -> Option<usize> {
    let mut total = 0i64;
    let mut best = None;
    for (e, w) in candidates {
        let w = i64::from(w);
        current[e].set(current[e].get() + w);
        total += w;
        if best.is_none_or(|b: usize| current[e].get() > current[b].get()) {
            best = Some(e);
        }
    }
    let best = best?;
    current[best].set(current[best].get() - total);
    Some(best)
}

/// A request in flight, for least request.
pub(crate) struct InFlight<'a>(&'a Cell<u32>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// The request's key for `balance = "hash"`, or None when it has none (then the request
/// goes round robin).
pub(crate) fn key(on: &HashOn, req: &RequestHead, peer: SocketAddr) -> Option<u64> {
    let bytes = match on {
        HashOn::ClientIp => {
            return Some(match peer.ip() {
                IpAddr::V4(ip) => fnv1a(&ip.octets()),
                IpAddr::V6(ip) => fnv1a(&ip.octets()),
            });
        }
        HashOn::Header(name) => req.header(name.as_bytes())?,
        HashOn::Cookie(name) => {
            let values = req.headers().filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie")).map(|(_, v)| v);
            proto_http::cookie::find(values, name.as_bytes())?
        }
        HashOn::Query(name) => crate::auth::query_param(req.path(), name.as_bytes())?,
    };
    Some(fnv1a(bytes))
}

/// The candidate with the highest score for `key`: weighted rendezvous hashing (Schindelhauer
/// and Schomaker's logarithmic method), `weight / -ln(u)` with `u` uniform in (0, 1) from the
/// key and the endpoint. An endpoint that leaves (or is out of service) gives its keys to the
/// others in proportion to their weights; the rest stay.
fn rendezvous(key: u64, seeds: &[u64], weights: &[u32], candidates: impl Iterator<Item = usize>) -> usize {
    let score = |e: usize| {
        let u = ((mix(key ^ seeds[e]) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        f64::from(weights[e]) / -u.ln()
    };
    candidates.map(|e| (e, score(e))).fold((0, f64::MIN), |best, c| if c.1 > best.1 { c } else { best }).0
}

/// FNV-1a (64 bit): a hash that is the same on every machine and build, so that every
/// gateway of a fleet sends a key to the same endpoint (ahash, used for maps, may differ
/// between CPUs).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// splitmix64's finaliser: spreads FNV's output (whose low bits mix poorly) over all 64.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(endpoints: usize, weights: &[u32], balance: &str) -> (Config, Balancer) {
        let list: Vec<String> = (0..endpoints)
            .map(|i| match weights.get(i) {
                Some(w) => format!("{{ address = \"10.0.0.{}:80\", weight = {w} }}", i + 1),
                None => format!("\"10.0.0.{}:80\"", i + 1),
            })
            .collect();
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[[upstreams]]\nname = \"u\"\nendpoints = [{}]\n{balance}\n[[routes]]\npath = \"/\"\nupstream = \"u\"\n",
            list.join(", ")
        );
        let cfg = Config::parse(&text).unwrap();
        let b = Balancer::new(&cfg);
        (cfg, b)
    }

    fn picks(cfg: &Config, b: &Balancer, n: usize, usable: impl Fn(usize) -> bool + Copy) -> Vec<usize> {
        let len = cfg.upstreams[0].endpoints.len();
        (0..n).map(|_| b.first(0, &cfg.upstreams[0], None, false, usable) % len).collect()
    }

    #[test]
    fn smooth_weighted_round_robin_spreads_by_weight() {
        let (cfg, b) = upstream(3, &[5, 1, 1], "");
        // nginx's sequence for 5, 1, 1: a a b a c a a.
        assert_eq!(picks(&cfg, &b, 7, |_| true), [0, 0, 1, 0, 2, 0, 0]);
        // Out of service endpoints are left out of the cycle.
        assert_eq!(picks(&cfg, &b, 7, |e| e != 0).iter().filter(|&&e| e == 0).count(), 0);
        // Equal weights keep plain round robin.
        let (cfg, b) = upstream(3, &[2, 2, 2], "");
        assert_eq!(picks(&cfg, &b, 4, |_| true), [0, 1, 2, 0]);
    }

    #[test]
    fn least_request_prefers_the_idle_relative_to_weight() {
        let (cfg, b) = upstream(3, &[], "balance = \"least_request\"");
        let first = b.first(0, &cfg.upstreams[0], None, false, |_| true);
        let _busy = b.started(0, first);
        let second = b.first(0, &cfg.upstreams[0], None, false, |_| true);
        assert_ne!(first, second);
        let _busy2 = b.started(0, second);
        let third = b.first(0, &cfg.upstreams[0], None, false, |_| true);
        assert!(third != first && third != second);
        drop(_busy);
        assert_eq!(b.first(0, &cfg.upstreams[0], None, false, |_| true), first);
        // Weight 3 with two in flight (2/3) beats weight 1 with one (1/1).
        let (cfg, b) = upstream(2, &[3, 1], "balance = \"least_request\"");
        let _g = [b.started(0, 0), b.started(0, 0), b.started(0, 1)];
        assert_eq!(b.first(0, &cfg.upstreams[0], None, false, |_| true), 0);
    }

    #[test]
    fn rendezvous_keeps_keys_when_an_endpoint_leaves() {
        let (cfg, b) = upstream(4, &[], "balance = \"hash\"\nhash_on = \"header:x-user\"");
        let up = &cfg.upstreams[0];
        let keys: Vec<u64> = (0..2000u32).map(|k| fnv1a(&k.to_le_bytes())).collect();
        let before: Vec<usize> = keys.iter().map(|&k| b.first(0, up, Some(k), false, |_| true)).collect();
        let mut counts = [0; 4];
        before.iter().for_each(|&e| counts[e] += 1);
        assert!(counts.iter().all(|&c| (400..600).contains(&c)), "{counts:?}");
        // Endpoint 2 out of service: its keys spread over the others, the rest stay.
        let after: Vec<usize> = keys.iter().map(|&k| b.first(0, up, Some(k), false, |e| e != 2)).collect();
        for (was, now) in before.iter().zip(&after) {
            assert!(if *was == 2 { *now != 2 } else { now == was });
        }
        // The same answer however often it is asked (no cursor in it).
        assert_eq!(b.first(0, up, Some(keys[0]), false, |_| true), before[0]);
    }

    #[test]
    fn weighted_rendezvous_follows_weights() {
        let (cfg, b) = upstream(2, &[3, 1], "balance = \"hash\"\nhash_on = \"client_ip\"");
        let on_first =
            (0..4000u32).filter(|k| b.first(0, &cfg.upstreams[0], Some(fnv1a(&k.to_le_bytes())), false, |_| true) == 0);
        assert!((2800..3200).contains(&on_first.count()));
    }

    #[test]
    fn slow_start_ramps_a_returning_endpoint() {
        let (cfg, b) = upstream(2, &[], "slow_start = \"10s\"");
        let up = &cfg.upstreams[0];
        // Requests of 1,000 that endpoint 1 gets at `now`, with `healthy` the verdicts.
        let share = |now: Instant, healthy: &dyn Fn(usize) -> bool| {
            b.ramp(0, up, now, healthy);
            (0..1000).filter(|_| b.first(0, up, None, false, healthy) == 1).count()
        };
        let t0 = Instant::now();
        // In service from the start: its full weight at once.
        assert_eq!(share(t0, &|_| true), 500);
        assert_eq!(share(t0, &|e| e != 1), 0);
        // Back: 10% of its weight (10 against 100, 1 in 11), then half, then all of it.
        let back = t0 + Duration::from_secs(1);
        let at_start = share(back, &|_| true);
        assert!((85..=95).contains(&at_start), "{at_start}");
        let half_way = share(back + Duration::from_secs(5), &|_| true);
        assert!((320..=345).contains(&half_way), "{half_way}");
        assert_eq!(share(back + Duration::from_secs(10), &|_| true), 500);
    }
}
