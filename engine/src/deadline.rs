//! A route's `timeout`: one deadline over the whole exchange with its upstream (queue,
//! connects, retries and their backoff, the request sent and the response relayed), as
//! Envoy's route timeout. The exchange's own steps keep their timeouts; which deadline
//! applies, and when, is `proxy`'s to say: this only ends the exchange when it has passed.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::error::{Error, Kind, Side};
use crate::timers::{CoarseTimers, TimerWait};

pin_project_lite::pin_project! {
    /// Polls an exchange; while `deadline` holds an instant, ends it with a timeout once
    /// that instant has passed (on the worker's coarse timers: up to two ticks late). The
    /// exchange sets the deadline once its route is known, and clears it when it becomes a
    /// tunnel, which lives as long as it is used. A wrapper polled in place rather than an
    /// `async fn` around the part of the exchange after routing: that nested state machine
    /// cost the plain path (no deadline) about 130 instructions per request, this 20-60
    /// (callgrind after warm-up, alternating builds: 11,360-11,377 → 11,396-11,420).
    pub(crate) struct Bounded<'a, F> {
        #[pin]
        exchange: F,
        deadline: &'a Cell<Option<Instant>>,
        timers: &'a CoarseTimers,
        timer: Option<TimerWait<'a>>,
    }
}

impl<'a, F> Bounded<'a, F> {
    pub(crate) fn new(exchange: F, deadline: &'a Cell<Option<Instant>>, timers: &'a CoarseTimers) -> Self {
        Self { exchange, deadline, timers, timer: None }
    }
}

impl<T, F: Future<Output = Result<T, Error>>> Future for Bounded<'_, F> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(r) = this.exchange.poll(cx) {
            return Poll::Ready(r);
        }
        let Some(at) = this.deadline.get() else {
            *this.timer = None;
            return Poll::Pending;
        };
        let timer = this.timer.get_or_insert_with(|| this.timers.wait(at));
        match Pin::new(timer).poll(cx) {
            // Returned, the exchange is dropped with this future: its upstream connection
            // closes and its slot, if any, is released.
            Poll::Ready(()) => {
                Poll::Ready(Err(Error::new(Kind::Timeout, Side::Upstream, "the route's timeout ran out")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
