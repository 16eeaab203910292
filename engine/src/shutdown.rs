//! Per-worker drain signal: once started, every waiter (accept loops, idle keep-alive
//! connections) wakes and winds down. Single-threaded: the control plane reaches a worker
//! through its control tick, not through this type.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::waiters::Waiters;

#[derive(Default)]
pub(crate) struct Drain {
    started: Cell<bool>,
    waiters: Waiters<()>,
}

impl Drain {
    pub(crate) fn start(&self) {
        self.started.set(true);
        self.waiters.wake_where(|_| true);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.started.get()
    }

    /// Resolves once draining has started.
    pub(crate) fn wait(&self) -> DrainWait<'_> {
        DrainWait { drain: self, slot: None }
    }
}

pub(crate) struct DrainWait<'a> {
    drain: &'a Drain,
    slot: Option<usize>,
}

impl Future for DrainWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.started.get() {
            return Poll::Ready(());
        }
        let drain = self.drain;
        drain.waiters.register(&mut self.slot, cx.waker(), || ());
        Poll::Pending
    }
}

impl Drop for DrainWait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            self.drain.waiters.release(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn start_wakes_every_waiter_and_drops_free_slots() {
        let drain = Drain::default();
        let mut cx = Context::from_waker(Waker::noop());
        let mut a = Box::pin(drain.wait());
        let mut b = Box::pin(drain.wait());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        drop(b);
        assert_eq!(drain.waiters.occupied(), 1);
        drain.start();
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(Box::pin(drain.wait()).as_mut().poll(&mut cx).is_ready());
    }
}
