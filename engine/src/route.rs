//! The per-core route table, compiled from config: hosts in a hash map (exact), then
//! wildcard suffixes (longest first), then routes without a host; within a host, exact
//! paths in a hash map, then path templates and regexes in file order, then path prefixes
//! looked up segment by segment from the longest, so matching costs O(path segments), not
//! O(routes) (templates and regexes are tried one by one: a host without them pays nothing
//! for them). Among routes with the same host and path key, the first in the file whose
//! conditions hold wins. Each worker's table holds its own copy of every path regex, so
//! that searches never share the regex's scratch space between cores.
//!
//! Path prefixes match whole segments: `/api` matches `/api` and `/api/x`, not `/apix`;
//! a prefix ending in `/` matches everything below it. Matching is on the path as the
//! connection left it: normalised there (`proto_http::path`) unless configured not to be.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use ahash::AHashMap as HashMap;
use regex::bytes::{CaptureLocations, Regex};

use config::{HostMatch, PathMatch, Route, MAX_CAPTURES};

/// Routes of one host class, by path key. Values are route indices in file order.
#[derive(Debug, Clone, Default)]
struct PathTable {
    exact: HashMap<Box<[u8]>, Vec<usize>>,
    /// Path templates and regexes, scanned in file order after exact paths and before
    /// prefixes.
    patterns: Vec<usize>,
    prefix: HashMap<Box<[u8]>, Vec<usize>>,
}

impl PathTable {
    fn insert(&mut self, path: &PathMatch, idx: usize) {
        let (map, key) = match path {
            PathMatch::Exact(p) => (&mut self.exact, p),
            PathMatch::Prefix(p) => (&mut self.prefix, p),
            PathMatch::Template(_) | PathMatch::Regex(_) => {
                self.patterns.push(idx);
                return;
            }
        };
        map.entry(key.as_bytes().into()).or_default().push(idx);
    }

    /// The first route (by precedence) whose path matches and that `accept` takes;
    /// `regexes` are the worker's copies of the routes' path regexes.
    fn find(
        &self,
        path: &[u8],
        routes: &[Route],
        regexes: &[Option<WorkerRegex>],
        accept: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let pick = |list: Option<&Vec<usize>>| list.and_then(|l| l.iter().copied().find(|&i| accept(i)));
        if let Some(i) = pick(self.exact.get(path)) {
            return Some(i);
        }
        let matches = |i: usize| match (&regexes[i], &routes[i].path) {
            (Some(re), _) => re.regex.is_match(path),
            (None, PathMatch::Template(segments)) => config::template_captures(segments, path, |_, _| {}),
            (None, _) => false,
        };
        if let Some(i) = self.patterns.iter().copied().find(|&i| matches(i) && accept(i)) {
            return Some(i);
        }
        if self.prefix.is_empty() {
            return None;
        }
        // Candidate keys from the longest: the whole path, then at every '/' from the end
        // the prefix with and without that slash.
        if let Some(i) = pick(self.prefix.get(path)) {
            return Some(i);
        }
        for (pos, _) in path.iter().enumerate().rev().filter(|(_, &b)| b == b'/') {
            if pos + 1 < path.len() {
                if let Some(i) = pick(self.prefix.get(&path[..=pos])) {
                    return Some(i);
                }
            }
            if pos > 0 {
                if let Some(i) = pick(self.prefix.get(&path[..pos])) {
                    return Some(i);
                }
            }
        }
        None
    }
}

/// Whether a request's method is one of `methods` (empty: any).
pub fn method_matches(methods: &[String], method: &[u8]) -> bool {
    methods.is_empty() || methods.iter().any(|m| m.as_bytes() == method)
}

#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    exact_hosts: HashMap<Box<[u8]>, PathTable>,
    /// Sorted by suffix length, longest first.
    suffix_hosts: Vec<(Box<[u8]>, PathTable)>,
    any_host: PathTable,
    /// This worker's copy of each route's path regex (by route index): a clone has scratch
    /// space of its own, where one shared by the workers would hand it out under a lock.
    regexes: Vec<Option<WorkerRegex>>,
}

/// A path regex as one worker searches with it: its own clone, and the group positions of
/// the last search, reused by every request (no allocation per match).
#[derive(Debug, Clone)]
struct WorkerRegex {
    regex: Regex,
    locations: RefCell<CaptureLocations>,
}

/// A request's path captures, in a fixed array (config allows at most [`MAX_CAPTURES`]):
/// read as a slice of (name, value). The slots start uninitialised, so that a route without
/// captures, the common case, does not write 512 bytes per request for them.
pub struct Captures<'a, 'p> {
    items: [MaybeUninit<(&'a str, &'p [u8])>; MAX_CAPTURES],
    len: usize,
}

impl<'a, 'p> Captures<'a, 'p> {
    pub fn none() -> Self {
        Captures { items: [const { MaybeUninit::uninit() }; MAX_CAPTURES], len: 0 }
    }

    fn push(&mut self, name: &'a str, value: &'p [u8]) {
        // The configuration refuses more; a template has as many as its segments.
        if let Some(slot) = self.items.get_mut(self.len) {
            slot.write((name, value));
            self.len += 1;
        }
    }
}

impl<'a, 'p> std::ops::Deref for Captures<'a, 'p> {
    type Target = [(&'a str, &'p [u8])];

    fn deref(&self) -> &Self::Target {
        // SAFETY: `push` wrote the first `len` slots (and `len` never exceeds the array's
        // length); `MaybeUninit<T>` has `T`'s layout, so they read as a slice of `T`.
        unsafe { std::slice::from_raw_parts(self.items.as_ptr().cast(), self.len) }
    }
}

impl RouteTable {
    pub fn new(routes: &[Route]) -> Self {
        let mut t = RouteTable {
            regexes: routes
                .iter()
                .map(|r| match &r.path {
                    PathMatch::Regex(re) => Some(WorkerRegex {
                        regex: re.regex().clone(),
                        locations: RefCell::new(re.regex().capture_locations()),
                    }),
                    _ => None,
                })
                .collect(),
            ..RouteTable::default()
        };
        for (i, r) in routes.iter().enumerate() {
            let table = match &r.host {
                HostMatch::Any => &mut t.any_host,
                HostMatch::Exact(h) => t.exact_hosts.entry(h.as_bytes().into()).or_default(),
                HostMatch::Suffix(s) => match t.suffix_hosts.iter().position(|(k, _)| **k == *s.as_bytes()) {
                    Some(p) => &mut t.suffix_hosts[p].1,
                    None => {
                        t.suffix_hosts.push((s.as_bytes().into(), PathTable::default()));
                        &mut t.suffix_hosts.last_mut().expect("just pushed").1
                    }
                },
            };
            table.insert(&r.path, i);
        }
        t.suffix_hosts.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        t
    }

    /// The index of the route for a request, or `None` (404). `accept` checks a candidate's
    /// other conditions (method, fields, query); candidates come in precedence order.
    /// Inlined into its one caller: out of line it cost 26 instructions per request more
    /// (callgrind), once `exchange` grew past the compiler's own inlining threshold.
    #[inline(always)]
    pub fn find(
        &self,
        host: Option<&[u8]>,
        path: &[u8],
        routes: &[Route],
        accept: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        // Without host routes the Host is not looked at: no copy, no lowercasing, no hash.
        let host_routes = !self.exact_hosts.is_empty() || !self.suffix_hosts.is_empty();
        if let Some(h) = host.filter(|_| host_routes).map(normalise_host) {
            let mut lower = [0u8; 256];
            if h.len() <= lower.len() {
                let lower = &mut lower[..h.len()];
                lower.copy_from_slice(h);
                lower.make_ascii_lowercase();
                if let Some(i) = self.exact_hosts.get(&*lower).and_then(|t| t.find(path, routes, &self.regexes, accept))
                {
                    return Some(i);
                }
                for (sfx, t) in &self.suffix_hosts {
                    if lower.len() > sfx.len() && lower.ends_with(sfx) {
                        if let Some(i) = t.find(path, routes, &self.regexes, accept) {
                            return Some(i);
                        }
                    }
                }
            }
        }
        self.any_host.find(path, routes, &self.regexes, accept)
    }

    /// The captures of route `idx`'s path template or regex in `path` (none for other
    /// routes), for `{name}` in its rewrite, field templates and redirect.
    pub fn captures<'a, 'p>(&'a self, routes: &'a [Route], idx: usize, path: &'p [u8]) -> Captures<'a, 'p> {
        let mut out = Captures::none();
        self.fill_captures(&mut out, routes, idx, path);
        out
    }

    /// As [`RouteTable::captures`], into `out` (empty): the request path fills its own
    /// instead of having the 520 bytes returned and copied, which cost every route 65-70
    /// instructions per request (callgrind after a second of warm-up: 11,145-11,151 ->
    /// 11,075-11,092).
    pub fn fill_captures<'a, 'p>(
        &'a self,
        out: &mut Captures<'a, 'p>,
        routes: &'a [Route],
        idx: usize,
        path: &'p [u8],
    ) {
        match (&self.regexes[idx], &routes[idx].path) {
            (Some(re), _) => {
                let mut locations = re.locations.borrow_mut();
                if re.regex.captures_read(&mut locations, path).is_some() {
                    for (i, name) in re.regex.capture_names().enumerate() {
                        if let (Some(name), Some((start, end))) = (name, locations.get(i)) {
                            out.push(name, &path[start..end]);
                        }
                    }
                }
            }
            (None, PathMatch::Template(segments)) => {
                if !config::template_captures(segments, path, |name, value| out.push(name, value)) {
                    out.len = 0;
                }
            }
            (None, _) => {}
        }
    }
}

/// Host without port and trailing dot.
pub(crate) fn normalise_host(h: &[u8]) -> &[u8] {
    let h = match h.iter().rposition(|&b| b == b':') {
        Some(i) if !h[i..].contains(&b']') => &h[..i],
        _ => h,
    };
    h.strip_suffix(b".").unwrap_or(h)
}

/// A fingerprint of each route: its settings (its name aside) and the names of the
/// upstreams it sends to. What a reload carries over is keyed by it rather than by the
/// route's place in the file (the response cache, rate-limit balances), so an unchanged
/// route keeps its state wherever it moved and a changed one starts afresh. A route whose
/// upstream by the same name now has other endpoints counts as unchanged (as nginx's
/// cache, keyed by the upstream's name, across reloads).
pub(crate) fn fingerprints(cfg: &config::Config) -> Box<[u64]> {
    use std::hash::{Hash, Hasher};
    cfg.routes
        .iter()
        .map(|r| {
            // SipHash with fixed keys: the same value for the same route in every generation
            // of this process (the store lives no longer than the process).
            let mut h = std::hash::DefaultHasher::new();
            // The name aside: it only labels metrics and logs (and defaults to the index).
            let unnamed = config::Route { name: String::new(), ..r.clone() };
            format!("{unnamed:?}").hash(&mut h);
            for u in r.action.upstreams() {
                cfg.upstreams[u].name.hash(&mut h);
            }
            h.finish()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(text: &str) -> Vec<Route> {
        let cfg = config::Config::parse(&format!(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[[upstreams]]\nname = \"u\"\nendpoints = [\"127.0.0.1:2\"]\n{text}"
        ))
        .unwrap();
        cfg.routes
    }

    fn route(host: Option<&str>, path: &str, extra: &str) -> String {
        let host = host.map(|h| format!("host = \"{h}\"\n")).unwrap_or_default();
        format!("[[routes]]\n{host}{path}\nupstream = \"u\"\n{extra}\n")
    }

    #[test]
    fn precedence() {
        let text = [
            route(None, "path = \"/\"", ""),                               // 0
            route(None, "path = \"/api\"", ""),                            // 1
            route(None, "path = \"/api/v2/\"", ""),                        // 2
            route(Some("a.example.com"), "path = \"/\"", ""),              // 3
            route(Some("*.example.com"), "path = \"/\"", ""),              // 4
            route(None, "path = \"/api\"", ""),                            // 5 (shadowed by 1)
            route(None, "path_exact = \"/api/health\"", ""),               // 6
            route(None, "path = \"/m\"", "methods = [\"POST\"]"),          // 7
            route(None, "path = \"/m\"", "methods = [\"GET\", \"HEAD\"]"), // 8
        ]
        .concat();
        let rs = routes(&text);
        let t = RouteTable::new(&rs);
        let cases: &[(Option<&str>, &str, &str, Option<usize>)] = &[
            (None, "/", "GET", Some(0)),
            (None, "/apix", "GET", Some(0)),
            (None, "/api", "GET", Some(1)),
            (None, "/api/x", "GET", Some(1)),
            (None, "/api/v2/x", "GET", Some(2)),
            (None, "/api/v2/", "GET", Some(2)),
            (None, "/api/v2", "GET", Some(1)),
            (None, "/api/health", "GET", Some(6)),
            (None, "/api/health/x", "GET", Some(1)),
            (Some("A.Example.com:8080"), "/api", "GET", Some(3)),
            (Some("b.example.com."), "/x", "GET", Some(4)),
            (Some("example.com"), "/x", "GET", Some(0)),
            (Some("[::1]:80"), "/x", "GET", Some(0)),
            (None, "/m/1", "POST", Some(7)),
            (None, "/m/1", "HEAD", Some(8)),
            (None, "/m/1", "DELETE", Some(0)),
        ];
        for (host, path, method, want) in cases {
            let accept = |i: usize| method_matches(&rs[i].methods, method.as_bytes());
            assert_eq!(
                t.find(host.map(str::as_bytes), path.as_bytes(), &rs, &accept),
                *want,
                "{host:?} {method} {path}"
            );
        }
        let rs = routes(&route(None, "path = \"/only\"", ""));
        assert_eq!(RouteTable::new(&rs).find(None, b"/other", &rs, &|_| true), None);
        let rs = routes(&[route(None, "path = \"/u\"", ""), route(None, "path_template = \"/u/{id}/x\"", "")].concat());
        let t = RouteTable::new(&rs);
        assert_eq!(t.find(None, b"/u/7/x", &rs, &|_| true), Some(1), "a template beats a prefix");
        assert_eq!(t.find(None, b"/u/7/y", &rs, &|_| true), Some(0));
        assert_eq!(t.find(None, b"/u//x", &rs, &|_| true), Some(0), "captures are never empty");
    }

    #[test]
    fn regexes_between_exact_paths_and_prefixes() {
        let text = [
            route(None, "path = \"/files\"", ""),                                    // 0
            route(None, "path_regex = '/files/(?P<name>\\w+)\\.(png|jpg)'", ""),     // 1
            route(None, "path_exact = \"/files/a.png\"", ""),                        // 2
            route(None, "path_template = \"/files/{name}\"", "methods = [\"PUT\"]"), // 3
            route(Some("img.example.com"), "path_regex = '/.*'", ""),                // 4
        ]
        .concat();
        let rs = routes(&text);
        let t = RouteTable::new(&rs);
        let cases: &[(Option<&str>, &str, &str, Option<usize>)] = &[
            (None, "/files/cat.png", "GET", Some(1)),
            (None, "/files/a.png", "GET", Some(2)),
            (None, "/files/cat.gif", "GET", Some(0)),
            (None, "/files/cat.png/x", "GET", Some(0)),
            (None, "/files/cat.png", "PUT", Some(1)),
            (None, "/files/cat", "PUT", Some(3)),
            (Some("img.example.com"), "/anything", "GET", Some(4)),
        ];
        for (host, path, method, want) in cases {
            let accept = |i: usize| method_matches(&rs[i].methods, method.as_bytes());
            assert_eq!(t.find(host.map(str::as_bytes), path.as_bytes(), &rs, &accept), *want, "{method} {path}");
        }
        assert_eq!(*t.captures(&rs, 1, b"/files/cat.png"), [("name", &b"cat"[..])]);
        assert_eq!(*t.captures(&rs, 3, b"/files/cat"), [("name", &b"cat"[..])]);
        assert!(t.captures(&rs, 3, b"/files/cat/x").is_empty(), "no match, no captures");
        assert!(t.captures(&rs, 0, b"/files/cat").is_empty());
    }

    #[test]
    fn fingerprints_follow_routes_not_their_places() {
        let cfg = |routes: &str| {
            config::Config::parse(&format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\n[[upstreams]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\n\
                 [[upstreams]]\nname = \"b\"\nendpoints = [\"127.0.0.1:2\"]\n{routes}"
            ))
            .unwrap()
        };
        let x = "[[routes]]\npath = \"/x\"\nupstream = \"a\"\ncache = {}\n";
        let y = "[[routes]]\npath = \"/y\"\nupstream = \"a\"\ncache = {}\n";
        let before = fingerprints(&cfg(&format!("{x}{y}")));
        assert_eq!(before, fingerprints(&cfg(&format!("{x}{y}"))), "the same file, parsed again");
        assert_ne!(before[0], before[1]);
        let moved = fingerprints(&cfg(&format!("{y}{x}")));
        assert_eq!((moved[0], moved[1]), (before[1], before[0]), "routes that moved keep their space");
        let changed = fingerprints(&cfg(&format!("{}{y}", x.replace("cache = {}", "cache = { ttl = \"5s\" }"))));
        assert_ne!(changed[0], before[0], "a changed route starts afresh");
        assert_eq!(changed[1], before[1]);
        let elsewhere = fingerprints(&cfg(&format!("{}{y}", x.replace("upstream = \"a\"", "upstream = \"b\""))));
        assert_ne!(elsewhere[0], before[0], "another upstream, other responses");
    }
}
