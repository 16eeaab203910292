//! The running gateway: its current generation of workers (`generation`), the ones a reload
//! retired while they drain, and the listening sockets kept across reloads (`listener`).
//! Starting, reloading (the next generation on the same sockets, then the old one's drain),
//! stopping and joining.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use config::Config;

use crate::driver::Driver;
use crate::generation::{launch, Generation, Launched};
use crate::listener::Sockets;

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
    /// Workers tell this when a token names a key the remote JWT key set lacks (one
    /// message at most waits, however many tokens did).
    jwks_wanted: (crossbeam_channel::Sender<()>, crossbeam_channel::Receiver<()>),
    /// When the remote key set was last fetched (or tried).
    jwks_fetched: Instant,
}

impl Server {
    /// Binds every listen address and starts the workers. Returns once all are serving.
    pub fn start(cfg: Config) -> Result<Server, StartError> {
        let mut jwks_fetched = Instant::now();
        let cfg = crate::jwks::with_fetched(cfg, None, &mut jwks_fetched);
        let sockets = Sockets::default();
        let jwks_wanted = crossbeam_channel::bounded(1);
        let Launched { generation, kept, admin_socket } = launch(0, cfg, &sockets, None, None, &jwks_wanted.0)?;
        let mut server =
            Server { current: generation, retired: Vec::new(), sockets, admin_socket, jwks_wanted, jwks_fetched };
        server.sockets.keep(kept);
        Ok(server)
    }

    /// Replaces the running configuration by `cfg` without refusing or losing a connection:
    /// a new generation of workers starts on the same listening sockets (addresses no longer
    /// configured close, new ones are bound) and takes every new connection; the old one
    /// drains as on SIGTERM (idle keep-alive connections close, requests in flight finish
    /// with `connection: close` within the old `timeouts.drain`). Everything in `cfg` takes
    /// effect; metrics counters start afresh; the response cache and rate-limit balances stay
    /// (afresh for routes and limits that changed, and the cache entirely when
    /// `cache.max_bytes` changed); TLS session tickets stay valid. `server.workers` cannot change (the listening sockets
    /// are one per worker). On an error the running generation stays as it was.
    pub fn reload(&mut self, cfg: Config) -> Result<(), StartError> {
        let (now, asked) = (self.current.workers, cfg.server.workers.get());
        if now != asked {
            return Err(StartError(format!("server.workers cannot change on a reload ({now} -> {asked}); restart")));
        }
        let (finished, draining): (Vec<_>, Vec<_>) = self.retired.drain(..).partition(Generation::stopped);
        self.retired = draining;
        finished.into_iter().for_each(Generation::join);
        let number = self.current.number + 1;
        let cfg = crate::jwks::with_fetched(cfg, Some(&self.current.cfg), &mut self.jwks_fetched);
        let (admin, running) = (self.admin_socket.as_ref(), Some(&self.current));
        let launched = launch(number, cfg, &self.sockets, admin, running, &self.jwks_wanted.0)?;
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

    /// Resolves the names in the running configuration's `endpoints` again, for the
    /// upstreams with `upstreams[].resolve` ([`Config::resolve_again`]), and reloads when an
    /// address changed (so connections and health checks follow the new addresses, and the
    /// old generation's requests finish on the old ones). Returns whether it reloaded and a
    /// message for each name that did not resolve (its upstream keeps its addresses).
    pub fn resolve_again(&mut self, resolve: config::Resolver<'_>) -> Result<(bool, Vec<String>), StartError> {
        let (changed, failed) = self.current.cfg.resolve_again(resolve);
        match changed {
            Some(cfg) => self.reload(cfg).map(|()| (true, failed)),
            None => Ok((false, failed)),
        }
    }

    /// How often [`Server::resolve_again`] should run: the shortest `upstreams[].resolve`.
    pub fn resolve_interval(&self) -> Option<Duration> {
        self.current.cfg.resolve_interval()
    }

    /// Fetches the remote JWT key set (`[auth.jwt.jwks]`) again and reloads when it
    /// changed, as [`Server::resolve_again`] does for addresses. `Ok(false)`: the same set
    /// (or no remote set configured). A failed fetch changes nothing: the keys fetched before
    /// stay.
    pub fn refresh_jwks(&mut self) -> Result<bool, StartError> {
        self.jwks_fetched = Instant::now();
        let cfg = &self.current.cfg;
        let Some(fetched) = crate::jwks::fetch(cfg) else { return Ok(false) };
        match fetched.and_then(|(text, max_age)| cfg.with_jwks(&text, max_age)).map_err(StartError)? {
            Some(with) => self.reload(with).map(|()| true),
            None => Ok(false),
        }
    }

    /// Ready when a worker met a bearer token naming a key (`kid`) that no key of the
    /// remote set has: a provider that rotated may have published it since the last fetch.
    /// The binary then calls [`Server::refresh_jwks_for_unknown_key`].
    pub fn jwks_wanted(&self) -> crossbeam_channel::Receiver<()> {
        self.jwks_wanted.1.clone()
    }

    /// [`Server::refresh_jwks`] for a token whose key the remote set lacks, unless the set
    /// was fetched less than 10 s before `now`: tokens with
    /// made-up `kid`s cannot make the gateway ask the provider more often than that.
    /// `Ok(false)` when it did not fetch or the set is the same.
    pub fn refresh_jwks_for_unknown_key(&mut self, now: Instant) -> Result<bool, StartError> {
        while self.jwks_wanted.1.try_recv().is_ok() {}
        if now.saturating_duration_since(self.jwks_fetched) < crate::jwks::UNKNOWN_KEY_PAUSE {
            return Ok(false);
        }
        self.refresh_jwks()
    }

    /// How often [`Server::refresh_jwks`] should run: `[auth.jwt.jwks].refresh`, or the
    /// provider's `Cache-Control: max-age` when sooner (at least 30 s), or sooner still
    /// while no fetch has succeeded.
    pub fn jwks_interval(&self) -> Option<Duration> {
        let jwt = &self.current.cfg.jwt;
        let remote = jwt.remote.as_ref()?;
        Some(match &jwt.fetched {
            Some(fetched) => remote.every(Some(fetched)),
            None => remote.refresh.min(crate::jwks::RETRY),
        })
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
