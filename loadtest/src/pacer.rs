//! Precise open-loop send times for the connections of one load thread; the times
//! themselves come from [`crate::schedule`].
//!
//! monoio's timers tick in whole milliseconds, and a `sleep` until a send time ended up to
//! about 2 ms late. Open-loop latency is measured from the intended send time (no
//! coordinated omission), so that lateness was added to every request: against nginx at
//! 2,000 req/s, where a round trip takes about 40 µs, the median was 1.16 ms. The pacer
//! wakes each waiting connection at its time with a timerfd (a kernel hrtimer with
//! nanosecond resolution), armed for the earliest pending time and watched with one
//! readiness poll on the thread's runtime.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};

pub struct Pacer {
    /// The timerfd, for arming and reading.
    fd: OwnedFd,
    state: RefCell<State>,
}

struct State {
    /// Pending wake-ups: (time, slot), earliest first.
    queue: BinaryHeap<Reverse<(Instant, usize)>>,
    /// The task waiting in each slot (one per connection of the thread).
    wakers: Vec<Option<Waker>>,
    /// The time the timerfd is armed for, if any.
    armed: Option<Instant>,
    /// Set by [`Pacer::stop`]: the driving task returns.
    stopped: bool,
}

impl Pacer {
    /// A pacer for `slots` waiting tasks (slot numbers `0..slots`).
    pub fn new(slots: usize) -> io::Result<Rc<Self>> {
        let fd =
            rustix::time::timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC)?;
        let state = State { queue: BinaryHeap::new(), wakers: vec![None; slots], armed: None, stopped: false };
        Ok(Rc::new(Self { fd, state: RefCell::new(state) }))
    }

    /// Completes at `at` (at once if it has passed); the task waits in `slot`, which no
    /// other task uses at the same time.
    pub fn until(self: &Rc<Self>, slot: usize, at: Instant) -> Until {
        Until { pacer: self.clone(), slot, at, queued: false }
    }

    /// Makes [`Pacer::drive`] return.
    pub fn stop(&self) {
        self.state.borrow_mut().stopped = true;
        self.arm(Instant::now());
    }

    /// Wakes waiting tasks at their times until [`Pacer::stop`]. Runs as a task on the
    /// thread whose connections use this pacer.
    pub async fn drive(self: Rc<Self>) -> io::Result<()> {
        // monoio has no timer type finer than its millisecond wheel, but it polls any file
        // descriptor for readiness: a duplicate of the timerfd is wrapped as a stream only
        // for that (it is never read or written through the stream).
        let watch = monoio::net::TcpStream::from_std(std::net::TcpStream::from(self.fd.try_clone()?))?;
        loop {
            watch.readable(false).await?;
            // Clear the expiry count (nothing to read when a re-arm raced the poll).
            let mut count = [0u8; 8];
            let _ = rustix::io::read(&self.fd, &mut count);
            let mut s = self.state.borrow_mut();
            if s.stopped {
                return Ok(());
            }
            let now = Instant::now();
            while let Some(&Reverse((at, slot))) = s.queue.peek() {
                if at > now {
                    break;
                }
                s.queue.pop();
                if let Some(w) = s.wakers[slot].take() {
                    w.wake();
                }
            }
            s.armed = s.queue.peek().map(|&Reverse((at, _))| at);
            if let Some(at) = s.armed {
                self.arm(at);
            }
        }
    }

    /// Arms the timerfd to expire at `at` (or at once if `at` has passed).
    fn arm(&self, at: Instant) {
        let d = at.saturating_duration_since(Instant::now());
        // A zero value would disarm the timer: 1 ns means "now".
        let nanos = if d.is_zero() { 1 } else { i64::from(d.subsec_nanos()) };
        let spec = Itimerspec {
            it_interval: Timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: Timespec { tv_sec: d.as_secs() as i64, tv_nsec: nanos },
        };
        rustix::time::timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec)
            .expect("timerfd_settime with a valid relative time");
    }
}

/// The future of [`Pacer::until`].
pub struct Until {
    pacer: Rc<Pacer>,
    slot: usize,
    at: Instant,
    queued: bool,
}

impl Future for Until {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        let this = &mut *self;
        let mut s = this.pacer.state.borrow_mut();
        if !this.queued {
            this.queued = true;
            s.queue.push(Reverse((this.at, this.slot)));
            if s.armed.is_none_or(|armed| this.at < armed) {
                s.armed = Some(this.at);
                this.pacer.arm(this.at);
            }
        }
        s.wakers[this.slot] = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Runs `f` on an io_uring runtime (where the kernel allows one) and on an epoll one.
    fn on_both_drivers<F: Future<Output = ()>>(f: impl Fn() -> F) {
        if monoio::utils::detect_uring() {
            let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().enable_timer().build().unwrap();
            rt.block_on(f());
        }
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        rt.block_on(f());
    }

    /// Every task wakes, none before its time, with times given out of order and slots
    /// reused.
    #[test]
    fn wakes_every_task_never_early() {
        on_both_drivers(|| async {
            let pacer = Pacer::new(8).unwrap();
            let driver = monoio::spawn(pacer.clone().drive());
            let start = Instant::now();
            let woken = Rc::new(RefCell::new(0));
            let mut tasks = Vec::new();
            for slot in 0..8usize {
                let (pacer, woken) = (pacer.clone(), woken.clone());
                tasks.push(monoio::spawn(async move {
                    for round in 0..3u64 {
                        // The slots' first times are in reverse order of their spawning.
                        let at = start + Duration::from_micros(300 * (8 - slot as u64) + 3000 * round);
                        pacer.until(slot, at).await;
                        let now = Instant::now();
                        assert!(now >= at, "slot {slot} woke {:?} early", at - now);
                        *woken.borrow_mut() += 1;
                    }
                }));
            }
            for t in tasks {
                t.await;
            }
            pacer.stop();
            driver.await.unwrap();
            assert_eq!(*woken.borrow(), 24);
        });
    }

    /// A time that has passed completes without waiting for the timer.
    #[test]
    fn past_times_complete_at_once() {
        on_both_drivers(|| async {
            let pacer = Pacer::new(1).unwrap();
            pacer.until(0, Instant::now() - Duration::from_millis(5)).await;
        });
    }
}
