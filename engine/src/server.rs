//! Starting and stopping the set of workers: bind listeners, pick the driver, spawn one
//! pinned thread per worker, wait until every runtime is up; later, drain and join.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use config::Config;

use crate::driver::Driver;
use crate::listener::bind_all;
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

/// A running gateway.
pub struct Server {
    addrs: Vec<SocketAddr>,
    driver: Driver,
    /// The one piece of cross-core state (control plane, never the request path): set on
    /// SIGTERM/SIGINT, read by each worker's 50 ms control tick.
    shutdown: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// The health-check threads and the admin thread, which end when this is dropped.
    checks_stop: crossbeam_channel::Sender<()>,
    checks: Vec<JoinHandle<()>>,
    admin: Option<SocketAddr>,
    /// The TLS configuration new connections take, replaced by [`Server::reload_tls`].
    tls: Option<Arc<crate::tls::Current>>,
    /// `tls.listen` as started with (a reload does not change listeners).
    tls_listen: Vec<SocketAddr>,
}

impl Server {
    /// Binds every listen address and starts the workers. Returns once all are serving.
    pub fn start(cfg: Config) -> Result<Server, StartError> {
        let driver = Driver::select(cfg.server.io).map_err(StartError)?;
        let workers = cfg.server.workers.get();
        let (listeners, mut addrs) = bind_all(&cfg.server.listen, workers).map_err(|e| StartError(e.to_string()))?;
        let (tls_listeners, tls_addrs) = bind_all(&cfg.tls.listen, workers).map_err(|e| StartError(e.to_string()))?;
        addrs.extend(tls_addrs);
        let tls = match cfg.tls.listen.is_empty() {
            true => None,
            false => Some(Arc::new(crate::tls::Current::new(crate::tls::server_config(&cfg.tls).map_err(StartError)?))),
        };
        let upstream_tls = crate::upstream_tls::clients(&cfg).map_err(StartError)?;
        let cores = if cfg.server.pin_cores { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
        let cfg = Arc::new(cfg);
        let shutdown = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut threads = Vec::with_capacity(workers);
        let mut banks = start_bank(&cfg, workers);
        let verdicts = crate::health::verdicts(&cfg);
        let (checks_stop, stop_rx) = crossbeam_channel::bounded(0);
        let admin_listener = match cfg.admin {
            Some(a) => Some(
                std::net::TcpListener::bind(a).map_err(|e| StartError(format!("cannot listen on {a} (admin): {e}")))?,
            ),
            None => None,
        };
        let admin = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        let stats: Vec<_> =
            (0..workers).map(|_| admin.is_some().then(|| Arc::new(crate::metrics::Stats::new(&cfg)))).collect();
        let log = match &cfg.access_log {
            Some(dest) => Some(Arc::new(crate::access_log::Sink::open(dest).map_err(|e| StartError(e.to_string()))?)),
            None => None,
        };
        let cache = cfg
            .routes
            .iter()
            .any(|r| r.cache.is_some())
            .then(|| Arc::new(crate::cache::Cache::new(cfg.cache.max_bytes)));
        let mut checks = crate::health::start_checks(&cfg, &verdicts, &stop_rx, &upstream_tls);
        if let Some(listener) = admin_listener {
            let registry = crate::metrics::Registry {
                cfg: cfg.clone(),
                workers: stats.iter().flatten().cloned().collect(),
                verdicts: verdicts.clone(),
                draining: shutdown.clone(),
                cache: cache.clone(),
            };
            let thread = crate::admin::start(listener, registry, stop_rx.clone())
                .map_err(|e| StartError(format!("cannot start the admin listener: {e}")))?;
            checks.push(thread);
        }
        for (id, (listeners, tls_listeners)) in listeners.into_iter().zip(tls_listeners).enumerate() {
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
                bank: banks.as_mut().map(|(tx, rxs)| (tx.clone(), rxs.remove(0))),
                verdicts: verdicts.clone(),
                stats: stats[id].clone(),
                log: log.clone(),
                cache: cache.clone(),
                upstream_tls: upstream_tls.clone(),
            };
            match worker::spawn(spawn) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    shutdown.store(true, Ordering::Relaxed);
                    return Err(StartError(format!("cannot start worker thread: {e}")));
                }
            }
        }
        drop(ready_tx);
        drop(banks);
        let tls_listen = cfg.tls.listen.clone();
        let server = Server { addrs, driver, shutdown, threads, checks_stop, checks, admin, tls, tls_listen };
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    server.shutdown();
                    return Err(StartError(format!("cannot start the {} runtime: {e}", driver.name())));
                }
                Err(_) => {
                    server.shutdown();
                    return Err(StartError("a worker exited during startup".into()));
                }
            }
        }
        log::info!("coregate serving on {:?} with {workers} workers on {}", server.addrs, driver.name());
        Ok(server)
    }

    /// The addresses actually bound (port 0 resolved): `server.listen`'s, then
    /// `tls.listen`'s.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The admin listener's address (`admin.listen`, port 0 resolved), if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// Serves the certificates of `cfg`'s `[tls]` section to new TLS connections (connections
    /// already open keep theirs; session tickets stay valid). Only the certificates change:
    /// listen addresses and everything else need a restart. Errors leave the running
    /// certificates in place.
    pub fn reload_tls(&self, cfg: &Config) -> Result<(), StartError> {
        let Some(current) = &self.tls else {
            return Err(StartError("no TLS listener was started; adding one needs a restart".into()));
        };
        if cfg.tls.listen.is_empty() {
            return Err(StartError("the new configuration has no [tls] section".into()));
        }
        if cfg.tls.listen != self.tls_listen {
            log::warn!("tls.listen changed: listeners change only with a restart");
        }
        current.replace(crate::tls::server_config(&cfg.tls).map_err(StartError)?);
        Ok(())
    }

    /// Starts the drain: workers stop accepting, close idle connections and finish the
    /// requests in flight within `timeouts.drain`.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
    }

    /// Waits for every worker to finish, then stops the health checks.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
        drop(self.checks_stop);
        for t in self.checks {
            let _ = t.join();
        }
    }
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
