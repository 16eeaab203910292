//! Fault injection (`routes[].fault`) end to end on both drivers: an exact share of
//! requests aborted with the configured status, delays that hold a request before it is
//! served, faults limited to requests that carry a field, and their counts.

use std::time::{Duration, Instant};

use coregate_tests::*;

fn config(up: std::net::SocketAddr, fault: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{up}\"]\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"api\"\nfault = {{ {fault} }}\n"
    )
}

fn metrics(gw: &Gateway) -> String {
    gw.admin("GET", "/metrics").1
}

both_drivers!(an_exact_share_is_aborted, |io| {
    let up = Upstream::echo();
    let gw = Gateway::start_with_workers(io, 1, &config(up.addr, "abort = { status = 503, percent = 50 }"));
    let mut c = gw.client();
    let statuses: Vec<u16> = (0..6).map(|_| c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status()).collect();
    // Every second request, and the connection stays usable after an abort.
    assert_eq!(statuses, [200, 503, 200, 503, 200, 503]);
    let r = c.request("GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.text(), "GET /x\n");
    until(
        || metrics(&gw).contains("coregate_faults_total{route=\"r\",fault=\"abort\"} 3\n"),
        || std::thread::sleep(Duration::from_millis(5)),
    );
});

both_drivers!(faults_can_be_limited_to_marked_requests_and_delays_hold_them, |io| {
    let up = Upstream::echo();
    let fault = "delay = { duration = \"300ms\" }, abort = { status = 418, percent = 50 }, header = \"x-chaos\"";
    let gw = Gateway::start_with_workers(io, 1, &config(up.addr, fault));
    let mut c = gw.client();
    // Unmarked: never delayed nor aborted.
    for _ in 0..4 {
        assert_eq!(c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status(), 200);
    }
    // Marked: every one delayed (a lower bound, which a slow machine cannot break), every
    // second one aborted after its delay.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let t0 = Instant::now();
        statuses.push(c.request("GET / HTTP/1.1\r\nHost: a\r\nX-Chaos: 1\r\n\r\n").status());
        assert!(t0.elapsed() >= Duration::from_millis(300), "{:?}", t0.elapsed());
    }
    assert_eq!(statuses, [200, 418]);
    let m = metrics(&gw);
    assert!(m.contains("coregate_faults_total{route=\"r\",fault=\"delay\"} 2\n"), "{m}");
    assert!(m.contains("coregate_faults_total{route=\"r\",fault=\"abort\"} 1\n"), "{m}");
});
