//! coregate: a socket's multishot receive on io_uring (`driver::uring::multi`): one receive
//! armed across the socket's requests instead of one per read. What is read, and when, is
//! the caller's; the buffers, completions and the byte limit per arming are the driver's.

use std::{
    cell::UnsafeCell,
    io,
    mem::MaybeUninit,
    rc::Rc,
    task::{Context, Poll},
};

use super::TcpStream;
use crate::driver::{Inner, UringInner, CURRENT};

/// The multishot receive of one `TcpStream`, made by [`TcpStream::multishot`]. While it
/// lives, the socket's bytes arrive through it: a read of the stream itself would race it
/// for them. Dropping it cancels the receive, and bytes it received and did not hand out
/// are dropped with it: drop it with its connection.
pub struct MultiRecv {
    driver: Rc<UnsafeCell<UringInner>>,
    key: usize,
}

impl TcpStream {
    /// A multishot receiver for this socket, on an io_uring runtime whose kernel has provided
    /// buffer rings; `None` elsewhere (the epoll driver, or a ring whose kernel refused the
    /// receive's byte limit), and the stream is read as usual.
    pub fn multishot(&self) -> Option<MultiRecv> {
        if !CURRENT.is_set() {
            return None;
        }
        CURRENT.with(|inner| match inner {
            Inner::Uring(driver) => UringInner::multi_open(driver).map(|key| MultiRecv {
                driver: driver.clone(),
                key,
            }),
            #[allow(unreachable_patterns)]
            _ => None,
        })
    }
}

impl MultiRecv {
    /// Copies the next bytes received on `stream` (the one this receiver was made for) into
    /// `dst`, as many as fit; the rest waits for the next call. `Ok(0)`: the peer closed
    /// (and every later call says so), or `dst` is empty. `ErrorKind::Unsupported`: the
    /// kernel refused the receive (nothing was read); read the stream itself from then on.
    pub fn poll_recv(
        &mut self,
        stream: &TcpStream,
        cx: &mut Context<'_>,
        dst: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<usize>> {
        if dst.is_empty() {
            return Poll::Ready(Ok(0));
        }
        UringInner::multi_poll_recv(&self.driver, self.key, &stream.fd, cx, dst)
    }

    /// Ready when a call of [`MultiRecv::poll_recv`] would be: bytes, the end of the stream
    /// or an error wait. Takes nothing.
    pub fn poll_ready(&mut self, stream: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        UringInner::multi_poll_ready(&self.driver, self.key, &stream.fd, cx)
    }
}

impl Drop for MultiRecv {
    fn drop(&mut self) {
        UringInner::multi_close(&self.driver, self.key);
    }
}
