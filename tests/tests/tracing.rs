//! OpenTelemetry traces (`[tracing]`) end to end, on both drivers: the upstream gets the
//! `traceparent` of coregate's span, a child of the client's (or the root of a new trace),
//! with the client's sampling decision; sampled spans reach an OTLP/HTTP collector started
//! here, as JSON, with the ids the upstream saw (in a batch a second old, and at the
//! gateway's end); unsampled ones do not.

use std::sync::{Arc, Mutex};

use coregate_tests::*;

const CLIENT_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// An upstream that records the `traceparent` of each request.
fn recording() -> (Upstream, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let up = Upstream::start(move |mut c| {
        while let Some(req) = c.read_request() {
            record.lock().unwrap().push(req.header("traceparent").unwrap_or("-").to_string());
            if !c.write(echo_response(&req)) {
                return;
            }
        }
    });
    (up, seen)
}

/// A collector: records the JSON documents posted to it and answers 200.
fn collector() -> (Upstream, Arc<Mutex<Vec<serde_json::Value>>>) {
    let posts = Arc::new(Mutex::new(Vec::new()));
    let record = posts.clone();
    let up = Upstream::start(move |mut c| {
        while let Some(req) = c.read_request() {
            assert!(req.start.starts_with("POST /v1/traces "), "{}", req.start);
            assert_eq!(req.header("content-type"), Some("application/json"));
            record.lock().unwrap().push(serde_json::from_slice(&req.body).expect("a JSON document"));
            if !c.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}") {
                return;
            }
        }
    });
    (up, posts)
}

fn gateway(io: &str, up: &Upstream, collector: &Upstream, percent: u32) -> Gateway {
    Gateway::start(
        io,
        &format!(
            "[tracing]\nendpoint = \"http://{}/v1/traces\"\nservice_name = \"edge\"\nsample_percent = {percent}\n\
             [[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"items\"\npath = \"/\"\nupstream = \"api\"\n",
            collector.addr, up.addr
        ),
    )
}

/// The spans the collector got so far.
fn spans(posts: &Mutex<Vec<serde_json::Value>>) -> Vec<serde_json::Value> {
    let posts = posts.lock().unwrap();
    let mut out = Vec::new();
    for doc in posts.iter() {
        for rs in doc["resourceSpans"].as_array().unwrap() {
            assert_eq!(rs["resource"]["attributes"][0]["value"]["stringValue"], "edge");
            for ss in rs["scopeSpans"].as_array().unwrap() {
                out.extend(ss["spans"].as_array().unwrap().iter().cloned());
            }
        }
    }
    out
}

fn attribute<'a>(span: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    let attrs = span["attributes"].as_array().unwrap();
    &attrs.iter().find(|a| a["key"] == key).unwrap_or_else(|| panic!("no {key} in {span}"))["value"]
}

both_drivers!(spans_join_the_clients_trace_and_reach_the_collector, |io| {
    let (up, seen) = recording();
    let (col, posts) = collector();
    let gw = gateway(io, &up, &col, 100);
    let mut c = gw.client();
    for traceparent in [Some(CLIENT_PARENT.to_string()), None, Some(CLIENT_PARENT.replace("-01", "-00"))] {
        let field = traceparent.map(|t| format!("traceparent: {t}\r\n")).unwrap_or_default();
        assert_eq!(c.request(format!("GET /items/7 HTTP/1.1\r\nHost: a\r\n{field}\r\n")).status(), 200);
    }
    let seen = seen.lock().unwrap().clone();
    // The client's trace, a new span of coregate's, the client's sampled flag.
    let (joined, new, unsampled) = (&seen[0], &seen[1], &seen[2]);
    assert!(joined.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && joined.ends_with("-01"), "{joined}");
    assert_ne!(&joined[36..52], "00f067aa0ba902b7", "coregate's own span, not the client's");
    assert!(new.len() == 55 && !new.contains("4bf92f35") && new.ends_with("-01"), "a new, sampled trace: {new}");
    assert!(unsampled.starts_with("00-4bf92f35") && unsampled.ends_with("-00"), "{unsampled}");
    // The gateway's end flushes the exporter: the two sampled spans reach the collector.
    drop(gw);
    let got = spans(&posts);
    assert_eq!(got.len(), 2, "the unsampled request has no span: {got:?}");
    let child = got.iter().find(|s| s["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736").expect("the client's trace");
    assert_eq!(child["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(child["spanId"], joined[36..52]);
    assert_eq!((child["name"].as_str(), child["kind"].as_u64()), (Some("GET items"), Some(2)));
    assert_eq!(attribute(child, "http.response.status_code")["intValue"], "200");
    assert_eq!(attribute(child, "url.path")["stringValue"], "/items/7");
    assert_eq!(attribute(child, "coregate.upstream")["stringValue"], "api");
    let root = got.iter().find(|s| s["traceId"] == new[3..35]).expect("the new trace");
    assert_eq!((root["parentSpanId"].as_str(), root["spanId"].as_str()), (Some(""), Some(&new[36..52])));
    let (start, end) = (child["startTimeUnixNano"].as_str().unwrap(), child["endTimeUnixNano"].as_str().unwrap());
    assert!(start.parse::<u128>().unwrap() <= end.parse::<u128>().unwrap());
});

both_drivers!(new_traces_are_sampled_by_share, |io| {
    let (up, seen) = recording();
    let (col, posts) = collector();
    let gw = gateway(io, &up, &col, 0);
    let mut c = gw.client();
    for _ in 0..3 {
        assert_eq!(c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status(), 200);
    }
    // A client's sampled trace is followed whatever the share.
    let field = format!("traceparent: {CLIENT_PARENT}\r\n");
    assert_eq!(c.request(format!("GET / HTTP/1.1\r\nHost: a\r\n{field}\r\n")).status(), 200);
    let seen = seen.lock().unwrap().clone();
    assert!(seen[..3].iter().all(|t| t.len() == 55 && t.ends_with("-00")), "propagated, not sampled: {seen:?}");
    drop(gw);
    // The gateway's end flushed the exporter: only the client's sampled span went out.
    let got = spans(&posts);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
});

both_drivers!(spans_are_posted_while_the_gateway_runs, |io| {
    let (up, _) = recording();
    let (col, posts) = collector();
    let gw = gateway(io, &up, &col, 100);
    assert_eq!(gw.client().request("GET /one HTTP/1.1\r\nHost: a\r\n\r\n").status(), 200);
    // The exporter posts a batch a second after its first span, without waiting for more.
    until(|| !spans(&posts).is_empty(), std::thread::yield_now);
    assert_eq!(attribute(&spans(&posts)[0], "url.path")["stringValue"], "/one");
    drop(gw);
});
