//! gzip, brotli and zstd for routes with `compress` (RFC 9110 8.4.1): an eligible response
//! to a request that accepts one of the route's codings (proto-http's `accept_encoding`; the
//! heaviest weight wins, the route's order breaks ties) is read whole (up to the route's
//! `max_bytes`), compressed in memory and sent with its Content-Length, `Content-Encoding`,
//! `Vary: Accept-Encoding`, and its ETag made weak (the bytes differ from the upstream's,
//! RFC 9110 8.8.1). Whole where it can be: an API response is small, a known length keeps
//! the client's framing simple, and `max_bytes` bounds the memory. Larger and
//! close-delimited bodies are compressed as they pass (`compress_stream`, with the route's
//! `stream`); already-encoded ones pass through untouched.
//! Responses from the cache are compressed on the way out the same way ([`on_stored`]).
//!
//! Left to others: reading the body (`body::read_whole`), the head (`forward`), and the
//! route's settings (`config::RouteCompress`).

use bytes::Bytes;
use config::{Coding, RouteCompress};
use proto_http::cache_control::CacheControl;
use proto_http::{RequestHead, ResponseBody, ResponseHead};
use zlib_rs::{DeflateConfig, ReturnCode};

use crate::body::{read_whole, Leg};
use crate::error::Error;
use crate::io::Conn;

/// What compression did to a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Nothing: the response is not one the route compresses for anybody.
    No,
    /// It goes out as it came, but another request (with another Accept-Encoding) would
    /// have got it compressed: caches after coregate are told so with Vary.
    Vary,
    /// It goes out encoded with this coding, from memory with its length.
    Encoded(Coding),
    /// It goes out encoded with this coding as it passes (`compress_stream`), chunked.
    Streamed(Coding),
}

impl Applied {
    /// The coding the client gets, if any.
    pub(crate) fn coding(self) -> Option<Coding> {
        match self {
            Applied::Encoded(c) | Applied::Streamed(c) => Some(c),
            Applied::No | Applied::Vary => None,
        }
    }
}

/// What the route does with `resp` for `req`, its body's size aside: [`Applied::No`]
/// unless the response is a success with content (not 204 or a 206 range) of a covered
/// type, not encoded yet and without `no-transform`; then [`Applied::Encoded`] with the
/// route's coding the request weighs heaviest (the earlier listed among equals), else
/// [`Applied::Vary`].
fn decide(c: &RouteCompress, req: &RequestHead, resp: &ResponseHead) -> Applied {
    let named = |name: &'static [u8]| move |(n, _): &(&[u8], &[u8])| n.eq_ignore_ascii_case(name);
    let eligible = matches!(resp.meta.status, 200..=203)
        && resp.header(b"content-encoding").is_none()
        && resp.header(b"content-type").is_some_and(|t| c.covers(t))
        && !CacheControl::parse(resp.headers().filter(named(b"cache-control")).map(|(_, v)| v)).no_transform;
    if !eligible {
        return Applied::No;
    }
    let mut best = (0, Applied::Vary);
    for &coding in &c.encodings {
        let values = req.headers().filter(named(b"accept-encoding")).map(|(_, v)| v);
        let weight = proto_http::accept_encoding::weight(values, coding.token());
        if weight > best.0 {
            best = (weight, Applied::Encoded(coding));
        }
    }
    best.1
}

/// Whether a body of `len` bytes is within the route's bounds.
fn sized(c: &RouteCompress, len: u64) -> bool {
    (c.min_bytes as u64..=c.max_bytes as u64).contains(&len)
}

/// A body to encode: compressed, unless that would not make it smaller.
fn encode(c: &RouteCompress, coding: Coding, body: Bytes) -> (Bytes, Applied) {
    let encoded = match coding {
        Coding::Gzip => gzip(&body, c.level),
        Coding::Br => brotli(&body, c.br_level),
        Coding::Zstd => zstd(&body, c.zstd_level),
    };
    match encoded {
        Some(out) => (out.into(), Applied::Encoded(coding)),
        None => (body, Applied::Vary),
    }
}

/// Decides for a response from upstream and, to encode it whole, reads its body (unless the
/// cache already did: `stored`) and compresses it; a body over `max_bytes` or
/// close-delimited is left to stream ([`Applied::Streamed`], with the route's `stream`).
/// Returns the body to send from memory, if any, and what was applied.
pub(crate) async fn on_response(
    c: &RouteCompress,
    req: &RequestHead,
    resp: &ResponseHead,
    up: &mut Conn,
    stored: Option<Bytes>,
    limits: &proto_http::Limits,
    leg: &Leg,
) -> Result<(Option<Bytes>, Applied), Error> {
    if stored.is_some() {
        return Ok(on_stored(c, req, resp, stored));
    }
    let within = match resp.meta.body {
        ResponseBody::Length(n) => n >= c.min_bytes as u64 && (c.stream || n <= c.max_bytes as u64),
        // Its size is seen once it is read.
        ResponseBody::Chunked => true,
        ResponseBody::Close => c.stream,
        ResponseBody::None => false,
    };
    let applied = if within { decide(c, req, resp) } else { Applied::No };
    let Applied::Encoded(coding) = applied else { return Ok((None, applied)) };
    let whole = match resp.meta.body {
        ResponseBody::Length(n) => n <= c.max_bytes as u64,
        ResponseBody::Close => false,
        _ => true,
    };
    if !whole {
        return Ok((None, Applied::Streamed(coding)));
    }
    let body = match read_whole(up, resp.meta.body, c.max_bytes, limits, leg).await? {
        Some(body) if body.len() >= c.min_bytes => body,
        // Too small after all: the same for every client.
        Some(body) => return Ok((Some(body), Applied::No)),
        // A chunked body over max_bytes (nothing of it taken): compressed as it streams, or
        // without `stream` sent as it comes, for everybody alike.
        None if c.stream => return Ok((None, Applied::Streamed(coding))),
        None => return Ok((None, Applied::No)),
    };
    let (body, applied) = encode(c, coding, body);
    Ok((Some(body), applied))
}

/// As [`on_response`] for a body already in memory: a response from the cache (`head` as
/// stored, `body` whole; none for HEAD), or one the cache has just stored.
pub(crate) fn on_stored(
    c: &RouteCompress,
    req: &RequestHead,
    head: &ResponseHead,
    body: Option<Bytes>,
) -> (Option<Bytes>, Applied) {
    let Some(body) = body else { return (None, Applied::No) };
    if !sized(c, body.len() as u64) {
        return (Some(body), Applied::No);
    }
    match decide(c, req, head) {
        Applied::Encoded(coding) => {
            let (body, applied) = encode(c, coding, body);
            (Some(body), applied)
        }
        applied => (Some(body), applied),
    }
}

/// `body` as one gzip member (RFC 1952), or None when that would not be smaller. zlib's
/// window and hash table are sized down for small bodies as nginx does (`gzip_window`,
/// `gzip_hash`: one bit less each while the body fits in half the window): the state to
/// clear per response then grows with the body instead of being 256 KiB for every one.
fn gzip(body: &[u8], level: u32) -> Option<Vec<u8>> {
    let (mut window_bits, mut mem_level) = (15, 8);
    while window_bits > 9 && body.len() < 1 << (window_bits - 1) {
        window_bits -= 1;
        mem_level -= 1;
    }
    let config = DeflateConfig {
        level: level as i32,
        // 16 + bits: the gzip wrapper (header, CRC-32 and length) around the deflate stream.
        window_bits: 16 + window_bits,
        mem_level: mem_level.max(1),
        ..DeflateConfig::default()
    };
    // Room for less than the body: a result that does not fit is not worth sending.
    let mut out = vec![0; body.len().saturating_sub(1)];
    let (done, rc) = zlib_rs::compress_slice(&mut out, body, config);
    let n = done.len();
    (rc == ReturnCode::Ok).then(|| {
        out.truncate(n);
        out
    })
}

/// `body` as a brotli stream (RFC 7932), or None when that would not be smaller. The
/// window stays brotli's default (2^22): the crate sizes its buffers to the body anyway,
/// and smaller windows made quality 5 and 6 fourteen times slower on a 4 KB body.
fn brotli(body: &[u8], quality: u32) -> Option<Vec<u8>> {
    let params =
        ::brotli::enc::BrotliEncoderParams { quality: quality as i32, size_hint: body.len(), ..Default::default() };
    let mut out = Vec::with_capacity(body.len() / 2);
    ::brotli::BrotliCompress(&mut &body[..], &mut out, &params).ok()?;
    (out.len() < body.len()).then_some(out)
}

/// `body` as one zstd frame (RFC 8878) with its size in the header, or None when that would
/// not be smaller. libzstd sizes its tables to the body (it is told the size up front). Each
/// worker thread keeps one compression context: a new one per response cost 20 us against
/// 5.7 us reused on a 4 KB JSON body at level 3 (measured here, by hand).
fn zstd(body: &[u8], level: i32) -> Option<Vec<u8>> {
    thread_local! {
        static CONTEXT: std::cell::RefCell<Option<::zstd::bulk::Compressor<'static>>> = const { std::cell::RefCell::new(None) };
    }
    CONTEXT.with_borrow_mut(|context| {
        let compressor = match context {
            Some(c) => {
                c.set_compression_level(level).ok()?;
                c
            }
            None => context.insert(::zstd::bulk::Compressor::new(level).ok()?),
        };
        let mut out = Vec::with_capacity(body.len().saturating_sub(1));
        // A result that does not fit in less than the body is an error here: not worth sending.
        compressor.compress_to_buffer(body, &mut out).ok()?;
        Some(out)
    })
}

/// Edits a client response head built by `forward::response_head` for what was applied.
pub(crate) fn mark(head: &mut Vec<u8>, applied: Applied) {
    if applied == Applied::No {
        return;
    }
    let mut varies = false;
    let mut out = Vec::with_capacity(head.len() + 64);
    // The head ends with the empty line: the fields go before it.
    for line in head[..head.len() - 2].split_inclusive(|&b| b == b'\n') {
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (&line[..0], line),
        };
        if name.eq_ignore_ascii_case(b"vary") {
            varies |= value.split(|&b| b == b',').any(|v| {
                let v = v.trim_ascii();
                v == b"*" || v.eq_ignore_ascii_case(b"accept-encoding")
            });
        }
        let strong = value.trim_ascii_start().starts_with(b"\"");
        if applied.coding().is_some() && name.eq_ignore_ascii_case(b"etag") && strong {
            out.extend_from_slice(name);
            out.extend_from_slice(b": W/");
            out.extend_from_slice(value.trim_ascii_start());
        } else {
            out.extend_from_slice(line);
        }
    }
    if let Some(coding) = applied.coding() {
        out.extend_from_slice(b"content-encoding: ");
        out.extend_from_slice(coding.token().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !varies {
        out.extend_from_slice(b"vary: accept-encoding\r\n");
    }
    out.extend_from_slice(b"\r\n");
    *head = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_marked() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nETag: \"v1\"\r\ncontent-length: 9\r\n\r\n";
        let mut h = head.to_vec();
        mark(&mut h, Applied::Encoded(Coding::Gzip));
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nETag: W/\"v1\"\r\ncontent-length: 9\r\n\
             content-encoding: gzip\r\nvary: accept-encoding\r\n\r\n"
        );
        let mut h = b"HTTP/1.1 200 OK\r\nVary: Origin, Accept-Encoding\r\netag: W/\"w\"\r\n\r\n".to_vec();
        mark(&mut h, Applied::Encoded(Coding::Gzip));
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "HTTP/1.1 200 OK\r\nVary: Origin, Accept-Encoding\r\netag: W/\"w\"\r\ncontent-encoding: gzip\r\n\r\n"
        );
        let mut h = head.to_vec();
        mark(&mut h, Applied::Vary);
        assert!(h.ends_with(b"ETag: \"v1\"\r\ncontent-length: 9\r\nvary: accept-encoding\r\n\r\n"));
        let mut h = head.to_vec();
        mark(&mut h, Applied::No);
        assert_eq!(h, head);
    }

    #[test]
    fn gzip_round_trips_at_every_window_size() {
        let unzip = |gz: &[u8]| {
            let mut back = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut back).unwrap();
            back
        };
        for (level, body) in [
            (1, b"{\"id\":1,\"name\":\"coregate\"}".repeat(100)),
            (1, b"another body, another time".repeat(3)),
            (9, (0..200_000u32).map(|i| (i % 251) as u8).collect()),
            (1, json_like(300)),
            (1, json_like(70_000)),
        ] {
            let gz = gzip(&body, level).expect("smaller");
            assert!(gz.starts_with(&[0x1f, 0x8b]) && gz.len() < body.len());
            assert_eq!(unzip(&gz), body, "level {level}, {} bytes", body.len());
        }
        // Not smaller: none.
        assert_eq!(gzip(b"", 1), None);
        assert_eq!(gzip(b"abc", 1), None);
        let mut x: u32 = 0x9e37_79b9;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert_eq!(gzip(&noise, 9), None);
    }

    #[test]
    fn brotli_and_zstd_round_trip() {
        for body in [json_like(300), json_like(5_000), json_like(70_000), json_like(3_000_000)] {
            let br = brotli(&body, 3).expect("smaller");
            let mut back = Vec::new();
            ::brotli::BrotliDecompress(&mut &br[..], &mut back).unwrap();
            assert!(br.len() < body.len() && back == body, "br, {} bytes", body.len());
            let zs = zstd(&body, 3).expect("smaller");
            assert!(zs.len() < body.len(), "zstd, {} bytes", body.len());
            assert_eq!(::zstd::bulk::decompress(&zs, body.len()).unwrap(), body);
        }
        for f in [brotli as fn(&[u8], u32) -> Option<Vec<u8>>, |b, l| zstd(b, l as i32)] {
            assert_eq!(f(b"abc", 3), None);
        }
        let mut h = b"HTTP/1.1 200 OK\r\netag: \"v\"\r\n\r\n".to_vec();
        mark(&mut h, Applied::Encoded(Coding::Br));
        assert_eq!(h, b"HTTP/1.1 200 OK\r\netag: W/\"v\"\r\ncontent-encoding: br\r\nvary: accept-encoding\r\n\r\n");
    }

    fn json_like(n: usize) -> Vec<u8> {
        (0..).map(|i| format!("{{\"id\":{i},\"ok\":true}},")).flat_map(String::into_bytes).take(n).collect()
    }
}
