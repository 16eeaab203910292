//! Response heads from upstreams: parsing into spans and the framing decision of
//! RFC 9112 section 6.3, strict enough that a confused upstream cannot poison a pool.

use std::mem::MaybeUninit;

use bytes::Bytes;

use crate::fields::{fold_content_length, name_is, ConnectionFlags, TransferCodings};
use crate::{HeaderSpan, Limits, ParseError, Span, Version};

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// HEAD response, 1xx, 204 or 304 (RFC 9112 6.3 rules 1-2).
    None,
    Length(u64),
    Chunked,
    /// Read until the upstream closes (RFC 9112 6.3 rule 8).
    Close,
}

/// Everything parsed from a response head, as spans into the head's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseMeta {
    pub head_len: usize,
    pub version: Version,
    pub status: u16,
    pub reason: Span,
    pub headers: Vec<HeaderSpan>,
    pub body: ResponseBody,
    pub connection: ConnectionFlags,
}

impl ResponseMeta {
    /// Whether the upstream connection may carry another request after this response.
    pub fn keep_alive(&self) -> bool {
        let persistent = match self.version {
            Version::Http11 => !self.connection.close,
            Version::Http10 => self.connection.keep_alive && !self.connection.close,
        };
        persistent && self.body != ResponseBody::Close
    }

    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status)
    }
}

/// A parsed response head that owns its bytes.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub bytes: Bytes,
    pub meta: ResponseMeta,
}

impl ResponseHead {
    pub fn new(bytes: Bytes, meta: ResponseMeta) -> Self {
        Self { bytes, meta }
    }

    pub fn reason(&self) -> &[u8] {
        self.meta.reason.get(&self.bytes)
    }

    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.meta.headers.iter().map(move |h| (h.name.get(&self.bytes), h.value.get(&self.bytes)))
    }

    /// The value of the first field named `name` (case-insensitive), as
    /// [`RequestHead::header`](crate::RequestHead::header).
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// A 101 that switches to WebSocket: RFC 9110 15.2.2 requires the Upgrade field naming
    /// the protocol switched to.
    pub fn switches_to_websocket(&self) -> bool {
        self.meta.status == 101
            && self.headers().any(|(n, v)| n.eq_ignore_ascii_case(b"upgrade") && crate::fields::lists_websocket(v))
    }
}

/// Parses a response head at the start of `buf`. `head_request` says whether the request
/// was HEAD, which makes the response bodiless whatever its fields say.
pub fn parse_response(buf: &[u8], limits: &Limits, head_request: bool) -> Result<Option<ResponseMeta>, ParseError> {
    parse_response_in(buf, limits, head_request, &mut Vec::new())
}

/// As [`parse_response`], with the header spans stored in `spare` (taken on success).
pub fn parse_response_in(
    buf: &[u8],
    limits: &Limits,
    head_request: bool,
    spare: &mut Vec<HeaderSpan>,
) -> Result<Option<ResponseMeta>, ParseError> {
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    // Uninitialised header slots, as for requests (see request.rs).
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; Limits::HEADER_CAP];
    let cap = limits.max_headers.clamp(1, Limits::HEADER_CAP);
    let mut res = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        window,
        &mut storage[..cap],
    )? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial if buf.len() >= limits.max_head_bytes => return Err(ParseError::HeadTooLarge),
        httparse::Status::Partial => return Ok(None),
    };
    let version = match res.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(ParseError::Version),
    };
    let status = res.code.ok_or(ParseError::StartLine)?;
    if !(100..=999).contains(&status) {
        return Err(ParseError::Status);
    }
    let reason = res.reason.map(|r| Span::of(buf, r.as_bytes())).unwrap_or_default();
    let mut meta = ResponseMeta {
        head_len,
        version,
        status,
        reason,
        headers: {
            let mut v = std::mem::take(spare);
            v.clear();
            v
        },
        body: ResponseBody::Close,
        connection: ConnectionFlags::default(),
    };
    let mut length: Option<u64> = None;
    let mut codings = TransferCodings::default();
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        meta.headers.push(HeaderSpan { name: Span::of(buf, name), value: Span::of(buf, h.value) });
        if name_is(name, b"content-length") {
            length = Some(fold_content_length(length, h.value)?);
        } else if name_is(name, b"transfer-encoding") {
            codings.add(h.value);
        } else if name_is(name, b"connection") {
            meta.connection.add(h.value);
        }
    }
    // RFC 9112 6.1: Transfer-Encoding in 1.0 means faulty framing; with Content-Length it
    // may be smuggling. Both are refused rather than guessed at.
    if codings.present && (version == Version::Http10 || length.is_some()) {
        return Err(if length.is_some() {
            ParseError::LengthWithTransferEncoding
        } else {
            ParseError::TransferEncodingHttp10
        });
    }
    meta.body = if head_request || status < 200 || status == 204 || status == 304 {
        ResponseBody::None
    } else if codings.present {
        if codings.chunked > 1 || (codings.chunked == 1 && !codings.last_chunked) {
            return Err(ParseError::ChunkedNotFinal);
        }
        if codings.last_chunked {
            ResponseBody::Chunked
        } else {
            ResponseBody::Close
        }
    } else {
        match length {
            Some(n) => ResponseBody::Length(n),
            None => ResponseBody::Close,
        }
    };
    Ok(Some(meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str, head: bool) -> ResponseMeta {
        parse_response(input.as_bytes(), &Limits::default(), head).unwrap().unwrap()
    }

    #[test]
    fn framing_table() {
        let cases: &[(&str, bool, ResponseBody, bool)] = &[
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, ResponseBody::Length(5), true),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, ResponseBody::None, true),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, ResponseBody::Chunked, true),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, ResponseBody::Close, false),
            ("HTTP/1.1 200 OK\r\n\r\n", false, ResponseBody::Close, false),
            ("HTTP/1.1 204 No Content\r\n\r\n", false, ResponseBody::None, true),
            ("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false, ResponseBody::None, true),
            ("HTTP/1.1 100 Continue\r\n\r\n", false, ResponseBody::None, true),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                false,
                ResponseBody::Length(0),
                false,
            ),
            ("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false, ResponseBody::Length(0), false),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
                false,
                ResponseBody::Length(0),
                true,
            ),
            ("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false, ResponseBody::Length(0), true),
        ];
        for (input, head, body, keep) in cases {
            let m = parse(input, *head);
            assert_eq!(m.body, *body, "{input:?}");
            assert_eq!(m.keep_alive(), *keep, "{input:?}");
        }
    }

    #[test]
    fn first_field_by_name() {
        let input = "HTTP/1.1 200 OK\r\nETag: \"a\"\r\netag: \"b\"\r\nContent-Length: 0\r\n\r\n";
        let head = ResponseHead::new(Bytes::from(input), parse(input, false));
        assert_eq!(head.header(b"ETAG"), Some(&b"\"a\""[..]));
        assert_eq!(head.header(b"age"), None);
    }

    #[test]
    fn websocket_switches() {
        let head = |input: &str| {
            let meta = parse(input, false);
            assert!(meta.status != 101 || meta.body == ResponseBody::None, "{input:?}");
            ResponseHead::new(Bytes::copy_from_slice(input.as_bytes()), meta)
        };
        let cases = [
            ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", true),
            ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\n\r\n", true),
            // RFC 9110 15.2.2: a 101 names the protocol it switches to.
            ("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n", false),
            ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", false),
            ("HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n", false),
        ];
        for (input, want) in cases {
            assert_eq!(head(input).switches_to_websocket(), want, "{input:?}");
        }
    }

    #[test]
    fn invalid_responses() {
        use ParseError::*;
        let table: &[(&str, ParseError)] = &[
            ("HTTP/1.1 20 OK\r\n\r\n", Status),
            ("HTTP/1.1 abc OK\r\n\r\n", Status),
            ("HTTP/2 200 OK\r\n\r\n", Version),
            ("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", ContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", ConflictingLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", LengthWithTransferEncoding),
            ("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", TransferEncodingHttp10),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", ChunkedNotFinal),
            ("HTTP/1.1 200 OK\r\nX : y\r\n\r\n", HeaderName),
        ];
        for (input, why) in table {
            assert_eq!(parse_response(input.as_bytes(), &Limits::default(), false), Err(*why), "{input:?}");
        }
        let limits = Limits { max_head_bytes: 32, ..Limits::default() };
        let big = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "y".repeat(40));
        assert_eq!(parse_response(big.as_bytes(), &limits, false), Err(HeadTooLarge));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n", &Limits::default(), false), Ok(None));
    }
}
