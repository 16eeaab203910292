//! The `Date` field for responses coregate generates itself (RFC 9110 6.6.1), formatted
//! once per second per core.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
}

/// Calls `f` with the current IMF-fixdate, such as `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let s = httpdate::fmt_http_date(now);
            if s.len() == 29 {
                c.1.copy_from_slice(s.as_bytes());
                c.0 = secs;
            }
        }
        f(&c.1)
    })
}
