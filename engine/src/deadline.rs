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

/// The context of the error a route's timeout ends its exchange with.
const RAN_OUT: &str = "the route's timeout ran out";

/// What the client got when a route's timeout ran out, as `coregate_route_timeouts_total`
/// labels it (`RESULTS[answer as usize]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// No response head had gone out: a 504.
    GatewayTimeout = 0,
    /// A cached response past its freshness, as `stale_if_error` allows.
    Stale = 1,
    /// The response head had gone out: the connection was closed.
    Closed = 2,
}

impl Answer {
    /// What the client got: `head_sent`, whether the response head had gone out; `stale`,
    /// whether a stored response was there to answer with.
    pub(crate) fn given(head_sent: bool, stale: bool) -> Answer {
        match (head_sent, stale) {
            (true, _) => Answer::Closed,
            (false, true) => Answer::Stale,
            (false, false) => Answer::GatewayTimeout,
        }
    }
}

/// The `answer` label's values, by [`Answer`].
pub(crate) const RESULTS: [&str; 3] = ["504", "stale", "closed"];

/// Whether `err` is a route's timeout running out (not one of the exchange's own steps').
pub(crate) fn ran_out(err: &Error) -> bool {
    err.kind == Kind::Timeout && err.context == RAN_OUT
}

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
            Poll::Ready(()) => Poll::Ready(Err(Error::new(Kind::Timeout, Side::Upstream, RAN_OUT))),
            Poll::Pending => Poll::Pending,
        }
    }
}
