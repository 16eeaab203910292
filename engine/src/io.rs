//! A socket with its read buffer, and reads and writes bounded by timeouts.
//!
//! Buffers are owned (monoio's rent model): a read moves the `BytesMut` into the kernel
//! operation and gets it back. A timed-out operation is dropped, which cancels it; monoio
//! keeps the buffer alive until the kernel lets go, so the connection is closed afterwards
//! and never reused (every such timeout ends its connection). The one wait a connection
//! outlives, the keep-alive read, is cancelled and awaited instead ([`Conn::fill_cancellable`]),
//! so that no byte it received is lost. Timeouts use the worker's
//! [`CoarseTimers`] (50 ms granularity), not a monoio `Sleep` per operation. Selects are
//! `biased` (the operation first): unbiased ones draw a random number per poll, 1% of the
//! worker's instructions in callgrind, and an operation that completed should win anyway.
//! An upstream connection taken from the pool has a read already posted
//! ([`crate::posted`]): its next fill awaits that read instead of starting one.
//! On io_uring a plain connection reads through a multishot receive instead
//! ([`crate::multishot`]), where none of this is needed: its waits hold no operation of their
//! own, and giving one up loses nothing.

use std::future::Future;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::buf::{IoBuf, IoBufMut as _};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, CancelableAsyncReadRent, Canceller};
use monoio::net::{MultiRecv, TcpStream};

use proto_http::HeaderSpan;

use crate::posted::Posted;
use crate::timers::CoarseTimers;
use crate::tls::Tls;

/// Runs `f` for at most `d` (as seen by `timers`); expiry becomes `ErrorKind::TimedOut`.
pub(crate) async fn timed<T>(
    timers: &CoarseTimers,
    d: Duration,
    f: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    let deadline = timers.deadline(d);
    monoio::select! {
        biased;
        r = f => r,
        _ = timers.wait(deadline) => Err(io::ErrorKind::TimedOut.into()),
    }
}

pub(crate) struct Conn {
    pub stream: TcpStream,
    /// Bytes read and not yet consumed.
    pub buf: BytesMut,
    /// A reusable buffer for the heads of one exchange (see `proxy`).
    pub spare: Vec<u8>,
    /// Reusable storage for the header spans of the next head parsed from this connection.
    pub spare_headers: Vec<HeaderSpan>,
    /// A read posted while this (upstream) connection idled in the pool; the next read is
    /// that one. It holds `buf`, which stays empty meanwhile.
    posted: Option<Box<Posted>>,
    /// Cancels the keep-alive read when it times out
    /// ([`Conn::fill_cancellable`]); made at the first such read after a park, dropped when the
    /// read is cancelled.
    canceller: Option<Canceller>,
    /// The multishot receive a client or upstream connection reads through on io_uring, a
    /// TLS one its ciphertext ([`crate::multishot`]); `None` elsewhere, or once the kernel
    /// refused it.
    pub multi: Option<MultiRecv>,
    /// The other read buffer: a body read swaps it in while the parsed head's bytes still
    /// point into `buf`'s allocation, so neither is reallocated (see `fill_until`).
    pub alt: BytesMut,
    /// TLS state (`crate::tls`) of a client connection accepted on a `[tls]` listener
    /// (made when its first bytes arrive) or of a connection to an HTTPS upstream (made
    /// at connect, `crate::upstream_tls`): reads return plaintext, writes are sealed.
    pub tls: Option<Box<Tls>>,
    pub(crate) timers: Rc<CoarseTimers>,
    /// Bytes written through [`Conn::write`] so far (plaintext, before TLS; a failed write
    /// counts nothing), for the access log's `bytes_sent`.
    pub sent: u64,
    /// Exchanges completed on an upstream connection, requests started on a client one:
    /// for `keepalive_requests` (see [`Conn::worn`]).
    pub exchanges: u32,
    /// When it was opened (the coarse clock), for `keepalive_time`. (A 4-byte timestamp
    /// instead made the struct 240 bytes, which the compiler moved with memcpy calls where
    /// it inlines the moves of this 256-byte one: +93 instructions per proxied request
    /// against +44 with this field, callgrind.)
    pub opened: Instant,
    /// An upstream connection's batches of pipelined requests ([`crate::pipeline`]), from
    /// its first.
    pub pipeline: Option<crate::pipeline::Link>,
}

impl Conn {
    /// Whether the connection has carried `requests` exchanges or lived for `time`: the
    /// `keepalive_requests` and `keepalive_time` of its upstream, or of `[server]` for a
    /// client connection.
    pub(crate) fn worn(&self, requests: Option<u32>, time: Option<Duration>, now: Instant) -> bool {
        requests.is_some_and(|n| self.exchanges >= n)
            || time.is_some_and(|t| now.saturating_duration_since(self.opened) >= t)
    }

    pub(crate) fn new(stream: TcpStream, capacity: usize, timers: Rc<CoarseTimers>) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(capacity),
            spare: Vec::new(),
            spare_headers: Vec::new(),
            posted: None,
            canceller: None,
            multi: None,
            alt: BytesMut::new(),
            tls: None,
            opened: timers.now(),
            timers,
            sent: 0,
            exchanges: 0,
            pipeline: None,
        }
    }

    /// As [`Conn::new`], reading through a multishot receive where the driver has them
    /// (io_uring; [`crate::multishot`]): how the gateway opens its client and upstream
    /// connections, plain or TLS.
    pub(crate) fn armed(stream: TcpStream, capacity: usize, timers: Rc<CoarseTimers>) -> Self {
        let mut conn = Self::new(stream, capacity, timers);
        conn.multi = conn.stream.multishot();
        conn
    }

    /// Starts the next read now, into the whole (empty) buffer with at least `room` free, and
    /// keeps it posted: the next fill awaits it ([`crate::posted`]). A connection with a
    /// multishot receive arms it instead, which holds no buffer.
    pub(crate) fn post_read(&mut self, room: usize) {
        debug_assert!(self.buf.is_empty());
        if let Some(multi) = self.multi.as_mut() {
            // Pending (nothing came since the response), and armed.
            let _ = multi.poll_ready(&self.stream, &mut Context::from_waker(Waker::noop()));
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        // Unique again (the last head's bytes were dropped): reserving takes back the
        // buffer's space without allocating.
        buf.reserve(room);
        Posted::start(&mut self.posted, &mut self.stream, buf);
    }

    /// True while the posted read is pending: the peer has sent nothing and not closed.
    pub(crate) fn posted_read_pending(&mut self) -> bool {
        if let Some(multi) = self.multi.as_mut() {
            // A refused receive (a kernel without its byte limit) says ready: the connection
            // is dropped, and new ones read the usual way.
            return multi.poll_ready(&self.stream, &mut Context::from_waker(Waker::noop())).is_pending();
        }
        self.posted.as_deref_mut().is_some_and(|p| p.is_live() && !p.has_completed())
    }

    /// Reads more bytes after those already buffered, making room for at least `room`.
    /// Returns the number read; 0 means the peer closed.
    /// Not an `async fn`: returning `fill_until`'s future saves a state machine around it.
    pub(crate) fn fill(&mut self, room: usize, timeout: Duration) -> impl Future<Output = io::Result<usize>> + '_ {
        let deadline = self.timers.deadline(timeout);
        self.fill_until(room, deadline)
    }

    /// As [`Conn::fill`], with a deadline (from [`CoarseTimers::deadline`]) shared by
    /// several reads, such as those of one head.
    pub(crate) async fn fill_until(&mut self, room: usize, deadline: Instant) -> io::Result<usize> {
        if self.tls.is_some() {
            return self.tls_fill_boxed(room, deadline).await;
        }
        if self.multi.is_some() {
            if let Some(r) = self.fill_multi(room, deadline).await {
                return r;
            }
        }
        // Two selects rather than one over an `async` block choosing the read: one future
        // less to build and poll per read (10,705 -> 10,480 instructions per proxied request,
        // callgrind).
        let timed_out = || Err(io::Error::from(io::ErrorKind::TimedOut));
        let (res, slice) = match self.posted.as_deref_mut() {
            Some(posted) if posted.is_live() => monoio::select! {
                biased;
                r = std::future::poll_fn(|cx| posted.poll_read(cx)) => r,
                _ = self.timers.wait(deadline) => return timed_out(),
            },
            _ => {
                let buf = self.read_buf(room);
                let (len, cap) = (buf.len(), buf.capacity());
                monoio::select! {
                    biased;
                    r = self.stream.read(buf.slice_mut(len..cap)) => r,
                    _ = self.timers.wait(deadline) => return timed_out(),
                }
            }
        };
        self.buf = slice.into_inner();
        res
    }

    /// Awaits the read posted while this connection idled in the pool, if one is still
    /// to be consumed (until `deadline`); its bytes end up in `buf`. `None`: there is none.
    /// For reads that do not go through [`Conn::fill_until`] (TLS ciphertext).
    pub(crate) async fn await_posted(&mut self, deadline: Instant) -> Option<io::Result<usize>> {
        let posted = self.posted.as_deref_mut().filter(|p| p.is_live())?;
        let (res, slice) = monoio::select! {
            biased;
            r = std::future::poll_fn(|cx| posted.poll_read(cx)) => r,
            _ = self.timers.wait(deadline) => return Some(Err(io::ErrorKind::TimedOut.into())),
        };
        self.buf = slice.into_inner();
        Some(res)
    }

    /// As [`Conn::fill_until`], through the multishot receive, which the caller checked
    /// the connection has. `None`: the kernel refused it, and the connection has none from
    /// now on. A wait given up (the deadline, or the future dropped) loses nothing: the
    /// bytes stay queued. A plain function returning a small future rather than an `async
    /// fn` nested in `fill_until`: that one grew every caller's state and cost the epoll
    /// path (which never takes it) about 100 instructions per proxied request in moves
    /// (callgrind).
    fn fill_multi(&mut self, room: usize, deadline: Instant) -> impl Future<Output = Option<io::Result<usize>>> + '_ {
        self.make_room(room);
        let Conn { stream, buf, multi, timers, .. } = self;
        let mut wait = timers.wait(deadline);
        std::future::poll_fn(move |cx| {
            let Some(m) = multi.as_mut() else { return Poll::Ready(None) };
            let r = match crate::multishot::poll_recv(stream, m, buf, cx) {
                Poll::Ready(r) => r,
                Poll::Pending => match std::pin::Pin::new(&mut wait).poll(cx) {
                    Poll::Ready(()) => Err(io::ErrorKind::TimedOut.into()),
                    Poll::Pending => return Poll::Pending,
                },
            };
            Poll::Ready(match r {
                Err(e) if crate::multishot::refused(&e) => {
                    *multi = None;
                    None
                }
                r => Some(r),
            })
        })
    }

    /// Waits until the connection has bytes to read, or closed; reads nothing. `relaxed`: as
    /// monoio's `readable` (on epoll, true may say readable after a short read).
    pub(crate) async fn readable(&mut self, relaxed: bool) -> io::Result<()> {
        if let Some(multi) = self.multi.as_mut() {
            match crate::multishot::ready(&self.stream, multi).await {
                Err(e) if crate::multishot::refused(&e) => self.multi = None,
                r => return r,
            }
        }
        self.stream.readable(relaxed).await
    }

    /// The buffer the next read fills, taken out of `self.buf`, with room for `room` more
    /// bytes after those it holds.
    #[inline]
    pub(crate) fn read_buf(&mut self, room: usize) -> BytesMut {
        self.make_room(room);
        std::mem::take(&mut self.buf)
    }

    /// Makes room in `self.buf` for `room` more bytes after those it holds.
    #[inline]
    fn make_room(&mut self, room: usize) {
        // An empty buffer whose allocation is still shared (a request head's bytes, alive
        // until its response is written, point into it) cannot take more bytes without a new
        // allocation: read into the other one, which is free again by then. Reading a large
        // body otherwise cost two allocations per request (a new buffer and its shared
        // header). A body read always finds its buffer empty (the chunked decoder keeps a
        // partial chunk line in its state); a head read that must grow a partial head
        // allocates either way.
        if self.buf.is_empty() && !self.buf.try_reclaim(room) {
            std::mem::swap(&mut self.buf, &mut self.alt);
        }
        self.buf.reserve(room);
    }

    /// As [`Conn::fill`] on io_uring, for a wait that the connection outlives (the keep-alive
    /// read, after which an idle connection parks or, in a drain, closes). `Ok(None)`: the
    /// time ran out with nothing read.
    ///
    /// Then the read is cancelled and awaited: a receive can complete between the timer and
    /// the kernel seeing the cancel, and dropping the operation (as `fill` does, whose
    /// timeouts end the connection) would throw those bytes away. monoio's cancellable read
    /// cost about 1,000 instructions more per request, partly a SipHash set of operations
    /// per canceller, which coregate's copy of monoio replaces by a `Vec`
    /// (`vendor/README.md`). On epoll a read runs when polled and dropping a pending one
    /// loses nothing: `fill` does there; nor does giving up a wait on a multishot receive
    /// ([`crate::multishot`]), which a connection that has one does.
    pub(crate) async fn fill_cancellable(&mut self, room: usize, timeout: Duration) -> io::Result<Option<usize>> {
        debug_assert!(self.posted.is_none(), "a client connection has no posted read");
        debug_assert!(self.tls.is_none(), "a TLS connection waits for readability instead");
        let deadline = self.timers.deadline(timeout);
        if self.multi.is_some() {
            match self.fill_multi(room, deadline).await {
                Some(Err(e)) if e.kind() == io::ErrorKind::TimedOut => return Ok(None),
                Some(r) => return r.map(Some),
                None => {}
            }
        }
        let buf = self.read_buf(room);
        let (len, cap) = (buf.len(), buf.capacity());
        let canceller = self.canceller.get_or_insert_with(Canceller::new);
        let mut read = std::pin::pin!(self.stream.cancelable_read(buf.slice_mut(len..cap), canceller.handle()));
        let timed_out = monoio::select! {
            biased;
            r = &mut read => Some(r),
            _ = self.timers.wait(deadline) => None,
        };
        let (res, slice) = match timed_out {
            Some(r) => r,
            None => {
                // `cancel` hands back a fresh canceller; a connection that parks keeps none.
                if let Some(c) = self.canceller.take() {
                    drop(c.cancel());
                }
                read.await
            }
        };
        self.buf = slice.into_inner();
        match res {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes all of `data` and hands the buffer back.
    pub(crate) async fn write<B: IoBuf>(&mut self, data: B, timeout: Duration) -> io::Result<B> {
        let deadline = self.timers.deadline(timeout);
        if self.tls.is_some() {
            return self.tls_write_boxed(data, deadline).await;
        }
        let (res, data) = monoio::select! {
            biased;
            r = self.stream.write_all(data) => r,
            _ = self.timers.wait(deadline) => return Err(io::ErrorKind::TimedOut.into()),
        };
        self.sent += res? as u64;
        Ok(data)
    }
}

/// Test helpers for the modules that drive a [`Conn`] through a real socket.
#[cfg(test)]
pub(crate) mod testing {
    use std::future::Future;
    use std::rc::Rc;

    use monoio::net::{TcpListener, TcpStream};

    use super::Conn;
    use crate::timers::CoarseTimers;

    /// Runs `test` on the epoll driver, then on io_uring (`test(true)`): operations complete
    /// differently on each (when polled; as completions reaped by the runtime).
    pub(crate) fn on_both_drivers<F: Future<Output = ()>>(test: impl Fn(bool) -> F) {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap().block_on(test(false));
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().enable_timer().build().unwrap().block_on(test(true));
    }

    /// Fills `conn` once, `room` at a time; fails the test when nothing comes within 10 s (a
    /// monoio timer: the coarse timers of `Conn`'s deadlines do not tick in these tests).
    pub(crate) async fn fill(conn: &mut Conn, room: usize) -> usize {
        let read = conn.fill(room, std::time::Duration::from_secs(3600));
        monoio::time::timeout(std::time::Duration::from_secs(10), read).await.expect("bytes were lost").unwrap()
    }

    /// Polls `f` once, and drops it: arms a connection's receive without waiting on it.
    pub(crate) async fn poll_once(f: impl Future) {
        let mut f = std::pin::pin!(f);
        std::future::poll_fn(|cx| {
            let _ = f.as_mut().poll(cx);
            std::task::Poll::Ready(())
        })
        .await;
    }

    /// A connection to `listener` as a `Conn` with a read buffer of `capacity`, and its peer.
    pub(crate) async fn pair(listener: &TcpListener, capacity: usize, timers: &Rc<CoarseTimers>) -> (Conn, TcpStream) {
        let c = TcpStream::connect_addr(listener.local_addr().unwrap()).await.unwrap();
        let (peer, _) = listener.accept().await.unwrap();
        (Conn::new(c, capacity, timers.clone()), peer)
    }
}

#[cfg(test)]
mod tests {
    use monoio::io::AsyncWriteRentExt;
    use monoio::net::TcpListener;

    use super::testing::{on_both_drivers, pair};
    use super::*;

    /// The keep-alive read as `conn` does it on each driver, timing out at once.
    async fn keep_alive_read(conn: &mut Conn, uring: bool) -> io::Result<Option<usize>> {
        if uring {
            return conn.fill_cancellable(64, Duration::ZERO).await;
        }
        match conn.fill(64, Duration::ZERO).await {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(None),
            r => r.map(Some),
        }
    }

    /// The keep-alive read timing out must not lose bytes that arrived as it was cancelled,
    /// and must leave the connection readable afterwards.
    #[test]
    fn a_timed_out_keep_alive_read_keeps_what_raced_it() {
        on_both_drivers(|uring| async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let timers = Rc::new(CoarseTimers::default());
            let (mut conn, mut peer) = pair(&listener, 0, &timers).await;
            let later = Instant::now() + Duration::from_secs(3600);
            // The bytes are in the socket before the read starts, and the timer fires right
            // after its first poll. On io_uring the receive was not submitted yet: it goes
            // to the kernel just before the cancel and wins, and the bytes must come back
            // with it (dropping the read would lose them). On epoll the cancel comes first
            // and the bytes stay in the socket for the next read.
            peer.write_all(b"hello".to_vec()).await.0.unwrap();
            let (got, ()) = monoio::join!(keep_alive_read(&mut conn, uring), async {
                timers.fire_expired(later);
            });
            if got.unwrap().is_none() {
                // The coarse timers never fire here: a monoio timer bounds this read.
                let n = monoio::time::timeout(Duration::from_secs(5), conn.fill(64, Duration::from_secs(3600))).await;
                assert_eq!(n.expect("the bytes were lost").unwrap(), 5);
            }
            assert_eq!(&conn.buf[..], b"hello");
            // Nothing sent: the time runs out, nothing is read, and the next read works.
            conn.buf.clear();
            let (got, ()) = monoio::join!(keep_alive_read(&mut conn, uring), async {
                timers.fire_expired(later + Duration::from_secs(1));
            });
            assert_eq!(got.unwrap(), None);
            peer.write_all(b"next".to_vec()).await.0.unwrap();
            let n = monoio::time::timeout(Duration::from_secs(5), conn.fill(64, Duration::from_secs(3600))).await;
            assert_eq!(n.expect("the connection reads again").unwrap(), 4);
            assert_eq!(&conn.buf[..], b"next");
        });
    }
}
