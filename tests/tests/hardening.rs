//! Request smuggling and pool poisoning defences, end to end with a raw client and a raw,
//! scripted upstream, on both drivers (RFC 9110, RFC 9112).

use std::io::Read;
use std::sync::{Arc, Mutex};

use coregate_tests::*;

/// Requests the gateway must refuse, with the status each gets. None may reach an upstream.
const REFUSED: &[(&str, u16)] = &[
    ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", 501),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", 400),
    ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\nhello", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: a\r\nX Y: z\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\n\r\n", 400),
    ("GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
    ("GET / HTTP/2.1\r\nHost: a\r\n\r\n", 505),
    ("GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417),
    ("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501),
    ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n", 501),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;\x01\r\nhello\r\n0\r\n\r\n", 400),
];

both_drivers!(smuggling_attempts_are_refused_and_never_forwarded, |io| {
    let up = Upstream::echo();
    let gw = Gateway::proxy_to(io, up.addr, "");
    for (raw, status) in REFUSED {
        let mut c = gw.client();
        c.send(raw);
        let r = c.response();
        assert_eq!(r.status(), *status, "{raw:?}");
        assert_eq!(r.header("connection"), Some("close"), "{raw:?}");
        assert!(c.closed(), "{raw:?}");
    }
    assert_eq!(up.connection_count(), 0, "nothing of a refused request reaches an upstream");
});

both_drivers!(limits_have_their_own_status_codes, |io| {
    let up = Upstream::echo();
    let gw = Gateway::proxy_to(io, up.addr, "[limits]\nmax_head_bytes = 1024\nmax_uri_bytes = 100\nmax_headers = 5\n");
    let cases = [
        (format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(200)), 414),
        (format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "v".repeat(2000)), 431),
        (
            format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", (0..6).map(|i| format!("H{i}: x\r\n")).collect::<String>()),
            431,
        ),
    ];
    for (raw, status) in cases {
        let mut c = gw.client();
        assert_eq!(c.request(&raw).status(), status);
    }
    assert_eq!(up.connection_count(), 0);
});

/// An upstream that answers request `/N` with `responses[N]` and keeps the connection open
/// (so a gateway that pooled a poisoned connection would reuse it).
fn scripted(responses: &'static [&'static str]) -> Upstream {
    Upstream::start(move |mut c| {
        while let Some(req) = c.read_request() {
            let n: usize =
                req.start.split(' ').nth(1).and_then(|p| p.trim_start_matches('/').parse().ok()).unwrap_or(0);
            if !c.write(responses[n]) {
                return;
            }
        }
    })
}

both_drivers!(invalid_responses_are_502_and_never_pooled, |io| {
    static BAD: &[&str] = &[
        "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        "garbage\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX : y\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    ];
    let up = scripted(BAD);
    let gw = Gateway::proxy_to(io, up.addr, "");
    let mut c = gw.client();
    for (i, bad) in BAD.iter().enumerate() {
        let r = c.request(format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(r.status(), 502, "response {i}: {bad:?}");
    }
    assert_eq!(up.connection_count(), BAD.len(), "every bad upstream connection was discarded");
});

both_drivers!(oversized_response_head_is_502, |io| {
    let up = Upstream::start(|mut c| {
        if c.read_request().is_some() {
            c.write(format!("HTTP/1.1 200 OK\r\nX: {}\r\nContent-Length: 0\r\n\r\n", "y".repeat(4096)));
        }
    });
    let gw = Gateway::proxy_to(io, up.addr, "[limits]\nmax_head_bytes = 1024\nmax_uri_bytes = 512\n");
    assert_eq!(gw.client().request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status(), 502);
});

both_drivers!(bytes_beyond_a_response_never_reach_a_client, |io| {
    static RESPONSES: &[&str] = &[
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON",
        "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON",
        "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nclean",
    ];
    let up = scripted(RESPONSES);
    let gw = Gateway::proxy_to(io, up.addr, "");
    let mut c = gw.client();
    assert_eq!(c.request("GET /0 HTTP/1.1\r\nHost: a\r\n\r\n").text(), "ok");
    assert_eq!(c.request("GET /3 HTTP/1.1\r\nHost: a\r\n\r\n").text(), "clean");
    assert_eq!(c.request("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n").status(), 204);
    assert_eq!(c.request("GET /3 HTTP/1.1\r\nHost: a\r\n\r\n").text(), "clean");
    // HEAD: the upstream sends a body anyway.
    c.send("HEAD /2 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response_to(true).status(), 200);
    assert_eq!(c.request("GET /3 HTTP/1.1\r\nHost: a\r\n\r\n").text(), "clean");
    // Each poisoned connection was dropped; the clean ones were reused.
    assert_eq!(up.connection_count(), 4);
});

both_drivers!(a_body_cut_short_closes_the_client_connection_or_is_a_502, |io| {
    let up = Upstream::start(|mut c| {
        if let Some(req) = c.read_request() {
            if req.start.contains("/chunked") {
                c.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
            } else if req.start.contains("/large") {
                c.write("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nhello");
            } else {
                c.write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
            }
        }
    });
    let gw = Gateway::proxy_to(io, up.addr, "");
    // Streamed bodies: the head went out, so the cut shows as a closed connection.
    for path in ["/large", "/chunked"] {
        let mut c = gw.client();
        c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n"));
        let mut all = Vec::new();
        c.reader.read_to_end(&mut all).expect("the gateway closes the connection");
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(!text.ends_with("0\r\n\r\n"), "no fake terminator: {text:?}");
        assert!(text.ends_with("hello") || text.ends_with("hello\r\n"), "{text:?}");
    }
    // A small body is held until it is whole, to go out with its head: cut short, nothing
    // of it was sent, and the client gets a complete 502 instead of a truncated 200.
    let mut c = gw.client();
    let r = c.request("GET /small HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), 502, "{}", r.text());
    assert!(!r.text().contains("hello"));
});

both_drivers!(informational_responses_are_relayed_to_http11_only, |io| {
    let up = Upstream::start(|mut c| {
        while c.read_request().is_some() {
            c.write("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let gw = Gateway::proxy_to(io, up.addr, "");
    let mut c = gw.client();
    c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let hints = c.response();
    assert_eq!(hints.status(), 103);
    assert_eq!(hints.header("link"), Some("</a.css>"));
    assert_eq!(c.response().text(), "ok");
    let mut c10 = gw.client();
    let r = c10.request("GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text(), "ok");
});

both_drivers!(expect_100_continue_is_answered_before_the_body, |io| {
    let up = Upstream::echo();
    let gw = Gateway::proxy_to(io, up.addr, "");
    let mut c = gw.client();
    c.send("PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let cont = c.response();
    assert_eq!(cont.status(), 100);
    c.send("hello");
    let r = c.response();
    assert_eq!(r.text(), "PUT /x\nhello");
    assert_eq!(r.header("x-echo-expect"), None, "Expect is answered, not forwarded");
});

both_drivers!(response_hop_by_hop_fields_are_removed, |io| {
    let up = Upstream::start(|mut c| {
        while c.read_request().is_some() {
            c.write("HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: secret\r\nKeep-Alive: timeout=5\r\nX-Public: yes\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let gw = Gateway::proxy_to(io, up.addr, "");
    let r = gw.client().request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.header("x-public"), Some("yes"));
    assert_eq!(r.header("x-internal"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("connection"), None);
});

both_drivers!(request_forwarding_normalises_the_head, |io| {
    let seen = Arc::new(Mutex::new(Vec::<Message>::new()));
    let log = seen.clone();
    let up = Upstream::start(move |mut c| {
        while let Some(req) = c.read_request() {
            log.lock().unwrap().push(req.clone());
            c.write(echo_response(&req));
        }
    });
    let gw = Gateway::proxy_to(io, up.addr, "");
    let mut c = gw.client();
    c.request("GET http://Example.com:8080/p?q=1 HTTP/1.1\r\nHost: other\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTE: trailers\r\nUpgrade: websocket\r\nProxy-Connection: keep-alive\r\nX-Forwarded-For: 10.1.1.1\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n\r\n");
    c.request("POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n");
    let seen = seen.lock().unwrap();
    let r = &seen[0];
    assert_eq!(r.start, "GET /p?q=1 HTTP/1.1");
    assert_eq!(r.header("host"), Some("Example.com:8080"));
    for hop in ["connection", "x-hop", "te", "upgrade", "proxy-connection", "keep-alive"] {
        assert_eq!(r.header(hop), None, "{hop} forwarded");
    }
    assert_eq!(r.header_all("x-forwarded-for"), vec!["10.1.1.1, 127.0.0.1"]);
    assert_eq!(r.header_all("x-forwarded-host"), vec!["Example.com:8080"]);
    assert_eq!(r.header_all("x-forwarded-proto"), vec!["http"]);
    let b = &seen[1];
    assert!(b.chunked);
    assert_eq!(b.body, b"abc");
    assert_eq!(b.header("trailer"), None);
    assert_eq!(b.header("x-t"), None, "trailers never merged into the head");
});

both_drivers!(get_with_a_body_keeps_the_next_request_in_place, |io| {
    let up = Upstream::echo();
    let gw = Gateway::proxy_to(io, up.addr, "");
    let mut c = gw.client();
    // The body looks like a request; it must be forwarded as a body, not parsed.
    c.send("GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 32\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().text(), "GET /a\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().text(), "GET /b\n");
});

both_drivers!(a_higher_minor_version_is_served_as_http11, |io| {
    let up = Upstream::echo();
    let gw = Gateway::proxy_to(io, up.addr, "");
    let mut c = gw.client();
    let r = c.request("GET /v HTTP/1.5\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), 200);
    assert!(r.start.starts_with("HTTP/1.1 "));
    assert_eq!(r.text(), "GET /v\n");
});

both_drivers!(bytes_arriving_on_an_idle_pooled_connection_discard_it, |io| {
    // Connection 0 answers cleanly, then, while the connection idles in the gateway's pool,
    // sends a whole second response nobody asked for.
    let (idle_tx, idle_rx) = std::sync::mpsc::channel::<()>();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<()>();
    let idle_rx = Mutex::new(idle_rx);
    let sent_tx = Mutex::new(sent_tx);
    let up = Upstream::start(move |mut c| {
        while c.read_request().is_some() {
            let body = if c.index == 0 { "first" } else { "clean" };
            if !c.write(format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{body}")) {
                return;
            }
            if c.index == 0 {
                idle_rx.lock().unwrap().recv().unwrap();
                // Loopback has queued these bytes in the gateway's socket when write returns.
                c.write("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON");
                sent_tx.lock().unwrap().send(()).unwrap();
            }
        }
    });
    let gw = Gateway::proxy_to(io, up.addr, "");
    let mut c = gw.client();
    assert_eq!(c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").text(), "first");
    idle_tx.send(()).unwrap();
    sent_rx.recv().unwrap();
    assert_eq!(c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").text(), "clean");
    assert_eq!(up.connection_count(), 2, "the poisoned connection was not reused");
});
