//! External authorization (`auth = "external"`) end to end on both drivers: a check goes
//! to the authorization service with what the request was, an allowing answer lets the
//! request through with the answer's chosen fields and identity, a denial (status, fields,
//! body) is the client's answer and never reaches the upstream, and failures (a 5xx, no
//! service, no answer in time, an oversized denial) are 503, or let through with
//! `failure = "allow"`; every outcome is counted.

use std::sync::mpsc::{channel, Receiver};
use std::sync::Mutex;
use std::time::Duration;

use coregate_tests::*;

/// An authorization service that reports every check it gets and answers by the check's
/// `Authorization` field.
fn authz() -> (Upstream, Receiver<Message>) {
    let (seen_tx, seen) = channel();
    let seen_tx = Mutex::new(seen_tx);
    let up = Upstream::start(move |mut c| {
        while let Some(req) = c.read_request() {
            let auth = req.header("authorization").map(str::to_string);
            seen_tx.lock().unwrap().send(req).unwrap();
            let answer: Vec<u8> = match auth.as_deref() {
                Some("Bearer good") => {
                    b"HTTP/1.1 200 OK\r\nx-user: alice\r\nx-other: 1\r\ncontent-length: 2\r\n\r\nok".to_vec()
                }
                Some("Bearer bob") => b"HTTP/1.1 204 No Content\r\nx-user: bob\r\n\r\n".to_vec(),
                None => {
                    let mut a = b"HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer realm=\"test\"\r\ncontent-type: text/plain\r\nserver: authz\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                    a.extend(chunked(b"sign in first", 5, ""));
                    a
                }
                Some("Bearer redirect") => {
                    b"HTTP/1.1 302 Found\r\nlocation: https://login.test/?next=%2Fx\r\ncontent-length: 0\r\n\r\n"
                        .to_vec()
                }
                Some("Bearer broken") => {
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops".to_vec()
                }
                Some("Bearer huge") => {
                    let mut a = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 70000\r\n\r\n".to_vec();
                    a.resize(a.len() + 70_000, b'x');
                    a
                }
                Some("Bearer slow") => {
                    // No answer: the gateway gives up and closes (the read then ends).
                    c.read_request();
                    return;
                }
                _ => b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\nno".to_vec(),
            };
            if !c.write(answer) {
                return;
            }
        }
    });
    (up, seen)
}

fn config(api: &Upstream, authz: std::net::SocketAddr, keys: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[auth.external]\nupstream = \"authz\"\npath = \"/check\"\ntimeout = \"1s\"\nupstream_headers = [\"x-user\"]\nidentity_header = \"x-user\"\n{keys}\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n[[upstreams]]\nname = \"authz\"\nendpoints = [\"{authz}\"]\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"api\"\nauth = \"external\"\nrequest_headers = {{ set = {{ \"x-who\" = \"{{consumer}}\" }} }}\n",
        api.addr
    )
}

/// Waits until the metrics count `n` checks of route "r" with `result`.
fn counted(gw: &Gateway, result: &str, n: u64) {
    let line = format!("coregate_external_auth_total{{route=\"r\",result=\"{result}\"}} {n}\n");
    let mut m = String::new();
    until(
        || {
            m = gw.admin("GET", "/metrics").1;
            m.contains(&line)
        },
        || std::thread::sleep(Duration::from_millis(5)),
    );
}

fn recv(seen: &Receiver<Message>) -> Message {
    seen.recv_timeout(Duration::from_secs(10)).expect("a check")
}

both_drivers!(an_allowed_request_goes_through_with_the_answers_fields, |io| {
    let api = Upstream::echo();
    let (service, seen) = authz();
    let gw = Gateway::start_with_workers(io, 1, &config(&api, service.addr, ""));
    let mut c = gw.client();
    let r = c.request(
        "POST /orders/7?x=1 HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer good\r\nCookie: s=1\r\nX-User: forged\r\nX-Forwarded-Uri: /public\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!((r.status(), r.text().as_str()), (200, "POST /orders/7?x=1\nhello"));
    // The answer's listed field replaces the client's, and names the consumer; others stay.
    assert_eq!(r.header_all("x-echo-x-user"), ["alice"]);
    assert_eq!(r.header("x-echo-x-who"), Some("alice"));
    assert_eq!(r.header("x-echo-x-other"), None);
    assert_eq!(r.header("x-echo-authorization"), Some("Bearer good"));
    let check = recv(&seen);
    assert_eq!(check.start, "GET /check HTTP/1.1");
    assert_eq!(check.header("host"), Some("api.test"));
    assert_eq!(check.header("x-forwarded-method"), Some("POST"));
    assert_eq!(check.header_all("x-forwarded-uri"), ["/orders/7?x=1"]);
    assert_eq!(check.header("x-forwarded-host"), Some("api.test"));
    assert_eq!(check.header("x-forwarded-proto"), Some("http"));
    assert_eq!(check.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!((check.header("authorization"), check.header("cookie")), (Some("Bearer good"), Some("s=1")));
    assert_eq!((check.header("content-length"), check.body.len()), (None, 0));
    // A bodiless allowing answer; the service's connection is reused.
    let r = c.request("GET /me HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer bob\r\n\r\n");
    assert_eq!((r.status(), r.header("x-echo-x-user")), (200, Some("bob")));
    assert_eq!(recv(&seen).header("x-forwarded-method"), Some("GET"));
    assert_eq!(service.connection_count(), 1);
    counted(&gw, "allowed", 2);
});

both_drivers!(a_denial_is_the_clients_answer_and_never_reaches_the_upstream, |io| {
    let api = Upstream::named("api");
    let (service, _seen) = authz();
    let gw = Gateway::start_with_workers(io, 1, &config(&api, service.addr, ""));
    let mut c = gw.client();
    let r = c.request("GET /x HTTP/1.1\r\nHost: api.test\r\n\r\n");
    assert_eq!((r.status(), r.text().as_str()), (401, "sign in first"));
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"test\""));
    assert_eq!((r.header("content-type"), r.header("server")), (Some("text/plain"), Some("coregate")));
    assert_eq!(r.header("content-length"), Some("13"));
    // The connection stays usable after a denial.
    let r = c.request("GET /x HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer redirect\r\n\r\n");
    assert_eq!((r.status(), r.header("location")), (302, Some("https://login.test/?next=%2Fx")));
    let r = c.request("GET /x HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer wrong\r\n\r\n");
    assert_eq!((r.status(), r.text().as_str()), (403, "no"));
    c.send("HEAD /x HTTP/1.1\r\nHost: api.test\r\n\r\n");
    let r = c.response_to(true);
    assert_eq!((r.status(), r.body.len()), (401, 0));
    assert_eq!(api.connection_count(), 0);
    counted(&gw, "denied", 4);
});

both_drivers!(failed_checks_are_503_and_never_reach_the_upstream, |io| {
    let api = Upstream::named("api");
    let (service, _seen) = authz();
    let gw = Gateway::start_with_workers(io, 1, &config(&api, service.addr, ""));
    let mut c = gw.client();
    for token in ["broken", "huge", "slow"] {
        let r = c.request(format!("GET /x HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer {token}\r\n\r\n"));
        assert_eq!(r.status(), 503, "{token}");
    }
    // After a timeout, the next check works (on a new connection).
    let r = c.request("GET /x HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer good\r\n\r\n");
    assert_eq!((r.status(), r.text().as_str()), (200, "api"));
    // No service at all.
    let gw2 = Gateway::start_with_workers(io, 1, &config(&api, dead_addr(), ""));
    let r = gw2.client().request("GET /x HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer good\r\n\r\n");
    assert_eq!(r.status(), 503);
    assert_eq!(api.connection_count(), 1);
    counted(&gw, "failed", 3);
    counted(&gw, "allowed", 1);
});

both_drivers!(failure_allow_lets_requests_through_without_an_identity, |io| {
    let api = Upstream::echo();
    let (service, _seen) = authz();
    let gw = Gateway::start_with_workers(io, 1, &config(&api, service.addr, "failure = \"allow\""));
    let mut c = gw.client();
    let r = c.request("GET /x HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer broken\r\nX-User: forged\r\n\r\n");
    assert_eq!((r.status(), r.header("x-echo-x-user"), r.header("x-echo-x-who")), (200, None, Some("")));
    // A denial is still a denial.
    let r = c.request("GET /x HTTP/1.1\r\nHost: api.test\r\n\r\n");
    assert_eq!(r.status(), 401);
    let gw2 = Gateway::start_with_workers(io, 1, &config(&api, dead_addr(), "failure = \"allow\""));
    let r = gw2.client().request("GET /x HTTP/1.1\r\nHost: api.test\r\n\r\n");
    assert_eq!(r.status(), 200);
    counted(&gw, "failed_open", 1);
    counted(&gw, "denied", 1);
});
