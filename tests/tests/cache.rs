//! The response cache end to end, on both drivers: what is stored and what is not
//! (RFC 9111 3), freshness from the response, the route's `ttl` and the request's
//! directives, conditional requests answered with 304, invalidation by unsafe methods,
//! variants by Vary and by consumer, chunked and large bodies, eviction within
//! `cache.max_bytes`, and the metrics. Every cache decision is checked by counting the
//! requests that reach the origin.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use coregate_tests::*;

/// An origin that counts requests and answers by path: the body names the path, the
/// request's number at the origin and its Accept-Language, so a test can tell a stored
/// response from a fresh one.
struct Origin {
    up: Upstream,
    requests: Arc<AtomicUsize>,
}

impl Origin {
    fn start() -> Origin {
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let slow = Arc::new((Mutex::new(0usize), Condvar::new()));
        let up = Upstream::start(move |mut c| {
            while let Some(req) = c.read_request() {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let target = req.start.split(' ').nth(1).unwrap_or("").to_string();
                let path = target.split('?').next().unwrap_or("").to_string();
                if path == "/slow" {
                    // The first answer waits until a second request of it arrives, or 1 s:
                    // with collapsed misses no second one comes.
                    let (seen, arrived) = &*slow;
                    let mut seen = seen.lock().unwrap();
                    *seen += 1;
                    arrived.notify_all();
                    let _ = arrived.wait_timeout_while(seen, Duration::from_secs(1), |n| *n < 2).unwrap();
                }
                let lang = req.header("accept-language").unwrap_or("-").to_string();
                let mut body = format!("{target} v{n} lang={lang}").into_bytes();
                let fields = match path.as_str() {
                    "/fresh" => {
                        "cache-control: max-age=60\r\netag: \"e1\"\r\nlast-modified: Tue, 24 Nov 2026 10:00:00 GMT\r\n"
                    }
                    "/none" => "",
                    "/private" => "cache-control: private, max-age=60\r\n",
                    "/no-store" => "cache-control: no-store\r\n",
                    "/cookie" => "cache-control: max-age=60\r\nset-cookie: session=1\r\n",
                    "/public" => "cache-control: public, max-age=60\r\n",
                    "/aged" => "cache-control: max-age=100\r\nage: 30\r\n",
                    "/strict" => "cache-control: max-age=100, must-revalidate\r\nage: 30\r\n",
                    "/reval" => "cache-control: max-age=100\r\nage: 30\r\netag: \"r1\"\r\n",
                    "/vary" => "cache-control: max-age=60\r\nvary: Accept-Language\r\n",
                    "/vary-all" => "cache-control: max-age=60\r\nvary: *\r\n",
                    "/gone" => "cache-control: max-age=60\r\n",
                    "/big" => {
                        body.resize(200_000, b'b');
                        "cache-control: max-age=60\r\n"
                    }
                    p if p.starts_with("/item") => {
                        body.resize(30_000, b'i');
                        "cache-control: max-age=60\r\n"
                    }
                    "/huge" => {
                        body.resize(2_000_000, b'h');
                        "cache-control: max-age=60\r\n"
                    }
                    _ => "cache-control: max-age=60\r\n",
                };
                // A failing upstream, on request: an unavailable answer or a hang-up.
                if req.header("x-origin-down").is_some() {
                    if !c.write("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\ndown") {
                        return;
                    }
                    continue;
                }
                if req.header("x-origin-hang-up").is_some() {
                    return;
                }
                if path == "/reval" && req.header("if-none-match") == Some("\"r1\"") {
                    // Still valid: a 304 that adds a field and states new freshness.
                    let ok = "HTTP/1.1 304 Not Modified\r\netag: \"r1\"\r\ncache-control: max-age=100\r\nx-refreshed: yes\r\n\r\n";
                    if !c.write(ok) {
                        return;
                    }
                    continue;
                }
                let status = if path == "/gone" { "404 Not Found" } else { "200 OK" };
                let mut out = format!("HTTP/1.1 {status}\r\n{fields}").into_bytes();
                if path == "/chunked" {
                    out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
                    out.extend_from_slice(&chunked(&body, 7, "x-trailer: t\r\n"));
                } else {
                    with_length(&mut out, &body, &req);
                }
                if !c.write(out) {
                    return;
                }
            }
        });
        Origin { up, requests }
    }

    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A gateway with `route` keys on a catch-all cached route, and `extra` TOML before it.
fn cached(io: &str, origin: &Origin, route: &str, extra: &str) -> Gateway {
    Gateway::start(
        io,
        &format!(
            "{extra}\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n{route}\n",
            origin.up.addr
        ),
    )
}

fn get(c: &mut Client, target: &str, fields: &str) -> Message {
    c.request(format!("GET {target} HTTP/1.1\r\nHost: a\r\n{fields}\r\n"))
}

fn cache_status(m: &Message) -> &str {
    m.header("x-cache-status").unwrap_or("(none)")
}

both_drivers!(fresh_responses_are_served_from_the_cache, |io| {
    let origin = Origin::start();
    let gw = cached(io, &origin, "cache = {}", "");
    let mut c = gw.client();
    let first = get(&mut c, "/fresh?q=1", "");
    assert_eq!((first.status(), cache_status(&first)), (200, "MISS"));
    assert_eq!(first.text(), "/fresh?q=1 v1 lang=-");
    assert_eq!(first.header("age"), None);
    let second = get(&mut c, "/fresh?q=1", "");
    assert_eq!((second.status(), cache_status(&second)), (200, "HIT"));
    assert_eq!(second.text(), first.text());
    assert_eq!(second.header("etag"), Some("\"e1\""));
    assert_eq!(second.header("cache-control"), Some("max-age=60"));
    let age: u64 = second.header("age").expect("a hit has an Age").parse().unwrap();
    assert!(age < 60);
    assert_eq!(second.header("content-length"), Some("20"));
    // The origin sends no Date: the response gets one on its way (RFC 9110 6.6.1), and the
    // stored one keeps the one it got when stored.
    assert_eq!((first.header_all("date").len(), second.header_all("date").len()), (1, 1));
    // Another query is another target.
    assert_eq!(cache_status(&get(&mut c, "/fresh?q=2", "")), "MISS");
    // HEAD is answered from the stored GET, without a body.
    c.send("HEAD /fresh?q=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = c.response_to(true);
    assert_eq!((head.status(), cache_status(&head)), (200, "HIT"));
    assert_eq!(head.header("content-length"), Some("20"));
    assert!(head.body.is_empty());
    // New connections, which the kernel spreads over both workers, share the store.
    for _ in 0..8 {
        let r = get(&mut gw.client(), "/fresh?q=1", "");
        assert_eq!((cache_status(&r), r.text().as_str()), ("HIT", "/fresh?q=1 v1 lang=-"));
    }
    // An HTTP/1.0 client gets the stored response with its length and keep-alive as asked.
    let r = c.request("GET /fresh?q=1 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!((cache_status(&r), r.header("connection")), ("HIT", Some("keep-alive")));
    assert_eq!(origin.count(), 2);
    // Stored 404s are served too.
    for want in ["MISS", "HIT"] {
        let r = get(&mut c, "/gone", "");
        assert_eq!((r.status(), cache_status(&r)), (404, want));
    }
});

both_drivers!(responses_that_must_not_be_shared_are_not_stored, |io| {
    let origin = Origin::start();
    let gw = cached(io, &origin, "cache = {}", "");
    let mut c = gw.client();
    for (target, fields) in [
        ("/private", ""),
        ("/no-store", ""),
        ("/cookie", ""),
        ("/vary-all", ""),
        // No freshness and no ttl on the route.
        ("/none", ""),
        // An answer to an authorized request, without public or s-maxage.
        ("/fresh", "Authorization: Bearer x\r\n"),
    ] {
        let before = origin.count();
        for _ in 0..2 {
            let r = get(&mut c, target, fields);
            assert_eq!((r.status(), cache_status(&r)), (200, "MISS"), "{target}");
        }
        assert_eq!(origin.count(), before + 2, "{target} reached the origin both times");
    }
    // public allows storing the answer to an authorized request.
    get(&mut c, "/public", "Authorization: Bearer x\r\n");
    assert_eq!(cache_status(&get(&mut c, "/public", "")), "HIT");
    // Methods other than GET and HEAD, and ranges, pass by.
    let r = c.request("POST /fresh HTTP/1.1\r\nHost: a\r\ncontent-length: 1\r\n\r\nx");
    assert_eq!(cache_status(&r), "BYPASS");
    let r = get(&mut c, "/fresh", "Range: bytes=0-3\r\n");
    assert_eq!(cache_status(&r), "BYPASS");
});

both_drivers!(a_route_ttl_stores_responses_without_freshness, |io| {
    let origin = Origin::start();
    let gw = cached(io, &origin, "cache = { ttl = \"30s\" }", "");
    let mut c = gw.client();
    assert_eq!(cache_status(&get(&mut c, "/none", "")), "MISS");
    assert_eq!(cache_status(&get(&mut c, "/none", "")), "HIT");
    // It does not override what the response says.
    get(&mut c, "/private", "");
    assert_eq!(cache_status(&get(&mut c, "/private", "")), "MISS");
    assert_eq!(origin.count(), 3);
});

both_drivers!(request_directives_are_honoured, |io| {
    let origin = Origin::start();
    let gw = cached(io, &origin, "cache = {}", "");
    let mut c = gw.client();
    get(&mut c, "/fresh", "");
    // no-cache: fetched again, and the fresh response replaces the stored one.
    let r = get(&mut c, "/fresh", "Cache-Control: no-cache\r\n");
    assert_eq!((cache_status(&r), r.text().as_str()), ("MISS", "/fresh v2 lang=-"));
    let r = get(&mut c, "/fresh", "Pragma: no-cache\r\n");
    assert_eq!((cache_status(&r), r.text().as_str()), ("MISS", "/fresh v3 lang=-"));
    assert_eq!(get(&mut c, "/fresh", "").text(), "/fresh v3 lang=-");
    // no-store may be answered from the cache.
    assert_eq!(cache_status(&get(&mut c, "/fresh", "Cache-Control: no-store\r\n")), "HIT");
    // A stored response older than the request's max-age is not used (it came 30 s old).
    get(&mut c, "/aged", "");
    let r = get(&mut c, "/aged", "");
    assert_eq!(cache_status(&r), "HIT");
    assert!(r.header("age").unwrap().parse::<u64>().unwrap() >= 30);
    assert_eq!(cache_status(&get(&mut c, "/aged", "Cache-Control: max-age=10\r\n")), "EXPIRED");
    assert_eq!(cache_status(&get(&mut c, "/aged", "Cache-Control: max-age=100\r\n")), "HIT");
    assert_eq!(origin.count(), 5);
});

both_drivers!(conditional_requests_get_304_from_the_cache, |io| {
    let origin = Origin::start();
    let gw = cached(io, &origin, "cache = {}", "");
    let mut c = gw.client();
    get(&mut c, "/fresh", "");
    for fields in [
        "If-None-Match: \"e1\"\r\n",
        "If-None-Match: W/\"e0\", W/\"e1\"\r\n",
        "If-Modified-Since: Tue, 24 Nov 2026 11:00:00 GMT\r\n",
    ] {
        let r = get(&mut c, "/fresh", fields);
        assert_eq!((r.status(), cache_status(&r)), (304, "HIT"), "{fields}");
        assert_eq!(r.header("etag"), Some("\"e1\""));
        assert_eq!(r.header("content-length"), None);
        assert!(r.body.is_empty());
    }
    let r = get(&mut c, "/fresh", "If-None-Match: \"e2\"\r\n");
    assert_eq!((r.status(), r.text().as_str()), (200, "/fresh v1 lang=-"));
    assert_eq!(origin.count(), 1);
    // The connection is still in step after the bodiless 304s.
    assert_eq!(get(&mut c, "/fresh", "").status(), 200);
});

both_drivers!(stale_responses_are_revalidated_with_their_validators, |io| {
    let origin = Origin::start();
    let gw = cached(io, &origin, "cache = {}", "");
    let mut c = gw.client();
    let first = get(&mut c, "/reval", "");
    assert_eq!((cache_status(&first), first.text().as_str()), ("MISS", "/reval v1 lang=-"));
    // Too old for this request (it came 30 s old): asked again with its ETag, confirmed by
    // a 304, and the stored response goes to the client with the 304's fields.
    let r = get(&mut c, "/reval", "Cache-Control: max-age=10\r\n");
    assert_eq!((r.status(), cache_status(&r), r.text().as_str()), (200, "REVALIDATED", "/reval v1 lang=-"));
    assert_eq!(r.header("x-refreshed"), Some("yes"));
    assert_eq!(r.header("content-length"), Some("16"));
    assert_eq!(origin.count(), 2);
    // Refreshed: its age starts again, and it answers the same request from the store now.
    let r = get(&mut c, "/reval", "Cache-Control: max-age=10\r\n");
    assert_eq!((cache_status(&r), r.header("x-refreshed")), ("HIT", Some("yes")));
    assert!(r.header("age").unwrap().parse::<u64>().unwrap() <= 10);
    assert_eq!(origin.count(), 2);
    // A client with preconditions of its own gets the upstream's answer to them.
    let r = get(&mut c, "/reval", "Cache-Control: no-cache\r\nIf-None-Match: \"r1\"\r\n");
    assert_eq!((r.status(), cache_status(&r)), (304, "MISS"));
    assert_eq!(origin.count(), 3);
    assert_eq!(get(&mut c, "/reval", "").status(), 200);
});

both_drivers!(concurrent_misses_collapse_into_one_fetch_with_a_lock, |io| {
    let origin = Origin::start();
    let gw = cached(io, &origin, "cache = { lock = \"10s\" }", "");
    // Five clients ask at once: one fetch reaches the origin, the others wait for it.
    let answers: Vec<Message> = std::thread::scope(|s| {
        let asks: Vec<_> = (0..5).map(|_| s.spawn(|| get(&mut gw.client(), "/slow", ""))).collect();
        asks.into_iter().map(|a| a.join().unwrap()).collect()
    });
    assert_eq!(origin.count(), 1, "collapsed into one fetch");
    for a in &answers {
        assert_eq!((a.status(), a.text().as_str()), (200, "/slow v1 lang=-"));
    }
    let mut marks: Vec<&str> = answers.iter().map(cache_status).collect();
    marks.sort();
    assert_eq!(marks, ["HIT", "HIT", "HIT", "HIT", "MISS"]);
    // Without a lock every miss goes upstream.
    let origin = Origin::start();
    let gw = cached(io, &origin, "cache = {}", "");
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| get(&mut gw.client(), "/slow", ""));
        }
    });
    assert_eq!(origin.count(), 2);
});

both_drivers!(stale_responses_answer_when_the_upstream_fails, |io| {
    let origin = Origin::start();
    let gw = cached(io, &origin, "cache = { stale_if_error = \"1h\" }", "");
    let mut c = gw.client();
    get(&mut c, "/aged", "");
    get(&mut c, "/strict", "");
    // Too old for these requests (the responses came 30 s old), and the upstream fails.
    let old = "Cache-Control: max-age=10\r\n";
    for fails in ["x-origin-down: 1\r\n", "x-origin-hang-up: 1\r\n"] {
        let r = get(&mut c, "/aged", &format!("{old}{fails}"));
        assert_eq!((r.status(), cache_status(&r), r.text().as_str()), (200, "STALE", "/aged v1 lang=-"), "{fails}");
        assert!(r.header("age").unwrap().parse::<u64>().unwrap() >= 30);
    }
    // must-revalidate forbids it (RFC 9111 5.2.2.2).
    let r = get(&mut gw.client(), "/strict", &format!("{old}x-origin-down: 1\r\n"));
    assert_eq!((r.status(), cache_status(&r)), (503, "EXPIRED"));
    // A working upstream is asked as usual.
    let r = get(&mut c, "/aged", old);
    assert_eq!((r.status(), cache_status(&r), r.text().as_str()), (200, "EXPIRED", "/aged v6 lang=-"));

    // Without stale_if_error the failure goes to the client.
    let origin = Origin::start();
    let gw = cached(io, &origin, "cache = {}", "");
    let mut c = gw.client();
    get(&mut c, "/aged", "");
    let r = get(&mut c, "/aged", &format!("{old}x-origin-down: 1\r\n"));
    assert_eq!((r.status(), cache_status(&r)), (503, "EXPIRED"));
});

both_drivers!(a_reload_keeps_the_responses_of_unchanged_routes, |io| {
    let origin = Origin::start();
    let upstream = format!("[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n", origin.up.addr);
    let docs = "[[routes]]\npath = \"/doc\"\nupstream = \"api\"\ncache = {}\n";
    let other = "[[routes]]\npath = \"/other\"\nupstream = \"api\"\ncache = {}\n";
    let mut gw = Gateway::start(io, &format!("{upstream}{docs}{other}"));
    assert_eq!(cache_status(&get(&mut gw.client(), "/doc", "")), "MISS");
    assert_eq!(cache_status(&get(&mut gw.client(), "/other", "")), "MISS");
    // Routes reordered, one added in front, an upstream added: the same routes find their
    // responses.
    let front = "[[routes]]\npath = \"/new\"\nupstream = \"api\"\n";
    gw.reload_extra(&format!(
        "{upstream}[[upstreams]]\nname = \"more\"\nendpoints = [\"127.0.0.1:9\"]\n{front}{other}{docs}"
    ))
    .unwrap();
    for path in ["/doc", "/other"] {
        let r = get(&mut gw.client(), path, "");
        assert_eq!(
            (cache_status(&r), r.text()),
            ("HIT", format!("{path} v{} lang=-", if path == "/doc" { 1 } else { 2 }))
        );
    }
    assert_eq!(origin.count(), 2);
    // A changed route starts afresh; the unchanged one keeps its responses.
    gw.reload_extra(&format!("{upstream}{}{other}", docs.replace("cache = {}", "cache = { lock = \"1s\" }"))).unwrap();
    assert_eq!(cache_status(&get(&mut gw.client(), "/doc", "")), "MISS");
    assert_eq!(cache_status(&get(&mut gw.client(), "/other", "")), "HIT");
    // Another cache size: another store.
    gw.reload_extra(&format!("[cache]\nmax_bytes = 2097152\n{upstream}{docs}{other}")).unwrap();
    assert_eq!(cache_status(&get(&mut gw.client(), "/other", "")), "MISS");
    assert_eq!(origin.count(), 4);
});

both_drivers!(unsafe_methods_invalidate_the_target, |io| {
    let origin = Origin::start();
    let gw = cached(io, &origin, "cache = {}", "");
    let mut c = gw.client();
    get(&mut c, "/doc", "");
    assert_eq!(cache_status(&get(&mut c, "/doc", "")), "HIT");
    let r = c.request("PUT /doc HTTP/1.1\r\nHost: a\r\ncontent-length: 3\r\n\r\nnew");
    assert_eq!((r.status(), cache_status(&r)), (200, "BYPASS"));
    // On a new connection too: the store is shared.
    let r = get(&mut gw.client(), "/doc", "");
    assert_eq!((cache_status(&r), r.text().as_str()), ("MISS", "/doc v3 lang=-"));
    let r = c.request("DELETE /doc HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), 200);
    assert_eq!(cache_status(&get(&mut c, "/doc", "")), "MISS");
    assert_eq!(origin.count(), 5);
});

both_drivers!(variants_by_vary_and_by_consumer, |io| {
    let origin = Origin::start();
    let gw = cached(io, &origin, "cache = {}", "");
    let mut c = gw.client();
    let en = "Accept-Language: en\r\n";
    let de = "Accept-Language: de\r\n";
    for (fields, want, body) in [
        (en, "MISS", "v1 lang=en"),
        (en, "HIT", "v1 lang=en"),
        (de, "MISS", "v2 lang=de"),
        (de, "HIT", "v2 lang=de"),
        (en, "HIT", "v1 lang=en"),
        ("", "MISS", "v3 lang=-"),
    ] {
        let r = get(&mut c, "/vary", fields);
        assert_eq!((cache_status(&r), r.text().as_str()), (want, format!("/vary {body}").as_str()), "{fields:?}");
    }

    // Consumers never get each other's responses.
    let origin = Origin::start();
    let gw = cached(
        io,
        &origin,
        "auth = \"api_key\"\ncache = {}",
        "[[consumers]]\nname = \"alice\"\nkeys = [\"alice-key-1\"]\n[[consumers]]\nname = \"bob\"\nkeys = [\"bob-key-22\"]\n",
    );
    let mut c = gw.client();
    for (key, want, version) in
        [("alice-key-1", "MISS", 1), ("alice-key-1", "HIT", 1), ("bob-key-22", "MISS", 2), ("bob-key-22", "HIT", 2)]
    {
        let r = get(&mut c, "/fresh", &format!("x-api-key: {key}\r\n"));
        assert_eq!((cache_status(&r), r.text()), (want, format!("/fresh v{version} lang=-")), "{key}");
    }
    // Unauthenticated requests are refused before the cache is consulted.
    assert_eq!(get(&mut c, "/fresh", "").status(), 401);
});

both_drivers!(chunked_and_large_bodies, |io| {
    let origin = Origin::start();
    let gw = cached(io, &origin, "cache = {}", "");
    let mut c = gw.client();
    // Chunked: stored decoded, served with a length.
    let first = get(&mut c, "/chunked", "");
    assert_eq!((cache_status(&first), first.text().as_str()), ("MISS", "/chunked v1 lang=-"));
    let hit = get(&mut c, "/chunked", "");
    assert_eq!((cache_status(&hit), hit.text()), ("HIT", first.text()));
    assert!(!hit.chunked);
    assert_eq!(hit.header("content-length"), Some("18"));
    // Over 64 KiB: the body leaves apart from its head.
    let big = get(&mut c, "/big", "");
    assert_eq!(big.body.len(), 200_000);
    let hit = get(&mut c, "/big", "");
    assert_eq!((cache_status(&hit), hit.body == big.body), ("HIT", true));
    // Over max_entry_bytes (1 MiB by default): streamed through, never stored.
    for _ in 0..2 {
        let r = get(&mut c, "/huge", "");
        assert_eq!((cache_status(&r), r.body.len()), ("MISS", 2_000_000));
    }
    assert_eq!(origin.count(), 4);
    assert_eq!(get(&mut c, "/chunked", "").status(), 200);
});

both_drivers!(the_store_stays_within_max_bytes_and_is_measured, |io| {
    let origin = Origin::start();
    let gw = cached(
        io,
        &origin,
        "cache = { max_entry_bytes = 60000 }\nresponse_headers = { remove = [\"x-cache-status\"] }",
        "[cache]\nmax_bytes = 1048576\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let mut c = gw.client();
    // 100 targets of 30 KB: three times what the store may hold.
    for i in 0..100 {
        let r = get(&mut c, &format!("/item{i}"), "");
        assert_eq!(r.status(), 200);
        assert_eq!(r.header("x-cache-status"), None, "removed by response_headers");
    }
    let metrics = gw.admin("GET", "/metrics").1;
    assert!(metric(&metrics, "coregate_cache_bytes") <= 1_048_576, "{metrics}");
    let targets = metric(&metrics, "coregate_cache_targets");
    assert!((10..100).contains(&targets), "{targets}");
    assert_eq!(metric(&metrics, "coregate_cache_lookups_total{result=\"miss\"}"), 100);
    assert_eq!(metric(&metrics, "coregate_cache_lookups_total{result=\"hit\"}"), 0);
    let admin = |raw: &str| Client::connect(gw.admin_addr()).request(raw);
    // The admin listener purges one target (as clients send it; the host in any case)...
    let before = origin.count();
    get(&mut c, "/item99", "");
    assert_eq!(origin.count(), before, "stored");
    let purged = admin("DELETE /cache HTTP/1.1\r\nHost: a\r\nx-purge-host: A\r\nx-purge-target: /item99\r\n\r\n");
    assert_eq!((purged.status(), purged.text().as_str()), (200, "purged 1 targets\n"));
    let purged = admin("DELETE /cache HTTP/1.1\r\nHost: a\r\nx-purge-host: a\r\nx-purge-target: /item99\r\n\r\n");
    assert_eq!(purged.text(), "purged 0 targets\n");
    assert_eq!(admin("DELETE /cache HTTP/1.1\r\nHost: a\r\nx-purge-host: a\r\n\r\n").status(), 400);
    get(&mut c, "/item99", "");
    assert_eq!(origin.count(), before + 1, "fetched again after its purge");
    // ... or empties the store.
    let purged = admin("DELETE /cache HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((purged.status(), purged.text()), (200, format!("purged {targets} targets\n")));
    assert_eq!(admin("GET /cache HTTP/1.1\r\nHost: a\r\n\r\n").status(), 405);
    let before = origin.count();
    get(&mut c, "/item99", "");
    assert_eq!(origin.count(), before + 1, "fetched again after the purge");
});

both_drivers!(the_access_log_names_the_cache_result, |io| {
    let origin = Origin::start();
    let path = std::env::temp_dir().join(format!("coregate-cache-access-{}-{io}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let gw = cached(io, &origin, "cache = {}", &format!("[access_log]\npath = {:?}", path.display().to_string()));
    let mut c = gw.client();
    get(&mut c, "/fresh", "");
    get(&mut c, "/fresh", "");
    c.request("POST /fresh HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\n\r\n");
    let mut lines = Vec::new();
    until(
        || {
            lines = std::fs::read_to_string(&path).unwrap_or_default().lines().map(str::to_string).collect();
            lines.len() >= 3
        },
        || std::thread::sleep(std::time::Duration::from_millis(20)),
    );
    let results: Vec<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect(l)["cache"].as_str().unwrap_or("-").to_string())
        .collect();
    assert_eq!(results, ["MISS", "HIT", "BYPASS"]);
    let _ = std::fs::remove_file(&path);
});

#[test]
fn configurations_that_cannot_work_are_refused() {
    let err = |route: &str, extra: &str| {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n{extra}\n[[upstreams]]\nname = \"api\"\nendpoints = [\"127.0.0.1:9\"]\n[[routes]]\npath = \"/\"\n{route}\n"
        );
        config::Config::parse(&text).expect_err("refused").to_string()
    };
    assert!(err("respond = { status = 200 }\ncache = {}", "").contains("cache needs an upstream"));
    assert!(err("upstream = \"api\"\ncache = { ttl = \"soon\" }", "").contains("routes[0].cache.ttl"));
    assert!(err("upstream = \"api\"\ncache = { max_entry_bytes = 0 }", "").contains("max_entry_bytes"));
    let e = err("upstream = \"api\"\ncache = { max_entry_bytes = 100000 }", "[cache]\nmax_bytes = 1048576");
    assert!(e.contains("routes[0].cache.max_entry_bytes") && e.contains("65536"), "{e}");
    assert!(err("upstream = \"api\"\ncache = {}", "[cache]\nmax_bytes = 1000").contains("cache.max_bytes"));
    assert!(err("upstream = \"api\"\ncache = { size = 1 }", "").contains("size"));
    assert!(err("upstream = \"api\"\ncache = { lock = \"0s\" }", "").contains("routes[0].cache.lock"));
    assert!(err("upstream = \"api\"\ncache = { stale_if_error = \"x\" }", "").contains("stale_if_error"));
}
