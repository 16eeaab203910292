//! Results: the summary table a person reads, the live progress line, and the stable JSON
//! schema tools read.

use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::{ErrorCounts, Stats};

/// The JSON schema of one run (stable: tools depend on these names).
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub rps: f64,
    pub requests: u64,
    pub errors: u64,
    pub duration_s: f64,
    pub target_rate: Option<f64>,
    pub latency_us: Latency,
    pub errors_by_kind: ErrorCounts,
    pub status: std::collections::BTreeMap<String, u64>,
    pub reconnects: u64,
    /// Only for `https://` targets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

/// The TLS handshakes of a run (all of them, warm-up included): how many, how many
/// resumed a session, and what they negotiated ("TLSv1.3 TLS13_AES_256_GCM_SHA384": count).
#[derive(Debug, Clone, Serialize)]
pub struct Tls {
    pub handshakes: u64,
    pub resumed: u64,
    pub negotiated: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
    pub mean: f64,
}

impl RunReport {
    /// The report of `s`; `tls` for an `https://` target.
    pub fn new(s: &Stats, duration_s: f64, target_rate: Option<f64>, tls: bool) -> Self {
        let e = s.errors;
        Self {
            rps: if duration_s > 0.0 { s.requests as f64 / duration_s } else { 0.0 },
            requests: s.requests,
            errors: e.total(),
            duration_s,
            target_rate,
            latency_us: Latency {
                p50: s.percentile(0.5),
                p90: s.percentile(0.9),
                p99: s.percentile(0.99),
                p999: s.percentile(0.999),
                p9999: s.percentile(0.9999),
                max: s.latency.max(),
                mean: if s.latency.is_empty() { 0.0 } else { s.latency.mean() },
            },
            errors_by_kind: e,
            status: s.status.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            reconnects: s.reconnects,
            tls: tls.then(|| Tls {
                handshakes: s.handshakes.values().sum(),
                resumed: s.resumed,
                negotiated: s.handshakes.clone(),
            }),
        }
    }

    /// Whether an open-loop run kept within 5% of its target rate.
    pub fn kept_up(&self) -> bool {
        self.target_rate.is_none_or(|t| self.rps >= 0.95 * t)
    }
}

/// Formats microseconds for people: µs below 1 ms, ms below 10 s, else s.
pub fn human_us(us: u64) -> String {
    if us < 1000 {
        format!("{us}µs")
    } else if us < 10_000_000 {
        format!("{:.2}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// The end-of-run summary table.
pub fn summary(r: &RunReport) -> String {
    let mut s = String::new();
    let l = &r.latency_us;
    let _ = writeln!(s, "  requests   {:>12}   in {:.2}s", r.requests, r.duration_s);
    match r.target_rate {
        Some(t) => {
            let _ = writeln!(s, "  rate       {:>12.1} req/s   (asked {t:.1} req/s)", r.rps);
        }
        None => {
            let _ = writeln!(s, "  rate       {:>12.1} req/s", r.rps);
        }
    }
    let _ = writeln!(s, "  latency    p50 {}   p90 {}   p99 {}", human_us(l.p50), human_us(l.p90), human_us(l.p99));
    let _ = writeln!(
        s,
        "             p99.9 {}   p99.99 {}   max {}   mean {}",
        human_us(l.p999),
        human_us(l.p9999),
        human_us(l.max),
        human_us(l.mean as u64)
    );
    let e = &r.errors_by_kind;
    let _ = writeln!(
        s,
        "  errors     {:>12}   (connect {}, read {}, write {}, timeout {}, status {}, parse {})",
        r.errors, e.connect, e.read, e.write, e.timeout, e.status, e.parse
    );
    let statuses: Vec<String> = r.status.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let _ = writeln!(s, "  status     {}", if statuses.is_empty() { "-".to_string() } else { statuses.join(", ") });
    if let Some(t) = &r.tls {
        let what: Vec<String> = t.negotiated.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ =
            writeln!(s, "  tls        {:>12} handshakes, {} resumed   ({})", t.handshakes, t.resumed, what.join(", "));
    }
    if r.reconnects > 0 {
        let _ = writeln!(s, "  reconnects {:>12}", r.reconnects);
    }
    if !r.kept_up() {
        let _ = writeln!(s, "  WARNING: achieved rate is more than 5% below the asked rate: the load generator or the target could not keep up");
    }
    s
}

/// One live progress line from an interval of about one second.
pub fn progress_line(elapsed_s: f64, interval: &Stats, interval_s: f64, so_far: &Stats) -> String {
    format!(
        "[{elapsed_s:>5.1}s] {:>10.0} req/s  errors {:>6}  p99 so far {}",
        interval.requests as f64 / interval_s.max(1e-9),
        so_far.errors.total(),
        human_us(so_far.percentile(0.99))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_schema_has_the_documented_fields() {
        let mut s = Stats::default();
        s.response(200, 100);
        s.response(404, 300);
        s.handshake("TLSv1.3 TLS13_AES_128_GCM_SHA256".into(), true);
        let v = serde_json::to_value(RunReport::new(&s, 2.0, Some(1.0), true)).unwrap();
        for key in ["rps", "requests", "errors", "duration_s", "target_rate", "latency_us", "errors_by_kind", "status"]
        {
            assert!(v.get(key).is_some(), "{key}");
        }
        for key in ["p50", "p90", "p99", "p999", "p9999", "max", "mean"] {
            assert!(v["latency_us"].get(key).is_some(), "{key}");
        }
        assert_eq!(v["rps"], 1.0);
        assert_eq!(v["status"]["404"], 1);
        assert_eq!(v["errors"], 1);
        assert_eq!(v["tls"]["handshakes"], 1);
        assert_eq!(v["tls"]["resumed"], 1);
        assert_eq!(v["tls"]["negotiated"]["TLSv1.3 TLS13_AES_128_GCM_SHA256"], 1);
        let plain = serde_json::to_value(RunReport::new(&s, 2.0, None, false)).unwrap();
        assert!(plain.get("tls").is_none(), "no tls object for http:// targets");
    }
}
