//! The processes a comparison runs: the upstream, the proxies (coregate, nginx, HAProxy)
//! with equivalent configurations, each pinned with `taskset`; and their CPU time and
//! resident memory read from /proc.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The API key every load run sends (only the policy target checks it).
pub const BENCH_KEY: &str = "bench-key-0123456789";

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A child process killed on drop; `pids` lists it and its worker processes.
pub struct Proc {
    pub name: String,
    pub addr: SocketAddr,
    /// Clients speak TLS to it (a target terminating TLS, `--tls`).
    pub tls: bool,
    /// Its admin listener, serving `GET /metrics` (only the counted pipelined target has one).
    pub admin: Option<SocketAddr>,
    child: Child,
}

impl Proc {
    /// Every process id that belongs to this server (the child and its children).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.child.id()];
        let children = std::fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
            .collect::<Vec<_>>();
        pids.extend(children);
        pids
    }

    /// User + system CPU seconds of all its processes.
    pub fn cpu_seconds(&self) -> f64 {
        let tick = clock_ticks();
        self.pids()
            .iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
            .filter_map(|s| {
                // Fields after the ")" of the command name: state is field 3, utime 14, stime 15.
                let rest = &s[s.rfind(')')? + 2..];
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tick)
            })
            .sum()
    }

    /// Resident memory of all its processes, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.pids()
            .iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
            .filter_map(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .sum()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first, so that a server exits as it would in service (coregate drains and
        // returns from main, which is also when a profiling build writes its profile for
        // scripts/build-pgo); whatever is still running after a bounded wait is killed.
        // SAFETY: kill(2) on the id of our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Workers first (nginx's outlive a killed master), then the child itself.
        for pid in self.pids().into_iter().skip(1) {
            // SAFETY: kill(2) on a process id we read from our child's /proc entry.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Waits (bounded) until `addr` accepts connections.
fn wait_ready(addr: SocketAddr, child: &mut Child, name: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{name} exited during startup ({status})"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{name} did not listen on {addr} within 10 s"))
}

fn spawn(
    name: &str,
    cores: &str,
    program: &Path,
    args: &[String],
    addr: SocketAddr,
    log: &Path,
) -> Result<Proc, String> {
    let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = Command::new("taskset")
        .arg("-c")
        .arg(cores)
        .arg(program)
        .args(args)
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    wait_ready(addr, &mut child, name)?;
    Ok(Proc { name: name.to_string(), addr, tls: false, admin: None, child })
}

/// Where the binaries and scratch files live.
pub struct Env {
    pub bin_dir: PathBuf,
    pub work: PathBuf,
    /// The open-file limit the servers inherit.
    pub nofile: u64,
}

/// What coregate's route does in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Plain,
    Policies,
    Cache,
    /// To an HTTPS upstream (`upstreams[].tls`, checked against the demo certificate).
    Https,
    /// Terminating TLS: a `[tls]` listener serving the demo certificate (`--tls`).
    Tls,
    /// Pipelining this many requests per upstream write (`upstreams[].pipeline`, `--pipeline`).
    Pipelined(usize),
    /// As `Pipelined`, with the admin listener on, so that its batches can be counted from
    /// `/metrics`. Kept apart from `Pipelined`: with an admin listener every worker also
    /// keeps the metrics counters, which the measured targets do not pay for.
    Counted(usize),
}

/// How nginx runs as a proxy: plain, answering from its `proxy_cache`, to an HTTPS
/// upstream (`proxy_pass https://`, the certificate verified, sessions reused), or
/// terminating TLS.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nginx {
    Plain,
    Cache,
    Https,
    /// Terminating TLS with the demo certificate (`listen ... ssl`).
    Tls,
}

/// The demo certificate (localhost, 127.0.0.1) and its key, which the HTTPS upstream serves
/// and the proxies trust.
pub const DEMO_CERT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples/certs/localhost.pem");
const DEMO_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples/certs/localhost.key");

impl Env {
    pub fn upstream_bundled(&self, cores: &str) -> Result<Proc, String> {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("literal");
        let args = ["upstream", "--listen", &addr.to_string(), "--workers", "1", "--no-pin"].map(String::from);
        spawn("upstream", cores, &self.bin_dir.join("coregate-load"), &args, addr, &self.work.join("upstream.log"))
    }

    /// nginx as the upstream (1 worker); with `tls`, serving HTTPS with the demo certificate
    /// at nginx's default protocols: TLS 1.2 at most for nginx before 1.23.4, which is also
    /// the most nginx 1.22 asks for as a proxy (`proxy_ssl_protocols`), so coregate-https
    /// and nginx-https both speak TLS 1.2 to it.
    pub fn upstream_nginx(&self, cores: &str, tls: bool) -> Result<Proc, String> {
        let port = free_port();
        let name = if tls { "upstream-nginx-https" } else { "upstream-nginx" };
        let dir = self.work.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let ssl = match tls {
            true => format!(" ssl; ssl_certificate {DEMO_CERT}; ssl_certificate_key {DEMO_KEY}"),
            false => String::new(),
        };
        let conf = format!(
            "worker_processes 1;\ndaemon off;\nmaster_process off;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 4096; }}\nhttp {{ access_log off; keepalive_requests 10000000;\n\
             server {{ listen 127.0.0.1:{port}{ssl}; location / {{ return 200 \"hello world!\\n\"; }} }} }}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).map_err(|e| e.to_string())?;
        let addr = format!("127.0.0.1:{port}").parse().expect("literal");
        let args =
            ["-c".to_string(), dir.join("nginx.conf").display().to_string(), "-p".into(), dir.display().to_string()];
        spawn(name, cores, Path::new("nginx"), &args, addr, &self.work.join(format!("{name}.log")))
    }

    /// coregate with the plain route, the policy chain the README measures (API key, rate
    /// limit never reached, a request header set from a template), or the route cached.
    pub fn coregate(
        &self,
        cores: &str,
        workers: usize,
        upstream: SocketAddr,
        io: &str,
        variant: Variant,
    ) -> Result<Proc, String> {
        let port = free_port();
        let (name, route_extra) = match variant {
            Variant::Plain => (format!("coregate-{io}"), ""),
            Variant::Policies => (
                format!("coregate-{io}-policies"),
                "auth = \"api_key\"\nrate_limits = [{ rate = 10000000, burst = 1000000, key = \"consumer\" }]\n\
                 request_headers = { set = { x-consumer-tag = \"c-{consumer}\" } }\n",
            ),
            // The bench upstream states no freshness: the route's ttl gives it 10 minutes,
            // as nginx-cache's proxy_cache_valid does.
            Variant::Cache => (format!("coregate-{io}-cache"), "cache = { ttl = \"10m\" }\n"),
            Variant::Https => (format!("coregate-{io}-https"), ""),
            Variant::Tls => (format!("coregate-{io}-tls"), ""),
            Variant::Pipelined(_) => (format!("coregate-{io}-pipelined"), ""),
            Variant::Counted(_) => (format!("coregate-{io}-pipelined-counted"), ""),
        };
        let upstream_extra = match variant {
            Variant::Https => format!("tls = {{ server_name = \"localhost\", ca_file = \"{DEMO_CERT}\" }}\n"),
            Variant::Pipelined(depth) | Variant::Counted(depth) => format!("pipeline = {depth}\n"),
            _ => String::new(),
        };
        let consumers = if variant == Variant::Policies {
            format!("[[consumers]]\nname = \"bench\"\nkeys = [\"{BENCH_KEY}\"]\n")
        } else {
            String::new()
        };
        // A TLS target listens with TLS only.
        let (listen, tls) = match variant {
            Variant::Tls => (
                String::new(),
                format!(
                    "[tls]\nlisten = [\"127.0.0.1:{port}\"]\n[[tls.certificates]]\ncert_file = \"{DEMO_CERT}\"\n\
                     key_file = \"{DEMO_KEY}\"\nserver_names = [\"localhost\"]\n"
                ),
            ),
            _ => (format!("listen = [\"127.0.0.1:{port}\"]\n"), String::new()),
        };
        let admin: Option<SocketAddr> = match variant {
            Variant::Counted(_) => Some(format!("127.0.0.1:{}", free_port()).parse().expect("literal")),
            _ => None,
        };
        let admin_conf = admin.map(|a| format!("[admin]\nlisten = \"{a}\"\n")).unwrap_or_default();
        // The pipelined targets gather their batches with batched waits too (README, "Batched
        // waits"), on io_uring, where they exist.
        let batch = match variant {
            Variant::Pipelined(_) | Variant::Counted(_) if io == "io_uring" => "batch_wait_us = 50\n",
            _ => "",
        };
        let conf = format!(
            "[server]\n{listen}workers = {workers}\nio = \"{io}\"\npin_cores = false\n{batch}{tls}{admin_conf}{consumers}\
             [[upstreams]]\nname = \"api\"\nendpoints = [\"{upstream}\"]\n{upstream_extra}[[routes]]\npath = \"/\"\nupstream = \"api\"\n{route_extra}"
        );
        let path = self.work.join(format!("{name}.toml"));
        std::fs::write(&path, conf).map_err(|e| e.to_string())?;
        let addr = format!("127.0.0.1:{port}").parse().expect("literal");
        let args = ["--config".to_string(), path.display().to_string()];
        let log = self.work.join(format!("{name}.log"));
        let mut p = spawn(&name, cores, &self.bin_dir.join("coregate"), &args, addr, &log)?;
        p.tls = variant == Variant::Tls;
        p.admin = admin;
        Ok(p)
    }

    /// nginx as a reverse proxy, named nginx, nginx-cache, nginx-https or nginx-tls by `kind`.
    pub fn nginx(
        &self,
        cores: &str,
        workers: usize,
        upstream: SocketAddr,
        max_conns: usize,
        kind: Nginx,
    ) -> Result<Proc, String> {
        let port = free_port();
        let cache = kind == Nginx::Cache;
        let name = match kind {
            Nginx::Plain => "nginx",
            Nginx::Cache => "nginx-cache",
            Nginx::Https => "nginx-https",
            Nginx::Tls => "nginx-tls",
        };
        let dir = self.work.join(format!("{name}-proxy"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        // Started as root, nginx's workers run as another user, who may not reach the cache
        // directory (under a private temporary directory in CI): they stay root then.
        let root =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").map_err(|e| e.to_string())?) == 0;
        let (cache_path, cache_use) = match cache {
            true => (
                format!("proxy_cache_path {}/cache keys_zone=c:16m use_temp_path=off;\n", dir.display()),
                "proxy_cache c; proxy_cache_valid 200 10m; ",
            ),
            false => (String::new(), ""),
        };
        // As coregate-https: the name sent and checked, the demo certificate trusted,
        // sessions resumed on new connections.
        let (scheme, https) = match kind {
            Nginx::Https => (
                "https",
                format!(
                    "proxy_ssl_server_name on; proxy_ssl_name localhost; proxy_ssl_verify on; \
                     proxy_ssl_trusted_certificate {DEMO_CERT}; proxy_ssl_session_reuse on; "
                ),
            ),
            _ => ("http", String::new()),
        };
        // TLS 1.3 named: nginx before 1.23.4 (Debian 12 has 1.22) speaks TLS 1.2 at most
        // without it, and a TLS 1.2 session resumed from a ticket skips the key exchange that
        // every TLS 1.3 resumption makes (coregate and HAProxy speak TLS 1.3).
        let ssl = match kind {
            Nginx::Tls => format!(
                " ssl; ssl_certificate {DEMO_CERT}; ssl_certificate_key {DEMO_KEY}; ssl_protocols TLSv1.2 TLSv1.3;"
            ),
            _ => ";".into(),
        };
        let user = if cache && root { "user root;\n" } else { "" };
        let conf = format!(
            "{user}worker_processes {workers};\ndaemon off;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\nworker_rlimit_nofile {lim};\n\
             events {{ worker_connections {lim}; }}\nhttp {{ access_log off; keepalive_requests 10000000;\n{cache_path}\
             upstream up {{ server {upstream}; keepalive 256; }}\n\
             server {{ listen 127.0.0.1:{port} reuseport{ssl} location / {{ proxy_pass {scheme}://up; proxy_http_version 1.1; \
             proxy_set_header Connection \"\"; {cache_use}{https}}} }} }}\n",
            d = dir.display(),
            lim = max_conns + 1024
        );
        std::fs::write(dir.join("nginx.conf"), conf).map_err(|e| e.to_string())?;
        let addr = format!("127.0.0.1:{port}").parse().expect("literal");
        let args =
            ["-c".to_string(), dir.join("nginx.conf").display().to_string(), "-p".into(), dir.display().to_string()];
        let mut p = spawn(name, cores, Path::new("nginx"), &args, addr, &self.work.join(format!("{name}.log")))?;
        p.tls = kind == Nginx::Tls;
        Ok(p)
    }

    /// coregate-pipe in `mode` (plain or ideal), named `pipe-<mode>`.
    pub fn pipe(&self, cores: &str, upstream: SocketAddr, mode: &str) -> Result<Proc, String> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("literal");
        let name = format!("pipe-{mode}");
        let args = [addr.to_string(), upstream.to_string(), mode.to_string()];
        spawn(&name, cores, &self.bin_dir.join("coregate-pipe"), &args, addr, &self.work.join(format!("{name}.log")))
    }

    /// HAProxy as a reverse proxy, named haproxy, or haproxy-tls with `tls` (terminating TLS
    /// with the demo certificate, `bind ... ssl crt`).
    pub fn haproxy(
        &self,
        cores: &str,
        workers: usize,
        upstream: SocketAddr,
        max_conns: usize,
        tls: bool,
    ) -> Result<Proc, String> {
        let port = free_port();
        let name = if tls { "haproxy-tls" } else { "haproxy" };
        let ssl = match tls {
            true => {
                // HAProxy takes the certificate and its key in one file.
                let pem = self.work.join("demo-cert-and-key.pem");
                let both = [DEMO_CERT, DEMO_KEY].map(std::fs::read_to_string);
                let [Ok(cert), Ok(key)] = both else { return Err(format!("cannot read {DEMO_CERT} or its key")) };
                std::fs::write(&pem, cert + &key).map_err(|e| e.to_string())?;
                format!(" ssl crt {}", pem.display())
            }
            false => String::new(),
        };
        let conf = format!(
            "global\n  nbthread {workers}\n  maxconn {lim}\n\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  \
             timeout server 60s\n  http-reuse always\n\nfrontend fe\n  bind 127.0.0.1:{port}{ssl}\n  default_backend be\n\n\
             backend be\n  server s1 {upstream} maxconn 4096\n",
            // HAProxy reserves two descriptors per connection up front.
            lim = (max_conns + 1024).min((self.nofile.saturating_sub(300) / 2) as usize)
        );
        let path = self.work.join(format!("{name}.cfg"));
        std::fs::write(&path, conf).map_err(|e| e.to_string())?;
        let addr = format!("127.0.0.1:{port}").parse().expect("literal");
        let args = ["-db".to_string(), "-f".into(), path.display().to_string()];
        let mut p = spawn(name, cores, Path::new("haproxy"), &args, addr, &self.work.join(format!("{name}.log")))?;
        p.tls = tls;
        Ok(p)
    }
}
