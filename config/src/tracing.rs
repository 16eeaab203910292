//! `[tracing]`: OpenTelemetry traces. Each request gets a span of coregate's own, in the
//! trace its client's `traceparent` names or in a new one, and that span's `traceparent`
//! goes upstream (W3C Trace Context); sampled spans are sent to an OTLP/HTTP collector.
//! Making ids, sampling and exporting are the engine's (`engine/src/tracing.rs`).

use std::net::SocketAddr;

use serde::Deserialize;

use crate::validate::Checker;

/// `[tracing]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTracing {
    /// The collector's OTLP/HTTP traces URL, `http://IP:PORT/PATH`.
    pub endpoint: Option<String>,
    pub service_name: Option<String>,
    /// Share of new traces sampled, 0-100 (default 100).
    pub sample_percent: Option<f64>,
}

/// Where spans go and which are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// The collector (OTLP over HTTP/1.1, JSON encoding; plain HTTP, an IP address).
    pub collector: SocketAddr,
    /// Its traces path (`/v1/traces` unless the URL names another).
    pub path: String,
    /// `service.name` of the spans' resource.
    pub service_name: String,
    /// Share of new traces (requests without a valid `traceparent`) sampled, in percent; a
    /// request with one follows its `sampled` flag (a parent-based sampler).
    pub sample_percent: f64,
}

pub(crate) fn build(c: &mut Checker, raw: &RawTracing) -> Option<Tracing> {
    let Some(endpoint) = raw.endpoint.as_deref() else {
        c.err(
            "tracing.endpoint",
            "missing: the collector's OTLP/HTTP URL, such as \"http://127.0.0.1:4318/v1/traces\"",
        );
        return None;
    };
    let parsed = endpoint.strip_prefix("http://").and_then(|rest| {
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/v1/traces" } else { path };
        let addr = authority.parse::<SocketAddr>().ok()?;
        path.bytes().all(|b| b.is_ascii_graphic()).then(|| (addr, path.to_string()))
    });
    let Some((collector, path)) = parsed else {
        c.err(
            "tracing.endpoint",
            format!("{endpoint:?} is not http://IP:PORT/PATH (plain HTTP to an address, such as \"http://127.0.0.1:4318/v1/traces\")"),
        );
        return None;
    };
    let service_name = raw.service_name.clone().unwrap_or_else(|| "coregate".into());
    if service_name.is_empty() || service_name.chars().any(char::is_control) {
        c.err("tracing.service_name", "a name without control characters");
    }
    let sample_percent = raw.sample_percent.unwrap_or(100.0);
    if !(0.0..=100.0).contains(&sample_percent) {
        c.err("tracing.sample_percent", format!("{sample_percent} is not a share from 0 to 100"));
    }
    Some(Tracing { collector, path, service_name, sample_percent })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracing(keys: &str) -> Result<Option<Tracing>, String> {
        crate::testing::config(&["api"], &format!("upstream = \"api\"\n[tracing]\n{keys}")).map(|c| c.tracing)
    }

    #[test]
    fn tracing_parses_and_refuses() {
        let t = tracing("endpoint = \"http://127.0.0.1:4318\"").unwrap().unwrap();
        assert_eq!((t.collector.port(), t.path.as_str(), t.service_name.as_str()), (4318, "/v1/traces", "coregate"));
        assert_eq!(t.sample_percent, 100.0);
        let t = tracing("endpoint = \"http://[::1]:9/otlp/traces\"\nservice_name = \"edge\"\nsample_percent = 5")
            .unwrap()
            .unwrap();
        assert_eq!((t.path.as_str(), t.service_name.as_str(), t.sample_percent), ("/otlp/traces", "edge", 5.0));
        for (keys, needle) in [
            ("service_name = \"x\"", "tracing.endpoint: missing"),
            ("endpoint = \"https://127.0.0.1:4318\"", "tracing.endpoint"),
            ("endpoint = \"http://collector:4318/v1/traces\"", "tracing.endpoint"),
            ("endpoint = \"http://127.0.0.1:4318\"\nsample_percent = 101", "tracing.sample_percent"),
            ("endpoint = \"http://127.0.0.1:4318\"\nservice_name = \"\"", "tracing.service_name"),
            ("endpoint = \"http://127.0.0.1:4318\"\nexporter = \"otlp\"", "tracing.exporter"),
        ] {
            let err = tracing(keys).unwrap_err();
            assert!(err.contains(needle), "{keys}: {err}");
        }
    }
}
