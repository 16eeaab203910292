//! Command-line parsing for both modes: the load generator and `upstream`. Every bad value
//! gets a message naming the flag.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

pub const HELP: &str = "\
coregate-load: HTTP/1.1 load generator with honest tail latency, and a bundled upstream

USAGE:
    coregate-load --url http[s]://HOST:PORT/PATH [OPTIONS]
    coregate-load upstream --listen ADDR [UPSTREAM OPTIONS]

LOAD OPTIONS:
    -u, --url URL              target: http:// or https:// (TLS 1.2 or 1.3, handshake at
                               connect, not counted in the latency)
        --cacert FILE          https: trust the certificates in this PEM file (default: the
                               Mozilla roots); the certificate is always verified
    -c, --connections N        keep-alive connections in all (default 64)
    -d, --duration D           measured time, e.g. 10s, 500ms, 1m (default 10s)
    -t, --threads T            threads, each pinned with its own runtime (default: cores)
    -r, --rate R               open loop: R requests/s in all, latency measured from the
                               intended send time (no coordinated omission)
        --pipeline N           closed loop: N requests in flight per connection (default 1)
    -m, --method M             request method (default GET)
    -H, --header 'K: V'        extra request header (repeatable)
        --body S               request body
        --body-file F          request body from a file
        --timeout D            per-request timeout (default 5s)
        --warmup D             unmeasured time before the run (default 0s)
        --ramp A:S:B           open-loop steps from A to B req/s in steps of S
        --step-duration D      duration of each ramp step (default 5s)
        --json FILE            write results as JSON
        --no-pin               do not pin threads to cores

UPSTREAM OPTIONS:
        --listen ADDR          address to listen on (default 127.0.0.1:9000; port 0 picks one
                               and prints it)
        --workers N            threads (default: cores)
        --body-size B          response body bytes (default 13)
        --delay D              fixed delay before each response
        --delay-dist uniform:A:B | exp:MEAN
                               random delay before each response
        --chunked              send chunked responses
        --close-after N        close each connection after N responses
        --stall-after N        after N responses on a connection, stop answering on it
        --no-pin               do not pin threads to cores
";

/// Parses `250ms`, `5s`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "us" => n / 1e6,
        _ => return Err(format!("invalid duration unit in {s:?} (use us, ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A parsed `http://host:port/path` or `https://...` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub addr: SocketAddr,
    /// As written, for the Host header.
    pub authority: String,
    pub path: String,
    /// `https://`: the name the server's certificate must cover (the authority without
    /// its port).
    pub tls_host: Option<String>,
}

pub fn parse_url(s: &str) -> Result<Url, String> {
    let (rest, default_port, tls) = match (s.strip_prefix("http://"), s.strip_prefix("https://")) {
        (Some(rest), _) => (rest, 80, false),
        (_, Some(rest)) => (rest, 443, true),
        _ => return Err(format!("--url {s:?}: only http:// and https:// URLs are supported")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (with_port, host) = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) && !authority.ends_with(']') => {
            (authority.to_string(), host)
        }
        _ => (format!("{authority}:{default_port}"), authority),
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("--url {s:?}: cannot resolve {authority:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url {s:?}: {authority:?} resolves to nothing"))?;
    let tls_host = tls.then(|| host.to_string());
    Ok(Url { addr, authority: authority.to_string(), path: path.to_string(), tls_host })
}

#[derive(Debug, Clone)]
pub struct LoadArgs {
    pub url: Url,
    pub connections: usize,
    pub duration: Duration,
    pub threads: usize,
    pub rate: Option<f64>,
    pub pipeline: usize,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
    pub warmup: Duration,
    pub ramp: Option<(f64, f64, f64)>,
    pub step_duration: Duration,
    pub json: Option<String>,
    pub pin: bool,
    /// For an `https://` URL.
    pub tls: Option<crate::tls::Target>,
}

impl LoadArgs {
    /// The request bytes every connection sends.
    pub fn request(&self) -> Vec<u8> {
        let mut r = format!("{} {} HTTP/1.1\r\nHost: {}\r\n", self.method, self.url.path, self.url.authority);
        for (k, v) in &self.headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        if !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            r.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        r.push_str("\r\n");
        let mut r = r.into_bytes();
        r.extend_from_slice(&self.body);
        r
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DelayDist {
    Fixed(Duration),
    Uniform(Duration, Duration),
    Exponential(Duration),
}

#[derive(Debug, Clone)]
pub struct UpstreamArgs {
    pub listen: SocketAddr,
    pub workers: usize,
    pub body_size: usize,
    pub delay: Option<DelayDist>,
    pub chunked: bool,
    pub close_after: Option<u64>,
    pub stall_after: Option<u64>,
    pub pin: bool,
}

pub enum Command {
    Help,
    Load(Box<LoadArgs>),
    Upstream(UpstreamArgs),
}

fn value<'a>(it: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<&'a str, String> {
    it.next().map(String::as_str).ok_or_else(|| format!("{flag} needs a value"))
}

fn number<T: std::str::FromStr>(v: &str, flag: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{flag}: invalid number {v:?}"))
}

pub fn parse(args: &[String]) -> Result<Command, String> {
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Command::Help);
    }
    if args[0] == "upstream" {
        return parse_upstream(&args[1..]).map(Command::Upstream);
    }
    parse_load(args).map(|a| Command::Load(Box::new(a)))
}

fn parse_load(args: &[String]) -> Result<LoadArgs, String> {
    let mut url = None;
    let mut a = LoadArgs {
        url: Url {
            addr: "127.0.0.1:80".parse().expect("literal"),
            authority: String::new(),
            path: "/".into(),
            tls_host: None,
        },
        connections: 64,
        duration: Duration::from_secs(10),
        threads: crate::runtime::cores(),
        rate: None,
        pipeline: 1,
        method: "GET".into(),
        headers: Vec::new(),
        body: Vec::new(),
        timeout: Duration::from_secs(5),
        warmup: Duration::ZERO,
        ramp: None,
        step_duration: Duration::from_secs(5),
        json: None,
        pin: true,
        tls: None,
    };
    let mut cacert = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let f = flag.as_str();
        match f {
            "-u" | "--url" => url = Some(parse_url(value(&mut it, f)?)?),
            "-c" | "--connections" => a.connections = number(value(&mut it, f)?, f)?,
            "-d" | "--duration" => a.duration = parse_duration(value(&mut it, f)?)?,
            "-t" | "--threads" => a.threads = number(value(&mut it, f)?, f)?,
            "-r" | "--rate" => a.rate = Some(number(value(&mut it, f)?, f)?),
            "--pipeline" => a.pipeline = number(value(&mut it, f)?, f)?,
            "-m" | "--method" => a.method = value(&mut it, f)?.to_string(),
            "-H" | "--header" => {
                let v = value(&mut it, f)?;
                let (k, val) = v.split_once(':').ok_or_else(|| format!("{f} {v:?}: expected 'Name: value'"))?;
                a.headers.push((k.trim().to_string(), val.trim().to_string()));
            }
            "--body" => a.body = value(&mut it, f)?.as_bytes().to_vec(),
            "--body-file" => {
                let p = value(&mut it, f)?;
                a.body = std::fs::read(p).map_err(|e| format!("{f} {p:?}: {e}"))?;
            }
            "--timeout" => a.timeout = parse_duration(value(&mut it, f)?)?,
            "--warmup" => a.warmup = parse_duration(value(&mut it, f)?)?,
            "--ramp" => {
                let v = value(&mut it, f)?;
                let parts: Vec<f64> = v.split(':').map(|p| number(p, f)).collect::<Result<_, _>>()?;
                match parts[..] {
                    [start, step, end] if start > 0.0 && step > 0.0 && end >= start => {
                        a.ramp = Some((start, step, end))
                    }
                    _ => return Err(format!("{f} {v:?}: expected START:STEP:END with 0 < START <= END and STEP > 0")),
                }
            }
            "--step-duration" => a.step_duration = parse_duration(value(&mut it, f)?)?,
            "--json" => a.json = Some(value(&mut it, f)?.to_string()),
            "--no-pin" => a.pin = false,
            "--cacert" => cacert = Some(value(&mut it, f)?),
            other => return Err(format!("unknown option {other:?} (see --help)")),
        }
    }
    a.url = url.ok_or("--url is required")?;
    a.tls = match (&a.url.tls_host, cacert) {
        (Some(host), cacert) => Some(crate::tls::Target::new(host, cacert)?),
        (None, Some(_)) => return Err("--cacert is for https:// URLs".into()),
        (None, None) => None,
    };
    if a.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if a.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    a.threads = a.threads.min(a.connections);
    if a.pipeline == 0 {
        return Err("--pipeline must be at least 1".into());
    }
    if a.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be a positive number".into());
    }
    if a.duration.is_zero() || a.timeout.is_zero() || a.step_duration.is_zero() {
        return Err("--duration, --timeout and --step-duration must be positive".into());
    }
    Ok(a)
}

fn parse_upstream(args: &[String]) -> Result<UpstreamArgs, String> {
    let mut a = UpstreamArgs {
        listen: "127.0.0.1:9000".parse().expect("literal"),
        workers: crate::runtime::cores(),
        body_size: 13,
        delay: None,
        chunked: false,
        close_after: None,
        stall_after: None,
        pin: true,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let f = flag.as_str();
        match f {
            "--listen" => {
                let v = value(&mut it, f)?;
                a.listen = v.parse().map_err(|_| format!("{f} {v:?}: expected IP:PORT"))?;
            }
            "--workers" => a.workers = number(value(&mut it, f)?, f)?,
            "--body-size" => a.body_size = number(value(&mut it, f)?, f)?,
            "--delay" => a.delay = Some(DelayDist::Fixed(parse_duration(value(&mut it, f)?)?)),
            "--delay-dist" => {
                let v = value(&mut it, f)?;
                let parts: Vec<&str> = v.split(':').collect();
                a.delay = Some(match parts[..] {
                    ["uniform", lo, hi] => DelayDist::Uniform(parse_duration(lo)?, parse_duration(hi)?),
                    ["exp", mean] => DelayDist::Exponential(parse_duration(mean)?),
                    _ => return Err(format!("{f} {v:?}: expected uniform:MIN:MAX or exp:MEAN")),
                });
            }
            "--chunked" => a.chunked = true,
            "--close-after" => a.close_after = Some(number(value(&mut it, f)?, f)?),
            "--stall-after" => a.stall_after = Some(number(value(&mut it, f)?, f)?),
            "--no-pin" => a.pin = false,
            other => return Err(format!("unknown upstream option {other:?} (see --help)")),
        }
    }
    if a.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn load_args() {
        let Ok(Command::Load(a)) =
            parse(&s(&["--url", "http://127.0.0.1:8080/x", "-c", "8", "-t", "16", "--rate", "100", "-H", "A: b"]))
        else {
            panic!("parse failed")
        };
        assert_eq!(a.url.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(a.threads, 8, "threads are capped at connections");
        assert_eq!(String::from_utf8(a.request()).unwrap(), "GET /x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nA: b\r\n\r\n");
        assert!(parse(&s(&["--url", "ftp://x"])).is_err());
        assert!(parse(&s(&["--url", "http://127.0.0.1:1/", "--cacert", "x.pem"])).is_err());
        assert!(parse(&s(&["--url", "https://127.0.0.1:1/", "--cacert", "/nonexistent.pem"])).is_err());
        assert!(parse(&s(&["--url", "http://127.0.0.1:1/", "--ramp", "5:0:1"])).is_err());
        assert!(parse(&s(&["--url", "http://127.0.0.1:1/", "--bogus"])).is_err());
    }

    #[test]
    fn urls() {
        let u = parse_url("https://127.0.0.1/a?b").unwrap();
        assert_eq!(
            (u.addr, u.path.as_str(), u.tls_host.as_deref()),
            ("127.0.0.1:443".parse().unwrap(), "/a?b", Some("127.0.0.1"))
        );
        let u = parse_url("https://[::1]:8443").unwrap();
        assert_eq!(
            (u.addr, u.authority.as_str(), u.tls_host.as_deref()),
            ("[::1]:8443".parse().unwrap(), "[::1]:8443", Some("[::1]"))
        );
        let u = parse_url("http://localhost:8080/").unwrap();
        assert_eq!((u.addr.port(), u.tls_host), (8080, None));
        let Ok(Command::Load(a)) = parse(&s(&["--url", "https://localhost:1/"])) else { panic!("parse failed") };
        assert!(a.tls.is_some(), "the Mozilla roots without --cacert");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
