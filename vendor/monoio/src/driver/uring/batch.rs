//! coregate: a park that waits briefly for a batch of completions (Linux 6.12's
//! `min_wait_usec` in `io_uring_getevents_arg`), so that one turn of the loop handles the
//! work of several peers at once; everything else about parking is `mod.rs`'s.
//!
//! The kernel returns once `want` completions are there, or once `min_wait_usec` has passed
//! with at least one; with none, it waits on for the first (up to the park's timeout, or
//! [`IDLE`] when the runtime has no timer due, after which the loop parks again).

use std::{cell::Cell, io, time::Duration};

use io_uring::IoUring;

thread_local! {
    /// `(want, min_wait_usec)` for the rings this thread makes from now on.
    static PARK_BATCH: Cell<Option<(u32, u32)>> = const { Cell::new(None) };
    /// Parks on this thread that waited for a batch.
    static BATCHED_PARKS: Cell<u64> = const { Cell::new(0) };
}

/// How many parks on this thread have waited for a batch (and the kernel took the wait).
pub fn batched_parks() -> u64 {
    BATCHED_PARKS.with(Cell::get)
}

/// The longest a batched park sleeps when nothing is due: only the bound of a wait with
/// nothing to do (a completion or a wake ends it at once). Without a bound the kernel would
/// end every wait at `min_wait_usec` even with nothing there, and an idle worker would spin.
const IDLE: Duration = Duration::from_secs(3600);

/// Makes the io_uring rings this thread creates from now on wait up to `min_wait_usec`
/// microseconds for `want` completions when they park under load (`want < 2` or
/// `min_wait_usec == 0` turns it off). For rings with `IORING_SETUP_DEFER_TASKRUN`, where
/// the kernel wakes the waiter only once `want` are ready. A kernel without the feature
/// refuses the first such park, and the ring parks as before from then on.
pub fn set_park_batch(want: u32, min_wait_usec: u32) {
    let batch = (want >= 2 && min_wait_usec > 0).then_some((want, min_wait_usec));
    PARK_BATCH.with(|b| b.set(batch));
}

/// `struct io_uring_getevents_arg` as of Linux 6.12 (`pad` became `min_wait_usec`).
#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// `struct __kernel_timespec`.
#[repr(C)]
struct KernelTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}

const IORING_ENTER_GETEVENTS: u32 = 1;
const IORING_ENTER_EXT_ARG: u32 = 1 << 3;

/// A ring's batched parks: from a reap of at least half a batch (the loop is busy) for as
/// long as each batched park fills its batch before `min_wait_usec` runs out. A park whose
/// timer ran out first (the load fell) ends it, so a lightly loaded worker does not wait for
/// company.
pub(super) struct Batching {
    /// `(want, min_wait_usec)`, as [`set_park_batch`] said when the ring was made.
    batch: Option<(u32, u32)>,
    /// The kernel refused `min_wait_usec`.
    refused: bool,
    engaged: bool,
    /// Completions the last reap found.
    pub(super) reaped: u32,
}

impl Batching {
    /// For a ring made now on this thread.
    pub(super) fn new() -> Self {
        Self { batch: PARK_BATCH.with(Cell::get), refused: false, engaged: false, reaped: 0 }
    }

    /// The ring was made to batch (and so with `IORING_SETUP_DEFER_TASKRUN`).
    pub(super) fn configured(&self) -> bool {
        self.batch.is_some()
    }

    /// The wait for the next park: `(want, min_wait_usec)`, or none.
    pub(super) fn plan(&self) -> Option<(u32, u32)> {
        let (want, min_wait) = self.batch.filter(|_| !self.refused)?;
        (self.engaged || self.reaped >= want / 2).then_some((want, min_wait))
    }

    /// The kernel lacks `min_wait_usec`: park as monoio does.
    pub(super) fn refuse(&mut self) {
        self.refused = true;
    }

    /// After the park `plan` made (none if it did not batch) and its reap.
    pub(super) fn settle(&mut self, plan: Option<(u32, u32)>) {
        self.engaged = plan.is_some_and(|(want, _)| self.reaped >= want);
    }
}

/// Submits what is queued and waits as [`set_park_batch`] says (io-uring's raw
/// `Submitter::enter`, since its `SubmitArgs` cannot set `min_wait_usec`); with `want == 0`, only
/// collects what completed (a ring with `IORING_SETUP_DEFER_TASKRUN` posts completions only
/// when asked for events). `ETIME` (a timeout) is not an error here; `EINVAL` means the kernel
/// lacks `min_wait_usec`.
pub(super) fn enter(uring: &mut IoUring, want: u32, min_wait_usec: u32, timeout: Option<Duration>) -> io::Result<()> {
    let to_submit = uring.submission().len() as u32;
    let timeout = timeout.unwrap_or(IDLE);
    let ts = KernelTimespec { tv_sec: timeout.as_secs() as i64, tv_nsec: timeout.subsec_nanos() as i64 };
    let arg = GeteventsArg { sigmask: 0, sigmask_sz: 0, min_wait_usec, ts: &ts as *const KernelTimespec as u64 };
    let flags = match want {
        0 => IORING_ENTER_GETEVENTS,
        _ => IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
    };
    // SAFETY: io_uring_enter(2) on this ring; `arg` and the timespec it points to live on
    // this stack frame until the call returns, and it is passed only with
    // IORING_ENTER_EXT_ARG, whose argument it is (io-uring passes its size). The submission
    // queue's tail was published when the entries were pushed (io-uring syncs it on the
    // queue handle's drop), so `to_submit` entries are there for the kernel to take.
    let ret = unsafe { uring.submitter().enter(to_submit, want, flags, (want > 0).then_some(&arg)) };
    match ret {
        Err(e) if !matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => Err(e),
        _ => {
            if want > 0 {
                BATCHED_PARKS.with(|n| n.set(n.get() + 1));
            }
            Ok(())
        }
    }
}
