//! coregate-load end to end: the binary against the bundled upstream (also the binary),
//! both on 127.0.0.1 with ports chosen by the kernel. Each run is bounded by --duration and
//! --timeout, so every test ends by itself.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_coregate-load");

/// A bundled upstream child process, killed on drop.
struct Upstream {
    child: Child,
    addr: SocketAddr,
}

impl Upstream {
    fn start(extra: &[&str]) -> Upstream {
        let mut child = Command::new(BIN)
            .args(["upstream", "--listen", "127.0.0.1:0", "--workers", "1", "--no-pin"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start upstream");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).expect("read banner");
        let addr = line.split_whitespace().nth(4).expect("banner names the address").parse().expect("address");
        Upstream { child, addr }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the load generator against `http://target/x` with `args` and returns its JSON
/// report.
fn load(target: SocketAddr, args: &[&str]) -> serde_json::Value {
    load_url(&format!("http://{target}/x"), args)
}

/// As [`load`], against `url`.
fn load_url(url: &str, args: &[&str]) -> serde_json::Value {
    let dir = std::env::temp_dir().join(format!("coregate-load-test-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("out.json");
    let out = Command::new(BIN)
        .args(["--url", url, "--no-pin", "--threads", "1", "--json", json.to_str().unwrap()])
        .args(args)
        .output()
        .expect("run coregate-load");
    assert!(out.status.success(), "coregate-load failed: {}", String::from_utf8_lossy(&out.stderr));
    let v = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    v
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

#[test]
fn closed_loop_counts_every_response() {
    let up = Upstream::start(&[]);
    let r = load(up.addr, &["-c", "4", "-d", "1s"]);
    assert!(u(&r["requests"]) > 100, "{r}");
    assert_eq!(u(&r["errors"]), 0, "{r}");
    assert_eq!(u(&r["status"]["200"]), u(&r["requests"]));
    assert!(r["target_rate"].is_null());
    assert!(u(&r["latency_us"]["p50"]) <= u(&r["latency_us"]["p99"]));
    assert!(u(&r["latency_us"]["p99"]) <= u(&r["latency_us"]["max"]));
}

#[test]
fn pipelined_and_chunked_responses_are_read() {
    let up = Upstream::start(&["--chunked", "--body-size", "3000"]);
    let r = load(up.addr, &["-c", "2", "-d", "500ms", "--pipeline", "4"]);
    assert!(u(&r["requests"]) > 100, "{r}");
    assert_eq!(u(&r["errors"]), 0, "{r}");
}

#[test]
fn a_closing_server_does_not_end_the_run() {
    let up = Upstream::start(&["--close-after", "3"]);
    let r = load(up.addr, &["-c", "2", "-d", "1s"]);
    assert!(u(&r["requests"]) > 30, "{r}");
    assert_eq!(u(&r["errors"]), 0, "responses with Connection: close are not errors: {r}");
    assert!(u(&r["reconnects"]) >= 10, "{r}");
}

#[test]
fn a_stalled_server_counts_timeouts_and_the_run_still_ends() {
    let up = Upstream::start(&["--stall-after", "5"]);
    let r = load(up.addr, &["-c", "2", "-d", "1s", "--timeout", "200ms"]);
    assert!(u(&r["errors_by_kind"]["timeout"]) >= 2, "{r}");
    assert!(u(&r["status"]["200"]) >= 5, "{r}");
}

#[test]
fn open_loop_latency_counts_from_the_intended_send_time() {
    // Every response takes 50 ms and there is one connection: at 40 req/s the server can
    // answer only 20 per second, so requests queue and their latency (measured from when
    // they should have been sent) must grow far beyond the 50 ms service time.
    let up = Upstream::start(&["--delay", "50ms"]);
    let r = load(up.addr, &["-c", "1", "-d", "1s", "--rate", "40", "--timeout", "5s"]);
    assert_eq!(r["target_rate"].as_f64(), Some(40.0));
    assert!(u(&r["latency_us"]["max"]) >= 300_000, "queueing delay must show in the tail: {r}");
    assert!(u(&r["latency_us"]["p50"]) >= 50_000, "{r}");
}

#[test]
fn open_loop_keeps_its_rate_against_a_fast_server() {
    let up = Upstream::start(&[]);
    let r = load(up.addr, &["-c", "4", "-d", "1s", "--rate", "200"]);
    let rps = r["rps"].as_f64().unwrap();
    assert!((160.0..=240.0).contains(&rps), "asked 200 req/s, got {rps}: {r}");
    assert_eq!(u(&r["errors"]), 0, "{r}");
}

#[test]
fn connect_errors_are_counted() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let r = load(dead, &["-c", "1", "-d", "300ms"]);
    assert_eq!(u(&r["requests"]), 0);
    assert!(u(&r["errors_by_kind"]["connect"]) >= 1, "{r}");
}

#[test]
fn ramp_reports_each_step() {
    let up = Upstream::start(&[]);
    let r = load(up.addr, &["-c", "2", "--ramp", "50:50:150", "--step-duration", "400ms"]);
    let steps = r["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[2]["target_rate"].as_f64(), Some(150.0));
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let out = Command::new(BIN).args(["--url", "ftp://x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only http://"));
}

/// An HTTPS server on 127.0.0.1 (rustls, a self-signed certificate for 127.0.0.1 whose
/// PEM file is `cert_file`): a thread per connection answers every request head with
/// `200 ok`, keeping the connection open. Its threads end with the test process.
struct HttpsServer {
    addr: SocketAddr,
    cert_file: std::path::PathBuf,
}

impl HttpsServer {
    fn start() -> HttpsServer {
        HttpsServer::start_with(rustls::DEFAULT_VERSIONS, false)
    }

    /// A server speaking only `versions`; with `close`, it closes each connection after its
    /// first response (`Connection: close`), so that every request is a new handshake.
    fn start_with(versions: &[&'static rustls::SupportedProtocolVersion], close: bool) -> HttpsServer {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!("coregate-load-tls-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert_file = dir.join("cert.pem");
        std::fs::write(&cert_file, made.cert.pem()).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
        let config =
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![made.cert.der().clone()], key)
                .unwrap();
        let config = std::sync::Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                let config = config.clone();
                std::thread::spawn(move || serve_tls(config, sock, close));
            }
        });
        HttpsServer { addr, cert_file }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        if let Some(dir) = self.cert_file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Answers each request head on one TLS connection until the client goes.
fn serve_tls(config: std::sync::Arc<rustls::ServerConfig>, sock: std::net::TcpStream, close: bool) {
    use std::io::{Read, Write};
    let Ok(conn) = rustls::ServerConnection::new(config) else { return };
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = tls.read(&mut buf) {
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            if close {
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                tls.conn.send_close_notify();
                let _ = tls.flush();
                return;
            }
            if tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                return;
            }
        }
    }
}

#[test]
fn https_targets_are_loaded_through_tls() {
    let server = HttpsServer::start();
    let url = format!("https://{}/x", server.addr);
    let r = load_url(&url, &["-c", "2", "-d", "500ms", "--cacert", server.cert_file.to_str().unwrap()]);
    assert!(u(&r["requests"]) > 10, "{r}");
    assert_eq!(u(&r["errors"]), 0, "{r}");
    assert_eq!(u(&r["status"]["200"]), u(&r["requests"]));
    // Two connections, two handshakes, and what they agreed on.
    assert_eq!(u(&r["tls"]["handshakes"]), 2, "{r}");
    assert_eq!(u(&r["tls"]["negotiated"]["TLSv1.3 TLS13_AES_256_GCM_SHA384"]), 2, "{r}");
    // Without the authority the certificate is not trusted: every connect fails, and says so.
    let r = load_url(&url, &["-c", "1", "-d", "300ms"]);
    assert_eq!(u(&r["requests"]), 0, "{r}");
    assert!(u(&r["errors_by_kind"]["connect"]) >= 1, "{r}");
}

#[test]
fn tls_handshakes_are_counted_with_what_they_negotiated_and_resumed() {
    // TLS 1.2 only, and a new connection per request: the second handshake on resumes.
    let server = HttpsServer::start_with(&[&rustls::version::TLS12], true);
    let url = format!("https://{}/x", server.addr);
    let r = load_url(&url, &["-c", "1", "-d", "300ms", "--cacert", server.cert_file.to_str().unwrap()]);
    let handshakes = u(&r["tls"]["handshakes"]);
    assert!(handshakes > 3, "{r}");
    assert_eq!(u(&r["errors"]), 0, "{r}");
    assert_eq!(u(&r["tls"]["negotiated"]["TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"]), handshakes, "{r}");
    assert_eq!(u(&r["tls"]["resumed"]), handshakes - 1, "{r}");
    // Plain targets have no tls object.
    let up = Upstream::start(&[]);
    assert!(load(up.addr, &["-c", "1", "-d", "100ms"]).get("tls").is_none());
}
