//! Fault injection (`routes[].fault`): a share of a route's requests delayed, or answered
//! with an error status instead of being served, to test how clients and callers cope
//! (Envoy's HTTP fault filter). Injecting the faults is the engine's (`engine/src/fault.rs`).

use std::time::Duration;

use serde::Deserialize;

use crate::validate::{parse_duration, Checker};

/// `routes[].fault` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawFault {
    pub delay: Option<RawDelay>,
    pub abort: Option<RawAbort>,
    /// Only requests carrying this field are eligible (test traffic marks itself).
    pub header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawDelay {
    pub duration: Option<String>,
    pub percent: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAbort {
    pub status: Option<u16>,
    pub percent: Option<f64>,
}

/// A route's faults: the delay comes first, then the abort (as Envoy's).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// How long, for what share of the eligible requests (percent).
    pub delay: Option<(Duration, f64)>,
    /// Which status answers, for what share of the eligible requests (percent).
    pub abort: Option<(u16, f64)>,
    /// Lower-case field name: only requests carrying it are eligible; None: every request.
    pub header: Option<String>,
}

/// Longest delay accepted: past it, a client's own timeouts are what is being tested.
const MAX_DELAY: Duration = Duration::from_secs(3600);

pub(crate) fn build(c: &mut Checker, path: &str, raw: &RawFault) -> Fault {
    let mut percent = |at: &str, p: Option<f64>| {
        let p = p.unwrap_or(100.0);
        if !(p > 0.0 && p <= 100.0) {
            c.err(format!("{path}.{at}.percent"), format!("{p} is not a share above 0 and at most 100"));
        }
        p
    };
    let delay = raw.delay.as_ref().map(|d| (d.duration.clone(), percent("delay", d.percent)));
    let abort = raw.abort.as_ref().map(|a| (a.status, percent("abort", a.percent)));
    let delay = delay.and_then(|(d, p)| match d.as_deref().map(parse_duration) {
        Some(Some(d)) if !d.is_zero() && d <= MAX_DELAY => Some((d, p)),
        _ => {
            c.err(format!("{path}.delay.duration"), "missing or invalid (above zero, at most 1h, such as \"2s\")");
            None
        }
    });
    let abort = abort.and_then(|(s, p)| match s {
        Some(s) if (200..=599).contains(&s) => Some((s, p)),
        _ => {
            c.err(format!("{path}.abort.status"), "missing or not a final status code (200-599)");
            None
        }
    });
    if raw.delay.is_none() && raw.abort.is_none() {
        c.err(path, "needs a delay, an abort, or both");
    }
    let header = raw.header.as_ref().map(|h| {
        if !crate::policy::is_token(h) {
            c.err(format!("{path}.header"), format!("{h:?} is not a field name"));
        }
        h.to_ascii_lowercase()
    });
    Fault { delay, abort, header }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(keys: &str) -> Result<crate::Route, String> {
        crate::testing::route(
            &["api"],
            &format!(
                "upstream = \"api\"
{keys}"
            ),
        )
    }

    #[test]
    fn faults_parse() {
        let f = route(
            "fault = { delay = { duration = \"250ms\", percent = 5 }, abort = { status = 503 }, header = \"X-Chaos\" }",
        )
        .unwrap()
        .fault
        .unwrap();
        assert_eq!(f.delay, Some((Duration::from_millis(250), 5.0)));
        assert_eq!(f.abort, Some((503, 100.0)));
        assert_eq!(f.header.as_deref(), Some("x-chaos"));
    }

    #[test]
    fn fault_errors_name_their_keys() {
        for (keys, path) in [
            ("fault = {}", "routes[0].fault"),
            ("fault = { abort = { percent = 5 } }", "routes[0].fault.abort.status"),
            ("fault = { abort = { status = 99 } }", "routes[0].fault.abort.status"),
            ("fault = { abort = { status = 500, percent = 0 } }", "routes[0].fault.abort.percent"),
            ("fault = { delay = { duration = \"2h\" } }", "routes[0].fault.delay.duration"),
            ("fault = { delay = {} }", "routes[0].fault.delay.duration"),
            ("fault = { delay = { duration = \"1s\", percent = 200 } }", "routes[0].fault.delay.percent"),
            ("fault = { abort = { status = 500 }, header = \"a b\" }", "routes[0].fault.header"),
            ("fault = { abort = { status = 500, code = 1 } }", "routes[0].fault.abort.code"),
        ] {
            let err = route(keys).unwrap_err();
            assert!(err.contains(path), "{keys}: {err}");
        }
    }
}
