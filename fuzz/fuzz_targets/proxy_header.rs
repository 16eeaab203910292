//! Fuzzes the PROXY protocol header parser (bytes a layer-4 balancer, or anyone who reaches
//! a listener with `proxy_protocol` on, sends first): no panics, a header never claims more
//! bytes than it has or than the versions allow, it parses the same from exactly its own
//! bytes, and every shorter prefix of it asks for more rather than failing (the engine reads
//! the header in pieces as they arrive).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_http::proxy_protocol::{parse, V2_MAX};

fuzz_target!(|data: &[u8]| {
    let Ok(Some(h)) = parse(data) else { return };
    assert!(h.len <= data.len() && h.len <= V2_MAX, "{} bytes claimed of {}", h.len, data.len());
    assert_eq!(parse(&data[..h.len]), Ok(Some(h)), "a header parses alone");
    for cut in 0..h.len {
        assert_eq!(parse(&data[..cut]), Ok(None), "a prefix of {cut} bytes");
    }
});
