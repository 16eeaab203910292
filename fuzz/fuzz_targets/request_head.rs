//! Fuzzes request head parsing: no panics, spans inside the input, and a head that parses
//! is stable (parsing exactly its bytes gives the same result).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_http::{parse_request, Limits, RequestHead};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_head_bytes: 4096, max_headers: 32, max_uri_bytes: 1024, ..Limits::default() };
    if let Ok(Some(meta)) = parse_request(data, &limits) {
        assert!(meta.head_len <= data.len() && meta.head_len <= limits.max_head_bytes);
        let again = parse_request(&data[..meta.head_len], &limits).expect("a parsed head parses alone").expect("complete");
        assert_eq!(again, meta);
        let head = RequestHead::new(bytes::Bytes::copy_from_slice(&data[..meta.head_len]), meta);
        let _ = (head.method(), head.path(), head.path_only(), head.host(), head.max_forwards());
        assert!(head.headers().count() <= 32);
    }
});
