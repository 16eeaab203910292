//! Request ids (`server.request_id`): a client's id is kept when it is sane (1 to 128
//! visible ASCII characters), else one is made: 32 hex digits, a random number per worker
//! and that worker's request counter, unique without any coordination between cores.
//!
//! Left to others: sending it upstream and back (`forward`), logging it (`access_log`).

use std::cell::Cell;

use proto_http::RequestHead;

/// The longest client id kept.
const MAX_LEN: usize = 128;

/// One worker's id maker.
pub(crate) struct Ids {
    seed: u64,
    next: Cell<u64>,
}

/// A request's id: the client's, or one made here.
pub(crate) enum RequestId<'a> {
    Client(&'a [u8]),
    Made([u8; 32]),
}

impl RequestId<'_> {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Client(v) => v,
            RequestId::Made(v) => v,
        }
    }
}

impl Ids {
    pub(crate) fn new() -> Ids {
        // A fresh random number for each worker.
        Ids { seed: crate::random::seed(), next: Cell::new(0) }
    }

    /// The id of `req`: its `name` field when sane, else a new one.
    pub(crate) fn for_request<'a>(&self, name: &str, req: &'a RequestHead) -> RequestId<'a> {
        let sane = |v: &[u8]| (1..=MAX_LEN).contains(&v.len()) && v.iter().all(u8::is_ascii_graphic);
        match req.headers().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())) {
            Some((_, v)) if sane(v) => RequestId::Client(v),
            _ => {
                let n = self.next.get();
                self.next.set(n.wrapping_add(1));
                let mut id = [0u8; 32];
                hex(&mut id[..16], self.seed);
                hex(&mut id[16..], n);
                RequestId::Made(id)
            }
        }
    }
}

/// Writes `v` as 16 lower-case hex digits into `out` (16 bytes), most significant first.
pub(crate) fn hex(out: &mut [u8], v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::hex;

    #[test]
    fn hex_digits() {
        let mut out = [0u8; 16];
        hex(&mut out, 0x0123_4567_89ab_cdef);
        assert_eq!(&out, b"0123456789abcdef");
    }
}
