//! stale-while-revalidate end to end, on both drivers: a stale stored response within its
//! window answers at once (`X-Cache-Status: UPDATING`, its true Age) while one background
//! request refreshes it, with the stored validators; the refreshed response then answers
//! as a hit. The window comes from the response's directive or the route's setting;
//! `must-revalidate` forbids it; a refresh the upstream no longer lets a cache keep ends
//! the stale answers.
//!
//! Responses arrive 30 s old with 31 s of freshness, so they turn stale one second after
//! they are stored; the tests wait for that by asking until the mark changes.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

use coregate_tests::*;

/// Requests seen per path, with their If-None-Match, and a gate that holds the refreshes of
/// `/a/held` until opened.
#[derive(Default)]
struct Seen {
    requests: Mutex<HashMap<String, Vec<Option<String>>>>,
    open: Mutex<bool>,
    opened: Condvar,
}

impl Seen {
    fn count(&self, path: &str) -> usize {
        self.requests.lock().unwrap().get(path).map_or(0, Vec::len)
    }
}

fn origin(seen: Arc<Seen>) -> Upstream {
    Upstream::start(move |mut c| {
        while let Some(req) = c.read_request() {
            let path = req.start.split(' ').nth(1).unwrap_or("").to_string();
            let validator = req.header("if-none-match").map(str::to_string);
            let n = {
                let mut all = seen.requests.lock().unwrap();
                let list = all.entry(path.clone()).or_default();
                list.push(validator.clone());
                list.len()
            };
            if path == "/a/held" && n > 1 {
                let open = seen.open.lock().unwrap();
                drop(seen.opened.wait_while(open, |open| !*open).unwrap());
            }
            let stale_soon = "age: 30\r\ncache-control: max-age=31";
            let out = match (path.as_str(), n) {
                ("/a/held", 1) => format!("200 OK\r\n{stale_soon}, stale-while-revalidate=100\r\netag: \"h1\""),
                ("/a/held", _) if validator.as_deref() == Some("\"h1\"") => {
                    "304 Not Modified\r\ncache-control: max-age=60".into()
                }
                ("/b/plain", 1) => format!("200 OK\r\n{stale_soon}"),
                ("/b/plain", _) => "200 OK\r\ncache-control: max-age=60".into(),
                ("/b/strict", _) => format!("200 OK\r\n{stale_soon}, must-revalidate"),
                ("/b/gone", 1) => format!("200 OK\r\n{stale_soon}"),
                ("/b/gone", _) => "200 OK\r\ncache-control: no-store".into(),
                _ => "404 Not Found\r\ncache-control: no-store".into(),
            };
            let body = format!("{path} v{n}");
            let resp = if out.starts_with("304") {
                format!("HTTP/1.1 {out}\r\n\r\n")
            } else {
                format!("HTTP/1.1 {out}\r\ncontent-length: {}\r\n\r\n{body}", body.len())
            };
            if !c.write(resp) {
                return;
            }
        }
    })
}

fn gateway(io: &str, up: &Upstream) -> Gateway {
    Gateway::start(
        io,
        &format!(
            "[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n\
             [[routes]]\npath = \"/a/\"\nupstream = \"api\"\ncache = {{}}\n\
             [[routes]]\npath = \"/b/\"\nupstream = \"api\"\ncache = {{ stale_while_revalidate = \"100s\" }}\n",
            up.addr
        ),
    )
}

/// One connection asks everything: one worker, whose clock decides when a response turns
/// stale (another worker's clock may be a tick behind).
fn get(c: &mut Client, path: &str) -> Message {
    c.request(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n"))
}

fn mark(m: &Message) -> &str {
    m.header("x-cache-status").unwrap_or("(none)")
}

/// Asks for `path` until an answer satisfies `done` (for at most 10 s) and returns it.
fn ask_until(c: &mut Client, path: &str, done: impl Fn(&Message) -> bool) -> Message {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = get(c, path);
        if done(&r) {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "{path}: still {} after 10 s", mark(&r));
    }
}

/// Asks for `path` until its answer is no longer a hit (it turned stale) and returns it.
fn once_stale(c: &mut Client, path: &str) -> Message {
    ask_until(c, path, |r| mark(r) != "HIT")
}

both_drivers!(stale_responses_answer_at_once_while_one_request_refreshes_them, |io| {
    let seen = Arc::new(Seen::default());
    let up = origin(seen.clone());
    let gw = gateway(io, &up);
    let mut c = gw.client();
    for path in ["/a/held", "/b/plain", "/b/strict", "/b/gone"] {
        assert_eq!(mark(&get(&mut c, path)), "MISS", "{path}");
    }

    // The response's own directive: stale answers while the (held) refresh is out, and
    // only one refresh goes upstream however many requests find it stale.
    let r = once_stale(&mut c, "/a/held");
    assert_eq!((r.status(), mark(&r), r.text().as_str()), (200, "UPDATING", "/a/held v1"));
    assert!(r.header("age").unwrap().parse::<u64>().unwrap() >= 31, "its true age");
    for _ in 0..3 {
        let r = get(&mut c, "/a/held");
        assert_eq!((mark(&r), r.text().as_str()), ("UPDATING", "/a/held v1"));
    }
    until(|| seen.count("/a/held") == 2, std::thread::yield_now);
    *seen.open.lock().unwrap() = true;
    seen.opened.notify_all();
    // The 304 refreshed it: hits again, young, and the refresh carried the validator.
    let r = ask_until(&mut c, "/a/held", |r| mark(r) == "HIT");
    assert_eq!(r.text(), "/a/held v1");
    assert!(r.header("age").unwrap().parse::<u64>().unwrap() < 31);
    assert_eq!(seen.requests.lock().unwrap()["/a/held"], [None, Some("\"h1\"".to_string())]);

    // The route's window, for a response without the directive; no validators, so the
    // refresh fetches it whole and the new body answers afterwards.
    let r = once_stale(&mut c, "/b/plain");
    assert_eq!((mark(&r), r.text().as_str()), ("UPDATING", "/b/plain v1"));
    let r = ask_until(&mut c, "/b/plain", |r| r.text() == "/b/plain v2");
    assert_eq!(mark(&r), "HIT");
    assert_eq!(seen.count("/b/plain"), 2);

    // must-revalidate: never stale; the request waits for the upstream.
    let r = once_stale(&mut c, "/b/strict");
    assert_eq!((mark(&r), r.text().as_str()), ("EXPIRED", "/b/strict v2"));

    // A refresh answered with no-store: the stale response goes, later requests go upstream.
    let r = once_stale(&mut c, "/b/gone");
    assert_eq!((mark(&r), r.text().as_str()), ("UPDATING", "/b/gone v1"));
    let r = ask_until(&mut c, "/b/gone", |r| mark(r) != "UPDATING");
    assert_eq!((mark(&r), r.status()), ("MISS", 200));
    assert!(r.text().starts_with("/b/gone v"));
});

#[test]
fn stale_while_revalidate_is_checked() {
    let base = "[server]\nlisten = [\"127.0.0.1:0\"]\n[[upstreams]]\nname = \"api\"\nendpoints = [\"127.0.0.1:9\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n";
    let err = config::Config::parse(&format!("{base}cache = {{ stale_while_revalidate = \"soon\" }}\n")).unwrap_err();
    assert!(err.to_string().contains("routes[0].cache.stale_while_revalidate"), "{err}");
}
