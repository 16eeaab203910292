//! The measurements: closed-loop rounds (throughput and proxy CPU per request), the
//! open-loop latency sweep, and idle-connection memory. Load comes from coregate-load (and
//! wrk where installed) pinned to the cores the proxies do not use.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::procs::Proc;

/// One closed-loop run against one target.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Round {
    pub target: String,
    pub tool: String,
    pub round: usize,
    pub rps: f64,
    pub requests: u64,
    pub errors: u64,
    /// Proxy CPU (user + system) per completed request, µs; 0 for the direct run.
    pub cpu_us_per_req: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// For a TLS target measured with coregate-load: what its handshakes negotiated
    /// ("TLSv1.3 TLS13_AES_256_GCM_SHA384"; more than one joined with ", ").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
}

/// One open-loop step against one target.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Step {
    pub target: String,
    pub offered: f64,
    pub achieved: f64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
}

/// The mean batch of a pipelined coregate under one tool's load: requests per upstream
/// write, from the counters of its `/metrics` read before and after one closed-loop run.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    pub tool: String,
    pub round: usize,
    pub writes: u64,
    pub requests: u64,
    pub mean: f64,
    pub rps: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub target: String,
    pub connections: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub kib_per_connection: f64,
    /// Whether each connection made one request before idling (keep-alive connections at
    /// rest), or none (connections just opened).
    pub after_request: bool,
}

pub struct Loader<'a> {
    pub load_bin: &'a Path,
    pub cores: String,
    pub connections: usize,
    pub work: &'a Path,
}

impl Loader<'_> {
    /// Runs coregate-load against `addr` (over TLS with `tls`, trusting the demo
    /// certificate); returns its JSON report.
    fn coregate_load(
        &self,
        addr: SocketAddr,
        tls: bool,
        secs: f64,
        rate: Option<f64>,
    ) -> Result<serde_json::Value, String> {
        let json = self.work.join("load.json");
        let _ = std::fs::remove_file(&json);
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(&self.cores).arg(self.load_bin);
        cmd.args(["--url", &url(addr, tls), "-c", &self.connections.to_string(), "-t", "1", "--no-pin"]);
        if tls {
            cmd.args(["--cacert", crate::procs::DEMO_CERT]);
        }
        cmd.args([
            "-d",
            &format!("{secs}s"),
            "--timeout",
            "5s",
            "-H",
            &format!("X-Api-Key: {}", crate::procs::BENCH_KEY),
            "--json",
        ])
        .arg(&json);
        if let Some(r) = rate {
            // Latency at steady state: the half second in which the connections (and the
            // proxy's upstream connections) open is not recorded.
            cmd.args(["--rate", &format!("{r:.0}"), "--warmup", "500ms"]);
        }
        let out = cmd.output().map_err(|e| format!("coregate-load: {e}"))?;
        if !out.status.success() {
            return Err(format!("coregate-load failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        serde_json::from_str(&std::fs::read_to_string(&json).map_err(|e| e.to_string())?).map_err(|e| e.to_string())
    }

    /// Runs wrk (over TLS with `tls`; wrk does not check certificates); returns
    /// (requests/s, requests).
    fn wrk(&self, addr: SocketAddr, tls: bool, secs: f64) -> Result<(f64, u64), String> {
        let out = Command::new("taskset")
            .arg("-c")
            .arg(&self.cores)
            .args(["wrk", "-t1", &format!("-c{}", self.connections), &format!("-d{}s", secs.ceil() as u64)])
            .args(["-H", &format!("X-Api-Key: {}", crate::procs::BENCH_KEY)])
            .arg(url(addr, tls))
            .output()
            .map_err(|e| format!("wrk: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let rps = text.lines().find_map(|l| l.strip_prefix("Requests/sec:")).and_then(|v| v.trim().parse().ok());
        let requests =
            text.lines().find(|l| l.contains("requests in")).and_then(|l| l.split_whitespace().next()?.parse().ok());
        match (rps, requests) {
            (Some(r), Some(n)) => Ok((r, n)),
            _ => Err(format!("cannot read wrk output: {text}")),
        }
    }

    /// One closed-loop round with `tool` against `target` (None = direct to `upstream`).
    pub fn closed(
        &self,
        tool: &str,
        target: Option<&Proc>,
        upstream: SocketAddr,
        secs: f64,
        round: usize,
    ) -> Result<Round, String> {
        let addr = target.map(|p| p.addr).unwrap_or(upstream);
        let tls = target.is_some_and(|p| p.tls);
        let cpu0 = target.map(Proc::cpu_seconds).unwrap_or(0.0);
        let mut r = Round {
            target: target.map(|p| p.name.clone()).unwrap_or_else(|| "direct".into()),
            tool: tool.into(),
            round,
            rps: 0.0,
            requests: 0,
            errors: 0,
            cpu_us_per_req: 0.0,
            p50_us: 0,
            p99_us: 0,
            p999_us: 0,
            tls: None,
        };
        if tool == "wrk" {
            let (rps, n) = self.wrk(addr, tls, secs)?;
            r.rps = rps;
            r.requests = n;
        } else {
            let v = self.coregate_load(addr, tls, secs, None)?;
            r.rps = v["rps"].as_f64().unwrap_or(0.0);
            r.requests = v["requests"].as_u64().unwrap_or(0);
            r.errors = v["errors"].as_u64().unwrap_or(0);
            r.p50_us = v["latency_us"]["p50"].as_u64().unwrap_or(0);
            r.p99_us = v["latency_us"]["p99"].as_u64().unwrap_or(0);
            r.p999_us = v["latency_us"]["p999"].as_u64().unwrap_or(0);
            r.tls = v["tls"]["negotiated"].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "));
        }
        if let Some(p) = target {
            let cpu = p.cpu_seconds() - cpu0;
            r.cpu_us_per_req = cpu * 1e6 / (r.requests.max(1) as f64);
        }
        Ok(r)
    }

    /// One closed-loop run with `tool` against `target`, whose admin listener counts its
    /// pipelined batches: the mean batch of that run.
    pub fn batches(
        &self,
        tool: &str,
        target: &Proc,
        upstream: SocketAddr,
        secs: f64,
        round: usize,
    ) -> Result<Batch, String> {
        let admin = target.admin.ok_or_else(|| format!("{} has no admin listener", target.name))?;
        let (writes0, requests0) = pipeline_counters(admin)?;
        let x = self.closed(tool, Some(target), upstream, secs, round)?;
        let (writes1, requests1) = pipeline_counters(admin)?;
        let (writes, requests) = (writes1.saturating_sub(writes0), requests1.saturating_sub(requests0));
        Ok(Batch {
            tool: tool.into(),
            round,
            writes,
            requests,
            mean: requests as f64 / writes.max(1) as f64,
            rps: x.rps,
        })
    }

    /// One open-loop step against `target` (None = direct to `upstream`).
    pub fn open(&self, target: Option<&Proc>, upstream: SocketAddr, rate: f64, secs: f64) -> Result<Step, String> {
        let addr = target.map(|p| p.addr).unwrap_or(upstream);
        let v = self.coregate_load(addr, target.is_some_and(|p| p.tls), secs, Some(rate))?;
        Ok(Step {
            target: target.map(|p| p.name.clone()).unwrap_or_else(|| "direct".into()),
            offered: rate,
            achieved: v["rps"].as_f64().unwrap_or(0.0),
            errors: v["errors"].as_u64().unwrap_or(0),
            p50_us: v["latency_us"]["p50"].as_u64().unwrap_or(0),
            p99_us: v["latency_us"]["p99"].as_u64().unwrap_or(0),
            p999_us: v["latency_us"]["p999"].as_u64().unwrap_or(0),
        })
    }
}

/// The URL of `addr`'s root, `https://` with `tls`.
fn url(addr: SocketAddr, tls: bool) -> String {
    format!("{}://{addr}/", if tls { "https" } else { "http" })
}

/// Opens `n` idle connections to `target` and reports the resident memory they cost, then,
/// with those still open (so their memory cannot be reused), `n` more that each make one
/// request first: keep-alive connections at rest. Returns the readings taken: a target that
/// stops answering during the second set (HAProxy keeps a server connection per idle
/// client and runs into its server `maxconn`) gets only the first, with a message.
pub fn idle_memory(target: &Proc, n: usize) -> Result<Vec<Memory>, String> {
    let mut conns = Vec::with_capacity(2 * n);
    let mut readings = Vec::with_capacity(2);
    for after_request in [false, true] {
        let before = target.rss_kib();
        for i in 0..n {
            let mut c = TcpStream::connect(target.addr).map_err(|e| format!("{}: connection {i}: {e}", target.name))?;
            if after_request {
                if let Err(e) = one_request(&mut c) {
                    eprintln!("memory {}: no reading after requests: request on connection {i}: {e}", target.name);
                    return Ok(readings);
                }
            }
            conns.push(c);
        }
        // Let the server accept and set up every connection, and let used keep-alive
        // connections go quiet (a benchmark settling time, not a synchronisation: the
        // reading is taken after it either way).
        std::thread::sleep(Duration::from_millis(1000) + Duration::from_micros(50 * n as u64));
        let after = target.rss_kib();
        readings.push(Memory {
            target: target.name.clone(),
            connections: n,
            rss_before_kib: before,
            rss_after_kib: after,
            kib_per_connection: after.saturating_sub(before) as f64 / n as f64,
            after_request,
        });
    }
    drop(conns);
    Ok(readings)
}

/// coregate's `coregate_upstream_pipeline_writes_total` and
/// `coregate_upstream_pipelined_requests_total`, summed over upstreams, from `GET /metrics`
/// on its admin listener.
fn pipeline_counters(admin: SocketAddr) -> Result<(u64, u64), String> {
    use std::io::{Read, Write};
    let fail = |e: std::io::Error| format!("GET /metrics from {admin}: {e}");
    let mut c = TcpStream::connect(admin).map_err(fail)?;
    c.set_read_timeout(Some(Duration::from_secs(5))).map_err(fail)?;
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").map_err(fail)?;
    let mut text = String::new();
    c.read_to_string(&mut text).map_err(fail)?;
    let sum = |name: &str| -> u64 {
        text.lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    match text.starts_with("HTTP/1.1 200") {
        true => Ok((sum("coregate_upstream_pipeline_writes_total"), sum("coregate_upstream_pipelined_requests_total"))),
        false => Err(format!("GET /metrics from {admin}: {}", text.lines().next().unwrap_or("no answer"))),
    }
}

/// Sends one GET and reads its response (Content-Length framed, as every upstream here
/// answers).
fn one_request(c: &mut TcpStream) -> std::io::Result<()> {
    use std::io::{Error, Read, Write};
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    let req = format!("GET / HTTP/1.1\r\nHost: bench\r\nX-Api-Key: {}\r\n\r\n", crate::procs::BENCH_KEY);
    c.write_all(req.as_bytes())?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Err(Error::other("closed before the response ended"));
        }
        got.extend_from_slice(&chunk[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
            .unwrap_or(0);
        if got.len() >= end + 4 + len {
            return Ok(());
        }
    }
}

/// Raises the open-file limit (children inherit it): to 1 Mi where allowed (root), else to
/// the hard limit. Returns the limit in force.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        let want = libc::rlimit { rlim_cur: 1 << 20, rlim_max: (1 << 20).max(lim.rlim_max) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
            return want.rlim_cur;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}
