//! The load loops: each thread runs its share of connections on its own runtime. Closed
//! loop keeps every connection busy (optionally pipelined); open loop sends on the
//! [`Schedule`] and measures each request from when it should have been sent.
//!
//! A connection that the server closes, or that fails, is re-opened and counted; the run
//! goes on until its end time.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::Sender;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::pacer::Pacer;
use crate::schedule::Schedule;
use crate::stats::Stats;
use crate::tls::{Session, Target};
use crate::wire::{chunked_len, parse_head, BodyKind};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Closed,
    /// Requests per second across all threads and connections.
    Open {
        rate: f64,
    },
}

/// What one thread does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    /// For an `https://` target.
    pub tls: Option<Target>,
    /// One complete request.
    pub request: Bytes,
    pub head_request: bool,
    pub pipeline: usize,
    pub mode: Mode,
    /// Connections of this thread, as global indices `first..first + count` of `total`.
    pub first: usize,
    pub count: usize,
    pub total: usize,
    pub timeout: Duration,
    /// When sending starts; recording starts at `record_from`; everything stops at `end`.
    pub start: Instant,
    pub record_from: Instant,
    pub end: Instant,
}

/// Per-thread measurements: the whole run, and the interval since the last progress tick.
struct Shared {
    total: Stats,
    interval: Stats,
}

/// Runs one thread's connections; sends an interval snapshot on `progress` every second.
pub async fn run_thread(plan: Plan, progress: Option<Sender<Stats>>) -> Stats {
    let shared = Rc::new(RefCell::new(Shared { total: Stats::default(), interval: Stats::default() }));
    let plan = Rc::new(plan);
    // Open loop: send times kept to the microsecond by the pacer (monoio's own timers
    // tick in milliseconds).
    let pacer = match plan.mode {
        Mode::Open { .. } => Some(Pacer::new(plan.count).expect("a timerfd for the open-loop pacer")),
        Mode::Closed => None,
    };
    let driver = pacer.clone().map(|p| monoio::spawn(p.drive()));
    let mut tasks = Vec::with_capacity(plan.count);
    for i in 0..plan.count {
        tasks.push(monoio::spawn(connection(plan.clone(), shared.clone(), pacer.clone(), i)));
    }
    if let Some(tx) = progress {
        let shared = shared.clone();
        let end = plan.end;
        monoio::spawn(async move {
            while Instant::now() < end {
                monoio::time::sleep(Duration::from_secs(1)).await;
                let snapshot = std::mem::take(&mut shared.borrow_mut().interval);
                if tx.send(snapshot).is_err() {
                    return;
                }
            }
        });
    }
    for t in tasks {
        t.await;
    }
    if let (Some(pacer), Some(driver)) = (pacer, driver) {
        pacer.stop();
        driver.await.expect("the pacer's readiness poll");
    }
    let total = std::mem::take(&mut shared.borrow_mut().total);
    total
}

/// Outcome of one request on a connection.
enum Outcome {
    /// Response received; `close` says the server will close the connection.
    Done {
        status: u16,
        close: bool,
    },
    Failed(Failure),
}

#[derive(Clone, Copy)]
enum Failure {
    Read,
    Timeout,
    Parse,
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    tls: Option<Session>,
}

/// Connects to the plan's target, with the TLS handshake for an `https://` one. A
/// handshake that fails says why once per thread (then only counts): a certificate the
/// client does not trust fails every connection the same way.
async fn connect(plan: &Plan) -> Result<Conn, ()> {
    let mut stream = with_timeout(plan.timeout, TcpStream::connect_addr(plan.addr)).await?;
    let _ = stream.set_nodelay(true);
    let tls = match &plan.tls {
        Some(target) => match monoio::time::timeout(plan.timeout, target.handshake(&mut stream)).await {
            Ok(Ok(session)) => Some(session),
            Ok(Err(e)) => {
                thread_local!(static SAID: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
                if !SAID.replace(true) {
                    eprintln!("coregate-load: TLS handshake with {} failed: {e}", plan.addr);
                }
                return Err(());
            }
            Err(_) => return Err(()),
        },
        None => None,
    };
    Ok(Conn { stream, buf: BytesMut::with_capacity(16 * 1024), tls })
}

/// Writes one batch of requests.
async fn send(c: &mut Conn, request: &Bytes) -> std::io::Result<()> {
    match c.tls.as_mut() {
        Some(tls) => tls.write_all(&mut c.stream, request).await,
        None => c.stream.write_all(request.clone()).await.0.map(|_| ()),
    }
}

/// Connection `slot` of this thread (`plan.first + slot` of all).
async fn connection(plan: Rc<Plan>, shared: Rc<RefCell<Shared>>, pacer: Option<Rc<Pacer>>, slot: usize) {
    let schedule = match plan.mode {
        Mode::Open { rate } => Some(Schedule::new(plan.start, plan.first + slot, plan.total, rate)),
        Mode::Closed => None,
    };
    let mut conn: Option<Conn> = None;
    let mut k: u64 = 0;
    let batch = if schedule.is_some() { 1 } else { plan.pipeline.max(1) };
    let request = if batch == 1 { plan.request.clone() } else { Bytes::from(plan.request.repeat(batch)) };
    let mut ever_connected = false;
    loop {
        // When this request is due (open loop), or now (closed loop).
        let due = match &schedule {
            Some(s) => s.at(k),
            None => Instant::now(),
        };
        if due >= plan.end || Instant::now() >= plan.end {
            return;
        }
        if let Some(pacer) = &pacer {
            pacer.until(slot, due).await;
        }
        k += batch as u64;
        if conn.is_none() {
            match connect(&plan).await {
                Ok(c) => {
                    let mut s = shared.borrow_mut();
                    if ever_connected {
                        s.total.reconnects += 1;
                    }
                    if let Some(tls) = &c.tls {
                        s.total.handshake(tls.negotiated(), tls.resumed());
                    }
                    drop(s);
                    ever_connected = true;
                    conn = Some(c);
                }
                Err(_) => {
                    count_failure(&plan, &shared, due, |s| s.errors.connect += 1);
                    // Back off so a refused port does not turn into a busy loop.
                    monoio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        let sent = match &schedule {
            Some(_) => due,
            None => Instant::now(),
        };
        let mut keep = true;
        match with_timeout(plan.timeout, send(c, &request)).await {
            Ok(_) => {
                for _ in 0..batch {
                    match read_response(c, plan.head_request, plan.timeout).await {
                        Outcome::Done { status, close } => {
                            let now = Instant::now();
                            if now >= plan.record_from && now <= plan.end + plan.timeout && sent >= plan.record_from {
                                let us = now.duration_since(sent).as_micros() as u64;
                                let mut s = shared.borrow_mut();
                                s.total.response(status, us);
                                s.interval.response(status, us);
                            }
                            if close {
                                keep = false;
                                break;
                            }
                        }
                        Outcome::Failed(f) => {
                            count_failure(&plan, &shared, sent, |s| match f {
                                Failure::Timeout => s.errors.timeout += 1,
                                Failure::Parse => s.errors.parse += 1,
                                Failure::Read => s.errors.read += 1,
                            });
                            keep = false;
                            break;
                        }
                    }
                }
            }
            Err(_) => {
                count_failure(&plan, &shared, sent, |s| s.errors.write += 1);
                keep = false;
            }
        }
        if !keep {
            conn = None;
        }
    }
}

fn count_failure(plan: &Plan, shared: &RefCell<Shared>, at: Instant, f: impl Fn(&mut Stats)) {
    if at >= plan.record_from {
        let mut s = shared.borrow_mut();
        f(&mut s.total);
        f(&mut s.interval);
    }
}

async fn with_timeout<T, E>(d: Duration, f: impl std::future::Future<Output = Result<T, E>>) -> Result<T, ()> {
    match monoio::time::timeout(d, f).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(()),
    }
}

/// Reads one response (head and body) from the connection.
async fn read_response(c: &mut Conn, head_request: bool, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let head = loop {
        match parse_head(&c.buf, head_request) {
            Ok(Some(h)) => break h,
            Ok(None) => {}
            Err(_) => return Outcome::Failed(Failure::Parse),
        }
        if let Err(f) = fill_more(c, deadline).await {
            return Outcome::Failed(f);
        }
    };
    let _ = c.buf.split_to(head.head_len);
    match head.body {
        BodyKind::Length(mut n) => loop {
            let take = n.min(c.buf.len());
            let _ = c.buf.split_to(take);
            n -= take;
            if n == 0 {
                break;
            }
            c.buf.clear();
            if let Err(f) = fill_more(c, deadline).await {
                return Outcome::Failed(f);
            }
        },
        BodyKind::Chunked => loop {
            match chunked_len(&c.buf) {
                Ok(Some(n)) => {
                    let _ = c.buf.split_to(n);
                    break;
                }
                Ok(None) => {}
                Err(_) => return Outcome::Failed(Failure::Parse),
            }
            if let Err(f) = fill_more(c, deadline).await {
                return Outcome::Failed(f);
            }
        },
        BodyKind::Close => loop {
            c.buf.clear();
            match fill(c, deadline).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(f) => return Outcome::Failed(f),
            }
        },
    }
    Outcome::Done { status: head.status, close: head.close }
}

/// Reads more of a response; the server closing first is a read error.
async fn fill_more(c: &mut Conn, deadline: Instant) -> Result<(), Failure> {
    match fill(c, deadline).await? {
        0 => Err(Failure::Read),
        _ => Ok(()),
    }
}

async fn fill(c: &mut Conn, deadline: Instant) -> Result<usize, Failure> {
    let left = deadline.saturating_duration_since(Instant::now());
    if let Some(tls) = c.tls.as_mut() {
        return match monoio::time::timeout(left, tls.read(&mut c.stream, &mut c.buf)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(_)) => Err(Failure::Read),
            Err(_) => Err(Failure::Timeout),
        };
    }
    if c.buf.capacity() - c.buf.len() < 4096 {
        c.buf.reserve(16 * 1024);
    }
    let len = c.buf.len();
    let cap = c.buf.capacity();
    let buf = std::mem::take(&mut c.buf);
    match monoio::time::timeout(left, c.stream.read(monoio::buf::IoBufMut::slice_mut(buf, len..cap))).await {
        Ok((Ok(n), slice)) => {
            c.buf = slice.into_inner();
            Ok(n)
        }
        Ok((Err(_), _)) => Err(Failure::Read),
        Err(_) => Err(Failure::Timeout),
    }
}
