//! The byte relay of an upgraded connection where either side speaks TLS (a `wss://`
//! client, an HTTPS upstream, or both): the same contract as [`crate::tunnel`] (both ways
//! until both sides closed, an error, or `timeouts.tunnel_idle` of silence; half-closes
//! passed on), in one loop, since both directions need a connection's one TLS state.
//!
//! The loop waits for either socket to become readable (a poll, which loses nothing when the
//! other side wins), then moves what that side has, sealed or opened, to the other. A write
//! in one direction holds the other back until it completes (bounded by the send timeouts),
//! where the plain relay runs the two at once. One side's close_notify or EOF ends the
//! other's sending half: close_notify first where it speaks TLS, then a half-close of its
//! socket.

use std::cell::Cell;
use std::io;

use monoio::io::AsyncWriteRent as _;

use crate::io::Conn;
use crate::timers::CoarseTimers;
use crate::tunnel::{or_idle, Limits, CHUNK};

/// Relays between `client` and `up`, one or both speaking TLS, until the tunnel ends. Bytes
/// already read on either side go first. Out of line and boxed, as the TLS reads and writes
/// are (`tls::Boxed`): inlined into the tunnel, which the proxied path's code holds, it
/// changed how that path was compiled (about 80 instructions more per plain request,
/// callgrind).
#[inline(never)]
pub(crate) fn relay<'a>(
    timers: &'a CoarseTimers,
    client: &'a mut Conn,
    up: &'a mut Conn,
    limits: Limits,
) -> crate::tls::Boxed<'a, ()> {
    Box::pin(relay_inner(timers, client, up, limits))
}

async fn relay_inner(timers: &CoarseTimers, client: &mut Conn, up: &mut Conn, limits: Limits) -> io::Result<()> {
    let last = Cell::new(timers.now());
    let (mut client_open, mut up_open) = (true, true);
    let mut to_up = std::mem::take(&mut client.buf);
    let mut to_client = std::mem::take(&mut up.buf);
    while client_open || up_open {
        if !to_up.is_empty() {
            to_up = up.write(to_up, limits.upstream_send).await?;
            to_up.clear();
        }
        if !to_client.is_empty() {
            to_client = client.write(to_client, limits.client_send).await?;
            to_client.clear();
        }
        // What TLS already holds is read without waiting for the socket.
        let buffered = |c: &Conn| c.tls.as_deref().is_some_and(|t| t.has_buffered() || t.is_closed());
        let from_client = (client_open && buffered(client))
            || (!(up_open && buffered(up))
                && or_idle(timers, &last, limits.idle, async {
                    monoio::select! {
                        biased;
                        r = client.readable(false), if client_open => r.map(|()| true),
                        r = up.readable(false), if up_open => r.map(|()| false),
                    }
                })
                .await??);
        // The side is readable: these reads return at once (or after the rest of a TLS
        // record that has begun to arrive).
        if from_client {
            client.buf = to_up;
            let n = client.fill(CHUNK, limits.idle).await?;
            to_up = std::mem::take(&mut client.buf);
            if n == 0 {
                client_open = false;
                let _ = up.tls_close_notify(timers.deadline(limits.upstream_send)).await;
                let _ = up.stream.shutdown().await;
            }
        } else {
            up.buf = to_client;
            let n = up.fill(CHUNK, limits.idle).await?;
            to_client = std::mem::take(&mut up.buf);
            if n == 0 {
                up_open = false;
                let _ = client.tls_close_notify(timers.deadline(limits.client_send)).await;
                let _ = client.stream.shutdown().await;
            }
        }
        if !to_up.is_empty() || !to_client.is_empty() {
            last.set(timers.now());
        }
    }
    Ok(())
}
