//! A read left in flight on a pooled upstream connection while it idles, in place of a
//! `MSG_PEEK` syscall per reuse. Whether the upstream closed the connection or sent stray
//! bytes is the read's completion, seen by polling it once when the connection is taken; the
//! same read then receives the next response. When to post and check is `pool`'s; consuming
//! the result is `io::Conn`'s.
//!
//! Measured (wrk, 64 connections, nginx upstream): syscalls per request 1.58 → 0.51, CPU per
//! request 0.97 of the peek's (paired median of 8 alternating runs). The peek cost 2.7-4.2%
//! in `perf`; part of that comes back as io_uring task work (3.9% → 7.1%), since a read
//! posted at once always waits on a poll, where one started after the request sometimes
//! found the response already there.
//!
//! monoio's read future has an unnameable type that borrows the stream, so it cannot be a
//! field beside the stream; it lives in a heap block of its own, reused by every read this
//! connection posts (one allocation per upstream connection, none per request), and is
//! reached through a small table of functions made for its type.

use std::alloc::{self, Layout};
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use monoio::buf::{IoBufMut as _, SliceMut};
use monoio::net::TcpStream;

/// What a read of a connection's buffer yields.
pub(crate) type ReadOutput = monoio::BufResult<usize, SliceMut<BytesMut>>;

/// The operations on one future type, stored at its address.
struct Table {
    layout: Layout,
    poll: unsafe fn(NonNull<u8>, &mut Context<'_>) -> Poll<ReadOutput>,
    drop: unsafe fn(NonNull<u8>),
}

/// # Safety
/// `p` points to a live, pinned `F`.
unsafe fn poll_as<F: Future<Output = ReadOutput>>(p: NonNull<u8>, cx: &mut Context<'_>) -> Poll<ReadOutput> {
    // SAFETY: per this function's contract; the block never moves while `F` lives in it.
    unsafe { Pin::new_unchecked(p.cast::<F>().as_mut()) }.poll(cx)
}

/// # Safety
/// `p` points to a live `F`, which is not used again.
unsafe fn drop_as<F>(p: NonNull<u8>) {
    // SAFETY: per this function's contract.
    unsafe { p.cast::<F>().drop_in_place() }
}

/// A connection's posted read: its block, and whether a read lives in it.
pub(crate) struct Posted {
    block: NonNull<u8>,
    table: &'static Table,
    live: bool,
}

impl Posted {
    /// Posts a read of `buf` on `stream` into `slot`, reusing the block already there.
    pub(crate) fn start(slot: &mut Option<Box<Posted>>, stream: &mut TcpStream, buf: BytesMut) {
        let cap = buf.capacity();
        let read = stream.read_posted(buf.slice_mut(0..cap), crate::driver::recv_poll_first());
        let posted = slot.get_or_insert_with(|| Box::new(Posted::alloc(&read)));
        // One read in flight per connection: a previous one (there is none when the pool
        // calls this) would otherwise be overwritten without being dropped.
        posted.cancel();
        debug_assert_eq!(posted.table.layout, Layout::for_value(&read));
        // SAFETY: the block was allocated with this future type's layout (one type: the
        // table was made for it), and no future lives in it (`live` is false). The future
        // is `stream.read_posted(..)`'s, whose type borrows `stream`, but coregate's copy of
        // monoio 0.2.4 (vendor/monoio) only uses the stream to clone its fd handle into the
        // operation while creating the future (net/tcp/stream.rs, `read_posted`): the future
        // holds the operation (that fd handle and the buffer) and no reference to the
        // stream, so it may outlive this borrow and the stream may move.
        unsafe { posted.block.cast().write(read) };
        posted.live = true;
    }

    fn alloc<F: Future<Output = ReadOutput>>(_: &F) -> Posted {
        let table = const { &Table { layout: Layout::new::<F>(), poll: poll_as::<F>, drop: drop_as::<F> } };
        assert!(table.layout.size() > 0, "a read future holds its operation");
        // SAFETY: the layout has a non-zero size (checked above).
        let block = NonNull::new(unsafe { alloc::alloc(table.layout) })
            .unwrap_or_else(|| alloc::handle_alloc_error(table.layout));
        Posted { block, table, live: false }
    }

    /// True while a posted read has not been consumed or dropped.
    pub(crate) fn is_live(&self) -> bool {
        self.live
    }

    /// Polls the posted read; when it completes, the block is free for the next one.
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<ReadOutput> {
        assert!(self.live, "polled a read that was not posted");
        // SAFETY: a future of the table's type lives in the block (`live`) and stays there
        // until dropped in place below or in `cancel`.
        let out = std::task::ready!(unsafe { (self.table.poll)(self.block, cx) });
        self.cancel();
        Poll::Ready(out)
    }

    /// Whether the read completed already (the upstream sent bytes or closed while the
    /// connection idled): polled with a waker that does nothing, a pending read stays posted
    /// for the next real poll. On io_uring this looks at a completion the runtime already
    /// reaped, with no syscall; on epoll this first poll is the read attempt itself.
    pub(crate) fn has_completed(&mut self) -> bool {
        self.poll_read(&mut Context::from_waker(Waker::noop())).is_ready()
    }

    /// Drops the posted read, if any (monoio cancels the operation in the kernel).
    pub(crate) fn cancel(&mut self) {
        if std::mem::take(&mut self.live) {
            // SAFETY: a future of the table's type lives in the block and, `live` now being
            // false, is not used again.
            unsafe { (self.table.drop)(self.block) }
        }
    }
}

impl Drop for Posted {
    fn drop(&mut self) {
        self.cancel();
        // SAFETY: the block was allocated in `alloc` with this layout, and no future lives
        // in it any more.
        unsafe { alloc::dealloc(self.block.as_ptr(), self.table.layout) }
    }
}
