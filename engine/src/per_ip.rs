//! `server.max_connections_per_ip`: client connections open at once from one address,
//! counted over every worker (nginx's `limit_conn` keyed on the address, HAProxy's
//! `sc_conn_cur`, Envoy's per-client connection limit). One of the named cross-core
//! exceptions: a table of shards behind locks, touched when a connection starts and ends,
//! never per request. Which address counts, and what happens to a connection over the
//! limit, is `conn`'s.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Shards of the table: workers taking connections from different addresses rarely wait on
/// each other's lock.
const SHARDS: usize = 64;

/// Open connections by client address; an address with none has no entry.
pub(crate) struct PerIp {
    shards: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
    hasher: ahash::RandomState,
}

/// One connection's place in the count, given back when it is dropped.
pub(crate) struct Slot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    pub(crate) fn new() -> Arc<PerIp> {
        Arc::new(PerIp {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            hasher: ahash::RandomState::new(),
        })
    }

    fn shard(&self, ip: &IpAddr) -> MutexGuard<'_, HashMap<IpAddr, u32>> {
        let i = self.hasher.hash_one(ip) as usize % SHARDS;
        // A panic while holding a shard leaves a count, never a broken map: go on with it.
        self.shards[i].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for one more connection from `ip`; `None` when it has `limit` open already.
    pub(crate) fn enter(self: &Arc<Self>, ip: IpAddr, limit: u32) -> Option<Slot> {
        let mut shard = self.shard(&ip);
        let open = shard.entry(ip).or_insert(0);
        if *open >= limit {
            return None;
        }
        *open += 1;
        Some(Slot { table: self.clone(), ip })
    }

    /// Connections open from `ip`.
    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> u32 {
        self.shard(&ip).get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Entry::Occupied(mut e) = self.table.shard(&self.ip).entry(self.ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_address_up_to_its_limit_and_forgets_it_at_zero() {
        let t = PerIp::new();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "2001:db8::1".parse().unwrap());
        let first = t.enter(a, 2).unwrap();
        let second = t.enter(a, 2).unwrap();
        assert!(t.enter(a, 2).is_none(), "a third connection from a");
        let other = t.enter(b, 2).unwrap();
        assert_eq!((t.open(a), t.open(b)), (2, 1));
        drop(first);
        let third = t.enter(a, 2).expect("a slot freed by a closed connection");
        drop((second, third, other));
        assert_eq!((t.open(a), t.open(b)), (0, 0));
        assert!(
            t.shards.iter().all(|s| s.lock().unwrap().is_empty()),
            "no entry left for addresses without connections"
        );
    }
}
