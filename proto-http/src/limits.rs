//! Named limits for every unbounded quantity on the wire. The engine fills them from config.

/// Upper bounds applied while parsing. Exceeding one is an error, never a reallocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes in a request or response head, start line and CRLFCRLF included.
    pub max_head_bytes: usize,
    /// Header fields in one head (at most [`Limits::HEADER_CAP`]).
    pub max_headers: usize,
    /// Bytes in the request target.
    pub max_uri_bytes: usize,
    /// Bytes of chunk extensions on one chunk line.
    pub max_chunk_ext_bytes: usize,
    /// Bytes in a chunked trailer section.
    pub max_trailer_bytes: usize,
}

impl Limits {
    /// The largest `max_headers` the parser supports (the size of its stack array).
    pub const HEADER_CAP: usize = 256;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head_bytes: 32 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            max_chunk_ext_bytes: 1024,
            max_trailer_bytes: 8 * 1024,
        }
    }
}
