//! stale-while-revalidate's background refresh (RFC 5861 3): a stale stored response has
//! answered a request at once, and a task of the worker's own fetches the target from the
//! upstream with that request's head as it would have gone (preconditions from the stored
//! response added), then stores the answer, or refreshes the stored response from a 304, as
//! a miss or a revalidation would. One refresh per target at a time: the lookup claims the
//! target ([`super::Cache::claim`]) and the plan here releases it when the task ends.
//!
//! Left to others: when a stale response answers and what the job holds
//! ([`super::serve::lookup`]), storing ([`super::fill`]).

use std::rc::Rc;
use std::sync::Arc;

use proto_http::RequestHead;

use super::fill::{on_response, After};
use super::rules::Ask;
use super::serve::{Plan, UPDATING};
use super::Stored;
use crate::body::{discard, Leg};
use crate::error::{Error, Side};
use crate::upstream::aside;
use crate::worker::Worker;

/// A refresh to run: everything the lookup knew that the task needs after the request
/// that found the stale response has gone.
pub(super) struct Job {
    pub upstream: usize,
    pub route: usize,
    /// The target's key in the store, claimed for this refresh.
    pub key: Vec<u8>,
    pub ask: Ask,
    /// The authenticated consumer, whose variant this is.
    pub consumer: Option<Box<[u8]>>,
    /// The stale response, when its validators went upstream: a 304 refreshes it.
    pub revalidate: Option<Arc<Stored>>,
    /// The request (its head copied: the client's buffer is not held by the task).
    pub req: RequestHead,
    /// The request head as it goes upstream.
    pub head: Vec<u8>,
}

/// Runs `job` on a task of this worker. A worker already gone (shutting down) leaves the
/// target unclaimed and the stale response as it is.
pub(super) fn spawn(w: &Worker, job: Job) {
    let Some(rc) = w.me.upgrade() else {
        if let Some(cache) = &w.cache {
            cache.release(&job.key);
        }
        return;
    };
    monoio::spawn(async move {
        let upstream = job.upstream;
        if let Err(e) = refresh(&rc, job).await {
            log::debug!("refreshing a stale response from upstream {:?}: {e}", rc.cfg.upstreams[upstream].name);
        }
    });
}

async fn refresh(w: &Rc<Worker>, job: Job) -> Result<(), Error> {
    let cache = w.cache.as_deref().expect("a route with cache has the store");
    let plan = Plan::claimed(
        cache,
        w.cfg.routes[job.route].cache.as_ref().expect("a route with cache"),
        job.key,
        job.ask,
        job.consumer.as_deref(),
        UPDATING,
        job.revalidate,
    );
    let up_cfg = &w.cfg.upstreams[job.upstream];
    let timeout = w.cfg.routes[job.route].response_timeout.unwrap_or(up_cfg.response_timeout);
    let (req, key) = (&job.req, &plan.key);
    aside(w, job.upstream, job.head, false, timeout, async |up, resp| {
        let leg = Leg { from: Side::Upstream, to: Side::Client, read_timeout: timeout, write_timeout: timeout };
        if let After::Stream = on_response(w, &plan, req, &resp, up, &leg).await? {
            // Not stored: an answer the upstream no longer lets a cache keep (no-store, a
            // 403, ...) ends the stale answers; a 5xx leaves them to their window.
            if resp.meta.status < 500 {
                cache.invalidate(key);
            }
            discard(up, resp.meta.body, &w.cfg.limits.wire, timeout).await?;
        }
        Ok((resp.meta, ()))
    })
    .await
}
