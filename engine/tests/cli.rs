//! The `coregate` binary: `check`, `--help`, startup errors, and SIGTERM draining (of
//! requests in flight and of WebSocket tunnels).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_coregate");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn temp_config(name: &str, text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("coregate-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn every_shipped_config_passes_check() {
    let mut files = vec![repo().join("config/quickstart.toml")];
    for e in std::fs::read_dir(repo().join("config/examples")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            files.push(path);
        }
    }
    assert!(files.len() >= 3);
    for f in files {
        let out = Command::new(BIN).arg("check").arg(&f).output().unwrap();
        assert!(out.status.success(), "{}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn check_lists_every_error_and_fails() {
    let p = temp_config(
        "bad",
        "[server]\nlisten = [\"localhost\"]\nbogus = 1\n[[upstreams]]\nname = \"api\"\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\npath = \"/\"\nupstream = \"nope\"\n",
    );
    let out = Command::new(BIN).arg("check").arg(&p).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.bogus: unknown key"), "{err}");
    assert!(err.contains("server.listen[0]: invalid address"), "{err}");
    assert!(err.contains("routes[0].upstream: no upstream named \"nope\""), "{err}");
}

#[test]
fn help_documents_both_commands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("coregate --config FILE") && text.contains("coregate check FILE"), "{text}");
    let out = Command::new(BIN).arg("--nonsense").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Starts the binary (1 worker on `io`, `extra` TOML before the upstream) in front of a
/// listener the test accepts from; returns the child, its stderr after the startup line,
/// the gateway's port and the upstream listener.
fn start_gateway(io: &str, name: &str, extra: &str) -> (Child, BufReader<ChildStderr>, u16, TcpListener) {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let p = temp_config(
        &format!("{name}-{io}"),
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\nio = \"{io}\"\npin_cores = false\n{extra}\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{up_addr}\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n"
        ),
    );
    let mut child = Command::new(BIN).arg("--config").arg(&p).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains(&format!("on {io}")), "{line}");
    let port: u16 = line.split("127.0.0.1:").nth(1).unwrap().split([']', ',']).next().unwrap().parse().unwrap();
    (child, stderr, port, upstream)
}

fn kill(child: &Child, sig: i32) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Sends SIGTERM and checks that the drain started.
fn sigterm(child: &Child, stderr: &mut BufReader<ChildStderr>) {
    kill(child, libc::SIGTERM);
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("draining"), "{line}");
}

fn sigterm_drains_and_exits(io: &str) {
    // An upstream that answers one request after the test has sent SIGTERM.
    let (mut child, mut stderr, port, upstream) = start_gateway(io, "run", "");
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let (mut up, _) = upstream.accept().unwrap();
    let mut buf = [0u8; 1024];
    let _ = up.read(&mut buf).unwrap();
    // The request is in flight: ask the gateway to stop.
    sigterm(&child, &mut stderr);
    up.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
    let mut resp = String::new();
    client.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200 OK") && resp.ends_with("ok"), "{resp}");
    // read_to_string returned: the gateway closed the connection after the response.
    assert!(child.wait().unwrap().success());
}

/// A WebSocket tunnel is left open by the drain until its deadline, then the process
/// exits and the client sees the connection close.
fn sigterm_ends_an_open_tunnel_at_the_drain_deadline(io: &str) {
    let (mut child, mut stderr, port, upstream) = start_gateway(io, "tunnel", "[timeouts]\ndrain = \"300ms\"\n");
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    client.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").unwrap();
    let (mut up, _) = upstream.accept().unwrap();
    let mut buf = [0u8; 1024];
    let _ = up.read(&mut buf).unwrap();
    up.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhi").unwrap();
    let mut head = vec![0u8; 1024];
    let mut got = 0;
    while !head[..got].ends_with(b"\r\n\r\nhi") {
        let n = client.read(&mut head[got..]).unwrap();
        assert!(n > 0, "closed before the tunnel opened");
        got += n;
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "));
    sigterm(&child, &mut stderr);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("the connection closes when the drain ends");
    assert!(rest.is_empty());
    assert!(child.wait().unwrap().success());
}

/// Reads the gateway's log until a line contains `what`; fails if it exits first.
fn log_until(stderr: &mut BufReader<ChildStderr>, what: &str) -> String {
    let mut line = String::new();
    while !line.contains(what) {
        line.clear();
        stderr.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the gateway exited before logging {what:?}");
    }
    line
}

/// SIGHUP reloads the whole file: the same port then answers by the new routes and TLS
/// listener; an invalid file is reported and the gateway goes on with what it runs.
fn sighup_reloads_the_configuration(io: &str) {
    let (mut child, mut stderr, port, _upstream) = start_gateway(io, "hup", "");
    let certs = repo().join("config/examples/certs");
    let reloaded = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nworkers = 1\nio = \"{io}\"\npin_cores = false\n[tls]\nlisten = [\"127.0.0.1:0\"]\n[[tls.certificates]]\ncert_file = {:?}\nkey_file = {:?}\n[[routes]]\npath = \"/\"\nrespond = {{ status = 200, body = \"reloaded\\n\" }}\n",
        certs.join("localhost.pem").display().to_string(),
        certs.join("localhost.key").display().to_string()
    );
    temp_config(&format!("hup-{io}"), &reloaded);
    kill(&child, libc::SIGHUP);
    let line = log_until(&mut stderr, "SIGHUP");
    assert!(line.contains("reloaded") && line.contains("1 route(s), 0 upstream(s)"), "{line}");
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    client.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200") && resp.ends_with("reloaded\n"), "{resp}");
    // The same file, now broken: logged, nothing changes, the gateway keeps running.
    temp_config(&format!("hup-{io}"), "[server\n");
    kill(&child, libc::SIGHUP);
    log_until(&mut stderr, "nothing reloaded");
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    client.read_to_string(&mut resp).unwrap();
    assert!(resp.ends_with("reloaded\n"), "{resp}");
    sigterm(&child, &mut stderr);
    assert!(child.wait().unwrap().success());
}

#[test]
fn sighup_reloads_the_configuration_io_uring() {
    sighup_reloads_the_configuration("io_uring");
}

#[test]
fn sighup_reloads_the_configuration_epoll() {
    sighup_reloads_the_configuration("epoll");
}

#[test]
fn sigterm_ends_an_open_tunnel_at_the_drain_deadline_io_uring() {
    sigterm_ends_an_open_tunnel_at_the_drain_deadline("io_uring");
}

#[test]
fn sigterm_ends_an_open_tunnel_at_the_drain_deadline_epoll() {
    sigterm_ends_an_open_tunnel_at_the_drain_deadline("epoll");
}

#[test]
fn sigterm_drains_and_exits_io_uring() {
    sigterm_drains_and_exits("io_uring");
}

#[test]
fn sigterm_drains_and_exits_epoll() {
    sigterm_drains_and_exits("epoll");
}

#[test]
fn an_explicit_driver_that_cannot_run_fails_at_startup() {
    // The probe treats MONOIO_FORCE_LEGACY_DRIVER=1 like a kernel that refuses io_uring.
    let p = temp_config(
        "uring-refused",
        "[server]\nlisten = [\"127.0.0.1:0\"]\nio = \"io_uring\"\n[[upstreams]]\nname = \"api\"\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n",
    );
    let out = Command::new(BIN).arg("--config").arg(&p).env("MONOIO_FORCE_LEGACY_DRIVER", "1").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not allow io_uring"), "{err}");
}

#[test]
fn check_warns_about_routes_that_can_never_match() {
    let p = temp_config(
        "shadow",
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[[upstreams]]\nname = \"api\"\nendpoints = [\"127.0.0.1:1\"]\n\
         [[routes]]\npath = \"/a\"\nupstream = \"api\"\n[[routes]]\npath = \"/a\"\nmethods = [\"GET\"]\nupstream = \"api\"\n\
         [[routes]]\npath = \"/b\"\nmethods = [\"GET\"]\nupstream = \"api\"\n[[routes]]\npath = \"/b\"\nmethods = [\"POST\"]\nupstream = \"api\"\n",
    );
    let out = Command::new(BIN).arg("check").arg(&p).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("warning: routes[1] can never match: routes[0]"), "{text}");
    assert!(!text.contains("routes[3]"), "{text}");
}
