//! An upstream's request queue, `upstreams[].queue = { size, timeout }`: requests over
//! `max_requests` wait for a slot instead of being answered 503 at once (HAProxy's server
//! queue with `timeout queue`, Envoy's `max_pending_requests`). Waiting and waking are the
//! engine's (`engine/src/concurrency.rs`).

use std::time::Duration;

use serde::Deserialize;

use crate::validate::{parse_duration, Checker};

/// `upstreams[].queue` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawQueue {
    /// Requests waiting at most, over all workers (default: `max_requests`).
    pub size: Option<usize>,
    /// How long a request waits for a slot (default: the upstream's `connect_timeout`).
    pub timeout: Option<String>,
}

/// An upstream's queue in front of its `max_requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    /// Requests waiting for a slot at most, over all workers; one more is answered 503.
    pub size: u32,
    /// A request that waited this long without a slot is answered 503.
    pub timeout: Duration,
}

pub(crate) fn build(
    c: &mut Checker,
    path: &str,
    raw: &RawQueue,
    max_requests: Option<u32>,
    connect_timeout: Duration,
) -> Option<Queue> {
    let Some(max_requests) = max_requests else {
        c.err(path, "a queue needs max_requests: requests queue for one of its slots");
        return None;
    };
    let size = c.bounded(&format!("{path}.size"), raw.size, max_requests as usize, 1, 1 << 24) as u32;
    let timeout = match raw.timeout.as_deref() {
        None => connect_timeout,
        Some(t) => match parse_duration(t) {
            Some(d) if !d.is_zero() && d <= Duration::from_secs(3600) => d,
            _ => {
                c.err(
                    format!("{path}.timeout"),
                    format!("invalid duration {t:?} (above 0 and at most 1h, such as \"2s\")"),
                );
                connect_timeout
            }
        },
    };
    Some(Queue { size, timeout })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(keys: &str) -> Result<crate::Upstream, String> {
        crate::testing::config(
            &[],
            &format!("upstream = \"q\"\n[[upstreams]]\nname = \"q\"\nendpoints = [\"127.0.0.1:9\"]\n{keys}"),
        )
        .map(|c| c.upstreams.into_iter().find(|u| u.name == "q").unwrap())
    }

    #[test]
    fn queues_parse_with_their_defaults() {
        let u = upstream("max_requests = 8\nconnect_timeout = \"3s\"\nqueue = {}").unwrap();
        assert_eq!(u.queue, Some(Queue { size: 8, timeout: Duration::from_secs(3) }));
        let u = upstream("max_requests = 8\nqueue = { size = 100, timeout = \"250ms\" }").unwrap();
        assert_eq!(u.queue, Some(Queue { size: 100, timeout: Duration::from_millis(250) }));
        assert_eq!(upstream("max_requests = 8").unwrap().queue, None);
        for (keys, needle) in [
            ("queue = {}", "upstreams[0].queue: a queue needs max_requests"),
            ("max_requests = 8\nqueue = { size = 0 }", "upstreams[0].queue.size"),
            ("max_requests = 8\nqueue = { timeout = \"0s\" }", "upstreams[0].queue.timeout"),
            ("max_requests = 8\nqueue = { timeout = \"2h\" }", "upstreams[0].queue.timeout"),
            ("max_requests = 8\nqueue = { depth = 3 }", "upstreams[0].queue.depth"),
        ] {
            let err = upstream(keys).unwrap_err();
            assert!(err.contains(needle), "{keys}: {err}");
        }
    }
}
