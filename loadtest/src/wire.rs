//! The load generator's own HTTP/1.1 response reader: finds the end of each response in a
//! byte buffer (Content-Length, chunked, or close-delimited) so it can be skipped.

/// How the body of a parsed response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Length(usize),
    Chunked,
    /// Until the server closes.
    Close,
}

/// A response head found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub head_len: usize,
    pub body: BodyKind,
    /// The server will close after this response.
    pub close: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    Malformed,
}

/// Parses a response head; `Ok(None)` when more bytes are needed.
pub fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(buf).map_err(|_| WireError::Malformed)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = res.code.unwrap_or(0);
    let mut close = res.version == Some(0);
    let mut body = BodyKind::Close;
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n =
                std::str::from_utf8(h.value).ok().and_then(|s| s.trim().parse().ok()).ok_or(WireError::Malformed)?;
            if body != BodyKind::Chunked {
                body = BodyKind::Length(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if h.value.to_ascii_lowercase().ends_with(b"chunked") {
                body = BodyKind::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = h.value.to_ascii_lowercase();
            if v.windows(5).any(|w| w == b"close") {
                close = true;
            } else if v.windows(10).any(|w| w == b"keep-alive") {
                close = false;
            }
        }
    }
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        body = BodyKind::Length(0);
    }
    if body == BodyKind::Close {
        close = true;
    }
    Ok(Some(Head { status, head_len, body, close }))
}

/// Finds the end of a chunked body at the start of `buf`: `Ok(Some(len))` with the bytes
/// it occupies (trailers included), `Ok(None)` when incomplete.
pub fn chunked_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    let mut pos = 0;
    loop {
        let Some(eol) = find_crlf(&buf[pos..]) else { return Ok(None) };
        let line = &buf[pos..pos + eol];
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || digits > 15 {
            return Err(WireError::Malformed);
        }
        let size = usize::from_str_radix(std::str::from_utf8(&line[..digits]).map_err(|_| WireError::Malformed)?, 16)
            .map_err(|_| WireError::Malformed)?;
        pos += eol + 2;
        if size == 0 {
            // Trailer lines until an empty one.
            loop {
                let Some(eol) = find_crlf(&buf[pos..]) else { return Ok(None) };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        pos += size + 2;
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false).unwrap().unwrap();
        assert_eq!((h.status, h.body, h.close), (200, BodyKind::Length(5), false));
        let h = parse_head(b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.body, h.close), (503, BodyKind::Chunked, true));
        let h = parse_head(b"HTTP/1.0 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert_eq!((h.body, h.close), (BodyKind::Close, true));
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).unwrap().unwrap();
        assert_eq!(h.body, BodyKind::Length(0));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n", false), Ok(None));
        assert!(parse_head(b"garbage\r\n\r\n", false).is_err());
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(chunked_len(b"5\r\nhello\r\n0\r\n\r\nNEXT"), Ok(Some(15)));
        assert_eq!(chunked_len(b"5\r\nhel"), Ok(None));
        assert_eq!(chunked_len(b"0\r\nT: 1\r\n\r\n"), Ok(Some(11)));
        assert!(chunked_len(b"zz\r\n").is_err());
    }
}
