//! Cache-Control directives (RFC 9111 5.2) as a shared cache reads them, and delta-seconds
//! (RFC 9111 1.2.2). What a cache does with them (storing, freshness, validation) is the
//! engine's: this module only turns field values into flags and numbers.

use crate::fields::trim_ows;

/// Delta-seconds are capped here, as RFC 9111 1.2.2 allows for larger values (2^31).
pub const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// The directives of every Cache-Control field of one message that a shared cache acts on.
/// A directive with a malformed argument counts in the safer direction: `max-age=x` is
/// `max-age=0` (RFC 9111 4.2.1: such a response is stale), and the qualified forms
/// `no-cache="f"` and `private="f"` count as the unqualified ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    /// `must-revalidate` or `proxy-revalidate`.
    pub must_revalidate: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    /// `no-transform` (RFC 9111 5.2.2.6): intermediaries leave the content as it is (no
    /// compression, RFC 9110 7.7).
    pub no_transform: bool,
    /// `stale-while-revalidate=N` (RFC 5861 3): seconds past freshness the response may be
    /// served while a cache refreshes it. Malformed: absent (no stale answers).
    pub stale_while_revalidate: Option<u64>,
}

impl CacheControl {
    /// Reads the values of all the message's Cache-Control fields; unknown directives are
    /// ignored (RFC 9111 5.2.3).
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut cc = CacheControl::default();
        for value in values {
            for directive in Directives(value) {
                let (name, arg) = match directive.iter().position(|&b| b == b'=') {
                    Some(i) => (trim_ows(&directive[..i]), Some(unquote(trim_ows(&directive[i + 1..])))),
                    None => (directive, None),
                };
                let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
                if is("no-store") {
                    cc.no_store = true;
                } else if is("no-cache") {
                    cc.no_cache = true;
                } else if is("private") {
                    cc.private = true;
                } else if is("no-transform") {
                    cc.no_transform = true;
                } else if is("public") {
                    cc.public = true;
                } else if is("must-revalidate") || is("proxy-revalidate") {
                    cc.must_revalidate = true;
                } else if is("max-age") {
                    cc.max_age = Some(arg.and_then(delta_seconds).unwrap_or(0));
                } else if is("s-maxage") {
                    cc.s_maxage = Some(arg.and_then(delta_seconds).unwrap_or(0));
                } else if is("stale-while-revalidate") {
                    cc.stale_while_revalidate = arg.and_then(delta_seconds);
                }
            }
        }
        cc
    }
}

impl CacheControl {
    /// The directives of two fields of one message together (a later `max-age` or
    /// `s-maxage` wins, as a later directive of one field does).
    pub fn merge(self, later: CacheControl) -> CacheControl {
        CacheControl {
            no_store: self.no_store || later.no_store,
            no_cache: self.no_cache || later.no_cache,
            private: self.private || later.private,
            public: self.public || later.public,
            must_revalidate: self.must_revalidate || later.must_revalidate,
            max_age: later.max_age.or(self.max_age),
            s_maxage: later.s_maxage.or(self.s_maxage),
            no_transform: self.no_transform || later.no_transform,
            stale_while_revalidate: later.stale_while_revalidate.or(self.stale_while_revalidate),
        }
    }
}

/// Parses delta-seconds (1*DIGIT), capped at [`MAX_DELTA_SECONDS`].
pub fn delta_seconds(v: &[u8]) -> Option<u64> {
    crate::fields::saturating_digits(v).map(|n| n.min(MAX_DELTA_SECONDS))
}

/// Strips the quotes of a quoted-string argument (no escapes expected in the arguments a
/// cache reads: numbers and field names).
fn unquote(v: &[u8]) -> &[u8] {
    match v {
        [b'"', inner @ .., b'"'] => inner,
        _ => v,
    }
}

/// The comma-separated directives of one field value, commas inside quoted strings kept
/// (`no-cache="a, b"` is one directive), empty elements skipped.
struct Directives<'a>(&'a [u8]);

impl<'a> Iterator for Directives<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.0.is_empty() {
                return None;
            }
            let mut quoted = false;
            let mut escaped = false;
            let mut end = self.0.len();
            for (i, &b) in self.0.iter().enumerate() {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' if quoted => escaped = true,
                    b'"' => quoted = !quoted,
                    b',' if !quoted => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let item = trim_ows(&self.0[..end]);
            self.0 = self.0.get(end + 1..).unwrap_or_default();
            if !item.is_empty() {
                return Some(item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(values: &[&str]) -> CacheControl {
        CacheControl::parse(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn directives_table() {
        let none = CacheControl::default();
        let table: &[(&[&str], CacheControl)] = &[
            (&[], none),
            (&[""], none),
            (&["max-age=60"], CacheControl { max_age: Some(60), ..none }),
            (&["MAX-AGE=60"], CacheControl { max_age: Some(60), ..none }),
            (&["max-age=\"60\""], CacheControl { max_age: Some(60), ..none }),
            // Malformed: stale (RFC 9111 4.2.1).
            (&["max-age=abc"], CacheControl { max_age: Some(0), ..none }),
            (&["max-age"], CacheControl { max_age: Some(0), ..none }),
            (&["max-age=-1"], CacheControl { max_age: Some(0), ..none }),
            (&["max-age=99999999999999999999999"], CacheControl { max_age: Some(MAX_DELTA_SECONDS), ..none }),
            (
                &["public, s-maxage=10, max-age=5"],
                CacheControl { public: true, s_maxage: Some(10), max_age: Some(5), ..none },
            ),
            (&["public", "s-maxage=10"], CacheControl { public: true, s_maxage: Some(10), ..none }),
            (&["no-store"], CacheControl { no_store: true, ..none }),
            (&[",,no-cache ,"], CacheControl { no_cache: true, ..none }),
            // A qualified no-cache with a comma inside its quotes is one directive.
            (&["no-cache=\"set-cookie, x-a\", max-age=5"], CacheControl { no_cache: true, max_age: Some(5), ..none }),
            (&["private=\"x\""], CacheControl { private: true, ..none }),
            (&["proxy-revalidate"], CacheControl { must_revalidate: true, ..none }),
            (&["must-revalidate, community=\"UCI\""], CacheControl { must_revalidate: true, ..none }),
            (&["nonsense=\"a,max-age=9\""], none),
            (
                &["max-age=60, stale-while-revalidate=30"],
                CacheControl { max_age: Some(60), stale_while_revalidate: Some(30), ..none },
            ),
            (&["Stale-While-Revalidate=\"5\""], CacheControl { stale_while_revalidate: Some(5), ..none }),
            (&["stale-while-revalidate"], none),
            (&["stale-while-revalidate=soon"], none),
        ];
        for (values, want) in table {
            assert_eq!(cc(values), *want, "{values:?}");
        }
    }

    #[test]
    fn merging_fields_is_parsing_them_together() {
        for pair in [["max-age=5", "no-store"], ["public", "s-maxage=3, private"], ["max-age=1", "max-age=2"]] {
            assert_eq!(cc(&pair[..1]).merge(cc(&pair[1..])), cc(&pair), "{pair:?}");
        }
    }

    #[test]
    fn delta_seconds_table() {
        for (v, want) in [("0", Some(0)), ("120", Some(120)), ("", None), ("1a", None), (" 1", None), ("+1", None)] {
            assert_eq!(delta_seconds(v.as_bytes()), want, "{v:?}");
        }
    }
}
