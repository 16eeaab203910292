//! A worker: one OS thread pinned to a core, one runtime, its own listeners, route table,
//! pools and drain state. It shares with other threads the shutdown flag, read by its
//! control tick (never on the request path), and the exceptions `lib.rs` names.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use config::Config;
use monoio::io::Canceller;
use monoio::net::{TcpListener, TcpStream};
use proto_http::RequestHead;
use slab::Slab;

use crate::access_log::{AccessLog, Entry, Sink};
use crate::arena::Arena;
use crate::auth::ApiKeys;
use crate::conn;
use crate::driver::Driver;
use crate::health::Health;
use crate::metrics::Stats;
use crate::pool::Pool;
use crate::ratelimit::{Buckets, Grant, ToBank};
use crate::request_id::Ids;
use crate::route::RouteTable;
use crate::shutdown::Drain;
use crate::timers::CoarseTimers;

/// How often a worker looks at the process-wide shutdown flag, fires its timers and sweeps
/// its pools.
const CONTROL_TICK: Duration = crate::timers::TICK;
const SWEEP_EVERY: u32 = 20;

/// Per-core state, owned by the worker thread and passed to its tasks by `Rc`.
pub(crate) struct Worker {
    /// Itself, for tasks that outlive the request that starts them (mirrored copies).
    pub me: std::rc::Weak<Worker>,
    pub cfg: Arc<Config>,
    pub routes: RouteTable,
    pub pool: RefCell<Pool>,
    /// The batch of pipelined requests open for each upstream (`upstreams[].pipeline`).
    pub pipelines: crate::pipeline::Open,
    /// Which endpoint each request tries first (`upstreams[].balance`).
    pub balance: crate::balance::Balancer,
    /// Which upstream each request of a split route goes to (`routes[].split`).
    pub split: crate::split::Splitter,
    /// Sampling and copies in flight of mirrored routes (`routes[].mirror`).
    pub mirrors: crate::mirror::Mirrors,
    /// Delay and abort shares of routes with `fault`.
    pub faults: crate::fault::Faults,
    /// Retry budgets and backoff jitter (`upstreams[].retries`).
    pub retries: crate::retry::Retries,
    /// Requests in flight and queued per upstream, shared by the workers
    /// (`upstreams[].max_requests`, `queue`).
    pub in_flight: crate::concurrency::InFlight,
    /// This worker's requests waiting in upstream queues.
    pub waiting: crate::concurrency::Waiting,
    /// Which endpoints take requests (passive circuits, active checks' verdicts).
    pub health: Health,
    pub drain: Drain,
    /// Every timeout of this worker's connections, fired by the control tick.
    pub timers: Rc<CoarseTimers>,
    /// Recycled blocks for the per-request futures of this worker's connections.
    pub arena: Arena,
    pub keys: ApiKeys,
    /// Basic users (`auth = "basic"`) and the credentials verified here.
    pub basic: crate::basic_auth::BasicUsers,
    /// This core's side of the rate limits (None when no route has one).
    pub buckets: Option<RefCell<Buckets>>,
    /// Global id of each route's first rate limit.
    pub limit_ids: Vec<u32>,
    /// Global id of each consumer's first rate limit (`consumers[].rate_limits`).
    pub consumer_limit_ids: Vec<u32>,
    /// Reused buffer for bucket keys.
    pub scratch: RefCell<Vec<u8>>,
    /// The worker runs on io_uring, where a cancelled read may still complete
    /// ([`crate::io::Conn::fill_cancellable`]).
    pub uring: bool,
    /// The descriptors of the client connections open on this worker, closed from here when
    /// the drain times out (see `run`).
    pub open: RefCell<Slab<RawFd>>,
    /// Accept loops still running; the drain waits for them so listeners close promptly.
    pub accepting: Cell<usize>,
    /// The TLS configuration of `[tls]` listeners.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// This worker's counters, when the admin listener serves metrics.
    pub stats: Option<Arc<Stats>>,
    /// This worker's side of the access log, when there is one.
    pub log: Option<AccessLog>,
    /// Makes request ids (`server.request_id`).
    pub ids: Ids,
    /// Spans of the requests, when `[tracing]` is on.
    pub tracer: Option<crate::tracing::Tracer>,
    /// The response cache, when a route has `cache`.
    pub cache: Option<Arc<crate::cache::Cache>>,
    /// Connections open per client address over all workers, with
    /// `server.max_connections_per_ip` (`per_ip`).
    pub per_ip: Option<Arc<crate::per_ip::PerIp>>,
    /// Told (never waited on) when a token names a key the remote JWT key set lacks: the
    /// server fetches the set again ([`crate::Server::refresh_jwks_for_unknown_key`]).
    pub jwks_wanted: crossbeam_channel::Sender<()>,
    /// Each route's space in the cache's keys ([`crate::route::fingerprints`]).
    pub cache_spaces: Box<[u64]>,
    /// The TLS client side of each HTTPS upstream.
    pub upstream_tls: crate::upstream_tls::Clients,
}

impl Worker {
    /// Whether a client connection may stay open after the answer being written: not in a
    /// drain, and within `server.keepalive_requests` and `server.keepalive_time`. When not,
    /// the answer says `Connection: close` (RFC 9112 9.6), so the client sends nothing more
    /// on a connection about to close.
    pub(crate) fn keeps(&self, client: &crate::io::Conn) -> bool {
        let s = &self.cfg.server;
        !self.drain.is_draining() && !client.worn(s.keepalive_requests, s.keepalive_time, self.timers.now())
    }

    fn count_connections(&self) {
        if let Some(stats) = &self.stats {
            stats.connections.set(self.open.borrow().len() as u64);
        }
    }

    /// Counts a cache lookup by its `X-Cache-Status`.
    pub(crate) fn count_cache(&self, status: &[u8]) {
        if let Some(stats) = &self.stats {
            stats.cache(status);
        }
    }

    /// Counts a route's timeout running out, by what the client got.
    pub(crate) fn count_route_timeout(&self, route: Option<usize>, answer: crate::deadline::Answer) {
        if let (Some(stats), Some(route)) = (&self.stats, route) {
            stats.route_timeout(route, answer);
        }
    }

    /// Requests are counted or logged.
    #[inline]
    pub(crate) fn observed(&self) -> bool {
        self.stats.is_some() || self.log.is_some()
    }

    /// Counts and logs one answered request (status 0: closed unanswered); `client`: its
    /// address as text and its connection's TLS state.
    pub(crate) fn observe(
        &self,
        req: Option<&RequestHead>,
        outcome: &crate::proxy::Outcome,
        status: u16,
        took: Duration,
        (client, tls): (&[u8], Option<&crate::tls::Tls>),
        tags: crate::proxy::Tags<'_>,
    ) {
        let route = outcome.route;
        if let Some(stats) = &self.stats {
            stats.request(route, outcome.upstream, status, took);
        }
        if let Some(log) = &self.log {
            log.log(&Entry {
                client,
                request: req,
                request_id: tags.request_id.map(|(_, id)| id),
                // The trace id: the second field of `traceparent`.
                trace_id: tags.traceparent.map(|t| &t[3..35]),
                status,
                route: route.map_or("", |r| self.cfg.routes[r].name.as_str()),
                upstream: outcome.upstream.map(|u| self.cfg.upstreams[u].name.as_str()),
                endpoint: outcome.upstream.zip(outcome.endpoint).map(|(u, e)| self.cfg.upstreams[u].endpoints[e]),
                upstream_time: outcome.upstream_time,
                consumer: outcome.consumer.as_deref(),
                took,
                cache: outcome.cache,
                sent: outcome.sent,
                tls: tls.and_then(crate::tls::Tls::handshake_outcome),
            });
        }
    }
}

pub(crate) struct Spawn {
    pub id: usize,
    pub cfg: Arc<Config>,
    pub driver: Driver,
    pub listeners: Vec<std::net::TcpListener>,
    /// Listeners whose connections speak TLS (`[tls]`), with the configuration for them.
    pub tls_listeners: Vec<std::net::TcpListener>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub core: Option<core_affinity::CoreId>,
    /// Control plane only: read by the control tick, never on the request path.
    pub shutdown: Arc<AtomicBool>,
    /// Told once the runtime is up (or why it could not start).
    pub ready: mpsc::Sender<io::Result<()>>,
    /// Told once the drain has ended every accept loop (a reload waits for it).
    pub stopped_accepting: crossbeam_channel::Sender<()>,
    /// Channels to the rate-limit bank, when there is one.
    pub bank: Option<(crossbeam_channel::Sender<ToBank>, crossbeam_channel::Receiver<Grant>)>,
    /// The active health checks' verdicts.
    pub verdicts: crate::health::Verdicts,
    pub stats: Option<Arc<Stats>>,
    pub log: Option<Arc<Sink>>,
    pub cache: Option<Arc<crate::cache::Cache>>,
    pub per_ip: Option<Arc<crate::per_ip::PerIp>>,
    pub jwks_wanted: crossbeam_channel::Sender<()>,
    /// Where sampled spans go (`[tracing]`).
    pub spans: Option<crossbeam_channel::Sender<crate::tracing::Span>>,
    pub upstream_tls: crate::upstream_tls::Clients,
    pub in_flight: crate::concurrency::InFlight,
}

pub(crate) fn spawn(s: Spawn) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().name(format!("coregate-w{}", s.id)).spawn(move || {
        if let Some(core) = s.core {
            if !core_affinity::set_for_current(core) {
                log::warn!("worker {} could not be pinned to core {}", s.id, core.id);
            }
        }
        let (ready, driver, batch) = (s.ready.clone(), s.driver, s.cfg.server.io_batch);
        driver.run(batch, move |r| drop(ready.send(r)), run(s));
    })
}

async fn run(s: Spawn) {
    let Spawn {
        id,
        cfg,
        driver,
        listeners,
        tls_listeners,
        tls,
        shutdown,
        bank,
        verdicts,
        stats,
        log,
        cache,
        per_ip,
        jwks_wanted,
        spans,
        upstream_tls,
        stopped_accepting,
        in_flight,
        ..
    } = s;
    let (limit_ids, consumer_limit_ids) = crate::ratelimit::first_ids(&cfg);
    let buckets = bank.map(|(tx, rx)| {
        RefCell::new(Buckets::new(id, cfg.server.workers.get(), crate::ratelimit::all_limits(&cfg), tx, rx))
    });
    let tracer = match (&cfg.tracing, spans) {
        (Some(t), Some(spans)) => Some(crate::tracing::Tracer::new(t, spans, stats.clone())),
        _ => None,
    };
    let w = Rc::new_cyclic(|me| Worker {
        me: me.clone(),
        keys: ApiKeys::new(&cfg.consumers),
        basic: crate::basic_auth::BasicUsers::new(&cfg.consumers),
        buckets,
        limit_ids,
        consumer_limit_ids,
        scratch: RefCell::new(Vec::new()),
        routes: RouteTable::new(&cfg.routes),
        pool: RefCell::new(Pool::new(cfg.upstreams.iter().map(|u| u.endpoints.len()))),
        pipelines: crate::pipeline::Open::new(cfg.upstreams.len()),
        balance: crate::balance::Balancer::new(&cfg),
        split: crate::split::Splitter::new(&cfg),
        mirrors: crate::mirror::Mirrors::new(&cfg),
        faults: crate::fault::Faults::new(&cfg),
        retries: crate::retry::Retries::new(&cfg),
        in_flight,
        waiting: crate::concurrency::Waiting::new(&cfg),
        health: Health::new(&cfg, verdicts, stats.clone()),
        drain: Drain::default(),
        timers: Rc::new(CoarseTimers::default()),
        arena: Arena::default(),
        uring: driver == Driver::IoUring,
        open: RefCell::new(Slab::new()),
        accepting: Cell::new(0),
        tls,
        stats,
        log: log.map(AccessLog::new),
        ids: Ids::new(),
        tracer,
        cache_spaces: if cache.is_some() { crate::route::fingerprints(&cfg) } else { Box::new([]) },
        cache,
        per_ip,
        jwks_wanted,
        upstream_tls,
        cfg,
    });
    // The listeners come in the order of `server.listen`, then `tls.listen`.
    let proxied = |a| w.cfg.server.proxy_protocol.on(a);
    let plain = listeners.into_iter().zip(&w.cfg.server.listen).map(|(l, a)| (l, false, proxied(a)));
    let secure = tls_listeners.into_iter().zip(&w.cfg.tls.listen).map(|(l, a)| (l, true, proxied(a)));
    for (l, tls, proxied) in plain.chain(secure) {
        match TcpListener::from_std(l) {
            Ok(l) => {
                w.accepting.set(w.accepting.get() + 1);
                monoio::spawn(accept_loop(w.clone(), l, Accepted { tls, proxied }));
            }
            Err(e) => log::error!("cannot register listener: {e}"),
        }
    }
    if w.buckets.is_some() {
        monoio::spawn(collect_grants(w.clone()));
    }
    if w.cfg.upstreams.iter().any(|u| u.pipeline > 1) {
        monoio::spawn(crate::pipeline::flusher(w.clone()));
    }
    let mut ticks = 0u32;
    crate::date::refresh();
    while !shutdown.load(Ordering::Relaxed) {
        monoio::time::sleep(CONTROL_TICK).await;
        ticks = ticks.wrapping_add(1);
        tick(&w);
        if let Some(log) = &w.log {
            log.flush();
        }
        if ticks.is_multiple_of(SWEEP_EVERY) {
            let cfg = &w.cfg;
            w.pool.borrow_mut().sweep(w.timers.now(), |u| {
                let up = &cfg.upstreams[u];
                (up.idle_timeout, up.max_idle_per_endpoint)
            });
        }
    }
    // Drain: stop accepting, close idle connections, let requests in flight finish.
    w.drain.start();
    let deadline = Instant::now() + w.cfg.timeouts.drain;
    wait_while(&w, deadline, || w.accepting.get() > 0).await;
    let _ = stopped_accepting.send(());
    wait_while(&w, deadline, || !w.open.borrow().is_empty()).await;
    if !w.open.borrow().is_empty() {
        close_open(&w).await;
    }
    if let Some(log) = &w.log {
        log.flush();
    }
}

/// Ends the connections still open when the drain times out: each socket is shut down both
/// ways, so that whatever its task waits for (a read, a write, a tunnel) ends with EOF or an
/// error and the task finishes, closing it and the upstream connection it holds. Without
/// this a task waiting on a silent peer would outlive the runtime: the binary exits anyway,
/// but an embedded `Server` would leave those sockets open after `join`.
async fn close_open(w: &Worker) {
    log::warn!("drain timeout: closing {} connections", w.open.borrow().len());
    for (_, &fd) in w.open.borrow().iter() {
        // SAFETY: the descriptor belongs to a live connection task: it leaves the slab in the
        // same poll in which its stream is dropped, and no task runs while this loop does.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
    wait_while(w, Instant::now() + Duration::from_secs(1), || !w.open.borrow().is_empty()).await;
}

/// The worker's clocks move on: expired timers fire, and the date is formatted again when
/// the second changed.
fn tick(w: &Worker) {
    w.timers.fire_expired(Instant::now());
    crate::date::refresh();
}

/// Checks `busy` every 10 ms until it turns false or `until` passes, firing the worker's
/// timers meanwhile: the connections still open in a drain keep their timeouts (a keep-alive
/// read's window, an upstream's response timeout).
async fn wait_while(w: &Worker, until: Instant, busy: impl Fn() -> bool) {
    while busy() && Instant::now() < until {
        monoio::time::sleep(Duration::from_millis(10)).await;
        tick(w);
    }
}

/// What a listener's connections start with.
#[derive(Debug, Clone, Copy)]
struct Accepted {
    /// TLS (`w.tls`).
    tls: bool,
    /// A PROXY protocol header (`server.proxy_protocol`).
    proxied: bool,
}

/// Accepts connections until the drain; `kind`: what they start with.
///
/// On io_uring the accept pending when the drain begins is cancelled and awaited, not
/// dropped: the kernel may already have accepted a connection for it, which a dropped
/// operation would leave open and unserved (a reload drains a generation while the sockets
/// stay open for the next). Such a connection is served. On epoll the accept is a
/// readiness wait and dropping it takes nothing from the queue.
async fn accept_loop(w: Rc<Worker>, listener: TcpListener, kind: Accepted) {
    let canceller = Canceller::new();
    loop {
        let mut accept = std::pin::pin!(listener.cancelable_accept(canceller.handle()));
        let accepted = monoio::select! {
            biased;
            r = &mut accept => r,
            _ = w.drain.wait() => {
                if w.uring {
                    drop(canceller.cancel());
                    if let Ok((stream, peer)) = accept.await {
                        admit(&w, stream, peer, kind);
                    }
                }
                break;
            }
        };
        match accepted {
            Ok((stream, peer)) => admit(&w, stream, peer, kind),
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                log::warn!("accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    w.accepting.set(w.accepting.get() - 1);
}

/// Serves an accepted connection on a task of its own, within the connection limit.
fn admit(w: &Rc<Worker>, stream: TcpStream, peer: SocketAddr, kind: Accepted) {
    if w.open.borrow().len() >= w.cfg.server.max_connections_per_worker {
        log::warn!("connection limit reached; closing {peer}");
        return;
    }
    // TCP_NODELAY comes from the listener (listener.rs).
    let key = w.open.borrow_mut().insert(stream.as_raw_fd());
    w.count_connections();
    let w = w.clone();
    monoio::spawn(async move {
        conn::serve(w.clone(), stream, peer, kind.tls, kind.proxied).await;
        w.open.borrow_mut().remove(key);
        w.count_connections();
    });
}

/// Collects rate-limit grants: every millisecond while leases are outstanding, else every
/// 20 ms; returns idle leases once a second.
async fn collect_grants(w: Rc<Worker>) {
    let Some(buckets) = &w.buckets else { return };
    let mut last_expiry = Instant::now();
    while !w.drain.is_draining() {
        let busy = buckets.borrow().outstanding > 0;
        monoio::time::sleep(Duration::from_millis(if busy { 1 } else { 20 })).await;
        let mut b = buckets.borrow_mut();
        b.collect();
        let now = Instant::now();
        if now.saturating_duration_since(last_expiry) >= Duration::from_secs(1) {
            b.expire(now);
            last_expiry = now;
        }
    }
}
