//! The `Cookie` request field (RFC 6265 5.4): a cookie's value by name. What the value is
//! used for (a balancing key) is the engine's.

use crate::fields::trim_ows;

/// The value of the first cookie named `name` (case-sensitive, RFC 6265 5.3 step 11's
/// comparison) among the `Cookie` field values `values`, as sent (surrounding DQUOTEs kept).
/// Pairs are separated by `;` (RFC 6265 4.2.1 `cookie-string`), read leniently: spaces and
/// tabs around names and values are skipped, and a pair without `=` is no cookie.
pub fn find<'a>(values: impl IntoIterator<Item = &'a [u8]>, name: &[u8]) -> Option<&'a [u8]> {
    values.into_iter().flat_map(|v| v.split(|&b| b == b';')).find_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        (trim_ows(&pair[..eq]) == name).then(|| trim_ows(&pair[eq + 1..]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_by_name() {
        let cases: &[(&[&str], &str, Option<&str>)] = &[
            (&["session=abc"], "session", Some("abc")),
            (&["a=1; session=abc; b=2"], "session", Some("abc")),
            (&["a=1;session=abc"], "session", Some("abc")),
            (&["a=1", "session=abc"], "session", Some("abc")),
            (&["session=abc; session=def"], "session", Some("abc")),
            (&[" session = abc "], "session", Some("abc")),
            (&["session=\"q v\""], "session", Some("\"q v\"")),
            (&["session="], "session", Some("")),
            (&["session=a=b"], "session", Some("a=b")),
            (&["Session=abc"], "session", None),
            (&["xsession=abc"], "session", None),
            (&["session"], "session", None),
            (&[""], "session", None),
            (&[], "session", None),
        ];
        for (values, name, want) in cases {
            let got = find(values.iter().map(|v| v.as_bytes()), name.as_bytes());
            assert_eq!(got, want.map(str::as_bytes), "{values:?} {name}");
        }
    }
}
