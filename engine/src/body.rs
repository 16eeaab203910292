//! Message bodies streamed between two connections without buffering them whole:
//! Content-Length (RFC 9112 6.2), chunked (RFC 9112 7.1, decoded strictly and re-encoded
//! without extensions or trailers) and close-delimited (RFC 9112 6.3 rule 8). The exception
//! is a Content-Length body of up to 64 KiB, read whole so that it leaves with its head
//! ([`buffer_small_body`]), a response the cache stores ([`read_whole`]), and answers read
//! for nobody, only to free their connection ([`discard`]).
//!
//! Data read into the source's buffer is split off and frozen into `Bytes`, then written
//! to the destination: no copy for Content-Length and close-delimited bodies. Re-encoded
//! chunked data is copied once, into the destination's re-encoding buffer.

use std::time::Duration;

use bytes::Buf as _;

use proto_http::chunked::{encode_chunk_header, ChunkedDecoder, Decoded, LAST_CHUNK};
use proto_http::{Limits, ResponseBody};

use crate::error::{Error, Kind, Side};
use crate::io::Conn;

/// Read size for bodies.
const BODY_READ: usize = 64 * 1024;

/// Read size for bodies read to be dropped ([`discard`]).
const DISCARD_READ: usize = 16 * 1024;

/// One direction of a copy: who reads, who writes, and their timeouts.
#[derive(Clone, Copy)]
pub(crate) struct Leg {
    pub from: Side,
    pub to: Side,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
}

impl Leg {
    async fn read(&self, src: &mut Conn) -> Result<(), Error> {
        self.read_room(src, BODY_READ).await
    }

    /// Reads more of a body into `src`'s buffer, making room for at least `room` bytes.
    async fn read_room(&self, src: &mut Conn, room: usize) -> Result<(), Error> {
        match src.fill(room, self.read_timeout).await {
            Ok(0) => Err(Error::new(Kind::Closed, self.from, "closed in the middle of a body")),
            Ok(_) => Ok(()),
            Err(e) => Err(Error::io(self.from, "reading a body", e)),
        }
    }

    async fn write<B: monoio::buf::IoBuf>(&self, dst: &mut Conn, data: B) -> Result<B, Error> {
        dst.write(data, self.write_timeout).await.map_err(|e| Error::io(self.to, "writing a body", e))
    }
}

/// Body bytes already buffered that are appended to a head, so that a small message goes
/// out in one write and one TCP segment instead of two (head, then body). Measured on the
/// 2-core bench box: sending head and body separately cost about 20% more proxy CPU per
/// small request, nearly all of it in the kernel's loopback path.
const COALESCE_MAX: usize = 64 * 1024;

/// Reads until the whole body of `len` bytes is buffered in `src`, when it is small enough
/// to go out with its head ([`COALESCE_MAX`]). A response often reaches the proxy in more
/// than one read (an upstream writing head and body apart, or one write delivered in parts),
/// and it then went out in two writes: head with part of the body, then the rest. Measured
/// with 16 KiB responses from nginx: 23% of them arrived so; read whole first,
/// ring operations per response fell from 4.43 to about 3.9 and CPU per response to 0.97
/// (README, "Large bodies"). The price is that the client sees the head only once the (at
/// most 64 KiB) body is in, as with nginx's `proxy_buffering`.
pub(crate) async fn buffer_small_body(src: &mut Conn, len: u64, leg: &Leg) -> Result<(), Error> {
    while len <= COALESCE_MAX as u64 && (src.buf.len() as u64) < len {
        leg.read_room(src, len as usize - src.buf.len()).await?;
    }
    Ok(())
}

/// Appends up to `len` buffered body bytes of `src` to `out` (at most [`COALESCE_MAX`]);
/// returns how many were taken.
pub(crate) fn coalesce_buffered(src: &mut Conn, len: u64, out: &mut Vec<u8>) -> u64 {
    let n = usize::try_from(len).unwrap_or(usize::MAX).min(src.buf.len());
    if n > COALESCE_MAX {
        return 0;
    }
    out.extend_from_slice(&src.buf.split_to(n));
    n as u64
}

/// Moves exactly `len` body bytes from `src` (its buffer first) to `dst`.
pub(crate) async fn copy_length(src: &mut Conn, dst: &mut Conn, mut len: u64, leg: Leg) -> Result<(), Error> {
    while len > 0 {
        if src.buf.is_empty() {
            leg.read(src).await?;
        }
        let n = usize::try_from(len).unwrap_or(usize::MAX).min(src.buf.len());
        let data = src.buf.split_to(n).freeze();
        leg.write(dst, data).await?;
        len -= n as u64;
    }
    Ok(())
}

/// Moves bytes from `src` to `dst` until `src` closes.
pub(crate) async fn copy_until_close(src: &mut Conn, dst: &mut Conn, leg: Leg) -> Result<(), Error> {
    loop {
        if !src.buf.is_empty() {
            let data = src.buf.split().freeze();
            leg.write(dst, data).await?;
        }
        match src.fill(BODY_READ, leg.read_timeout).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(Error::io(leg.from, "reading a body", e)),
        }
    }
}

/// Reads a whole response body of at most `max` bytes, for the cache: Some(body) with the
/// body's bytes taken from `src`, or None, with nothing taken (the body is larger, or
/// close-delimited), so that it can still be streamed from the start. A chunked body is
/// decoded without consuming `src`'s buffer until its end is found; its trailers are
/// dropped (RFC 9112 7.1.2 lets a recipient discard them).
pub(crate) async fn read_whole(
    src: &mut Conn,
    framing: ResponseBody,
    max: usize,
    limits: &Limits,
    leg: &Leg,
) -> Result<Option<bytes::Bytes>, Error> {
    match framing {
        ResponseBody::None => Ok(Some(bytes::Bytes::new())),
        ResponseBody::Close => Ok(None),
        ResponseBody::Length(n) if n > max as u64 => Ok(None),
        ResponseBody::Length(n) => {
            let n = n as usize;
            while src.buf.len() < n {
                leg.read_room(src, n - src.buf.len()).await?;
            }
            // Copied out: a split would share (and keep alive) the connection's whole read
            // buffer for as long as the response stays stored.
            let body = bytes::Bytes::copy_from_slice(&src.buf[..n]);
            src.buf.advance(n);
            Ok(Some(body))
        }
        ResponseBody::Chunked => {
            let mut decoder = ChunkedDecoder::new(limits);
            let (mut pos, mut data) = (0, Vec::new());
            loop {
                let (used, event) = decoder.decode(&src.buf[pos..]).map_err(|e| Error::malformed(leg.from, e))?;
                match event {
                    Decoded::Data(range) => {
                        if data.len() + range.len() > max {
                            return Ok(None);
                        }
                        data.extend_from_slice(&src.buf[pos + range.start..pos + range.end]);
                        pos += range.end;
                    }
                    Decoded::Done => {
                        src.buf.advance(pos + used);
                        data.shrink_to_fit();
                        return Ok(Some(data.into()));
                    }
                    Decoded::NeedMore => {
                        pos += used;
                        // Framing of many tiny chunks must not grow the buffer unbounded.
                        if pos > max.saturating_mul(2).saturating_add(BODY_READ) {
                            return Ok(None);
                        }
                        leg.read(src).await?;
                    }
                }
            }
        }
    }
}

/// Adds `len` decoded bytes to `total`; over `max_len` is [`Kind::BodyTooLarge`].
fn count_chunked(total: u64, len: usize, max_len: u64, from: Side) -> Result<u64, Error> {
    let total = total.saturating_add(len as u64);
    if total > max_len {
        return Err(Error::new(Kind::BodyTooLarge, from, "chunked body over the size limit"));
    }
    Ok(total)
}

/// Checks the chunked body bytes already buffered, before anything is sent upstream: a
/// malformed or oversized body that arrived with its head (as attacks do) is refused
/// without an upstream ever seeing its head. Later bytes are checked as they stream; an
/// error there aborts the upstream connection mid-message, which an upstream must discard.
pub(crate) fn precheck_chunked(buffered: &[u8], limits: &Limits, max_len: u64, from: Side) -> Result<(), Error> {
    let mut decoder = ChunkedDecoder::new(limits);
    let mut pos = 0;
    let mut total: u64 = 0;
    loop {
        let (used, event) = decoder.decode(&buffered[pos..]).map_err(|e| Error::malformed(from, e))?;
        pos += used;
        match event {
            Decoded::Data(range) => total = count_chunked(total, range.len(), max_len, from)?,
            Decoded::Done | Decoded::NeedMore => return Ok(()),
        }
    }
}

/// The largest re-encoding buffer a connection keeps after a chunked body: one body read's
/// worth of data and its framing, so that relaying large chunked bodies allocates nothing
/// per message (at 16 KiB, a 256 KiB chunked response cost 3 allocations per request). A
/// client connection frees it when it parks; a pooled upstream connection (the target of
/// re-encoded chunked uploads) keeps it while idle, at most this much.
const KEEP_SPARE: usize = BODY_READ + 64;

/// How decoded chunked data is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkedOut {
    /// Re-encoded as chunked (extensions and trailers dropped).
    Chunked,
    /// Raw data, for a peer that gets a close-delimited body.
    Raw,
}

/// Decodes a chunked body from `src` and writes it to `dst`. Returns the data length.
/// `max_len` bounds the decoded data; going over it is [`Kind::BodyTooLarge`].
pub(crate) async fn copy_chunked(
    src: &mut Conn,
    dst: &mut Conn,
    limits: &Limits,
    out_mode: ChunkedOut,
    max_len: u64,
    leg: Leg,
) -> Result<u64, Error> {
    let mut decoder = ChunkedDecoder::new(limits);
    let mut total: u64 = 0;
    // Re-encoded chunks are built in the destination's spare buffer, which goes back to it
    // afterwards (when small): no allocation per chunked message once it has grown.
    let mut out = std::mem::take(&mut dst.spare);
    loop {
        let (used, event) = decoder.decode(&src.buf).map_err(|e| Error::malformed(leg.from, e))?;
        match event {
            Decoded::Data(range) => {
                total = count_chunked(total, range.len(), max_len, leg.from)?;
                match out_mode {
                    ChunkedOut::Raw => {
                        src.buf.advance(range.start);
                        let data = src.buf.split_to(range.len()).freeze();
                        leg.write(dst, data).await?;
                    }
                    ChunkedOut::Chunked => {
                        // Copied into the re-encoding buffer, so data and framing are
                        // skipped with `advance` once written, never split off: a split
                        // makes the source buffer shared again (1 allocation) and its next
                        // read then needs a new one (another): 2 per chunked upload, measured.
                        // At most one body read's worth per chunk written, so the buffer
                        // stays within KEEP_SPARE (a buffer grown past BODY_READ can hold
                        // more; chunk boundaries need not be kept, RFC 9112 7.1).
                        for piece in src.buf[range.clone()].chunks(BODY_READ) {
                            out.clear();
                            encode_chunk_header(&mut out, piece.len());
                            out.extend_from_slice(piece);
                            out.extend_from_slice(b"\r\n");
                            out = leg.write(dst, out).await?;
                        }
                        src.buf.advance(range.end);
                    }
                }
                continue;
            }
            Decoded::Done => {
                src.buf.advance(used);
                if out_mode == ChunkedOut::Chunked {
                    leg.write(dst, LAST_CHUNK).await?;
                }
                if out.capacity() <= KEEP_SPARE {
                    out.clear();
                    dst.spare = out;
                }
                return Ok(total);
            }
            Decoded::NeedMore => {
                src.buf.advance(used);
                leg.read(src).await?;
            }
        }
    }
}

/// Reads a response body to its end (RFC 9112 6.3) and drops it, so that its connection
/// can carry another exchange: the answers to mirrored requests and background refreshes,
/// which nobody waits for. `timeout` bounds each read.
pub(crate) async fn discard(
    up: &mut crate::io::Conn,
    body: ResponseBody,
    limits: &proto_http::Limits,
    timeout: Duration,
) -> Result<(), Error> {
    let closed = || Error::new(Kind::Closed, Side::Upstream, "closed in the middle of an answer read for nobody");
    let read = |e| Error::io(Side::Upstream, "reading an answer for nobody", e);
    match body {
        ResponseBody::None => Ok(()),
        ResponseBody::Length(mut left) => loop {
            let k = left.min(up.buf.len() as u64);
            up.buf.advance(k as usize);
            left -= k;
            if left == 0 {
                return Ok(());
            }
            if up.fill(DISCARD_READ, timeout).await.map_err(read)? == 0 {
                return Err(closed());
            }
        },
        ResponseBody::Chunked => {
            let mut decoder = ChunkedDecoder::new(limits);
            loop {
                while !up.buf.is_empty() {
                    let (used, found) = decoder.decode(&up.buf).map_err(|e| Error::malformed(Side::Upstream, e))?;
                    up.buf.advance(used);
                    match found {
                        Decoded::Done => return Ok(()),
                        Decoded::NeedMore if used == 0 => break,
                        _ => {}
                    }
                }
                if up.fill(DISCARD_READ, timeout).await.map_err(read)? == 0 {
                    return Err(closed());
                }
            }
        }
        ResponseBody::Close => loop {
            up.buf.clear();
            if up.fill(DISCARD_READ, timeout).await.map_err(read)? == 0 {
                return Ok(());
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use monoio::io::AsyncWriteRentExt;
    use monoio::net::TcpListener;

    use super::*;
    use crate::io::testing::{on_both_drivers, pair};
    use crate::timers::CoarseTimers;

    #[test]
    fn a_small_body_sent_apart_from_its_head_is_buffered_whole() {
        on_both_drivers(|_| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let (mut src, mut peer) = pair(&listener, 16, &Rc::new(CoarseTimers::default())).await;
            let second = Duration::from_secs(5);
            let leg = Leg { from: Side::Upstream, to: Side::Client, read_timeout: second, write_timeout: second };
            let body = vec![b'x'; 20_000];
            peer.write_all(body[..5].to_vec()).await.0.unwrap();
            src.fill(16, second).await.unwrap();
            // The rest comes in two more writes while the body is being buffered.
            let (res, _) = monoio::join!(buffer_small_body(&mut src, 20_000, &leg), async {
                peer.write_all(body[5..7_000].to_vec()).await.0.unwrap();
                peer.write_all(body[7_000..].to_vec()).await.0.unwrap();
            });
            res.unwrap();
            assert_eq!(&src.buf[..], &body[..]);
            // Over the coalescing bound nothing is read.
            let mut out = Vec::new();
            assert_eq!(coalesce_buffered(&mut src, 20_000, &mut out), 20_000);
            buffer_small_body(&mut src, COALESCE_MAX as u64 + 1, &leg).await.unwrap();
            assert!(src.buf.is_empty());
        });
    }
}
