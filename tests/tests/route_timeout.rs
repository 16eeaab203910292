//! A route's `timeout` (one deadline over the whole exchange with its upstream), on both
//! drivers: a silent upstream gets a 504 long before its own response timeout and the
//! client's connection stays usable; the deadline covers retries; a response already begun
//! is cut by closing; a WebSocket tunnel outlives it; each that ran out is counted by what
//! the client got; and the key is refused where it cannot apply.

use std::io::Read;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use coregate_tests::*;

/// An upstream that reads a request and then says nothing until the returned sender is
/// dropped (the test's end).
fn silent() -> (Upstream, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    let up = Upstream::start(move |mut c| {
        c.read_request();
        let _ = rx.lock().unwrap().recv();
    });
    (up, tx)
}

/// Upstream "slow" (whose own response timeout is an hour) for `/slow` (route "slow"), with
/// the route lines `route_extra`, upstream "fast" for everything else, and an admin listener.
fn gateway(io: &str, slow: &str, fast: &Upstream, upstream_extra: &str, route_extra: &str) -> Gateway {
    Gateway::start_with_workers(
        io,
        1,
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[upstreams]]\nname = \"slow\"\nendpoints = [{slow}]\nresponse_timeout = \"1h\"\n{upstream_extra}\n\
             [[upstreams]]\nname = \"fast\"\nendpoints = [\"{}\"]\n\
             [[routes]]\nname = \"slow\"\npath = \"/slow\"\nupstream = \"slow\"\n{route_extra}\n\
             [[routes]]\npath = \"/\"\nupstream = \"fast\"\n",
            fast.addr
        ),
    )
}

both_drivers!(a_silent_upstream_gets_504_and_the_connection_stays, |io| {
    let (up, _hold) = silent();
    let fast = Upstream::named("fast");
    let gw = gateway(io, &format!("\"{}\"", up.addr), &fast, "", "timeout = \"200ms\"");
    let mut c = gw.client();
    // Without the route's timeout this would wait for the upstream's hour (and the test's
    // client gives up after 20 s).
    let r = c.request("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), 504);
    assert!(r.text().contains("the route's timeout ran out"), "{}", r.text());
    // The whole request had been read: the connection serves the next one.
    let r = c.request("GET /other HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status(), r.text()), (200, "fast".to_string()));
    // Counted before the 504 was written, so already there.
    let (_, m) = gw.admin("GET", "/metrics");
    assert!(m.contains("coregate_route_timeouts_total{route=\"slow\",answer=\"504\"} 1\n"), "{m}");
    assert!(m.contains("coregate_route_timeouts_total{route=\"slow\",answer=\"closed\"} 0\n"), "{m}");
});

both_drivers!(retries_and_their_backoff_are_inside_the_deadline, |io| {
    // One endpoint answers 503, the other is silent: whichever is tried first, the retry
    // budget and the wait after the 503 count against the same 300 ms.
    let refusing = endpoint(true);
    let (silent, _hold) = silent();
    let fast = Upstream::named("fast");
    let endpoints = format!("\"{}\", \"{}\"", refusing.up.addr, silent.addr);
    let gw = gateway(io, &endpoints, &fast, "retries = 3\nretry_backoff = \"10s\"", "timeout = \"300ms\"");
    let mut c = gw.client();
    for _ in 0..2 {
        assert_eq!(c.request("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n").status(), 504);
    }
});

both_drivers!(a_response_already_begun_is_cut_by_closing, |io| {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    // Sends its head and a first chunk, then waits. (A small Content-Length body would be
    // read whole before the head goes out, and its timeout would be a 504.)
    let up = Upstream::start(move |mut c| {
        c.read_request();
        c.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n");
        let _ = rx.lock().unwrap().recv();
    });
    let fast = Upstream::named("fast");
    let gw = gateway(io, &format!("\"{}\"", up.addr), &fast, "", "timeout = \"200ms\"");
    let mut c = gw.client();
    c.send("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut got = Vec::new();
    c.reader.read_to_end(&mut got).expect("the connection closed, not timed out");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\n3\r\nabc\r\n"), "the first chunk, then the close, no last chunk: {got}");
    let (_, m) = gw.admin("GET", "/metrics");
    assert!(m.contains("coregate_route_timeouts_total{route=\"slow\",answer=\"closed\"} 1\n"), "{m}");
    drop(tx);
});

both_drivers!(a_websocket_tunnel_outlives_the_deadline, |io| {
    let up = Upstream::start(|mut c| {
        if c.read_request().is_some() {
            c.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
            let mut byte = [0u8; 1];
            while c.reader.read_exact(&mut byte).is_ok() {
                c.write(byte);
            }
        }
    });
    let fast = Upstream::named("fast");
    let gw = gateway(io, &format!("\"{}\"", up.addr), &fast, "", "timeout = \"100ms\"");
    let mut c = gw.client();
    let r = c.request(
        "GET /slow HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_eq!(r.status(), 101);
    // Not synchronisation: the route's deadline (100 ms, fired by a 50 ms tick) has to pass
    // for the test to mean anything.
    std::thread::sleep(Duration::from_millis(400));
    c.send("x");
    let mut echo = [0u8; 1];
    c.reader.read_exact(&mut echo).expect("the tunnel still open");
    assert_eq!(&echo, b"x");
});

#[test]
fn timeout_is_checked() {
    let parse = |route: &str| {
        config::Config::parse(&format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[[upstreams]]\nname = \"api\"\nendpoints = [\"127.0.0.1:9\"]\n[[routes]]\npath = \"/\"\n{route}\n"
        ))
    };
    let ok = parse("upstream = \"api\"\ntimeout = \"2s\"").unwrap();
    assert_eq!(ok.routes[0].timeout, Some(Duration::from_secs(2)));
    assert_eq!(parse("upstream = \"api\"").unwrap().routes[0].timeout, None);
    for (route, says) in [
        ("upstream = \"api\"\ntimeout = \"0s\"", "routes[0].timeout: must be greater than zero"),
        ("upstream = \"api\"\ntimeout = \"soon\"", "routes[0].timeout: invalid duration"),
        ("respond = { status = 204 }\ntimeout = \"2s\"", "routes[0].timeout: applies to a route that proxies"),
        ("respond = { status = 204 }\nretries = 1", "routes[0].retries: applies to a route that proxies"),
        ("respond = { status = 204 }\nresponse_timeout = \"1s\"", "routes[0].response_timeout: applies"),
    ] {
        let err = parse(route).unwrap_err().to_string();
        assert!(err.contains(says), "{route}: {err}");
    }
}
