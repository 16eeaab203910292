//! Per-core pools of idle keep-alive upstream connections, one LIFO stack per endpoint.
//!
//! A connection enters the pool only after its response was read completely and cleanly
//! with nothing left over; it leaves it when taken, or at the worker's sweep (once a second)
//! when it has been idle past its upstream's `idle_timeout` or when the stack holds more
//! than `max_idle_per_endpoint` (the oldest go first).
//!
//! The bound is applied at the sweep, not on every return: a worker that takes a burst of
//! requests uses as many connections at once, and a stack trimmed on every return closed the
//! burst's surplus only to open it again at the next one. With 1000 client connections over
//! the default bound of 256, trimming on return made about 11,000 upstream connects a
//! second (25-29k req/s, 32-38 µs of CPU per request); kept until the sweep, the
//! connections of the first burst serve the later ones (48-53k req/s, 17-19 µs; README,
//! "Behaviour on the wire"). The pool never holds more than the worker's peak of concurrent
//! upstream exchanges, since every idle connection served one just before.
//!
//! While a connection idles, a read is posted on it ([`crate::posted`]); if that read has
//! completed when the connection is taken, the upstream closed it or sent bytes nobody asked
//! for (a framing disagreement that would be read as the next response), and it is dropped.
//! That catches what a `MSG_PEEK` before reuse caught, without its syscall.
//! A connection with a multishot receive ([`crate::multishot`]) keeps that armed instead,
//! and a completion queued on it says the same.

use std::time::{Duration, Instant};

use crate::io::Conn;

struct Idle {
    /// Boxed, as `upstream::acquire` hands it out: an upstream connection moves between the
    /// pool, `acquire` and `proxy::exchange` several times per request, and each move of
    /// the 256-byte `Conn` by value was a `memcpy` of about 29 instructions: 11,111 →
    /// 10,703 instructions per proxied request boxed (callgrind). The box is allocated once
    /// per connection, at connect, beside its read buffer.
    conn: Box<Conn>,
    since: Instant,
}

pub(crate) struct Pool {
    /// `stacks[upstream][endpoint]`, most recently used last. A `Vec`: the oldest leave
    /// only at the sweep, once a second, so shifting the rest then costs nothing per request
    /// (a `VecDeque` cost about 20 more instructions per proxied request in callgrind).
    stacks: Vec<Vec<Vec<Idle>>>,
}

impl Pool {
    pub(crate) fn new(endpoints_per_upstream: impl Iterator<Item = usize>) -> Self {
        Self { stacks: endpoints_per_upstream.map(|n| (0..n).map(|_| Vec::new()).collect()).collect() }
    }

    /// The most recently used live connection to this endpoint, if any. Inlined into both
    /// instantiations of `upstream::acquire`: out of line, the connection came back through
    /// memory, +40 instructions per plain request (callgrind).
    #[inline(always)]
    pub(crate) fn take(
        &mut self,
        upstream: usize,
        endpoint: usize,
        now: Instant,
        idle_timeout: Duration,
    ) -> Option<Box<Conn>> {
        let stack = &mut self.stacks[upstream][endpoint];
        while let Some(idle) = stack.pop() {
            let mut conn = idle.conn;
            if now.saturating_duration_since(idle.since) < idle_timeout && conn.posted_read_pending() {
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection whose last exchange ended cleanly, posting a read on it. It is
    /// closed instead when `keep` says so: no keep-alive to this upstream (`max_idle` 0), or
    /// the connection carried its `keepalive_requests` or reached its `keepalive_time`.
    pub(crate) fn put(&mut self, upstream: usize, endpoint: usize, mut conn: Box<Conn>, keep: Keep, now: Instant) {
        conn.exchanges = conn.exchanges.saturating_add(1);
        // A TLS connection holding ciphertext or plaintext beyond its response has the
        // same framing disagreement as one with bytes in `buf` (see `upstream::pool_back`).
        if keep.max_idle == 0
            || conn.worn(keep.requests, keep.time, now)
            || conn.tls.as_deref().is_some_and(crate::tls::Tls::has_buffered)
        {
            return;
        }
        conn.post_read(HEAD_ROOM);
        self.stacks[upstream][endpoint].push(Idle { conn, since: now });
    }

    /// Closes connections idle for longer than their upstream's timeout, then the oldest of
    /// any stack longer than its upstream's `max_idle`.
    pub(crate) fn sweep(&mut self, now: Instant, limits: impl Fn(usize) -> (Duration, usize)) {
        for (u, endpoints) in self.stacks.iter_mut().enumerate() {
            let (idle_timeout, max_idle) = limits(u);
            for stack in endpoints.iter_mut() {
                stack.retain(|idle| now.saturating_duration_since(idle.since) < idle_timeout);
                let surplus = stack.len().saturating_sub(max_idle);
                stack.drain(..surplus);
            }
        }
    }

    #[cfg(test)]
    fn idle_count(&self, upstream: usize, endpoint: usize) -> usize {
        self.stacks[upstream][endpoint].len()
    }
}

/// What an upstream allows a returned connection (`max_idle_per_endpoint`,
/// `keepalive_requests`, `keepalive_time`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keep {
    pub max_idle: usize,
    pub requests: Option<u32>,
    pub time: Option<Duration>,
}

impl Keep {
    pub(crate) fn of(up: &config::Upstream) -> Keep {
        Keep { max_idle: up.max_idle_per_endpoint, requests: up.keepalive_requests, time: up.keepalive_time }
    }
}

/// Room for each read of a response head, the one posted on an idle connection included.
pub(crate) const HEAD_ROOM: usize = 4096;

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use monoio::io::AsyncWriteRentExt;
    use monoio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::io::testing::on_both_drivers;
    use crate::timers::CoarseTimers;

    // Both drivers: the posted read completes differently on each (a read when polled; a
    // completion reaped by the runtime).

    /// A connection to `listener` for the pool, boxed as the pool keeps it, and its peer.
    async fn pair(listener: &TcpListener, timers: &Rc<CoarseTimers>) -> (Box<Conn>, TcpStream) {
        let (conn, peer) = crate::io::testing::pair(listener, 16, timers).await;
        (Box::new(conn), peer)
    }

    /// Lets the runtime reap completions: one connection round trip through the driver.
    async fn settle(listener: &TcpListener, timers: &Rc<CoarseTimers>) {
        drop(pair(listener, timers).await);
    }

    fn keep(max_idle: usize) -> Keep {
        Keep { max_idle, requests: None, time: None }
    }

    /// A listener for the pool's connections, their timers, and a pool of one endpoint.
    fn setup() -> (TcpListener, Rc<CoarseTimers>, Pool) {
        (TcpListener::bind("127.0.0.1:0").unwrap(), Rc::new(CoarseTimers::default()), Pool::new([1usize].into_iter()))
    }

    #[test]
    fn lifo_bounded_at_the_sweep_and_expired() {
        on_both_drivers(|_| async {
            let (listener, timers, mut pool) = setup();
            let t0 = Instant::now();
            let second = Duration::from_secs(1);
            let mut peers = Vec::new();
            let mut ports = Vec::new();
            for _ in 0..3 {
                let (c, peer) = pair(&listener, &timers).await;
                ports.push(c.stream.local_addr().unwrap().port());
                peers.push(peer);
                pool.put(0, 0, c, keep(2), t0);
            }
            // A burst over the bound stays until the sweep, which closes the oldest.
            assert_eq!(pool.idle_count(0, 0), 3);
            pool.sweep(t0, |_| (second, 2));
            assert_eq!(pool.idle_count(0, 0), 2);
            // LIFO: the most recently returned first; the oldest one is gone.
            let newest = pool.take(0, 0, t0, second).expect("a live connection");
            assert_eq!(newest.stream.local_addr().unwrap().port(), ports[2]);
            let next = pool.take(0, 0, t0, second).expect("a live connection");
            assert_eq!(next.stream.local_addr().unwrap().port(), ports[1]);
            assert!(pool.take(0, 0, t0, second).is_none());
            // No keep-alive: nothing is kept.
            pool.put(0, 0, next, keep(0), t0);
            assert_eq!(pool.idle_count(0, 0), 0);
            // Idle past the timeout: swept whatever the bound.
            pool.put(0, 0, newest, keep(2), t0);
            pool.sweep(t0 + 2 * second, |_| (second, 2));
            assert_eq!(pool.idle_count(0, 0), 0);
        });
    }

    #[test]
    fn connections_retire_after_their_requests_or_their_age() {
        on_both_drivers(|_| async {
            let (listener, timers, mut pool) = setup();
            let t0 = timers.now();
            let idle = Duration::from_secs(60);
            let (c, _peer) = pair(&listener, &timers).await;
            // keepalive_requests = 3: kept after its first and second exchange, not its third.
            let three = Keep { requests: Some(3), ..keep(4) };
            pool.put(0, 0, c, three, t0);
            let c = pool.take(0, 0, t0, idle).expect("after one exchange");
            pool.put(0, 0, c, three, t0);
            let c = pool.take(0, 0, t0, idle).expect("after two");
            pool.put(0, 0, c, three, t0);
            assert_eq!(pool.idle_count(0, 0), 0, "closed after three");
            // keepalive_time = 1 h: kept before its hour, closed at it.
            let hour = Duration::from_secs(3600);
            let aged = Keep { time: Some(hour), ..keep(4) };
            let (c, _peer) = pair(&listener, &timers).await;
            pool.put(0, 0, c, aged, t0 + hour - Duration::from_secs(1));
            let c = pool.take(0, 0, t0, idle).expect("younger than an hour");
            pool.put(0, 0, c, aged, t0 + hour);
            assert_eq!(pool.idle_count(0, 0), 0, "closed at an hour");
        });
    }

    /// With posted reads, and with multishot receives (io_uring; none on epoll, where the
    /// connections read as with `multi` false).
    #[test]
    fn closed_or_chatty_idle_connections_are_dropped_and_quiet_ones_kept() {
        on_both_drivers(|_| async {
            for multi in [false, true] {
                let (listener, timers, mut pool) = setup();
                let t0 = Instant::now();
                let idle = Duration::from_secs(60);
                let pair = async || {
                    let (mut c, peer) = pair(&listener, &timers).await;
                    if multi {
                        c.multi = c.stream.multishot();
                    }
                    (c, peer)
                };
                let (quiet, mut quiet_peer) = pair().await;
                let (closed, closed_peer) = pair().await;
                let (chatty, mut chatty_peer) = pair().await;
                pool.put(0, 0, quiet, keep(4), t0);
                pool.put(0, 0, closed, keep(4), t0);
                pool.put(0, 0, chatty, keep(4), t0);
                drop(closed_peer);
                chatty_peer.write_all(&b"HTTP/1.1 408 Request Timeout\r\n\r\n"[..]).await.0.unwrap();
                settle(&listener, &timers).await;
                // LIFO: the chatty one and the closed one are skipped and dropped.
                let mut conn = pool.take(0, 0, t0, idle).expect("the quiet connection");
                assert_eq!(pool.idle_count(0, 0), 0);
                // The posted read (or the armed receive) is the connection's next read: it
                // gets what the peer sends now.
                quiet_peer.write_all(&b"HTTP/1.1 200 OK\r\n"[..]).await.0.unwrap();
                let n = conn.fill(HEAD_ROOM, Duration::from_secs(5)).await.unwrap();
                assert_eq!(&conn.buf[..n], b"HTTP/1.1 200 OK\r\n");
                assert!(conn.buf.capacity() >= HEAD_ROOM);
                if conn.multi.is_none() {
                    assert!(!conn.posted_read_pending(), "the posted read was the one consumed");
                }
            }
        });
    }
}
