//! `upstreams[].max_requests` (a circuit breaker on requests in flight to an upstream, over
//! all workers) and the queue in front of it (`upstreams[].queue`: its order, its size, its
//! timeout, slots freed on another worker), and `server.max_connections_per_ip`, end to end
//! on both drivers.

use std::sync::{mpsc, Mutex};

use coregate_tests::*;

both_drivers!(requests_over_max_requests_get_503_at_once, |io| {
    let Holding { up, arrived, release, .. } = holding_upstream();
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
    let (_, metrics) = gw.admin("GET", "/metrics");
    assert!(metrics.contains("\ncoregate_upstream_in_flight{upstream=\"api\"} 2\n"), "{metrics}");
    let (_, view) = gw.admin("GET", "/upstreams");
    let doc: serde_json::Value = serde_json::from_str(&view).unwrap_or_else(|e| panic!("{e}: {view}"));
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

/// An upstream that holds each `GET /slow` until released and answers the rest at once,
/// recording the order in which requests arrive.
struct Holding {
    up: Upstream,
    /// A message per `/slow` request that arrived.
    arrived: mpsc::Receiver<()>,
    /// A message answers one held request.
    release: mpsc::Sender<()>,
    order: std::sync::Arc<Mutex<Vec<String>>>,
}

fn holding_upstream() -> Holding {
    let (arrived_tx, arrived) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let (arrived_tx, release_rx) = (Mutex::new(arrived_tx), Mutex::new(release_rx));
    let order = std::sync::Arc::new(Mutex::new(Vec::new()));
    let seen = order.clone();
    let up = Upstream::start(move |mut c| {
        while let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req.start.split(' ').nth(1).unwrap_or("").to_string());
            if req.start.starts_with("GET /slow ") {
                arrived_tx.lock().unwrap().send(()).unwrap();
                release_rx.lock().unwrap().recv().unwrap();
            }
            if !c.write(echo_response(&req)) {
                return;
            }
        }
    });
    Holding { up, arrived, release, order }
}

fn queued_gateway(io: &str, workers: usize, up: &Upstream, queue: &str) -> Gateway {
    Gateway::start_with_workers(
        io,
        workers,
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\nmax_requests = 1\nqueue = {queue}\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n",
            up.addr
        ),
    )
}

fn scrape(gw: &Gateway) -> String {
    gw.admin("GET", "/metrics").1
}

both_drivers!(requests_over_max_requests_wait_in_the_queue_in_order, |io| {
    let Holding { up, arrived, release, order } = holding_upstream();
    let gw = queued_gateway(io, 1, &up, "{ size = 2, timeout = \"30s\" }");
    let mut slow = gw.client();
    slow.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    arrived.recv().unwrap();
    // Two wait, in the order they came; the gauge shows them.
    let mut waiting: Vec<Client> = Vec::new();
    for i in 1..=2 {
        let mut c = gw.client();
        c.send(format!("GET /q/{i} HTTP/1.1\r\nHost: x\r\n\r\n"));
        waiting.push(c);
        until(
            || scrape(&gw).contains(&format!("\ncoregate_upstream_queued{{upstream=\"api\"}} {i}\n")),
            std::thread::yield_now,
        );
    }
    // A third finds the queue full: 503 at once.
    let r = gw.client().request("GET /q/3 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status(), 503);
    assert!(r.text().contains("queue is full"), "{}", r.text());
    release.send(()).unwrap();
    assert_eq!(slow.response().status(), 200);
    for c in &mut waiting {
        assert_eq!(c.response().status(), 200);
    }
    assert_eq!(*order.lock().unwrap(), ["/slow", "/q/1", "/q/2"]);
    assert!(scrape(&gw).contains("\ncoregate_upstream_queued{upstream=\"api\"} 0\n"));
});

both_drivers!(a_request_waits_no_longer_than_the_queue_timeout, |io| {
    let Holding { up, arrived, release, order } = holding_upstream();
    let gw = queued_gateway(io, 1, &up, "{ timeout = \"100ms\" }");
    let mut slow = gw.client();
    slow.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    arrived.recv().unwrap();
    let mut c = gw.client();
    let r = c.request("GET /late HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status(), 503);
    assert!(r.text().contains("waited queue.timeout"), "{}", r.text());
    release.send(()).unwrap();
    assert_eq!(slow.response().status(), 200);
    // The refused request never reached the upstream; the connection serves the next one.
    assert_eq!(c.request("GET /next HTTP/1.1\r\nHost: x\r\n\r\n").status(), 200);
    assert_eq!(*order.lock().unwrap(), ["/slow", "/next"]);
});

both_drivers!(a_slot_freed_on_another_worker_reaches_the_queue, |io| {
    let Holding { up, arrived, release, order } = holding_upstream();
    let gw = queued_gateway(io, 2, &up, "{ size = 8, timeout = \"30s\" }");
    let mut slow = gw.client();
    slow.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    arrived.recv().unwrap();
    // Connections land on either worker; all of them wait for the one slot.
    let mut waiting: Vec<Client> = (0..4).map(|_| gw.client()).collect();
    for (i, c) in waiting.iter_mut().enumerate() {
        c.send(format!("GET /q/{i} HTTP/1.1\r\nHost: x\r\n\r\n"));
    }
    until(|| scrape(&gw).contains("\ncoregate_upstream_queued{upstream=\"api\"} 4\n"), std::thread::yield_now);
    release.send(()).unwrap();
    assert_eq!(slow.response().status(), 200);
    for c in &mut waiting {
        assert_eq!(c.response().status(), 200);
    }
    assert_eq!(order.lock().unwrap().len(), 5);
});

both_drivers!(connections_over_max_connections_per_ip_are_closed_on_accept, |io| {
    let Holding { up, arrived, release, .. } = holding_upstream();
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n",
        up.addr
    );
    let mut gw = Gateway::start_with(io, 2, "max_connections_per_ip = 2", &toml);
    // Two connections, each seen by a worker (answered), whichever worker took it.
    let mut open: Vec<Client> = (0..2).map(|_| gw.client()).collect();
    for c in &mut open {
        assert_eq!(c.request("GET /a HTTP/1.1\r\nHost: x\r\n\r\n").status(), 200);
    }
    // A third from the same address is closed before it says anything; the two go on.
    assert!(gw.client().closed(), "a third connection from 127.0.0.1 was kept");
    assert_eq!(open[1].request("GET /b HTTP/1.1\r\nHost: x\r\n\r\n").status(), 200);

    // A reload keeps the count: the old generation's two connections, each with a request in
    // flight (an idle one would close in the drain), still fill the address's share.
    for c in &mut open {
        c.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
        arrived.recv().unwrap();
    }
    gw.reload_extra(&toml).unwrap();
    assert!(gw.client().closed(), "the new generation forgot the old one's connections");
    let (_, metrics) = gw.admin("GET", "/metrics");
    assert!(metrics.contains("coregate_client_connections_refused_per_ip_total 1\n"), "{metrics}");

    // Answered, the draining generation closes them, and their places come free. Both held
    // requests are released first: which of the upstream's two handlers takes a release is
    // not the order the requests arrived in (under load, the second can wait first).
    for _ in &open {
        release.send(()).unwrap();
    }
    for c in &mut open {
        assert_eq!(c.response().status(), 200);
        assert!(c.closed());
    }
    let fresh = std::cell::RefCell::new(Vec::new());
    until(
        || fresh.borrow().len() == 2,
        || {
            let mut c = gw.client();
            c.send("GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
            if let Ok(Some(r)) = read_message(&mut c.reader, Framing::Response { head_request: false }) {
                assert_eq!(r.status(), 200);
                fresh.borrow_mut().push(c);
            }
        },
    );
    assert!(gw.client().closed(), "a third connection beside the two new ones was kept");
});
