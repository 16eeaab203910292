//! One request/response exchange through the proxy: route, run the route's policies (in
//! `policy`), pick a pooled or new upstream connection, stream the request, relay 1xx,
//! stream the response, and decide what happens to both connections afterwards. Errors
//! become a status code here, via [`Error::status`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use config::{Action, AuthKind};
use monoio::net::TcpStream;
use proto_http::{parse_response_in, BodyFraming, Method, RequestHead, ResponseBody, ResponseHead, Version};

use crate::auth::KeySource;
use crate::body::{coalesce_buffered, copy_chunked, copy_length, copy_until_close, precheck_chunked, ChunkedOut, Leg};
use crate::error::{Error, Kind, Side};
use crate::forward::{self, ClientFraming};
use crate::io::{timed, Conn};
use crate::policy;
use crate::worker::Worker;

/// What the client connection does after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    KeepAlive,
    Close,
}

/// Progress of one exchange, consulted when it fails.
#[derive(Debug, Default)]
struct Progress {
    /// The request body was read completely from the client.
    body_done: bool,
    /// Bytes of a response head were received from the upstream.
    response_bytes: bool,
    /// A response head was written to the client: no error response is possible any more.
    response_started: bool,
}

/// The request as it goes upstream: the head (with any buffered Content-Length body bytes
/// appended), the body bytes still to stream, and whether to answer 100-continue first.
struct Outgoing {
    /// Empty while a write holds it (or after a failed one).
    head: Vec<u8>,
    body_left: u64,
    send_continue: bool,
    /// The route's request body limit.
    max_body: u64,
}

/// True when the request has no body bytes to read.
fn no_body(b: BodyFraming) -> bool {
    matches!(b, BodyFraming::Empty | BodyFraming::Length(0))
}

/// Proxies one request; on failure answers with an error response where one is possible.
pub(crate) async fn handle(
    w: &Worker,
    client: &mut Conn,
    peer: SocketAddr,
    peer_text: &[u8],
    req: &RequestHead,
) -> Next {
    let mut progress = Progress { body_done: no_body(req.meta.body), ..Progress::default() };
    let err = match exchange(w, client, peer, peer_text, req, &mut progress).await {
        Ok(next) => return next,
        Err(e) => e,
    };
    let status = match err.status() {
        Some(s) if !progress.response_started => s,
        _ => {
            log::debug!("closing client {peer}: {err}");
            return Next::Close;
        }
    };
    if err.side == Side::Upstream {
        log::warn!("{status} for {peer}: {err}");
    } else {
        log::debug!("{status} for {peer}: {err}");
    }
    // A refused request closes its connection; a 404 or an upstream failure after the whole
    // request was read leaves it usable.
    let refused = err.side == Side::Client && err.kind != Kind::NoRoute;
    let keep = progress.body_done && req.meta.keep_alive() && !refused;
    send_error(w, client, status, err.context, keep, req.meta.version).await
}

/// Writes a generated error response; keeps the connection only if `keep_alive` allows and
/// the worker is not draining.
pub(crate) async fn send_error(
    w: &Worker,
    client: &mut Conn,
    status: u16,
    detail: &str,
    keep_alive: bool,
    version: Version,
) -> Next {
    let keep = keep_alive && !w.drain.is_draining();
    let resp = forward::error_response(status, detail, keep, version);
    match client.write(resp, w.cfg.timeouts.client_send).await {
        Ok(_) if keep => Next::KeepAlive,
        _ => Next::Close,
    }
}

async fn exchange(
    w: &Worker,
    client: &mut Conn,
    peer: SocketAddr,
    peer_text: &[u8],
    req: &RequestHead,
    p: &mut Progress,
) -> Result<Next, Error> {
    let meta = &req.meta;
    if meta.method == Method::Connect {
        return Err(Error::new(Kind::MethodNotImplemented, Side::Client, "CONNECT is not supported"));
    }
    let cfg = &w.cfg;
    let accept = |i: usize| policy::conditions_hold(&cfg.routes[i], req);
    let route_idx = w.routes.find(req.host(), req.path_only(), &cfg.routes, &accept).ok_or(Error::new(
        Kind::NoRoute,
        Side::Client,
        "no route",
    ))?;
    let route = &cfg.routes[route_idx];
    let keep_after_refusal = no_body(meta.body) && meta.keep_alive();

    // Policies, in order: CORS preflight, IP access rules, authentication, rate limits;
    // each may answer on its own.
    if let Some(next) = policy::preflight(w, client, route, req, keep_after_refusal).await {
        return Ok(next);
    }
    if let Err(refusal) = policy::check_access(route, peer) {
        return Ok(refusal.send(w, client, keep_after_refusal, meta.version).await);
    }
    let identity = match policy::authenticate(w, route, req) {
        Ok(identity) => identity,
        Err(refusal) => return Ok(refusal.send(w, client, keep_after_refusal, meta.version).await),
    };
    if let Err(refusal) = policy::rate_limit(w, route_idx, route, req, peer, &identity).await {
        return Ok(refusal.send(w, client, keep_after_refusal, meta.version).await);
    }
    let upstream = match &route.action {
        Action::Proxy { upstream } => *upstream,
        action => return Ok(policy::respond(w, client, action, keep_after_refusal, meta.version).await),
    };

    let max_body = route.max_body_bytes.unwrap_or(cfg.limits.max_body_bytes);
    if let BodyFraming::Length(n) = meta.body {
        if n > max_body {
            return Err(Error::new(Kind::BodyTooLarge, Side::Client, "request body over the size limit"));
        }
    }
    if meta.body == BodyFraming::Chunked {
        precheck_chunked(&client.buf, &cfg.limits.wire, max_body, Side::Client)?;
    }
    let up_cfg = &cfg.upstreams[upstream];
    let response_timeout = route.response_timeout.unwrap_or(up_cfg.response_timeout);
    let captures = route.path.captures(req.path_only()).unwrap_or_default();
    let target = policy::upstream_target(route, req, identity.key_source, &cfg.api_key, &captures);
    let consumer_name = identity.consumer.map(|c| cfg.consumers[c].name.as_bytes());
    let edits = forward::Edits {
        target: target.as_deref(),
        request_ops: &route.request_headers,
        response_ops: &route.response_headers,
        drop: [
            (identity.key_source == Some(KeySource::Header)).then_some(cfg.api_key.header.as_bytes()),
            (!cfg.consumers.is_empty()).then_some(cfg.api_key.consumer_header.as_bytes()),
        ],
        consumer: consumer_name.map(|n| (cfg.api_key.consumer_header.as_bytes(), n)),
        identity_name: identity.name(cfg),
        claim_fields: &identity.claim_fields,
        claim_headers: if route.auth == AuthKind::Jwt { &cfg.jwt.claims_to_headers } else { &[] },
        captures: &captures,
        claims: identity.claims.as_ref(),
        client_ip: peer_text,
        cors: policy::cors_origin(route, req),
    };
    // The connection's spare buffer carries the request head, then the response head, and
    // goes back to the connection: no head allocation per request once it has grown.
    let mut head = std::mem::take(&mut client.spare);
    let build_head = |head: &mut Vec<u8>| forward::request_head(head, req, &edits, || up_cfg.endpoints[0].to_string());
    build_head(&mut head);
    // RFC 9110 10.1.1: coregate answers 100-continue itself, unless the body is already here.
    let send_continue = meta.expect_continue
        && meta.version == Version::Http11
        && meta.body != BodyFraming::Empty
        && client.buf.is_empty();
    let body_left = match meta.body {
        BodyFraming::Length(n) => n - coalesce_buffered(client, n, &mut head),
        _ => 0,
    };
    let mut out = Outgoing { head, body_left, send_continue, max_body };

    // A pooled connection may have been closed by the upstream just now. When nothing of the
    // response arrived and the request can be repeated (idempotent, no body: RFC 9112 9.3.1),
    // try once more on a new connection.
    let mut fresh = false;
    let (mut up, endpoint, resp) = loop {
        let (mut up, endpoint, reused) = acquire(w, upstream, fresh).await?;
        match send_and_receive(w, client, &mut up, &mut out, req, response_timeout, p).await {
            Ok(resp) => break (up, endpoint, resp),
            Err(e)
                if reused
                    && !p.response_bytes
                    && meta.body == BodyFraming::Empty
                    && meta.method.is_idempotent()
                    && e.side == Side::Upstream
                    && matches!(e.kind, Kind::Io | Kind::Closed) =>
            {
                log::debug!("pooled connection failed ({e}); retrying on a new one");
                if out.head.is_empty() {
                    // The failed write kept the buffer; the head (bodiless here) is rebuilt.
                    build_head(&mut out.head);
                }
                fresh = true;
            }
            Err(e) => return Err(e),
        }
    };

    let http10 = meta.version == Version::Http10;
    let framing = match resp.meta.body {
        ResponseBody::None => ClientFraming::None,
        ResponseBody::Length(n) => ClientFraming::Length(n),
        ResponseBody::Chunked if !http10 => ClientFraming::Chunked,
        ResponseBody::Chunked | ResponseBody::Close => ClientFraming::Close,
    };
    let keep = meta.keep_alive() && framing != ClientFraming::Close && !w.drain.is_draining();
    let mut head = std::mem::take(&mut out.head);
    forward::response_head(&mut head, &resp, framing, keep, http10, &edits);
    let body_left = match resp.meta.body {
        ResponseBody::Length(n) => n - coalesce_buffered(&mut up, n, &mut head),
        _ => 0,
    };
    p.response_started = true;
    client.spare = client
        .write(head, cfg.timeouts.client_send)
        .await
        .map_err(|e| Error::io(Side::Client, "writing the response head", e))?;

    let leg = Leg {
        from: Side::Upstream,
        to: Side::Client,
        read_timeout: response_timeout,
        write_timeout: cfg.timeouts.client_send,
    };
    match resp.meta.body {
        ResponseBody::None => {}
        ResponseBody::Length(_) => copy_length(&mut up, client, body_left, leg).await?,
        ResponseBody::Chunked => {
            let mode = if http10 { ChunkedOut::Raw } else { ChunkedOut::Chunked };
            copy_chunked(&mut up, client, &cfg.limits.wire, mode, u64::MAX, leg).await?;
        }
        ResponseBody::Close => copy_until_close(&mut up, client, leg).await?,
    }
    // Bytes beyond the end of the response (or a body on a bodiless response) mean the
    // upstream and coregate disagree about framing: never reuse that connection.
    if resp.meta.keep_alive() && up.buf.is_empty() {
        up.spare_headers = resp.meta.headers;
        w.pool.borrow_mut().put(upstream, endpoint, up, up_cfg.max_idle_per_endpoint, Instant::now());
    }
    Ok(if keep { Next::KeepAlive } else { Next::Close })
}

/// Sends the request (head and body) and reads the final response head, relaying 1xx.
async fn send_and_receive(
    w: &Worker,
    client: &mut Conn,
    up: &mut Conn,
    out: &mut Outgoing,
    req: &RequestHead,
    response_timeout: Duration,
    p: &mut Progress,
) -> Result<ResponseHead, Error> {
    let cfg = &w.cfg;
    let meta = &req.meta;
    out.head = up
        .write(std::mem::take(&mut out.head), cfg.timeouts.upstream_send)
        .await
        .map_err(|e| Error::io(Side::Upstream, "writing the request head", e))?;
    if meta.body != BodyFraming::Empty {
        if out.send_continue {
            client
                .write(&b"HTTP/1.1 100 Continue\r\n\r\n"[..], cfg.timeouts.client_send)
                .await
                .map_err(|e| Error::io(Side::Client, "writing 100 Continue", e))?;
        }
        let leg = Leg {
            from: Side::Client,
            to: Side::Upstream,
            read_timeout: cfg.timeouts.client_body,
            write_timeout: cfg.timeouts.upstream_send,
        };
        match meta.body {
            BodyFraming::Length(_) => copy_length(client, up, out.body_left, leg).await?,
            BodyFraming::Chunked => {
                copy_chunked(client, up, &cfg.limits.wire, ChunkedOut::Chunked, out.max_body, leg).await?;
            }
            BodyFraming::Empty => {}
        }
        p.body_done = true;
    }
    let head_request = meta.method == Method::Head;
    loop {
        let resp = read_response_head(w, up, p, head_request, response_timeout).await?;
        if resp.meta.status == 101 {
            return Err(Error::new(
                Kind::UnexpectedUpgrade,
                Side::Upstream,
                "101 Switching Protocols without a requested upgrade",
            ));
        }
        if !resp.meta.is_informational() {
            return Ok(resp);
        }
        // RFC 9110 15.2: 1xx goes to HTTP/1.1 clients only; 100 is coregate's own to send.
        if meta.version == Version::Http11 && resp.meta.status != 100 {
            let mut out = Vec::new();
            forward::informational_head(&mut out, &resp);
            client
                .write(out, cfg.timeouts.client_send)
                .await
                .map_err(|e| Error::io(Side::Client, "writing a 1xx response", e))?;
        }
    }
}

async fn read_response_head(
    w: &Worker,
    up: &mut Conn,
    p: &mut Progress,
    head_request: bool,
    timeout: Duration,
) -> Result<ResponseHead, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if !up.buf.is_empty() {
            p.response_bytes = true;
            if let Some(meta) = parse_response_in(&up.buf, &w.cfg.limits.wire, head_request, &mut up.spare_headers)
                .map_err(|e| Error::malformed(Side::Upstream, e))?
            {
                let bytes = up.buf.split_to(meta.head_len).freeze();
                return Ok(ResponseHead::new(bytes, meta));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match up.fill(4096, left).await {
            Ok(0) if p.response_bytes => {
                return Err(Error::new(Kind::Closed, Side::Upstream, "closed in the middle of the response head"))
            }
            Ok(0) => return Err(Error::new(Kind::Closed, Side::Upstream, "closed without a response")),
            Ok(_) => {}
            Err(e) => return Err(Error::io(Side::Upstream, "waiting for the response head", e)),
        }
    }
}

/// A pooled connection to the next endpoint in round-robin order, or a new one; on connect
/// failure the other endpoints are tried in turn. Returns (connection, endpoint, reused).
async fn acquire(w: &Worker, upstream: usize, fresh: bool) -> Result<(Conn, usize, bool), Error> {
    let up = &w.cfg.upstreams[upstream];
    let n = up.endpoints.len();
    let start = w.rr[upstream].get();
    w.rr[upstream].set(start.wrapping_add(1));
    let mut last = Error::new(Kind::Connect, Side::Upstream, "no endpoint");
    for k in 0..n {
        let endpoint = (start + k) % n;
        if !fresh {
            if let Some(conn) = w.pool.borrow_mut().take(upstream, endpoint, Instant::now(), up.idle_timeout) {
                return Ok((conn, endpoint, true));
            }
        }
        let addr = up.endpoints[endpoint];
        match timed(&w.timers, up.connect_timeout, TcpStream::connect_addr(addr)).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok((Conn::new(stream, 8 * 1024, w.timers.clone()), endpoint, false));
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = Error::new(Kind::ConnectTimeout, Side::Upstream, "connecting to the upstream timed out");
            }
            Err(e) => {
                log::debug!("connect to {addr} failed: {e}");
                last = Error::io(Side::Upstream, "connecting to the upstream", e);
                last.kind = Kind::Connect;
            }
        }
    }
    Err(last)
}
