//! `upstreams[].max_requests`: a bound on the requests in flight to one upstream from all
//! workers together (Envoy's circuit breaker `max_requests`). Over it a request is answered
//! 503 at once, rather than joining a queue in front of an upstream that is saturated
//! already. The one counter per upstream is shared by the workers (an atomic add and
//! subtract per request to such an upstream; none for the others): a bound split per worker
//! would refuse early on a busy core while another idles.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use config::Config;

/// Requests in flight per upstream, shared by a generation's workers.
pub(crate) type InFlight = Arc<[AtomicU32]>;

pub(crate) fn in_flight(cfg: &Config) -> InFlight {
    cfg.upstreams.iter().map(|_| AtomicU32::new(0)).collect()
}

/// A request counted in flight until this drops.
pub(crate) struct Slot<'a>(&'a AtomicU32);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A slot for one more request to `upstream`, or None when `max` are in flight.
pub(crate) fn enter(counts: &[AtomicU32], upstream: usize, max: u32) -> Option<Slot<'_>> {
    let count = &counts[upstream];
    if count.fetch_add(1, Ordering::Relaxed) >= max {
        count.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    Some(Slot(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_up_to_the_bound_and_back() {
        let counts: Vec<AtomicU32> = (0..2).map(|_| AtomicU32::new(0)).collect();
        let a = enter(&counts, 0, 2).expect("first");
        let b = enter(&counts, 0, 2).expect("second");
        assert!(enter(&counts, 0, 2).is_none(), "a third over the bound");
        assert!(enter(&counts, 1, 2).is_some(), "another upstream has its own count");
        drop(a);
        let _c = enter(&counts, 0, 2).expect("a slot freed");
        drop(b);
        assert_eq!(counts[0].load(Ordering::Relaxed), 1);
    }
}
