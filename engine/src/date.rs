//! The `Date` field coregate writes (RFC 9110 6.6.1): on its own answers, and on proxied
//! responses that came without one. Formatted once per second per core; on a worker, the
//! clock is read by the control tick, not per response.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// The formatted second, and whether a worker's tick keeps it current.
struct Current {
    secs: u64,
    text: [u8; 29],
    ticked: bool,
}

thread_local! {
    static CURRENT: RefCell<Current> = const { RefCell::new(Current { secs: 0, text: [0; 29], ticked: false }) };
}

/// Reads the clock and formats the date again if the second changed. A worker calls it on
/// its control tick (every 50 ms), after which [`with_date`] on that thread reads no clock:
/// `SystemTime::now()` per proxied response cost about 200 instructions of 11,450 per request
/// (callgrind), for a value that changes once a second. The date is then at most a tick
/// behind, well within the second it is written to.
pub(crate) fn refresh() {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        c.ticked = true;
        set(&mut c);
    });
}

fn set(c: &mut Current) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if c.secs != secs {
        let s = httpdate::fmt_http_date(now);
        if s.len() == 29 {
            c.text.copy_from_slice(s.as_bytes());
            c.secs = secs;
        }
    }
}

/// Calls `f` with the current IMF-fixdate, such as `Sun, 06 Nov 1994 08:49:37 GMT`. On a
/// thread without a tick the clock is read each time.
pub(crate) fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        if !c.ticked {
            set(&mut c);
        }
        f(&c.text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdates_of_now() {
        let text = with_date(|d| String::from_utf8(d.to_vec()).unwrap());
        let parsed = httpdate::parse_http_date(&text).unwrap();
        let now = SystemTime::now();
        assert!(now.duration_since(parsed).unwrap() < std::time::Duration::from_secs(5), "{text}");
        refresh();
        assert_eq!(with_date(|d| d.len()), 29);
    }
}
