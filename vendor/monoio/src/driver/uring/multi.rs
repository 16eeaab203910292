//! coregate: multishot stream receives into a ring of buffers provided to the kernel. One
//! receive stays armed on a socket across its requests, so reading a request costs no
//! submission and no poll arming: when bytes arrive, the kernel picks a buffer from the ring,
//! receives into it and posts a completion, and the receive stays armed. Completions the
//! reader has not taken wait here, in the socket's queue.
//!
//! Each arming carries a byte limit (Linux 6.16+, `sqe->optlen`): after `ARM_LIMIT` bytes
//! the kernel ends the receive, and it is armed again only once the reader has taken what
//! was queued, so a socket whose reader stalls holds at most `ARM_LIMIT` bytes of the ring
//! (plus one buffer) and the rest waits in its kernel receive buffer, under TCP flow control,
//! as with one-shot reads. A kernel without the limit answers the first arming with EINVAL:
//! the reader is told `Unsupported` and this ring gives out no more multishot receivers.
//!
//! A receive that finds the ring dry (`ENOBUFS`: every buffer holds bytes that readers have
//! not taken, as when a few dozen connections wait on a slow upstream with their limit
//! received) is not left waiting for a buffer: until one comes back its socket is read
//! directly, a `recv(2)` that does not block, with a readiness poll armed when it finds
//! nothing. Only one of the two receives at a time, so bytes keep their order. Waiting for
//! a buffer instead let connections that do not read stall every other one of the worker.
//!
//! What a connection reads, and when, is the caller's (`net::tcp::MultiRecv`); this file
//! owns the buffers and the completions.

use std::{
    collections::VecDeque,
    io,
    mem::MaybeUninit,
    task::{Context, Poll, Waker},
};

use io_uring::{cqueue, opcode, squeue, types::BufRingEntry, IoUring, Submitter};

use crate::{driver::shared_fd::SharedFd, utils::slab::Slab};

/// Marks a completion's `user_data` as a multishot receive's; the rest is its key in
/// `Multi::streams`. Below monoio's reserved values (`MIN_REVERSED_USERDATA`), above any
/// operation's slab key.
pub(crate) const MULTI_TAG: u64 = 1 << 61;
/// With `MULTI_TAG`: the completion is of the readiness poll of a socket read directly
/// while the ring is dry.
const POLL_TAG: u64 = 1 << 60;

/// Buffers in the ring (a power of two), and their size. 1 MiB per worker: small enough to
/// stay in cache as the ring cycles through it, and room for about 50 sockets at their limit
/// at once (`ARM_LIMIT` and one buffer each); a socket that finds the ring empty is armed
/// again when a buffer comes back.
const BUFS: u16 = 256;
const BUF_SIZE: usize = 4096;
/// The ring's buffer group id (any; one group per ring).
const GROUP: u16 = 0x6367;
/// Bytes one arming may receive before the kernel ends it (`sqe->optlen`).
const ARM_LIMIT: u32 = 16 * 1024;

/// A completion not yet taken: bytes in buffer `bid` from `off` to `res`, the end of the
/// stream (`res` 0) or an error (`res` < 0).
struct Done {
    res: i32,
    bid: u16,
    off: u32,
}

/// One socket's multishot receive.
#[derive(Default)]
struct Stream {
    queue: VecDeque<Done>,
    waker: Option<Waker>,
    /// A receive is armed in the kernel (its last completion had `IORING_CQE_F_MORE`).
    armed: bool,
    /// The end of the stream was taken: every later read returns 0, without arming.
    eof: bool,
    /// Its reader is gone; the key is freed at the last completion.
    dropped: bool,
    /// Its last arming found the ring dry: until a buffer comes back, the socket is read
    /// directly (and no receive is armed).
    starved: bool,
    /// A readiness poll is armed (for a socket read directly).
    polling: bool,
    /// The kernel refused the readiness poll (its error): reported by the next read that
    /// would wait, rather than polling again and again.
    poll_failed: i32,
}

impl Stream {
    /// Nothing of this stream's is left in the kernel.
    fn idle(&self) -> bool {
        !self.armed && !self.polling
    }

    /// Keeps the waker of a reader that found nothing, unless the one kept wakes the same
    /// task.
    fn keep_waker(&mut self, cx: &Context<'_>) {
        match &self.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.waker = Some(cx.waker().clone()),
        }
    }
}

/// An anonymous mapping of `len` bytes, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> Option<Mapping> {
        // SAFETY: a fresh anonymous private mapping, checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        (ptr != libc::MAP_FAILED).then(|| Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, used by nothing any more (see `Multi::unregister`).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A ring's provided buffers and its sockets' multishot receives.
pub(crate) struct Multi {
    /// The ring's entries, read by the kernel (page-aligned, `BUFS` of them).
    entries: Mapping,
    /// The buffers, `BUFS` of `BUF_SIZE` bytes.
    pool: Mapping,
    /// Entries published to the kernel so far (wrapping).
    tail: u16,
    streams: Slab<Stream>,
    /// Keys of receives that ended for want of a buffer, to wake when one comes back.
    starved: Vec<usize>,
    /// False once the kernel refused an arming's byte limit.
    supported: bool,
    /// This ring's tag in its receivers' ids (1-255, from `NEXT_TAG`).
    tag: u32,
}

/// Source of `Multi::tag`.
static NEXT_TAG: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Bits of a receiver's id that hold its key; the ring's tag is above them.
const KEY_BITS: u32 = 24;

impl Multi {
    /// Registers the buffer ring (Linux 5.19+); `None` where the kernel refuses, and then
    /// sockets read one receive at a time, as in stock monoio.
    pub(crate) fn register(submitter: &Submitter<'_>) -> Option<Multi> {
        let entries = Mapping::new(BUFS as usize * std::mem::size_of::<BufRingEntry>())?;
        let pool = Mapping::new(BUFS as usize * BUF_SIZE)?;
        // SAFETY: the entries are page-aligned (a fresh mapping), `BUFS` long, and outlive
        // the registration (`unregister` runs before they are unmapped).
        unsafe { submitter.register_buf_ring(entries.ptr as u64, BUFS, GROUP) }.ok()?;
        let mut multi = Multi {
            entries,
            pool,
            tail: 0,
            streams: Slab::new(),
            starved: Vec::new(),
            supported: true,
            tag: NEXT_TAG.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 255 + 1,
        };
        for bid in 0..BUFS {
            multi.push_buf(bid);
        }
        multi.publish();
        Some(multi)
    }

    /// Ends the kernel's use of the ring's buffers, before the mappings go.
    pub(crate) fn unregister(&self, submitter: &Submitter<'_>) {
        let _ = submitter.unregister_buf_ring(GROUP);
    }

    /// A new socket's receiver id: its key, tagged with this ring's tag, so that a receiver
    /// that outlived its runtime cannot reach the streams of a later ring on its thread.
    /// Never 0. `None` once the kernel refused the byte limit (or, past 16 million
    /// receivers at once, which no worker has).
    pub(crate) fn open(&mut self) -> Option<u32> {
        if !self.supported {
            return None;
        }
        let key = self.streams.insert(Stream::default());
        if key >= 1 << KEY_BITS {
            self.streams.remove(key);
            return None;
        }
        Some(self.tag << KEY_BITS | key as u32)
    }

    /// The key of receiver `id`, if it is one of this ring's.
    pub(crate) fn key(&self, id: u32) -> Option<usize> {
        (id >> KEY_BITS == self.tag).then_some((id & ((1 << KEY_BITS) - 1)) as usize)
    }

    fn buf(&self, bid: u16) -> *mut u8 {
        // SAFETY: `bid` < BUFS (the kernel hands out only the ids this ring holds), so the
        // offset is inside the pool.
        unsafe { self.pool.ptr.add(bid as usize * BUF_SIZE) }
    }

    /// Puts buffer `bid` back at the ring's tail (seen by the kernel at `publish`).
    fn push_buf(&mut self, bid: u16) {
        let entries = self.entries.ptr.cast::<BufRingEntry>();
        // SAFETY: the index is masked into the ring; the kernel reads only entries before
        // the published tail, and this one is past it.
        let e = unsafe { &mut *entries.add((self.tail & (BUFS - 1)) as usize) };
        e.set_addr(self.buf(bid) as u64);
        e.set_len(BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        let entries = self.entries.ptr.cast::<BufRingEntry>();
        // SAFETY: the tail field overlays the first entry (the buffer-ring layout); the
        // kernel reads it concurrently, hence the atomic release store.
        let tail = unsafe { BufRingEntry::tail(entries) }.cast_mut();
        // SAFETY: an aligned u16 inside the mapping, only ever accessed atomically here.
        unsafe { std::sync::atomic::AtomicU16::from_ptr(tail) }
            .store(self.tail, std::sync::atomic::Ordering::Release);
    }

    /// Gives buffer `bid` back to the kernel: the sockets that found the ring dry receive
    /// through it again from their next read.
    fn give_back(&mut self, bid: u16) {
        self.push_buf(bid);
        self.publish();
        for key in std::mem::take(&mut self.starved) {
            if let Some(mut s) = self.streams.get(key) {
                s.starved = false;
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// Arms the receive of `key` on `fd`.
    fn arm(&mut self, uring: &mut IoUring, key: usize, fd: &SharedFd) -> io::Result<()> {
        let (raw, fixed) = fd.uring_fd();
        let mut sqe = opcode::RecvMulti::new(raw, GROUP)
            .build()
            .flags(fixed)
            .user_data(key as u64 | MULTI_TAG);
        // SAFETY: `Entry` is `#[repr(C)]` around the kernel's 64-byte `io_uring_sqe`, whose
        // bytes 44-47 are the union holding `optlen` (include/uapi/linux/io_uring.h); io-uring
        // 0.6 has no setter for it. Written unaligned to be safe.
        unsafe {
            let raw = (&mut sqe as *mut squeue::Entry).cast::<u8>();
            raw.add(44).cast::<u32>().write_unaligned(ARM_LIMIT);
        }
        self.push(uring, &sqe)?;
        if let Some(mut s) = self.streams.get(key) {
            s.armed = true;
        }
        Ok(())
    }

    /// Files a completion tagged `MULTI_TAG` (`index` without the tag).
    pub(crate) fn complete(&mut self, index: u64, res: i32, flags: u32) {
        let key = (index & !POLL_TAG) as usize;
        if index & POLL_TAG == 0 {
            return self.complete_recv(key, res, flags);
        }
        // The readiness poll of a socket read directly: whatever it says, the next read
        // finds out.
        if let Some(mut s) = self.streams.get(key) {
            s.polling = false;
            if res < 0 && res != -libc::ECANCELED {
                s.poll_failed = res;
            }
            if s.dropped {
                if s.idle() {
                    s.remove();
                }
            } else if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }

    /// Files a completion of the receive of `key`.
    fn complete_recv(&mut self, key: usize, res: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        // A buffer that is not queued for a reader goes straight back.
        let mut back = bid;
        let mut starved = false;
        if let Some(mut s) = self.streams.get(key) {
            if !cqueue::more(flags) {
                s.armed = false;
            }
            if s.dropped {
                if s.idle() {
                    s.remove();
                }
            } else {
                match (res, bid) {
                    (n, Some(bid)) if n > 0 => {
                        back = None;
                        s.queue.push_back(Done { res, bid, off: 0 });
                    }
                    (n, _) if n == -libc::ENOBUFS => {
                        starved = true;
                        s.starved = true;
                    }
                    (n, _) => {
                        if n == -libc::EINVAL {
                            self.supported = false;
                        }
                        // The end of the stream, or an error (bytes without a buffer do not
                        // occur: an I/O error if they did): the reader's to take.
                        let res = if n > 0 { -libc::EIO } else { n };
                        s.queue.push_back(Done { res, bid: 0, off: 0 });
                    }
                }
                // A starved reader too: it reads the socket directly now.
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            }
        }
        if starved {
            self.starved.push(key);
        }
        if let Some(b) = back {
            self.give_back(b);
        }
    }

    /// Copies received bytes into `dst`, as many as are queued and fit (the rest stays
    /// queued), as `recv(2)` does. `Ok(0)`: the peer closed. Arms the receive when nothing is
    /// queued. An error or the end of the stream is reported once the bytes before it are
    /// taken.
    pub(crate) fn poll_recv(
        &mut self,
        uring: &mut IoUring,
        key: usize,
        fd: &SharedFd,
        cx: &mut Context<'_>,
        dst: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<usize>> {
        let mut copied = 0;
        loop {
            let Some(mut s) = self.streams.get(key) else {
                return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
            };
            let Some(front) = s.queue.front_mut() else {
                if copied > 0 || s.eof {
                    return Poll::Ready(Ok(copied));
                }
                if s.starved {
                    drop(s);
                    return self.direct(uring, key, fd, cx, dst, 0);
                }
                drop(s);
                return self.wait(uring, key, fd, cx);
            };
            if front.res <= 0 {
                if copied > 0 {
                    return Poll::Ready(Ok(copied));
                }
                let res = front.res;
                s.queue.pop_front();
                return Poll::Ready(match res {
                    0 => {
                        s.eof = true;
                        Ok(0)
                    }
                    e if e == -libc::EINVAL => Err(io::ErrorKind::Unsupported.into()),
                    e => Err(io::Error::from_raw_os_error(-e)),
                });
            }
            let room = &mut dst[copied..];
            let (bid, off) = (front.bid, front.off as usize);
            let n = (front.res as usize - off).min(room.len());
            front.off += n as u32;
            let whole = front.off as i32 == front.res;
            if whole {
                s.queue.pop_front();
            }
            drop(s);
            // SAFETY: the buffer holds `res` received bytes, `off + n <= res <= BUF_SIZE`,
            // `n` fits in `room`, and the kernel does not write to the buffer until it is
            // given back (below).
            unsafe {
                std::ptr::copy_nonoverlapping(self.buf(bid).add(off), room.as_mut_ptr().cast(), n)
            };
            copied += n;
            if !whole {
                return Poll::Ready(Ok(copied));
            }
            self.give_back(bid);
            if copied == dst.len() {
                return Poll::Ready(Ok(copied));
            }
        }
    }

    /// Ready once bytes, the end of the stream or an error wait to be taken.
    pub(crate) fn poll_ready(
        &mut self,
        uring: &mut IoUring,
        key: usize,
        fd: &SharedFd,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(s) = self.streams.get(key) else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        if !s.queue.is_empty() || s.eof {
            return Poll::Ready(Ok(()));
        }
        if s.starved {
            drop(s);
            let mut probe = [MaybeUninit::uninit()];
            return self.direct(uring, key, fd, cx, &mut probe, libc::MSG_PEEK).map_ok(drop);
        }
        drop(s);
        self.wait(uring, key, fd, cx)
    }

    /// Reads socket `fd` itself (the ring is dry), without blocking; when nothing is there,
    /// keeps the reader's waker and arms a readiness poll. `flags`: `MSG_PEEK` to take
    /// nothing. The end of the stream is remembered as the receive's would be.
    fn direct(
        &mut self,
        uring: &mut IoUring,
        key: usize,
        fd: &SharedFd,
        cx: &mut Context<'_>,
        dst: &mut [MaybeUninit<u8>],
        flags: libc::c_int,
    ) -> Poll<io::Result<usize>> {
        let n = loop {
            // SAFETY: `dst` is writable for its length, which bounds the receive.
            let n = unsafe {
                libc::recv(fd.raw_fd(), dst.as_mut_ptr().cast(), dst.len(), flags | libc::MSG_DONTWAIT)
            };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => break usize::MAX,
                _ => return Poll::Ready(Err(e)),
            }
        };
        let Some(mut s) = self.streams.get(key) else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        if n != usize::MAX {
            s.eof |= n == 0 && flags & libc::MSG_PEEK == 0;
            return Poll::Ready(Ok(n));
        }
        if s.poll_failed < 0 {
            return Poll::Ready(Err(io::Error::from_raw_os_error(-s.poll_failed)));
        }
        s.keep_waker(cx);
        if s.polling {
            return Poll::Pending;
        }
        drop(s);
        let (raw, fixed) = fd.uring_fd();
        let events = (libc::POLLIN | libc::POLLRDHUP) as u32;
        let sqe = opcode::PollAdd::new(raw, events)
            .build()
            .flags(fixed)
            .user_data(key as u64 | MULTI_TAG | POLL_TAG);
        self.push(uring, &sqe)?;
        if let Some(mut s) = self.streams.get(key) {
            s.polling = true;
        }
        Poll::Pending
    }

    /// Queues `sqe`, submitting the queue first when it is full.
    fn push(&self, uring: &mut IoUring, sqe: &squeue::Entry) -> io::Result<()> {
        // SAFETY: the entries queued here name no memory of the caller's (receives take
        // their buffers from the ring, which outlives every operation on it).
        if unsafe { uring.submission().push(sqe) }.is_err() {
            uring.submit()?;
            // SAFETY: as above.
            unsafe { uring.submission().push(sqe) }.map_err(|_| io::Error::from(io::ErrorKind::WouldBlock))?;
        }
        Ok(())
    }

    /// Keeps the waker of `key`'s reader, which found nothing queued, and arms its receive
    /// if none is armed.
    fn wait<T>(
        &mut self,
        uring: &mut IoUring,
        key: usize,
        fd: &SharedFd,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        let Some(mut s) = self.streams.get(key) else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        s.keep_waker(cx);
        let armed = s.armed;
        drop(s);
        if !armed {
            self.arm(uring, key, fd)?;
        }
        Poll::Pending
    }

    /// The reader of `key` is gone: its queued buffers go back, and an armed receive is
    /// cancelled (the key is freed at its last completion).
    pub(crate) fn close(&mut self, uring: &mut IoUring, key: usize) {
        let Some(mut s) = self.streams.get(key) else {
            return;
        };
        let queued = std::mem::take(&mut s.queue);
        let (armed, polling) = (s.armed, s.polling);
        if s.idle() {
            s.remove();
        } else {
            s.dropped = true;
            s.waker = None;
        }
        for d in queued {
            if d.res > 0 {
                self.give_back(d.bid);
            }
        }
        // Each holds the socket open in the kernel until it ends.
        for (live, tag) in [(armed, 0), (polling, POLL_TAG)] {
            if live {
                let cancel = opcode::AsyncCancel::new(key as u64 | MULTI_TAG | tag)
                    .build()
                    .user_data(u64::MAX);
                let _ = self.push(uring, &cancel);
            }
        }
    }
}
