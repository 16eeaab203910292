//! The per-core route table: host match (exact, then `*.suffix`, then any), then the
//! longest path prefix, ties broken by order in the file. Compiled once per worker.
//!
//! Path prefixes match whole segments: `/api` matches `/api` and `/api/x`, not `/apix`;
//! a prefix ending in `/` matches everything below it. Matching is on the raw path
//! (no percent-decoding or dot-segment removal).

use config::{HostMatch, Route};

#[derive(Debug, Clone)]
struct Entry {
    host: HostMatch,
    path: Vec<u8>,
    upstream: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct RouteTable {
    /// Sorted by precedence: the first match wins.
    entries: Vec<Entry>,
}

impl RouteTable {
    pub(crate) fn new(routes: &[Route]) -> Self {
        let mut entries: Vec<(usize, Entry)> = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (i, Entry { host: r.host.clone(), path: r.path.as_bytes().to_vec(), upstream: r.upstream }))
            .collect();
        entries.sort_by_key(|(i, e)| {
            let (class, host_len) = match &e.host {
                HostMatch::Exact(h) => (0, h.len()),
                HostMatch::Suffix(s) => (1, s.len()),
                HostMatch::Any => (2, 0),
            };
            (class, std::cmp::Reverse(host_len), std::cmp::Reverse(e.path.len()), *i)
        });
        Self { entries: entries.into_iter().map(|(_, e)| e).collect() }
    }

    /// The upstream index for a request, or `None` (404).
    pub(crate) fn find(&self, host: Option<&[u8]>, path: &[u8]) -> Option<usize> {
        let host = host.map(strip_port);
        self.entries.iter().find(|e| host_matches(&e.host, host) && prefix_matches(&e.path, path)).map(|e| e.upstream)
    }
}

fn strip_port(h: &[u8]) -> &[u8] {
    let h = match h.iter().rposition(|&b| b == b':') {
        Some(i) if !h[i..].contains(&b']') => &h[..i],
        _ => h,
    };
    h.strip_suffix(b".").unwrap_or(h)
}

fn host_matches(m: &HostMatch, host: Option<&[u8]>) -> bool {
    match (m, host) {
        (HostMatch::Any, _) => true,
        (HostMatch::Exact(want), Some(h)) => h.eq_ignore_ascii_case(want.as_bytes()),
        (HostMatch::Suffix(sfx), Some(h)) => {
            h.len() > sfx.len() && h[h.len() - sfx.len()..].eq_ignore_ascii_case(sfx.as_bytes())
        }
        _ => false,
    }
}

fn prefix_matches(prefix: &[u8], path: &[u8]) -> bool {
    path.starts_with(prefix) && (path.len() == prefix.len() || prefix.ends_with(b"/") || path[prefix.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: HostMatch, path: &str, upstream: usize) -> Route {
        Route { host, path: path.into(), upstream }
    }

    #[test]
    fn precedence() {
        let t = RouteTable::new(&[
            route(HostMatch::Any, "/", 0),
            route(HostMatch::Any, "/api", 1),
            route(HostMatch::Any, "/api/v2/", 2),
            route(HostMatch::Exact("a.example.com".into()), "/", 3),
            route(HostMatch::Suffix(".example.com".into()), "/", 4),
            route(HostMatch::Any, "/api", 5),
        ]);
        let cases: &[(Option<&str>, &str, Option<usize>)] = &[
            (None, "/", Some(0)),
            (None, "/apix", Some(0)),
            (None, "/api", Some(1)),
            (None, "/api/x", Some(1)),
            (None, "/api/v2/x", Some(2)),
            (None, "/api/v2", Some(1)),
            (Some("A.Example.com:8080"), "/api", Some(3)),
            (Some("b.example.com."), "/x", Some(4)),
            (Some("example.com"), "/x", Some(0)),
            (Some("[::1]:80"), "/x", Some(0)),
        ];
        for (host, path, want) in cases {
            assert_eq!(t.find(host.map(str::as_bytes), path.as_bytes()), *want, "{host:?} {path}");
        }
        let t = RouteTable::new(&[route(HostMatch::Any, "/only", 0)]);
        assert_eq!(t.find(None, b"/other"), None);
    }
}
