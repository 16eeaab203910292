//! `upstreams[].max_requests` (a circuit breaker on requests in flight to an upstream, over
//! all workers), end to end on both drivers.

use std::io::{Read, Write};
use std::sync::{mpsc, Mutex};

use coregate_tests::*;

both_drivers!(requests_over_max_requests_get_503_at_once, |io| {
    let (arrived_tx, arrived) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let (arrived_tx, release_rx) = (Mutex::new(arrived_tx), Mutex::new(release_rx));
    let up = Upstream::start(move |mut c| {
        while let Some(req) = c.read_request() {
            if req.start.starts_with("GET /slow ") {
                arrived_tx.lock().unwrap().send(()).unwrap();
                release_rx.lock().unwrap().recv().unwrap();
            }
            if !c.write(echo_response(&req)) {
                return;
            }
        }
    });
    let gw = Gateway::start(
        io,
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\nmax_requests = 2\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n",
            up.addr
        ),
    );
    // Two in flight, on connections that may land on either worker.
    let mut slow: Vec<Client> = (0..2).map(|_| gw.client()).collect();
    for c in &mut slow {
        c.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
        arrived.recv().unwrap();
    }
    // A third, from any worker, is refused without waiting; its connection stays usable.
    for _ in 0..4 {
        let mut c = gw.client();
        let r = c.request("GET /more HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.status(), 503);
        assert!(r.text().contains("max_requests"), "{}", r.text());
        assert_ne!(r.header("connection"), Some("close"));
    }
    // The gauge and the admin's upstream view show the two held (a scrape is no request).
    let admin = |path: &str| {
        let mut s = std::net::TcpStream::connect(gw.admin_addr()).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let metrics = admin("/metrics");
    assert!(metrics.contains("\ncoregate_upstream_in_flight{upstream=\"api\"} 2\n"), "{metrics}");
    let view = admin("/upstreams");
    let body = view.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let doc: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {view}"));
    let api = &doc["upstreams"][0];
    assert_eq!(
        (api["name"].as_str(), api["max_requests"].as_u64(), api["in_flight"].as_u64()),
        (Some("api"), Some(2), Some(2))
    );
    assert_eq!(api["balance"], "round_robin");
    let endpoint = &api["endpoints"][0];
    assert_eq!(endpoint["address"], up.addr.to_string());
    assert_eq!((endpoint["weight"].as_u64(), endpoint["healthy"].as_bool()), (Some(1), Some(true)));
    assert_eq!(doc["generation"], 0);
    release.send(()).unwrap();
    release.send(()).unwrap();
    for c in &mut slow {
        assert_eq!(c.response().status(), 200);
    }
    // The slots came back.
    assert_eq!(gw.client().request("GET /after HTTP/1.1\r\nHost: x\r\n\r\n").status(), 200);
});
