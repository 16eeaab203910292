//! Fuzzes response head parsing: no panics, spans inside the input, bodiless rules hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_http::{parse_response, Limits, ResponseBody, ResponseHead};

fuzz_target!(|data: &[u8]| {
    let Some((&flag, data)) = data.split_first() else { return };
    let head_request = flag & 1 == 1;
    let limits = Limits { max_head_bytes: 4096, max_headers: 32, ..Limits::default() };
    if let Ok(Some(meta)) = parse_response(data, &limits, head_request) {
        assert!(meta.head_len <= data.len());
        if head_request || meta.status < 200 || meta.status == 204 || meta.status == 304 {
            assert_eq!(meta.body, ResponseBody::None);
        }
        let head = ResponseHead::new(bytes::Bytes::copy_from_slice(&data[..meta.head_len]), meta);
        let _ = (head.reason(), head.headers().count());
    }
});
