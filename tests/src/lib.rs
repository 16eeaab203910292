//! Test support for coregate's end-to-end tests: an in-process gateway on 127.0.0.1:0,
//! scripted upstreams on plain threads, and a raw HTTP/1.1 client. Everything here is
//! independent of the engine's internals: bytes go through real sockets.
//!
//! Parsing here is deliberately simple and separate from `proto-http`, so that a bug in
//! the gateway's parser cannot hide itself in the tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use config::Config;
use engine::Server;

pub mod tls;

/// How long a test client or upstream waits on a socket before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a test body once per driver: `both_drivers!(name, |io| { ... })`.
#[macro_export]
macro_rules! both_drivers {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn io_uring() {
                ($body)("io_uring")
            }
            #[test]
            fn epoll() {
                ($body)("epoll")
            }
        }
    };
}

/// A gateway running in this process. Dropping it drains and joins the workers.
pub struct Gateway {
    server: Option<Server>,
    pub addr: SocketAddr,
    /// The `[server]` section it started with, for [`Gateway::reload_extra`].
    server_section: String,
}

/// The value of one series (`name{labels}`, or a bare name) in a `/metrics` text: the
/// test fails, showing the text, when the series is missing.
pub fn metric(metrics: &str, series: &str) -> u64 {
    let line = metrics
        .lines()
        .find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))
        .unwrap_or_else(|| panic!("{series} in\n{metrics}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

impl Gateway {
    /// Starts a gateway: `extra` is TOML appended after a `[server]` section that listens on
    /// 127.0.0.1:0 with `io` and 2 workers; it holds upstreams, routes, timeouts, limits.
    pub fn start(io: &str, extra: &str) -> Gateway {
        Self::start_with_workers(io, 2, extra)
    }

    /// As [`Gateway::start`] with `workers` workers.
    pub fn start_with_workers(io: &str, workers: usize, extra: &str) -> Gateway {
        Self::start_with(io, workers, "", extra)
    }

    /// As [`Gateway::start`] with `workers` workers and more `[server]` keys (TOML lines).
    pub fn start_with(io: &str, workers: usize, server_extra: &str, extra: &str) -> Gateway {
        let server_section = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = {workers}\nio = \"{io}\"\npin_cores = false\n{server_extra}\n"
        );
        let server = Server::start(test_config(&server_section, extra)).expect("gateway starts");
        let addr = server.local_addrs()[0];
        Gateway { server: Some(server), addr, server_section }
    }

    /// One upstream named "api" at `upstream` with a catch-all route, plus `extra`.
    pub fn proxy_to(io: &str, upstream: SocketAddr, extra: &str) -> Gateway {
        Self::start(
            io,
            &format!("{extra}\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{upstream}\"]\n\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n"),
        )
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// [`Server::reload`] with `cfg`.
    pub fn reload(&mut self, cfg: Config) -> Result<(), String> {
        self.server.as_mut().expect("running").reload(cfg).map_err(|e| e.to_string())
    }

    /// Reloads with the `[server]` section it started with and `extra` after it (as
    /// [`Gateway::start_with`]'s).
    pub fn reload_extra(&mut self, extra: &str) -> Result<(), String> {
        self.reload(test_config(&self.server_section, extra))
    }

    /// [`Server::resolve_again`] with `resolve`: whether it reloaded, and the names that
    /// failed.
    pub fn resolve_again(&mut self, resolve: config::Resolver<'_>) -> (bool, Vec<String>) {
        self.server.as_mut().expect("running").resolve_again(resolve).expect("the reload starts")
    }

    /// [`Server::refresh_jwks`]: whether the key set changed (and the gateway reloaded).
    pub fn refresh_jwks(&mut self) -> Result<bool, String> {
        self.server.as_mut().expect("running").refresh_jwks().map_err(|e| e.to_string())
    }

    /// [`Server::jwks_interval`]: how soon the key set is fetched again.
    pub fn jwks_interval(&self) -> Option<std::time::Duration> {
        self.server.as_ref().expect("running").jwks_interval()
    }

    /// [`Server::jwks_wanted`]: whether a worker asked for the key set again (the message
    /// is taken).
    pub fn jwks_wanted(&self) -> bool {
        self.server.as_ref().expect("running").jwks_wanted().try_recv().is_ok()
    }

    /// [`Server::refresh_jwks_for_unknown_key`] as if `after` had passed since now.
    pub fn refresh_jwks_for_unknown_key(&mut self, after: std::time::Duration) -> Result<bool, String> {
        let now = std::time::Instant::now() + after;
        self.server.as_mut().expect("running").refresh_jwks_for_unknown_key(now).map_err(|e| e.to_string())
    }

    /// `method path` to the admin listener: the status and body of its answer.
    pub fn admin(&self, method: &str, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.admin_addr()).unwrap();
        s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out.get(9..12).and_then(|s| s.parse().ok()).expect("a status line");
        (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
    }

    /// The admin listener's address (`admin.listen`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.server.as_ref().expect("running").admin_addr().expect("an admin listener")
    }

    /// The `i`th address bound: `server.listen`'s first, then `tls.listen`'s.
    pub fn addr_at(&self, i: usize) -> SocketAddr {
        self.server.as_ref().expect("running").local_addrs()[i]
    }

    /// Starts the drain and returns the server so the test can join it.
    pub fn shutdown(mut self) -> Server {
        let mut server = self.server.take().expect("running");
        server.shutdown();
        server
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.shutdown();
            s.join();
        }
    }
}

fn test_config(server_section: &str, extra: &str) -> Config {
    let text = format!("{server_section}{extra}");
    Config::parse(&text).unwrap_or_else(|e| panic!("bad test config:\n{e}\n{text}"))
}

/// A parsed HTTP/1.1 message as seen by a test (response on the client side, request on
/// the upstream side).
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// Request line or status line.
    pub start: String,
    /// Field names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body arrived chunked.
    pub chunked: bool,
}

impl Message {
    pub fn status(&self) -> u16 {
        self.start.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What kind of message is being read, for body framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Request,
    /// A response to a request with this method (HEAD has no body).
    Response {
        head_request: bool,
    },
}

/// Reads one message head and its body from `r`. `None` on a clean EOF before any byte.
pub fn read_message(r: &mut impl BufRead, kind: Framing) -> std::io::Result<Option<Message>> {
    let mut m = Message::default();
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    m.start = line.trim_end().to_string();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').unwrap_or((l, ""));
        m.headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
    }
    let status = m.status();
    let bodiless = match kind {
        Framing::Request => false,
        Framing::Response { head_request } => head_request || status < 200 || status == 204 || status == 304,
    };
    if bodiless {
        return Ok(Some(m));
    }
    if m.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        m.chunked = true;
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim_end().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                loop {
                    line.clear();
                    r.read_line(&mut line)?;
                    if line == "\r\n" || line.is_empty() {
                        return Ok(Some(m));
                    }
                }
            }
            let start = m.body.len();
            m.body.resize(start + size, 0);
            r.read_exact(&mut m.body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
            assert_eq!(&crlf, b"\r\n", "chunk data not followed by CRLF");
        }
    } else if let Some(len) = m.header("content-length") {
        let len: usize = len.parse().map_err(|_| std::io::Error::other("bad content-length"))?;
        m.body.resize(len, 0);
        r.read_exact(&mut m.body)?;
    } else if kind != Framing::Request {
        r.read_to_end(&mut m.body)?;
    }
    Ok(Some(m))
}

/// Reads and discards lines up to and including the empty line that ends a head.
pub fn skip_head(r: &mut impl BufRead) {
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("read a head line");
        if line == "\r\n" || line.is_empty() {
            return;
        }
    }
}

/// A raw HTTP/1.1 client over one TCP connection.
pub struct Client {
    pub reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to gateway");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Client { reader: BufReader::new(stream.try_clone().unwrap()), stream }
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).expect("write to gateway");
    }

    pub fn response(&mut self) -> Message {
        self.response_to(false)
    }

    pub fn response_to(&mut self, head_request: bool) -> Message {
        read_message(&mut self.reader, Framing::Response { head_request })
            .expect("read response")
            .expect("a response before EOF")
    }

    /// Sends one request and reads its response.
    pub fn request(&mut self, raw: impl AsRef<[u8]>) -> Message {
        self.send(raw);
        self.response()
    }

    /// True when the gateway closed the connection (EOF with nothing more to read).
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(self.reader.read_to_end(&mut rest), Ok(0))
    }
}

/// One connection as the upstream sees it.
pub struct UpConn {
    pub reader: BufReader<TcpStream>,
    pub stream: TcpStream,
    /// The connection's sequence number at this upstream (0-based).
    pub index: usize,
}

impl UpConn {
    pub fn read_request(&mut self) -> Option<Message> {
        read_message(&mut self.reader, Framing::Request).ok().flatten()
    }

    pub fn write(&mut self, bytes: impl AsRef<[u8]>) -> bool {
        self.stream.write_all(bytes.as_ref()).is_ok()
    }
}

/// An upstream on 127.0.0.1:0 that runs `handler` on a thread per accepted connection.
pub struct Upstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn start(handler: impl Fn(UpConn) + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let handler = Arc::new(handler);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let index = count.fetch_add(1, Ordering::SeqCst);
                stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let handler = handler.clone();
                thread::spawn(move || {
                    let reader = BufReader::new(stream.try_clone().unwrap());
                    handler(UpConn { reader, stream, index });
                });
            }
        });
        Upstream { addr, connections }
    }

    /// An upstream that answers every request with its method, path, body and headers:
    /// status 200, body = `method path\n` + request body, and the request headers echoed as
    /// `x-echo-<name>` fields.
    pub fn echo() -> Upstream {
        Upstream::start(|mut c| {
            while let Some(req) = c.read_request() {
                if !c.write(echo_response(&req)) {
                    return;
                }
            }
        })
    }

    /// An upstream whose every answer is 200 with `name` as the body: which one served a
    /// request, for balancing and splitting tests.
    pub fn named(name: &'static str) -> Upstream {
        Upstream::start(move |mut c| {
            while c.read_request().is_some() {
                if !c.write(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}", name.len())) {
                    return;
                }
            }
        })
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// `body` in the chunked coding (RFC 9112 7.1), `piece` bytes per chunk, ending with the
/// last chunk and `trailer` (field lines, each ending in CRLF; empty for none).
pub fn chunked(body: &[u8], piece: usize, trailer: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / piece * 8 + 16);
    for part in body.chunks(piece) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("0\r\n{trailer}\r\n").as_bytes());
    out
}

/// Ends a response head in `out` with `content-length` for `body`, then the body unless
/// `req` is a HEAD (RFC 9110 9.3.2: the same fields, no content).
pub fn with_length(out: &mut Vec<u8>, body: &[u8], req: &Message) {
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    if !req.start.starts_with("HEAD ") {
        out.extend_from_slice(body);
    }
}

/// The response [`Upstream::echo`] sends for `req`.
pub fn echo_response(req: &Message) -> Vec<u8> {
    let mut body = format!("{}\n", req.start.rsplit_once(' ').map(|(a, _)| a).unwrap_or(&req.start)).into_bytes();
    body.extend_from_slice(&req.body);
    let mut out = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n", body.len());
    for (n, v) in &req.headers {
        out.push_str(&format!("x-echo-{n}: {v}\r\n"));
    }
    out.push_str(&format!("x-echo-chunked: {}\r\n\r\n", req.chunked));
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    out
}

/// An endpoint that counts requests (health checks apart) and answers them 503 while `sick`
/// is set, 200 otherwise; `GET /healthz` says the same.
pub struct Endpoint {
    pub up: Upstream,
    /// Requests other than health checks.
    pub requests: Arc<AtomicUsize>,
    /// `GET /healthz` requests.
    pub checks: Arc<AtomicUsize>,
    pub sick: Arc<AtomicBool>,
}

pub fn endpoint(sick: bool) -> Endpoint {
    let (requests, checks, sick) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(sick)));
    let (r, c, s) = (requests.clone(), checks.clone(), sick.clone());
    let up = Upstream::start(move |mut conn| {
        while let Some(req) = conn.read_request() {
            let counter = if req.start.starts_with("GET /healthz ") { &c } else { &r };
            counter.fetch_add(1, Ordering::SeqCst);
            let status = if s.load(Ordering::SeqCst) { "503 Service Unavailable" } else { "200 OK" };
            if !conn.write(format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\nok")) {
                return;
            }
        }
    });
    Endpoint { up, requests, checks, sick }
}

/// A gateway with one worker (circuits and round robin are per worker, so a test can tell
/// which endpoint gets which request) in front of `endpoints` as upstream "api" with a
/// catch-all route, with `upstream_extra` TOML lines in the upstream's table.
pub fn gateway_to(io: &str, endpoints: &[&Endpoint], upstream_extra: &str) -> Gateway {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{}\"", e.up.addr)).collect();
    Gateway::start_with_workers(
        io,
        1,
        &format!(
            "[[upstreams]]\nname = \"api\"\nendpoints = [{}]\n{upstream_extra}\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n",
            list.join(", ")
        ),
    )
}

/// Runs `step` until `done` holds, for at most 10 s.
pub fn until(mut done: impl FnMut() -> bool, mut step: impl FnMut()) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "condition not reached in 10 s");
        step();
    }
}

/// [`until`] `f` holds, looking again every 5 ms: for what a worker does just after its
/// answer (a metric counted, a log line written).
pub fn eventually(f: impl FnMut() -> bool) {
    until(f, || std::thread::sleep(Duration::from_millis(5)));
}

/// An address on 127.0.0.1 where nothing listens: a socket bound to it and never listening,
/// kept open for the rest of the test process (one descriptor), so that connections to it
/// are refused. Released at once instead, the port could be taken by a listener of a test
/// running alongside, and a connection meant to fail would reach it and hang (a mirror
/// test failed that way once under load).
pub fn dead_addr() -> SocketAddr {
    let (addr, held) = held_dead_addr();
    std::mem::forget(held);
    addr
}

/// As [`dead_addr`], with the socket that holds the port: dropping it frees the port for a
/// test that brings the address back to life.
pub fn held_dead_addr() -> (SocketAddr, socket2::Socket) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    (s.local_addr().unwrap().as_socket().unwrap(), s)
}
