//! Heap allocations per proxied request in steady state, counted on the gateway's worker
//! threads by a counting global allocator (the test's own client and upstream threads are
//! not counted). Measured: 0 per request for every shape below (the per-request futures run
//! in blocks recycled by the worker's arena, engine/src/arena.rs; bodies larger than a read
//! alternate between two buffers per connection, engine/src/io.rs). The bound is exact, so
//! any new allocation on the request path fails this test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use coregate_tests::*;

struct Counting;

static WORKER_ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Whether this thread is a gateway worker; decided on its first allocation.
    static IS_WORKER: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

fn on_worker() -> bool {
    IS_WORKER
        .try_with(|w| match w.get() {
            Some(v) => v,
            None => {
                // Worker threads are spawned with a name, so reading it does not allocate.
                let v = std::thread::current().name().is_some_and(|n| n.starts_with("coregate-w"));
                w.set(Some(v));
                v
            }
        })
        .unwrap_or(false)
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counting is a
// relaxed atomic increment that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if on_worker() {
            WORKER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if on_worker() {
            WORKER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations per request (exact), plus a few one-off ones in the whole window (a slab or
/// map on the worker growing once). One more allocation per request adds 1,000 and fails.
const PER_REQUEST: u64 = 0;
const ONE_OFF_SLACK: u64 = 10;

/// The counter is process-wide: the two driver variants must not run at the same time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The request shapes measured, each on its own keep-alive connection: a plain GET, a
/// Content-Length body, a chunked body, a route with the policy chain (API key, rate
/// limit by consumer, a templated request header), and routes by path template and by path
/// regex whose captures rewrite the path and fill a field.
const REQUESTS: [(&str, &str); 6] = [
    ("GET", "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("Content-Length body", "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"),
    (
        "chunked body",
        "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    ),
    ("policy chain", "GET /p/x HTTP/1.1\r\nHost: a\r\nX-Api-Key: key-one-1\r\n\r\n"),
    ("path template", "GET /t/7/x HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("path regex", "GET /r/7/x HTTP/1.1\r\nHost: a\r\n\r\n"),
];

both_drivers!(allocations_per_proxied_request, |io| {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let up = Upstream::echo();
    let gw = Gateway::start_with_workers(
        io,
        1,
        &format!(
            "[[consumers]]\nname = \"c\"\nkeys = [\"key-one-1\"]\n\
             [[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n\
             [[routes]]\npath = \"/p\"\nupstream = \"api\"\nauth = \"api_key\"\n\
             rate_limits = [{{ rate = 10000000, burst = 1000000, key = \"consumer\" }}]\n\
             request_headers = {{ set = {{ x-tag = \"c-{{consumer}}\" }} }}\n\
             [[routes]]\npath_template = \"/t/{{id}}/{{part}}\"\nupstream = \"api\"\nrewrite = \"/a/{{part}}/{{id}}\"\n\
             request_headers = {{ set = {{ x-id = \"{{id}}\" }} }}\n\
             [[routes]]\npath_regex = '/r/(?P<id>[0-9]+)/(?P<part>.+)'\nupstream = \"api\"\nrewrite = \"/a/{{part}}/{{id}}\"\n\
             request_headers = {{ set = {{ x-id = \"{{id}}\" }} }}\n\
             [[routes]]\npath = \"/\"\nupstream = \"api\"\n",
            up.addr
        ),
    );
    for (shape, req) in REQUESTS {
        let mut c = gw.client();
        for _ in 0..200 {
            assert_eq!(c.request(req).status(), 200, "{req}");
        }
        let before = WORKER_ALLOCS.load(Ordering::Relaxed);
        let n: u64 = 1000;
        for _ in 0..n {
            assert_eq!(c.request(req).status(), 200);
        }
        let delta = WORKER_ALLOCS.load(Ordering::Relaxed) - before;
        eprintln!("{io}: {:.3} heap allocations per request ({shape})", delta as f64 / n as f64);
        assert!(delta <= PER_REQUEST * n + ONE_OFF_SLACK, "{delta} allocations for {n} requests of {req:?}");
    }
});

/// Body size for the large-body shapes: several of the gateway's 64 KiB body reads.
const LARGE: usize = 256 * 1024;

both_drivers!(allocations_per_request_with_large_bodies, |io| {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Answers every request with LARGE bytes, whatever it carried: chunked (16 KiB chunks)
    // when the path asks for it, else with a Content-Length.
    let up = Upstream::start(|mut c| {
        let length = format!("HTTP/1.1 200 OK\r\nContent-Length: {LARGE}\r\n\r\n{}", "r".repeat(LARGE));
        let chunked = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n", chunks(b'r'));
        while let Some(req) = c.read_request() {
            if !c.write(if req.start.contains("/chunked") { &chunked } else { &length }) {
                return;
            }
        }
    });
    let gw = Gateway::proxy_to(io, up.addr, "");
    let upload = format!("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {LARGE}\r\n\r\n{}", "q".repeat(LARGE));
    let chunked_upload =
        format!("POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n", chunks(b'q'));
    for (shape, req) in [
        ("large response", "GET /down HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("large request and response", &upload),
        ("large chunked response", "GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("large chunked request and response", &chunked_upload),
    ] {
        let mut c = gw.client();
        for _ in 0..50 {
            assert_eq!(c.request(req).body.len(), LARGE, "{shape}");
        }
        let before = WORKER_ALLOCS.load(Ordering::Relaxed);
        let n: u64 = 200;
        for _ in 0..n {
            assert_eq!(c.request(req).body.len(), LARGE);
        }
        let delta = WORKER_ALLOCS.load(Ordering::Relaxed) - before;
        eprintln!("{io}: {:.3} heap allocations per request ({shape})", delta as f64 / n as f64);
        assert!(delta <= PER_REQUEST * n + ONE_OFF_SLACK, "{delta} allocations for {n} requests ({shape})");
    }
});

/// LARGE bytes of `fill` as 16 KiB chunks, without the last chunk.
fn chunks(fill: u8) -> String {
    let chunk = format!("4000\r\n{}\r\n", (fill as char).to_string().repeat(0x4000));
    chunk.repeat(LARGE / 0x4000)
}

both_drivers!(allocations_per_pipelined_request, |io| {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // TCP_NODELAY, as nginx, HAProxy, Envoy, Go and Node set it: without it, each response
    // after the first of a batch waits for the ACK of the one before (Nagle), which the
    // gateway delays (README, "Pipelining to upstreams").
    let up = Upstream::start(|mut c| {
        c.stream.set_nodelay(true).unwrap();
        while let Some(req) = c.read_request() {
            if !c.write(echo_response(&req)) {
                return;
            }
        }
    });
    let gw = Gateway::start_with_workers(
        io,
        1,
        &format!(
            "[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\npipeline = 8\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n",
            up.addr
        ),
    );
    // Every round writes a GET on each connection before reading any answer, so that
    // they reach the worker together and share upstream writes (`tests/pipeline.rs`).
    let mut clients: Vec<Client> = (0..8).map(|_| gw.client()).collect();
    let round = |clients: &mut Vec<Client>| {
        for c in clients.iter_mut() {
            c.send("GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
        }
        for c in clients.iter_mut() {
            assert_eq!(c.response().status(), 200);
        }
    };
    for _ in 0..400 {
        round(&mut clients);
    }
    let before = WORKER_ALLOCS.load(Ordering::Relaxed);
    let rounds: u64 = 250;
    for _ in 0..rounds {
        round(&mut clients);
    }
    let (delta, n) = (WORKER_ALLOCS.load(Ordering::Relaxed) - before, rounds * clients.len() as u64);
    eprintln!("{io}: {:.3} heap allocations per request (pipelined GET)", delta as f64 / n as f64);
    assert!(delta <= PER_REQUEST * n + ONE_OFF_SLACK, "{delta} allocations for {n} pipelined requests");
});
