//! Load balancing across an upstream's endpoints (`upstreams[].balance`, weights), end to
//! end on both drivers: weighted round robin, least request, and consistent hashing on a
//! header, a cookie, a query parameter and the client's address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{mpsc, Mutex};

use coregate_tests::*;

/// An upstream whose answers name it; a request for `/slow` is reported on `arrived` and
/// answered once `release` says so.
fn holding(name: &'static str, arrived: mpsc::Sender<()>, release: mpsc::Receiver<()>) -> Upstream {
    let slow = Mutex::new((arrived, release));
    Upstream::start(move |mut c| {
        while let Some(req) = c.read_request() {
            if req.start.starts_with("GET /slow ") {
                let slow = slow.lock().unwrap();
                slow.0.send(()).unwrap();
                slow.1.recv().unwrap();
            }
            if !c.write(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}", name.len())) {
                return;
            }
        }
    })
}

fn upstream_toml(endpoints: &[String], keys: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"api\"\nendpoints = [{}]\n{keys}\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n",
        endpoints.join(", ")
    )
}

fn plain(up: &Upstream) -> String {
    format!("\"{}\"", up.addr)
}

/// Which upstream answered `request`, on a new connection to `addr`.
fn served_by(addr: SocketAddr, request: &str) -> String {
    Client::connect(addr).request(request).text()
}

both_drivers!(weights_spread_requests_in_proportion, |io| {
    let (a, b) = (Upstream::named("a"), Upstream::named("b"));
    let endpoints = [format!("{{ address = \"{}\", weight = 3 }}", a.addr), plain(&b)];
    let gw = Gateway::start_with_workers(io, 1, &upstream_toml(&endpoints, ""));
    let mut c = gw.client();
    let order: String = (0..8).map(|_| c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").text()).collect();
    // Smooth weighted round robin (nginx's): a a b a, twice.
    assert_eq!(order, "aabaaaba");
});

both_drivers!(least_request_sends_around_a_busy_endpoint, |io| {
    let (arrived_tx, arrived) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let (a, b) = (holding("a", arrived_tx, release_rx), Upstream::named("b"));
    let gw = Gateway::start_with_workers(io, 1, &upstream_toml(&[plain(&a), plain(&b)], "balance = \"least_request\""));
    // The first request ties and goes to the first endpoint, which holds it.
    let mut slow = gw.client();
    slow.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    arrived.recv().unwrap();
    // Round robin would send every other one to "a" (and wait behind /slow).
    let mut c = gw.client();
    let during: String = (0..4).map(|_| c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").text()).collect();
    assert_eq!(during, "bbbb");
    release.send(()).unwrap();
    assert_eq!(slow.response().text(), "a");
    // Nothing in flight: ties again, in turn.
    let after: String = (0..2).map(|_| c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").text()).collect();
    assert!(after == "ab" || after == "ba", "{after}");
});

both_drivers!(a_header_hash_keeps_each_key_on_one_endpoint_across_workers_and_reloads, |io| {
    let ups = [Upstream::named("a"), Upstream::named("b"), Upstream::named("c")];
    let keys = "balance = \"hash\"\nhash_on = \"header:x-user\"";
    let mut gw = Gateway::start(io, &upstream_toml(&ups.iter().map(plain).collect::<Vec<_>>(), keys));
    let ask = |gw: &Gateway, user: usize| {
        served_by(gw.addr, &format!("GET / HTTP/1.1\r\nHost: x\r\nX-User: u{user}\r\n\r\n"))
    };
    let mut home = HashMap::new();
    for user in 0..40 {
        // New connections: both workers answer, and agree.
        let first = ask(&gw, user);
        for _ in 0..3 {
            assert_eq!(ask(&gw, user), first, "user {user} moved");
        }
        home.insert(user, first);
    }
    let used: std::collections::HashSet<&String> = home.values().collect();
    assert_eq!(used.len(), 3, "{home:?}");
    // Without "c", only its users move.
    gw.reload_extra(&upstream_toml(&[plain(&ups[0]), plain(&ups[1])], keys)).unwrap();
    for (user, was) in &home {
        let now = ask(&gw, *user);
        if was == "c" {
            assert_ne!(now, "c");
        } else {
            assert_eq!(&now, was, "user {user} moved off a remaining endpoint");
        }
    }
    // Requests without the key go round robin.
    let mut c = gw.client();
    let spread: String = (0..4).map(|_| c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").text()).collect();
    assert!(spread.contains('a') && spread.contains('b'), "{spread}");
});

both_drivers!(a_cookie_query_or_client_address_hash_is_sticky, |io| {
    let ups = [Upstream::named("a"), Upstream::named("b")];
    let endpoints: Vec<String> = ups.iter().map(plain).collect();
    let gw = Gateway::start(io, &upstream_toml(&endpoints, "balance = \"hash\"\nhash_on = \"cookie:sid\""));
    let mut seen = std::collections::HashSet::new();
    for sid in 0..16 {
        let request = format!("GET / HTTP/1.1\r\nHost: x\r\nCookie: theme=dark; sid={sid}\r\n\r\n");
        let first = served_by(gw.addr, &request);
        assert_eq!(served_by(gw.addr, &request), first);
        assert_eq!(served_by(gw.addr, &format!("GET / HTTP/1.1\r\nHost: x\r\nCookie: sid={sid}\r\n\r\n")), first);
        seen.insert(first);
    }
    assert_eq!(seen.len(), 2);
    drop(gw);
    // A query parameter, wherever it stands in the query.
    let gw = Gateway::start(io, &upstream_toml(&endpoints, "balance = \"hash\"\nhash_on = \"query:user\""));
    let mut seen = std::collections::HashSet::new();
    for user in 0..16 {
        let first = served_by(gw.addr, &format!("GET /?user={user} HTTP/1.1\r\nHost: x\r\n\r\n"));
        let again = served_by(gw.addr, &format!("GET /x?a=1&user={user}&b=2 HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(again, first, "user {user}");
        seen.insert(first);
    }
    assert_eq!(seen.len(), 2);
    drop(gw);
    // Every test client is 127.0.0.1: one endpoint takes them all.
    let gw = Gateway::start(io, &upstream_toml(&endpoints, "balance = \"hash\"\nhash_on = \"client_ip\""));
    let first = served_by(gw.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    for _ in 0..8 {
        assert_eq!(served_by(gw.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"), first);
    }
});
