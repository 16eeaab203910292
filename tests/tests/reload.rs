//! Reloading the configuration of a running gateway (`Server::reload`, SIGHUP), end to end
//! on both drivers: new connections follow the new configuration on the same sockets, the
//! old generation finishes what it has, nothing is refused or lost while the generations
//! change, and a reload that cannot start leaves the running configuration serving.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use coregate_tests::*;

/// An upstream answering every request with `name` as its body; a request for `/slow`
/// is reported on `arrived` and answered once `release` says so.
fn named(name: &'static str, arrived: mpsc::Sender<()>, release: mpsc::Receiver<()>) -> Upstream {
    let (arrived, release) = (Mutex::new(arrived), Mutex::new(release));
    Upstream::start(move |mut c| {
        while let Some(req) = c.read_request() {
            if req.start.starts_with("GET /slow ") {
                arrived.lock().unwrap().send(()).unwrap();
                release.lock().unwrap().recv().unwrap();
            }
            if !c.write(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}", name.len())) {
                return;
            }
        }
    })
}

fn routes_to(up: SocketAddr) -> String {
    format!("[[upstreams]]\nname = \"api\"\nendpoints = [\"{up}\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n")
}

both_drivers!(new_connections_follow_the_new_configuration_and_the_old_finishes, |io| {
    let (a_arrived, arrived) = mpsc::channel();
    let (release, a_release) = mpsc::channel();
    let a = named("a", a_arrived, a_release);
    let b = named("b", mpsc::channel().0, mpsc::channel().1);
    let mut gw = Gateway::start(io, &routes_to(a.addr));
    let mut idle = gw.client();
    assert_eq!(idle.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").text(), "a");
    let mut slow = gw.client();
    slow.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    arrived.recv().unwrap();

    gw.reload_extra(&routes_to(b.addr)).unwrap();
    assert_eq!(gw.addr_at(0), gw.addr, "the listening address stays");
    let mut fresh = gw.client();
    assert_eq!(fresh.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").text(), "b");
    // The old generation closes its idle keep-alive connection and finishes the request in
    // flight, closing its connection after the answer.
    assert!(idle.closed(), "the idle connection of the old configuration stays open");
    release.send(()).unwrap();
    let answer = slow.response();
    assert_eq!((answer.status(), answer.text().as_str()), (200, "a"));
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(slow.closed());
    // Keep-alive goes on in the new generation.
    assert_eq!(fresh.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").text(), "b");
});

// POSTs with a body, each on a new connection, from four threads while the gateway is
// reloaded twenty times between two upstreams: every one is answered 200 by one of them.
both_drivers!(reloads_under_load_lose_no_request, |io| {
    let (a, b) = (Upstream::echo(), Upstream::echo());
    let mut gw = Gateway::start(io, &routes_to(a.addr));
    let addr = gw.addr;
    let (stop, answered) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (stop, answered) = (stop.clone(), answered.clone());
            thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let body = format!("thread {t} request {n}");
                    let mut c = Client::connect(addr);
                    let r = c.request(format!(
                        "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    ));
                    assert_eq!((r.status(), r.text()), (200, format!("POST /p\n{body}")));
                    answered.fetch_add(1, Ordering::SeqCst);
                    n += 1;
                }
            })
        })
        .collect();
    for i in 0..20 {
        let before = answered.load(Ordering::SeqCst);
        until(|| answered.load(Ordering::SeqCst) >= before + 10, thread::yield_now);
        gw.reload_extra(&routes_to(if i % 2 == 0 { b.addr } else { a.addr })).unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("a request failed across a reload");
    }
    assert!(a.connection_count() > 0 && b.connection_count() > 0);
});

both_drivers!(a_reload_that_cannot_start_leaves_the_running_configuration, |io| {
    let up = Upstream::echo();
    let mut gw = Gateway::start(io, &routes_to(up.addr));
    // The worker count is fixed by the listening sockets.
    let cfg = config::Config::parse(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 3\nio = \"{io}\"\npin_cores = false\n{}",
        routes_to(up.addr)
    ))
    .unwrap();
    let e = gw.reload(cfg).expect_err("a changed worker count");
    assert!(e.contains("server.workers cannot change"), "{e}");
    // An address taken by another socket (without SO_REUSEPORT).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let e = gw
        .reload(
            config::Config::parse(&format!(
                "[server]\nlisten = [\"127.0.0.1:0\", \"{}\"]\nworkers = 2\nio = \"{io}\"\npin_cores = false\n{}",
                taken.local_addr().unwrap(),
                routes_to(up.addr)
            ))
            .unwrap(),
        )
        .expect_err("an address in use");
    assert!(e.contains("cannot listen on"), "{e}");
    let mut c = gw.client();
    assert_eq!(c.request("GET /still HTTP/1.1\r\nHost: x\r\n\r\n").text(), "GET /still\n");
});

both_drivers!(a_reload_binds_new_addresses_and_closes_removed_ones, |io| {
    let up = Upstream::echo();
    let mut gw = Gateway::start(io, &routes_to(up.addr));
    let old = gw.addr;
    let cfg = config::Config::parse(&format!(
        "[server]\nlisten = [\"127.0.0.2:0\"]\nworkers = 2\nio = \"{io}\"\npin_cores = false\n{}",
        routes_to(up.addr)
    ))
    .unwrap();
    gw.reload(cfg).unwrap();
    let new = gw.addr_at(0);
    assert_eq!(new.ip().to_string(), "127.0.0.2");
    let mut c = Client::connect(new);
    assert_eq!(c.request("GET /n HTTP/1.1\r\nHost: x\r\n\r\n").status(), 200);
    // The old address closes once the old generation has stopped accepting.
    until(|| TcpStream::connect(old).is_err(), thread::yield_now);
});

// The admin listener moves to the new generation on the same address: its health check
// answers 200 (the old one, draining, would say 503) and its metrics count anew.
both_drivers!(the_admin_listener_serves_the_new_generation, |io| {
    let up = Upstream::echo();
    let admin = "[admin]\nlisten = \"127.0.0.1:0\"\n";
    let mut gw = Gateway::start(io, &format!("{admin}{}", routes_to(up.addr)));
    let addr = gw.admin_addr();
    let get = |path: &str| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert_eq!(gw.client().request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").status(), 200);
    assert!(get("/metrics").contains("\ncoregate_config_generation 0\n"));
    gw.reload_extra(&format!("{admin}{}", routes_to(up.addr))).unwrap();
    assert_eq!(gw.admin_addr(), addr);
    for _ in 0..20 {
        let health = get("/healthz");
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    }
    let metrics = get("/metrics");
    assert!(metrics.contains("coregate_requests_total"), "{metrics}");
    assert!(metrics.contains("\ncoregate_config_generation 1\n"), "{metrics}");
    assert!(!metrics.lines().any(|l| l.starts_with("coregate_requests_total{") && !l.ends_with(" 0")), "{metrics}");
});

// A request in flight in a draining generation keeps its own timeout: the stalled upstream
// gets a 504 after `timeouts.upstream_response`, not an EOF at the end of the drain.
both_drivers!(requests_in_a_draining_generation_keep_their_timeouts, |io| {
    let (arrived_tx, arrived) = mpsc::channel();
    let arrived_tx = Mutex::new(arrived_tx);
    let stalled = Upstream::start(move |mut c| {
        if c.read_request().is_some() {
            arrived_tx.lock().unwrap().send(()).unwrap();
            // Holds the connection without answering until the gateway gives up on it.
            let _ = c.read_request();
        }
    });
    let settings = "[timeouts]\nupstream_response = \"200ms\"\ndrain = \"30s\"\n";
    let mut gw = Gateway::start(io, &format!("{settings}{}", routes_to(stalled.addr)));
    let mut c = gw.client();
    c.send("GET /stall HTTP/1.1\r\nHost: x\r\n\r\n");
    arrived.recv().unwrap();
    gw.reload_extra(&format!("{settings}{}", routes_to(stalled.addr))).unwrap();
    // Without the timeout the client would wait for the drain's end (past IO_TIMEOUT).
    assert_eq!(c.response().status(), 504);
});

both_drivers!(a_reload_keeps_the_balances_of_unchanged_rate_limits, |io| {
    let up = Upstream::echo();
    let upstream = format!("[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n", up.addr);
    // A burst of 3 that refills in about 3 hours: spent, it stays spent for the test.
    let limited = "[[routes]]\npath = \"/limited\"\nupstream = \"api\"\nrate_limits = [{ rate = 0.0001, burst = 3 }]\n";
    let mut gw = Gateway::start(io, &format!("{upstream}{limited}"));
    let passed = |gw: &Gateway| {
        let mut c = gw.client();
        (0..6).filter(|_| c.request("GET /limited HTTP/1.1\r\nHost: a\r\n\r\n").status() == 200).count()
    };
    let first = passed(&gw);
    assert!((3..6).contains(&first), "the burst (and leases of credit), then refusals: {first}");
    // The same limit, moved behind a new route: still spent. A new bank's worker may spend
    // one lease (1 token) on credit before the bank says the bucket is dry.
    let front = "[[routes]]\npath = \"/new\"\nupstream = \"api\"\n";
    gw.reload_extra(&format!("{upstream}{front}{limited}")).unwrap();
    assert!(passed(&gw) <= 1, "the balance came along");
    // A changed limit starts afresh.
    gw.reload_extra(&format!("{upstream}{}", limited.replace("burst = 3", "burst = 4"))).unwrap();
    assert!(passed(&gw) >= 4, "a new limit, a new burst");
});
