//! Fuzzes the chunked decoder: no panics, ranges inside the input, and the same outcome
//! (data, end, or error) whether the input arrives at once or in pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_http::chunked::{ChunkedDecoder, Decoded};
use proto_http::Limits;

/// Decodes `input` fed `step` bytes at a time. Returns (data, Some(consumed) when done) or
/// the error.
fn run(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<usize>), proto_http::ParseError> {
    let limits = Limits { max_chunk_ext_bytes: 64, max_trailer_bytes: 256, ..Limits::default() };
    let mut d = ChunkedDecoder::new(&limits);
    let mut data = Vec::new();
    let mut pos = 0;
    let mut avail = step.min(input.len());
    loop {
        let window = &input[pos..avail];
        let (used, ev) = d.decode(window)?;
        assert!(used <= window.len());
        match ev {
            Decoded::Data(r) => {
                assert!(r.start <= r.end && r.end == used);
                data.extend_from_slice(&window[r]);
            }
            Decoded::Done => return Ok((data, Some(pos + used))),
            Decoded::NeedMore => {
                assert_eq!(used, window.len());
                if avail == input.len() {
                    return Ok((data, None));
                }
                avail = (avail + step).min(input.len());
            }
        }
        pos += used;
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&step, input)) = input.split_first() else { return };
    let whole = run(input, input.len().max(1));
    let pieces = run(input, usize::from(step % 16) + 1);
    match (&whole, &pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("outcome depends on how the input was split: {whole:?} vs {pieces:?}"),
    }
});
