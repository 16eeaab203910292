//! Coarse per-worker timers and clock for every timeout of the request path: idle waits and
//! each read, write and connect. A monoio `Sleep` is 640 bytes, 128-byte aligned: a future
//! holding one is large, is moved with memcpy, and boxes with memalign; a timeout here is one
//! small slot, and the worker's control tick fires the expired ones, so timeouts have the
//! tick's granularity ([`TICK`]). Measured with callgrind on a proxied request: see README.
//!
//! The clock is coarse too: deadlines are computed from the time of the last tick, not from
//! `Instant::now()`, which cost about a dozen `clock_gettime` calls per proxied request
//! (2% of the worker's CPU in `perf`). Precise time is left to the rate limiter.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::waiters::Waiters;

/// A deadline and whether it has fired.
type Deadline = (Instant, bool);

/// How often the worker fires expired timers and advances the coarse clock.
pub(crate) const TICK: Duration = Duration::from_millis(50);

pub(crate) struct CoarseTimers {
    waiters: Waiters<Deadline>,
    /// The time of the last tick.
    now: Cell<Instant>,
}

impl Default for CoarseTimers {
    fn default() -> Self {
        Self { waiters: Waiters::default(), now: Cell::new(Instant::now()) }
    }
}

impl CoarseTimers {
    /// The time of the last tick: at most about one [`TICK`] behind the real time.
    pub(crate) fn now(&self) -> Instant {
        self.now.get()
    }

    /// The deadline `d` from now, never early: the coarse clock may be a tick behind, so a
    /// tick is added. Such a deadline fires between `d` and `d` plus two ticks from now.
    pub(crate) fn deadline(&self, d: Duration) -> Instant {
        self.now.get() + d + TICK
    }

    /// Resolves once `deadline` has passed (as seen by [`CoarseTimers::fire_expired`]).
    pub(crate) fn wait(&self, deadline: Instant) -> TimerWait<'_> {
        TimerWait { timers: self, deadline, slot: None }
    }

    /// Advances the clock to `now` and wakes every waiter whose deadline is at or before it.
    pub(crate) fn fire_expired(&self, now: Instant) {
        self.now.set(now);
        self.waiters.wake_where(|(deadline, fired)| {
            let due = !*fired && *deadline <= now;
            *fired |= due;
            due
        });
    }
}

pub(crate) struct TimerWait<'a> {
    timers: &'a CoarseTimers,
    deadline: Instant,
    slot: Option<usize>,
}

impl Future for TimerWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let timers = self.timers;
        // Before the first registration nothing has fired: a deadline already past is
        // fired by the next tick, like any other.
        let fired = self.slot.is_some_and(|i| timers.waiters.get(i, |(_, fired)| *fired).unwrap_or(true));
        if fired {
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        timers.waiters.register(&mut self.slot, cx.waker(), || (deadline, false));
        Poll::Pending
    }
}

impl Drop for TimerWait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            self.timers.waiters.release(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;
    use std::time::Duration;

    #[test]
    fn fires_only_expired_waiters_and_frees_slots() {
        let timers = CoarseTimers::default();
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
        assert_eq!(timers.waiters.occupied(), 0);
        let mut again = Box::pin(timers.wait(now + Duration::from_secs(5)));
        assert!(again.as_mut().poll(&mut cx).is_pending());
        assert_eq!(timers.waiters.capacity(), 2, "freed slots are reused");
    }
}
