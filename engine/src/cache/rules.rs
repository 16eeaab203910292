//! What a shared cache may do with a request and a response (RFC 9111): whether a request
//! is answered from the cache, whether a response is stored and for how long, which stored
//! variant a request selects (Vary, 4.1) and whether a stored response answers a conditional
//! request with 304 (RFC 9110 13.1.1-13.1.3). No I/O and no storage here.

use std::time::{Duration, SystemTime};

use config::RouteCache;
use proto_http::cache_control::{delta_seconds, CacheControl};
use proto_http::{BodyFraming, FieldList, Method, RequestHead, ResponseHead};

/// What the cache may do for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ask {
    /// A stored response may answer it.
    pub lookup: bool,
    /// Its response may be stored (GET only: a HEAD response has no body to store).
    pub store: bool,
    /// The request's `max-age`: a stored response older than this is not used.
    pub max_age: Option<u64>,
    /// It has If-None-Match or If-Modified-Since ([`not_modified`] applies).
    pub conditional: bool,
}

/// The cache's part in a request: None for requests it has nothing to do with (methods
/// other than GET and HEAD, bodies, ranges, upgrades), which pass through unchanged.
/// - `no-cache` (or `Pragma: no-cache` without Cache-Control, RFC 9111 5.4): not answered
///   from the cache, the fresh response stored.
/// - `no-store` (5.2.1.5): may be answered from the cache, its response not stored.
/// - Range requests pass through: coregate stores and serves whole responses only.
pub(crate) fn ask(req: &RequestHead) -> Option<Ask> {
    let m = &req.meta;
    let get = match m.method {
        Method::Get => true,
        Method::Head => false,
        _ => return None,
    };
    if m.body != BodyFraming::Empty || m.upgrade {
        return None;
    }
    // One pass over the fields.
    let (mut cc, mut has_cc, mut pragma_no_cache, mut conditional) = (CacheControl::default(), false, false, false);
    for (name, value) in req.headers() {
        if name.eq_ignore_ascii_case(b"cache-control") {
            cc = cc.merge(CacheControl::parse([value]));
            has_cc = true;
        } else if name.eq_ignore_ascii_case(b"pragma") {
            pragma_no_cache |= FieldList::new(value).any(|t| t.eq_ignore_ascii_case(b"no-cache"));
        } else if name.eq_ignore_ascii_case(b"range") {
            return None;
        } else {
            conditional |=
                name.eq_ignore_ascii_case(b"if-none-match") || name.eq_ignore_ascii_case(b"if-modified-since");
        }
    }
    let no_cache = cc.no_cache || (pragma_no_cache && !has_cc);
    Some(Ask { lookup: !no_cache, store: get && !cc.no_store, max_age: cc.max_age, conditional })
}

/// Methods whose success makes the stored responses of their target stale (RFC 9111 4.4):
/// all but the safe ones (RFC 9110 9.2.1).
pub(crate) fn invalidates(method: Method) -> bool {
    !matches!(method, Method::Get | Method::Head | Method::Options | Method::Trace)
}

/// How stale a stored response may be when it answers (RFC 9111 4.2.4, RFC 5861), in
/// seconds past its freshness: while it is refreshed in the background (its own
/// `stale-while-revalidate`, else the route's setting) and when the upstream fails (the
/// route's `stale_if_error`). Both none under `must-revalidate` or `proxy-revalidate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StaleWindows {
    pub while_revalidate: Option<u64>,
    pub if_error: Option<u64>,
}

pub(crate) fn stale_windows(stored: &ResponseHead, route: &RouteCache) -> StaleWindows {
    let cc =
        CacheControl::parse(stored.headers().filter(|(n, _)| n.eq_ignore_ascii_case(b"cache-control")).map(|(_, v)| v));
    if cc.must_revalidate {
        return StaleWindows { while_revalidate: None, if_error: None };
    }
    StaleWindows {
        while_revalidate: cc.stale_while_revalidate.or(route.stale_while_revalidate.map(|d| d.as_secs())),
        if_error: route.stale_if_error.map(|d| d.as_secs()),
    }
}

/// Statuses stored: those RFC 9110 15.1 calls heuristically cacheable (206 left out:
/// ranges pass through).
const STORABLE: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// How long a storable response stays fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Freshness {
    /// Freshness lifetime (RFC 9111 4.2.1).
    pub lifetime: u64,
    /// Age when received (RFC 9111 4.2.3: the larger of the Age field and the time since
    /// its Date).
    pub initial_age: u64,
}

/// Whether a response to a storable request may be stored, and for how long (RFC 9111 3,
/// 4.2.1). Not stored: statuses outside [`STORABLE`], `no-store`, `no-cache`, `private`,
/// `Vary: *`, a `Set-Cookie` (a session must never reach another client; nginx decides the
/// same), an answer to a request with `Authorization` unless `public`, `s-maxage` or
/// `must-revalidate` allow it (3.5), and responses without freshness when the route has no
/// `ttl`. Lifetime: `s-maxage`, else `max-age`, else `Expires` minus `Date`, else the
/// route's `ttl`; a response already as old as its lifetime is not stored.
pub(crate) fn freshness(
    resp: &ResponseHead,
    route: &RouteCache,
    authorized: bool,
    now: SystemTime,
) -> Option<Freshness> {
    if !STORABLE.contains(&resp.meta.status) {
        return None;
    }
    let named = |name: &'static [u8]| resp.headers().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v);
    let cc = CacheControl::parse(named(b"cache-control"));
    if cc.no_store || cc.no_cache || cc.private || resp.header(b"set-cookie").is_some() {
        return None;
    }
    if named(b"vary").any(|v| FieldList::new(v).any(|t| t == b"*")) {
        return None;
    }
    if authorized && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
        return None;
    }
    let date = resp.header(b"date").and_then(http_date);
    let lifetime = match (cc.s_maxage.or(cc.max_age), resp.header(b"expires")) {
        (Some(secs), _) => secs,
        // An Expires that is no date means already expired (RFC 9111 5.3).
        (None, Some(expires)) => {
            http_date(expires).and_then(|e| e.duration_since(date.unwrap_or(now)).ok()).map_or(0, |d| d.as_secs())
        }
        (None, None) => route.ttl?.as_secs(),
    };
    let age_field = resp.header(b"age").and_then(delta_seconds).unwrap_or(0);
    let apparent = date.and_then(|d| now.duration_since(d).ok()).unwrap_or(Duration::ZERO).as_secs();
    let initial_age = age_field.max(apparent);
    // Stale on arrival: nothing to serve it for.
    (initial_age < lifetime).then_some(Freshness { lifetime, initial_age })
}

fn http_date(v: &[u8]) -> Option<SystemTime> {
    httpdate::parse_http_date(std::str::from_utf8(v).ok()?).ok()
}

/// The lower-case field names a response varies on, each followed by a 0 byte.
pub(crate) fn vary_names(resp: &ResponseHead) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, v) in resp.headers().filter(|(n, _)| n.eq_ignore_ascii_case(b"vary")) {
        for name in FieldList::new(v) {
            out.extend(name.iter().map(u8::to_ascii_lowercase));
            out.push(0);
        }
    }
    out
}

/// What selects a stored variant (RFC 9111 4.1): the authenticated consumer (so that one
/// consumer never gets a response fetched for another, as Kong keys its cache), then for
/// each name in `vary` the request's values of that field (joined by ", "; absent is not
/// the same as empty). Written into `out`, cleared first.
pub(crate) fn selecting(out: &mut Vec<u8>, req: &RequestHead, consumer: Option<&[u8]>, vary: &[u8]) {
    out.clear();
    encode_selecting(req, consumer, vary, |piece| {
        out.extend_from_slice(piece);
        true
    });
}

/// Whether the request selects the variant stored with `stored` (as [`selecting`] would
/// write it), compared piece by piece without building it.
pub(crate) fn selects(req: &RequestHead, consumer: Option<&[u8]>, vary: &[u8], stored: &[u8]) -> bool {
    let mut rest = stored;
    encode_selecting(req, consumer, vary, |piece| match rest.strip_prefix(piece) {
        Some(r) => {
            rest = r;
            true
        }
        None => false,
    }) && rest.is_empty()
}

/// Feeds the pieces of the selecting values to `put`, stopping when it returns false.
fn encode_selecting(
    req: &RequestHead,
    consumer: Option<&[u8]>,
    vary: &[u8],
    mut put: impl FnMut(&[u8]) -> bool,
) -> bool {
    if !put(consumer.unwrap_or_default()) || !put(b"\0") {
        return false;
    }
    for name in vary.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut values = req.headers().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v);
        let ok = match values.next() {
            None => put(b"\x01"),
            Some(first) => put(b"\x02") && put(first) && values.all(|v| put(b", ") && put(v)),
        };
        if !ok || !put(b"\0") {
            return false;
        }
    }
    true
}

/// Whether a stored 200 answers the request's preconditions with 304 Not Modified:
/// If-None-Match by weak comparison with the stored ETag (RFC 9110 13.1.2), else
/// If-Modified-Since against Last-Modified (13.1.3; ignored when If-None-Match is present).
pub(crate) fn not_modified(req: &RequestHead, stored: &ResponseHead) -> bool {
    if stored.meta.status != 200 {
        return false;
    }
    let mut inm = req.headers().filter(|(n, _)| n.eq_ignore_ascii_case(b"if-none-match")).map(|(_, v)| v).peekable();
    if inm.peek().is_some() {
        let Some(etag) = stored.header(b"etag") else {
            return inm.any(|v| FieldList::new(v).any(|t| t == b"*"));
        };
        let weak = |t: &[u8]| t.strip_prefix(b"W/").unwrap_or(t).to_vec();
        let etag = weak(etag);
        return inm.any(|v| FieldList::new(v).any(|t| t == b"*" || weak(t) == etag));
    }
    match (req.header(b"if-modified-since").and_then(http_date), stored.header(b"last-modified").and_then(http_date)) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proto_http::{parse_request, parse_response, Limits};

    fn req(text: &str) -> RequestHead {
        let meta = parse_request(text.as_bytes(), &Limits::default()).unwrap().unwrap();
        RequestHead::new(Bytes::copy_from_slice(text.as_bytes()), meta)
    }

    fn resp(fields: &str) -> ResponseHead {
        let text = format!("HTTP/1.1 200 OK\r\n{fields}content-length: 0\r\n\r\n");
        let meta = parse_response(text.as_bytes(), &Limits::default(), false).unwrap().unwrap();
        ResponseHead::new(Bytes::from(text), meta)
    }

    #[test]
    fn requests_table() {
        let on = |store, max_age| Some(Ask { lookup: true, store, max_age, conditional: false });
        let table: &[(&str, Option<Ask>)] = &[
            ("GET / HTTP/1.1\r\nHost: h\r\n\r\n", on(true, None)),
            ("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", on(false, None)),
            ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", None),
            ("DELETE / HTTP/1.1\r\nHost: h\r\n\r\n", None),
            ("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n", None),
            ("GET / HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1\r\n\r\n", None),
            ("GET / HTTP/1.1\r\nHost: h\r\nCache-Control: max-age=5\r\n\r\n", on(true, Some(5))),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nCache-Control: max-age=5\r\nCache-Control: no-store\r\n\r\n",
                Some(Ask { lookup: true, store: false, max_age: Some(5), conditional: false }),
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"x\"\r\n\r\n",
                Some(Ask { lookup: true, store: true, max_age: None, conditional: true }),
            ),
            ("GET / HTTP/1.1\r\nHost: h\r\nCache-Control: no-store\r\n\r\n", on(false, None)),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nCache-Control: no-cache\r\n\r\n",
                Some(Ask { lookup: false, store: true, max_age: None, conditional: false }),
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\n\r\n",
                Some(Ask { lookup: false, store: true, max_age: None, conditional: false }),
            ),
            // Cache-Control present: Pragma is ignored (RFC 9111 5.4).
            ("GET / HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\nCache-Control: max-age=9\r\n\r\n", on(true, Some(9))),
        ];
        for (text, want) in table {
            assert_eq!(ask(&req(text)), *want, "{text:?}");
        }
    }

    #[test]
    fn responses_table() {
        let now = httpdate::parse_http_date("Tue, 24 Nov 2026 12:00:00 GMT").unwrap();
        let with_ttl = RouteCache {
            ttl: Some(Duration::from_secs(30)),
            max_entry_bytes: 1 << 20,
            lock: None,
            stale_if_error: None,
            stale_while_revalidate: None,
        };
        let no_ttl = RouteCache { ttl: None, ..with_ttl };
        let fresh = |lifetime, initial_age| Some(Freshness { lifetime, initial_age });
        let table: &[(&str, &RouteCache, bool, Option<Freshness>)] = &[
            ("", &with_ttl, false, fresh(30, 0)),
            ("", &no_ttl, false, None),
            ("cache-control: max-age=60\r\n", &no_ttl, false, fresh(60, 0)),
            ("cache-control: max-age=60, s-maxage=5\r\n", &no_ttl, false, fresh(5, 0)),
            ("cache-control: max-age=0\r\n", &with_ttl, false, None),
            ("cache-control: no-store, max-age=60\r\n", &with_ttl, false, None),
            ("cache-control: no-cache\r\n", &with_ttl, false, None),
            ("cache-control: private, max-age=60\r\n", &with_ttl, false, None),
            ("set-cookie: s=1\r\ncache-control: max-age=60\r\n", &with_ttl, false, None),
            ("vary: accept, *\r\n", &with_ttl, false, None),
            ("vary: accept\r\n", &with_ttl, false, fresh(30, 0)),
            ("cache-control: max-age=60\r\n", &with_ttl, true, None),
            ("cache-control: public, max-age=60\r\n", &with_ttl, true, fresh(60, 0)),
            ("cache-control: s-maxage=60\r\n", &with_ttl, true, fresh(60, 0)),
            (
                "date: Tue, 24 Nov 2026 11:59:50 GMT\r\nexpires: Tue, 24 Nov 2026 12:01:50 GMT\r\n",
                &no_ttl,
                false,
                fresh(120, 10),
            ),
            ("expires: 0\r\n", &with_ttl, false, None),
            ("expires: Tue, 24 Nov 2026 11:00:00 GMT\r\n", &with_ttl, false, None),
            ("cache-control: max-age=60\r\nage: 15\r\n", &no_ttl, false, fresh(60, 15)),
            ("cache-control: max-age=60\r\nage: x\r\n", &no_ttl, false, fresh(60, 0)),
            ("cache-control: max-age=60\r\nage: 60\r\n", &no_ttl, false, None),
            ("date: Tue, 24 Nov 2026 11:58:00 GMT\r\ncache-control: max-age=60\r\n", &no_ttl, false, None),
        ];
        for (fields, route, authorized, want) in table {
            assert_eq!(freshness(&resp(fields), route, *authorized, now), *want, "{fields:?}");
        }
        let text = "HTTP/1.1 302 Found\r\ncache-control: max-age=60\r\ncontent-length: 0\r\n\r\n";
        let meta = parse_response(text.as_bytes(), &Limits::default(), false).unwrap().unwrap();
        assert_eq!(freshness(&ResponseHead::new(Bytes::from(text), meta), &with_ttl, false, now), None);
    }

    #[test]
    fn variants_are_selected_by_consumer_and_vary() {
        let vary = vary_names(&resp("vary: Accept-Encoding\r\nvary: x-tenant\r\n"));
        assert_eq!(vary, b"accept-encoding\0x-tenant\0");
        let sel = |text: &str, consumer: Option<&[u8]>| {
            let mut out = Vec::new();
            selecting(&mut out, &req(text), consumer, &vary);
            assert!(selects(&req(text), consumer, &vary, &out));
            out
        };
        let gzip = sel("GET / HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n", None);
        assert_eq!(gzip, sel("GET / HTTP/1.1\r\nhost: h\r\naccept-encoding: gzip\r\n\r\n", None));
        assert_ne!(gzip, sel("GET / HTTP/1.1\r\nHost: h\r\nAccept-Encoding: br\r\n\r\n", None));
        let two = req("GET / HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\nAccept-Encoding: br\r\n\r\n");
        assert!(!selects(&two, None, &vary, &gzip));
        assert!(!selects(&req("GET / HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzi\r\n\r\n"), None, &vary, &gzip));
        assert_ne!(gzip, sel("GET / HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n", Some(b"alice")));
        assert_ne!(
            sel("GET / HTTP/1.1\r\nHost: h\r\n\r\n", None),
            sel("GET / HTTP/1.1\r\nHost: h\r\nAccept-Encoding: \r\n\r\n", None)
        );
    }

    #[test]
    fn conditional_requests_table() {
        let stored = resp("etag: \"v1\"\r\nlast-modified: Tue, 24 Nov 2026 10:00:00 GMT\r\n");
        let table = [
            ("If-None-Match: \"v1\"\r\n", true),
            ("If-None-Match: W/\"v1\"\r\n", true),
            ("If-None-Match: \"v0\", \"v1\"\r\n", true),
            ("If-None-Match: *\r\n", true),
            ("If-None-Match: \"v2\"\r\n", false),
            // If-None-Match wins over If-Modified-Since.
            ("If-None-Match: \"v2\"\r\nIf-Modified-Since: Tue, 24 Nov 2026 11:00:00 GMT\r\n", false),
            ("If-Modified-Since: Tue, 24 Nov 2026 11:00:00 GMT\r\n", true),
            ("If-Modified-Since: Tue, 24 Nov 2026 10:00:00 GMT\r\n", true),
            ("If-Modified-Since: Tue, 24 Nov 2026 09:00:00 GMT\r\n", false),
            ("If-Modified-Since: yesterday\r\n", false),
            ("", false),
        ];
        for (fields, want) in table {
            let r = req(&format!("GET / HTTP/1.1\r\nHost: h\r\n{fields}\r\n"));
            assert_eq!(not_modified(&r, &stored), want, "{fields:?}");
        }
    }
}
