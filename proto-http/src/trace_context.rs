//! W3C Trace Context's `traceparent` field (Trace Context Level 1, section 3.2): reading a
//! request's and writing the one sent on. What to sample, which ids to make and where spans
//! go are the engine's; this module only reads and writes the field.

/// A `traceparent`: the trace, the caller's span in it, and whether the trace is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    /// The `sampled` flag (bit 0 of trace-flags).
    pub sampled: bool,
}

/// The length of a version-00 `traceparent` value.
pub const LEN: usize = 55;

/// Reads a `traceparent` value (3.2.2): `version-traceid-parentid-flags` in lower-case hex.
/// None when it is malformed: a version other than two hex digits or `ff`, version 00 with
/// anything after the flags, a trace id or parent id of all zeros, upper-case hex (3.2.2.3:
/// such a field is ignored and a new trace started). A later version is read by version
/// 00's layout, with more fields after a `-` allowed (3.2.4).
pub fn parse(value: &[u8]) -> Option<TraceParent> {
    let value = value.trim_ascii();
    if value.len() < LEN || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = hex::<1>(&value[..2])?;
    match version[0] {
        0xff => return None,
        0 if value.len() != LEN => return None,
        _ if value.len() > LEN && value[LEN] != b'-' => return None,
        _ => {}
    }
    let trace_id = hex::<16>(&value[3..35])?;
    let parent_id = hex::<8>(&value[36..52])?;
    let flags = hex::<1>(&value[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceParent { trace_id, parent_id, sampled: flags & 1 == 1 })
}

/// Writes the version-00 value for a span `span_id` of `trace_id`.
pub fn write(out: &mut [u8; LEN], trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) {
    out[..3].copy_from_slice(b"00-");
    write_hex(&mut out[3..35], trace_id);
    out[35] = b'-';
    write_hex(&mut out[36..52], span_id);
    out[52..].copy_from_slice(if sampled { b"-01" } else { b"-00" });
}

/// Lower-case hex of `bytes` into `out` (twice as long).
pub fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
}

fn hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_table() {
        let ok = |v: &str| parse(v.as_bytes()).is_some();
        let p = parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(p.trace_id[..4], [0x4b, 0xf9, 0x2f, 0x35]);
        assert_eq!(p.parent_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert!(p.sampled);
        assert!(!parse(EXAMPLE.replace("-01", "-00").as_bytes()).unwrap().sampled);
        assert!(parse(EXAMPLE.replace("-01", "-03").as_bytes()).unwrap().sampled, "other flags kept apart");
        for (value, want) in [
            (EXAMPLE.to_string(), true),
            (format!(" {EXAMPLE} "), true),
            (EXAMPLE.to_uppercase(), false),
            (EXAMPLE.replace("00-4bf", "ff-4bf"), false),
            (format!("{EXAMPLE}-extra"), false),
            (format!("{}-extra", EXAMPLE.replacen("00", "01", 1)), true),
            (format!("{}extra", EXAMPLE.replacen("00", "01", 1)), false),
            (EXAMPLE.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)), false),
            (EXAMPLE.replace("00f067aa0ba902b7", &"0".repeat(16)), false),
            (EXAMPLE[..54].to_string(), false),
            (EXAMPLE.replace('-', "_"), false),
            (EXAMPLE.replace("4bf9", "4bg9"), false),
            (String::new(), false),
        ] {
            assert_eq!(ok(&value), want, "{value:?}");
        }
    }

    #[test]
    fn written_values_read_back() {
        let p = parse(EXAMPLE.as_bytes()).unwrap();
        let mut out = [0; LEN];
        write(&mut out, &p.trace_id, &p.parent_id, true);
        assert_eq!(&out[..], EXAMPLE.as_bytes());
        write(&mut out, &p.trace_id, &[1, 2, 3, 4, 5, 6, 7, 8], false);
        assert_eq!(&out[..], b"00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-00");
    }
}
