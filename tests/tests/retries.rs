//! Retries on other endpoints (`upstreams[].retries`), on both drivers: an idempotent
//! request that gets a 502-504 or whose upstream fails is sent again elsewhere, whole
//! (with a small body too); a POST is not; with `retries = 0` the first answer stands;
//! `retry_statuses` chooses the answers that are tried again.

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

both_drivers!(the_retry_budget_bounds_retries_in_flight, |io| {
    use std::sync::{mpsc, Mutex};
    use std::time::Duration;
    // "sick" answers 503 at once and takes nearly every first attempt (weight 1000 to 1);
    // "slow" holds every request until released.
    let sick = endpoint(true);
    let (arrived_tx, arrived) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let (arrived_tx, release_rx) = (Mutex::new(arrived_tx), Mutex::new(release_rx));
    let slow = Upstream::start(move |mut c| {
        while c.read_request().is_some() {
            arrived_tx.lock().unwrap().send(()).unwrap();
            if release_rx.lock().unwrap().recv().is_err() || !c.write("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n") {
                return;
            }
        }
    });
    let gw = Gateway::start_with_workers(
        io,
        1,
        &format!(
            "[[upstreams]]\nname = \"api\"\nendpoints = [{{ address = \"{}\", weight = 1000 }}, \"{}\"]\nretries = 1\nretry_backoff = \"0s\"\noutlier = {{ consecutive_failures = 0 }}\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n",
            sick.up.addr, slow.addr
        ),
    );
    let (done_tx, done) = mpsc::channel();
    for _ in 0..5 {
        let (addr, done_tx) = (gw.addr, done_tx.clone());
        std::thread::spawn(move || {
            let status = Client::connect(addr).request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status();
            done_tx.send(status).unwrap();
        });
    }
    // Three retries may be in flight at once (the floor; 20% of 5 is 1): three reach "slow"
    // and wait there; the other two are answered with their first attempt's 503 meanwhile.
    let wait = Duration::from_secs(10);
    for _ in 0..3 {
        arrived.recv_timeout(wait).expect("a retry");
    }
    let first: Vec<u16> = (0..2).map(|_| done.recv_timeout(wait).expect("an answer")).collect();
    assert_eq!(first, [503, 503]);
    for _ in 0..3 {
        release.send(()).unwrap();
    }
    let rest: Vec<u16> = (0..3).map(|_| done.recv_timeout(wait).expect("an answer")).collect();
    assert_eq!(rest, [200, 200, 200]);
    assert_eq!(sick.requests.load(Ordering::SeqCst), 5);
    assert!(arrived.try_recv().is_err(), "no fourth retry");
});

both_drivers!(retry_statuses_choose_the_answers_tried_again, |io| {
    // One endpoint answers 500 (an application error) to every request, the other 200.
    let failing = Upstream::start(|mut c| {
        while c.read_request().is_some() {
            if !c.write("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n") {
                return;
            }
        }
    });
    let good = Upstream::named("good");
    let gateway = |extra: &str| {
        Gateway::start_with_workers(
            io,
            1,
            &format!(
                "[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\", \"{}\"]\nretries = 1\nretry_backoff = \"0s\"\n{extra}\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n",
                failing.addr, good.addr
            ),
        )
    };
    let statuses = |gw: &Gateway| -> Vec<u16> {
        let mut c = gw.client();
        (0..4).map(|_| c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status()).collect()
    };
    // By default a 500 is the application's answer and stands.
    assert_eq!(statuses(&gateway("")), [500, 200, 500, 200]);
    // Listed, it is tried on the other endpoint.
    assert_eq!(statuses(&gateway("retry_statuses = [500, 503]")), [200, 200, 200, 200]);
});

#[test]
fn retry_statuses_are_checked() {
    let parse = |v: &str| {
        config::Config::parse(&format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n[[upstreams]]\nname = \"api\"\nendpoints = [\"127.0.0.1:9\"]\nretries = 1\nretry_statuses = {v}\n"
        ))
    };
    assert_eq!(parse("[429, 500]").unwrap().upstreams[0].retry_statuses, [429, 500]);
    for bad in ["[200]", "[302]", "[600]", "[-1]"] {
        assert!(parse(bad).unwrap_err().to_string().contains("upstreams[0].retry_statuses[0]"), "{bad}");
    }
    assert!(parse("[]").unwrap_err().to_string().contains("upstreams[0].retry_statuses"));
}

both_drivers!(a_route_can_set_its_own_retries, |io| {
    let (bad, good) = (endpoint(true), endpoint(false));
    // The upstream retries once; `/once` keeps that, `/never` turns it off; the second
    // upstream (the same endpoints) retries never, but `/more` asks for one.
    let gw = Gateway::start_with_workers(
        io,
        1,
        &format!(
            "[[upstreams]]\nname = \"api\"\nendpoints = [\"{bad}\", \"{good}\"]\nretries = 1\nretry_backoff = \"0s\"\noutlier = {{ consecutive_failures = 0 }}\n\
             [[upstreams]]\nname = \"plain\"\nendpoints = [\"{bad}\", \"{good}\"]\nretry_backoff = \"0s\"\noutlier = {{ consecutive_failures = 0 }}\n\
             [[routes]]\npath = \"/once\"\nupstream = \"api\"\n[[routes]]\npath = \"/never\"\nupstream = \"api\"\nretries = 0\n\
             [[routes]]\npath = \"/more\"\nupstream = \"plain\"\nretries = 1\n",
            bad = bad.up.addr,
            good = good.up.addr
        ),
    );
    let mut c = gw.client();
    let statuses = |c: &mut Client, path: &str| -> Vec<u16> {
        (0..4).map(|_| c.request(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n")).status()).collect()
    };
    assert_eq!(statuses(&mut c, "/once"), [200, 200, 200, 200]);
    assert_eq!(statuses(&mut c, "/never"), [503, 200, 503, 200]);
    assert_eq!(statuses(&mut c, "/more"), [200, 200, 200, 200]);
});
