//! The response cache (RFC 9111): one store for all workers, split into
//! [`config::CACHE_SHARDS`] shards, each a map in recency order behind its own mutex and
//! evicted by bytes. A lookup holds a shard's lock for a hash lookup and a reference-count
//! increment; the bytes are written to the client after the lock is released.
//!
//! Decided: shared rather than per worker, unlike the rest of coregate's state. A cache per
//! core would fetch each response once per worker, hold as many copies, and could not make
//! a PUT or DELETE on one worker invalidate what another serves (RFC 9111 4.4); nginx shares
//! its cache between workers for the same reasons. Only routes with `cache` touch it.
//!
//! Left to others: what may be stored and served ([`rules`]), answering ([`serve`]),
//! filling from upstream responses ([`fill`]), refreshing in the background ([`refresh`]).

pub(crate) mod fill;
mod refresh;
pub(crate) mod rules;
pub(crate) mod serve;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use lru::LruCache;

/// Variants kept per target (Vary and consumers); the oldest goes first.
const MAX_VARIANTS: usize = 8;

/// Bookkeeping counted per entry besides its bytes (the map's node, the `Stored`, the key).
const ENTRY_OVERHEAD: usize = 160;

/// One stored response.
#[derive(Debug)]
pub(crate) struct Stored {
    /// Status line and end-to-end fields, without framing, hop-by-hop fields and Age;
    /// parsed once when stored (parsing it per hit cost about 1,000 instructions, callgrind).
    pub head: proto_http::ResponseHead,
    pub body: Bytes,
    /// The response's Vary names ([`rules::vary_names`]).
    pub vary: Box<[u8]>,
    /// The request values that selected it ([`rules::selecting`]).
    pub selecting: Box<[u8]>,
    pub stored_at: Instant,
    pub freshness: rules::Freshness,
}

impl Stored {
    fn size(&self, key: &[u8]) -> usize {
        self.head.bytes.len()
            + self.head.meta.headers.len() * 16
            + self.body.len()
            + self.vary.len()
            + self.selecting.len()
            + key.len()
            + ENTRY_OVERHEAD
    }

    /// Current age in seconds (RFC 9111 4.2.3).
    pub(crate) fn age(&self, now: Instant) -> u64 {
        self.freshness.initial_age.saturating_add(now.saturating_duration_since(self.stored_at).as_secs())
    }
}

struct Shard {
    map: LruCache<Box<[u8]>, Vec<Arc<Stored>>, ahash::RandomState>,
    bytes: usize,
    /// Targets being fetched by a request that others wait for (`lock`), since when.
    filling: std::collections::HashMap<Box<[u8]>, Instant, ahash::RandomState>,
}

/// Whether a request fetches a target itself or waits for another's fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// It fetches it; others wait until it calls [`Cache::release`].
    Mine,
    /// Another request fetches it, since less than the lock's time.
    Wait,
}

/// The store shared by the workers.
pub(crate) struct Cache {
    shards: Box<[Mutex<Shard>]>,
    /// Bytes one shard may hold.
    budget: usize,
    hasher: ahash::RandomState,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("budget", &self.budget).finish_non_exhaustive()
    }
}

impl Cache {
    /// The bytes it holds at most, as `cache.max_bytes` set them.
    pub(crate) fn max_bytes(&self) -> usize {
        self.budget * config::CACHE_SHARDS
    }

    pub(crate) fn new(max_bytes: usize) -> Cache {
        let shards = (0..config::CACHE_SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: LruCache::unbounded_with_hasher(ahash::RandomState::new()),
                    bytes: 0,
                    filling: Default::default(),
                })
            })
            .collect();
        Cache { shards, budget: max_bytes / config::CACHE_SHARDS, hasher: ahash::RandomState::new() }
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(key) as usize % self.shards.len();
        // A worker that panicked while holding the lock left a consistent map: every
        // mutation below completes before anything that can panic.
        self.shards[i].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The variant of `key` that `selects` accepts (marked as recently used), if any.
    pub(crate) fn get(&self, key: &[u8], mut selects: impl FnMut(&Stored) -> bool) -> Option<Arc<Stored>> {
        self.shard(key).map.get(key)?.iter().rev().find(|s| selects(s)).cloned()
    }

    /// Stores `s` under `key`, replacing the variant with the same selecting values, then
    /// evicts the least recently used targets until the shard is within its budget.
    pub(crate) fn put(&self, key: &[u8], s: Stored) {
        self.put_shared(key, Arc::new(s));
    }

    /// As [`Cache::put`], for a response the caller also serves.
    pub(crate) fn put_shared(&self, key: &[u8], s: Arc<Stored>) {
        let mut shard = self.shard(key);
        let shard = &mut *shard;
        let added = s.size(key);
        if added > self.budget {
            return;
        }
        let mut freed = 0;
        let variants = shard.map.get_or_insert_mut(key.into(), Vec::new);
        variants.retain(|v| {
            let same = v.vary == s.vary && v.selecting == s.selecting;
            if same {
                freed += v.size(key);
            }
            !same
        });
        if variants.len() == MAX_VARIANTS {
            freed += variants.remove(0).size(key);
        }
        variants.push(s);
        shard.bytes = shard.bytes + added - freed;
        while shard.bytes > self.budget {
            // The target just stored is the most recent: it goes last, and only its older
            // variants can be evicted from it.
            match shard.map.peek_lru() {
                Some((k, _)) if &**k != key => {
                    let (k, gone) = shard.map.pop_lru().expect("peeked");
                    shard.bytes -= gone.iter().map(|v| v.size(&k)).sum::<usize>();
                }
                _ => {
                    let variants = shard.map.get_mut(key).expect("just stored");
                    shard.bytes -= variants.remove(0).size(key);
                }
            }
        }
    }

    /// Claims the fetch of `key` at `now`, unless another request claimed it less than
    /// `lock` ago (an older claim is taken over: its request may be stuck).
    pub(crate) fn claim(&self, key: &[u8], now: Instant, lock: std::time::Duration) -> Claim {
        let mut shard = self.shard(key);
        match shard.filling.get_mut(key) {
            Some(since) if now.saturating_duration_since(*since) < lock => Claim::Wait,
            Some(since) => {
                *since = now;
                Claim::Mine
            }
            None => {
                shard.filling.insert(key.into(), now);
                Claim::Mine
            }
        }
    }

    /// Ends a claim: waiting requests look the target up again.
    pub(crate) fn release(&self, key: &[u8]) {
        self.shard(key).filling.remove(key);
    }

    /// Drops every variant stored under `key` (RFC 9111 4.4); true when there were some.
    pub(crate) fn invalidate(&self, key: &[u8]) -> bool {
        let mut shard = self.shard(key);
        let Some(gone) = shard.map.pop(key) else { return false };
        shard.bytes -= gone.iter().map(|v| v.size(key)).sum::<usize>();
        true
    }

    /// Drops everything (the admin's `DELETE /cache`); returns how many targets were held.
    pub(crate) fn clear(&self) -> usize {
        self.shards.iter().fold(0, |n, s| {
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            let held = s.map.len();
            s.map.clear();
            s.bytes = 0;
            n + held
        })
    }

    /// (targets, bytes) held now, for the metrics.
    pub(crate) fn usage(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(n, b), s| {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            (n + s.map.len(), b + s.bytes)
        })
    }
}

/// The key of a target: the route's space (its fingerprint, [`crate::route::fingerprints`]:
/// a reload, which keeps the store, keeps an unchanged route's responses wherever the
/// route moved, and a changed route starts afresh, its old entries leaving by recency), the
/// host (lower case) and the request-target as the client sent it, query included.
pub(crate) fn key(out: &mut Vec<u8>, space: u64, host: Option<&[u8]>, target: &[u8]) {
    out.clear();
    out.reserve(9 + host.map_or(0, <[u8]>::len) + target.len());
    out.extend_from_slice(&space.to_le_bytes());
    out.extend(host.unwrap_or_default().iter().map(u8::to_ascii_lowercase));
    out.push(0);
    out.extend_from_slice(target);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(body: usize, selecting: &[u8]) -> Stored {
        Stored {
            head: proto_http::ResponseHead::new(
                Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n"),
                proto_http::parse_response(b"HTTP/1.1 200 OK\r\n\r\n", &Default::default(), false).unwrap().unwrap(),
            ),
            body: Bytes::from(vec![b'x'; body]),
            vary: Box::default(),
            selecting: selecting.into(),
            stored_at: Instant::now(),
            freshness: rules::Freshness { lifetime: 60, initial_age: 0 },
        }
    }

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut k = Vec::new();
                key(&mut k, 0, Some(b"H"), format!("/{i}").as_bytes());
                k
            })
            .collect()
    }

    #[test]
    fn stores_replaces_and_invalidates() {
        let c = Cache::new(1 << 20);
        let k = &keys(1)[0];
        assert!(c.get(k, |_| true).is_none());
        c.put(k, stored(10, b"a"));
        c.put(k, stored(20, b"b"));
        c.put(k, stored(30, b"a"));
        assert_eq!(c.get(k, |s| &*s.selecting == b"a").unwrap().body.len(), 30);
        assert_eq!(c.get(k, |s| &*s.selecting == b"b").unwrap().body.len(), 20);
        let (targets, bytes) = c.usage();
        assert_eq!(targets, 1);
        assert_eq!(bytes, stored(30, b"a").size(k) + stored(20, b"b").size(k));
        c.invalidate(k);
        assert!(c.get(k, |_| true).is_none());
        assert_eq!(c.usage(), (0, 0));
        for k in keys(5) {
            c.put(&k, stored(1, b""));
        }
        assert_eq!(c.clear(), 5);
        assert_eq!(c.usage(), (0, 0));
    }

    #[test]
    fn one_claim_per_target_until_released_or_too_old() {
        let c = Cache::new(1 << 20);
        let (ks, t0, lock) = (keys(2), Instant::now(), std::time::Duration::from_secs(5));
        assert_eq!(c.claim(&ks[0], t0, lock), Claim::Mine);
        assert_eq!(c.claim(&ks[0], t0 + lock / 2, lock), Claim::Wait);
        assert_eq!(c.claim(&ks[1], t0, lock), Claim::Mine, "another target");
        c.release(&ks[0]);
        assert_eq!(c.claim(&ks[0], t0, lock), Claim::Mine);
        assert_eq!(c.claim(&ks[0], t0 + lock, lock), Claim::Mine, "taken over");
        assert_eq!(c.claim(&ks[0], t0 + lock, lock), Claim::Wait);
    }

    #[test]
    fn evicts_least_recently_used_within_the_budget() {
        let c = Cache::new(1 << 20);
        let budget = c.budget;
        let ks = keys(2000);
        for k in &ks {
            c.put(k, stored(1000, b""));
            // The first target stays in use, so it is never the least recent.
            assert!(c.get(&ks[0], |_| true).is_some());
        }
        let (targets, bytes) = c.usage();
        assert!(bytes <= budget * config::CACHE_SHARDS, "{bytes}");
        assert!(targets < 2000 && targets > 500, "{targets}");
        assert!(c.get(&ks[1], |_| true).is_none(), "an early target is evicted");
        assert!(c.get(&ks[1999], |_| true).is_some());
        // Variants of one target are capped, oldest out first.
        for i in 0..MAX_VARIANTS + 2 {
            c.put(&ks[0], stored(1, &[i as u8]));
        }
        assert!(c.get(&ks[0], |s| *s.selecting == [0]).is_none());
        assert!(c.get(&ks[0], |s| *s.selecting == [MAX_VARIANTS as u8 + 1]).is_some());
        // Larger than a shard: not stored.
        c.put(&ks[5], stored(budget, b""));
        assert!(c.get(&ks[5], |_| true).is_none());
    }
}
