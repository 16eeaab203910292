//! The open-loop schedule: when each request *should* be sent, so that latency can be
//! measured from that moment and a stalled server shows up in the tail (no coordinated
//! omission, as in wrk2).
//!
//! With `C` connections in all and a total rate `R`, connection `i` sends at
//! `start + (i + k*C) / R` for k = 0, 1, 2, ...: the connections interleave evenly and
//! together send exactly `R` requests per second.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    /// Seconds between two sends of the whole set of connections (1 / R).
    interval: f64,
    index: u64,
    total: u64,
}

impl Schedule {
    /// Schedule of connection `index` out of `total`, for `rate` requests per second in all.
    pub fn new(start: Instant, index: usize, total: usize, rate: f64) -> Self {
        assert!(rate > 0.0 && total > 0 && index < total);
        Self { start, interval: 1.0 / rate, index: index as u64, total: total as u64 }
    }

    /// The intended send time of this connection's `k`-th request.
    pub fn at(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64((self.index + k * self.total) as f64 * self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_interleave_at_the_total_rate() {
        let start = Instant::now();
        let (rate, conns, secs) = (1000.0, 7usize, 3.0);
        let end = start + Duration::from_secs_f64(secs);
        let mut times = Vec::new();
        for i in 0..conns {
            let s = Schedule::new(start, i, conns, rate);
            let mut k = 0;
            while s.at(k) < end {
                times.push(s.at(k));
                k += 1;
            }
        }
        assert_eq!(times.len(), 3000);
        times.sort();
        for w in times.windows(2) {
            let gap = (w[1] - w[0]).as_secs_f64();
            assert!((gap - 0.001).abs() < 1e-6, "gap {gap}");
        }
    }

    #[test]
    fn no_drift_over_long_runs() {
        let start = Instant::now();
        let s = Schedule::new(start, 0, 64, 4000.0);
        // Request 1_000_000 of connection 0 is due at 1e6 * 64 / 4000 = 16000 s, exactly.
        assert_eq!(s.at(1_000_000) - start, Duration::from_secs(16_000));
    }
}
