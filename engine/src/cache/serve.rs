//! The cache on the request path: looks a request up before it goes upstream (waiting for
//! another request's fetch with `lock`) and answers a fresh hit (or its 304), answers a
//! stale one at once while a background task refreshes it (`stale-while-revalidate`),
//! revalidates a stale response with its validators, stores a storable response on its way
//! back, prepares a stale answer for an upstream failure (`stale_if_error`), invalidates
//! after unsafe methods, and marks every response of a cached route with `X-Cache-Status`
//! (HIT, MISS, EXPIRED, REVALIDATED, UPDATING, STALE or BYPASS, as nginx's
//! `$upstream_cache_status`) and answers from the store with `Age`.
//!
//! Left to others: the rules ([`super::rules`]), the store ([`super::Cache`]), the exchange
//! itself (`proxy`), the heads (`forward`).

use std::sync::Arc;

use bytes::Bytes;
use config::{HeaderOps, RouteCache};
use proto_http::write::{field, field_u64, status_line};
use proto_http::{RequestHead, ResponseBody, Version};

use super::rules::{self, Ask};
use super::{Claim, Stored};
use crate::forward::{self, replaced, ClientFraming, Edits};
use crate::io::Conn;
use crate::proxy::Next;
use crate::worker::Worker;

/// The cache's part in one request of a route with `cache`.
pub(crate) struct Plan<'a> {
    pub(super) cache: &'a super::Cache,
    pub(super) route: &'a RouteCache,
    pub(super) key: Vec<u8>,
    pub(super) ask: Option<Ask>,
    /// The authenticated consumer, which selects its own variants.
    pub(super) consumer: Option<&'a [u8]>,
    /// `X-Cache-Status` of the response.
    pub status: &'static [u8],
    /// A stale stored 200 with validators, revalidated with the upstream (RFC 9111 4.3.1):
    /// its ETag and Last-Modified go upstream as preconditions, and a 304 refreshes it.
    /// Not when the client sent preconditions of its own (the upstream then answers those).
    pub(super) revalidate: Option<Arc<Stored>>,
    /// A stale stored response, made ready to answer if the upstream fails
    /// (`stale_if_error`): the exchange hands it to `proxy::handle`, which sends it.
    fallback: Option<Box<Reply>>,
    /// This request claimed the target's fetch (`lock`): released when the plan goes,
    /// whether the response was stored or the exchange failed.
    claimed: bool,
}

impl Drop for Plan<'_> {
    fn drop(&mut self) {
        if self.claimed {
            self.cache.release(&self.key);
        }
    }
}

impl<'a> Plan<'a> {
    /// The plan of a fetch that has already claimed its target (a background refresh):
    /// it releases the claim when it goes.
    pub(super) fn claimed(
        cache: &'a super::Cache,
        route: &'a RouteCache,
        key: Vec<u8>,
        ask: Ask,
        consumer: Option<&'a [u8]>,
        status: &'static [u8],
        revalidate: Option<Arc<Stored>>,
    ) -> Plan<'a> {
        Plan { cache, route, key, ask: Some(ask), consumer, status, revalidate, fallback: None, claimed: true }
    }

    /// The stale response to answer with when the upstream fails, if the route allows one.
    pub(crate) fn take_fallback(&mut self) -> Option<Box<Reply>> {
        self.fallback.take()
    }

    /// Adds the stale response's validators to the request head going upstream (which
    /// ends with its empty line).
    pub(crate) fn add_validators(&self, head: &mut Vec<u8>) {
        if let Some(s) = &self.revalidate {
            add_validators(head, s);
        }
    }
}

/// Adds the validators of `s` to a request head (which ends with its empty line) as
/// preconditions (RFC 9111 4.3.1).
fn add_validators(head: &mut Vec<u8>, s: &Stored) {
    head.truncate(head.len() - 2);
    for (name, value) in s.head.headers() {
        if name.eq_ignore_ascii_case(b"etag") {
            field(head, b"if-none-match", value);
        } else if name.eq_ignore_ascii_case(b"last-modified") {
            field(head, b"if-modified-since", value);
        }
    }
    head.extend_from_slice(b"\r\n");
}

/// Whether a stale `s` may be revalidated with its validators: a 200 that has some.
fn revalidatable(s: &Stored) -> bool {
    s.head.meta.status == 200 && (s.head.header(b"etag").is_some() || s.head.header(b"last-modified").is_some())
}

/// What the lookup did.
pub(crate) enum Looked<'a> {
    /// A stored response answered the request, marked so (HIT or UPDATING).
    Served(Next, &'static [u8]),
    /// The request goes upstream.
    Upstream(Plan<'a>),
}

/// The `X-Cache-Status` values.
pub(crate) const HIT: &[u8] = b"HIT";
const MISS: &[u8] = b"MISS";
const EXPIRED: &[u8] = b"EXPIRED";
const BYPASS: &[u8] = b"BYPASS";
pub(crate) const REVALIDATED: &[u8] = b"REVALIDATED";
pub(crate) const STALE: &[u8] = b"STALE";
pub(crate) const UPDATING: &[u8] = b"UPDATING";

/// Bodies up to this size go out in the same write as their head.
const WITH_HEAD: usize = 64 * 1024;

/// Looks the request up and answers it when a fresh stored response selects it, or a
/// stale one within its `stale-while-revalidate` window (refreshed from `upstream`).
pub(crate) async fn lookup<'a>(
    w: &'a Worker,
    client: &mut Conn,
    req: &RequestHead,
    route: usize,
    upstream: usize,
    edits: &Edits<'a>,
) -> Looked<'a> {
    let cache = w.cache.as_deref().expect("a route with cache has the store");
    let rc = w.cfg.routes[route].cache.as_ref().expect("a route with cache");
    let compress = w.cfg.routes[route].compress.as_ref();
    let mut key = Vec::new();
    super::key(&mut key, w.cache_spaces[route], req.host(), req.path());
    let ask = if edits.websocket { None } else { rules::ask(req) };
    let mut revalidate = None;
    let mut claimed = false;
    let mut fallback = None;
    let status = match ask {
        None => BYPASS,
        Some(a) if !a.lookup => MISS,
        Some(a) => {
            // With `lock`, a miss waits while another request of the target fetches it, and
            // looks again each tick (nginx's proxy_cache_lock looks every 500 ms).
            let give_up = rc.lock.map(|lock| (lock, w.timers.deadline(lock)));
            let find = || cache.get(&key, |s| rules::selects(req, edits.identity_name, &s.vary, &s.selecting));
            let mut found = find();
            let answers = |s: &Stored| is_fresh(w, s, a) || updating(w, rc, s, a);
            while let Some((lock, until)) = give_up.filter(|_| a.store && !found.as_deref().is_some_and(answers)) {
                let now = w.timers.now();
                if now >= until || cache.claim(&key, now, lock) == Claim::Mine {
                    claimed = now < until;
                    break;
                }
                w.timers.wait(w.timers.deadline(crate::timers::TICK)).await;
                found = find();
            }
            match found {
                None => MISS,
                Some(s) if is_fresh(w, &s, a) => {
                    w.count_cache(HIT);
                    let age = s.age(w.timers.now());
                    let (spare, keeps) = (std::mem::take(&mut client.spare), w.keeps(client));
                    let reply = render(w, spare, keeps, req, &s, age, a.conditional, edits, HIT, compress);
                    return Looked::Served(send(w, client, reply).await, HIT);
                }
                Some(s) if updating(w, rc, &s, a) => {
                    // Answered now; the first request to find it so starts its refresh, the
                    // others find the target claimed until that ends.
                    w.count_cache(UPDATING);
                    let now = w.timers.now();
                    let up_cfg = &w.cfg.upstreams[upstream];
                    let refresh_time = up_cfg.connect_timeout
                        + w.cfg.routes[route].response_timeout.unwrap_or(up_cfg.response_timeout);
                    if !w.drain.is_draining() && cache.claim(&key, now, refresh_time) == Claim::Mine {
                        let mut head = Vec::new();
                        forward::request_head(&mut head, req, edits, || up_cfg.endpoint_host(0));
                        let revalidate = revalidatable(&s).then(|| s.clone());
                        if let Some(stale) = &revalidate {
                            add_validators(&mut head, stale);
                        }
                        let job = super::refresh::Job {
                            upstream,
                            route,
                            key: key.clone(),
                            ask: a,
                            consumer: edits.identity_name.map(Box::from),
                            revalidate,
                            req: RequestHead::new(Bytes::copy_from_slice(&req.bytes), req.meta.clone()),
                            head,
                        };
                        super::refresh::spawn(w, job);
                    }
                    let (spare, keeps) = (std::mem::take(&mut client.spare), w.keeps(client));
                    let reply = render(w, spare, keeps, req, &s, s.age(now), false, edits, UPDATING, compress);
                    return Looked::Served(send(w, client, reply).await, UPDATING);
                }
                Some(s) => {
                    let age = s.age(w.timers.now());
                    let windows = rules::stale_windows(&s.head, rc);
                    if windows.if_error.is_some_and(|grace| age < s.freshness.lifetime.saturating_add(grace)) {
                        let keeps = w.keeps(client);
                        fallback =
                            render(w, Vec::new(), keeps, req, &s, age, false, edits, STALE, compress).map(Box::new);
                    }
                    if revalidatable(&s) && !a.conditional {
                        revalidate = Some(s);
                    }
                    EXPIRED
                }
            }
        }
    };
    w.count_cache(status);
    Looked::Upstream(Plan {
        cache,
        route: rc,
        key,
        ask,
        consumer: edits.identity_name,
        status,
        revalidate,
        fallback,
        claimed,
    })
}

/// Whether `s` is fresh enough for the request (RFC 9111 4.2, and its `max-age`).
fn is_fresh(w: &Worker, s: &Stored, a: Ask) -> bool {
    let age = s.age(w.timers.now());
    age < s.freshness.lifetime && a.max_age.is_none_or(|m| age <= m)
}

/// Whether stale `s` answers the request at once while it is refreshed: within its
/// `stale-while-revalidate` window, for a GET without preconditions of its own (those go
/// upstream, whose answer to them goes back) that accepts its age (`max-age`).
fn updating(w: &Worker, rc: &RouteCache, s: &Stored, a: Ask) -> bool {
    let age = s.age(w.timers.now());
    a.store
        && !a.conditional
        && a.max_age.is_none_or(|m| age <= m)
        && rules::stale_windows(&s.head, rc)
            .while_revalidate
            .is_some_and(|window| age < s.freshness.lifetime.saturating_add(window))
}

/// Answers with a response a 304 from the upstream just confirmed.
pub(crate) async fn serve_revalidated(
    w: &Worker,
    client: &mut Conn,
    req: &RequestHead,
    s: &Stored,
    edits: &Edits<'_>,
    compress: Option<&config::RouteCompress>,
) -> Next {
    let (spare, keeps) = (std::mem::take(&mut client.spare), w.keeps(client));
    let reply = render(w, spare, keeps, req, s, s.age(w.timers.now()), false, edits, REVALIDATED, compress);
    send(w, client, reply).await
}

pub(super) const STATUS_FIELD: &[u8] = b"x-cache-status";

/// Adds `X-Cache-Status` (and `Age` on a hit) to a finished head, unless the route's
/// `response_headers` remove or set them.
pub(crate) fn mark(out: &mut Vec<u8>, status: &[u8], age: Option<u64>, ops: &HeaderOps) {
    // The head ends with the empty line: the fields go before it.
    out.truncate(out.len() - 2);
    if let Some(age) = age.filter(|_| !replaced(ops, b"age")) {
        field_u64(out, b"age", age);
    }
    if !replaced(ops, STATUS_FIELD) {
        field(out, STATUS_FIELD, status);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a stored body to its head when small enough to go in the same write; returns
/// the bytes left to write apart (0 or the whole body).
pub(crate) fn append_small(head: &mut Vec<u8>, body: &Bytes) -> u64 {
    if body.len() > WITH_HEAD {
        return body.len() as u64;
    }
    head.extend_from_slice(body);
    0
}

/// Fields a 304 carries from the stored 200 (RFC 9110 15.4.5).
const NOT_MODIFIED_FIELDS: [&[u8]; 7] =
    [b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary", b"last-modified"];

/// A response made from a stored one, ready to write.
#[derive(Debug)]
pub(crate) struct Reply {
    out: Vec<u8>,
    /// A body too large to go in the head's write.
    apart: Option<Bytes>,
    status: u16,
    keep: bool,
}

/// Makes an answer from a stored response, marked `status_mark`, in `out` (a connection's
/// spare buffer, or new), keeping the connection open if `keeps` ([`Worker::keeps`]) and the
/// request allow: the 200 (or other stored status), its 304 when the request's
/// preconditions say the client has it, or the head alone for HEAD. The route's response
/// edits, CORS, request id and compression apply as they do to a proxied response. None: a
/// 304 head that does not parse (a bug, logged).
#[allow(clippy::too_many_arguments)] // the answer's parts, each used once
fn render(
    w: &Worker,
    mut out: Vec<u8>,
    keeps: bool,
    req: &RequestHead,
    s: &Stored,
    age: u64,
    conditional: bool,
    edits: &Edits<'_>,
    status_mark: &[u8],
    compress: Option<&config::RouteCompress>,
) -> Option<Reply> {
    let not_modified;
    let mut head = &s.head;
    let head_request = req.meta.method == proto_http::Method::Head;
    let mut body = (!head_request).then(|| s.body.clone());
    if conditional && rules::not_modified(req, head) {
        let mut nm = Vec::with_capacity(head.bytes.len());
        status_line(&mut nm, 304, b"Not Modified");
        for (name, value) in
            head.headers().filter(|(n, _)| NOT_MODIFIED_FIELDS.iter().any(|f| n.eq_ignore_ascii_case(f)))
        {
            field(&mut nm, name, value);
        }
        nm.extend_from_slice(b"\r\n");
        not_modified = match super::fill::reparse(nm, &w.cfg.limits.wire) {
            Ok(h) => h,
            Err(e) => {
                log::error!("a 304 head: {e}");
                return None;
            }
        };
        head = &not_modified;
        body = None;
    }
    let mut applied = crate::compress::Applied::No;
    if let Some(c) = compress.filter(|_| head.meta.status != 304) {
        (body, applied) = crate::compress::on_stored(c, req, head, body);
    }
    let framing = match head.meta.body {
        ResponseBody::None => ClientFraming::None,
        _ => ClientFraming::Length(body.as_ref().unwrap_or(&s.body).len() as u64),
    };
    let keep = req.meta.keep_alive() && keeps;
    forward::response_head(&mut out, head, framing, keep, req.meta.version == Version::Http10, edits);
    mark(&mut out, status_mark, Some(age), edits.response_ops);
    crate::compress::mark(&mut out, applied);
    let apart = body.filter(|b| append_small(&mut out, b) > 0);
    Some(Reply { out, apart, status: head.meta.status, keep })
}

/// Writes a [`Reply`] (None: closes unanswered).
pub(crate) async fn send(w: &Worker, client: &mut Conn, reply: Option<Reply>) -> Next {
    let Some(Reply { out, apart, status, keep }) = reply else { return Next::UNANSWERED };
    let timeout = w.cfg.timeouts.client_send;
    match client.write(out, timeout).await {
        Ok(mut out) if out.capacity() <= 2 * WITH_HEAD => {
            out.clear();
            client.spare = out;
        }
        Ok(_) => {}
        Err(e) => {
            log::debug!("writing a cached response: {e}");
            return Next { keep_alive: false, status };
        }
    }
    if let Some(b) = apart {
        if let Err(e) = client.write(b, timeout).await {
            log::debug!("writing a cached body: {e}");
            return Next { keep_alive: false, status };
        }
    }
    Next { keep_alive: keep, status }
}
