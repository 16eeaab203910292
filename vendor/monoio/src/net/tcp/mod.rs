#![allow(unreachable_pub)]
//! TCP related.

mod listener;
#[cfg(all(target_os = "linux", feature = "iouring"))]
mod multi;
mod split;
mod stream;
mod tfo;

pub use listener::TcpListener;
#[cfg(all(target_os = "linux", feature = "iouring"))]
pub use multi::MultiRecv;
pub use split::{TcpOwnedReadHalf, TcpOwnedWriteHalf};
pub use stream::{TcpConnectOpts, TcpStream};

#[cfg(feature = "poll-io")]
pub mod stream_poll;
