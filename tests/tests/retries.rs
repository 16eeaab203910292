//! Retries on other endpoints (`upstreams[].retries`), on both drivers: an idempotent
//! request that gets a 502-504 or whose upstream fails is sent again elsewhere, whole
//! (with a small body too); a POST is not; with `retries = 0` the first answer stands.

use std::sync::atomic::Ordering;

use coregate_tests::*;

/// An endpoint that reads a request head and closes without answering.
fn hang_up() -> Upstream {
    Upstream::start(|mut c| {
        c.read_request();
    })
}

both_drivers!(idempotent_requests_are_retried_on_another_endpoint, |io| {
    let (bad, good) = (endpoint(true), endpoint(false));
    let gw = gateway_to(io, &[&bad, &good], "retries = 1\noutlier = { consecutive_failures = 0 }");
    let mut c = gw.client();
    for i in 0..6 {
        let r = c.request(format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(r.status(), 200, "request {i}");
    }
    assert_eq!(bad.requests.load(Ordering::SeqCst), 3, "every other request tried the bad endpoint first");
    assert_eq!(good.requests.load(Ordering::SeqCst), 6);
    // PUT with a body sent along with its head: idempotent and held whole, so retried.
    let r = c.request("PUT /doc HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\n\r\nhello");
    assert_eq!(r.status(), 200);
    // POST is not idempotent: whoever answers first is the answer.
    let statuses: Vec<u16> =
        (0..2).map(|_| c.request("POST /x HTTP/1.1\r\nHost: a\r\ncontent-length: 1\r\n\r\nx").status()).collect();
    assert!(statuses.contains(&503) && statuses.contains(&200), "{statuses:?}");
});

both_drivers!(an_upstream_that_hangs_up_is_retried_elsewhere, |io| {
    let closer = hang_up();
    let good = endpoint(false);
    let gw = Gateway::start_with_workers(
        io,
        1,
        &format!(
            "[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\", \"{}\"]\nretries = 2\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n",
            closer.addr, good.up.addr
        ),
    );
    let mut c = gw.client();
    for _ in 0..4 {
        assert_eq!(c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status(), 200);
    }
    assert!(closer.connection_count() >= 1);
});

both_drivers!(without_retries_the_first_answer_stands, |io| {
    let (bad, good) = (endpoint(true), endpoint(false));
    let gw = gateway_to(io, &[&bad, &good], "outlier = { consecutive_failures = 0 }");
    let mut c = gw.client();
    let statuses: Vec<u16> = (0..4).map(|_| c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status()).collect();
    assert_eq!(statuses, [503, 200, 503, 200]);
});
