//! Fuzzes the readers of field values a peer sends: Cache-Control (requests and upstream
//! responses), Accept-Encoding, Cookie and `traceparent`. No panics, a list value reads the same
//! as one field or as its comma-separated pieces (RFC 9110 5.3), weights stay within 0-1, and a `traceparent` that reads is written back to the same ids.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_http::cache_control::{delta_seconds, CacheControl, MAX_DELTA_SECONDS};
use proto_http::{accept_encoding, cookie, trace_context};

fuzz_target!(|data: &[u8]| {
    let pieces: Vec<&[u8]> = data.split(|&b| b == b',').collect();
    // RFC 9110 5.3: a list field sent as several lines means the same as one line that
    // joins them with commas (outside quoted strings, whose commas are not separators).
    let unquoted = !data.contains(&b'"');
    let cc = CacheControl::parse([data]);
    if unquoted {
        assert_eq!(cc, CacheControl::parse(pieces.iter().copied()));
    }
    assert!(cc.max_age.is_none_or(|s| s <= MAX_DELTA_SECONDS));
    assert!(cc.s_maxage.is_none_or(|s| s <= MAX_DELTA_SECONDS));
    assert!(delta_seconds(data).is_none_or(|s| s <= MAX_DELTA_SECONDS));
    for coding in ["gzip", "br", "zstd", "identity"] {
        let w = accept_encoding::weight([data], coding);
        assert!(w <= 1000, "a qvalue is at most 1 (1000 thousandths), got {w}");
        if unquoted {
            assert_eq!(w, accept_encoding::weight(pieces.iter().copied(), coding));
        }
        assert_eq!(accept_encoding::accepts([data], coding), w > 0);
    }
    if let Some(v) = cookie::find([data], b"session") {
        // The value is a piece of the input.
        let (start, end) = (v.as_ptr() as usize, v.as_ptr() as usize + v.len());
        assert!(start >= data.as_ptr() as usize && end <= data.as_ptr() as usize + data.len());
    }
    if let Some(tp) = trace_context::parse(data) {
        let mut out = [0u8; trace_context::LEN];
        trace_context::write(&mut out, &tp.trace_id, &tp.parent_id, tp.sampled);
        assert_eq!(trace_context::parse(&out), Some(tp));
    }
});
