//! Request mirroring (`routes[].mirror`) end to end on both drivers: copies with their
//! bodies reach the mirror and its answers (of every framing) are dropped, a held or dead
//! mirror never holds the client, `percent` copies an exact share, streamed bodies are
//! skipped, and every outcome is counted.

use std::sync::mpsc::{channel, Receiver};
use std::sync::Mutex;
use std::time::Duration;

use coregate_tests::*;

/// A mirror that reports every request it gets and answers it with `answer` (after waiting
/// for `release`, when there is one).
fn mirror(answer: &'static str, release: Option<Receiver<()>>) -> (Upstream, Receiver<Message>) {
    let (seen_tx, seen) = channel();
    let (seen_tx, release) = (Mutex::new(seen_tx), release.map(Mutex::new));
    let up = Upstream::start(move |mut c| {
        while let Some(req) = c.read_request() {
            seen_tx.lock().unwrap().send(req).unwrap();
            if let Some(release) = &release {
                if release.lock().unwrap().recv().is_err() {
                    return;
                }
            }
            if !c.write(answer) {
                return;
            }
        }
    });
    (up, seen)
}

fn config(main: &Upstream, mirror: std::net::SocketAddr, keys: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n[[upstreams]]\nname = \"shadow\"\nendpoints = [\"{mirror}\"]\nresponse_timeout = \"10s\"\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"api\"\nmirror = {{ upstream = \"shadow\"{keys} }}\n",
        main.addr
    )
}

/// Waits until the metrics count `n` mirrored requests of route "r" with `result`.
fn counted(gw: &Gateway, result: &str, n: u64) {
    let line = format!("coregate_mirror_requests_total{{route=\"r\",result=\"{result}\"}} {n}\n");
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
    seen.recv_timeout(Duration::from_secs(10)).expect("a mirrored request")
}

both_drivers!(copies_go_to_the_mirror_and_its_answers_are_dropped, |io| {
    let main = Upstream::echo();
    // A chunked answer with a trailer: read to its end, so the connection is reused.
    let answer = "HTTP/1.1 500 Oops\r\ntransfer-encoding: chunked\r\n\r\n5\r\nshade\r\n0\r\nx-t: 1\r\n\r\n";
    let (shadow, seen) = mirror(answer, None);
    let gw = Gateway::start_with_workers(io, 1, &config(&main, shadow.addr, ""));
    let mut c = gw.client();
    let r = c.request("GET /users/1?x=2 HTTP/1.1\r\nHost: api.test\r\n\r\n");
    assert_eq!((r.status(), r.text().as_str()), (200, "GET /users/1?x=2\n"));
    let copy = recv(&seen);
    assert_eq!(copy.start, "GET /users/1?x=2 HTTP/1.1");
    assert_eq!(copy.header("host"), Some("api.test"));
    assert_eq!(copy.header("x-forwarded-for"), Some("127.0.0.1"));
    // Each copy's connection is back in the pool once its answer is counted.
    counted(&gw, "answered", 1);
    let r = c.request("POST /orders HTTP/1.1\r\nHost: api.test\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!((r.status(), r.text().as_str()), (200, "POST /orders\nhello"));
    let copy = recv(&seen);
    assert_eq!((copy.start.as_str(), copy.body.as_slice()), ("POST /orders HTTP/1.1", &b"hello"[..]));
    counted(&gw, "answered", 2);
    c.send("HEAD /h HTTP/1.1\r\nHost: api.test\r\n\r\n");
    assert_eq!(c.response_to(true).status(), 200);
    assert_eq!(recv(&seen).start, "HEAD /h HTTP/1.1");
    counted(&gw, "answered", 3);
    // Every copy went over one kept-alive connection.
    assert_eq!(shadow.connection_count(), 1);
});

both_drivers!(a_held_or_dead_mirror_never_holds_the_client, |io| {
    let main = Upstream::echo();
    let (release_tx, release) = channel::<()>();
    let (shadow, seen) = mirror("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody", Some(release));
    let gw = Gateway::start_with_workers(io, 1, &config(&main, shadow.addr, ", max_in_flight = 2"));
    let mut c = gw.client();
    // The mirror answers nothing until released; the client is answered all the same.
    for i in 0..5 {
        assert_eq!(c.request(format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n")).status(), 200);
    }
    // Two connections: the copies arrive in either order.
    let mut first: Vec<String> = (0..2).map(|_| recv(&seen).start).collect();
    first.sort();
    assert_eq!(first, ["GET /0 HTTP/1.1", "GET /1 HTTP/1.1"]);
    counted(&gw, "dropped", 3);
    release_tx.send(()).unwrap();
    release_tx.send(()).unwrap();
    counted(&gw, "answered", 2);
    // With room again, copies go out.
    assert_eq!(c.request("GET /5 HTTP/1.1\r\nHost: a\r\n\r\n").status(), 200);
    assert_eq!(recv(&seen).start, "GET /5 HTTP/1.1");
    release_tx.send(()).unwrap();
    counted(&gw, "answered", 3);
    // Two copies were in flight at once; the third reused a pooled connection.
    assert_eq!(shadow.connection_count(), 2);
    drop(gw);
    // A mirror nobody listens on: every copy fails, every client request succeeds.
    let gw = Gateway::start_with_workers(io, 1, &config(&main, dead_addr(), ""));
    let mut c = gw.client();
    for _ in 0..3 {
        assert_eq!(c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status(), 200);
    }
    counted(&gw, "failed", 3);
});

both_drivers!(percent_copies_an_exact_share_and_streamed_bodies_are_skipped, |io| {
    let main = Upstream::echo();
    let (shadow, seen) = mirror("HTTP/1.1 204 No Content\r\n\r\n", None);
    let gw = Gateway::start_with_workers(io, 1, &config(&main, shadow.addr, ", percent = 25"));
    let mut c = gw.client();
    for i in 0..8 {
        assert_eq!(c.request(format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n")).status(), 200);
    }
    counted(&gw, "answered", 2);
    let mut copies: Vec<String> = (0..2).map(|_| recv(&seen).start).collect();
    copies.sort();
    assert_eq!(copies, ["GET /3 HTTP/1.1", "GET /7 HTTP/1.1"]);
    assert!(seen.try_recv().is_err());
    drop(gw);
    // A chunked body streams upstream as it arrives: not held for a copy.
    let gw = Gateway::start_with_workers(io, 1, &config(&main, shadow.addr, ""));
    let mut c = gw.client();
    let mut post = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    post.extend(chunked(b"streamed", 3, ""));
    assert_eq!(c.request(post).text(), "POST /up\nstreamed");
    counted(&gw, "skipped", 1);
    assert!(seen.try_recv().is_err());
});

#[test]
fn a_mirror_needs_a_proxying_route_and_another_upstream() {
    let base = "[server]\nlisten = [\"127.0.0.1:0\"]\n[[upstreams]]\nname = \"api\"\nendpoints = [\"127.0.0.1:9\"]\n";
    let err = |route: &str| {
        config::Config::parse(&format!("{base}[[routes]]\npath = \"/\"\n{route}\n")).unwrap_err().to_string()
    };
    assert!(err("upstream = \"api\"\nmirror = { upstream = \"api\" }").contains("own upstream"));
    assert!(
        err("redirect = { location = \"/x\" }\nmirror = { upstream = \"api\" }").contains("needs a route that proxies")
    );
}
