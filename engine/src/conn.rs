//! A client connection: read request heads (with the header timeout for a head in
//! progress and the idle timeout between requests), hand each to the proxy, answer
//! malformed input with a small error response and close. Pipelined requests are served
//! in order from the bytes left in the buffer.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::net::TcpStream;
use proto_http::{downgrade_minor_version, normalize_request_path, parse_request_in, ParseError, RequestHead, Version};

use crate::error::{Error, Kind, Side};
use crate::io::Conn;
use crate::local;
use crate::proxy::{self, Next};
use crate::tls::Tls;
use crate::worker::Worker;

/// Initial read buffer of a client connection; heads larger than this grow it up to
/// `limits.max_head_bytes`.
///
/// 1 KiB (nginx's `client_header_buffer_size`) was measured: 500 connections that each made
/// one request within 100 ms and then went idle held 3.3-3.4 KiB each afterwards instead of
/// 5.4-5.7 (the allocator keeps the freed buffers' heap). Not taken: a head with a bearer JWT
/// and a few fields passes 1 KiB and would cost a second read on every request.
const CLIENT_BUF: usize = 4 * 1024;

/// How long a keep-alive connection keeps a read (and its buffer) posted before it parks:
/// the read is cancelled, the buffer freed, and the connection waits for readability with
/// no buffer at all. New connections start parked. Measured with coregate-bench (500 idle
/// connections): 7.35 KiB each with a posted read, see README for the parked figure.
///
/// The resident memory of connections that were used and then went idle follows this
/// window: the allocator keeps the heap that the hot connections' buffers needed at their
/// peak. 3,000 connections that each made one request within about a second, then idled:
/// 6.1 KiB each with 1 s, 1.5 KiB with an immediate park (nginx: 0.5). 100 ms still
/// covers a client's quick follow-up requests (a page's subresources, a retry) with the
/// cheaper hot read; back-to-back traffic never parks.
const PARK_AFTER: Duration = Duration::from_millis(100);

/// Serves one client connection until it closes; `tls`: it was accepted on a `[tls]`
/// listener, and its TLS state is made once its first bytes arrive (a silent connection
/// holds none); `proxied`: the listener's connections start with a PROXY protocol header.
pub(crate) async fn serve(w: Rc<Worker>, stream: TcpStream, mut peer: SocketAddr, tls: bool, proxied: bool) {
    let mut client = Conn::armed(stream, 0, w.timers.clone());
    if proxied {
        // Boxed: its state exists once per connection, not in every parked task.
        match Box::pin(proxy_header(&w, &mut client)).await {
            Ok(Some(source)) => peer = source,
            Ok(None) => {}
            Err(why) => {
                log::warn!("closing a connection from {peer}: {why}");
                return;
            }
        }
    }
    // Held while the connection lives (boxed: 8 bytes in every parked connection's task).
    let _slot = match (&w.per_ip, w.cfg.server.max_connections_per_ip) {
        (Some(table), Some(limit)) => {
            match table.enter(peer.ip(), limit) {
                Some(slot) => Some(Box::new(slot)),
                None => {
                    log::debug!("closing a connection from {peer}: {limit} open from its address (server.max_connections_per_ip)");
                    if let Some(stats) = &w.stats {
                        stats.refused_per_ip.add(1);
                    }
                    return;
                }
            }
        }
        _ => None,
    };
    let peer_text = peer.ip().to_string();
    let mut first = true;
    // One loop in this function rather than a nested `async fn`: each parked connection's
    // task is this future. 9,488 idle connections (coregate-bench --idle): 1.08 KiB each
    // with the nested function, 1.01 without (0.98 before TLS).
    loop {
        if client.buf.is_empty() && !wait_for_request(&w, &mut client, first).await {
            break;
        }
        if let Some(current) = w.tls.as_ref().filter(|_| tls && client.tls.is_none()) {
            match Tls::server(current.clone()) {
                Ok(mut state) => {
                    // Bytes read with a PROXY header are the handshake's first.
                    state.inbuf.extend_from_slice(&client.buf);
                    client.buf.clear();
                    client.tls = Some(state);
                }
                Err(e) => {
                    log::warn!("TLS connection from {peer} refused: {e}");
                    return;
                }
            }
        }
        // Counted as it starts, for `server.keepalive_requests` (`Worker::keeps`).
        client.exchanges = client.exchanges.saturating_add(1);
        // Out of line in the worker's arena: the state of reading and serving a request (a
        // few KiB) exists only while a request is in flight, and a parked connection's task
        // stays small. One block for both: a second cost about 60 instructions per request.
        let next = w.arena.run(|| one_request(&w, &mut client, peer, peer_text.as_bytes())).await;
        // The handshake belongs to the first request: finished once it was read. A refused
        // one has dropped the connection's TLS state (`Conn::refuse`).
        if let (true, true, Some(stats)) = (first, tls, &w.stats) {
            stats.tls_handshake(client.tls.as_deref().and_then(Tls::handshake_outcome));
        }
        first = false;
        if !next.keep_alive {
            break;
        }
    }
    if client.tls.is_some() {
        // RFC 8446 6.1: a TLS connection ends with close_notify, so that the client can tell
        // the end of a close-delimited response from a cut. Best effort; boxed, so that its
        // state is not part of every parked connection's task (1.11 -> 1.08 KiB each).
        let _ = Box::pin(client.tls_close_notify(w.timers.deadline(w.cfg.timeouts.client_send))).await;
    }
}

/// Reads the PROXY protocol header (`server.proxy_protocol`) a connection starts with,
/// within `timeouts.client_header`: the client's address, or None for the load balancer's
/// own connections (its health checks), whose peer counts. The bytes after the header stay
/// in the buffer for the request (or the TLS handshake). A connection without a valid
/// header is closed unanswered, as nginx and HAProxy do: its first bytes cannot be trusted
/// to be HTTP either.
async fn proxy_header(w: &Worker, client: &mut Conn) -> Result<Option<SocketAddr>, String> {
    use proto_http::proxy_protocol::{parse, ProxyError, V2_MAX};
    let deadline = w.timers.deadline(w.cfg.timeouts.client_header);
    loop {
        match parse(&client.buf) {
            Ok(Some(header)) => {
                bytes::Buf::advance(&mut client.buf, header.len);
                return Ok(header.source);
            }
            Ok(None) => {}
            Err(e @ ProxyError::NotProxy) => return Err(format!("{e} (server.proxy_protocol is on)")),
            Err(e) => return Err(e.to_string()),
        }
        match client.fill_until(V2_MAX, deadline).await {
            Ok(0) => return Err("closed before its PROXY protocol header ended".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("reading the PROXY protocol header: {e}")),
        }
    }
}

/// Reads one request head and serves it; malformed input is answered and closes.
/// With metrics or an access log, each answered request is counted and logged, its
/// duration taken from the first read of its head to its answer.
async fn one_request(w: &Worker, client: &mut Conn, peer: SocketAddr, peer_text: &[u8]) -> Next {
    let started = w.observed().then(Instant::now);
    let sent = client.sent;
    let req = match read_head(w, client).await {
        Ok(Some(req)) => req,
        Ok(None) => return Next::UNANSWERED,
        Err(e) => {
            let Some(status) = e.status() else { return Next::UNANSWERED };
            log::debug!("{status} for {peer}: {e}");
            let reply = local::Reply { keep_alive: false, version: Version::Http11, request_id: None };
            let next = local::send_error(w, client, status, e.context, &[], reply).await;
            if let Some(t0) = started {
                let outcome = proxy::Outcome { sent: client.sent - sent, ..Default::default() };
                let who = (peer_text, client.tls.as_deref());
                w.observe(None, &outcome, next.status, t0.elapsed(), who, proxy::Tags::default());
            }
            return next;
        }
    };
    let name = w.cfg.server.request_id.as_deref();
    let id = name.map(|name| w.ids.for_request(name, &req));
    let field = name.zip(id.as_ref()).map(|(name, id)| (name.as_bytes(), id.as_bytes()));
    // Behind trusted proxies the client may be another than the peer (`client_ip`).
    let mut text = [0u8; 46];
    let (from, from_text) = match w.cfg.server.trusted_proxies.as_slice() {
        [] => (peer, peer_text),
        trusted => match crate::client_ip::real_client(trusted, peer, &req) {
            c if c == peer => (peer, peer_text),
            c => (c, crate::client_ip::write_ip(&mut text, c.ip())),
        },
    };
    // Its span (`[tracing]`): the upstream gets its traceparent. Boxed, so that the
    // connection's state carries a pointer, not the context, when tracing is off.
    let trace = w.tracer.as_ref().map(|t| Box::new(t.start(&req)));
    let tags = proxy::Tags { request_id: field, traceparent: trace.as_ref().map(|t| &t.header[..]) };
    let (next, mut outcome) = proxy::handle(w, client, from, from_text, peer_text, &req, tags).await;
    if let Some(t0) = started {
        outcome.sent = client.sent - sent;
        w.observe(Some(&req), &outcome, next.status, t0.elapsed(), (from_text, client.tls.as_deref()), tags);
    }
    if let (Some(tracer), Some(cx)) = (&w.tracer, &trace) {
        let route = outcome.route.map(|r| w.cfg.routes[r].name.as_str());
        let upstream = outcome.upstream.map(|u| w.cfg.upstreams[u].name.as_str());
        tracer.end(cx, &req, route, upstream, next.status, from_text);
    }
    client.spare_headers = req.meta.headers;
    next
}

/// Waits for the first byte of the next request. Returns false when the connection should
/// end quietly: the client closed, the idle (or first-request) timeout passed, or the drain
/// began and the connection is idle.
///
/// A keep-alive connection reads straight into its buffer for [`PARK_AFTER`]; a new
/// connection, or one idle for longer, parks: no buffer, no read posted, only a readiness
/// poll and a coarse deadline in the worker's [`CoarseTimers`](crate::timers::CoarseTimers).
///
/// The drain (shutdown, or a reload retiring this configuration) closes parked keep-alive
/// connections at once: their clients retry an idempotent request whose connection closed
/// under it (RFC 9112 9.3.1). A connection within [`PARK_AFTER`] of its last response, whose
/// client may be sending the next request right now, keeps reading for the rest of that
/// window, and a request that comes is answered with `connection: close`: closing it at once
/// lost 647 requests of 1.37 million in 20 reloads under closed-loop load with 64
/// connections (coregate-load read errors), none this way. A new connection's first
/// request is served too (its client has no reason to expect a close; after a reload, these
/// are the connections the old configuration accepted until its accept was cancelled),
/// within `timeouts.client_header`.
async fn wait_for_request(w: &Worker, client: &mut Conn, first: bool) -> bool {
    if let Some(tls) = client.tls.as_deref() {
        // Pipelined bytes that TLS already read count as the next request's start.
        if tls.has_buffered() || tls.is_closed() {
            return true;
        }
    }
    let t = &w.cfg.timeouts;
    let limit = if first { t.client_header } else { t.client_idle };
    let deadline = w.timers.deadline(limit);
    if !first {
        match w.arena.run(|| hot_read(w, client, limit.min(PARK_AFTER))).await {
            Ok(Some(n)) => return n > 0,
            Ok(None) if limit > PARK_AFTER && !w.drain.is_draining() => {}
            _ => return false,
        }
    }
    // Parked: the connection gives up every buffer it holds. The reusable head buffer and
    // header spans are built again by the next request (two allocations after a pause,
    // none in steady state).
    client.buf = BytesMut::new();
    client.alt = BytesMut::new();
    client.spare = Vec::new();
    client.spare_headers = Vec::new();
    if let Some(tls) = client.tls.as_deref_mut() {
        tls.shrink();
    }
    let drain = async {
        match first {
            true => std::future::pending().await,
            false => w.drain.wait().await,
        }
    };
    monoio::select! {
        biased;
        r = client.readable(true) => r.is_ok(),
        _ = drain => false,
        _ = w.timers.wait(deadline) => false,
    }
}

/// Reads into the buffer for at most `limit`. `Ok(Some(n))`: `n` bytes read (on a TLS
/// connection, 1: the socket became readable, and `read_head` reads); `Ok(None)`: nothing
/// came, and the connection may park (or close, in a drain) without losing a byte.
async fn hot_read(w: &Worker, client: &mut Conn, limit: Duration) -> io::Result<Option<usize>> {
    if client.tls.is_some() {
        // The next read (of ciphertext, in `read_head`) follows readability: the multishot
        // receive's wait on io_uring, a poll on epoll, either of which may be dropped
        // without losing a byte. `false`: an exact answer on epoll too, which would
        // otherwise report the socket readable after a short read.
        let deadline = w.timers.deadline(limit);
        return monoio::select! {
            biased;
            r = client.readable(false) => r.map(|()| Some(1)),
            _ = w.timers.wait(deadline) => Ok(None),
        };
    }
    if w.uring {
        return client.fill_cancellable(CLIENT_BUF, limit).await;
    }
    // On epoll a timed-out read is dropped: it had done nothing in the kernel.
    match client.fill(CLIENT_BUF, limit).await {
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(None),
        r => r.map(Some),
    }
}

/// Reads the rest of a request head that has started (or is about to, after a readiness
/// poll) within `timeouts.client_header`. `Ok(None)`: the client closed before sending
/// anything.
async fn read_head(w: &Worker, client: &mut Conn) -> Result<Option<RequestHead>, Error> {
    let deadline = w.timers.deadline(w.cfg.timeouts.client_header);
    loop {
        if !client.buf.is_empty() {
            let parsed = match parse_request_in(&client.buf, &w.cfg.limits.wire, &mut client.spare_headers) {
                Err(ParseError::Version) if downgrade_minor_version(&mut client.buf) => {
                    parse_request_in(&client.buf, &w.cfg.limits.wire, &mut client.spare_headers)
                }
                other => other,
            };
            if let Some(mut meta) = parsed.map_err(|e| Error::malformed(Side::Client, e))? {
                if let Some(rules) = w.cfg.server.paths {
                    normalize_request_path(&mut client.buf, &mut meta, rules)
                        .map_err(|e| Error::malformed(Side::Client, e))?;
                }
                let bytes = client.buf.split_to(meta.head_len).freeze();
                return Ok(Some(RequestHead::new(bytes, meta)));
            }
        }
        match client.fill_until(CLIENT_BUF, deadline).await {
            Ok(0) if client.buf.is_empty() => return Ok(None),
            Ok(0) => return Err(Error::new(Kind::Closed, Side::Client, "closed in the middle of a request head")),
            Ok(_) => {}
            Err(e) => return Err(Error::io(Side::Client, "reading the request head", e)),
        }
    }
}
