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
            let (mut check, verdicts, stop, name) = (check.clone(), verdicts.clone(), stop.clone(), up.name.clone());
            // Without a configured Host, the endpoint's: its name and port, or its address.
            check.host.get_or_insert_with(|| up.endpoint_host(e));
            let (tls, sni) = (tls.clone(), up.endpoint_names[e].clone());
            let target = Target { addr, sni };
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

/// An endpoint checked: its address, and the name it was resolved from (the TLS server
/// name when none is configured).
struct Target {
    addr: SocketAddr,
    sni: Option<String>,
}

fn check_loop(
    name: &str,
    target: &Target,
    check: &HealthCheck,
    tls: Option<&crate::upstream_tls::UpstreamTls>,
    up: &AtomicBool,
    stop: &crossbeam_channel::Receiver<()>,
) {
    let (mut passes, mut fails) = (0u32, 0u32);
    let addr = target.addr;
    loop {
        match probe(target, check, tls) {
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
/// certificate is checked as the workers check it); a status `check` expects within the
/// timeout passes, with its `expect_body` in the body when set. The whole check (connect,
/// handshake, write, reading the answer) shares the timeout.
fn probe(target: &Target, check: &HealthCheck, tls: Option<&crate::upstream_tls::UpstreamTls>) -> Result<(), String> {
    let addr = target.addr;
    let deadline = Instant::now() + check.timeout;
    let s = TcpStream::connect_timeout(&addr, check.timeout).map_err(|e| format!("connect: {e}"))?;
    // The timeouts are the socket's: set through a second handle while rustls owns the first.
    let ctl = s.try_clone().map_err(|e| e.to_string())?;
    match tls {
        None => exchange(s, &ctl, addr, check, deadline),
        Some(t) => {
            let conn = t.connection(addr, target.sni.as_deref()).map_err(|e| format!("TLS: {e}"))?;
            exchange(rustls::StreamOwned::new(conn, s), &ctl, addr, check, deadline)
        }
    }
}

/// Bytes of a check's answer read at most: its head, and the body searched for
/// `expect_body`.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;

/// The check's request and answer over `s`, whose socket `ctl` is.
fn exchange(
    mut s: impl Read + Write,
    ctl: &TcpStream,
    addr: SocketAddr,
    check: &HealthCheck,
    deadline: Instant,
) -> Result<(), String> {
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    ctl.set_write_timeout(Some(left())).map_err(|e| e.to_string())?;
    let host = check.host.clone().unwrap_or_else(|| addr.to_string());
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: coregate-health-check\r\nConnection: close\r\n\r\n",
        check.path
    );
    s.write_all(req.as_bytes()).and_then(|()| s.flush()).map_err(|e| format!("write: {e}"))?;
    // Reads more of the answer into `buf`; false at its end.
    let mut read_more = |buf: &mut Vec<u8>| -> Result<bool, String> {
        ctl.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) => Err(format!("read: {e}")),
        }
    };
    let limits = proto_http::Limits::default();
    let mut buf = Vec::with_capacity(1024);
    let meta = loop {
        if let Some(meta) = proto_http::parse_response(&buf, &limits, false).map_err(|e| e.message().to_string())? {
            break meta;
        }
        if buf.len() > MAX_HEAD || !read_more(&mut buf)? {
            return Err(if buf.is_empty() { "closed without a status line" } else { "no complete head" }.into());
        }
    };
    if !check.passes(meta.status) {
        return Err(format!("status {}", meta.status));
    }
    let Some(want) = &check.expect_body else { return Ok(()) };
    // The body, decoded, up to MAX_BODY: RFC 9112 6.3 framing.
    let mut raw = buf.split_off(meta.head_len);
    let mut body = Vec::new();
    let mut decoder = proto_http::chunked::ChunkedDecoder::new(&limits);
    loop {
        let done = match meta.body {
            proto_http::ResponseBody::None => true,
            proto_http::ResponseBody::Length(n) => {
                body.append(&mut raw);
                body.len() as u64 >= n
            }
            proto_http::ResponseBody::Close => {
                body.append(&mut raw);
                false
            }
            proto_http::ResponseBody::Chunked => {
                let mut at = 0;
                let mut finished = false;
                while at < raw.len() {
                    let (used, found) = decoder.decode(&raw[at..]).map_err(|e| e.message().to_string())?;
                    if let proto_http::chunked::Decoded::Data(r) = &found {
                        body.extend_from_slice(&raw[at + r.start..at + r.end]);
                    }
                    at += used;
                    if found == proto_http::chunked::Decoded::Done {
                        finished = true;
                        break;
                    }
                    if used == 0 {
                        break;
                    }
                }
                raw.drain(..at);
                finished
            }
        };
        if done || body.len() >= MAX_BODY || !read_more(&mut raw)? {
            break;
        }
    }
    body.truncate(MAX_BODY);
    let found = body.windows(want.len()).any(|w| w == want.as_bytes());
    if found {
        Ok(())
    } else {
        Err(format!("status {} without {want:?} in its body", meta.status))
    }
}
