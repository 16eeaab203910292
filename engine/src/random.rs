//! A worker's source of random numbers for what needs spread, not secrecy: retry jitter,
//! trace and span ids, request ids' per-worker part. xorshift64* seeded from std's
//! RandomState (seeded from the OS's randomness once per thread): no dependency, no
//! system call per number. Keys and passwords never come from here.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

/// One worker's generator (single-threaded: a `Cell`).
pub(crate) struct Rng(Cell<u64>);

impl Rng {
    pub(crate) fn new() -> Rng {
        Rng(Cell::new(seed() | 1))
    }

    /// The next number: xorshift64* (Vigna), never 0 in its state.
    pub(crate) fn next(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A random number from the OS's randomness, through std's RandomState.
pub(crate) fn seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn generators_differ_and_move() {
        let (a, b) = (super::Rng::new(), super::Rng::new());
        let xs: Vec<u64> = (0..4).map(|_| a.next()).collect();
        assert!(xs.windows(2).all(|w| w[0] != w[1]));
        assert_ne!(xs[0], b.next(), "two generators, two seeds");
    }
}
