//! Request heads: parsing with httparse into spans over one buffer (RFC 9112 section 3),
//! then the framing decision for the body (RFC 9112 section 6.3) and the checks a proxy
//! must make before forwarding anything (Host, Content-Length, Transfer-Encoding).

use std::mem::MaybeUninit;

use bytes::Bytes;

use crate::fields::{fold_content_length, name_is, valid_host, ConnectionFlags, TransferCodings};
use crate::{HeaderSpan, Limits, ParseError, Span};

/// HTTP version of a message. Only 1.0 and 1.1 exist on this wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// Methods the proxy treats specially; everything else is `Other` (the bytes stay in the head).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Trace,
    Patch,
    Connect,
    Other,
}

impl Method {
    fn from_bytes(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            b"CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// RFC 9110 9.2.2: requests that may be repeated automatically.
    pub fn is_idempotent(self) -> bool {
        matches!(self, Method::Get | Method::Head | Method::Put | Method::Delete | Method::Options | Method::Trace)
    }
}

/// How the request body is delimited (RFC 9112 6.3, rules 4-7 for requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No Content-Length and no Transfer-Encoding: the body is empty.
    Empty,
    Length(u64),
    Chunked,
}

/// Everything parsed from a request head, as spans into the head's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMeta {
    /// Bytes from the start of the buffer to the end of the empty line.
    pub head_len: usize,
    pub method: Method,
    pub method_span: Span,
    /// Origin-form path and query to send upstream. For an absolute-form target this is the
    /// part after the authority; empty means "/".
    pub path: Span,
    /// Authority from an absolute-form target (RFC 9112 3.2.2), which overrides Host.
    pub target_authority: Option<Span>,
    pub version: Version,
    pub headers: Vec<HeaderSpan>,
    /// The effective host: the target's authority, else the Host field value.
    pub host: Option<Span>,
    pub body: BodyFraming,
    pub connection: ConnectionFlags,
    /// Whether the client asked for `Expect: 100-continue`.
    pub expect_continue: bool,
    /// Whether an Upgrade field is present.
    pub upgrade: bool,
    /// The path (without the query) as the client sent it, when normalisation
    /// ([`crate::path`]) changed it: for the access log.
    pub path_as_sent: Option<Box<[u8]>>,
}

impl RequestMeta {
    /// Persistence per RFC 9112 9.3: 1.1 unless `close`; 1.0 only with `keep-alive`.
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.connection.close,
            Version::Http10 => self.connection.keep_alive && !self.connection.close,
        }
    }
}

/// A parsed request head that owns its bytes: spans in `meta` index into `bytes`.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub bytes: Bytes,
    pub meta: RequestMeta,
}

impl RequestHead {
    pub fn new(bytes: Bytes, meta: RequestMeta) -> Self {
        debug_assert!(bytes.len() >= meta.head_len);
        Self { bytes, meta }
    }

    pub fn method(&self) -> &[u8] {
        self.meta.method_span.get(&self.bytes)
    }

    /// Path and query in origin-form (never empty: "/" for an empty absolute-form path).
    pub fn path(&self) -> &[u8] {
        let p = self.meta.path.get(&self.bytes);
        if p.is_empty() {
            b"/"
        } else {
            p
        }
    }

    /// Path without the query.
    pub fn path_only(&self) -> &[u8] {
        let p = self.path();
        match p.iter().position(|&b| b == b'?') {
            Some(i) => &p[..i],
            None => p,
        }
    }

    pub fn host(&self) -> Option<&[u8]> {
        self.meta.host.map(|s| s.get(&self.bytes))
    }

    /// Header fields in order, as (name, value) byte slices.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.meta.headers.iter().map(move |h| (h.name.get(&self.bytes), h.value.get(&self.bytes)))
    }

    /// The value of the first field named `name` (case-insensitive).
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// Max-Forwards (RFC 9110 7.6.2: `1*DIGIT`, the hops a TRACE or OPTIONS request may
    /// still be forwarded); `None` without the field. Values past `u64::MAX` read as
    /// `u64::MAX`. Several fields, a list, a sign or an empty value are refused: a proxy
    /// that must count down cannot guess which of two values was meant.
    pub fn max_forwards(&self) -> Result<Option<u64>, ParseError> {
        let mut found = None;
        for (name, value) in self.headers() {
            if !name.eq_ignore_ascii_case(b"max-forwards") {
                continue;
            }
            if found.is_some() {
                return Err(ParseError::MaxForwards);
            }
            found = Some(crate::fields::saturating_digits(value).ok_or(ParseError::MaxForwards)?);
        }
        Ok(found)
    }

    /// A WebSocket opening handshake (RFC 6455 4.1) that a proxy can forward as an upgrade
    /// (RFC 9110 7.8): an HTTP/1.1 GET without a body, with `upgrade` in its Connection field
    /// and `websocket` in its Upgrade field.
    pub fn is_websocket_upgrade(&self) -> bool {
        let m = &self.meta;
        m.upgrade
            && m.connection.upgrade
            && m.version == Version::Http11
            && m.method == Method::Get
            && m.body == BodyFraming::Empty
            && self.headers().any(|(n, v)| n.eq_ignore_ascii_case(b"upgrade") && crate::fields::lists_websocket(v))
    }
}

/// RFC 9112 2.3: a request with a higher minor version of HTTP/1 is answered as HTTP/1.1.
/// httparse accepts only 1.0 and 1.1, so when the request line of `buf` ends in
/// `HTTP/1.<2-9>` that digit is rewritten to `1` in place. Returns whether it was.
pub fn downgrade_minor_version(buf: &mut [u8]) -> bool {
    let Some(eol) = buf.iter().position(|&b| b == b'\n') else { return false };
    let line = &buf[..eol];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let n = line.len();
    if n >= 8 && &line[n - 8..n - 1] == b"HTTP/1." && (b'2'..=b'9').contains(&line[n - 1]) {
        buf[n - 1] = b'1';
        return true;
    }
    false
}

/// Parses a request head at the start of `buf`.
///
/// `Ok(None)` means more bytes are needed (and the limits are not yet exceeded).
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<RequestMeta>, ParseError> {
    parse_request_in(buf, limits, &mut Vec::new())
}

/// As [`parse_request`], with the header spans stored in `spare` (taken on success), so a
/// connection can reuse one allocation for every request.
pub fn parse_request_in(
    buf: &[u8],
    limits: &Limits,
    spare: &mut Vec<HeaderSpan>,
) -> Result<Option<RequestMeta>, ParseError> {
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    // Uninitialised header slots: initialising 256 of them (8 KiB) per parse was the largest
    // single cost in a callgrind profile of the proxy (15% of its instructions in memcpy).
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; Limits::HEADER_CAP];
    let cap = limits.max_headers.clamp(1, Limits::HEADER_CAP);
    let mut req = httparse::Request::new(&mut []);
    let status = req.parse_with_uninit_headers(window, &mut storage[..cap]).map_err(|e| match e {
        // A full array means at least max_headers + ... fields: refuse with the limit's error.
        httparse::Error::TooManyHeaders => ParseError::TooManyHeaders,
        // httparse says `Token` for a bad byte in the method or in the target: a method that
        // is a whole token (RFC 9110 9.1) followed by its space leaves the target to blame.
        httparse::Error::Token if method_is_token(window) => ParseError::Target,
        other => ParseError::from(other),
    })?;
    let head_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            // RFC 9112 3: a request line longer than we accept gets 414, else the head is too big.
            let line_end = window.iter().position(|&b| b == b'\n');
            if line_end.is_none() && window.len() > limits.max_uri_bytes + 32 {
                return Err(ParseError::UriTooLong);
            }
            if buf.len() >= limits.max_head_bytes {
                return Err(ParseError::HeadTooLarge);
            }
            return Ok(None);
        }
    };
    let method_bytes = req.method.ok_or(ParseError::StartLine)?.as_bytes();
    let target = req.path.ok_or(ParseError::StartLine)?;
    if target.len() > limits.max_uri_bytes {
        return Err(ParseError::UriTooLong);
    }
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(ParseError::Version),
    };
    let method = Method::from_bytes(method_bytes);
    let (path, target_authority) = split_target(buf, target, method)?;

    let mut meta = RequestMeta {
        head_len,
        method,
        method_span: Span::of(buf, method_bytes),
        path,
        target_authority,
        version,
        headers: {
            let mut v = std::mem::take(spare);
            v.clear();
            v
        },
        host: None,
        body: BodyFraming::Empty,
        connection: ConnectionFlags::default(),
        expect_continue: false,
        upgrade: false,
        path_as_sent: None,
    };
    let mut host_header: Option<Span> = None;
    let mut hosts = 0u32;
    let mut length: Option<u64> = None;
    let mut codings = TransferCodings::default();
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        meta.headers.push(HeaderSpan { name: Span::of(buf, name), value: Span::of(buf, value) });
        if name_is(name, b"content-length") {
            length = Some(fold_content_length(length, value)?);
        } else if name_is(name, b"transfer-encoding") {
            codings.add(value);
        } else if name_is(name, b"host") {
            hosts += 1;
            host_header = Some(Span::of(buf, value));
        } else if name_is(name, b"connection") {
            meta.connection.add(value);
        } else if name_is(name, b"expect") {
            // RFC 9110 10.1.1: 100-continue is the only expectation defined.
            if value.eq_ignore_ascii_case(b"100-continue") {
                meta.expect_continue = true;
            } else {
                return Err(ParseError::Expectation);
            }
        } else if name_is(name, b"upgrade") {
            meta.upgrade = true;
        } else if name.contains(&b'_') && is_framing_lookalike(name) {
            // Some servers read `Transfer_Encoding` as Transfer-Encoding: forwarding it would
            // let the upstream frame the body differently from us.
            return Err(ParseError::HeaderName);
        }
    }

    // RFC 9110 7.2 / RFC 9112 3.2: exactly one Host in 1.1, never a list, valid syntax.
    if hosts > 1 {
        return Err(ParseError::DuplicateHost);
    }
    if let Some(span) = host_header {
        // A list is never a valid host: looked for only in one that is not (the search on
        // every request cost 93 instructions, 10,473 → 10,380 per request, callgrind).
        let v = span.get(buf);
        if !valid_host(v) {
            return Err(if v.contains(&b',') { ParseError::DuplicateHost } else { ParseError::BadHost });
        }
    } else if version == Version::Http11 {
        return Err(ParseError::MissingHost);
    }
    meta.host = target_authority.or(host_header);

    // RFC 9112 6.1 and 6.3: framing.
    meta.body = if codings.present {
        if version == Version::Http10 {
            return Err(ParseError::TransferEncodingHttp10);
        }
        if length.is_some() {
            return Err(ParseError::LengthWithTransferEncoding);
        }
        codings.request_chunked()?;
        BodyFraming::Chunked
    } else {
        match length {
            Some(n) => BodyFraming::Length(n),
            None => BodyFraming::Empty,
        }
    };
    // RFC 9110 9.3.8: a client must not send content with TRACE (the echo would carry it).
    if method == Method::Trace && !matches!(meta.body, BodyFraming::Empty | BodyFraming::Length(0)) {
        return Err(ParseError::TraceContent);
    }
    Ok(Some(meta))
}

/// True for names that equal Content-Length or Transfer-Encoding once `_` is read as `-`.
fn is_framing_lookalike(name: &[u8]) -> bool {
    [&b"content-length"[..], b"transfer-encoding"].iter().any(|want| {
        want.len() == name.len()
            && want.iter().zip(name).all(|(&w, &n)| w == n.to_ascii_lowercase() || (w == b'-' && n == b'_'))
    })
}

/// Splits the request target (RFC 9112 3.2) into the origin-form path and, for
/// absolute-form, the authority.
/// Whether the request line starts with a token (RFC 9110 5.6.2) and a space.
fn method_is_token(line: &[u8]) -> bool {
    const TCHAR: &[u8] = b"!#$%&'*+-.^_`|~";
    let end = line.iter().position(|&b| !(b.is_ascii_alphanumeric() || TCHAR.contains(&b)));
    end.is_some_and(|i| i > 0 && line[i] == b' ')
}

fn split_target(buf: &[u8], target: &str, method: Method) -> Result<(Span, Option<Span>), ParseError> {
    let t = target.as_bytes();
    if t.first() == Some(&b'/') {
        return Ok((Span::of(buf, t), None));
    }
    if t == b"*" {
        // asterisk-form is only for OPTIONS (RFC 9112 3.2.4).
        return if method == Method::Options { Ok((Span::of(buf, t), None)) } else { Err(ParseError::Target) };
    }
    if method == Method::Connect {
        // authority-form (RFC 9112 3.2.3); the engine decides whether CONNECT is served.
        return if valid_host(t) && !t.is_empty() {
            Ok((Span::of(buf, t), Some(Span::of(buf, t))))
        } else {
            Err(ParseError::Target)
        };
    }
    let rest = strip_scheme(t).ok_or(ParseError::Target)?;
    let end = rest.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || !valid_host(authority) {
        return Err(ParseError::BadHost);
    }
    let path = &rest[end..];
    if path.first() == Some(&b'?') {
        // "http://h?q" has an empty path; forwarding it as "?q" would be invalid.
        return Err(ParseError::Target);
    }
    Ok((Span::of(buf, path), Some(Span::of(buf, authority))))
}

fn strip_scheme(t: &[u8]) -> Option<&[u8]> {
    for scheme in [&b"http://"[..], b"https://"] {
        if t.len() >= scheme.len() && t[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some(&t[scheme.len()..]);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> RequestHead {
        let meta = parse_request(input.as_bytes(), &Limits::default())
            .unwrap_or_else(|e| panic!("{input:?}: {e}"))
            .unwrap_or_else(|| panic!("{input:?}: incomplete"));
        RequestHead::new(Bytes::copy_from_slice(input.as_bytes()), meta)
    }

    fn parse_err(input: &str, why: ParseError) {
        assert_eq!(parse_request(input.as_bytes(), &Limits::default()), Err(why), "{input:?}");
    }

    #[test]
    fn valid_requests() {
        let r = parse("GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.path(), b"/a?b=1");
        assert_eq!(r.path_only(), b"/a");
        assert_eq!(r.host(), Some(&b"x"[..]));
        assert_eq!(r.meta.body, BodyFraming::Empty);
        assert!(r.meta.keep_alive());

        let r = parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(r.meta.body, BodyFraming::Length(5));
        assert_eq!(r.meta.head_len, r.bytes.len() - 5);

        let r = parse("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(r.meta.body, BodyFraming::Chunked);

        let r = parse("GET / HTTP/1.0\r\n\r\n");
        assert!(!r.meta.keep_alive());
        assert_eq!(r.host(), None);
        let r = parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(r.meta.keep_alive());
        let r = parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n");
        assert!(!r.meta.keep_alive());
        assert!(r.meta.connection.other);

        let r = parse("GET http://Example.com:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(r.host(), Some(&b"Example.com:8080"[..]));
        assert_eq!(r.path(), b"/p?q");
        let r = parse("GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(r.path(), b"/");

        let r = parse("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.path(), b"*");
        let r = parse(
            "PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
        );
        assert_eq!(r.meta.body, BodyFraming::Length(3));
        assert!(r.meta.expect_continue);
        let r = parse("GET / HTTP/1.1\r\nHost: \r\n\r\n");
        assert_eq!(r.host(), Some(&b""[..]));
    }

    #[test]
    fn max_forwards_table() {
        let ok: &[(&str, Option<u64>)] = &[
            ("", None),
            ("Max-Forwards: 0\r\n", Some(0)),
            ("max-forwards: 10\r\n", Some(10)),
            ("Max-Forwards:  7 \r\n", Some(7)),
            ("Max-Forwards: 99999999999999999999999\r\n", Some(u64::MAX)),
        ];
        for (field, want) in ok {
            let r = parse(&format!("OPTIONS / HTTP/1.1\r\nHost: x\r\n{field}\r\n"));
            assert_eq!(r.max_forwards(), Ok(*want), "{field:?}");
        }
        for field in [
            "Max-Forwards: \r\n",
            "Max-Forwards: -1\r\n",
            "Max-Forwards: +1\r\n",
            "Max-Forwards: 1, 2\r\n",
            "Max-Forwards: 0x1\r\n",
            "Max-Forwards: 1\r\nMax-Forwards: 1\r\n",
        ] {
            let r = parse(&format!("TRACE / HTTP/1.1\r\nHost: x\r\n{field}\r\n"));
            assert_eq!(r.max_forwards(), Err(ParseError::MaxForwards), "{field:?}");
        }
    }

    #[test]
    fn trace_has_no_content() {
        parse_err("TRACE / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx", ParseError::TraceContent);
        parse_err("TRACE / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", ParseError::TraceContent);
        assert_eq!(parse("TRACE / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").meta.method, Method::Trace);
    }

    #[test]
    fn websocket_upgrades() {
        let ws = "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n";
        let cases = [
            (format!("GET /chat HTTP/1.1\r\n{ws}\r\n"), true),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: foo/2, WebSocket\r\nConnection: keep-alive, upgrade\r\n\r\n"
                    .into(),
                true,
            ),
            // Upgrade without Connection: upgrade is not a request to switch (RFC 9110 7.8).
            ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n".into(), false),
            ("GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n".into(), false),
            ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n".into(), false),
            (format!("GET / HTTP/1.0\r\n{ws}\r\n"), false),
            (format!("POST / HTTP/1.1\r\n{ws}\r\n"), false),
            (format!("GET / HTTP/1.1\r\n{ws}Content-Length: 1\r\n\r\nx"), false),
        ];
        for (input, want) in cases {
            assert_eq!(parse(&input).is_websocket_upgrade(), want, "{input:?}");
        }
    }

    #[test]
    fn higher_minor_versions_are_answered_as_1_1() {
        let mut b = b"GET / HTTP/1.2\r\nHost: a\r\n\r\n".to_vec();
        assert!(downgrade_minor_version(&mut b));
        assert_eq!(parse_request(&b, &Limits::default()).unwrap().unwrap().version, Version::Http11);
        for other in [&b"GET / HTTP/1.1\r\n"[..], b"GET / HTTP/2.0\r\n", b"GET / HTTP/1.2", b"GET /HTTP/1.2x\r\n"] {
            let mut b = other.to_vec();
            assert!(!downgrade_minor_version(&mut b), "{:?}", String::from_utf8_lossy(other));
            assert_eq!(b, other);
        }
    }

    #[test]
    fn incomplete_heads_ask_for_more() {
        for input in ["", "GET", "GET / HTTP/1.1\r\n", "GET / HTTP/1.1\r\nHost: x\r\n"] {
            assert_eq!(parse_request(input.as_bytes(), &Limits::default()), Ok(None), "{input:?}");
        }
    }

    #[test]
    fn invalid_requests() {
        use ParseError::*;
        let table: &[(&str, ParseError)] = &[
            ("GET / HTTP/1.1\r\n\r\n", MissingHost),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", DuplicateHost),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", DuplicateHost),
            ("GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", DuplicateHost),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", BadHost),
            ("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", BadHost),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", Version),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", HeaderName),
            ("GET / HTTP/1.1\r\nHo st: a\r\n\r\n", HeaderName),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", HeaderName),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", HeaderValue),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", HeaderValue),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", HeaderValue),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", ContentLength),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", ContentLength),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\n", ContentLength),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", ContentLength),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", ConflictingLength),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n", ConflictingLength),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                LengthWithTransferEncoding,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
                LengthWithTransferEncoding,
            ),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", UnsupportedCoding),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", ChunkedNotFinal),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                ChunkedNotFinal,
            ),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", UnsupportedCoding),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", TransferEncodingHttp10),
            ("GET / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n", Expectation),
            ("GET foo HTTP/1.1\r\nHost: a\r\n\r\n", Target),
            ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", Target),
            ("GET http://a?q HTTP/1.1\r\nHost: a\r\n\r\n", Target),
            ("GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n", BadHost),
            ("GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", BadHost),
            ("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", Method),
            (" GET / HTTP/1.1\r\nHost: a\r\n\r\n", Method),
            ("GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n", Target),
            ("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", Target),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n", HeaderName),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n\r\n", HeaderName),
        ];
        for (input, why) in table {
            parse_err(input, *why);
        }
    }

    #[test]
    fn limits_have_their_own_errors() {
        let limits = Limits { max_head_bytes: 64, max_headers: 2, max_uri_bytes: 16, ..Limits::default() };
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(20));
        assert_eq!(parse_request(long_uri.as_bytes(), &limits), Err(ParseError::UriTooLong));
        let unterminated = format!("GET /{}", "a".repeat(60));
        assert_eq!(parse_request(unterminated.as_bytes(), &limits), Err(ParseError::UriTooLong));
        let many = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
        assert_eq!(parse_request(many.as_bytes(), &limits), Err(ParseError::TooManyHeaders));
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nA: {}\r\n\r\n", "x".repeat(60));
        assert_eq!(parse_request(big.as_bytes(), &limits), Err(ParseError::HeadTooLarge));
    }
}
