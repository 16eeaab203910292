//! Compression of bodies as they pass (`routes[].compress` with `stream`, on by default):
//! bodies over `max_bytes`, and close-delimited ones, which [`crate::compress`] does not
//! hold whole, are fed to a streaming encoder piece by piece as they come from the
//! upstream, and what the encoder gives out goes to the client as chunks (HTTP/1.1) or as
//! they are (HTTP/1.0, close-delimited), as nginx's gzip filter does. Memory per response is
//! the encoder's state and one read, whatever the body's size.
//!
//! Left to others: the decision and the head (`compress`), reading the upstream's framing
//! (proto-http's chunked decoder), the client's framing (`forward`).

use std::io::Write as _;

use bytes::Buf as _;
use config::{Coding, RouteCompress};
use proto_http::chunked::{encode_chunk_header, ChunkedDecoder, Decoded, LAST_CHUNK};
use proto_http::{Limits, ResponseBody};

use crate::body::Leg;
use crate::error::{Error, Side};
use crate::io::Conn;

/// Read size for a body being compressed.
const READ: usize = 64 * 1024;

/// A streaming encoder writing into memory, drained after each piece.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(c: &RouteCompress, coding: Coding) -> std::io::Result<Encoder> {
        Ok(match coding {
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(c.level))),
            Coding::Br => {
                let params = brotli::enc::BrotliEncoderParams { quality: c.br_level as i32, ..Default::default() };
                Encoder::Br(Box::new(brotli::CompressorWriter::with_params(Vec::new(), READ, &params)))
            }
            Coding::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), c.zstd_level)?),
        })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Br(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
        }
    }

    /// The output so far, taken out of the encoder's sink.
    fn take(&mut self) -> Vec<u8> {
        std::mem::take(match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Br(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        })
    }

    /// The rest of the output, the stream's end included.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Br(e) => Ok(e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

/// Writes encoder output to the client: a chunk each, or as it is for a close-delimited
/// answer.
struct Out<'a> {
    client: &'a mut Conn,
    chunked: bool,
    leg: &'a Leg,
}

impl Out<'_> {
    async fn send(&mut self, data: Vec<u8>) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let data = if self.chunked {
            let mut framed = Vec::with_capacity(data.len() + 16);
            encode_chunk_header(&mut framed, data.len());
            framed.extend_from_slice(&data);
            framed.extend_from_slice(b"\r\n");
            framed
        } else {
            data
        };
        self.client
            .write(data, self.leg.write_timeout)
            .await
            .map(drop)
            .map_err(|e| Error::io(self.leg.to, "writing a compressed body", e))
    }
}

/// Reads more of the body into `up`'s buffer; 0 at its end.
async fn read(up: &mut Conn, leg: &Leg) -> Result<usize, Error> {
    up.fill(READ, leg.read_timeout).await.map_err(|e| Error::io(leg.from, "reading a body", e))
}

/// Reads the upstream's body (`framing`) from `up`, compresses it with `coding` and writes
/// it to `client`, chunked when `chunked` (else as the raw stream, for a close-delimited
/// answer), ending with the stream's last bytes (and the last chunk).
#[allow(clippy::too_many_arguments)] // one body's two ends and its settings
pub(crate) async fn relay(
    up: &mut Conn,
    client: &mut Conn,
    framing: ResponseBody,
    c: &RouteCompress,
    coding: Coding,
    chunked: bool,
    limits: &Limits,
    leg: &Leg,
) -> Result<(), Error> {
    let failed = |e: std::io::Error| Error::io(Side::Upstream, "compressing a body", e);
    let mut enc = Encoder::new(c, coding).map_err(failed)?;
    let mut out = Out { client, chunked, leg };
    let closed = || Error::new(crate::error::Kind::Closed, Side::Upstream, "closed in the middle of a body");
    match framing {
        ResponseBody::None => {}
        ResponseBody::Length(mut left) => loop {
            let k = left.min(up.buf.len() as u64) as usize;
            enc.write(&up.buf[..k]).map_err(failed)?;
            up.buf.advance(k);
            left -= k as u64;
            out.send(enc.take()).await?;
            if left == 0 {
                break;
            }
            if read(up, leg).await? == 0 {
                return Err(closed());
            }
        },
        ResponseBody::Chunked => {
            let mut decoder = ChunkedDecoder::new(limits);
            loop {
                let (used, event) = decoder.decode(&up.buf).map_err(|e| Error::malformed(Side::Upstream, e))?;
                match event {
                    Decoded::Data(range) => {
                        enc.write(&up.buf[range.clone()]).map_err(failed)?;
                        up.buf.advance(range.end);
                        out.send(enc.take()).await?;
                    }
                    Decoded::Done => {
                        up.buf.advance(used);
                        break;
                    }
                    Decoded::NeedMore => {
                        up.buf.advance(used);
                        if read(up, leg).await? == 0 {
                            return Err(closed());
                        }
                    }
                }
            }
        }
        ResponseBody::Close => loop {
            enc.write(&up.buf).map_err(failed)?;
            up.buf.clear();
            out.send(enc.take()).await?;
            if read(up, leg).await? == 0 {
                break;
            }
        },
    }
    out.send(enc.finish().map_err(failed)?).await?;
    if chunked {
        out.client.write(LAST_CHUNK, leg.write_timeout).await.map_err(|e| Error::io(leg.to, "writing a body", e))?;
    }
    Ok(())
}
