//! One blocking `GET` to one upstream endpoint (plain or over TLS as the workers speak to
//! it), read with proto-http's parser and chunked decoder: for the threads beside the
//! workers, never their loops. The active health checks (`health`) and the remote JWT key
//! set (`jwks`) use it; what an answer means is theirs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// An endpoint asked: its address, the name it was resolved from (the TLS server name when
/// none is configured), and the Host it answers to unless told another.
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) sni: Option<String>,
    pub(crate) host: String,
}

impl Target {
    /// Endpoint `e` of `up`.
    pub(crate) fn of(up: &config::Upstream, e: usize) -> Target {
        Target { addr: up.endpoints[e], sni: up.endpoint_names[e].clone(), host: up.endpoint_host(e) }
    }
}

/// What to ask.
pub(crate) struct Get<'a> {
    pub(crate) path: &'a str,
    /// The Host sent; `None`: the target's.
    pub(crate) host: Option<&'a str>,
    pub(crate) user_agent: &'a str,
    /// Bounds the whole exchange: connect, handshake, write, reading the answer.
    pub(crate) timeout: Duration,
    /// Body bytes read at most (0: the body is not read).
    pub(crate) max_body: usize,
}

/// An answer: its status and body (decoded, at most `max_body` bytes).
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// Its `Cache-Control: max-age` (RFC 9111 5.2.2.1), in seconds.
    pub(crate) max_age: Option<u64>,
    pub(crate) body: Vec<u8>,
    /// The body ended within `max_body` (false when it was cut, or not read).
    pub(crate) whole: bool,
}

/// Bytes of an answer's head read at most.
const MAX_HEAD: usize = 16 * 1024;

/// `GET` with `Connection: close` to `target`, over TLS when `tls` is set (the certificate
/// checked as the workers check it).
pub(crate) fn get(
    target: &Target,
    get: &Get<'_>,
    tls: Option<&crate::upstream_tls::UpstreamTls>,
) -> Result<Answer, String> {
    let addr = target.addr;
    let deadline = Instant::now() + get.timeout;
    let s = TcpStream::connect_timeout(&addr, get.timeout).map_err(|e| format!("connect: {e}"))?;
    // The timeouts are the socket's: set through a second handle while rustls owns the first.
    let ctl = s.try_clone().map_err(|e| e.to_string())?;
    match tls {
        None => exchange(s, &ctl, target, get, deadline),
        Some(t) => {
            let conn = t.connection(addr, target.sni.as_deref()).map_err(|e| format!("TLS: {e}"))?;
            exchange(rustls::StreamOwned::new(conn, s), &ctl, target, get, deadline)
        }
    }
}

/// The request and its answer over `s`, whose socket `ctl` is.
fn exchange(
    mut s: impl Read + Write,
    ctl: &TcpStream,
    target: &Target,
    get: &Get<'_>,
    deadline: Instant,
) -> Result<Answer, String> {
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    ctl.set_write_timeout(Some(left())).map_err(|e| e.to_string())?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\nConnection: close\r\n\r\n",
        get.path,
        get.host.unwrap_or(&target.host),
        get.user_agent
    );
    s.write_all(req.as_bytes()).and_then(|()| s.flush()).map_err(|e| format!("write: {e}"))?;
    // Reads more of the answer into `buf`; false at its end.
    let mut read_more = |buf: &mut Vec<u8>| -> Result<bool, String> {
        ctl.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) => Err(format!("read: {e}")),
        }
    };
    let limits = proto_http::Limits::default();
    let mut buf = Vec::with_capacity(1024);
    let meta = loop {
        if let Some(meta) = proto_http::parse_response(&buf, &limits, false).map_err(|e| e.message().to_string())? {
            break meta;
        }
        if buf.len() > MAX_HEAD || !read_more(&mut buf)? {
            return Err(if buf.is_empty() { "closed without a status line" } else { "no complete head" }.into());
        }
    };
    let status = meta.status;
    let cache_control = meta.headers.iter().filter(|h| h.name.get(&buf).eq_ignore_ascii_case(b"cache-control"));
    let max_age = proto_http::cache_control::CacheControl::parse(cache_control.map(|h| h.value.get(&buf))).max_age;
    if get.max_body == 0 {
        return Ok(Answer { status, max_age, body: Vec::new(), whole: false });
    }
    // The body, decoded: RFC 9112 6.3 framing.
    let mut raw = buf.split_off(meta.head_len);
    let mut body = Vec::new();
    let mut decoder = proto_http::chunked::ChunkedDecoder::new(&limits);
    let whole = loop {
        let done = match meta.body {
            proto_http::ResponseBody::None => true,
            proto_http::ResponseBody::Length(n) => {
                body.append(&mut raw);
                body.len() as u64 >= n
            }
            proto_http::ResponseBody::Close => {
                body.append(&mut raw);
                false
            }
            proto_http::ResponseBody::Chunked => {
                let mut at = 0;
                let mut finished = false;
                while at < raw.len() {
                    let (used, found) = decoder.decode(&raw[at..]).map_err(|e| e.message().to_string())?;
                    if let proto_http::chunked::Decoded::Data(r) = &found {
                        body.extend_from_slice(&raw[at + r.start..at + r.end]);
                    }
                    at += used;
                    if found == proto_http::chunked::Decoded::Done {
                        finished = true;
                        break;
                    }
                    if used == 0 {
                        break;
                    }
                }
                raw.drain(..at);
                finished
            }
        };
        if body.len() > get.max_body {
            break false;
        }
        if done {
            break true;
        }
        if !read_more(&mut raw)? {
            // The end of a close-delimited body; any other framing ended early.
            match meta.body {
                proto_http::ResponseBody::Close => break true,
                _ => return Err("closed in the middle of the body".into()),
            }
        }
    };
    body.truncate(get.max_body);
    Ok(Answer { status, max_age, body, whole })
}
