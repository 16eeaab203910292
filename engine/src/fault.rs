//! Fault injection (`routes[].fault`): before a request is served, a share of the eligible
//! requests waits `delay`, and a share is answered with the abort status instead of being
//! served (the delay first, as Envoy's fault filter). Shares are exact per worker (`share`).
//! Where this runs in the policy chain, and answering, are `proxy`'s.

use config::{Config, Fault};
use proto_http::RequestHead;

use crate::share::Share;
use crate::worker::Worker;

/// Which fault, for the metrics.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Injected {
    Delay = 0,
    Abort = 1,
}

/// The faults' names in the metrics, by [`Injected`] value.
pub(crate) const NAMES: [&str; 2] = ["delay", "abort"];

/// This worker's delay and abort shares per route.
pub(crate) struct Faults {
    shares: Vec<[Share; 2]>,
}

impl Faults {
    pub(crate) fn new(cfg: &Config) -> Faults {
        Faults { shares: cfg.routes.iter().map(|_| Default::default()).collect() }
    }
}

/// Applies route `route`'s faults to `req`: waits when the request falls in the delay's
/// share; returns the status to answer with when it falls in the abort's.
pub(crate) async fn inject(w: &Worker, route: usize, f: &Fault, req: &RequestHead) -> Option<u16> {
    if f.header.as_ref().is_some_and(|h| req.header(h.as_bytes()).is_none()) {
        return None;
    }
    let shares = &w.faults.shares[route];
    if let Some((delay, percent)) = f.delay {
        if shares[Injected::Delay as usize].take(percent) {
            count(w, route, Injected::Delay);
            monoio::time::sleep(delay).await;
        }
    }
    let (status, percent) = f.abort?;
    shares[Injected::Abort as usize].take(percent).then(|| {
        count(w, route, Injected::Abort);
        status
    })
}

fn count(w: &Worker, route: usize, fault: Injected) {
    if let Some(stats) = &w.stats {
        stats.fault(route, fault);
    }
}
