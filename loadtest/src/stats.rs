//! What a run measured: latency in an HdrHistogram (microseconds), requests, errors by
//! kind and responses by status. Each thread keeps its own; they are merged at the end.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

/// Highest latency the histogram records: one hour, in microseconds.
const MAX_US: u64 = 3_600_000_000;

/// Errors by kind; serialised as the report's `errors_by_kind`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ErrorCounts {
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    pub timeout: u64,
    /// Responses with a status outside 2xx (each also counted per status in `Stats::status`).
    pub status: u64,
    /// Malformed responses.
    pub parse: u64,
}

impl ErrorCounts {
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout + self.status + self.parse
    }

    fn merge(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.read += o.read;
        self.write += o.write;
        self.timeout += o.timeout;
        self.status += o.status;
        self.parse += o.parse;
    }
}

#[derive(Debug, Clone)]
pub struct Stats {
    pub latency: Histogram<u64>,
    /// Responses received (any status).
    pub requests: u64,
    pub errors: ErrorCounts,
    pub status: BTreeMap<u16, u64>,
    /// Connections re-opened after the server closed one.
    pub reconnects: u64,
    /// TLS handshakes over the whole run (warm-up included), by what they negotiated
    /// (`Session::negotiated`), and how many of them resumed a session.
    pub handshakes: BTreeMap<String, u64>,
    pub resumed: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"),
            requests: 0,
            errors: ErrorCounts::default(),
            status: BTreeMap::new(),
            reconnects: 0,
            handshakes: BTreeMap::new(),
            resumed: 0,
        }
    }
}

impl Stats {
    /// Records one response with its latency in microseconds.
    pub fn response(&mut self, status: u16, latency_us: u64) {
        self.requests += 1;
        self.latency.saturating_record(latency_us.clamp(1, MAX_US));
        *self.status.entry(status).or_insert(0) += 1;
        if !(200..300).contains(&status) {
            self.errors.status += 1;
        }
    }

    /// Records one TLS handshake.
    pub fn handshake(&mut self, negotiated: String, resumed: bool) {
        *self.handshakes.entry(negotiated).or_insert(0) += 1;
        self.resumed += u64::from(resumed);
    }

    pub fn merge(&mut self, o: &Stats) {
        self.latency.add(&o.latency).expect("histograms with the same bounds");
        self.requests += o.requests;
        self.errors.merge(&o.errors);
        for (s, n) in &o.status {
            *self.status.entry(*s).or_insert(0) += n;
        }
        self.reconnects += o.reconnects;
        for (k, n) in &o.handshakes {
            *self.handshakes.entry(k.clone()).or_insert(0) += n;
        }
        self.resumed += o.resumed;
    }

    /// Latency at quantile `q` (0..=1) in microseconds.
    pub fn percentile(&self, q: f64) -> u64 {
        if self.latency.is_empty() {
            0
        } else {
            self.latency.value_at_quantile(q)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_everything() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        for i in 1..=100 {
            a.response(200, i);
        }
        for _ in 0..100 {
            b.response(503, 10_000);
        }
        b.errors.connect = 2;
        a.handshake("TLSv1.3 TLS13_AES_256_GCM_SHA384".into(), false);
        b.handshake("TLSv1.3 TLS13_AES_256_GCM_SHA384".into(), true);
        b.handshake("TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(), true);
        a.merge(&b);
        assert_eq!(a.handshakes["TLSv1.3 TLS13_AES_256_GCM_SHA384"], 2);
        assert_eq!(a.handshakes["TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"], 1);
        assert_eq!(a.resumed, 2);
        assert_eq!(a.requests, 200);
        assert_eq!(a.status[&200], 100);
        assert_eq!(a.status[&503], 100);
        assert_eq!(a.errors.status, 100);
        assert_eq!(a.errors.total(), 102);
        // Half the samples are 1..=100 µs, half 10 ms: p50 is in the first half, p99 in the second.
        assert!(a.percentile(0.5) <= 100);
        assert!((9_990..=10_010).contains(&a.percentile(0.99)));
        assert_eq!(a.latency.len(), 200);
    }

    #[test]
    fn empty_stats_report_zero() {
        assert_eq!(Stats::default().percentile(0.99), 0);
    }
}
