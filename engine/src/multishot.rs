//! Reads of a plain connection, client or upstream, through its multishot receive
//! (io_uring; coregate's copy of monoio, `vendor/monoio/src/driver/uring/multi.rs`): one
//! receive stays armed across the connection's requests, and the kernel receives into a
//! ring of buffers shared by the worker's connections, from which a read copies into the
//! connection's own buffer. A request then costs no receive submission and no poll arming
//! in the kernel, and a wait for the next request, an idle pooled upstream connection or a
//! paused tunnel direction holds no buffer. Waiting may be abandoned at any point without
//! losing a byte: what arrived stays queued for the next read.
//!
//! Which connections read this way is `conn::serve`'s and `upstream`'s (all of them on
//! io_uring: a TLS one reads its ciphertext this way, `tls`; an upstream one without a
//! receive keeps a posted read while pooled, `posted`); falling back when the kernel
//! refuses is `io::Conn`'s.

use std::future::Future;
use std::io;
use std::task::{Context, Poll};

use bytes::BytesMut;
use monoio::net::{MultiRecv, TcpStream};

/// Receives into the free capacity of `buf` (reserved by the caller), appending what came.
/// `Ok(0)`: the peer closed.
pub(crate) fn recv<'a>(
    stream: &'a TcpStream,
    multi: &'a mut MultiRecv,
    buf: &'a mut BytesMut,
) -> impl Future<Output = io::Result<usize>> + 'a {
    std::future::poll_fn(move |cx| poll_recv(stream, multi, buf, cx))
}

/// The poll of [`recv`].
pub(crate) fn poll_recv(
    stream: &TcpStream,
    multi: &mut MultiRecv,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let n = std::task::ready!(multi.poll_recv(stream, cx, buf.spare_capacity_mut()))?;
    // SAFETY: `poll_recv` initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Poll::Ready(Ok(n))
}

/// Waits until a read would not wait: bytes, the end of the stream or an error. Takes
/// nothing.
pub(crate) fn ready<'a>(stream: &'a TcpStream, multi: &'a mut MultiRecv) -> impl Future<Output = io::Result<()>> + 'a {
    std::future::poll_fn(move |cx| multi.poll_ready(stream, cx))
}

/// Whether an error says the kernel refused the multishot receive (before reading
/// anything): the connection then reads the usual way.
pub(crate) fn refused(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::rc::Rc;
    use std::time::Duration;

    use monoio::io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRentExt};
    use monoio::net::{TcpListener, TcpStream};

    use crate::io::testing::{fill, on_both_drivers, pair, poll_once};
    use crate::io::Conn;
    use crate::timers::CoarseTimers;

    /// `len` bytes that tell connection `id` and each byte's offset apart.
    fn pattern(id: usize, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ (id as u8)).collect()
    }

    /// Reads `conn` until it holds `len` bytes (a monoio timer bounds each read).
    async fn read_len(conn: &mut Conn, len: usize, room: usize) {
        while conn.buf.len() < len {
            let n = fill(conn, room).await;
            assert!(n > 0, "closed after {} of {len} bytes", conn.buf.len());
        }
    }

    /// A plain connection reads through a multishot receive on io_uring, and the usual way
    /// on epoll (which has none): bytes come whole and in order in reads smaller than what
    /// is queued and larger than a ring buffer, a wait given up loses nothing, and the end
    /// of the stream reads as 0, every time.
    #[test]
    fn bytes_come_whole_and_in_order_and_the_end_reads_as_zero() {
        on_both_drivers(|uring| async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let timers = Rc::new(CoarseTimers::default());
            let (mut conn, mut peer) = armed(&listener, &timers).await;
            assert_eq!(conn.multi.is_some(), uring);
            // A wait given up before anything came.
            poll_once(conn.fill(64, Duration::from_secs(3600))).await;
            let sent = pattern(1, 40_000);
            peer.write_all(sent.clone()).await.0.unwrap();
            // 1,000 bytes at a time out of 4 KiB ring buffers.
            read_len(&mut conn, sent.len(), 1000).await;
            assert_eq!(&conn.buf[..], &sent[..]);
            drop(peer);
            for _ in 0..2 {
                assert_eq!(conn.fill(64, Duration::from_secs(5)).await.unwrap(), 0);
            }
        });
    }

    /// Dropping a connection cancels its armed receive, which holds the socket open in the
    /// kernel: without the cancel the peer would never see the end of the stream.
    #[test]
    fn a_dropped_connection_closes_its_socket() {
        on_both_drivers(|_| async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let timers = Rc::new(CoarseTimers::default());
            let (mut conn, mut peer) = armed(&listener, &timers).await;
            peer.write_all(b"ping".to_vec()).await.0.unwrap();
            read_len(&mut conn, 4, 64).await;
            // Armed again by a wait that is given up.
            poll_once(conn.readable(true)).await;
            drop(conn);
            let end = monoio::time::timeout(Duration::from_secs(5), peer.read(vec![0; 8])).await;
            assert_eq!(end.expect("the peer saw no end of stream").0.unwrap(), 0);
        });
    }

    /// One arming receives at most its byte limit (16 KiB, `vendor/monoio`'s
    /// `multi::ARM_LIMIT`): the rest of what a client sends stays in the kernel, under TCP
    /// flow control, until the connection reads.
    #[test]
    fn an_unread_connection_leaves_the_rest_in_the_kernel() {
        on_both_drivers(|uring| async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let timers = Rc::new(CoarseTimers::default());
            let (mut conn, mut peer) = armed(&listener, &timers).await;
            poll_once(conn.readable(true)).await;
            let sent = pattern(2, 64 * 1024);
            peer.write_all(sent.clone()).await.0.unwrap();
            monoio::time::timeout(Duration::from_secs(10), conn.readable(true)).await.unwrap().unwrap();
            let unread = unread(&conn);
            if uring {
                assert!(unread >= 44 * 1024, "only {unread} bytes left in the kernel");
            }
            read_len(&mut conn, sent.len(), 16 * 1024).await;
            assert_eq!(&conn.buf[..], &sent[..]);
        });
    }

    /// A connection to `listener` reading through a multishot receive where the driver has
    /// them (io_uring), and its peer.
    async fn armed(listener: &TcpListener, timers: &Rc<CoarseTimers>) -> (Conn, TcpStream) {
        let (mut conn, peer) = pair(listener, 0, timers).await;
        conn.multi = conn.stream.multishot();
        (conn, peer)
    }

    /// `n` connections with their receives armed, whose peers have each sent 20,000 bytes
    /// (`pattern` of the connection's number), unread.
    async fn senders(listener: &TcpListener, timers: &Rc<CoarseTimers>, n: usize) -> Vec<(usize, Conn, TcpStream)> {
        let mut pairs = Vec::new();
        for id in 0..n {
            let (mut conn, peer) = armed(listener, timers).await;
            poll_once(conn.readable(true)).await;
            pairs.push((id, conn, peer));
        }
        for (id, _, peer) in &mut pairs {
            peer.write_all(pattern(*id, 20_000)).await.0.unwrap();
        }
        pairs
    }

    /// Reads what each of the [`senders`] sent, and checks it came whole and in order.
    async fn all_get_through(pairs: &mut [(usize, Conn, TcpStream)]) {
        for (id, conn, _) in pairs {
            read_len(conn, 20_000, 8192).await;
            assert_eq!(&conn.buf[..], &pattern(*id, 20_000)[..], "connection {id}");
        }
    }

    /// Bytes waiting in the kernel for `conn` (FIONREAD).
    fn unread(conn: &Conn) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD on an open socket writes one int, which outlives the call.
        assert_eq!(unsafe { libc::ioctl(conn.stream.as_raw_fd(), libc::FIONREAD, &mut n) }, 0);
        n as usize
    }

    /// With every buffer of the ring held by connections that do not read (each at its
    /// 16 KiB limit, as when their requests wait on a slow upstream), other connections still
    /// read and still see their bytes arrive: a receive that finds the ring dry falls back
    /// to reading the socket itself. Nothing a few dozen clients send can stall the worker.
    #[test]
    fn connections_still_read_while_others_hold_every_buffer() {
        on_both_drivers(|uring| async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let timers = Rc::new(CoarseTimers::default());
            // One that has sent enough to be a registered file on io_uring (vendor/monoio's
            // `SharedFd::FIX_AFTER`), for the readiness poll on a registered file below.
            let (mut parked, mut parked_peer) = armed(&listener, &timers).await;
            for _ in 0..5 {
                parked.write(b"hi".to_vec(), Duration::from_secs(5)).await.unwrap();
            }
            let (r, _) = parked_peer.read_exact(vec![0; 10]).await;
            r.unwrap();
            // 72 x 16 KiB is more than the ring's 256 buffers of 4 KiB.
            let mut holders = senders(&listener, &timers, 72).await;
            if uring {
                // Until the kernel has received a whole ring's worth for them: each connection
                // round trip lets the runtime reap completions.
                let ring = 256 * 4096;
                let mut taken = 0;
                for _ in 0..1000 {
                    taken = holders.iter().map(|(_, c, _)| 20_000 - unread(c)).sum::<usize>();
                    if taken >= ring {
                        break;
                    }
                    drop(pair(&listener, 0, &timers).await);
                }
                assert!(taken >= ring, "the ring never ran dry: {taken} bytes taken");
            }
            // A read, and a wait for readability (a parked keep-alive connection's).
            let (mut conn, mut peer) = armed(&listener, &timers).await;
            peer.write_all(b"still served".to_vec()).await.0.unwrap();
            read_len(&mut conn, 12, 64).await;
            assert_eq!(&conn.buf[..], b"still served");
            poll_once(parked.readable(true)).await;
            parked_peer.write_all(b"next".to_vec()).await.0.unwrap();
            let ready = monoio::time::timeout(Duration::from_secs(10), parked.readable(true)).await;
            ready.expect("a parked connection never saw its bytes").unwrap();
            read_len(&mut parked, 4, 64).await;
            assert_eq!(&parked.buf[..], b"next");
            // Dropped while its readiness poll is armed: the poll is cancelled too, or it
            // would hold the socket open.
            let (mut gone, mut peer) = armed(&listener, &timers).await;
            poll_once(gone.readable(true)).await;
            drop(pair(&listener, 0, &timers).await);
            poll_once(gone.readable(true)).await;
            drop(gone);
            let end = monoio::time::timeout(Duration::from_secs(5), peer.read(vec![0; 8])).await;
            assert_eq!(end.expect("the peer saw no end of stream").0.unwrap(), 0);
            all_get_through(&mut holders).await;
        });
    }

    /// More connections send at once than the worker's ring has buffers for, unread: those
    /// that found the ring empty read their sockets directly, then through the ring again
    /// once buffers come back, and every connection's bytes arrive whole and in order.
    #[test]
    fn senders_beyond_the_ring_all_get_through() {
        on_both_drivers(|_| async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let timers = Rc::new(CoarseTimers::default());
            // 80 x 16 KiB received (the limit per arming) is more than the ring's 1 MiB.
            let mut pairs = senders(&listener, &timers, 80).await;
            all_get_through(&mut pairs).await;
        });
    }
}
