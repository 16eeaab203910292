//! Exact shares of a stream of requests, for features configured by percent (mirroring,
//! fault injection): every worker takes exactly that share of its requests, spread evenly
//! (25% takes the 4th, 8th, ... request), without randomness, so that small shares and tests
//! are exact. Which requests are offered is the caller's.

use std::cell::Cell;

/// One share's running balance, in percent.
#[derive(Default)]
pub(crate) struct Share(Cell<f64>);

impl Share {
    /// Whether this request is in the share of `percent` (0 < percent ≤ 100).
    pub(crate) fn take(&self, percent: f64) -> bool {
        let owed = self.0.get() + percent;
        let taken = owed >= 100.0;
        self.0.set(if taken { owed - 100.0 } else { owed });
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_exact_and_even() {
        let s = Share::default();
        let taken: Vec<usize> = (1..=12).filter(|_| s.take(25.0)).collect();
        assert_eq!(taken, [4, 8, 12]);
        let s = Share::default();
        assert_eq!((0..1000).filter(|_| s.take(2.5)).count(), 25);
        let s = Share::default();
        assert!((0..5).all(|_| s.take(100.0)));
    }
}
