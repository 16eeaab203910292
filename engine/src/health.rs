//! Which upstream endpoints get requests: passive health (a circuit breaker per endpoint,
//! kept by each worker from its own exchanges, so nothing is shared on the request path)
//! and active health checks (a thread per checked endpoint, whose verdict the workers read
//! from one atomic flag per endpoint, a relaxed load per endpoint considered).
//!
//! Left to others: the order endpoints are tried in and what a failure is (`proxy`), the
//! thresholds (`config::Outlier`, `config::HealthCheck`).

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use config::{Config, HealthCheck, Outlier};

/// The active checks' verdicts: `up[upstream][endpoint]`, written by the check threads.
/// Endpoints of upstreams without checks stay up.
pub(crate) type Verdicts = Arc<Vec<Vec<AtomicBool>>>;

pub(crate) fn verdicts(cfg: &Config) -> Verdicts {
    Arc::new(cfg.upstreams.iter().map(|u| u.endpoints.iter().map(|_| AtomicBool::new(true)).collect()).collect())
}

/// One endpoint's circuit on one worker.
#[derive(Default)]
struct Circuit {
    /// Failed exchanges in a row.
    failures: Cell<u32>,
    /// Ejected until then.
    until: Cell<Option<Instant>>,
}

/// A worker's view of its endpoints.
pub(crate) struct Health {
    circuits: Vec<Vec<Circuit>>,
    verdicts: Verdicts,
    /// Where failures and ejections are counted, with metrics on.
    stats: Option<Arc<crate::metrics::Stats>>,
}

impl Health {
    pub(crate) fn new(cfg: &Config, verdicts: Verdicts, stats: Option<Arc<crate::metrics::Stats>>) -> Health {
        let circuits = cfg.upstreams.iter().map(|u| u.endpoints.iter().map(|_| Circuit::default()).collect()).collect();
        Health { circuits, verdicts, stats }
    }

    /// Whether the endpoint takes requests now: not ejected here, and not failed by the
    /// active checks.
    #[inline]
    pub(crate) fn available(&self, upstream: usize, endpoint: usize, now: Instant) -> bool {
        let ejected = self.circuits[upstream][endpoint].until.get().is_some_and(|t| now < t);
        !ejected && self.verdicts[upstream][endpoint].load(Ordering::Relaxed)
    }

    /// Records a successful exchange: the circuit closes.
    #[inline]
    pub(crate) fn succeeded(&self, upstream: usize, endpoint: usize) {
        let c = &self.circuits[upstream][endpoint];
        // An ejection always follows at least one failure.
        if c.failures.get() != 0 {
            c.failures.set(0);
            c.until.set(None);
        }
    }

    /// Records a failed exchange. A failure that completes a run of `consecutive_failures`
    /// ejects the endpoint for `ejection`; after that one more failure ejects it again (the
    /// run is not reset by the ejection ending), and a success closes the circuit.
    #[cold]
    pub(crate) fn failed(&self, upstream: usize, endpoint: usize, outlier: &Outlier, now: Instant) {
        let ejected = self.eject(upstream, endpoint, outlier, now);
        if let Some(stats) = &self.stats {
            stats.failure(upstream, endpoint, ejected);
        }
    }

    /// Counts the failure; true when it (re-)ejects the endpoint.
    fn eject(&self, upstream: usize, endpoint: usize, outlier: &Outlier, now: Instant) -> bool {
        if outlier.consecutive_failures == 0 {
            return false;
        }
        let c = &self.circuits[upstream][endpoint];
        let failures = c.failures.get().saturating_add(1);
        c.failures.set(failures);
        if failures < outlier.consecutive_failures {
            return false;
        }
        if c.until.get().is_none() {
            log::warn!("upstream {upstream} endpoint {endpoint}: {failures} failures in a row, ejected");
        }
        c.until.set(Some(now + outlier.ejection));
        true
    }
}

/// Runs the active checks until `stop` is dropped: one thread per endpoint of each upstream
/// with `health_check`.
pub(crate) fn start_checks(
    cfg: &Config,
    verdicts: &Verdicts,
    stop: &crossbeam_channel::Receiver<()>,
    tls: &crate::upstream_tls::Clients,
) -> Vec<JoinHandle<()>> {
    let mut threads = Vec::new();
    for (u, up) in cfg.upstreams.iter().enumerate() {
        let Some(check) = &up.health_check else { continue };
        for (e, &addr) in up.endpoints.iter().enumerate() {
            let (check, verdicts, stop, name) = (check.clone(), verdicts.clone(), stop.clone(), up.name.clone());
            let tls = tls.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("coregate-hc{u}.{e}"))
                .spawn(move || check_loop(&name, addr, &check, tls[u].as_ref(), &verdicts[u][e], &stop));
            match spawned {
                Ok(t) => threads.push(t),
                Err(err) => log::error!("cannot start the health check of {} {addr}: {err}", up.name),
            }
        }
    }
    threads
}

fn check_loop(
    name: &str,
    addr: SocketAddr,
    check: &HealthCheck,
    tls: Option<&crate::upstream_tls::UpstreamTls>,
    up: &AtomicBool,
    stop: &crossbeam_channel::Receiver<()>,
) {
    let (mut passes, mut fails) = (0u32, 0u32);
    loop {
        match probe(addr, check, tls) {
            Ok(()) => {
                (passes, fails) = (passes.saturating_add(1), 0);
                if !up.load(Ordering::Relaxed) && passes >= check.healthy_threshold {
                    log::warn!("upstream {name} endpoint {addr}: health check passes again, back in");
                    up.store(true, Ordering::Relaxed);
                }
            }
            Err(why) => {
                (passes, fails) = (0, fails.saturating_add(1));
                if up.load(Ordering::Relaxed) && fails >= check.unhealthy_threshold {
                    log::warn!("upstream {name} endpoint {addr}: health check failed {fails} times ({why}), taken out");
                    up.store(false, Ordering::Relaxed);
                }
            }
        }
        if stopped(stop, check.interval) {
            return;
        }
    }
}

/// Waits `d`; true when `stop` was dropped meanwhile (the server is stopping). Shared by the
/// threads that run beside the workers (health checks, the admin listener).
pub(crate) fn stopped(stop: &crossbeam_channel::Receiver<()>, d: Duration) -> bool {
    stop.recv_timeout(d) != Err(crossbeam_channel::RecvTimeoutError::Timeout)
}

/// One check: `GET path` with `Connection: close`, over TLS for an HTTPS upstream (whose
/// certificate is checked as the workers check it); a 2xx or 3xx status line within the
/// timeout passes. The whole check (connect, handshake, write, reading the status line)
/// shares it.
fn probe(addr: SocketAddr, check: &HealthCheck, tls: Option<&crate::upstream_tls::UpstreamTls>) -> Result<(), String> {
    let deadline = Instant::now() + check.timeout;
    let s = TcpStream::connect_timeout(&addr, check.timeout).map_err(|e| format!("connect: {e}"))?;
    // The timeouts are the socket's: set through a second handle while rustls owns the first.
    let ctl = s.try_clone().map_err(|e| e.to_string())?;
    match tls {
        None => exchange(s, &ctl, addr, check, deadline),
        Some(t) => {
            let conn = t.connection(addr).map_err(|e| format!("TLS: {e}"))?;
            exchange(rustls::StreamOwned::new(conn, s), &ctl, addr, check, deadline)
        }
    }
}

/// The check's request and status line over `s`, whose socket `ctl` is.
fn exchange(
    mut s: impl Read + Write,
    ctl: &TcpStream,
    addr: SocketAddr,
    check: &HealthCheck,
    deadline: Instant,
) -> Result<(), String> {
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    ctl.set_write_timeout(Some(left())).map_err(|e| e.to_string())?;
    ctl.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
    let host = check.host.clone().unwrap_or_else(|| addr.to_string());
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: coregate-health-check\r\nConnection: close\r\n\r\n",
        check.path
    );
    s.write_all(req.as_bytes()).and_then(|()| s.flush()).map_err(|e| format!("write: {e}"))?;
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < 12 {
        ctl.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
        match s.read(&mut head[got..]) {
            Ok(0) => return Err("closed without a status line".into()),
            Ok(n) => got += n,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    // "HTTP/1.x NNN": RFC 9112 4.
    let status = std::str::from_utf8(&head[9..12]).ok().and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(s) if head.starts_with(b"HTTP/1.") && (200..400).contains(&s) => Ok(()),
        Some(s) if head.starts_with(b"HTTP/1.") => Err(format!("status {s}")),
        _ => Err("not an HTTP/1.x status line".into()),
    }
}
