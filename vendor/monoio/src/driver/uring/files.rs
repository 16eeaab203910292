//! coregate: the ring's table of registered files (`IOSQE_FIXED_FILE`), which lets a
//! receive or send on a long-lived socket skip the kernel's per-operation file lookup
//! (`fget`/`fput`). Which descriptors get a slot, and when, is `SharedFd`'s business.

use std::{
    os::unix::io::RawFd,
    sync::atomic::{AtomicU32, Ordering},
};

use io_uring::Submitter;

/// Slots asked of the kernel per ring: 8 bytes of kernel memory each (the table of node
/// pointers), so 128 KiB per worker; a socket that finds the table full keeps using its
/// descriptor number, as every socket did before.
const SLOTS: u32 = 16384;

/// The free slots of one ring's sparse file table.
pub(crate) struct FixedFiles {
    /// Slots given back, reused first.
    free: Vec<u32>,
    /// Slots below this were handed out at least once.
    next: u32,
    /// The table's size.
    cap: u32,
    /// Tells this ring's table from any other's: a socket that outlived its runtime must not
    /// empty a slot of the next ring made on its thread.
    id: u32,
}

/// Source of `FixedFiles::id`.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

impl FixedFiles {
    /// Registers a sparse table on the ring (Linux 5.19+), sized to the lower of `SLOTS` and
    /// the open-file limit (the kernel refuses a larger one). `None` where the kernel
    /// refuses: every operation then names its descriptor, as stock monoio does.
    pub(crate) fn register(submitter: &Submitter<'_>) -> Option<Self> {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes into the struct it is given, which outlives the call.
        let cap = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } {
            0 => SLOTS.min(lim.rlim_cur.min(u32::MAX as libc::rlim_t) as u32),
            _ => return None,
        };
        if cap == 0 {
            return None;
        }
        submitter.register_files_sparse(cap).ok()?;
        Some(FixedFiles {
            free: Vec::new(),
            next: 0,
            cap,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Which ring's table this is.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// Puts `fd` into a free slot and returns the slot, or `None` when the table is full or
    /// the kernel refused (the caller keeps naming the descriptor).
    pub(crate) fn insert(&mut self, submitter: &Submitter<'_>, fd: RawFd) -> Option<u32> {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None if self.next < self.cap => {
                self.next += 1;
                self.next - 1
            }
            None => return None,
        };
        match submitter.register_files_update(slot, &[fd]) {
            Ok(1) => Some(slot),
            _ => {
                self.free.push(slot);
                None
            }
        }
    }

    /// Empties `slot`. The table holds its own reference to the file, so the socket is not
    /// closed (no FIN goes out) until its slot is emptied as well as its descriptor closed:
    /// this must run before the descriptor's close. Done with a register call, not a ring
    /// operation, so that the slot is empty before it is handed out again.
    pub(crate) fn remove(&mut self, submitter: &Submitter<'_>, slot: u32) {
        if submitter.register_files_update(slot, &[-1]).is_ok() {
            self.free.push(slot);
        }
        // A slot the kernel would not empty is never handed out again; the ring's
        // teardown releases its file.
    }
}
