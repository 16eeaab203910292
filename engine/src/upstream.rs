//! Upstream connections: one from the pool or a new one for an exchange (balancing,
//! health, connect and TLS handshake, failing over to the next endpoint), reading a
//! response head from it, and returning it to the pool after its response. What is sent
//! and received over the connection is `proxy`'s; the idle connections are `pool`'s.

use std::time::Duration;

use monoio::net::TcpStream;
use proto_http::{parse_response_in, ResponseHead};

use crate::error::{Error, Kind, Side};
use crate::io::{timed, Conn};
use crate::worker::Worker;

/// The read buffer a new upstream connection starts with, plain or TLS.
const UP_BUF: usize = 8 * 1024;

/// Returns an upstream connection to the pool after its response, when it can carry
/// another, or hands it to the next request pipelined on it (`pipeline`). Unpipelined,
/// bytes beyond the end of the response (or a body on a bodiless response) mean the
/// upstream and coregate disagree about framing, and that connection is never reused.
pub(crate) fn pool_back(
    w: &Worker,
    upstream: usize,
    endpoint: usize,
    mut up: Box<Conn>,
    resp_meta: proto_http::ResponseMeta,
) {
    if !resp_meta.keep_alive() {
        return;
    }
    up.spare_headers = resp_meta.headers;
    // The next pipelined request's response (in `buf`, or to come) is its own to read.
    let Some(up) = crate::pipeline::hand_on(up) else { return };
    if up.buf.is_empty() {
        let keep = crate::pool::Keep::of(&w.cfg.upstreams[upstream]);
        w.pool.borrow_mut().put(upstream, endpoint, up, keep, w.timers.now());
    }
}

/// A new upstream connection: a plain socket, or one whose TLS handshake is done.
enum Connected {
    Plain(TcpStream),
    Tls(Box<Conn>),
}

/// Connects to `addr`, and runs the TLS handshake for an HTTPS upstream (a failed handshake
/// is a failed connect, logged with rustls' reason); the caller bounds both with `timeout`,
/// the upstream's connect timeout. The plain path's output stays a socket: returning the
/// whole `Conn` through this future made the pooled path copy it 4 more times per request
/// (+58 instructions, callgrind), and so did a second await in `acquire`.
async fn connect(
    w: &Worker,
    addr: std::net::SocketAddr,
    tls: Option<(&crate::upstream_tls::UpstreamTls, Option<&str>)>,
    timeout: Duration,
) -> std::io::Result<Connected> {
    let deadline = w.timers.deadline(timeout);
    let stream = TcpStream::connect_addr(addr).await?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => Ok(Connected::Plain(stream)),
        Some((tls, host)) => handshake(stream, w, tls, addr, host, deadline).await.map(Connected::Tls),
    }
}

/// The TLS handshake of [`connect`], boxed as a `dyn` future and out of line, as the TLS
/// reads and writes are (`tls::Boxed`), so that its state and code stay out of every plain
/// request's `exchange`.
#[inline(never)]
fn handshake<'a>(
    stream: TcpStream,
    w: &'a Worker,
    tls: &'a crate::upstream_tls::UpstreamTls,
    addr: std::net::SocketAddr,
    host: Option<&'a str>,
    deadline: std::time::Instant,
) -> crate::tls::Boxed<'a, Box<Conn>> {
    Box::pin(async move {
        let mut conn = Box::new(Conn::armed(stream, UP_BUF, w.timers.clone()));
        conn.tls_connect(tls, addr, host, deadline).await.inspect_err(|e| {
            log::warn!("TLS handshake with upstream {addr} failed: {e}");
        })?;
        Ok(conn)
    })
}

/// Which call site instantiates [`acquire`] and [`read_response_head`]: the original
/// exchange, or one no client waits for ([`aside`]: a mirrored copy, a cache refresh). Nothing but a type: one instantiation per call
/// site lets each future be inlined into its caller's, as it was before mirroring shared
/// them; one shared instantiation cost the plain path 182 instructions per request
/// (10,887 -> 11,069, callgrind: two futures of their own and the copies between them).
pub(crate) struct Original;
pub(crate) struct Mirrored;

/// Reads a response head from `up`; `got_bytes` turns true once any byte of it arrived.
#[allow(clippy::extra_unused_type_parameters)] // `Site`: see `Original`
pub(crate) async fn read_response_head<Site>(
    w: &Worker,
    up: &mut Conn,
    got_bytes: &mut bool,
    head_request: bool,
    timeout: Duration,
) -> Result<ResponseHead, Error> {
    let deadline = w.timers.deadline(timeout);
    loop {
        if !up.buf.is_empty() {
            *got_bytes = true;
            if let Some(meta) = parse_response_in(&up.buf, &w.cfg.limits.wire, head_request, &mut up.spare_headers)
                .map_err(|e| Error::malformed(Side::Upstream, e))?
            {
                let bytes = up.buf.split_to(meta.head_len).freeze();
                return Ok(ResponseHead::new(bytes, meta));
            }
        }
        match up.fill_until(crate::pool::HEAD_ROOM, deadline).await {
            Ok(0) if *got_bytes => {
                return Err(Error::new(Kind::Closed, Side::Upstream, "closed in the middle of the response head"))
            }
            Ok(0) => return Err(Error::new(Kind::Closed, Side::Upstream, "closed without a response")),
            Ok(_) => {}
            Err(e) => return Err(Error::io(Side::Upstream, "waiting for the response head", e)),
        }
    }
}

/// A pooled connection to the endpoint the upstream's balancing chooses (`balance`; `key`:
/// the request's hash key), or a new one; on connect failure the other endpoints are tried
/// in turn. Endpoints out of service (ejected by this worker's circuits or failed by the
/// active checks, `health`) are skipped, unless all are: then every one is tried, as
/// Envoy's panic mode does, since a verdict may be stale and refusing all traffic helps
/// nobody. A retry passes the endpoint it comes from as `avoid`.
/// Returns (connection, endpoint, reused).
#[allow(clippy::extra_unused_type_parameters)] // `Site`: see `Original`
pub(crate) async fn acquire<Site>(
    w: &Worker,
    upstream: usize,
    fresh: bool,
    avoid: Option<usize>,
    key: Option<u64>,
) -> Result<(Box<Conn>, usize, bool), Error> {
    let up = &w.cfg.upstreams[upstream];
    let n = up.endpoints.len();
    let now = w.timers.now();
    if up.slow_start.is_some() {
        w.balance.ramp(upstream, up, now, |e| w.health.available(upstream, e, now));
    }
    let usable = |e: usize| avoid != Some(e) && w.health.available(upstream, e, now);
    let start = w.balance.first(upstream, up, key, avoid.is_some(), usable);
    let mut last = Error::new(Kind::Connect, Side::Upstream, "no endpoint");
    let mut tried = false;
    for all in [false, true] {
        if all && tried {
            break;
        }
        for k in 0..n {
            let endpoint = (start + k) % n;
            // A single endpoint would be tried whatever its health says (the panic rule):
            // its health is not looked at. `avoid`: the one a retry comes from.
            if !all && n > 1 && !usable(endpoint) {
                continue;
            }
            tried = true;
            if !fresh {
                if let Some(conn) = w.pool.borrow_mut().take(upstream, endpoint, now, up.idle_timeout) {
                    return Ok((conn, endpoint, true));
                }
            }
            let addr = up.endpoints[endpoint];
            let tls = w.upstream_tls[upstream].as_ref();
            let tls_to = tls.map(|t| (t, up.endpoint_names[endpoint].as_deref()));
            match timed(&w.timers, up.connect_timeout, connect(w, addr, tls_to, up.connect_timeout)).await {
                Ok(Connected::Plain(stream)) => {
                    return Ok((Box::new(Conn::armed(stream, UP_BUF, w.timers.clone())), endpoint, false));
                }
                Ok(Connected::Tls(conn)) => return Ok((conn, endpoint, false)),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    let what = if tls.is_some() {
                        "connecting to the upstream (TLS) timed out"
                    } else {
                        "connecting to the upstream timed out"
                    };
                    last = Error::new(Kind::ConnectTimeout, Side::Upstream, what);
                }
                Err(e) => {
                    log::debug!("connect to {addr} failed: {e}");
                    let what =
                        if tls.is_some() { "connecting to the upstream (TLS)" } else { "connecting to the upstream" };
                    last = Error::io(Side::Upstream, what, e);
                    last.kind = Kind::Connect;
                }
            }
            w.health.failed(upstream, endpoint, &up.outlier, w.timers.now());
        }
    }
    Err(last)
}

/// An exchange whose answer no client gets as it is (a mirrored copy, a background cache
/// refresh, an authorization check): sends `head` to `upstream` on a pooled connection,
/// reads past 1xx to the answer's head (a 101 was not asked for: an error), hands head and
/// connection to `body`, which reads the body and returns the head's meta with what it
/// made of the answer, then counts the endpoint's health and pools the connection.
/// `timeout` bounds each read.
pub(crate) async fn aside<T>(
    w: &Worker,
    upstream: usize,
    head: Vec<u8>,
    head_request: bool,
    timeout: Duration,
    body: impl AsyncFnOnce(&mut Conn, ResponseHead) -> Result<(proto_http::ResponseMeta, T), Error>,
) -> Result<T, Error> {
    let up_cfg = &w.cfg.upstreams[upstream];
    let (mut up, endpoint, _) = acquire::<Mirrored>(w, upstream, false, None, None).await?;
    let answer = async {
        up.write(head, w.cfg.timeouts.upstream_send)
            .await
            .map_err(|e| Error::io(Side::Upstream, "writing a request of coregate's own", e))?;
        let mut got_bytes = false;
        let resp = loop {
            let resp = read_response_head::<Mirrored>(w, &mut up, &mut got_bytes, head_request, timeout).await?;
            if !resp.meta.is_informational() || resp.meta.status == 101 {
                break resp;
            }
        };
        if resp.meta.status == 101 {
            return Err(Error::new(Kind::UnexpectedUpgrade, Side::Upstream, "101 to a request of coregate's own"));
        }
        body(&mut up, resp).await
    };
    match answer.await {
        Ok((meta, made)) => {
            w.health.succeeded(upstream, endpoint);
            pool_back(w, upstream, endpoint, up, meta);
            Ok(made)
        }
        Err(e) => {
            w.health.failed(upstream, endpoint, &up_cfg.outlier, w.timers.now());
            Err(e)
        }
    }
}
