//! HTTP/1.1 pipelining to an upstream (`upstreams[].pipeline`, RFC 9112 9.3.2): the requests
//! that several client connections make in one turn of the worker's loop go out on one
//! upstream connection in one write, and each client's task reads its own response from that
//! connection when the one before it is done, in the order the requests were written.
//!
//! Which requests may be pipelined (idempotent, no body) and what happens around the
//! exchange are `proxy`'s; taking and returning connections are `upstream`'s and `pool`'s.
//!
//! - The task that takes a connection for a pipelinable request opens a batch on it
//!   ([`open`]): it yields once, so that the tasks the same completions woke run first and
//!   append their request heads to its ([`join`]), then writes them all at once.
//! - The connection passes from task to task ([`hand_on`], from `upstream::pool_back`), and
//!   goes back to the pool after the batch's last response.
//! - When the connection ends before a request's response began (an error, a response that
//!   closes it, a task that gave up its place), every request after it fails with nothing
//!   received, and is sent again on a new connection of its own, as a request on a stale
//!   pooled connection is (`proxy::exchange`): all of them are idempotent.
//!
//! Why: on loopback the kernel's work per send (the peer's receive runs inline) is most of a
//! proxied request's cost; one send and one wakeup of the upstream for several requests is
//! the only way to pay less of it than one per request (README, "Pipelining to upstreams").

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::io::Conn;

/// How a request head goes upstream, as `proxy` decides for each attempt.
#[derive(Clone, Copy)]
pub(crate) enum Pipe {
    /// On its own.
    Alone,
    /// First of a batch: with the heads of the requests that join it, in one write.
    Open { depth: usize, upstream: usize, endpoint: usize },
    /// In a batch another request opened, whose write carried it.
    Joined,
}

/// A connection's batches, one after another: made at its first, kept with it.
pub(crate) struct Batch {
    /// The endpoint the connection goes to.
    endpoint: Cell<usize>,
    /// Taking requests: while its opener waits for the other tasks of the same turn.
    open: Cell<bool>,
    /// Requests that may still join the open batch.
    room: Cell<usize>,
    /// The request heads of the open batch, the opener's first.
    heads: RefCell<Vec<u8>>,
    /// Places given out over the connection's life: a joiner's number is its place.
    issued: Cell<u64>,
    /// Places whose turn came (the connection handed to them, or failed).
    served: Cell<u64>,
    /// The connection ended: places from here on fail.
    failed_from: Cell<u64>,
    /// The places not yet served, in order, `served` first.
    waiting: RefCell<VecDeque<Wait>>,
    /// The connection, between the task that handed it on and the one whose turn it is.
    parked: RefCell<Option<Box<Conn>>>,
}

enum Wait {
    Waiting(Option<Waker>),
    /// Its task is gone; its response will come all the same.
    Abandoned,
}

impl Batch {
    /// A connection's batches of up to `depth` requests: the places of one are allocated
    /// here, once; the heads' buffer grows to the largest batch and keeps its allocation.
    fn new(depth: usize) -> Self {
        Self {
            endpoint: Cell::new(0),
            open: Cell::new(false),
            room: Cell::new(0),
            heads: RefCell::default(),
            issued: Cell::new(0),
            served: Cell::new(0),
            failed_from: Cell::new(u64::MAX),
            waiting: RefCell::new(VecDeque::with_capacity(depth)),
            parked: RefCell::default(),
        }
    }

    /// The connection is gone: every place not yet served fails.
    fn fail(&self) {
        self.open.set(false);
        let from = self.served.get();
        self.failed_from.set(from.min(self.failed_from.get()));
        self.served.set(self.issued.get());
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        for w in waiting {
            if let Wait::Waiting(Some(waker)) = w {
                waker.wake();
            }
        }
    }
}

/// A connection's tie to its batches, kept in [`Conn::pipeline`]. Dropped with the
/// connection, it fails the places still waiting for their turn.
pub(crate) struct Link(Rc<Batch>);

impl Drop for Link {
    fn drop(&mut self) {
        self.0.fail();
    }
}

/// The worker's open batch of each upstream, if any, and the openers waiting for the other
/// tasks of their turn of the loop.
pub(crate) struct Open {
    batches: RefCell<Vec<Option<Rc<Batch>>>>,
    /// Openers to wake from the back of the run queue.
    yielded: RefCell<Vec<Waker>>,
    /// The worker's [`flusher`] task, while it waits.
    flusher: RefCell<Option<Waker>>,
}

impl Open {
    pub(crate) fn new(upstreams: usize) -> Self {
        Self { batches: RefCell::new(vec![None; upstreams]), yielded: RefCell::default(), flusher: RefCell::default() }
    }
}

/// A task of each worker with a pipelined upstream: wakes the openers that yielded.
///
/// monoio runs a task that wakes itself while polled again first (it goes to the front of
/// the run queue), so an opener cannot yield to the tasks behind it on its own. Woken by
/// an opener, this task goes to the back of the queue, behind the tasks the same
/// completions woke; when it runs, those have joined, and the openers it wakes go to the
/// back in turn.
pub(crate) async fn flusher(w: Rc<crate::worker::Worker>) {
    wake_yielded(&w.pipelines).await;
}

/// The [`flusher`]'s loop: never ends.
async fn wake_yielded(open: &Open) {
    std::future::poll_fn(|cx| {
        // Waking only queues the task: nothing polls an opener while this borrow lasts,
        // and the list keeps its allocation.
        for waker in open.yielded.borrow_mut().drain(..) {
            waker.wake();
        }
        *open.flusher.borrow_mut() = Some(cx.waker().clone());
        Poll::<()>::Pending
    })
    .await;
}

/// Appends `head` to `upstream`'s open batch, if one has room; the place returned resolves
/// to the connection (and its endpoint) when the responses before this one were read.
pub(crate) fn join(open: &Open, upstream: usize, head: &[u8]) -> Option<Place> {
    let batches = open.batches.borrow();
    let batch = batches[upstream].as_ref().filter(|b| b.open.get() && b.room.get() > 0)?;
    batch.room.set(batch.room.get() - 1);
    if batch.room.get() == 0 {
        batch.open.set(false);
    }
    batch.heads.borrow_mut().extend_from_slice(head);
    let n = batch.issued.get();
    batch.issued.set(n + 1);
    batch.waiting.borrow_mut().push_back(Wait::Waiting(None));
    Some(Place { batch: batch.clone(), n, done: false })
}

/// Opens a batch on `up` with `head` for up to `depth` requests, lets the other tasks of this
/// turn join it, and writes all their heads in one write (bounded by `timeout`). Returns
/// how many requests the write carried. A failed write fails the joiners when `up` is
/// dropped.
pub(crate) async fn open(
    open: &Open,
    upstream: usize,
    endpoint: usize,
    up: &mut Conn,
    head: &[u8],
    depth: usize,
    timeout: Duration,
) -> std::io::Result<usize> {
    let batch = up.pipeline.get_or_insert_with(|| Link(Rc::new(Batch::new(depth)))).0.clone();
    batch.endpoint.set(endpoint);
    batch.room.set(depth - 1);
    batch.open.set(true);
    batch.heads.borrow_mut().extend_from_slice(head);
    open.batches.borrow_mut()[upstream] = Some(batch.clone());
    Yield { open, yielded: false }.await;
    batch.open.set(false);
    {
        let mut slot = open.batches.borrow_mut();
        if slot[upstream].as_ref().is_some_and(|b| Rc::ptr_eq(b, &batch)) {
            slot[upstream] = None;
        }
    }
    let heads = std::mem::take(&mut *batch.heads.borrow_mut());
    let mut heads = up.write(heads, timeout).await?;
    heads.clear();
    *batch.heads.borrow_mut() = heads;
    Ok(depth - batch.room.get())
}

/// After a response was read whole from `up` and the connection can carry more: hands it
/// to the next place of its batch and returns `None`, or returns it when no place waits
/// (for the pool). A next place whose task is gone leaves a response nobody reads: the
/// connection is dropped, and the places after it fail.
pub(crate) fn hand_on(mut up: Box<Conn>) -> Option<Box<Conn>> {
    let batch = match &up.pipeline {
        Some(link) if link.0.served.get() < link.0.issued.get() => link.0.clone(),
        _ => return Some(up),
    };
    up.exchanges = up.exchanges.saturating_add(1);
    let next = batch.waiting.borrow_mut().pop_front();
    batch.served.set(batch.served.get() + 1);
    match next {
        Some(Wait::Waiting(waker)) => {
            *batch.parked.borrow_mut() = Some(up);
            if let Some(waker) = waker {
                waker.wake();
            }
        }
        // Dropping `up` fails the places after this one.
        _ => drop(up),
    }
    None
}

/// A request's place in a batch: resolves to the connection, with its endpoint, when its
/// turn comes; to `Err` when the connection ended before.
pub(crate) struct Place {
    batch: Rc<Batch>,
    n: u64,
    /// The connection was taken.
    done: bool,
}

impl Future for Place {
    type Output = Result<(Box<Conn>, usize), ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let b = &self.batch;
        if self.n >= b.failed_from.get() {
            return Poll::Ready(Err(()));
        }
        if self.n < b.served.get() {
            let conn = b.parked.borrow_mut().take().expect("the connection is parked for the place served last");
            let endpoint = b.endpoint.get();
            self.done = true;
            return Poll::Ready(Ok((conn, endpoint)));
        }
        let i = (self.n - b.served.get()) as usize;
        if let Some(Wait::Waiting(w)) = b.waiting.borrow_mut().get_mut(i) {
            match w {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
        Poll::Pending
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let b = &self.batch;
        if self.done || self.n >= b.failed_from.get() {
            return;
        }
        if self.n < b.served.get() {
            // Its turn came and nobody took the connection: its response goes unread.
            let conn = b.parked.borrow_mut().take();
            drop(conn);
            return;
        }
        let i = (self.n - b.served.get()) as usize;
        if let Some(w) = b.waiting.borrow_mut().get_mut(i) {
            *w = Wait::Abandoned;
        }
    }
}

/// Pending once, until the [`flusher`] wakes the task from the back of the run queue.
struct Yield<'a> {
    open: &'a Open,
    yielded: bool,
}

impl Future for Yield<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        self.open.yielded.borrow_mut().push(cx.waker().clone());
        if let Some(flusher) = self.open.flusher.borrow_mut().take() {
            flusher.wake();
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use monoio::io::AsyncReadRent;
    use monoio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::io::testing::{on_both_drivers, pair};
    use crate::timers::CoarseTimers;

    const HOUR: Duration = Duration::from_secs(3600);

    /// Open batches of one upstream, with the flusher that wakes their openers running.
    fn open_with_flusher() -> Rc<Open> {
        let open = Rc::new(Open::new(1));
        monoio::spawn({
            let open = open.clone();
            async move { wake_yielded(&open).await }
        });
        open
    }

    /// A batch of up to `depth` requests on a new connection to endpoint 3: `heads[0]` opens
    /// it, the others try to join during its yield. Returns the connection, each joiner's
    /// place (`None`: it found no room), the requests the write carried, and the peer.
    async fn batch(
        open: &Rc<Open>,
        depth: usize,
        heads: &[&[u8]],
    ) -> (Box<Conn>, Vec<Option<Place>>, usize, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let timers = Rc::new(CoarseTimers::default());
        let (conn, peer) = pair(&listener, 4096, &timers).await;
        let mut conn = Box::new(conn);
        let (places, written) = {
            let opening = self::open(open, 0, 3, &mut conn, heads[0], depth, HOUR);
            let mut opening = std::pin::pin!(opening);
            // The first poll opens the batch and yields; the others of the turn join.
            std::future::poll_fn(|cx| {
                assert!(opening.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            let places = heads[1..].iter().map(|head| join(open, 0, head)).collect();
            (places, opening.await.unwrap())
        };
        (conn, places, written, peer)
    }

    /// [`batch`] of depth 4, every joiner in it.
    async fn full(open: &Rc<Open>, joins: &[&[u8]]) -> (Box<Conn>, Vec<Place>, TcpStream) {
        let heads: Vec<&[u8]> = std::iter::once(&b"GET /0 HTTP/1.1\r\n\r\n"[..]).chain(joins.iter().copied()).collect();
        let (conn, places, written, peer) = batch(open, 4, &heads).await;
        assert_eq!(written, heads.len(), "requests the write carried");
        (conn, places.into_iter().map(|p| p.expect("the batch is open")).collect(), peer)
    }

    /// Reads from `peer` until `want` bytes came.
    async fn read_exactly(peer: &mut TcpStream, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < want {
            let (n, buf) = peer.read(Vec::with_capacity(want)).await;
            assert!(n.unwrap() > 0, "the peer closed");
            got.extend_from_slice(&buf);
        }
        got
    }

    #[test]
    fn one_write_carries_the_batch_and_the_connection_passes_in_order() {
        on_both_drivers(|_| async {
            let open = open_with_flusher();
            let (conn, places, mut peer) = full(&open, &[b"GET /1 HTTP/1.1\r\n\r\n", b"GET /2 HTTP/1.1\r\n\r\n"]).await;
            // All three heads were sent before any response: the opener's first.
            let heads = b"GET /0 HTTP/1.1\r\n\r\nGET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n";
            assert_eq!(read_exactly(&mut peer, heads.len()).await, heads);
            // The batch closed when its opener wrote: later requests open their own.
            assert!(join(&open, 0, b"GET /3 HTTP/1.1\r\n\r\n").is_none());
            let mut places = places.into_iter();
            let (first, second) = (places.next().unwrap(), places.next().unwrap());
            // The connection goes to the first joiner, then to the second, then back.
            assert!(hand_on(conn).is_none());
            let (conn, endpoint) = first.await.unwrap();
            assert_eq!(endpoint, 3);
            assert!(hand_on(conn).is_none());
            let (conn, _) = second.await.unwrap();
            let conn = hand_on(conn).expect("no place waits: back to the pool");
            assert_eq!(conn.exchanges, 2);
        });
    }

    #[test]
    fn a_connection_that_ends_fails_the_places_after_it() {
        on_both_drivers(|_| async {
            let open = open_with_flusher();
            // Dropped by the opener (an error, a response that closes it).
            let (conn, places, _peer) = full(&open, &[b"GET /1\r\n\r\n", b"GET /2\r\n\r\n"]).await;
            drop(conn);
            for place in places {
                assert!(place.await.is_err());
            }
            // Handed to a place whose task is gone: the places after it fail.
            let (conn, places, _peer) = full(&open, &[b"GET /1\r\n\r\n", b"GET /2\r\n\r\n"]).await;
            let mut places = places.into_iter();
            drop(places.next());
            assert!(hand_on(conn).is_none());
            assert!(places.next().unwrap().await.is_err());
            // A place whose task is gone when its turn came drops the connection.
            let (conn, places, _peer) = full(&open, &[b"GET /1\r\n\r\n", b"GET /2\r\n\r\n"]).await;
            let mut places = places.into_iter();
            let first = places.next().unwrap();
            assert!(hand_on(conn).is_none());
            drop(first);
            assert!(places.next().unwrap().await.is_err());
        });
    }

    #[test]
    fn a_batch_takes_at_most_its_depth() {
        on_both_drivers(|_| async {
            let open = open_with_flusher();
            let (_conn, places, written, mut peer) = batch(&open, 3, &[b"a", b"b", b"c", b"d"]).await;
            // Depth 3: the fourth opens a batch of its own.
            assert!(places[2].is_none());
            assert_eq!(written, 3);
            let places: Vec<Place> = places.into_iter().flatten().collect();
            assert_eq!(places.len(), 2);
            assert_eq!(read_exactly(&mut peer, 3).await, b"abc");
        });
    }
}
