//! Retry pacing per worker and upstream (`upstreams[].retry_backoff`, `retry_budget`): the
//! wait before each retry, fully jittered exponential backoff as Envoy's (the n-th retry
//! waits a uniformly random time up to `base * 2^(n-1)`, capped at ten times `base`), and
//! the budget that keeps retries in flight to a share of the requests in flight (at least
//! [`config::MIN_RETRY_BUDGET`]), so that an outage is not multiplied by the retries.
//! Deciding that a request may be retried at all is `proxy`'s.

use std::cell::Cell;
use std::time::Duration;

use config::{Config, MIN_RETRY_BUDGET};

/// This worker's counts for every upstream, and its random numbers for the jitter.
pub(crate) struct Retries {
    /// Per upstream: exchanges in flight (counted for upstreams with `retries` only).
    active: Vec<Cell<u32>>,
    /// Per upstream: exchanges in flight that have retried.
    retrying: Vec<Cell<u32>>,
    /// xorshift64* state, seeded per worker.
    rng: crate::random::Rng,
}

/// Counts an exchange (or a retrying one) while it lives.
pub(crate) struct Counted<'a>(&'a Cell<u32>);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

fn count(c: &Cell<u32>) -> Counted<'_> {
    c.set(c.get() + 1);
    Counted(c)
}

impl Retries {
    pub(crate) fn new(cfg: &Config) -> Retries {
        let n = cfg.upstreams.len();
        Retries {
            active: (0..n).map(|_| Cell::new(0)).collect(),
            retrying: (0..n).map(|_| Cell::new(0)).collect(),
            rng: crate::random::Rng::new(),
        }
    }

    /// Counts an exchange with `upstream` until the guard drops.
    pub(crate) fn exchange(&self, upstream: usize) -> Counted<'_> {
        count(&self.active[upstream])
    }

    /// Whether one more exchange may start retrying within `budget` percent.
    pub(crate) fn room(&self, upstream: usize, budget: u32) -> bool {
        let allowed = (self.active[upstream].get() * budget / 100).max(MIN_RETRY_BUDGET);
        self.retrying[upstream].get() < allowed
    }

    /// Counts a retrying exchange until the guard drops.
    pub(crate) fn retrying(&self, upstream: usize) -> Counted<'_> {
        count(&self.retrying[upstream])
    }

    /// The wait before retry number `attempt` (1 for the first).
    pub(crate) fn backoff(&self, base: Duration, attempt: u32) -> Duration {
        if base.is_zero() {
            return Duration::ZERO;
        }
        let cap = base.saturating_mul(1 << attempt.saturating_sub(1).min(20)).min(base * 10);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.next() % (nanos + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retries() -> Retries {
        let cfg = Config::parse("[server]\nlisten = [\"127.0.0.1:1\"]\n[[upstreams]]\nname = \"u\"\nendpoints = [\"127.0.0.1:2\"]\nretries = 2\n[[routes]]\npath = \"/\"\nupstream = \"u\"\n").unwrap();
        Retries::new(&cfg)
    }

    #[test]
    fn backoff_is_jittered_exponential_and_capped() {
        let r = retries();
        let base = Duration::from_millis(25);
        for attempt in 1..=8 {
            let cap = base * (1 << (attempt - 1)).min(10);
            let waits: Vec<Duration> = (0..200).map(|_| r.backoff(base, attempt)).collect();
            assert!(waits.iter().all(|w| *w <= cap), "attempt {attempt}");
            // Spread over the range, not stuck at one end.
            assert!(waits.iter().any(|w| *w < cap / 4) && waits.iter().any(|w| *w > cap * 3 / 4), "attempt {attempt}");
        }
        assert_eq!(r.backoff(Duration::ZERO, 3), Duration::ZERO);
    }

    #[test]
    fn the_budget_is_a_share_with_a_floor() {
        let r = retries();
        let active: Vec<Counted<'_>> = (0..50).map(|_| r.exchange(0)).collect();
        // 20% of 50 in flight: 10 retrying at once.
        let retrying: Vec<Counted<'_>> = (0..10)
            .map(|_| {
                assert!(r.room(0, 20));
                r.retrying(0)
            })
            .collect();
        assert!(!r.room(0, 20));
        drop(retrying);
        drop(active);
        // Nothing in flight: the floor of 3.
        let floor: Vec<Counted<'_>> = (0..3).map(|_| r.retrying(0)).collect();
        assert!(!r.room(0, 20));
        drop(floor);
        assert!(r.room(0, 20));
    }
}
