//! One request/response exchange through the proxy: route, run the route's policies (in
//! `policy`), take an upstream connection (from `upstream`), stream the request, relay 1xx,
//! stream the response, and decide what happens to both connections afterwards. Errors
//! become a status code here, via [`Error::status`].

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use config::{Action, AuthKind, Config};
use proto_http::{BodyFraming, Method, RequestHead, ResponseBody, ResponseHead, Version};

use crate::auth::KeySource;
use crate::body::{
    buffer_small_body, coalesce_buffered, copy_chunked, copy_length, copy_until_close, precheck_chunked, ChunkedOut,
    Leg,
};
use crate::cache;
use crate::deadline::{self, Bounded};
use crate::error::{Error, Kind, Side};
use crate::forward::{self, ClientFraming};
use crate::io::Conn;
use crate::local::{send_error, Reply};
use crate::pipeline::Pipe;
use crate::policy;
use crate::tunnel;
use crate::upstream::{acquire, pool_back, read_response_head, Original};
use crate::worker::Worker;

/// What the client connection does after an exchange, and what the client was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Next {
    pub keep_alive: bool,
    /// The status of the final response (or of the 101) sent; 0 when none was.
    pub status: u16,
}

impl Next {
    /// Closed without an answer.
    pub(crate) const UNANSWERED: Next = Next { keep_alive: false, status: 0 };
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
    /// The status of that head.
    status: u16,
    /// What the exchange was, as far as it went.
    seen: Outcome,
    /// A stale stored response that answers an upstream failure (`stale_if_error`).
    stale: Option<Box<cache::serve::Reply>>,
}

/// What an exchange was, for the metrics, the access log and the trace.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    /// The route the request matched.
    pub route: Option<usize>,
    /// The upstream it was proxied to (a cache hit counts too).
    pub upstream: Option<usize>,
    /// The endpoint of that upstream (its index) that answered, or the last one tried.
    pub endpoint: Option<usize>,
    /// With an access log: from taking a connection for the attempt that answered
    /// (connecting, if it had to) to that answer's head.
    pub upstream_time: Option<Duration>,
    /// With an access log: the authenticated consumer, or the JWT's or authorization
    /// service's subject.
    pub consumer: Option<Box<str>>,
    /// Its `X-Cache-Status`, on a cached route.
    pub cache: Option<&'static [u8]>,
    /// Bytes of the answer (head and body) written to the client; set by `conn`.
    pub sent: u64,
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
    /// A WebSocket upgrade was forwarded: a 101 that switches to it is the answer.
    websocket: bool,
}

/// True when the request has no body bytes to read.
fn no_body(b: BodyFraming) -> bool {
    matches!(b, BodyFraming::Empty | BodyFraming::Length(0))
}

/// Proxies one request; on failure answers with an error response where one is possible.
/// `peer`: the client (behind trusted proxies, the one they name), `peer_text` its address
/// as text; `hop`: the TCP peer's address as text, appended to X-Forwarded-For.
/// `tags`: the request id and the trace context, when they are on. Returns what happens next
/// and what the exchange was.
pub(crate) async fn handle(
    w: &Worker,
    client: &mut Conn,
    peer: SocketAddr,
    peer_text: &[u8],
    hop: &[u8],
    req: &RequestHead,
    tags: Tags<'_>,
) -> (Next, Outcome) {
    let request_id = tags.request_id;
    let mut progress = Progress { body_done: no_body(req.meta.body), ..Progress::default() };
    // A route's `timeout`, once the exchange knows its route.
    let deadline = Cell::new(None);
    let exchanged = exchange(w, client, peer, peer_text, hop, req, tags, &deadline, &mut progress);
    let err = match Bounded::new(exchanged, &deadline, &w.timers).await {
        Ok(next) => return (next, progress.seen),
        Err(e) => e,
    };
    if deadline::ran_out(&err) {
        let answer = deadline::Answer::given(progress.response_started, progress.stale.is_some());
        w.count_route_timeout(progress.seen.route, answer);
    }
    if let (Some(stale), Side::Upstream, false) = (progress.stale.take(), err.side, progress.response_started) {
        log::warn!("answering {peer} with a stale response: {err}");
        progress.seen.cache = Some(cache::serve::STALE);
        w.count_cache(cache::serve::STALE);
        return (cache::serve::send(w, client, Some(*stale)).await, progress.seen);
    }
    let status = match err.status() {
        Some(s) if !progress.response_started => s,
        _ => {
            log::debug!("closing client {peer}: {err}");
            return (Next { keep_alive: false, status: progress.status }, progress.seen);
        }
    };
    // Overload answers come in floods: not one warning each.
    if err.side == Side::Upstream && err.kind != Kind::Overloaded {
        log::warn!("{status} for {peer}: {err}");
    } else {
        log::debug!("{status} for {peer}: {err}");
    }
    // A refused request closes its connection; a 404, a 405 or an upstream failure after the
    // whole request was read leaves it usable.
    let refused = err.side == Side::Client && !matches!(err.kind, Kind::NoRoute | Kind::MethodNotAllowed);
    let keep = progress.body_done && req.meta.keep_alive() && !refused;
    let reply = Reply { keep_alive: keep, version: req.meta.version, request_id };
    // RFC 9110 15.5.6: a 405 says which methods are allowed.
    let allow: [(&[u8], &[u8]); 1] = [(b"allow", crate::methods::allowed(&w.cfg).as_bytes())];
    let extra: &[(&[u8], &[u8])] = if err.kind == Kind::MethodNotAllowed { &allow } else { &[] };
    (send_error(w, client, status, err.context, extra, reply).await, progress.seen)
}

/// What identifies a request beyond itself, sent upstream with it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tags<'a> {
    /// The request id field and value (`server.request_id`), carried by the answer too.
    pub request_id: Option<(&'a [u8], &'a [u8])>,
    /// The `traceparent` of coregate's span (`[tracing]`).
    pub traceparent: Option<&'a [u8]>,
}

#[allow(clippy::too_many_arguments)]
async fn exchange(
    w: &Worker,
    client: &mut Conn,
    peer: SocketAddr,
    peer_text: &[u8],
    hop: &[u8],
    req: &RequestHead,
    tags: Tags<'_>,
    deadline: &Cell<Option<Instant>>,
    p: &mut Progress,
) -> Result<Next, Error> {
    let meta = &req.meta;
    let request_id = tags.request_id;
    if meta.method == Method::Connect {
        return Err(Error::new(Kind::MethodNotImplemented, Side::Client, "CONNECT is not supported"));
    }
    let cfg = &w.cfg;
    if let Some(name) = &cfg.server.via {
        // RFC 9110 7.6.3: Via lets a proxy see a request come round again (a route whose
        // upstream is this gateway): answered at once, not forwarded without end.
        let listed =
            req.headers().any(|(n, v)| n.eq_ignore_ascii_case(b"via") && proto_http::via_lists(v, name.as_bytes()));
        if listed {
            return Err(Error::new(
                Kind::Loop,
                Side::Client,
                "request loop: it already passed through this gateway (server.via)",
            ));
        }
    }
    let refusal_reply =
        Reply { keep_alive: no_body(meta.body) && meta.keep_alive(), version: meta.version, request_id };
    // TRACE and OPTIONS: the only methods Max-Forwards applies to (RFC 9110 7.6.2).
    let mut hops = None;
    if matches!(meta.method, Method::Trace | Method::Options) {
        hops = crate::methods::screen(cfg, req)?;
        if req.path() == b"*" {
            // RFC 9110 9.3.7: about the server in general, which here is the gateway.
            return Ok(crate::methods::answer(w, client, None, req, refusal_reply).await);
        }
    }
    let https = client.tls.is_some();
    let accept = |i: usize| policy::conditions_hold(&cfg.routes[i], req, https);
    let route_idx = w.routes.find(req.host(), req.path_only(), &cfg.routes, &accept).ok_or(Error::new(
        Kind::NoRoute,
        Side::Client,
        "no route",
    ))?;
    p.seen.route = Some(route_idx);
    let route = &cfg.routes[route_idx];

    // Policies, in order: CORS preflight, IP access rules, authentication, rate limits,
    // injected faults; each may answer on its own.
    if let Some(next) = policy::preflight(w, client, route, req, refusal_reply).await {
        return Ok(next);
    }
    if let Err(refusal) = policy::check_access(route, peer, client.tls.as_deref()) {
        return Ok(refusal.send(w, client, refusal_reply).await);
    }
    let identity = match route.auth {
        // Boxed: the check's state stays out of every other request's future.
        AuthKind::External => {
            let checked = crate::external_auth::authorize(w, client, route_idx, req, peer_text, tags, refusal_reply);
            match Box::pin(checked).await {
                Ok(identity) => identity,
                Err(next) => return Ok(next),
            }
        }
        _ => match policy::authenticate(w, route, req) {
            Ok(identity) => identity,
            Err(refusal) => return Ok(refusal.send(w, client, refusal_reply).await),
        },
    };
    if w.log.is_some() {
        p.seen.consumer = identity.name(cfg).map(|n| String::from_utf8_lossy(n).into());
    }
    if let Err(refusal) = policy::rate_limit(w, route_idx, route, req, peer, &identity).await {
        return Ok(refusal.send(w, client, refusal_reply).await);
    }
    if let Some(fault) = &route.fault {
        // Boxed: the delay's state stays out of every other request's future.
        if let Some(status) = Box::pin(crate::fault::inject(w, route_idx, fault, req)).await {
            return Ok(send_error(w, client, status, "fault injected", &[], refusal_reply).await);
        }
    }
    let upstream = match &route.action {
        // The last hop a TRACE or OPTIONS may take ends here: answered as its final recipient.
        Action::Proxy { .. } | Action::Split(_) if hops == Some(0) => {
            return Ok(crate::methods::answer(w, client, Some(route), req, refusal_reply).await);
        }
        Action::Proxy { upstream } => *upstream,
        Action::Split(split) => w.split.choose(route_idx, split, req, peer),
        action => return Ok(policy::respond(w, client, action, req, route_idx, refusal_reply).await),
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
    let mut captures = crate::route::Captures::none();
    w.routes.fill_captures(&mut captures, &cfg.routes, route_idx, req.path_only());
    let consumer_name = identity.consumer.map(|c| cfg.consumers[c].name.as_bytes());
    let edits = forward::Edits {
        target: policy::target_edit(route, identity.key_source, &cfg.api_key),
        request_ops: &route.request_headers,
        response_ops: &route.response_headers,
        drop: [
            match identity.key_source {
                Some(KeySource::Header) => Some(cfg.api_key.header.as_bytes()),
                // Basic credentials stop here: the upstream gets the consumer's name.
                Some(KeySource::Authorization) => Some(&b"authorization"[..]),
                _ => None,
            },
            (!cfg.consumers.is_empty()).then_some(cfg.api_key.consumer_header.as_bytes()),
            (!cfg.consumers.is_empty()).then_some(cfg.api_key.groups_header.as_bytes()),
            cfg.tls.client_auth.is_some().then_some(b"x-forwarded-client-cert"),
        ],
        consumer: consumer_name.map(|n| (cfg.api_key.consumer_header.as_bytes(), n)),
        consumer_groups: identity
            .consumer
            .map(|c| cfg.consumers[c].groups_field.as_bytes())
            .filter(|g| !g.is_empty())
            .map(|g| (cfg.api_key.groups_header.as_bytes(), g)),
        identity_name: identity.name(cfg),
        claim_fields: &identity.claim_fields,
        claim_headers: match (route.auth, &cfg.external_auth) {
            (AuthKind::Jwt, _) => forward::Protected::Claims(&cfg.jwt.claims_to_headers),
            (AuthKind::External, Some(ext)) => forward::Protected::Names(&ext.upstream_headers),
            _ => forward::Protected::None,
        },
        captures: &captures,
        request: req,
        claims: identity.claims.as_ref(),
        client_ip: peer_text,
        hop,
        cors: policy::cors_origin(route, req),
        websocket: route.websocket && req.is_websocket_upgrade(),
        https: client.tls.is_some(),
        forwarded: cfg.server.forwarded,
        client_cert: client
            .tls
            .as_deref()
            .zip(cfg.tls.client_auth.as_ref())
            .and_then(|(t, a)| t.client_cert_field(a.details)),
        request_id,
        traceparent: tags.traceparent,
        via: cfg.server.via.as_deref().map(str::as_bytes),
        max_forwards: hops,
    };
    p.seen.upstream = Some(upstream);
    if let Some(limit) = route.timeout {
        deadline.set(Some(w.timers.deadline(limit)));
    }
    // A route with a cache answers from it when it can; otherwise the plan says what to do
    // with the response. Boxed: the plain path's per-request state does not carry it.
    let cache_plan = match route.cache {
        Some(_) => match Box::pin(cache::serve::lookup(w, client, req, route_idx, upstream, &edits)).await {
            cache::serve::Looked::Served(next, status) => {
                p.seen.cache = Some(status);
                return Ok(next);
            }
            cache::serve::Looked::Upstream(mut plan) => {
                p.seen.cache = Some(plan.status);
                p.stale = plan.take_fallback();
                Some(plan)
            }
        },
        None => None,
    };
    // The connection's spare buffer carries the request head, then the response head, and
    // goes back to the connection: no head allocation per request once it has grown.
    let mut head = std::mem::take(&mut client.spare);
    let build_head = |head: &mut Vec<u8>| {
        forward::request_head(head, req, &edits, || up_cfg.endpoint_host(0));
        if let Some(plan) = &cache_plan {
            plan.add_validators(head);
        }
    };
    build_head(&mut head);
    // RFC 9110 10.1.1: coregate answers 100-continue itself, unless the body is already here.
    let send_continue = meta.expect_continue
        && meta.version == Version::Http11
        && meta.body != BodyFraming::Empty
        && client.buf.is_empty();
    let body_left = match meta.body {
        BodyFraming::Length(n) => {
            // A small body the client wrote apart from its head goes upstream with the head,
            // in one write, as a response's does; not when the client waits for 100 Continue.
            if !send_continue {
                buffer_small_body(client, n, &client_leg(cfg)).await?;
            }
            let left = n - coalesce_buffered(client, n, &mut head);
            // All of it taken from the client's buffer: an upstream failure from here on
            // leaves the client connection usable.
            p.body_done = left == 0;
            left
        }
        _ => 0,
    };
    let mut out = Outgoing { head, body_left, send_continue, max_body, websocket: edits.websocket };
    if let Some(m) = &route.mirror {
        // The head holds the whole request when the body was read with it (or is empty).
        let whole = p.body_done && !out.websocket;
        crate::mirror::offer(w, route_idx, m, &out.head, whole, meta.method == Method::Head);
    }

    // A pooled connection may have been closed by the upstream just now. When nothing of the
    // response arrived and the request can be repeated (idempotent, no body: RFC 9112 9.3.1),
    // try once more on a new connection. Beyond that, `retries` more attempts go to other
    // endpoints after a failure or a 502-504, for an idempotent request (RFC 9110 9.2.2)
    // that `out.head` holds whole (no body, or one sent with the head).
    let mut fresh = false;
    let tries = route.retries.unwrap_or(up_cfg.retries);
    let mut retries = tries;
    let mut avoid = None;
    let (key, counted) = match &up_cfg.balance {
        config::Balance::RoundRobin => (None, false),
        config::Balance::LeastRequest => (None, true),
        config::Balance::Hash(on) => (crate::balance::key(on, req, peer), false),
    };
    // `max_requests`: one slot for the whole exchange, its retries included.
    // Over it, the request waits in the upstream's queue, or is refused (boxed: the wait's
    // state stays out of the exchanges that find a slot).
    let _slot = match up_cfg.max_requests {
        None => None,
        Some(max) => Some(match crate::concurrency::enter(w, upstream, max) {
            Some(slot) => slot,
            None => Box::pin(crate::concurrency::wait(w, upstream, max, up_cfg.queue.as_ref())).await?,
        }),
    };
    // Retry budgets count the exchanges of upstreams that retry, and those retrying.
    let _active = (retries > 0).then(|| w.retries.exchange(upstream));
    let mut retrying = None;
    // Least request: counted in flight until this exchange ends (a tunnel's whole life).
    let mut _in_flight = None;
    // Pipelined (`upstreams[].pipeline`): GETs without a body, never an upgrade (RFC 9112
    // 9.3.2: idempotent requests only). Not HEAD: an upstream that wrongly sends a body
    // after a HEAD's head, harmless alone (the connection is dropped), would shift every
    // response behind it. A retry goes on its own.
    let depth = match meta.method == Method::Get && meta.body == BodyFraming::Empty && !out.websocket {
        true => up_cfg.pipeline,
        false => 1,
    };
    let (mut up, endpoint, resp) = loop {
        let attempt = w.log.as_ref().map(|_| std::time::Instant::now());
        let pipelined = depth > 1 && !fresh && avoid.is_none();
        let place = if pipelined { crate::pipeline::join(&w.pipelines, upstream, &out.head) } else { None };
        let (mut up, endpoint, reused, pipe) = match place {
            None => {
                let (up, endpoint, reused) = acquire::<Original>(w, upstream, fresh, avoid, key).await?;
                let pipe = match pipelined {
                    true => {
                        // `keepalive_requests`: the batch ends within the connection's share.
                        let left = up_cfg.keepalive_requests.map_or(u32::MAX, |n| n.saturating_sub(up.exchanges));
                        Pipe::Open { depth: depth.min(left.max(1) as usize), upstream, endpoint }
                    }
                    false => Pipe::Alone,
                };
                (up, endpoint, reused, pipe)
            }
            Some(place) => match place.await {
                Ok((up, endpoint)) => (up, endpoint, true, Pipe::Joined),
                Err(()) => {
                    log::debug!("the pipelined connection ended before this response; retrying on a new one");
                    fresh = true;
                    continue;
                }
            },
        };
        p.seen.endpoint = Some(endpoint);
        if counted {
            _in_flight = w.balance.started(upstream, endpoint);
        }
        let replayable = |out: &Outgoing| {
            retries > 0
                && (retrying.is_some() || w.retries.room(upstream, up_cfg.retry_budget))
                && meta.method.is_idempotent()
                && out.body_left == 0
                && !out.websocket
                && (!out.head.is_empty() || meta.body == BodyFraming::Empty)
        };
        let failure = match send_and_receive(w, client, &mut up, &mut out, pipe, req, response_timeout, p).await {
            Ok(resp) => {
                p.seen.upstream_time = attempt.map(|t| t.elapsed());
                // RFC 9110 15.6.3-5: the statuses by which an upstream (or one in front of
                // it) says it cannot serve now; other answers, 500 included, are the
                // application's.
                let unavailable = matches!(resp.meta.status, 502..=504);
                if unavailable {
                    w.health.failed(upstream, endpoint, &up_cfg.outlier, w.timers.now());
                } else {
                    w.health.succeeded(upstream, endpoint);
                }
                // `retry_statuses` (502-504 unless configured) are tried again elsewhere;
                // only the three above count against the endpoint's health.
                let again = retries > 0 && up_cfg.retry_statuses.contains(&resp.meta.status);
                if !again || !replayable(&out) {
                    break (up, endpoint, resp);
                }
                // Its answer is dropped with the connection.
                Error::new(Kind::Closed, Side::Upstream, "an answer in retry_statuses")
            }
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
                continue;
            }
            Err(e) => {
                if e.side != Side::Upstream {
                    return Err(e);
                }
                w.health.failed(upstream, endpoint, &up_cfg.outlier, w.timers.now());
                if !replayable(&out) {
                    return Err(e);
                }
                e
            }
        };
        log::debug!("retrying on another endpoint after: {failure}");
        if retrying.is_none() {
            retrying = Some(w.retries.retrying(upstream));
        }
        let wait = w.retries.backoff(up_cfg.retry_backoff, tries - retries + 1);
        if !wait.is_zero() {
            // Boxed: the timer's state stays out of the exchanges that never retry.
            Box::pin(monoio::time::sleep(wait)).await;
        }
        retries -= 1;
        avoid = Some(endpoint);
        (fresh, p.response_bytes) = (false, false);
        if out.head.is_empty() {
            build_head(&mut out.head);
        }
    };

    if p.stale.is_some() && matches!(resp.meta.status, 502..=504) {
        // A stale response answers it (in `handle`); this one goes with its connection.
        return Err(Error::new(Kind::Closed, Side::Upstream, "a 502-504 answer"));
    }
    if resp.meta.status == 101 {
        p.response_started = true;
        p.status = 101;
        // A tunnel lives as long as it is used: a route's timeout ends here.
        deadline.set(None);
        // Boxed, so that its state (4.6 KiB) is allocated per tunnel rather than carried in
        // every request's arena block (3,200 -> 7,808 bytes inline).
        return Box::pin(tunnel(w, client, up, resp, out.head, &edits)).await;
    }
    let leg = Leg {
        from: Side::Upstream,
        to: Side::Client,
        read_timeout: response_timeout,
        write_timeout: cfg.timeouts.client_send,
    };
    // A response the cache stores is read whole first, and sent from memory.
    let mut stored = match &cache_plan {
        Some(plan) => match Box::pin(cache::fill::on_response(w, plan, req, &resp, &mut up, &leg)).await? {
            cache::fill::After::Stream => None,
            cache::fill::After::Stored(body) => Some(body),
            cache::fill::After::Revalidated(s) => {
                let resp_meta = resp.meta;
                drop(resp.bytes);
                pool_back(w, upstream, endpoint, up, resp_meta);
                p.seen.cache = Some(cache::serve::REVALIDATED);
                return Ok(Box::pin(cache::serve::serve_revalidated(
                    w,
                    client,
                    req,
                    &s,
                    &edits,
                    route.compress.as_ref(),
                ))
                .await);
            }
        },
        None => None,
    };
    // So is one the route gzips (`compress`).
    let mut applied = crate::compress::Applied::No;
    if let Some(c) = &route.compress {
        let on_response = crate::compress::on_response(c, req, &resp, &mut up, stored, &cfg.limits.wire, &leg);
        (stored, applied) = Box::pin(on_response).await?;
    }
    let http10 = meta.version == Version::Http10;
    let streamed = match applied {
        crate::compress::Applied::Streamed(coding) => Some(coding),
        _ => None,
    };
    let framing = match (resp.meta.body, &stored) {
        (ResponseBody::None, _) => ClientFraming::None,
        (_, Some(body)) => ClientFraming::Length(body.len() as u64),
        _ if streamed.is_some() => match http10 {
            false => ClientFraming::Chunked,
            true => ClientFraming::Close,
        },
        (ResponseBody::Length(n), None) => ClientFraming::Length(n),
        (ResponseBody::Chunked, None) if !http10 => ClientFraming::Chunked,
        (ResponseBody::Chunked | ResponseBody::Close, None) => ClientFraming::Close,
    };
    let keep = meta.keep_alive() && framing != ClientFraming::Close && w.keeps(client);
    let mut head = std::mem::take(&mut out.head);
    forward::response_head(&mut head, &resp, framing, keep, http10, &edits);
    if let Some(plan) = &cache_plan {
        cache::serve::mark(&mut head, plan.status, None, &route.response_headers);
    }
    if applied != crate::compress::Applied::No {
        crate::compress::mark(&mut head, applied);
    }
    // The head's bytes share the upstream buffer's allocation: released now, the buffer is
    // the only owner again, and the body reads below reuse it instead of allocating anew
    // per response (they reserve more room than a head read leaves).
    let resp_meta = resp.meta;
    drop(resp.bytes);
    let body_left = match (resp_meta.body, &stored) {
        (_, Some(body)) => cache::serve::append_small(&mut head, body),
        _ if streamed.is_some() => 0,
        (ResponseBody::Length(n), None) => {
            buffer_small_body(&mut up, n, &leg).await?;
            n - coalesce_buffered(&mut up, n, &mut head)
        }
        _ => 0,
    };
    p.response_started = true;
    p.status = resp_meta.status;
    let status = resp_meta.status;
    // Nothing more to read from the upstream: its connection goes back to the pool, or on to
    // the next request pipelined on it, before the client is written to.
    let read_whole = streamed.is_none()
        && (stored.is_some()
            || match resp_meta.body {
                ResponseBody::None => true,
                ResponseBody::Length(_) => body_left == 0,
                _ => false,
            });
    let held = match read_whole {
        true => {
            pool_back(w, upstream, endpoint, up, resp_meta);
            None
        }
        false => Some((up, resp_meta)),
    };
    client.spare = client
        .write(head, cfg.timeouts.client_send)
        .await
        .map_err(|e| Error::io(Side::Client, "writing the response head", e))?;
    if let Some(body) = stored.filter(|_| body_left > 0) {
        client.write(body, cfg.timeouts.client_send).await.map_err(|e| Error::io(Side::Client, "writing a body", e))?;
    }
    let Some((mut up, resp_meta)) = held else {
        return Ok(Next { keep_alive: keep, status });
    };

    match resp_meta.body {
        _ if streamed.is_some() => {
            let c = route.compress.as_ref().expect("streamed by the route's compress");
            let coding = streamed.expect("a coding");
            let relay = crate::compress_stream::relay(
                &mut up,
                client,
                resp_meta.body,
                c,
                coding,
                !http10,
                &cfg.limits.wire,
                &leg,
            );
            Box::pin(relay).await?;
        }
        // Read whole above (a stored body, none, or a small one that went with the head).
        ResponseBody::None => {}
        ResponseBody::Length(_) if body_left == 0 => {}
        ResponseBody::Length(_) => copy_length(&mut up, client, body_left, leg).await?,
        ResponseBody::Chunked => {
            let mode = if http10 { ChunkedOut::Raw } else { ChunkedOut::Chunked };
            copy_chunked(&mut up, client, &cfg.limits.wire, mode, u64::MAX, leg).await?;
        }
        ResponseBody::Close => copy_until_close(&mut up, client, leg).await?,
    }
    pool_back(w, upstream, endpoint, up, resp_meta);
    Ok(Next { keep_alive: keep, status })
}

/// Answers the client with the upstream's 101 and relays bytes both ways until the tunnel
/// ends; the upstream connection is never pooled again and the client's closes after.
async fn tunnel(
    w: &Worker,
    client: &mut Conn,
    mut up: Box<Conn>,
    resp: ResponseHead,
    mut head: Vec<u8>,
    edits: &forward::Edits<'_>,
) -> Result<Next, Error> {
    let t = &w.cfg.timeouts;
    forward::response_head(&mut head, &resp, ClientFraming::Tunnel, true, false, edits);
    // The head's bytes share the upstream buffer, which the relay reads into next.
    drop(resp);
    client.write(head, t.client_send).await.map_err(|e| Error::io(Side::Client, "writing the 101 response", e))?;
    let limits = tunnel::Limits {
        idle: t.tunnel_idle,
        client_send: t.client_send,
        upstream_send: t.upstream_send,
        uring: w.uring,
    };
    let relayed = match client.tls.is_some() || up.tls.is_some() {
        true => crate::tls_tunnel::relay(&w.timers, client, &mut up, limits).await,
        false => tunnel::relay(&w.timers, client, &mut up, limits).await,
    };
    if let Err(e) = relayed {
        log::debug!("tunnel ended: {e}");
    }
    Ok(Next { keep_alive: false, status: 101 })
}

/// The direction of a request body: from the client to the upstream.
fn client_leg(cfg: &Config) -> Leg {
    Leg {
        from: Side::Client,
        to: Side::Upstream,
        read_timeout: cfg.timeouts.client_body,
        write_timeout: cfg.timeouts.upstream_send,
    }
}

/// Sends the request (head and body) and reads the final response head, relaying 1xx.
#[allow(clippy::too_many_arguments)]
async fn send_and_receive(
    w: &Worker,
    client: &mut Conn,
    up: &mut Conn,
    out: &mut Outgoing,
    pipe: Pipe,
    req: &RequestHead,
    response_timeout: Duration,
    p: &mut Progress,
) -> Result<ResponseHead, Error> {
    let cfg = &w.cfg;
    let meta = &req.meta;
    let t = cfg.timeouts.upstream_send;
    let written = match pipe {
        Pipe::Alone => up.write(std::mem::take(&mut out.head), t).await.map(|head| out.head = head),
        Pipe::Open { depth, upstream, endpoint } => {
            let written = crate::pipeline::open(&w.pipelines, upstream, endpoint, up, &out.head, depth, t).await;
            written.map(|n| {
                if let Some(stats) = &w.stats {
                    stats.pipelined(upstream, n);
                }
            })
        }
        Pipe::Joined => Ok(()),
    };
    written.map_err(|e| Error::io(Side::Upstream, "writing the request head", e))?;
    if meta.body != BodyFraming::Empty {
        if out.send_continue {
            client
                .write(&b"HTTP/1.1 100 Continue\r\n\r\n"[..], cfg.timeouts.client_send)
                .await
                .map_err(|e| Error::io(Side::Client, "writing 100 Continue", e))?;
        }
        let leg = client_leg(cfg);
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
        let resp = read_response_head::<Original>(w, up, &mut p.response_bytes, head_request, response_timeout).await?;
        if resp.meta.status == 101 {
            if out.websocket && resp.switches_to_websocket() {
                return Ok(resp);
            }
            let why = if out.websocket {
                "101 Switching Protocols to something other than the WebSocket asked for"
            } else {
                "101 Switching Protocols without a requested upgrade"
            };
            return Err(Error::new(Kind::UnexpectedUpgrade, Side::Upstream, why));
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
