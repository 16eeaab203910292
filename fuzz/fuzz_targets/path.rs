//! Fuzzes path normalisation against a plain reference written from RFC 3986 (decode the
//! unreserved percent-encodings, then walk the segments with a stack): the two agree on every
//! input, a result never grows, normalising it again changes nothing, and the query is kept.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_http::path::normalize;
use proto_http::{ParseError, PathRules};

fn reference(target: &[u8], rules: PathRules) -> Result<Vec<u8>, ParseError> {
    let q = target.iter().position(|&b| b == b'?').unwrap_or(target.len());
    let (path, query) = target.split_at(q);
    // A byte no path may hold is the first thing reported, wherever it is.
    if !path.iter().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(b)) {
        return Err(ParseError::PathCharacter);
    }
    let mut decoded = Vec::new();
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b != b'%' {
            decoded.push(b);
            i += 1;
            continue;
        }
        let hex = path.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit)).ok_or(ParseError::PathEncoding)?;
        let c = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
        match c {
            0 => return Err(ParseError::PathEncoding),
            b'/' | b'\\' if rules.reject_encoded_slashes => return Err(ParseError::EncodedSlash),
            c if c.is_ascii_alphanumeric() || b"-._~".contains(&c) => decoded.push(c),
            _ => decoded.extend_from_slice(&[b'%', hex[0].to_ascii_uppercase(), hex[1].to_ascii_uppercase()]),
        }
        i += 3;
    }
    let segments: Vec<&[u8]> = decoded[1..].split(|&b| b == b'/').collect();
    let mut out: Vec<&[u8]> = Vec::new();
    for (n, seg) in segments.iter().enumerate() {
        let last = n + 1 == segments.len();
        match *seg {
            b"." => {}
            b".." => {
                out.pop();
            }
            b"" if rules.merge_slashes && !last => {}
            s => out.push(s),
        }
        if last && matches!(*seg, b"." | b"..") {
            out.push(b"");
        }
    }
    let mut result = Vec::new();
    for s in &out {
        result.push(b'/');
        result.extend_from_slice(s);
    }
    if result.is_empty() {
        result.push(b'/');
    }
    result.extend_from_slice(query);
    Ok(result)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let rules = PathRules { merge_slashes: flags & 1 != 0, reject_encoded_slashes: flags & 2 != 0 };
    let mut target = vec![b'/'];
    target.extend_from_slice(rest);
    let want = reference(&target, rules);
    let mut buf = target.clone();
    let got = normalize(&mut buf, rules).map(|n| buf[..n].to_vec());
    assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&target));
    if let Ok(once) = got {
        assert!(once.len() <= target.len());
        let mut again = once.clone();
        let n = normalize(&mut again, rules).expect("a normalised path stays valid");
        assert_eq!(&again[..n], &once[..]);
    }
});
