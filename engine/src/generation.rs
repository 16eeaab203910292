//! One generation of workers: a configuration's worker threads and the threads that serve
//! them (health checks, the admin listener, the rate-limit bank), started together on the
//! listening sockets the [`Server`](crate::Server) keeps, and retired together by a reload
//! or a shutdown. Which sockets are kept, and when generations change, is `server`'s.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use config::Config;

use crate::driver::Driver;
use crate::listener::{Kept, Sockets};
use crate::ratelimit::{Grant, ToBank};
use crate::server::StartError;
use crate::worker::{self, Spawn};

/// One configuration's workers and the threads that serve them (health checks, admin,
/// rate-limit bank). A reload starts a new one and drains the old.
pub(crate) struct Generation {
    pub(crate) addrs: Vec<SocketAddr>,
    /// The configuration it runs (upstream names are resolved again from it).
    pub(crate) cfg: Arc<Config>,
    pub(crate) driver: Driver,
    pub(crate) workers: usize,
    /// Reloads before this generation (0: the one started first).
    pub(crate) number: u64,
    /// The one piece of cross-core state (control plane, never the request path): set on
    /// SIGTERM/SIGINT or when a reload retires the generation, read by each worker's 50 ms
    /// control tick.
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) threads: Vec<JoinHandle<()>>,
    /// The health-check threads and the admin thread end when this is dropped.
    pub(crate) checks_stop: Option<crossbeam_channel::Sender<()>>,
    pub(crate) checks: Vec<JoinHandle<()>>,
    pub(crate) admin_thread: Option<JoinHandle<()>>,
    pub(crate) admin: Option<SocketAddr>,
    /// The TLS configuration of `[tls]` listeners; a reload's takes its session-ticket key.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// A message per worker once its drain has stopped its accept loops.
    pub(crate) stopped_accepting: crossbeam_channel::Receiver<()>,
    /// The response cache, which a reload keeps.
    pub(crate) cache: Option<Arc<crate::cache::Cache>>,
    /// The rate-limit bank's balances, which a reload's bank starts from.
    pub(crate) bank: Option<BankState>,
    /// Its endpoints' states (`health::Verdicts`), whose drains a reload keeps.
    pub(crate) verdicts: crate::health::Verdicts,
    /// Connections open per client address (`server.max_connections_per_ip`), which a
    /// reload keeps: the draining generation's connections still count.
    pub(crate) per_ip: Option<Arc<crate::per_ip::PerIp>>,
}

/// What a started generation hands back to the [`Server`] to keep.
pub(crate) struct Launched {
    pub(crate) generation: Generation,
    pub(crate) kept: Vec<Kept>,
    pub(crate) admin_socket: Option<(SocketAddr, std::net::TcpListener)>,
}

impl Generation {
    /// Stops this generation's admin thread (the next one serves the admin address), then
    /// starts its drain. Its health checks stop too: their last verdicts stand while it drains.
    pub(crate) fn retire(&mut self) {
        self.checks_stop = None;
        if let Some(t) = self.admin_thread.take() {
            let _ = t.join();
        }
        self.shutdown.store(true, Ordering::Relaxed);
    }

    pub(crate) fn stopped(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    pub(crate) fn join(mut self) {
        for t in self.threads {
            let _ = t.join();
        }
        drop(self.checks_stop.take());
        for t in self.checks.into_iter().chain(self.admin_thread) {
            let _ = t.join();
        }
    }
}

/// Starts the workers of `cfg` on `sockets` (and the admin listener on `admin` when its
/// address is unchanged); `running`: the generation it succeeds, whose generated TLS
/// session-ticket key the new one keeps (when both generate theirs), whose response cache
/// it keeps when `cache.max_bytes` is the same, and whose rate-limit balances its bank
/// starts from (unchanged routes and limits find theirs: [`crate::route::fingerprints`]);
/// `number`: reloads before this one (0 at start).
/// Returns once every worker serves.
pub(crate) fn launch(
    number: u64,
    cfg: Config,
    sockets: &Sockets,
    admin: Option<&(SocketAddr, std::net::TcpListener)>,
    running: Option<&Generation>,
    jwks_wanted: &crossbeam_channel::Sender<()>,
) -> Result<Launched, StartError> {
    let driver = Driver::select(cfg.server.io).map_err(StartError)?;
    if cfg.server.io_batch.is_some() && (driver == Driver::Epoll || !crate::driver::batch_supported()) {
        log::warn!(
            "server.batch_wait_us is not in effect: it needs io_uring on Linux 6.12 or later (the workers run on {})",
            driver.name()
        );
    }
    let workers = cfg.server.workers.get();
    let tls = match cfg.tls.listen.is_empty() {
        true => None,
        false => {
            let config = crate::tls::server_config(&cfg.tls).map_err(StartError)?;
            let generated = |t: &config::Tls| matches!(t.session_tickets, config::SessionTickets::Generated);
            let keep = running.filter(|g| generated(&g.cfg.tls) && generated(&cfg.tls)).and_then(|g| g.tls.as_deref());
            Some(Arc::new(match keep {
                Some(running) => crate::tls::successor(running, config),
                None => config,
            }))
        }
    };
    let upstream_tls = crate::upstream_tls::clients(&cfg).map_err(StartError)?;
    let all: Vec<SocketAddr> = cfg.server.listen.iter().chain(&cfg.tls.listen).copied().collect();
    let opened = sockets.open(&all, workers).map_err(|e| StartError(e.to_string()))?;
    let plain = cfg.server.listen.len();
    let admin_socket = match (cfg.admin, admin) {
        (Some(a), Some((was, l))) if a == *was => {
            Some((a, l.try_clone().map_err(|e| StartError(format!("admin listener: {e}")))?))
        }
        (Some(a), _) => Some((
            a,
            std::net::TcpListener::bind(a).map_err(|e| StartError(format!("cannot listen on {a} (admin): {e}")))?,
        )),
        (None, _) => None,
    };
    let admin_listener = match &admin_socket {
        Some((_, l)) => Some(l.try_clone().map_err(|e| StartError(format!("admin listener: {e}")))?),
        None => None,
    };
    let addrs = opened.bound;
    let cores = if cfg.server.pin_cores { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    let cfg = Arc::new(cfg);
    let shutdown = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stopped_tx, stopped_accepting) = crossbeam_channel::unbounded();
    let mut threads = Vec::with_capacity(workers);
    let (mut banks, bank) = start_bank(&cfg, workers, running.and_then(|g| g.bank.as_ref())).unzip();
    let verdicts = crate::health::verdicts(&cfg, running.map(|g| (&*g.cfg, &g.verdicts)));
    let in_flight = crate::concurrency::in_flight(&cfg);
    let (checks_stop, stop_rx) = crossbeam_channel::bounded(0);
    let admin = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    let stats: Vec<_> =
        (0..workers).map(|_| admin.is_some().then(|| Arc::new(crate::metrics::Stats::new(&cfg)))).collect();
    let log = match &cfg.access_log {
        Some(dest) => Some(Arc::new(crate::access_log::Sink::open(dest).map_err(|e| StartError(e.to_string()))?)),
        None => None,
    };
    let kept_cache = running.and_then(|g| g.cache.clone()).filter(|c| c.max_bytes() == cfg.cache.max_bytes);
    let cache = cfg
        .routes
        .iter()
        .any(|r| r.cache.is_some())
        .then(|| kept_cache.unwrap_or_else(|| Arc::new(crate::cache::Cache::new(cfg.cache.max_bytes))));
    let per_ip = cfg
        .server
        .max_connections_per_ip
        .map(|_| running.and_then(|g| g.per_ip.clone()).unwrap_or_else(crate::per_ip::PerIp::new));
    let mut checks = crate::health::start_checks(&cfg, &verdicts, &stop_rx, &upstream_tls);
    // The trace exporter ends once every worker (every sender) has.
    let mut spans = match &cfg.tracing {
        Some(t) => {
            let (spans, thread) = crate::tracing::start_exporter(t)
                .map_err(|e| StartError(format!("cannot start the trace exporter: {e}")))?;
            checks.push(thread);
            Some(spans)
        }
        None => None,
    };
    let admin_thread = match admin_listener {
        Some(listener) => {
            let registry = crate::metrics::Registry {
                cfg: cfg.clone(),
                workers: stats.iter().flatten().cloned().collect(),
                verdicts: verdicts.clone(),
                draining: shutdown.clone(),
                cache: cache.clone(),
                in_flight: in_flight.clone(),
                generation: number,
            };
            Some(
                crate::admin::start(listener, registry, stop_rx.clone())
                    .map_err(|e| StartError(format!("cannot start the admin listener: {e}")))?,
            )
        }
        None => None,
    };
    let mut generation = Generation {
        addrs,
        cfg: cfg.clone(),
        driver,
        workers,
        number,
        shutdown: shutdown.clone(),
        threads: Vec::new(),
        checks_stop: Some(checks_stop),
        checks,
        admin_thread,
        admin,
        tls: tls.clone(),
        stopped_accepting,
        cache: cache.clone(),
        bank,
        per_ip: per_ip.clone(),
        verdicts: verdicts.clone(),
    };
    for (id, mut listeners) in opened.per_worker.into_iter().enumerate() {
        let tls_listeners = listeners.split_off(plain);
        let spawn = Spawn {
            id,
            cfg: cfg.clone(),
            driver,
            listeners,
            tls_listeners,
            tls: tls.clone(),
            core: (!cores.is_empty()).then(|| cores[id % cores.len()]),
            shutdown: shutdown.clone(),
            ready: ready_tx.clone(),
            stopped_accepting: stopped_tx.clone(),
            bank: banks.as_mut().map(|(tx, rxs)| (tx.clone(), rxs.remove(0))),
            verdicts: verdicts.clone(),
            stats: stats[id].clone(),
            log: log.clone(),
            cache: cache.clone(),
            per_ip: per_ip.clone(),
            jwks_wanted: jwks_wanted.clone(),
            spans: spans.clone(),
            upstream_tls: upstream_tls.clone(),
            in_flight: in_flight.clone(),
        };
        match worker::spawn(spawn) {
            Ok(t) => threads.push(t),
            Err(e) => {
                generation.threads = threads;
                generation.retire();
                // The exporter ends with the last sender: the workers' and this one.
                drop(spans.take());
                generation.join();
                return Err(StartError(format!("cannot start worker thread: {e}")));
            }
        }
    }
    generation.threads = threads;
    drop(ready_tx);
    drop(banks);
    drop(spans);
    for _ in 0..workers {
        let failed = match ready_rx.recv() {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("cannot start the {} runtime: {e}", driver.name()),
            Err(_) => "a worker exited during startup".into(),
        };
        generation.retire();
        generation.join();
        return Err(StartError(failed));
    }
    log::info!("coregate serving on {:?} with {workers} workers on {}", generation.addrs, driver.name());
    Ok(Launched { generation, kept: opened.keep, admin_socket })
}

type BankChannels = (crossbeam_channel::Sender<ToBank>, Vec<crossbeam_channel::Receiver<Grant>>);

/// A bank's balances and its limits' fingerprints, which the next generation's bank starts
/// from.
pub(crate) type BankState = (crate::ratelimit::Balances, Vec<u64>);

/// Starts the rate-limit bank thread when some route has a limit, with the balances of
/// `running`'s bank for the limits that did not change; returns the channel to it, one grant
/// channel per worker, and its state. The bank exits when every worker has gone.
fn start_bank(cfg: &Config, workers: usize, running: Option<&BankState>) -> Option<(BankChannels, BankState)> {
    let limits = crate::ratelimit::all_limits(cfg);
    if limits.is_empty() {
        return None;
    }
    let ids = crate::ratelimit::identities(cfg);
    let balances = crate::ratelimit::Balances::default();
    if let Some((old, old_ids)) = running {
        *balances.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            crate::ratelimit::carry(old, old_ids, &ids);
    }
    let state = (balances.clone(), ids);
    let (to_bank, requests) = crossbeam_channel::unbounded();
    let (grant_txs, grant_rxs): (Vec<_>, Vec<_>) = (0..workers).map(|_| crossbeam_channel::unbounded()).unzip();
    let spawned = std::thread::Builder::new()
        .name("coregate-bank".into())
        .spawn(move || crate::ratelimit::Bank::new(limits, balances).run(requests, grant_txs));
    if let Err(e) = spawned {
        log::error!("cannot start the rate-limit bank: {e}; rate limits will admit everything");
        return None;
    }
    Some(((to_bank, grant_rxs), state))
}
