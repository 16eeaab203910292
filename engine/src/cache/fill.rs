//! Filling the cache from upstream responses: storing a storable one (its body read whole),
//! refreshing a revalidated one from its 304 (RFC 9111 4.3.4), invalidating after unsafe
//! methods (4.4), and the stored heads themselves.
//!
//! Left to others: what may be stored ([`super::rules`]), the store ([`super::Cache`]),
//! answering from it ([`super::serve`]).

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use proto_http::write::{field, status_line};
use proto_http::{is_hop_by_hop, parse_response, RequestHead, ResponseHead};

use super::rules;
use super::serve::{Plan, REVALIDATED, STATUS_FIELD};
use super::Stored;
use crate::body::{read_whole, Leg};
use crate::error::{Error, Side};
use crate::forward::{connection_values, named_by_connection};
use crate::io::Conn;
use crate::worker::Worker;

/// What the response does once its head is in ([`on_response`]).
pub(crate) enum After {
    /// It streams to the client as usual.
    Stream,
    /// It was stored: the client gets this body from memory.
    Stored(Bytes),
    /// A 304 confirmed the stale stored response: the client gets it, refreshed.
    Revalidated(Arc<Stored>),
}

/// Once the response head is in: invalidates the target after a successful unsafe method,
/// refreshes a revalidated stale response, or stores a storable response, reading its body
/// whole (taken from `up`).
pub(crate) async fn on_response(
    w: &Worker,
    plan: &Plan<'_>,
    req: &RequestHead,
    resp: &ResponseHead,
    up: &mut Conn,
    leg: &Leg,
) -> Result<After, Error> {
    if rules::invalidates(req.meta.method) {
        if resp.meta.status < 400 {
            plan.cache.invalidate(&plan.key);
        }
        return Ok(After::Stream);
    }
    let limits = &w.cfg.limits.wire;
    let authorized = req.header(b"authorization").is_some();
    if let (Some(stale), 304) = (&plan.revalidate, resp.meta.status) {
        // RFC 9111 4.3.4: the stored head takes the 304's fields; the body stays.
        let head = merged_head(&stale.head, resp, limits)?;
        let freshness = rules::freshness(&head, plan.route, authorized, SystemTime::now());
        let refreshed = Arc::new(Stored {
            head,
            body: stale.body.clone(),
            vary: stale.vary.clone(),
            selecting: stale.selecting.clone(),
            stored_at: w.timers.now(),
            freshness: freshness.unwrap_or(rules::Freshness { lifetime: 0, initial_age: 0 }),
        });
        match freshness {
            Some(_) => plan.cache.put_shared(&plan.key, refreshed.clone()),
            // The 304 forbids storing it now (no-store, private, no freshness left).
            None => {
                plan.cache.invalidate(&plan.key);
            }
        }
        w.count_cache(REVALIDATED);
        return Ok(After::Revalidated(refreshed));
    }
    if !plan.ask.is_some_and(|a| a.store) {
        return Ok(After::Stream);
    }
    let Some(freshness) = rules::freshness(resp, plan.route, authorized, SystemTime::now()) else {
        return Ok(After::Stream);
    };
    let head = stored_head(resp, limits)?;
    let vary = rules::vary_names(resp);
    let room = plan.route.max_entry_bytes.saturating_sub(head.bytes.len() + vary.len());
    let Some(body) = read_whole(up, resp.meta.body, room, limits, leg).await? else {
        return Ok(After::Stream);
    };
    let mut selecting = Vec::new();
    rules::selecting(&mut selecting, req, plan.consumer, &vary);
    let stored = Stored {
        head,
        body: body.clone(),
        vary: vary.into(),
        selecting: selecting.into(),
        stored_at: w.timers.now(),
        freshness,
    };
    plan.cache.put(&plan.key, stored);
    Ok(After::Stored(body))
}

/// Fields a stored head never keeps: framing (restated when served), hop-by-hop fields,
/// Age (computed when served) and coregate's own mark.
fn kept(resp: &ResponseHead, name: &[u8]) -> bool {
    !(is_hop_by_hop(name)
        || name.eq_ignore_ascii_case(b"content-length")
        || name.eq_ignore_ascii_case(b"age")
        || name.eq_ignore_ascii_case(STATUS_FIELD)
        || (resp.meta.connection.other && named_by_connection(connection_values(resp.headers()), name)))
}

/// The stored head updated by a 304: its fields, each replaced by the 304's fields of the
/// same name, and the 304's other fields added.
fn merged_head(
    stored: &ResponseHead,
    update: &ResponseHead,
    limits: &proto_http::Limits,
) -> Result<ResponseHead, Error> {
    let mut out = Vec::with_capacity(stored.bytes.len() + update.bytes.len());
    status_line(&mut out, stored.meta.status, stored.reason());
    let updated = |name: &[u8]| update.headers().any(|(n, _)| n.eq_ignore_ascii_case(name) && kept(update, n));
    for (name, value) in stored.headers().filter(|(n, _)| !updated(n)) {
        field(&mut out, name, value);
    }
    for (name, value) in update.headers().filter(|(n, _)| kept(update, n)) {
        field(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    reparse(out, limits)
}

/// The head kept for a stored response: status line and end-to-end fields, without the
/// framing (restated when served), hop-by-hop fields and Age (computed when served).
fn stored_head(resp: &ResponseHead, limits: &proto_http::Limits) -> Result<ResponseHead, Error> {
    let mut out = Vec::with_capacity(resp.bytes.len());
    status_line(&mut out, resp.meta.status, resp.reason());
    for (name, value) in resp.headers().filter(|(n, _)| kept(resp, n)) {
        field(&mut out, name, value);
    }
    if resp.header(b"date").is_none() {
        // RFC 9110 6.6.1: a cache records when a response without Date was received, and
        // serves it with that Date (and its Age), not the time it is served.
        crate::date::with_date(|d| field(&mut out, b"date", d));
    }
    out.extend_from_slice(b"\r\n");
    reparse(out, limits)
}

/// A head coregate wrote, parsed (it holds what the upstream's parsed head held, less).
pub(super) fn reparse(out: Vec<u8>, limits: &proto_http::Limits) -> Result<ResponseHead, Error> {
    match parse_response(&out, limits, false) {
        Ok(Some(meta)) => Ok(ResponseHead::new(out.into(), meta)),
        // Complete by construction: only a head over the size limit is cut short.
        Ok(None) => Err(Error::malformed(Side::Upstream, proto_http::ParseError::HeadTooLarge)),
        Err(e) => Err(Error::malformed(Side::Upstream, e)),
    }
}
