//! The heads coregate writes: the request head sent upstream and the response head sent
//! to the client, with hop-by-hop fields removed (RFC 9110 7.6.1), framing re-stated by the
//! proxy (RFC 9112 6), and the X-Forwarded-* fields set; plus the small error responses.

use std::io::Write as _;
use std::net::SocketAddr;

use proto_http::write::{field, field_u64, reason, request_line, status_line};
use proto_http::{is_hop_by_hop, BodyFraming, FieldList, RequestHead, ResponseHead, Version};

use crate::date::with_date;

/// True for fields named by a Connection header of this message (RFC 9110 7.6.1).
fn named_by_connection<'a>(mut connection_values: impl Iterator<Item = &'a [u8]>, name: &[u8]) -> bool {
    connection_values.any(|v| FieldList::new(v).any(|token| token.eq_ignore_ascii_case(name)))
}

fn connection_values<'a>(headers: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> impl Iterator<Item = &'a [u8]> {
    headers.filter(|(n, _)| n.eq_ignore_ascii_case(b"connection")).map(|(_, v)| v)
}

/// Writes the request head for the upstream into `out`.
///
/// - Origin-form target, always HTTP/1.1.
/// - Host kept from the client (or the absolute-form authority, RFC 9112 3.2.2); for an
///   HTTP/1.0 request without one, `fallback_host` (the endpoint address).
/// - Content-Length re-stated as one value; chunked bodies are re-encoded, so
///   Transfer-Encoding is re-stated as `chunked`.
/// - Expect is not forwarded: coregate answers `100-continue` itself before it reads the body.
/// - X-Forwarded-For appended to (several fields are joined), X-Forwarded-Proto and
///   X-Forwarded-Host set.
pub(crate) fn request_head(out: &mut Vec<u8>, req: &RequestHead, peer: SocketAddr, fallback_host: impl FnOnce() -> String) {
    out.clear();
    out.reserve(req.bytes.len() + 128);
    request_line(out, req.method(), req.path());
    let other_tokens = req.meta.connection.other;
    let mut forwarded_for = 0;
    for (name, value) in req.headers() {
        if is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"host")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"x-forwarded-for")
            || name.eq_ignore_ascii_case(b"x-forwarded-proto")
            || name.eq_ignore_ascii_case(b"x-forwarded-host")
            || (other_tokens && named_by_connection(connection_values(req.headers()), name))
        {
            forwarded_for += usize::from(name.eq_ignore_ascii_case(b"x-forwarded-for"));
            continue;
        }
        field(out, name, value);
    }
    match req.host() {
        Some(h) => field(out, b"host", h),
        None => field(out, b"host", fallback_host().as_bytes()),
    }
    match req.meta.body {
        BodyFraming::Empty => {}
        BodyFraming::Length(n) => field_u64(out, b"content-length", n),
        BodyFraming::Chunked => field(out, b"transfer-encoding", b"chunked"),
    }
    // X-Forwarded-For: earlier values (several fields joined), then the client's address.
    out.extend_from_slice(b"x-forwarded-for: ");
    if forwarded_for > 0 {
        for (name, value) in req.headers() {
            if name.eq_ignore_ascii_case(b"x-forwarded-for") && !value.is_empty() {
                out.extend_from_slice(value);
                out.extend_from_slice(b", ");
            }
        }
    }
    let _ = write!(out, "{}\r\n", peer.ip());
    field(out, b"x-forwarded-proto", b"http");
    if let Some(h) = req.host() {
        field(out, b"x-forwarded-host", h);
    }
    out.extend_from_slice(b"\r\n");
}

/// How the response body is framed towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientFraming {
    None,
    Length(u64),
    Chunked,
    /// Close-delimited: the client connection closes after the body.
    Close,
}

/// Writes the response head for the client into `out`. `keep_alive` says whether the
/// client connection stays open after this response; `http10` whether the client spoke 1.0.
pub(crate) fn response_head(
    out: &mut Vec<u8>,
    resp: &ResponseHead,
    framing: ClientFraming,
    keep_alive: bool,
    http10: bool,
) {
    out.clear();
    out.reserve(resp.bytes.len() + 64);
    status_line(out, resp.meta.status, resp.reason());
    let other_tokens = resp.meta.connection.other;
    for (name, value) in resp.headers() {
        let is_length = name.eq_ignore_ascii_case(b"content-length");
        if is_hop_by_hop(name)
            || (is_length && framing != ClientFraming::None)
            || (other_tokens && named_by_connection(connection_values(resp.headers()), name))
        {
            continue;
        }
        field(out, name, value);
    }
    match framing {
        ClientFraming::Length(n) => field_u64(out, b"content-length", n),
        ClientFraming::Chunked => field(out, b"transfer-encoding", b"chunked"),
        ClientFraming::None | ClientFraming::Close => {}
    }
    if !keep_alive {
        field(out, b"connection", b"close");
    } else if http10 {
        field(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
}

/// An informational (1xx) response head relayed as received, hop-by-hop fields removed.
pub(crate) fn informational_head(out: &mut Vec<u8>, resp: &ResponseHead) {
    out.clear();
    status_line(out, resp.meta.status, resp.reason());
    for (name, value) in resp.headers().filter(|(n, _)| !is_hop_by_hop(n)) {
        field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// A small, complete error response generated by coregate.
pub(crate) fn error_response(status: u16, detail: &str, keep_alive: bool, version: Version) -> Vec<u8> {
    let reason = reason(status);
    let body_len = 3 + 1 + reason.len() + 2 + detail.len() + 1;
    let mut out = Vec::with_capacity(160 + body_len);
    status_line(&mut out, status, reason.as_bytes());
    with_date(|d| field(&mut out, b"date", d));
    field(&mut out, b"server", b"coregate");
    field(&mut out, b"content-type", b"text/plain; charset=utf-8");
    field_u64(&mut out, b"content-length", body_len as u64);
    if !keep_alive {
        field(&mut out, b"connection", b"close");
    } else if version == Version::Http10 {
        field(&mut out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(format!("{status} {reason}: {detail}\n").as_bytes());
    debug_assert!(out.ends_with(b"\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proto_http::{parse_request, Limits};

    fn req(text: &str) -> RequestHead {
        let meta = parse_request(text.as_bytes(), &Limits::default()).unwrap().unwrap();
        RequestHead::new(Bytes::copy_from_slice(text.as_bytes()), meta)
    }

    #[test]
    fn request_head_drops_hop_by_hop_and_appends_forwarded_for() {
        let r = req("POST http://h.example/p?q HTTP/1.1\r\nHost: h.example\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: websocket\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nX-Forwarded-Proto: https\r\nContent-Length: 3, 3\r\nExpect: 100-continue\r\nAccept: */*\r\n\r\n");
        let mut out = Vec::new();
        request_head(&mut out, &r, "10.0.0.9:1234".parse().unwrap(), || "fallback".into());
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "POST /p?q HTTP/1.1\r\naccept: */*\r\n".replace("accept", "Accept")
                + "host: h.example\r\ncontent-length: 3\r\nx-forwarded-for: 1.2.3.4, 5.6.7.8, 10.0.0.9\r\nx-forwarded-proto: http\r\nx-forwarded-host: h.example\r\n\r\n"
        );
    }

    #[test]
    fn error_response_is_complete() {
        let out = error_response(502, "upstream refused", false, Version::Http11);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(text.contains("connection: close\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().parse().unwrap();
        assert_eq!(len, body.len());
    }
}
