//! Metrics and the access log end to end, on both drivers: the admin listener's
//! `/metrics` (requests by route and status class, durations, upstream failures, open
//! connections) and `/healthz`, and the JSON lines of the access log.

use std::io::{Read, Write};

use coregate_tests::*;

/// Fetches `path` from the admin listener.
fn admin(gw: &Gateway, raw: &str) -> Message {
    Client::connect(gw.admin_addr()).request(raw)
}

fn metrics(gw: &Gateway) -> String {
    let m = admin(gw, "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(m.status(), 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    m.text()
}

/// Waits until `f` holds (counters and the log are written just after the answer leaves).
fn config(up: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "{extra}\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{up}\", \"{}\"]\noutlier = {{ consecutive_failures = 0 }}\n\n[[routes]]\nname = \"users\"\npath = \"/users\"\nupstream = \"api\"\n\n[[routes]]\npath = \"/teapot\"\nrespond = {{ status = 418, body = \"short and stout\" }}\n",
        dead_addr()
    )
}

both_drivers!(metrics_count_requests_by_route_and_status, |io| {
    let up = Upstream::echo();
    let gw = Gateway::start(io, &config(up.addr, "[admin]\nlisten = \"127.0.0.1:0\""));
    let mut c = gw.client();
    for _ in 0..4 {
        // Round robin over a live and a dead endpoint: the dead one is skipped after its
        // connect fails, and the failure counted.
        assert_eq!(c.request("GET /users/1?api_key=secret HTTP/1.1\r\nHost: a\r\n\r\n").status(), 200);
    }
    assert_eq!(c.request("GET /teapot HTTP/1.1\r\nHost: a\r\n\r\n").status(), 418);
    assert_eq!(c.request("GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n").status(), 404);
    assert_eq!(gw.client().request("GET / HTTP/1.1\r\n\r\n").status(), 400);
    eventually(|| {
        let m = metrics(&gw);
        m.contains("coregate_requests_total{route=\"users\",code=\"2xx\"} 4\n")
            && m.contains("coregate_requests_total{route=\"1\",code=\"4xx\"} 1\n")
            && m.contains("coregate_requests_total{route=\"(none)\",code=\"4xx\"} 2\n")
    });
    let m = metrics(&gw);
    assert!(m.contains("coregate_request_duration_seconds_count{route=\"users\"} 4\n"), "{m}");
    assert!(m.contains("coregate_request_duration_seconds_bucket{route=\"users\",le=\"+Inf\"} 4\n"), "{m}");
    let failures: u64 = m
        .lines()
        .filter(|l| l.starts_with("coregate_upstream_failures_total{upstream=\"api\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(failures, 2, "two connects to the dead endpoint: {m}");
    assert!(m.contains(&format!("coregate_upstream_healthy{{upstream=\"api\",endpoint=\"{}\"}} 1\n", up.addr)));
    // The client connection `c` is still open.
    assert!(m.lines().any(|l| l.starts_with("coregate_client_connections{worker=") && !l.ends_with(" 0")), "{m}");
    // The rest of the admin listener.
    let h = admin(&gw, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((h.status(), h.text().as_str()), (200, "ok\n"));
    assert_eq!(admin(&gw, "GET /other HTTP/1.1\r\nHost: a\r\n\r\n").status(), 404);
    assert_eq!(admin(&gw, "POST /metrics HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\n\r\n").status(), 405);
    // No route has a cache: nothing to empty.
    assert_eq!(admin(&gw, "DELETE /cache HTTP/1.1\r\nHost: a\r\n\r\n").status(), 404);
});

both_drivers!(the_access_log_has_a_json_line_per_request, |io| {
    let up = Upstream::echo();
    let path = std::env::temp_dir().join(format!("coregate-access-{}-{io}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let gw = Gateway::start(io, &config(up.addr, &format!("[access_log]\npath = {:?}", path.display().to_string())));
    let mut c = gw.client();
    let fields = "User-Agent: t/1 \"q\"\r\nReferer: https://r.example/\r\n";
    assert_eq!(
        c.request(format!("GET /users/7?api_key=secret HTTP/1.1\r\nHost: api.test\r\n{fields}\r\n")).status(),
        200
    );
    assert_eq!(c.request("GET /teapot HTTP/1.1\r\nHost: api.test\r\n\r\n").status(), 418);
    assert_eq!(c.request("GET /users/./%39?api_key=secret HTTP/1.1\r\nHost: api.test\r\n\r\n").status(), 200);
    // Its whole answer, as the client received it, for `bytes_sent`.
    let mut raw = std::net::TcpStream::connect(gw.addr).unwrap();
    raw.write_all(b"GET /users/8 HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200 "));
    assert_eq!(
        gw.client().request("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").status(),
        400
    );
    let mut lines = Vec::new();
    eventually(|| {
        lines = std::fs::read_to_string(&path).unwrap_or_default().lines().map(str::to_string).collect();
        lines.len() >= 5
    });
    let entries: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).expect(l)).collect();
    let users = entries.iter().find(|e| e["route"] == "users" && e["path"] == "/users/7").expect("the proxied request");
    assert_eq!(users["status"], 200);
    assert_eq!(users["method"], "GET");
    assert_eq!(users["host"], "api.test");

    assert_eq!(users["client"], "127.0.0.1");
    // Where it went and how long the upstream took (nginx's $upstream_addr and
    // $upstream_header_time), and the client's User-Agent and Referer (nginx's combined).
    assert_eq!(users["upstream_addr"], up.addr.to_string());
    assert!(users["upstream_ms"].as_f64().unwrap() >= 0.0);
    assert!(users["upstream_ms"].as_f64() <= users["duration_ms"].as_f64());
    assert_eq!(
        (users["user_agent"].as_str(), users["referer"].as_str()),
        (Some("t/1 \"q\""), Some("https://r.example/"))
    );
    assert_eq!(users.get("consumer"), None);
    assert_eq!(users.get("path_as_sent"), None, "a path normalisation left alone");
    let normalised = entries.iter().find(|e| e["path"] == "/users/9").expect("the normalised request");
    assert_eq!(normalised["path_as_sent"], "/users/./%39", "as sent, without its query");
    assert!(users["duration_ms"].as_f64().unwrap() >= 0.0);
    let closed = entries.iter().find(|e| e["path"] == "/users/8").expect("the request with its answer read");
    assert_eq!(closed["bytes_sent"].as_u64(), Some(answer.len() as u64));
    assert!(users["time"].as_str().unwrap().ends_with('Z'));
    let direct = entries.iter().find(|e| e["route"] == "1" && e["status"] == 418).expect("the direct answer");
    assert_eq!((direct.get("upstream_addr"), direct.get("upstream_ms"), direct.get("user_agent")), (None, None, None));
    assert!(entries.iter().any(|e| e["route"] == "" && e["status"] == 400 && e["method"] == ""));
    assert!(!lines.iter().any(|l| l.contains("secret")));
    drop(gw);
    let _ = std::fs::remove_file(&path);
});

both_drivers!(the_access_log_names_the_consumer, |io| {
    let up = Upstream::echo();
    let path = std::env::temp_dir().join(format!("coregate-consumer-{}-{io}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let extra = format!(
        "[access_log]\npath = {:?}\n[[consumers]]\nname = \"alice\"\nkeys = [\"key-alice-1\"]\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\nauth = \"api_key\"\n",
        path.display().to_string(),
        up.addr
    );
    let gw = Gateway::start(io, &extra);
    let mut c = gw.client();
    assert_eq!(c.request("GET /a HTTP/1.1\r\nHost: a\r\nX-Api-Key: key-alice-1\r\n\r\n").status(), 200);
    assert_eq!(c.request("GET /b HTTP/1.1\r\nHost: a\r\nX-Api-Key: nope\r\n\r\n").status(), 401);
    let mut entries: Vec<serde_json::Value> = Vec::new();
    eventually(|| {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        entries = text.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
        entries.len() >= 2
    });
    let by_path = |p: &str| entries.iter().find(|e| e["path"] == p).expect(p).clone();
    assert_eq!(by_path("/a")["consumer"], "alice");
    assert_eq!(by_path("/b").get("consumer"), None, "refused: no consumer");
    drop(gw);
    let _ = std::fs::remove_file(&path);
});

#[test]
fn observability_settings_are_checked() {
    let base = "[server]\nlisten = [\"127.0.0.1:0\"]\n[[upstreams]]\nname = \"api\"\nendpoints = [\"127.0.0.1:9\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\nname = \"x\"\n[[routes]]\npath = \"/b\"\nupstream = \"api\"\n";
    let err = |extra: &str| config::Config::parse(&format!("{base}{extra}")).expect_err(extra).to_string();
    assert!(err("name = \"x\"\n").contains("routes[1].name"));
    assert!(err("name = \"a b\"\n").contains("routes[1].name"));
    assert!(err("[admin]\nlisten = \"nope\"\n").contains("admin.listen"));
    assert!(err("[access_log]\n").contains("access_log.path"));
    let e = engine::Server::start(
        config::Config::parse(&format!("{base}[access_log]\npath = \"/nonexistent-dir/x.log\"\n")).unwrap(),
    )
    .err()
    .expect("an access log that cannot be opened")
    .to_string();
    assert!(e.contains("/nonexistent-dir/x.log"), "{e}");
}

both_drivers!(request_ids_go_upstream_back_and_into_the_log, |io| {
    let up = Upstream::echo();
    let path = std::env::temp_dir().join(format!("coregate-rid-{}-{io}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let gw = Gateway::start_with(
        io,
        1,
        "request_id = \"X-Request-Id\"",
        &format!(
            "[access_log]\npath = {:?}\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n",
            path.display().to_string(),
            up.addr
        ),
    );
    let mut c = gw.client();
    // None sent: one is made, 32 hex digits, the same upstream and back, new per request.
    let r = c.request("GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
    let made = r.header("x-request-id").expect("an id in the response").to_string();
    assert_eq!(made.len(), 32);
    assert!(made.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(r.header("x-echo-x-request-id"), Some(made.as_str()));
    let next = c.request("GET /a HTTP/1.1\r\nHost: a\r\n\r\n").header("x-request-id").unwrap().to_string();
    assert_ne!(next, made);
    // A sane one is kept.
    let r = c.request("GET /b HTTP/1.1\r\nHost: a\r\nX-Request-Id: trace-42\r\n\r\n");
    assert_eq!(r.header("x-request-id"), Some("trace-42"));
    assert_eq!(r.header_all("x-echo-x-request-id"), ["trace-42"]);
    // One too long is replaced.
    let long = "x".repeat(200);
    let r = c.request(format!("GET /c HTTP/1.1\r\nHost: a\r\nX-Request-Id: {long}\r\n\r\n"));
    assert_eq!(r.header("x-request-id").unwrap().len(), 32);
    // Answers coregate makes itself carry it too (a 413 here, refused before any upstream).
    let r = c.request("POST /d HTTP/1.1\r\nHost: a\r\nX-Request-Id: big-1\r\ncontent-length: 999999999999\r\n\r\n");
    assert_eq!((r.status(), r.header("x-request-id")), (413, Some("big-1")));
    let mut lines = String::new();
    eventually(|| {
        lines = std::fs::read_to_string(&path).unwrap_or_default();
        lines.lines().count() >= 5
    });
    assert!(lines.contains("\"request_id\":\"big-1\""), "{lines}");
    assert!(lines.contains("\"request_id\":\"trace-42\""), "{lines}");
    assert!(lines.contains(&format!("\"request_id\":\"{made}\"")), "{lines}");
    drop(gw);
    let _ = std::fs::remove_file(&path);
});
