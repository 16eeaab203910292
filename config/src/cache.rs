//! The response cache's settings: `[cache]` (the memory every cached response shares) and a
//! route's `cache = { ttl, max_entry_bytes, lock, stale_if_error, stale_while_revalidate }`. What is stored, for how long and for whom
//! (RFC 9111) is the engine's.

use std::time::Duration;

use crate::raw::{RawCache, RawRouteCache};
use crate::validate::{parse_duration, Checker};
use crate::Route;

/// The cache is split into this many independently locked shards; an entry lives in one,
/// so it may take at most `max_bytes / SHARDS`.
pub const SHARDS: usize = 16;

/// `[cache]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cache {
    /// Bytes of heads and bodies held at most, over all routes and workers.
    pub max_bytes: usize,
}

/// A route's `cache`: its responses are stored and served by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCache {
    /// Freshness given to a storable response that states none (no max-age, s-maxage or
    /// Expires); without it such responses are not stored.
    pub ttl: Option<Duration>,
    /// Larger responses (head and body) are passed through, not stored.
    pub max_entry_bytes: usize,
    /// Collapsed misses: while one request of a target is being fetched, others of it wait
    /// up to this long for its response to be stored (nginx's `proxy_cache_lock`).
    pub lock: Option<Duration>,
    /// How long past its freshness a stored response still answers a request whose upstream
    /// fails (RFC 5861's stale-if-error, nginx's `proxy_cache_use_stale`).
    pub stale_if_error: Option<Duration>,
    /// How long past its freshness a stored response still answers at once while one
    /// request refreshes it in the background (RFC 5861's stale-while-revalidate, nginx's
    /// `proxy_cache_use_stale updating` with `proxy_cache_background_update`). A response's
    /// own `stale-while-revalidate` directive takes the place of this.
    pub stale_while_revalidate: Option<Duration>,
}

const DEFAULT_MAX_BYTES: usize = 64 << 20;
const DEFAULT_MAX_ENTRY: usize = 1 << 20;

pub(crate) fn build_cache(c: &mut Checker, raw: &RawCache) -> Cache {
    let max_bytes = match raw.max_bytes {
        None => DEFAULT_MAX_BYTES,
        Some(n) if (1 << 20..=1 << 40).contains(&n) => n as usize,
        Some(n) => {
            c.err("cache.max_bytes", format!("{n} is out of range 1048576 (1 MiB)..=1099511627776 (1 TiB)"));
            DEFAULT_MAX_BYTES
        }
    };
    Cache { max_bytes }
}

/// A route's cache settings; `max_entry_bytes` is checked against `[cache]` by
/// [`check_entries`] once both are known.
pub(crate) fn route_cache(c: &mut Checker, path: &str, raw: &RawRouteCache, proxied: bool) -> RouteCache {
    if !proxied {
        c.err(path, "cache needs an upstream: only proxied responses are cached");
    }
    let mut duration = |key: &str, raw: &Option<String>| {
        raw.as_ref().and_then(|t| match parse_duration(t) {
            Some(d) if !d.is_zero() => Some(d),
            _ => {
                c.err(format!("{path}.{key}"), format!("invalid duration {t:?} (greater than zero, such as \"30s\")"));
                None
            }
        })
    };
    let ttl = duration("ttl", &raw.ttl);
    let lock = duration("lock", &raw.lock);
    let stale_if_error = duration("stale_if_error", &raw.stale_if_error);
    let stale_while_revalidate = duration("stale_while_revalidate", &raw.stale_while_revalidate);
    let max_entry_bytes = match raw.max_entry_bytes {
        Some(0) => {
            c.err(format!("{path}.max_entry_bytes"), "must be greater than zero");
            0
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => 0,
    };
    RouteCache { ttl, max_entry_bytes, lock, stale_if_error, stale_while_revalidate }
}

/// Gives routes without `max_entry_bytes` the default (1 MiB, or one shard's share when
/// that is less) and refuses entries larger than a shard.
pub(crate) fn check_entries(c: &mut Checker, cache: &Cache, routes: &mut [Route]) {
    let shard = cache.max_bytes / SHARDS;
    for (i, r) in routes.iter_mut().enumerate() {
        let Some(rc) = &mut r.cache else { continue };
        if rc.max_entry_bytes == 0 {
            rc.max_entry_bytes = DEFAULT_MAX_ENTRY.min(shard);
        } else if rc.max_entry_bytes > shard {
            c.err(
                format!("routes[{i}].cache.max_entry_bytes"),
                format!(
                    "{} is more than cache.max_bytes / {SHARDS} = {shard} (the cache is split into {SHARDS} shards)",
                    rc.max_entry_bytes
                ),
            );
        }
    }
}
