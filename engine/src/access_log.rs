//! The access log (`access_log.path`): one JSON object per line and answered request,
//! gathered in a buffer per worker and written out by the worker's control tick (every 50 ms)
//! or when the buffer passes 32 KiB, with one `write` per flush, so lines from different
//! workers never interleave (a file is opened for appending; standard output is locked per
//! flush).
//!
//! Left to others: what a request's route, status and duration were (`conn`, `proxy`).

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use config::AccessLog as Destination;
use proto_http::RequestHead;

/// Where the lines go; shared by the workers.
pub(crate) enum Sink {
    Stdout,
    File(File),
}

impl Sink {
    pub(crate) fn open(dest: &Destination) -> io::Result<Sink> {
        Ok(match dest {
            Destination::Stdout => Sink::Stdout,
            Destination::File(path) => Sink::File(
                File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("access log {}: {e}", path.display())))?,
            ),
        })
    }

    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout => io::stdout().lock().write_all(bytes),
            Sink::File(f) => (&*f).write_all(bytes),
        }
    }
}

/// Buffered bytes past which a line makes the worker write at once.
const FLUSH_AT: usize = 32 * 1024;

/// One worker's side of the access log.
pub(crate) struct AccessLog {
    sink: std::sync::Arc<Sink>,
    buf: RefCell<Vec<u8>>,
    /// The second last formatted and its text, `2026-11-24T14:00:00`.
    second: RefCell<(u64, String)>,
}

/// One answered request, as logged.
pub(crate) struct Entry<'a> {
    pub client: &'a [u8],
    /// None for a request refused before its head was read. Its path is logged without the
    /// query, which may carry an API key.
    pub request: Option<&'a RequestHead>,
    /// With `server.request_id`.
    pub request_id: Option<&'a [u8]>,
    /// With `[tracing]`: the request's trace, in hex.
    pub trace_id: Option<&'a [u8]>,
    pub status: u16,
    pub route: &'a str,
    /// The upstream it was proxied to (on a split route, the one chosen).
    pub upstream: Option<&'a str>,
    /// The endpoint that answered, or the last one tried (nginx's `$upstream_addr`).
    pub endpoint: Option<std::net::SocketAddr>,
    /// From taking a connection for the attempt that answered to its response head
    /// (nginx's `$upstream_header_time`).
    pub upstream_time: Option<Duration>,
    /// The authenticated consumer or subject.
    pub consumer: Option<&'a str>,
    pub took: Duration,
    /// `X-Cache-Status`, on a cached route.
    pub cache: Option<&'a [u8]>,
    /// Bytes written to the client for it: head and body, as they left coregate (before
    /// TLS; nginx's `$bytes_sent`). An upgraded connection counts its 101 head only.
    pub sent: u64,
    /// On a TLS connection: its cipher suite (an index in [`config::CIPHER_SUITES`]) and
    /// whether its handshake resumed a session ([`crate::tls::Tls::handshake_outcome`]).
    pub tls: Option<(usize, bool)>,
}

impl AccessLog {
    pub(crate) fn new(sink: std::sync::Arc<Sink>) -> AccessLog {
        AccessLog { sink, buf: RefCell::new(Vec::with_capacity(FLUSH_AT + 1024)), second: RefCell::default() }
    }

    /// Appends the line of `e`.
    pub(crate) fn log(&self, e: &Entry<'_>) {
        let mut buf = self.buf.borrow_mut();
        buf.extend_from_slice(b"{\"time\":\"");
        self.timestamp(&mut buf);
        text(&mut buf, "client", e.client);
        let (method, host, path) =
            e.request.map_or((&b""[..], None, &b""[..]), |r| (r.method(), r.host(), r.path_only()));
        text(&mut buf, "method", method);
        text(&mut buf, "host", host.unwrap_or_default());
        text(&mut buf, "path", path);
        let optional = |buf: &mut Vec<u8>, key: &str, value: Option<&[u8]>| {
            if let Some(v) = value {
                text(buf, key, v);
            }
        };
        optional(&mut buf, "path_as_sent", e.request.and_then(|r| r.meta.path_as_sent.as_deref()));
        optional(&mut buf, "request_id", e.request_id);
        optional(&mut buf, "trace_id", e.trace_id);
        let _ = write!(buf, "\",\"status\":{},\"route\":\"", e.status);
        escape(&mut buf, e.route.as_bytes());
        optional(&mut buf, "upstream", e.upstream.map(str::as_bytes));
        if let Some(addr) = e.endpoint {
            let _ = write!(buf, "\",\"upstream_addr\":\"{addr}");
        }
        optional(&mut buf, "cache", e.cache);
        optional(&mut buf, "consumer", e.consumer.map(str::as_bytes));
        let header = |name: &[u8]| e.request.and_then(|r| r.header(name));
        optional(&mut buf, "user_agent", header(b"user-agent"));
        optional(&mut buf, "referer", header(b"referer"));
        if let Some((suite, resumed)) = e.tls {
            let cipher = config::CIPHER_SUITES[suite];
            let protocol = config::suite_protocol(cipher);
            let _ =
                write!(buf, "\",\"tls_protocol\":\"{protocol}\",\"tls_cipher\":\"{cipher}\",\"tls_resumed\":{resumed}");
        } else {
            buf.push(b'"');
        }
        if let Some(t) = e.upstream_time {
            let _ = write!(buf, ",\"upstream_ms\":{:.3}", t.as_secs_f64() * 1e3);
        }
        let _ = writeln!(buf, ",\"bytes_sent\":{},\"duration_ms\":{:.3}}}", e.sent, e.took.as_secs_f64() * 1e3);
        if buf.len() >= FLUSH_AT {
            drop(buf);
            self.flush();
        }
    }

    /// Writes what is buffered. A failed write is reported and the lines dropped: the
    /// gateway keeps serving.
    pub(crate) fn flush(&self) {
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() {
            return;
        }
        if let Err(e) = self.sink.write(&buf) {
            log::warn!("access log: {e}; {} bytes dropped", buf.len());
        }
        buf.clear();
    }

    /// RFC 3339 UTC with milliseconds; the date and time of day are formatted once a second.
    fn timestamp(&self, buf: &mut Vec<u8>) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = now.as_secs();
        let mut second = self.second.borrow_mut();
        if second.0 != secs || second.1.is_empty() {
            *second = (secs, civil(secs));
        }
        buf.extend_from_slice(second.1.as_bytes());
        let _ = write!(buf, ".{:03}Z", now.subsec_millis());
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time (the days-to-civil algorithm of Howard Hinnant's
/// date library, proleptic Gregorian calendar).
fn civil(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Ends the string before it and appends `,"key":"value` (the value escaped), leaving the
/// string open as every member of the line before `status` and after `route` does.
fn text(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    buf.extend_from_slice(b"\",\"");
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(b"\":\"");
    escape(buf, value);
}

/// Appends `s` as the inside of a JSON string: `"` and `\` escaped, bytes outside printable
/// ASCII as `\u00XX` (a request's bytes need not be UTF-8).
fn escape(buf: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        match b {
            b'"' | b'\\' => buf.extend_from_slice(&[b'\\', b]),
            0x20..=0x7e => buf.push(b),
            _ => {
                let _ = write!(buf, "\\u{b:04x}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), "1970-01-01T00:00:00");
        assert_eq!(civil(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(civil(1_795_528_800), "2026-11-24T14:00:00");
        assert_eq!(civil(4_102_444_799), "2099-12-31T23:59:59");
    }

    #[test]
    fn escaping() {
        let mut buf = Vec::new();
        escape(&mut buf, b"/a\"b\\c\x01\xff");
        assert_eq!(buf, b"/a\\\"b\\\\c\\u0001\\u00ff");
    }
}
