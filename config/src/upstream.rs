//! An `[[upstreams]]` entry to a validated [`Upstream`]: endpoints, timeouts, retries,
//! active health checks and outlier ejection. Balancing, queues, TLS and name resolution
//! are built by their own modules; shared checks are `validate`'s.

use std::time::Duration;

use crate::raw::{RawHealthCheck, RawOutlier, RawUpstream};
use crate::validate::{keepalive_requests, keepalive_time, parse_duration, statuses, Checker};
use crate::{HealthCheck, Outlier, Timeouts, Upstream};

pub(crate) fn build_upstream(c: &mut Checker, path: &str, u: &RawUpstream, t: &Timeouts) -> Upstream {
    let name = match &u.name {
        Some(n) if !n.is_empty() => n.clone(),
        _ => {
            c.err(format!("{path}.name"), "missing upstream name");
            String::new()
        }
    };
    if u.endpoints.is_empty() {
        c.err(format!("{path}.endpoints"), "at least one endpoint is required");
    }
    let before = c.errors.len();
    let entries = crate::endpoints::entries(c, &format!("{path}.endpoints"), &u.endpoints);
    let expanded = if c.errors.len() == before {
        crate::endpoints::expand(&entries, &crate::endpoints::system_resolver).unwrap_or_else(|(i, why)| {
            c.err(format!("{path}.endpoints[{i}]"), why);
            Default::default()
        })
    } else {
        Default::default()
    };
    let resolve = u.resolve.as_ref().map(|r| {
        let d = c.duration(&format!("{path}.resolve"), Some(r), crate::endpoints::MIN_RESOLVE);
        if d < crate::endpoints::MIN_RESOLVE {
            c.err(format!("{path}.resolve"), "at least 1s");
        }
        if !entries.iter().any(|e| matches!(e.host, crate::endpoints::Host::Name(..))) {
            c.err(format!("{path}.resolve"), "no endpoint is a name: there is nothing to resolve again");
        }
        d
    });
    let max_requests =
        u.max_requests.map(|m| c.bounded(&format!("{path}.max_requests"), Some(m), 1, 1, 1 << 24) as u32);
    let connect_timeout =
        c.duration(&format!("{path}.connect_timeout"), u.connect_timeout.as_ref(), t.upstream_connect);
    let queue = u
        .queue
        .as_ref()
        .and_then(|q| crate::queue::build(c, &format!("{path}.queue"), q, max_requests, connect_timeout));
    Upstream {
        name,
        endpoints: expanded.addrs,
        weights: expanded.weights,
        endpoint_names: expanded.names,
        entries,
        resolve,
        balance: crate::balance::balance(c, path, u.balance.as_deref(), u.hash_on.as_deref()),
        max_idle_per_endpoint: c.bounded(
            &format!("{path}.max_idle_per_endpoint"),
            u.max_idle_per_endpoint,
            256,
            0,
            1 << 20,
        ),
        keepalive_requests: keepalive_requests(c, path, u.keepalive_requests),
        keepalive_time: keepalive_time(c, path, u.keepalive_time.as_ref()),
        connect_timeout,
        response_timeout: c.duration(
            &format!("{path}.response_timeout"),
            u.response_timeout.as_ref(),
            t.upstream_response,
        ),
        idle_timeout: c.duration(&format!("{path}.idle_timeout"), u.idle_timeout.as_ref(), t.upstream_idle),
        health_check: u.health_check.as_ref().map(|h| build_health_check(c, &format!("{path}.health_check"), h)),
        outlier: build_outlier(c, &format!("{path}.outlier"), u.outlier.as_ref()),
        retries: c.bounded(&format!("{path}.retries"), u.retries, 0, 0, 10) as u32,
        slow_start: u.slow_start.as_ref().map(|t| c.duration(&format!("{path}.slow_start"), Some(t), Duration::ZERO)),
        retry_backoff: match u.retry_backoff.as_deref() {
            None => Duration::from_millis(25),
            Some(s) => match parse_duration(s) {
                Some(d) if d <= Duration::from_secs(10) => d,
                _ => {
                    c.err(
                        format!("{path}.retry_backoff"),
                        format!("invalid duration {s:?} (0s to 10s, such as \"25ms\")"),
                    );
                    Duration::ZERO
                }
            },
        },
        retry_budget: c.bounded(&format!("{path}.retry_budget"), u.retry_budget, 20, 1, 100) as u32,
        retry_statuses: retry_statuses(c, path, u.retry_statuses.as_deref()),
        max_requests,
        queue,
        tls: u.tls.as_ref().map(|t| crate::tls::build_upstream_tls(c, &format!("{path}.tls"), t)),
        pipeline: pipeline(c, path, u),
    }
}

/// `upstreams[].pipeline`: 1 (none) to 64. Not with TLS (the batch is one plaintext write
/// of a plain connection) and not with `balance = "hash"` (a batch goes to the endpoint
/// its first request was balanced to, which would move the others' keys).
fn pipeline(c: &mut Checker, path: &str, u: &RawUpstream) -> usize {
    let depth = c.bounded(&format!("{path}.pipeline"), u.pipeline, 1, 1, 64);
    if depth > 1 && u.tls.is_some() {
        c.err(format!("{path}.pipeline"), "pipelining is for plain HTTP upstreams: remove it or `tls`");
    }
    if depth > 1 && u.balance.as_deref() == Some("hash") {
        c.err(format!("{path}.pipeline"), "does not combine with balance = \"hash\": a batch goes to one endpoint");
    }
    depth
}

/// `upstreams[].retry_statuses`: 4xx and 5xx codes only (a 2xx or 3xx is an answer, not a
/// failure), default the three by which a gateway says it cannot serve now (RFC 9110
/// 15.6.3-5).
fn retry_statuses(c: &mut Checker, path: &str, raw: Option<&[i64]>) -> Vec<u16> {
    let Some(raw) = raw else { return vec![502, 503, 504] };
    let mut statuses = Vec::with_capacity(raw.len());
    for (i, &s) in raw.iter().enumerate() {
        match u16::try_from(s) {
            Ok(s @ 400..=599) => statuses.push(s),
            _ => c.err(format!("{path}.retry_statuses[{i}]"), format!("{s} is not a 4xx or 5xx status")),
        }
    }
    if raw.is_empty() {
        c.err(format!("{path}.retry_statuses"), "is empty: leave it out for 502, 503 and 504, or set retries = 0");
    }
    statuses
}

fn build_health_check(c: &mut Checker, path: &str, h: &RawHealthCheck) -> HealthCheck {
    let check_path = match h.path.as_deref() {
        Some(p) if p.starts_with('/') && p.bytes().all(|b| b.is_ascii_graphic()) => p.to_string(),
        Some(p) => {
            c.err(format!("{path}.path"), format!("{p:?} is not an origin-form path (starts with /, no spaces)"));
            String::new()
        }
        None => {
            c.err(format!("{path}.path"), "missing health check path");
            String::new()
        }
    };
    if let Some(host) = &h.host {
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) {
            c.err(format!("{path}.host"), format!("{host:?} is not a host"));
        }
    }
    let interval = c.duration(&format!("{path}.interval"), h.interval.as_ref(), Duration::from_secs(5));
    let timeout = c.duration(&format!("{path}.timeout"), h.timeout.as_ref(), Duration::from_secs(1));
    let threshold = |c: &mut Checker, key: &str, raw: Option<u32>, default: usize| {
        c.bounded(&format!("{path}.{key}"), raw.map(|v| v as usize), default, 1, 100) as u32
    };
    HealthCheck {
        path: check_path,
        host: h.host.clone(),
        interval,
        timeout,
        healthy_threshold: threshold(c, "healthy_threshold", h.healthy_threshold, 2),
        unhealthy_threshold: threshold(c, "unhealthy_threshold", h.unhealthy_threshold, 3),
        expect_status: match &h.expect_status {
            None => vec![(200, 399)],
            Some(list) if list.is_empty() => {
                c.err(format!("{path}.expect_status"), "an empty list passes nothing");
                Vec::new()
            }
            Some(list) => statuses(c, &format!("{path}.expect_status"), list, 100),
        },
        expect_body: h.expect_body.clone().filter(|b| {
            let ok = !b.is_empty();
            if !ok {
                c.err(format!("{path}.expect_body"), "empty: leave it out");
            }
            ok
        }),
    }
}

fn build_outlier(c: &mut Checker, path: &str, o: Option<&RawOutlier>) -> Outlier {
    let o = o.unwrap_or(&RawOutlier { consecutive_failures: None, ejection: None });
    Outlier {
        consecutive_failures: c.bounded(
            &format!("{path}.consecutive_failures"),
            o.consecutive_failures.map(|v| v as usize),
            5,
            0,
            1000,
        ) as u32,
        ejection: c.duration(&format!("{path}.ejection"), o.ejection.as_ref(), Duration::from_secs(10)),
    }
}
