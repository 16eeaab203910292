//! Starting, reloading and stopping the set of workers: bind listeners, pick the driver,
//! spawn one pinned thread per worker, wait until every runtime is up; on a reload, start the
//! next generation on the same sockets and drain the old; later, drain and join.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use config::Config;

use crate::driver::Driver;
use crate::listener::Sockets;
use crate::ratelimit::{Grant, ToBank};
use crate::worker::{self, Spawn};

/// Why the server could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// A running gateway: the generation of workers serving now, and those a reload replaced
/// that are still draining.
pub struct Server {
    current: Generation,
    /// Generations replaced by [`Server::reload`], draining; each is joined by
    /// [`Server::join`], or at a later reload once it has stopped.
    retired: Vec<Generation>,
    /// The listening sockets, kept for the next generation (`listener::Sockets`).
    sockets: Sockets,
    /// The admin listener by its configured address, kept the same way.
    admin_socket: Option<(SocketAddr, std::net::TcpListener)>,
}

/// One configuration's workers and the threads that serve them (health checks, admin,
/// rate-limit bank). A reload starts a new one and drains the old.
struct Generation {
    addrs: Vec<SocketAddr>,
    driver: Driver,
    workers: usize,
    /// The one piece of cross-core state (control plane, never the request path): set on
    /// SIGTERM/SIGINT or when a reload retires the generation, read by each worker's 50 ms
    /// control tick.
    shutdown: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// The health-check threads and the admin thread end when this is dropped.
    checks_stop: Option<crossbeam_channel::Sender<()>>,
    checks: Vec<JoinHandle<()>>,
    admin_thread: Option<JoinHandle<()>>,
    admin: Option<SocketAddr>,
    /// The TLS configuration of `[tls]` listeners; a reload's takes its session-ticket key.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// A message per worker once its drain has stopped its accept loops.
    stopped_accepting: crossbeam_channel::Receiver<()>,
}

/// What a started generation hands back to the [`Server`] to keep.
struct Launched {
    generation: Generation,
    kept: Vec<crate::listener::Kept>,
    admin_socket: Option<(SocketAddr, std::net::TcpListener)>,
}

impl Server {
    /// Binds every listen address and starts the workers. Returns once all are serving.
    pub fn start(cfg: Config) -> Result<Server, StartError> {
        let sockets = Sockets::default();
        let Launched { generation, kept, admin_socket } = launch(cfg, &sockets, None, None)?;
        let mut server = Server { current: generation, retired: Vec::new(), sockets, admin_socket };
        server.sockets.keep(kept);
        Ok(server)
    }

    /// Replaces the running configuration by `cfg` without refusing or losing a connection:
    /// a new generation of workers starts on the same listening sockets (addresses no longer
    /// configured close, new ones are bound) and takes every new connection; the old one
    /// drains as on SIGTERM (idle keep-alive connections close, requests in flight finish
    /// with `connection: close` within the old `timeouts.drain`). Everything in `cfg` takes
    /// effect; rate-limit counts, the response cache and metrics counters start afresh, TLS
    /// session tickets stay valid. `server.workers` cannot change (the listening sockets
    /// are one per worker). On an error the running generation stays as it was.
    pub fn reload(&mut self, cfg: Config) -> Result<(), StartError> {
        let (now, asked) = (self.current.workers, cfg.server.workers.get());
        if now != asked {
            return Err(StartError(format!("server.workers cannot change on a reload ({now} -> {asked}); restart")));
        }
        let (finished, draining): (Vec<_>, Vec<_>) = self.retired.drain(..).partition(Generation::stopped);
        self.retired = draining;
        finished.into_iter().for_each(Generation::join);
        let launched = launch(cfg, &self.sockets, self.admin_socket.as_ref(), self.current.tls.as_deref())?;
        self.sockets.keep(launched.kept);
        self.admin_socket = launched.admin_socket;
        let mut old = std::mem::replace(&mut self.current, launched.generation);
        old.retire();
        // Return once the old generation has stopped accepting (within its next 50 ms control
        // tick), so that every connection made after this call meets the new configuration.
        for _ in 0..old.workers {
            if old.stopped_accepting.recv_timeout(Duration::from_secs(5)).is_err() {
                log::warn!("reload: a worker of the previous configuration did not stop accepting within 5 s");
                break;
            }
        }
        self.retired.push(old);
        Ok(())
    }

    /// The addresses actually bound (port 0 resolved): `server.listen`'s, then
    /// `tls.listen`'s.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.current.addrs
    }

    /// The admin listener's address (`admin.listen`, port 0 resolved), if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.current.admin
    }

    pub fn driver(&self) -> Driver {
        self.current.driver
    }

    /// Starts the drain: workers stop accepting, close idle connections and finish the
    /// requests in flight within `timeouts.drain`; the listening sockets close.
    pub fn shutdown(&mut self) {
        for g in self.retired.iter().chain([&self.current]) {
            g.shutdown.store(true, Ordering::Relaxed);
        }
        self.sockets.keep(Vec::new());
        self.admin_socket = None;
    }

    /// Waits for every worker (of every generation) to finish, then stops the health checks.
    pub fn join(self) {
        self.retired.into_iter().for_each(Generation::join);
        self.current.join();
    }
}

impl Generation {
    /// Stops this generation's admin thread (the next one serves the admin address), then
    /// starts its drain. Its health checks stop too: their last verdicts stand while it drains.
    fn retire(&mut self) {
        self.checks_stop = None;
        if let Some(t) = self.admin_thread.take() {
            let _ = t.join();
        }
        self.shutdown.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    fn join(mut self) {
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
/// address is unchanged); `tls_from`: the running TLS configuration, whose session-ticket
/// key the new one keeps. Returns once every worker serves.
fn launch(
    cfg: Config,
    sockets: &Sockets,
    admin: Option<&(SocketAddr, std::net::TcpListener)>,
    tls_from: Option<&rustls::ServerConfig>,
) -> Result<Launched, StartError> {
    let driver = Driver::select(cfg.server.io).map_err(StartError)?;
    let workers = cfg.server.workers.get();
    let tls = match cfg.tls.listen.is_empty() {
        true => None,
        false => {
            let config = crate::tls::server_config(&cfg.tls).map_err(StartError)?;
            Some(Arc::new(match tls_from {
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
    let mut banks = start_bank(&cfg, workers);
    let verdicts = crate::health::verdicts(&cfg);
    let in_flight = crate::concurrency::in_flight(&cfg);
    let (checks_stop, stop_rx) = crossbeam_channel::bounded(0);
    let admin = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    let stats: Vec<_> =
        (0..workers).map(|_| admin.is_some().then(|| Arc::new(crate::metrics::Stats::new(&cfg)))).collect();
    let log = match &cfg.access_log {
        Some(dest) => Some(Arc::new(crate::access_log::Sink::open(dest).map_err(|e| StartError(e.to_string()))?)),
        None => None,
    };
    let cache =
        cfg.routes.iter().any(|r| r.cache.is_some()).then(|| Arc::new(crate::cache::Cache::new(cfg.cache.max_bytes)));
    let checks = crate::health::start_checks(&cfg, &verdicts, &stop_rx, &upstream_tls);
    let admin_thread = match admin_listener {
        Some(listener) => {
            let registry = crate::metrics::Registry {
                cfg: cfg.clone(),
                workers: stats.iter().flatten().cloned().collect(),
                verdicts: verdicts.clone(),
                draining: shutdown.clone(),
                cache: cache.clone(),
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
        driver,
        workers,
        shutdown: shutdown.clone(),
        threads: Vec::new(),
        checks_stop: Some(checks_stop),
        checks,
        admin_thread,
        admin,
        tls: tls.clone(),
        stopped_accepting,
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
            upstream_tls: upstream_tls.clone(),
            in_flight: in_flight.clone(),
        };
        match worker::spawn(spawn) {
            Ok(t) => threads.push(t),
            Err(e) => {
                generation.threads = threads;
                generation.retire();
                generation.join();
                return Err(StartError(format!("cannot start worker thread: {e}")));
            }
        }
    }
    generation.threads = threads;
    drop(ready_tx);
    drop(banks);
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

/// Starts the rate-limit bank thread when some route has a limit; returns the channel to it
/// and one grant channel per worker. The bank exits when every worker has gone.
fn start_bank(cfg: &Config, workers: usize) -> Option<BankChannels> {
    let limits = crate::ratelimit::all_limits(cfg);
    if limits.is_empty() {
        return None;
    }
    let (to_bank, requests) = crossbeam_channel::unbounded();
    let (grant_txs, grant_rxs): (Vec<_>, Vec<_>) = (0..workers).map(|_| crossbeam_channel::unbounded()).unzip();
    let spawned = std::thread::Builder::new()
        .name("coregate-bank".into())
        .spawn(move || crate::ratelimit::Bank::new(limits).run(requests, grant_txs));
    if let Err(e) = spawned {
        log::error!("cannot start the rate-limit bank: {e}; rate limits will admit everything");
        return None;
    }
    Some((to_bank, grant_rxs))
}
