//! Upstream health end to end, on both drivers: passive ejection (the circuit opens after a
//! run of failures, lets one request through after the ejection, closes on a success), the
//! panic rule (every endpoint out: all are tried), and active health checks taking an
//! endpoint out and putting it back, with expected statuses and body text, slow start
//! for an endpoint back in service, and endpoints drained through the admin listener.

use std::sync::atomic::Ordering;

use coregate_tests::*;

fn get(c: &mut Client) -> u16 {
    c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status()
}

both_drivers!(a_failing_endpoint_is_ejected_then_tried_again, |io| {
    let (bad, good) = (endpoint(true), endpoint(false));
    let gw = gateway_to(io, &[&bad, &good], "outlier = { consecutive_failures = 2, ejection = \"300ms\" }");
    let mut c = gw.client();
    // Round robin: bad, good, bad (second failure in a row: ejected), then good only.
    let statuses: Vec<u16> = (0..20).map(|_| get(&mut c)).collect();
    assert_eq!(bad.requests.load(Ordering::SeqCst), 2, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 503).count(), 2);
    // After the ejection one request goes through; failing again, it ejects at once.
    until(|| bad.requests.load(Ordering::SeqCst) == 3, || assert!([200, 503].contains(&get(&mut c))));
    for _ in 0..10 {
        assert_eq!(get(&mut c), 200);
    }
    assert_eq!(bad.requests.load(Ordering::SeqCst), 3, "one failure after the ejection ejects again");
    // Healthy again: the request after the next ejection closes the circuit.
    bad.sick.store(false, Ordering::SeqCst);
    until(|| bad.requests.load(Ordering::SeqCst) == 4, || assert_eq!(get(&mut c), 200));
    for _ in 0..10 {
        assert_eq!(get(&mut c), 200);
    }
    assert!(bad.requests.load(Ordering::SeqCst) >= 8, "the circuit closed: round robin again");
});

both_drivers!(with_every_endpoint_out_all_are_tried, |io| {
    let bad = endpoint(true);
    let gw = gateway_to(io, &[&bad], "outlier = { consecutive_failures = 1, ejection = \"1h\" }");
    let mut c = gw.client();
    for _ in 0..5 {
        assert_eq!(get(&mut c), 503);
    }
    assert_eq!(bad.requests.load(Ordering::SeqCst), 5);
});

both_drivers!(ejection_can_be_turned_off, |io| {
    let (bad, good) = (endpoint(true), endpoint(false));
    let gw = gateway_to(io, &[&bad, &good], "outlier = { consecutive_failures = 0 }");
    let mut c = gw.client();
    for _ in 0..20 {
        get(&mut c);
    }
    assert_eq!(bad.requests.load(Ordering::SeqCst), 10);
});

both_drivers!(active_checks_take_an_endpoint_out_and_put_it_back, |io| {
    let (bad, good) = (endpoint(true), endpoint(false));
    let check = "health_check = { path = \"/healthz\", interval = \"20ms\", unhealthy_threshold = 1, healthy_threshold = 2 }\noutlier = { consecutive_failures = 0 }";
    let gw = gateway_to(io, &[&bad, &good], check);
    // The second check began after the first failed one was counted.
    until(|| bad.checks.load(Ordering::SeqCst) >= 2, std::thread::yield_now);
    let mut c = gw.client();
    let before = bad.requests.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(get(&mut c), 200);
    }
    assert_eq!(bad.requests.load(Ordering::SeqCst), before, "an endpoint failing its checks got requests");
    assert!(good.checks.load(Ordering::SeqCst) >= 1);
    bad.sick.store(false, Ordering::SeqCst);
    until(|| bad.requests.load(Ordering::SeqCst) > before, || assert_eq!(get(&mut c), 200));
});

both_drivers!(checks_can_expect_statuses_and_body_text, |io| {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    // Both answer their check 200; "a" says it is degraded, "b" that it is ok. Requests are answered with the endpoint's name.
    let named = |name: &'static str, health: &'static str, checks: Arc<AtomicUsize>| {
        Upstream::start(move |mut c| {
            while let Some(req) = c.read_request() {
                let answer = if req.start.starts_with("GET /healthz ") {
                    checks.fetch_add(1, Ordering::SeqCst);
                    health.to_string()
                } else {
                    format!("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n{name}")
                };
                if !c.write(answer) {
                    return;
                }
            }
        })
    };
    let (a_checks, b_checks) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let a = named("a", "HTTP/1.1 200 OK\r\ncontent-length: 16\r\n\r\nstatus: degraded", a_checks.clone());
    // The text spans two chunks: found only in the decoded body.
    let b = named(
        "b",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n8\r\nstatus: \r\n2\r\nok\r\n0\r\n\r\n",
        b_checks.clone(),
    );
    let gw = Gateway::start_with_workers(
        io,
        1,
        &format!(
            "[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\", \"{}\"]\nhealth_check = {{ path = \"/healthz\", interval = \"20ms\", unhealthy_threshold = 1, expect_status = [200, \"3xx\"], expect_body = \"status: ok\" }}\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n",
            a.addr, b.addr
        ),
    );
    until(|| a_checks.load(Ordering::SeqCst) >= 2 && b_checks.load(Ordering::SeqCst) >= 2, std::thread::yield_now);
    let mut c = gw.client();
    let served: String = (0..6).map(|_| c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").text()).collect();
    assert_eq!(served, "bbbbbb", "the degraded endpoint got requests");
});

both_drivers!(an_endpoint_back_in_service_starts_slowly, |io| {
    let (a, b) = (endpoint(false), endpoint(true));
    // A one-hour ramp: for this test's length the returning endpoint stays at its floor,
    // 10% of its weight.
    let check = "health_check = { path = \"/healthz\", interval = \"20ms\", unhealthy_threshold = 1, healthy_threshold = 1 }\noutlier = { consecutive_failures = 0 }\nslow_start = \"1h\"";
    let gw = gateway_to(io, &[&a, &b], check);
    until(|| b.checks.load(Ordering::SeqCst) >= 2, std::thread::yield_now);
    // A request while "b" is out: the worker sees it out, so its return is a return.
    let mut c = gw.client();
    assert_eq!(get(&mut c), 200);
    assert_eq!(b.requests.load(Ordering::SeqCst), 0);
    b.sick.store(false, Ordering::SeqCst);
    until(|| b.requests.load(Ordering::SeqCst) > 0, || assert_eq!(get(&mut c), 200));
    let before = b.requests.load(Ordering::SeqCst);
    for _ in 0..110 {
        assert_eq!(get(&mut c), 200);
    }
    // 10 against 100 for "a": about 10 of 110 (round robin would give it 55).
    let got = b.requests.load(Ordering::SeqCst) - before;
    assert!((5..=20).contains(&got), "{got} of 110");
});

#[test]
fn health_settings_are_checked() {
    let base = "[server]\nlisten = [\"127.0.0.1:0\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n[[upstreams]]\nname = \"api\"\nendpoints = [\"127.0.0.1:9\"]\n";
    let err = |extra: &str| config::Config::parse(&format!("{base}{extra}")).expect_err(extra).to_string();
    assert!(err("health_check = { interval = \"1s\" }").contains("upstreams[0].health_check.path"));
    assert!(err("health_check = { path = \"no-slash\" }").contains("upstreams[0].health_check.path"));
    assert!(err("health_check = { path = \"/h\", unhealthy_threshold = 0 }").contains("unhealthy_threshold"));
    assert!(err("outlier = { ejection = \"0s\" }").contains("upstreams[0].outlier.ejection"));
    assert!(err("health_check = { path = \"/h\", expect_status = [700] }").contains("expect_status[0]"));
    assert!(err("health_check = { path = \"/h\", expect_status = [\"2xy\"] }").contains("expect_status[0]"));
    assert!(err("health_check = { path = \"/h\", expect_status = [] }").contains("expect_status"));
    assert!(err("health_check = { path = \"/h\", expect_body = \"\" }").contains("expect_body"));
    assert!(
        err("balance = \"hash\"\nhash_on = \"client_ip\"\nslow_start = \"30s\"").contains("upstreams[0].slow_start")
    );
    let cfg = config::Config::parse(base).unwrap();
    assert_eq!(cfg.upstreams[0].outlier.consecutive_failures, 5);
    assert!(cfg.upstreams[0].health_check.is_none());
}

// An operator drains an endpoint through the admin listener: no request goes to it, on any
// worker, a reload keeps the drain, and `ready` brings it back.
both_drivers!(an_endpoint_drained_through_the_admin_listener_gets_no_requests, |io| {
    let (a, b) = (endpoint(false), endpoint(false));
    let toml = |extra: &str| {
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\", \"{}\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n{extra}",
            a.up.addr, b.up.addr
        )
    };
    let mut gw = Gateway::start(io, &toml(""));
    let drain = format!("/upstreams/api/endpoints/{}/drain", a.up.addr);
    assert_eq!(gw.admin("POST", &drain).0, 200);
    let send = |gw: &Gateway, n| {
        for _ in 0..n {
            assert_eq!(gw.client().request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").status(), 200);
        }
    };
    send(&gw, 10);
    assert_eq!((a.requests.load(Ordering::SeqCst), b.requests.load(Ordering::SeqCst)), (0, 10));
    let (_, view) = gw.admin("GET", "/upstreams");
    let view: serde_json::Value = serde_json::from_str(&view).unwrap();
    let endpoints = &view["upstreams"][0]["endpoints"];
    assert_eq!((endpoints[0]["drained"].as_bool(), endpoints[1]["drained"].as_bool()), (Some(true), Some(false)));
    assert!(gw
        .admin("GET", "/metrics")
        .1
        .contains(&format!("coregate_upstream_drained{{upstream=\"api\",endpoint=\"{}\"}} 1", a.up.addr)));

    // A reload (here with a route more) keeps the drain.
    gw.reload_extra(&toml("[[routes]]\npath = \"/more\"\nupstream = \"api\"\n")).unwrap();
    send(&gw, 6);
    assert_eq!(a.requests.load(Ordering::SeqCst), 0, "the reload forgot the drain");
    assert_eq!(gw.admin("POST", &format!("/upstreams/api/endpoints/{}/ready", a.up.addr)).0, 200);
    send(&gw, 10);
    assert!(a.requests.load(Ordering::SeqCst) >= 4, "a ready endpoint takes its share again");

    // Unknown names and actions, and other methods.
    for (method, path, status) in [
        ("POST", "/upstreams/nope/endpoints/127.0.0.1:1/drain".to_string(), 404),
        ("POST", "/upstreams/api/endpoints/127.0.0.1:1/drain".to_string(), 404),
        ("POST", format!("/upstreams/api/endpoints/{}/pause", a.up.addr), 404),
        ("GET", drain.clone(), 405),
    ] {
        assert_eq!(gw.admin(method, &path).0, status, "{method} {path}");
    }
});
