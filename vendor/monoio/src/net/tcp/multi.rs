//! coregate: a socket's multishot receive on io_uring (`driver::uring::multi`): one receive
//! armed across the socket's requests instead of one per read. What is read, and when, is
//! the caller's; the buffers, completions and the byte limit per arming are the driver's.

use std::{
    io,
    mem::MaybeUninit,
    num::NonZeroU32,
    task::{Context, Poll},
};

use super::TcpStream;
use crate::driver::{Inner, UringInner, CURRENT};

/// The multishot receive of one `TcpStream`, made by [`TcpStream::multishot`]. While it
/// lives, the socket's bytes arrive through it: a read of the stream itself would race it
/// for them. Dropping it cancels the receive, and bytes it received and did not hand out
/// are dropped with it: drop it with its connection.
///
/// Four bytes (an id naming the ring and the receive; the ring is the runtime's current
/// one), so that it fits beside a small field of a connection struct: coregate's
/// connection grew past 256 bytes with a 16-byte one, and the compiler then moved it with
/// `memcpy` calls (+280 instructions per proxied request, callgrind).
pub struct MultiRecv {
    id: NonZeroU32,
}

/// Runs `f` on the current runtime's io_uring driver; `None` on any other.
fn with_uring<R>(f: impl FnOnce(&std::rc::Rc<std::cell::UnsafeCell<UringInner>>) -> R) -> Option<R> {
    if !CURRENT.is_set() {
        return None;
    }
    CURRENT.with(|inner| match inner {
        Inner::Uring(driver) => Some(f(driver)),
        #[allow(unreachable_patterns)]
        _ => None,
    })
}

impl TcpStream {
    /// A multishot receiver for this socket, on an io_uring runtime whose kernel has provided
    /// buffer rings; `None` elsewhere (the epoll driver, or a ring whose kernel refused the
    /// receive's byte limit), and the stream is read as usual.
    pub fn multishot(&self) -> Option<MultiRecv> {
        let id = with_uring(UringInner::multi_open)??;
        Some(MultiRecv {
            id: NonZeroU32::new(id)?,
        })
    }
}

impl MultiRecv {
    /// Copies the bytes received on `stream` (the one this receiver was made for) into
    /// `dst`, as many as are queued and fit; the rest waits for the next call. `Ok(0)`: the
    /// peer closed (and every later call says so), or `dst` is empty.
    /// `ErrorKind::Unsupported`: the kernel refused the receive (nothing was read); read the
    /// stream itself from then on.
    pub fn poll_recv(
        &mut self,
        stream: &TcpStream,
        cx: &mut Context<'_>,
        dst: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<usize>> {
        if dst.is_empty() {
            return Poll::Ready(Ok(0));
        }
        with_uring(|d| UringInner::multi_poll_recv(d, self.id.get(), &stream.fd, cx, dst))
            .unwrap_or(Poll::Ready(Err(io::ErrorKind::NotConnected.into())))
    }

    /// Ready when a call of [`MultiRecv::poll_recv`] would be: bytes, the end of the stream
    /// or an error wait. Takes nothing.
    pub fn poll_ready(&mut self, stream: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_uring(|d| UringInner::multi_poll_ready(d, self.id.get(), &stream.fd, cx))
            .unwrap_or(Poll::Ready(Err(io::ErrorKind::NotConnected.into())))
    }
}

impl Drop for MultiRecv {
    fn drop(&mut self) {
        with_uring(|d| UringInner::multi_close(d, self.id.get()));
    }
}
