//! Coarse per-worker deadlines for parked (idle) connections. A monoio `Sleep` is 640 bytes
//! (128-byte aligned); thousands of idle connections each holding one would cost more than
//! the connections themselves. A parked connection instead registers a deadline here (a
//! slot of 40 bytes), and the worker's control tick fires the expired ones, so idle
//! timeouts have the tick's granularity (50 ms).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

struct Slot {
    deadline: Instant,
    waker: Option<Waker>,
    fired: bool,
}

#[derive(Default)]
pub(crate) struct IdleTimers {
    slots: RefCell<Vec<Option<Slot>>>,
    free: RefCell<Vec<usize>>,
}

impl IdleTimers {
    /// Resolves once `deadline` has passed (as seen by [`IdleTimers::fire_expired`]).
    pub(crate) fn wait(&self, deadline: Instant) -> IdleWait<'_> {
        IdleWait { timers: self, deadline, slot: None }
    }

    /// Wakes every waiter whose deadline is at or before `now`.
    pub(crate) fn fire_expired(&self, now: Instant) {
        for slot in self.slots.borrow_mut().iter_mut().flatten() {
            if !slot.fired && slot.deadline <= now {
                slot.fired = true;
                if let Some(w) = slot.waker.take() {
                    w.wake();
                }
            }
        }
    }
}

pub(crate) struct IdleWait<'a> {
    timers: &'a IdleTimers,
    deadline: Instant,
    slot: Option<usize>,
}

impl Future for IdleWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let timers = self.timers;
        let mut slots = timers.slots.borrow_mut();
        match self.slot {
            Some(i) => {
                let slot = slots[i].as_mut().expect("own slot");
                if slot.fired {
                    return Poll::Ready(());
                }
                slot.waker = Some(cx.waker().clone());
            }
            None => {
                if self.deadline <= Instant::now() {
                    return Poll::Ready(());
                }
                let slot = Slot { deadline: self.deadline, waker: Some(cx.waker().clone()), fired: false };
                let i = match timers.free.borrow_mut().pop() {
                    Some(i) => {
                        slots[i] = Some(slot);
                        i
                    }
                    None => {
                        slots.push(Some(slot));
                        slots.len() - 1
                    }
                };
                drop(slots);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for IdleWait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            self.timers.slots.borrow_mut()[i] = None;
            self.timers.free.borrow_mut().push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_only_expired_waiters_and_frees_slots() {
        let timers = IdleTimers::default();
        let now = Instant::now();
        let mut early = Box::pin(timers.wait(now + Duration::from_secs(1)));
        let mut late = Box::pin(timers.wait(now + Duration::from_secs(100)));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(early.as_mut().poll(&mut cx).is_pending());
        assert!(late.as_mut().poll(&mut cx).is_pending());
        timers.fire_expired(now + Duration::from_secs(2));
        assert!(early.as_mut().poll(&mut cx).is_ready());
        assert!(late.as_mut().poll(&mut cx).is_pending());
        drop(early);
        drop(late);
        assert!(timers.slots.borrow().iter().all(Option::is_none));
        let mut again = Box::pin(timers.wait(now + Duration::from_secs(5)));
        assert!(again.as_mut().poll(&mut cx).is_pending());
        assert_eq!(timers.slots.borrow().len(), 2, "freed slots are reused");
    }
}
