//! Which upstream endpoints get requests: passive health (a circuit breaker per endpoint,
//! kept by each worker from its own exchanges, so nothing is shared on the request path)
//! and active health checks (a thread per checked endpoint, whose verdict the workers read
//! from one atomic flag per endpoint, a relaxed load per endpoint considered).
//!
//! Left to others: the order endpoints are tried in and what a failure is (`proxy`), the
//! thresholds (`config::Outlier`, `config::HealthCheck`).

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::fetch::{Get, Target};

use config::{Config, HealthCheck, Outlier};

/// Why endpoints are out of service besides their circuits: `[upstream][endpoint]`, a set
/// of [`FAILING`] (the active checks' verdict, written by the check threads) and
/// [`DRAINED`] (the admin's, `POST /upstreams/NAME/endpoints/ADDR/drain`). An endpoint takes
/// requests while its state is 0: one relaxed load per endpoint considered, as a single flag
/// was.
pub(crate) type Verdicts = Arc<Vec<Vec<AtomicU8>>>;

/// The active checks took the endpoint out.
pub(crate) const FAILING: u8 = 1;
/// An operator took the endpoint out through the admin listener.
pub(crate) const DRAINED: u8 = 2;

/// Every endpoint in service but those `running` (the generation a reload replaces) had
/// drained: a drain is kept by reloads, and by the re-resolution of names, for the same
/// upstream name and address. The checks' verdicts start afresh.
pub(crate) fn verdicts(cfg: &Config, running: Option<(&Config, &Verdicts)>) -> Verdicts {
    let drained = |name: &str, addr: std::net::SocketAddr| {
        running.is_some_and(|(old, v)| {
            let u = old.upstreams.iter().position(|u| u.name == name);
            u.and_then(|u| old.upstreams[u].endpoints.iter().position(|&a| a == addr).map(|e| (u, e)))
                .is_some_and(|(u, e)| v[u][e].load(Ordering::Relaxed) & DRAINED != 0)
        })
    };
    let state = |u: &config::Upstream, addr| AtomicU8::new(if drained(&u.name, addr) { DRAINED } else { 0 });
    Arc::new(cfg.upstreams.iter().map(|u| u.endpoints.iter().map(|&a| state(u, a)).collect()).collect())
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

    /// Whether the endpoint takes requests now: not ejected here, not failed by the active
    /// checks, not drained.
    #[inline]
    pub(crate) fn available(&self, upstream: usize, endpoint: usize, now: Instant) -> bool {
        let ejected = self.circuits[upstream][endpoint].until.get().is_some_and(|t| now < t);
        !ejected && self.verdicts[upstream][endpoint].load(Ordering::Relaxed) == 0
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
            let (tls, target) = (tls.clone(), Target::of(up, e));
            let spawned = std::thread::Builder::new()
                .name(format!("coregate-hc{u}.{e}"))
                .spawn(move || check_loop(&name, &target, &check, tls[u].as_ref(), &verdicts[u][e], &stop));
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
    target: &Target,
    check: &HealthCheck,
    tls: Option<&crate::upstream_tls::UpstreamTls>,
    state: &AtomicU8,
    stop: &crossbeam_channel::Receiver<()>,
) {
    let (mut passes, mut fails) = (0u32, 0u32);
    let addr = target.addr;
    let failing = || state.load(Ordering::Relaxed) & FAILING != 0;
    loop {
        match probe(target, check, tls) {
            Ok(()) => {
                (passes, fails) = (passes.saturating_add(1), 0);
                if failing() && passes >= check.healthy_threshold {
                    log::warn!("upstream {name} endpoint {addr}: health check passes again, back in");
                    state.fetch_and(!FAILING, Ordering::Relaxed);
                }
            }
            Err(why) => {
                (passes, fails) = (0, fails.saturating_add(1));
                if !failing() && fails >= check.unhealthy_threshold {
                    log::warn!("upstream {name} endpoint {addr}: health check failed {fails} times ({why}), taken out");
                    state.fetch_or(FAILING, Ordering::Relaxed);
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

/// One check: `GET path` (`fetch`); a status `check` expects within the timeout passes,
/// with its `expect_body` in the first 64 KiB of the body when set.
fn probe(target: &Target, check: &HealthCheck, tls: Option<&crate::upstream_tls::UpstreamTls>) -> Result<(), String> {
    // Without a configured Host, the endpoint's: its name and port, or its address.
    let get = Get {
        path: &check.path,
        host: check.host.as_deref(),
        user_agent: "coregate-health-check",
        timeout: check.timeout,
        max_body: if check.expect_body.is_some() { MAX_BODY } else { 0 },
    };
    let answer = crate::fetch::get(target, &get, tls)?;
    if !check.passes(answer.status) {
        return Err(format!("status {}", answer.status));
    }
    match &check.expect_body {
        Some(want) if !answer.body.windows(want.len()).any(|w| w == want.as_bytes()) => {
            Err(format!("status {} without {want:?} in its body", answer.status))
        }
        _ => Ok(()),
    }
}

/// Body bytes of a check's answer searched for `expect_body`.
const MAX_BODY: usize = 64 * 1024;
