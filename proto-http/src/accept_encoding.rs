//! Accept-Encoding (RFC 9110 12.5.3): whether, and how much, a request accepts a content
//! coding, read from the values of all its Accept-Encoding fields. Which coding to apply, and when, is the
//! engine's; this module only reads the field.

use crate::fields::{trim_ows, FieldList};

/// Whether `coding` (a lower-case token such as `gzip`) is acceptable to a request whose
/// Accept-Encoding field values are `values`.
///
/// RFC 9110 12.5.3: a coding is acceptable when it is listed with a weight above 0, or when
/// `*` is (with a weight above 0) and the coding is not listed itself. `x-gzip` is taken as
/// `gzip` (RFC 9110 8.4.1.3). No field at all means no preference; this returns false then,
/// as a gateway should not change a representation nobody asked to have encoded (nginx and
/// Envoy compress only for a request that lists a coding). An empty field accepts none.
pub fn accepts<'a>(values: impl IntoIterator<Item = &'a [u8]>, coding: &str) -> bool {
    weight(values, coding) > 0
}

/// The weight a request gives `coding`, in thousandths (1000 for a plain listing, 0 when
/// it is not acceptable), by the rules of [`accepts`]; a server choosing among codings
/// takes the heaviest (RFC 9110 12.5.3).
pub fn weight<'a>(values: impl IntoIterator<Item = &'a [u8]>, coding: &str) -> u32 {
    let (mut named, mut star) = (None, None);
    for value in values {
        for item in FieldList::new(value) {
            let mut parts = item.split(|&b| b == b';');
            let token = trim_ows(parts.next().unwrap_or_default());
            let weight = parts.find_map(|p| qvalue(trim_ows(p))).unwrap_or(1000);
            let is_coding = token.eq_ignore_ascii_case(coding.as_bytes())
                || (coding == "gzip" && token.eq_ignore_ascii_case(b"x-gzip"));
            if is_coding {
                // The highest weight of a coding listed twice counts.
                named = Some(named.unwrap_or(0).max(weight));
            } else if token == b"*" {
                star = Some(star.unwrap_or(0).max(weight));
            }
        }
    }
    named.or(star).unwrap_or(0)
}

/// A weight parameter `q=0.5` in thousandths (RFC 9110 12.4.2: up to three decimals);
/// None for other parameters. A malformed weight counts as 0: the coding is refused
/// rather than guessed at.
fn qvalue(param: &[u8]) -> Option<u32> {
    let value = param.strip_prefix(b"q=").or_else(|| param.strip_prefix(b"Q="))?;
    let parsed = match value {
        [b'1'] | [b'1', b'.'] => Some(1000),
        [b'1', b'.', zeros @ ..] if zeros.len() <= 3 && zeros.iter().all(|&b| b == b'0') => Some(1000),
        [b'0'] | [b'0', b'.'] => Some(0),
        [b'0', b'.', digits @ ..] if digits.len() <= 3 && digits.iter().all(u8::is_ascii_digit) => {
            let mut n = 0;
            for i in 0..3 {
                n = n * 10 + digits.get(i).map_or(0, |d| u32::from(d - b'0'));
            }
            Some(n)
        }
        _ => None,
    };
    Some(parsed.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::{accepts, weight};

    #[test]
    fn gzip_acceptance_table() {
        let cases: &[(&[&str], bool)] = &[
            (&[], false),
            (&[""], false),
            (&["gzip"], true),
            (&["GZIP"], true),
            (&["x-gzip"], true),
            (&["deflate, gzip;q=1.0, br"], true),
            (&["br", "gzip"], true),
            (&["gzip;q=0"], false),
            (&["gzip;q=0.000"], false),
            (&["gzip;q=0.001"], true),
            (&["gzip; q=0.5"], true),
            (&["gzip;Q=0.5"], true),
            (&["*"], true),
            (&["*;q=0"], false),
            (&["*, gzip;q=0"], false),
            (&["gzip;q=0, *"], false),
            (&["identity"], false),
            (&["br;q=1, identity;q=0.5"], false),
            (&["gzip;q=2"], false),
            (&["gzip;q=0.5000"], false),
            (&["gzip;q=abc"], false),
            (&["gzip;level=9"], true),
            (&["gzip;q=0, gzip;q=0.8"], true),
            (&["gzipx"], false),
            (&[" , gzip ,"], true),
        ];
        for (values, want) in cases {
            let got = accepts(values.iter().map(|v| v.as_bytes()), "gzip");
            assert_eq!(got, *want, "{values:?}");
        }
    }

    #[test]
    fn weight_table() {
        let cases: &[(&str, &str, u32)] = &[
            ("br;q=0.9, gzip", "br", 900),
            ("br;q=0.9, gzip", "gzip", 1000),
            ("br;q=0.9, gzip", "zstd", 0),
            ("zstd, *;q=0.2", "br", 200),
            ("zstd, *;q=0.2", "zstd", 1000),
            ("x-gzip;q=0.3", "gzip", 300),
            ("x-gzip;q=0.3", "br", 0),
            ("BR;q=0.05", "br", 50),
        ];
        for &(value, coding, want) in cases {
            assert_eq!(weight([value.as_bytes()], coding), want, "{value:?} {coding}");
        }
    }
}
