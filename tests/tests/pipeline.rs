//! Pipelining to upstreams (`upstreams[].pipeline`), on both drivers: many clients at once
//! through one worker, so that their requests share upstream writes, each get their own
//! answer (echoed paths, bodies of every framing, HEADs and POSTs that go alone); an upstream
//! that closes after one answer loses no request (the rest go again on new connections).
//! The metrics count every GET in a batch once. That batches of more than one form is
//! tested deterministically in `engine/src/pipeline.rs`.

use std::io::Write;
use std::thread;

use coregate_tests::*;

const CLIENTS: usize = 16;
const REQUESTS: usize = 30;

/// An upstream that echoes, and answers `/big...` with 200,000 bytes and `/chunked...` in
/// the chunked coding (bodies that the connection's holder streams while the next wait).
fn upstream() -> Upstream {
    Upstream::start(|mut c| {
        while let Some(req) = c.read_request() {
            let path = req.start.split(' ').nth(1).unwrap_or("").to_string();
            let mut out = Vec::new();
            if path.starts_with("/big") {
                let body = path.as_bytes().iter().cycle().take(200_000).copied().collect::<Vec<u8>>();
                write!(out, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).unwrap();
                out.extend_from_slice(&body);
            } else if path.starts_with("/chunked") {
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
                out.extend_from_slice(&chunked(path.repeat(50).as_bytes(), 7, ""));
            } else if req.start.starts_with("HEAD ") {
                // As an upstream must (RFC 9110 9.3.2): the head alone.
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
                with_length(&mut out, path.as_bytes(), &req);
            } else {
                out = echo_response(&req);
            }
            if !c.write(out) {
                return;
            }
        }
    })
}

fn gateway(io: &str, up: &Upstream) -> Gateway {
    gateway_with(io, "", up)
}

/// With more `[server]` keys.
fn gateway_with(io: &str, server: &str, up: &Upstream) -> Gateway {
    Gateway::start_with(
        io,
        1,
        server,
        &format!(
            "[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\npipeline = 8\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n",
            up.addr
        ),
    )
}

/// Runs `client(i)` on `CLIENTS` threads at once.
fn at_once(client: impl Fn(usize) + Send + Sync + Copy + 'static) {
    let threads: Vec<_> = (0..CLIENTS).map(|i| thread::spawn(move || client(i))).collect();
    for t in threads {
        t.join().expect("a client failed");
    }
}

both_drivers!(concurrent_clients_get_their_own_responses, |io| {
    let up = upstream();
    rounds(&gateway(io, &up));
});

// Batched waits (`server.batch_wait_us`): the worker's loop waits for up to 8 completions
// once it is busy, and every client still gets its own answers, in order. The epoll driver
// cannot batch, and a configuration that asks it to is refused.
both_drivers!(batched_waits_keep_every_answer_in_its_place, |io| {
    let server = "batch_wait_us = 200\nbatch_completions = 8\n";
    if io == "epoll" {
        let text = format!("[server]\nlisten = [\"127.0.0.1:0\"]\nio = \"epoll\"\n{server}");
        let err = config::Config::parse(&text).expect_err("refused").to_string();
        assert!(err.contains("server.batch_wait_us: needs io_uring"), "{err}");
        return;
    }
    let up = upstream();
    rounds(&gateway_with(io, server, &up));
});

/// `REQUESTS` rounds of one request on each of `CLIENTS` connections, of every kind, each
/// answer checked; then the pipelining counters.
fn rounds(gw: &Gateway) {
    // Each round writes one request on every connection before reading any answer: they
    // reach the worker together, as load does, and share upstream writes.
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| gw.client()).collect();
    for j in 0..REQUESTS {
        for (i, c) in clients.iter_mut().enumerate() {
            c.send(match (i + j) % 5 {
                0 => format!("GET /big/{i}/{j} HTTP/1.1\r\nHost: a\r\n\r\n"),
                1 => format!("GET /chunked/{i}/{j} HTTP/1.1\r\nHost: a\r\n\r\n"),
                2 => format!("HEAD /h/{i}/{j} HTTP/1.1\r\nHost: a\r\n\r\n"),
                // Not idempotent, with a body: sent on its own.
                3 => format!("POST /p/{i}/{j} HTTP/1.1\r\nHost: a\r\ncontent-length: 4\r\n\r\nbody"),
                _ => format!("GET /e/{i}/{j} HTTP/1.1\r\nHost: a\r\n\r\n"),
            });
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let at = format!("client {i} request {j}");
            match (i + j) % 5 {
                0 => {
                    let r = c.response();
                    let want = format!("/big/{i}/{j}").into_bytes().into_iter().cycle().take(200_000);
                    assert!(r.body.iter().copied().eq(want), "{at}");
                }
                1 => assert_eq!(c.response().text(), format!("/chunked/{i}/{j}").repeat(50), "{at}"),
                2 => {
                    let r = c.response_to(true);
                    let length = format!("/h/{i}/{j}").len().to_string();
                    assert_eq!((r.status(), r.header("content-length")), (200, Some(&*length)), "{at}");
                }
                3 => assert_eq!(c.response().text(), format!("POST /p/{i}/{j}\nbody"), "{at}"),
                _ => assert_eq!(c.response().text(), format!("GET /e/{i}/{j}\n"), "{at}"),
            }
        }
    }
    // Every GET went in a batch (of one or more), once: none failed, so none went again.
    let (status, metrics) = gw.admin("GET", "/metrics");
    assert_eq!(status, 200);
    let counter = |name: &str| metric(&metrics, &format!("{name}{{upstream=\"api\"}}"));
    let gets = (0..CLIENTS).flat_map(|i| (0..REQUESTS).map(move |j| (i + j) % 5)).filter(|k| [0, 1, 4].contains(k));
    let (writes, requests) =
        (counter("coregate_upstream_pipeline_writes_total"), counter("coregate_upstream_pipelined_requests_total"));
    assert_eq!(requests, gets.count() as u64);
    assert!((1..=requests).contains(&writes), "{writes} writes for {requests} requests");
}

both_drivers!(an_upstream_that_closes_after_one_answer_loses_no_request, |io| {
    // Every connection: the first request answered with `Connection: close`, the rest of
    // what was pipelined behind it never answered.
    let up = Upstream::start(|mut c| {
        if let Some(req) = c.read_request() {
            let mut out = echo_response(&req);
            let at = out.windows(2).position(|w| w == b"\r\n").expect("a status line") + 2;
            out.splice(at..at, b"connection: close\r\n".iter().copied());
            c.write(out);
        }
    });
    let gw = gateway(io, &up);
    let addr = gw.addr;
    at_once(move |i| {
        let mut c = Client::connect(addr);
        for j in 0..10 {
            let r = c.request(format!("GET /{i}/{j} HTTP/1.1\r\nHost: a\r\n\r\n"));
            assert_eq!((r.status(), r.text()), (200, format!("GET /{i}/{j}\n")), "client {i} request {j}");
        }
    });
});
