//! Rate limits: token buckets that live on each core but keep one global promise.
//!
//! # How cores share a budget
//!
//! The authority for every (limit, key) bucket is the *bank*, a thread of its own that
//! refills buckets at their rate up to their burst. Workers never touch it per request:
//! each worker keeps a local allowance per (limit, key) and spends it with plain integer
//! arithmetic. When an allowance falls to half a *lease* (a tenth of a second of the
//! limit's rate, at least 1 token), the worker asks the bank for another lease over a
//! crossbeam channel; grants come back on the worker's own channel and are collected by a
//! short poll loop that runs only while a request is outstanding. Leases that sit unused
//! for a second are returned to the bank, so tokens follow the traffic when it moves
//! between cores.
//!
//! While a lease is on its way a worker may spend up to one lease on credit (a new key
//! starts that way), counting the credit it reported with a lease still in flight; the debt
//! goes to the bank with the next lease request and is debited there. A request that finds the credit spent and a lease still in flight waits for it
//! (at most 20 ms) rather than being refused while the bucket can still afford it. The bank answers whether it could fill the lease in full; once it could not, the
//! worker stops spending on credit until a full grant comes back. Every admitted request is
//! therefore debited from the one global bucket: the rate holds over time, and the overshoot
//! of a drained bucket is at most one lease per worker (a tenth of a second of the rate, or
//! half the burst, shared by the workers).
//!
//! A reload starts a new bank with the old one's balances for the limits that did not change
//! ([`carry`]): a limit is known by a fingerprint of its owner (the route's, or the
//! consumer's name) and of its settings, not by its place in the file. The old bank goes on
//! serving the old workers while they drain; what they spend then is not seen by the new one.
//!
//! Memory is bounded: local entries idle for a second are dropped (after returning their
//! tokens; one the bank found dry only once a lease could have refilled), at most [`MAX_KEYS_PER_CORE`] keys are held per core (beyond that new keys are
//! refused with 429 until entries expire), and the bank drops full buckets idle for a minute.

use ahash::AHashMap as HashMap;
use std::time::{Duration, Instant};

use config::RateLimit;
use crossbeam_channel::{Receiver, Sender};

/// Distinct (limit, key) entries one core keeps.
pub(crate) const MAX_KEYS_PER_CORE: usize = 100_000;
/// Local entries unused for this long give their tokens back and are dropped.
const LOCAL_IDLE: Duration = Duration::from_secs(1);
/// Bank entries that are full and unused for this long are dropped.
const BANK_IDLE: Duration = Duration::from_secs(60);

/// Worker to bank.
#[derive(Debug)]
pub(crate) enum ToBank {
    /// Asks for up to `want` tokens; `debt` tokens were already spent without a lease.
    Lease { worker: usize, key: Box<[u8]>, want: u32, debt: u32 },
    /// Gives back unused tokens.
    Return { key: Box<[u8]>, tokens: u32 },
}

/// Bank to worker.
#[derive(Debug)]
pub(crate) struct Grant {
    pub key: Box<[u8]>,
    pub tokens: u32,
    /// The lease was filled in full: the worker may keep spending on credit while its next
    /// lease is on the way. False once the bucket runs dry.
    pub solvent: bool,
}

/// Keys longer than this (header values can be kilobytes) are stored as their SHA-256
/// digest, so that 100,000 keys per core stay within a few megabytes.
const MAX_KEY_BYTES: usize = 64;

/// The key bytes of a bucket: the limit's global id, then the key's own bytes (or their
/// digest when long).
pub(crate) fn bucket_key(out: &mut Vec<u8>, limit_id: u32, key: &[u8]) {
    out.clear();
    out.extend_from_slice(&limit_id.to_le_bytes());
    if key.len() > MAX_KEY_BYTES {
        use sha2::{Digest, Sha256};
        out.extend_from_slice(&Sha256::digest(key));
    } else {
        out.extend_from_slice(key);
    }
}

/// Every limit in the configuration, by global id (routes in order, limits in order).
pub(crate) fn all_limits(cfg: &config::Config) -> Vec<RateLimit> {
    let routes = cfg.routes.iter().flat_map(|r| r.rate_limits.iter());
    routes.chain(cfg.consumers.iter().flat_map(|c| c.rate_limits.iter())).cloned().collect()
}

/// A fingerprint of each limit, in [`all_limits`]' order: its owner (the route's
/// fingerprint, or the consumer's name) and its settings. Equal across reloads for a limit
/// that did not change.
pub(crate) fn identities(cfg: &config::Config) -> Vec<u64> {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same value in every generation of this process.
    let id = |owner: &dyn Fn(&mut std::hash::DefaultHasher), l: &RateLimit| {
        let mut h = std::hash::DefaultHasher::new();
        owner(&mut h);
        format!("{l:?}").hash(&mut h);
        h.finish()
    };
    let routes = crate::route::fingerprints(cfg);
    let by_route = cfg
        .routes
        .iter()
        .zip(routes.iter())
        .flat_map(|(r, &fp)| r.rate_limits.iter().map(move |l| id(&|h| ("route", fp).hash(h), l)));
    let by_consumer = cfg
        .consumers
        .iter()
        .flat_map(|c| c.rate_limits.iter().map(move |l| id(&|h| ("consumer", c.name.as_str()).hash(h), l)));
    by_route.chain(by_consumer).collect()
}

/// The global id of each route's first limit, then of each consumer's, in
/// [`all_limits`]' order.
pub(crate) fn first_ids(cfg: &config::Config) -> (Vec<u32>, Vec<u32>) {
    let mut next = 0u32;
    let mut firsts = |counts: &mut dyn Iterator<Item = usize>| -> Vec<u32> {
        counts
            .map(|n| {
                let first = next;
                next += n as u32;
                first
            })
            .collect()
    };
    let routes = firsts(&mut cfg.routes.iter().map(|r| r.rate_limits.len()));
    let consumers = firsts(&mut cfg.consumers.iter().map(|c| c.rate_limits.len()));
    (routes, consumers)
}

fn limit_of<'a>(limits: &'a [RateLimit], key: &[u8]) -> Option<&'a RateLimit> {
    let id = u32::from_le_bytes(key.get(..4)?.try_into().ok()?);
    limits.get(id as usize)
}

/// Tokens per lease for a limit: a tenth of a second of its rate, or half its burst,
/// shared by `workers`. The same number is what a worker may spend on credit while a lease
/// is in flight, so a burst is not refused for want of a round trip to the bank.
fn lease_size(l: &RateLimit, workers: usize) -> u32 {
    let per_worker = (l.rate / 10.0).max(f64::from(l.burst) / 2.0) / workers as f64;
    (per_worker.ceil() as u32).clamp(1, l.burst.max(1))
}

struct Local {
    tokens: u32,
    pending: bool,
    /// Tokens spent on credit, not yet reported to the bank.
    debt: u32,
    /// Tokens spent on credit and reported with the lease in flight, not yet debited as far
    /// as this worker knows: they count against the credit allowance until the grant comes
    /// back. Without this, sending a lease reset the allowance, and a worker could spend a
    /// second lease of credit while the first was on its way (10 admitted for a burst of 5,
    /// lease 3, under load).
    credit_out: u32,
    /// Whether spending on credit is allowed (the bank's last grant was full).
    credit_ok: bool,
    last_used: Instant,
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Decision {
    Allow,
    /// A lease is on its way; ask again shortly (nothing was taken).
    Wait,
    /// Refused.
    Deny,
}

/// One worker's side of every limit.
pub(crate) struct Buckets {
    worker: usize,
    workers: usize,
    limits: Vec<RateLimit>,
    local: HashMap<Box<[u8]>, Local>,
    to_bank: Sender<ToBank>,
    grants: Receiver<Grant>,
    /// Leases requested and not yet granted.
    pub(crate) outstanding: usize,
}

impl Buckets {
    pub(crate) fn new(
        worker: usize,
        workers: usize,
        limits: Vec<RateLimit>,
        to_bank: Sender<ToBank>,
        grants: Receiver<Grant>,
    ) -> Self {
        Self { worker, workers, limits, local: HashMap::new(), to_bank, grants, outstanding: 0 }
    }

    /// Takes one token of the bucket `key` (built by [`bucket_key`]).
    pub(crate) fn check(&mut self, key: &[u8], now: Instant) -> Decision {
        let Some(limit) = limit_of(&self.limits, key) else { return Decision::Allow };
        let lease = lease_size(limit, self.workers);
        if !self.local.contains_key(key) {
            if self.local.len() >= MAX_KEYS_PER_CORE {
                self.expire(now);
            }
            if self.local.len() >= MAX_KEYS_PER_CORE {
                return Decision::Deny;
            }
            self.local.insert(
                key.into(),
                Local { tokens: 0, pending: false, debt: 0, credit_out: 0, credit_ok: true, last_used: now },
            );
        }
        if self.local.get(key).is_some_and(|e| e.pending) {
            // A lease is on its way: take it if it has arrived (one channel poll per lease,
            // not per request).
            self.collect();
        }
        let e = self.local.get_mut(key).expect("present");
        e.last_used = now;
        let allowed = if e.tokens > 0 {
            e.tokens -= 1;
            true
        } else if e.credit_ok && e.debt + e.credit_out < lease {
            e.debt += 1;
            true
        } else if e.pending && e.credit_ok {
            // Credit is used up but the bank has not answered yet: the caller may wait for
            // the grant instead of refusing a request the bucket can still afford.
            return Decision::Wait;
        } else {
            false
        };
        if e.tokens <= lease / 2 && !e.pending {
            e.pending = true;
            let debt = std::mem::take(&mut e.debt);
            e.credit_out += debt;
            if self.to_bank.send(ToBank::Lease { worker: self.worker, key: key.into(), want: lease, debt }).is_ok() {
                self.outstanding += 1;
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::Deny
        }
    }

    /// Collects the grants that have arrived.
    pub(crate) fn collect(&mut self) {
        while let Ok(g) = self.grants.try_recv() {
            self.outstanding = self.outstanding.saturating_sub(1);
            match self.local.get_mut(&g.key) {
                Some(e) => {
                    e.tokens += g.tokens;
                    e.credit_ok = g.solvent;
                    e.pending = false;
                    e.credit_out = 0;
                }
                None if g.tokens > 0 => {
                    let _ = self.to_bank.send(ToBank::Return { key: g.key, tokens: g.tokens });
                }
                None => {}
            }
        }
    }

    /// Returns and drops local entries idle for a second. An entry the bank last found dry
    /// stays until the bank could have refilled a lease's worth: dropped sooner, the key's
    /// next request would start on a new entry's credit, and a client pausing a second at a
    /// time would get a lease more each time (seen as 9 admitted for a burst of 5 on a
    /// loaded machine).
    pub(crate) fn expire(&mut self, now: Instant) {
        let (to_bank, limits, workers) = (&self.to_bank, &self.limits, self.workers);
        self.local.retain(|key, e| {
            let hold = match limit_of(limits, key) {
                Some(l) if !e.credit_ok => LOCAL_IDLE
                    .max(Duration::from_secs_f64((f64::from(lease_size(l, workers)) / l.rate.max(1e-9)).min(3600.0))),
                _ => LOCAL_IDLE,
            };
            if e.pending || e.debt > 0 || now.saturating_duration_since(e.last_used) < hold {
                return true;
            }
            if e.tokens > 0 {
                let _ = to_bank.send(ToBank::Return { key: key.clone(), tokens: e.tokens });
            }
            false
        });
    }
}

/// One bucket's balance at the bank.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Global {
    tokens: f64,
    last: Instant,
}

/// A bank's balances, by bucket key. Behind a mutex, locked per message to the bank (leases
/// and returns, never per request), so that a reload can read them.
pub(crate) type Balances = std::sync::Arc<std::sync::Mutex<HashMap<Box<[u8]>, Global>>>;

/// The balances a new bank starts with: the old bank's `old` (whose limits had the
/// fingerprints `old_ids`) for each limit with the same fingerprint among `new_ids`, under
/// its new global id.
pub(crate) fn carry(old: &Balances, old_ids: &[u64], new_ids: &[u64]) -> HashMap<Box<[u8]>, Global> {
    let new_id: HashMap<u64, u32> = new_ids.iter().enumerate().map(|(i, &f)| (f, i as u32)).collect();
    let old = old.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = HashMap::with_capacity(old.len());
    for (key, g) in old.iter() {
        let Some(id) = key.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes) else { continue };
        let Some(&moved) = old_ids.get(id as usize).and_then(|f| new_id.get(f)) else { continue };
        let mut k = key.to_vec();
        k[..4].copy_from_slice(&moved.to_le_bytes());
        out.insert(k.into_boxed_slice(), *g);
    }
    out
}

/// The authority for every bucket (see the module docs).
pub(crate) struct Bank {
    limits: Vec<RateLimit>,
    buckets: Balances,
    last_sweep: Instant,
}

impl Bank {
    pub(crate) fn new(limits: Vec<RateLimit>, buckets: Balances) -> Self {
        Self { limits, buckets, last_sweep: Instant::now() }
    }

    /// Applies one message; a lease is answered on `grants[worker]`.
    fn handle(&mut self, msg: ToBank, now: Instant, grants: &[Sender<Grant>]) {
        let (key, add, lease) = match msg {
            ToBank::Lease { worker, key, want, debt } => (key, 0.0, Some((worker, want, debt))),
            ToBank::Return { key, tokens } => (key, f64::from(tokens), None),
        };
        let Some(limit) = limit_of(&self.limits, &key) else { return };
        let burst = f64::from(limit.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let g = buckets.entry(key.clone()).or_insert(Global { tokens: burst, last: now });
        let refilled = g.tokens + now.saturating_duration_since(g.last).as_secs_f64() * limit.rate;
        g.tokens = (refilled.min(burst) + add).min(burst);
        g.last = now;
        if let Some((worker, want, debt)) = lease {
            g.tokens -= f64::from(debt);
            let granted = (g.tokens.floor().max(0.0) as u32).min(want);
            g.tokens -= f64::from(granted);
            if let Some(tx) = grants.get(worker) {
                let _ = tx.send(Grant { key, tokens: granted, solvent: granted == want });
            }
        }
        if now.saturating_duration_since(self.last_sweep) > BANK_IDLE {
            self.last_sweep = now;
            let limits = &self.limits;
            buckets.retain(|k, g| {
                let idle = now.saturating_duration_since(g.last);
                let full =
                    limit_of(limits, k).is_none_or(|l| g.tokens + idle.as_secs_f64() * l.rate >= f64::from(l.burst));
                !(full && idle > BANK_IDLE)
            });
        }
    }

    /// Serves until every worker has dropped its sender.
    pub(crate) fn run(mut self, requests: Receiver<ToBank>, grants: Vec<Sender<Grant>>) {
        while let Ok(msg) = requests.recv() {
            self.handle(msg, Instant::now(), &grants);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rate: f64, burst: u32) -> RateLimit {
        RateLimit { rate, burst, key: config::LimitKey::Route }
    }

    #[test]
    fn lease_sizes() {
        assert_eq!(lease_size(&limit(100.0, 10), 2), 5);
        assert_eq!(lease_size(&limit(100.0, 100), 2), 25);
        assert_eq!(lease_size(&limit(1.0, 1), 4), 1);
        assert_eq!(lease_size(&limit(100_000.0, 50), 1), 50);
    }

    #[test]
    fn two_workers_share_one_burst() {
        // Burst 10, rate tiny: across both workers 10 pass, plus at most one lease of credit
        // each (3 tokens) spent before the bank said it ran dry.
        let limits = vec![limit(0.001, 10)];
        let (to_bank, from_workers) = crossbeam_channel::unbounded();
        let (g0, r0) = crossbeam_channel::unbounded();
        let (g1, r1) = crossbeam_channel::unbounded();
        let mut w =
            [Buckets::new(0, 2, limits.clone(), to_bank.clone(), r0), Buckets::new(1, 2, limits.clone(), to_bank, r1)];
        let mut key = Vec::new();
        bucket_key(&mut key, 0, b"");
        let now = Instant::now();
        let mut allowed = 0;
        let mut bank = Bank::new(limits.clone(), Balances::default());
        for round in 0..50 {
            for b in w.iter_mut() {
                if b.check(&key, now) == Decision::Allow {
                    allowed += 1;
                }
            }
            if round % 3 == 0 {
                for m in from_workers.try_iter() {
                    bank.handle(m, now, &[g0.clone(), g1.clone()]);
                }
                for b in w.iter_mut() {
                    b.collect();
                }
            }
        }
        assert!((10..=16).contains(&allowed), "allowed {allowed}");
    }

    #[test]
    fn a_pause_after_the_bucket_ran_dry_gives_no_new_credit() {
        // One worker, burst 4 (lease 2), a token per 100 s: drained, then idle for 2 s.
        let limits = vec![limit(0.01, 4)];
        let (to_bank, from_worker) = crossbeam_channel::unbounded();
        let (grants, r) = crossbeam_channel::unbounded();
        let mut b = Buckets::new(0, 1, limits.clone(), to_bank, r);
        let mut bank = Bank::new(limits, Balances::default());
        let mut key = Vec::new();
        bucket_key(&mut key, 0, b"k");
        let t0 = Instant::now();
        let mut admitted = |b: &mut Buckets, now: Instant| {
            let mut n = 0;
            for _ in 0..10 {
                match b.check(&key, now) {
                    Decision::Allow => n += 1,
                    Decision::Deny => {}
                    Decision::Wait => {}
                }
                for m in from_worker.try_iter() {
                    bank.handle(m, now, std::slice::from_ref(&grants));
                }
                b.collect();
            }
            n
        };
        let first = admitted(&mut b, t0);
        assert!((4..=6).contains(&first), "{first}");
        let later = t0 + Duration::from_secs(2);
        b.expire(later);
        assert_eq!(admitted(&mut b, later), 0, "no second lease of credit after the pause");
    }

    #[test]
    fn bucket_keys_are_prefixed_by_limit() {
        let mut k = Vec::new();
        bucket_key(&mut k, 3, b"10.0.0.1");
        assert_eq!(&k[..4], &3u32.to_le_bytes());
        assert_eq!(limit_of(&[limit(1.0, 1)], &k), None);
        bucket_key(&mut k, 0, &[b'x'; 10_000]);
        assert_eq!(k.len(), 4 + 32, "long keys are stored as digests");
    }

    #[test]
    fn balances_follow_their_limits_to_new_ids() {
        let old = Balances::default();
        let now = Instant::now();
        for (id, key, tokens) in [(0, &b"a"[..], 1.0), (1, b"b", 2.0), (2, b"c", 3.0)] {
            let mut k = Vec::new();
            bucket_key(&mut k, id, key);
            old.lock().unwrap().insert(k.into(), Global { tokens, last: now });
        }
        // Limit 0 (fingerprint 10) is gone, 1 (11) moved to id 0, 2 (12) to id 1.
        let carried = carry(&old, &[10, 11, 12], &[11, 12, 13]);
        let mut got: Vec<(u32, Vec<u8>, f64)> = carried
            .iter()
            .map(|(k, g)| (u32::from_le_bytes(k[..4].try_into().unwrap()), k[4..].to_vec(), g.tokens))
            .collect();
        got.sort_by_key(|(id, _, _)| *id);
        assert_eq!(got, [(0, b"b".to_vec(), 2.0), (1, b"c".to_vec(), 3.0)]);
    }
}
