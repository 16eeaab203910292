//! Request path normalisation, in place and before routing, so that routes, policies, the
//! cache and the upstream all see one spelling of a path (RFC 3986 section 6.2.2): `%41`
//! and `A` are the same path, and so are `/a/../b` and `/b`. Without it a route's policy on
//! `/admin` can be walked around with `/x/../admin` or `/%61dmin` whenever the upstream
//! normalises what the gateway did not. The query is left as sent; whether to normalise at
//! all is the caller's (configuration's) decision.

use crate::{ParseError, RequestMeta};

/// What normalisation does beyond the RFC 3986 steps, which always apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathRules {
    /// `//` is read as `/` (nginx's `merge_slashes`, Envoy's `merge_slashes`). Not an RFC 3986
    /// equivalence, but most servers behind a gateway treat the two alike.
    pub merge_slashes: bool,
    /// `%2F` and `%5C` (an encoded `/` or `\`) are refused with 400 instead of being passed on
    /// as they are. Some upstreams decode them into separators after routing.
    pub reject_encoded_slashes: bool,
}

/// Bytes a path may hold (RFC 3986 3.3: `pchar` and `/`). `%` starts a percent-encoding,
/// which is checked separately; everything else (`\`, `"`, `<`, `>`, `^`, `` ` ``, `{`, `|`,
/// `}`, `#`, controls, spaces, bytes from 0x80) is refused.
const PATH_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'')
            || matches!(c, b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@' | b'/' | b'%');
        b += 1;
    }
    t
};

/// RFC 3986 2.3: characters that mean the same encoded or not, so are decoded.
fn unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Normalises the path of the request target in `buf` (the head's bytes, which `meta`
/// indexes), shortening `meta.path` to match and keeping the path as sent in
/// `meta.path_as_sent` when it changed. Targets that are not a path (`*`, a CONNECT
/// authority, an absolute-form target without one) are left alone.
#[inline]
pub fn normalize_request_path(buf: &mut [u8], meta: &mut RequestMeta, rules: PathRules) -> Result<(), ParseError> {
    let (start, end) = (meta.path.start as usize, meta.path.end as usize);
    let target = &mut buf[start..end];
    if target.first() != Some(&b'/') || (meta.method == crate::Method::Connect && meta.target_authority.is_some()) {
        return Ok(());
    }
    if is_normal(target) {
        return Ok(());
    }
    let len = rewrite_keeping(target, rules, &mut meta.path_as_sent)?;
    meta.path.end = (start + len) as u32;
    Ok(())
}

/// [`rewrite`], also keeping the path as it was in `as_sent` when the rewrite changed it. Most
/// rewrites change nothing (`%20` is already normal): the path is copied to the stack
/// first, and to the heap only when it differs.
#[cold]
#[inline(never)]
fn rewrite_keeping(target: &mut [u8], rules: PathRules, as_sent: &mut Option<Box<[u8]>>) -> Result<usize, ParseError> {
    let path_end = target.iter().position(|&b| b == b'?').unwrap_or(target.len());
    let mut stack = [0u8; 1024];
    let heap;
    let before: &[u8] = if path_end <= stack.len() {
        stack[..path_end].copy_from_slice(&target[..path_end]);
        &stack[..path_end]
    } else {
        heap = target[..path_end].to_vec();
        &heap
    };
    let len = rewrite(target, rules)?;
    let after = &target[..path_end - (target.len() - len)];
    if after != before {
        *as_sent = Some(before.into());
    }
    Ok(len)
}

/// Classes of bytes for the first look at a path: most paths hold only plain bytes and
/// slashes before their query, and are left as they are.
const PLAIN: u8 = 0;
const SLASH: u8 = 1;
const QUERY: u8 = 2;
/// `%`, or a byte a path may not hold: the rewrite decides which.
const OTHER: u8 = 3;
const CLASS: [u8; 256] = {
    let mut t = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            b'/' => SLASH,
            b'?' => QUERY,
            b'%' => OTHER,
            _ if PATH_BYTE[b] => PLAIN,
            _ => OTHER,
        };
        b += 1;
    }
    t
};

/// Normalises the path part of `target` (a path that starts with `/`, then optionally `?`
/// and a query) in place and returns the target's new length; the bytes after it are left
/// over. Errors: a byte a path may not hold, a `%` not followed by two hex digits, `%00`, and
/// with `reject_encoded_slashes` an encoded slash.
pub fn normalize(target: &mut [u8], rules: PathRules) -> Result<usize, ParseError> {
    if is_normal(target) {
        return Ok(target.len());
    }
    rewrite(target, rules)
}

/// Whether the path of `target` certainly needs nothing: no `%`, no `/` before a `.` or a
/// `/`, and no byte to refuse.
#[inline]
fn is_normal(target: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = target.get(i) {
        match CLASS[b as usize] {
            PLAIN => {}
            SLASH if !matches!(target.get(i + 1), Some(b'.' | b'/')) => {}
            QUERY => break,
            _ => return false,
        }
        i += 1;
    }
    true
}

/// Checks and normalises a path that [`is_normal`] could not vouch for.
fn rewrite(target: &mut [u8], rules: PathRules) -> Result<usize, ParseError> {
    let path_end = target.iter().position(|&b| b == b'?').unwrap_or(target.len());
    if target[..path_end].iter().any(|&b| !PATH_BYTE[b as usize]) {
        return Err(ParseError::PathCharacter);
    }
    let decoded = decode_unreserved(&mut target[..path_end], rules)?;
    let path_len = remove_dot_segments(&mut target[..decoded], rules.merge_slashes);
    target.copy_within(path_end.., path_len);
    Ok(path_len + target.len() - path_end)
}

/// RFC 3986 6.2.2.1 and 6.2.2.2: percent-encoded unreserved characters are decoded, and the
/// hex digits of every other percent-encoding are upper-cased. Returns the new length.
fn decode_unreserved(path: &mut [u8], rules: PathRules) -> Result<usize, ParseError> {
    let (mut r, mut w) = (0, 0);
    while r < path.len() {
        let b = path[r];
        if b != b'%' {
            path[w] = b;
            (r, w) = (r + 1, w + 1);
            continue;
        }
        let hex = |i: usize| path.get(i).and_then(|&d| (d as char).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(r + 1), hex(r + 2)) else { return Err(ParseError::PathEncoding) };
        let c = (hi * 16 + lo) as u8;
        if c == 0 {
            return Err(ParseError::PathEncoding);
        }
        if rules.reject_encoded_slashes && (c == b'/' || c == b'\\') {
            return Err(ParseError::EncodedSlash);
        }
        if unreserved(c) {
            path[w] = c;
            w += 1;
        } else {
            path[w] = b'%';
            path[w + 1] = path[r + 1].to_ascii_uppercase();
            path[w + 2] = path[r + 2].to_ascii_uppercase();
            w += 3;
        }
        r += 3;
    }
    Ok(w)
}

/// RFC 3986 5.2.4 (and 6.2.2.3): `.` segments are dropped and `..` segments drop the one
/// before them, never climbing above the root; with `merge` empty segments are dropped too.
/// A path that ended in a dropped segment keeps a trailing `/` (`/a/b/..` is `/a/`).
/// Returns the new length. The output never outruns the input, so it is written in place.
fn remove_dot_segments(path: &mut [u8], merge: bool) -> usize {
    debug_assert_eq!(path.first(), Some(&b'/'));
    let len = path.len();
    let mut w = 0;
    let mut r = 1;
    loop {
        let seg_end = path[r..].iter().position(|&b| b == b'/').map_or(len, |i| r + i);
        let last = seg_end == len;
        // Read before the copy below, which may overwrite these bytes.
        let dots = matches!(&path[r..seg_end], b"." | b"..");
        match &path[r..seg_end] {
            b"." => {}
            b".." => w = path[..w].iter().rposition(|&b| b == b'/').unwrap_or(0),
            b"" if merge && !last => {}
            _ => {
                path[w] = b'/';
                path.copy_within(r..seg_end, w + 1);
                w += 1 + seg_end - r;
            }
        }
        if last {
            if dots || w == 0 {
                // `/a/.` and `/a/..` name a directory: they keep their trailing slash.
                path[w] = b'/';
                w += 1;
            }
            return w;
        }
        r = seg_end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str, rules: PathRules) -> Result<String, ParseError> {
        let mut b = path.as_bytes().to_vec();
        let n = normalize(&mut b, rules)?;
        Ok(String::from_utf8(b[..n].to_vec()).unwrap())
    }

    const PLAIN: PathRules = PathRules { merge_slashes: false, reject_encoded_slashes: false };
    const EDGE: PathRules = PathRules { merge_slashes: true, reject_encoded_slashes: true };

    #[test]
    fn normalises_as_rfc_3986_says() {
        let table: &[(&str, &str)] = &[
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/../../..", "/"),
            ("/..", "/"),
            ("/.", "/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/..b/c", "/a/..b/c"),
            ("/a/b../c", "/a/b../c"),
            ("/a/.../c", "/a/.../c"),
            // RFC 3986 5.4.1's examples, as paths.
            ("/b/c/./../../g", "/g"),
            ("/b/c/g;x=1/./y", "/b/c/g;x=1/y"),
            ("/b/c/g;x=1/../y", "/b/c/y"),
            ("/%61dmin", "/admin"),
            ("/%7Euser/%2d%5F%2E", "/~user/-_."),
            ("/a/%2e%2e/b", "/b"),
            ("/a/%2E/b", "/a/b"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%20b%3f", "/a%20b%3F"),
            ("/%e2%82%ac", "/%E2%82%AC"),
            ("/a?x=/../y&z=%41", "/a?x=/../y&z=%41"),
            ("/a/../b?q", "/b?q"),
            ("/a//b", "/a//b"),
            ("/a//../b", "/a/b"),
            // Found by the fuzzer: a last segment moved left over bytes that then read `..`.
            ("//N.", "//N."),
        ];
        for (input, want) in table {
            assert_eq!(norm(input, PLAIN).as_deref(), Ok(*want), "{input}");
        }
    }

    #[test]
    fn merges_slashes_when_asked() {
        let table: &[(&str, &str)] = &[
            ("//", "/"),
            ("//admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/a//", "/a/"),
            ("/a/.//../b", "/b"),
            ("//a?x=//", "/a?x=//"),
            ("//N.", "/N."),
        ];
        for (input, want) in table {
            assert_eq!(norm(input, EDGE).as_deref(), Ok(*want), "{input}");
        }
    }

    #[test]
    fn refuses_what_a_path_may_not_hold() {
        let table: &[(&str, PathRules, ParseError)] = &[
            ("/a\\b", PLAIN, ParseError::PathCharacter),
            ("/a|b", PLAIN, ParseError::PathCharacter),
            ("/{a}", PLAIN, ParseError::PathCharacter),
            ("/\"", PLAIN, ParseError::PathCharacter),
            ("/a#frag", PLAIN, ParseError::PathCharacter),
            ("/caf\u{e9}", PLAIN, ParseError::PathCharacter),
            ("/a%", PLAIN, ParseError::PathEncoding),
            ("/a%4", PLAIN, ParseError::PathEncoding),
            ("/a%zz", PLAIN, ParseError::PathEncoding),
            ("/a%00b", PLAIN, ParseError::PathEncoding),
            ("/a%2Fb", EDGE, ParseError::EncodedSlash),
            ("/a%5cb", EDGE, ParseError::EncodedSlash),
        ];
        for (input, rules, want) in table {
            assert_eq!(norm(input, *rules), Err(*want), "{input}");
        }
        // The query is the upstream's business.
        assert_eq!(norm("/a?b=|{}\\%zz", EDGE).as_deref(), Ok("/a?b=|{}\\%zz"));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        let parts = ["a", ".", "..", "", "%2e", "%2F", "%41", "%c3%a9", "b.", "..."];
        let mut seen = 0;
        for x in parts {
            for y in parts {
                for z in parts {
                    for rules in [PLAIN, PathRules { reject_encoded_slashes: false, ..EDGE }] {
                        let once = norm(&format!("/{x}/{y}/{z}"), rules).unwrap();
                        assert_eq!(norm(&once, rules).unwrap(), once, "/{x}/{y}/{z}");
                        assert!(!once.contains("/./") && !once.contains("/../"), "{once}");
                        seen += 1;
                    }
                }
            }
        }
        assert_eq!(seen, 2000);
    }

    #[test]
    fn request_heads_keep_their_query_and_leave_other_forms_alone() {
        let limits = crate::Limits::default();
        let normalised = |raw: &str, rules| {
            let mut buf = raw.as_bytes().to_vec();
            let mut meta = crate::parse_request(&buf, &limits).unwrap().unwrap();
            let before = meta.clone();
            normalize_request_path(&mut buf, &mut meta, rules).unwrap();
            let path = String::from_utf8(meta.path.get(&buf).to_vec()).unwrap();
            let as_sent = meta.path_as_sent.as_deref().map(|p| String::from_utf8(p.to_vec()).unwrap());
            (path, as_sent, meta == before)
        };
        let (path, as_sent, _) = normalised("GET /x/../y%41?q=1 HTTP/1.1\r\nHost: a\r\n\r\n", PLAIN);
        assert_eq!((path.as_str(), as_sent.as_deref()), ("/yA?q=1", Some("/x/../y%41")));
        for raw in ["OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"] {
            assert!(normalised(raw, EDGE).2, "{raw}");
        }
        let (path, as_sent, _) = normalised("GET http://a/b/./c HTTP/1.1\r\nHost: a\r\n\r\n", PLAIN);
        assert_eq!((path.as_str(), as_sent.as_deref()), ("/b/c", Some("/b/./c")));
        // Rewritten but the same (already normal escapes, a dot that starts a name): nothing kept.
        for raw in ["GET /a/b HTTP/1.1\r\nHost: a\r\n\r\n", "GET /a%20b/.well-known HTTP/1.1\r\nHost: a\r\n\r\n"] {
            assert!(normalised(raw, EDGE).2, "{raw}");
        }
        // A path longer than the stack copy is kept from the heap.
        let long = format!("/{}/../x", "a".repeat(2000));
        let (path, as_sent, _) = normalised(&format!("GET {long} HTTP/1.1\r\nHost: a\r\n\r\n"), EDGE);
        assert_eq!((path.as_str(), as_sent.as_deref()), ("/x", Some(long.as_str())));
    }
}
