//! `upstreams[].max_requests`: a bound on the requests in flight to one upstream from all
//! workers together (Envoy's circuit breaker `max_requests`), and the queue in front of it
//! (`upstreams[].queue`, HAProxy's server queue). Without a queue a request over the bound
//! is answered 503 at once, rather than joining a backlog in front of an upstream that is
//! saturated already; with one, up to `queue.size` requests (over all workers) wait up to
//! `queue.timeout` for a slot, and the rest are answered 503.
//!
//! The counts per upstream are shared by the workers (an atomic add and subtract per
//! request to such an upstream; none for the others): a bound split per worker would refuse
//! early on a busy core while another idles. The waiting is each worker's own: its waiters
//! form a queue in arrival order, and a slot freed on the worker goes to the first of them at
//! once; a slot freed on another worker is seen by the first waiter within the 50 ms control
//! tick (waking a task on another core would take a cross-thread channel on every worker's
//! loop, which the request path does not pay for). A request arriving while its worker has
//! waiters queues behind them rather than overtaking them.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};

use config::{Config, Queue};

use crate::error::{Error, Kind, Side};
use crate::worker::Worker;

/// Requests in flight and waiting, per upstream, shared by a generation's workers.
#[derive(Default)]
pub(crate) struct Counts {
    pub in_flight: AtomicU32,
    pub queued: AtomicU32,
}

pub(crate) type InFlight = Arc<[Counts]>;

pub(crate) fn in_flight(cfg: &Config) -> InFlight {
    cfg.upstreams.iter().map(|_| Counts::default()).collect()
}

/// One waiting request: woken when a slot frees on its worker while it is first.
#[derive(Default)]
struct Ticket {
    notified: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Ticket {
    fn notify(&self) {
        self.notified.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// This worker's waiters per upstream, first come first served.
pub(crate) struct Waiting(Vec<RefCell<VecDeque<Rc<Ticket>>>>);

impl Waiting {
    pub(crate) fn new(cfg: &Config) -> Waiting {
        Waiting(cfg.upstreams.iter().map(|_| RefCell::default()).collect())
    }

    /// Wakes the first waiter for `upstream`, if any.
    fn notify_first(&self, upstream: usize) {
        if let Some(t) = self.0[upstream].borrow().front() {
            t.notify();
        }
    }
}

/// A request counted in flight until this drops; the drop offers the slot to the worker's
/// first waiter.
pub(crate) struct Slot<'a> {
    count: &'a AtomicU32,
    waiting: &'a Waiting,
    upstream: usize,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.waiting.notify_first(self.upstream);
    }
}

fn take(counts: &AtomicU32, max: u32) -> bool {
    if counts.fetch_add(1, Ordering::Relaxed) >= max {
        counts.fetch_sub(1, Ordering::Relaxed);
        return false;
    }
    true
}

/// A slot for one more request to `upstream` at once, or None when `max` are in flight or
/// this worker has requests waiting for one ([`wait`] then).
pub(crate) fn enter(w: &Worker, upstream: usize, max: u32) -> Option<Slot<'_>> {
    let waiting = &w.waiting;
    if !waiting.0[upstream].borrow().is_empty() || !take(&w.in_flight[upstream].in_flight, max) {
        return None;
    }
    Some(Slot { count: &w.in_flight[upstream].in_flight, waiting, upstream })
}

/// After [`enter`] found no slot: waits in the upstream's queue for one, or refuses (no
/// queue, the queue full, or its timeout passed) with a 503's error.
pub(crate) async fn wait<'a>(
    w: &'a Worker,
    upstream: usize,
    max: u32,
    queue: Option<&Queue>,
) -> Result<Slot<'a>, Error> {
    let refused = |why| Error::new(Kind::Overloaded, Side::Upstream, why);
    let Some(queue) = queue else { return Err(refused("the upstream has max_requests in flight")) };
    let counts = &w.in_flight[upstream];
    if !take(&counts.queued, queue.size) {
        return Err(refused("the upstream has max_requests in flight and its queue is full"));
    }
    let line = &w.waiting.0[upstream];
    let ticket = Rc::new(Ticket::default());
    line.borrow_mut().push_back(ticket.clone());
    // Leaves the line however the wait ends (a slot, the timeout, the exchange dropped), and
    // passes the turn on when it was first.
    let _leave = Leave { counts, line, ticket: &ticket };
    let deadline = w.timers.deadline(queue.timeout);
    loop {
        let first = line.borrow().front().is_some_and(|t| Rc::ptr_eq(t, &ticket));
        if first && take(&counts.in_flight, max) {
            return Ok(Slot { count: &counts.in_flight, waiting: &w.waiting, upstream });
        }
        if w.timers.now() >= deadline {
            return Err(refused("waited queue.timeout for one of the upstream's max_requests"));
        }
        // A slot freed here wakes the first waiter; one freed on another worker is seen at
        // the next tick.
        let tick = w.timers.deadline(std::time::Duration::ZERO).min(deadline);
        let notified = poll_fn(|cx| {
            if ticket.notified.replace(false) {
                return Poll::Ready(());
            }
            ticket.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        });
        monoio::select! {
            _ = notified => {}
            _ = w.timers.wait(tick) => {}
        }
    }
}

struct Leave<'a> {
    counts: &'a Counts,
    line: &'a RefCell<VecDeque<Rc<Ticket>>>,
    ticket: &'a Rc<Ticket>,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.counts.queued.fetch_sub(1, Ordering::Relaxed);
        let mut line = self.line.borrow_mut();
        let was_first = line.front().is_some_and(|t| Rc::ptr_eq(t, self.ticket));
        line.retain(|t| !Rc::ptr_eq(t, self.ticket));
        // The next one may find a slot too (several freed, or this one gave up).
        if let Some(next) = line.front().filter(|_| was_first) {
            next.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_to_the_bound_and_back() {
        let count = AtomicU32::new(0);
        assert!(take(&count, 2) && take(&count, 2), "two under the bound");
        assert!(!take(&count, 2), "a third over it");
        assert_eq!(count.load(Ordering::Relaxed), 2, "a refusal leaves the count as it was");
        count.fetch_sub(1, Ordering::Relaxed);
        assert!(take(&count, 2), "a slot freed");
    }
}
