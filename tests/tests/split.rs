//! Traffic splitting (`routes[].split`, `split_on`) end to end on both drivers: shares by
//! weight, a key that keeps each client on one side across workers and as the canary's
//! weight grows by reload, and where a split request is seen (access log, metrics).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use coregate_tests::*;

fn split_toml(v1: SocketAddr, v2: SocketAddr, weights: (u32, u32), extra: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"v1\"\nendpoints = [\"{v1}\"]\n[[upstreams]]\nname = \"v2\"\nendpoints = [\"{v2}\"]\n[[routes]]\nname = \"api\"\npath = \"/\"\nsplit = [{{ upstream = \"v1\", weight = {} }}, {{ upstream = \"v2\", weight = {} }}]\n{extra}\n",
        weights.0, weights.1
    )
}

both_drivers!(requests_are_shared_by_weight, |io| {
    let (v1, v2) = (Upstream::named("1"), Upstream::named("2"));
    let gw = Gateway::start_with_workers(io, 1, &split_toml(v1.addr, v2.addr, (3, 1), ""));
    let mut c = gw.client();
    let order: String = (0..8).map(|_| c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").text()).collect();
    // Smooth weighted round robin, as for endpoints: 1 1 2 1, twice.
    assert_eq!(order, "11211121");
    // A weight of 0 takes nothing.
    let gw = Gateway::start_with_workers(io, 1, &split_toml(v1.addr, v2.addr, (0, 5), ""));
    let mut c = gw.client();
    let all: String = (0..6).map(|_| c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").text()).collect();
    assert_eq!(all, "222222");
});

both_drivers!(a_split_key_keeps_clients_on_their_side_as_the_canary_grows, |io| {
    let (v1, v2) = (Upstream::named("1"), Upstream::named("2"));
    let on = "split_on = \"header:x-user\"";
    let mut gw = Gateway::start(io, &split_toml(v1.addr, v2.addr, (90, 10), on));
    let ask = |gw: &Gateway, user: u32| {
        Client::connect(gw.addr).request(format!("GET / HTTP/1.1\r\nHost: x\r\nX-User: u{user}\r\n\r\n")).text()
    };
    let mut side = HashMap::new();
    for user in 0..200 {
        // New connections, spread over both workers: every answer the same.
        let first = ask(&gw, user);
        assert_eq!(ask(&gw, user), first, "user {user} moved");
        side.insert(user, first);
    }
    let canary = side.values().filter(|s| *s == "2").count();
    assert!((5..=40).contains(&canary), "{canary} of 200 on the canary at 10%");
    // The canary grows to 50 of 100: its users stay, others join.
    gw.reload_extra(&split_toml(v1.addr, v2.addr, (50, 50), on)).unwrap();
    let mut grown = 0;
    for (user, was) in &side {
        let now = ask(&gw, *user);
        if was == "2" {
            assert_eq!(now, "2", "user {user} left the canary");
        }
        grown += usize::from(now == "2");
    }
    assert!(grown > canary + 40, "{grown} of 200 on the canary at 50% (was {canary})");
    // Without the key: round robin.
    let mut c = gw.client();
    let spread: String = (0..4).map(|_| c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").text()).collect();
    assert!(spread.contains('1') && spread.contains('2'), "{spread}");
});

both_drivers!(the_chosen_upstream_is_logged_and_counted, |io| {
    let (v1, v2) = (Upstream::named("1"), Upstream::named("2"));
    let path = std::env::temp_dir().join(format!("coregate-split-{}-{io}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let extra = format!("[admin]\nlisten = \"127.0.0.1:0\"\n[access_log]\npath = {:?}", path.display().to_string());
    let gw = Gateway::start_with_workers(io, 1, &split_toml(v1.addr, v2.addr, (1, 1), &extra));
    let mut c = gw.client();
    for _ in 0..4 {
        assert_eq!(c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").status(), 200);
    }
    let mut metrics = String::new();
    until(
        || {
            metrics = gw.admin("GET", "/metrics").1;
            metrics.contains("coregate_upstream_requests_total{upstream=\"v1\",code=\"2xx\"} 2\n")
        },
        || std::thread::sleep(Duration::from_millis(5)),
    );
    assert!(metrics.contains("coregate_upstream_requests_total{upstream=\"v2\",code=\"2xx\"} 2\n"), "{metrics}");
    let mut lines = Vec::new();
    until(
        || {
            lines = std::fs::read_to_string(&path).unwrap_or_default().lines().map(str::to_string).collect();
            lines.len() >= 4
        },
        || std::thread::sleep(Duration::from_millis(5)),
    );
    let upstreams: Vec<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["upstream"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(upstreams, ["v1", "v2", "v1", "v2"]);
    drop(gw);
    let _ = std::fs::remove_file(&path);
});
