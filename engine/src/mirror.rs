//! Request mirroring (`routes[].mirror`): a copy of a proxied request, as it went upstream,
//! sent to the mirror upstream on a task of its own; the answer is read to its end (so the
//! connection goes back to the pool) and dropped. The client's exchange never waits for it
//! and never sees its failures.
//!
//! A request is copied when its whole body went out with its head (no body, or one of up to
//! 64 KiB read whole: see `proxy::exchange`): a streamed body is not held for a copy, and
//! such requests are counted `skipped`, as are WebSocket upgrades and requests during a
//! drain. Each worker copies exactly `percent` of a route's requests (`share`) and keeps at most `max_in_flight` copies of it in flight; beyond that a
//! request is not copied (`dropped`), so a slow mirror costs bounded memory and never
//! backs up into the route. Choosing the route and sending the original are `proxy`'s.

use std::cell::Cell;
use std::rc::Rc;

use config::{Config, Mirror};

use crate::error::Error;
use crate::share::Share;
use crate::worker::Worker;

/// What became of a request on a mirrored route, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Result {
    /// The copy was sent and its whole answer read.
    Answered = 0,
    /// Connecting, sending or reading failed, or timed out.
    Failed = 1,
    /// `max_in_flight` copies were already on their way.
    Dropped = 2,
    /// Not copied: a streamed body, an upgrade, or a draining worker.
    Skipped = 3,
}

/// The results' names in the metrics, by [`Result`] value.
pub(crate) const RESULTS: [&str; 4] = ["answered", "failed", "dropped", "skipped"];

/// This worker's sampling and in-flight counts per route.
pub(crate) struct Mirrors {
    /// Per route: the mirrored share.
    shares: Vec<Share>,
    in_flight: Vec<Cell<u32>>,
}

impl Mirrors {
    pub(crate) fn new(cfg: &Config) -> Mirrors {
        let n = cfg.routes.len();
        Mirrors {
            shares: (0..n).map(|_| Share::default()).collect(),
            in_flight: (0..n).map(|_| Cell::new(0)).collect(),
        }
    }
}

/// Offers a request of mirrored route `route` for copying: `head` is the request as it goes
/// upstream, `whole` whether it holds the whole request (body included) and may be copied.
pub(crate) fn offer(w: &Worker, route: usize, m: &Mirror, head: &[u8], whole: bool, head_request: bool) {
    if !w.mirrors.shares[route].take(m.percent) {
        return;
    }
    if !whole || w.drain.is_draining() {
        return count(w, route, Result::Skipped);
    }
    let in_flight = &w.mirrors.in_flight[route];
    if in_flight.get() >= m.max_in_flight {
        return count(w, route, Result::Dropped);
    }
    let Some(rc) = w.me.upgrade() else { return };
    in_flight.set(in_flight.get() + 1);
    let (upstream, copy) = (m.upstream, head.to_vec());
    monoio::spawn(async move {
        let result = match send(&rc, upstream, copy, head_request).await {
            Ok(()) => Result::Answered,
            Err(e) => {
                log::debug!("mirror to upstream {:?}: {e}", rc.cfg.upstreams[upstream].name);
                Result::Failed
            }
        };
        let in_flight = &rc.mirrors.in_flight[route];
        in_flight.set(in_flight.get() - 1);
        count(&rc, route, result);
    });
}

fn count(w: &Worker, route: usize, result: Result) {
    if let Some(stats) = &w.stats {
        stats.mirror(route, result);
    }
}

/// Sends `head` to the mirror upstream and reads its answer to the end.
async fn send(w: &Rc<Worker>, upstream: usize, head: Vec<u8>, head_request: bool) -> std::result::Result<(), Error> {
    let timeout = w.cfg.upstreams[upstream].response_timeout;
    crate::upstream::aside(w, upstream, head, head_request, timeout, async |up, resp| {
        let meta = resp.meta;
        // The head's bytes share the connection's buffer: released before the body reads.
        drop(resp.bytes);
        crate::body::discard(up, meta.body, &w.cfg.limits.wire, timeout).await?;
        Ok((meta, ()))
    })
    .await
}
