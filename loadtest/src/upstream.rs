//! The bundled upstream: a small thread-per-core HTTP/1.1 server for demos, tests and
//! benchmarks. Fixed-size bodies (Content-Length or chunked), optional fixed or random
//! delays, and fault switches: close each connection after N responses, or stall (stop
//! answering, keep the connection open) after N.

use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::args::{DelayDist, UpstreamArgs};
use crate::runtime::run_threads;
use crate::wire::chunked_len;

/// Binds one SO_REUSEPORT listener per worker (port 0 resolves once for all).
pub fn bind(addr: SocketAddr, workers: usize) -> io::Result<(Vec<TcpListener>, SocketAddr)> {
    let mut out = Vec::with_capacity(workers);
    let mut actual = addr;
    for _ in 0..workers {
        let s = Socket::new(Domain::for_address(actual), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&actual.into())?;
        s.listen(4096)?;
        let l: TcpListener = s.into();
        actual = l.local_addr()?;
        out.push(l);
    }
    Ok((out, actual))
}

/// The canned responses, built once.
#[derive(Clone)]
struct Canned {
    keep: Bytes,
    close: Bytes,
    head_keep: Bytes,
    head_close: Bytes,
}

fn canned(args: &UpstreamArgs) -> Canned {
    let body: Vec<u8> = b"hello world!\n".iter().copied().cycle().take(args.body_size).collect();
    let build = |close: bool, head_only: bool| {
        let mut r = String::from("HTTP/1.1 200 OK\r\nServer: coregate-upstream\r\nContent-Type: text/plain\r\n");
        if args.chunked {
            r.push_str("Transfer-Encoding: chunked\r\n");
        } else {
            r.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        if close {
            r.push_str("Connection: close\r\n");
        }
        r.push_str("\r\n");
        let mut r = r.into_bytes();
        if !head_only {
            if args.chunked {
                if !body.is_empty() {
                    r.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                    r.extend_from_slice(&body);
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(b"0\r\n\r\n");
            } else {
                r.extend_from_slice(&body);
            }
        }
        Bytes::from(r)
    };
    Canned {
        keep: build(false, false),
        close: build(true, false),
        head_keep: build(false, true),
        head_close: build(true, true),
    }
}

/// Runs the upstream on `listeners` until the process ends.
pub fn serve(args: UpstreamArgs, listeners: Vec<TcpListener>) {
    let canned = canned(&args);
    let per_thread: Vec<std::sync::Mutex<Option<TcpListener>>> =
        listeners.into_iter().map(|l| std::sync::Mutex::new(Some(l))).collect();
    let per_thread = std::sync::Arc::new(per_thread);
    let workers = per_thread.len();
    run_threads(workers, args.pin, move |i| {
        let listener = per_thread[i].lock().expect("unpoisoned").take().expect("one listener per worker");
        let args = args.clone();
        let canned = canned.clone();
        async move {
            let listener = monoio::net::TcpListener::from_std(listener).expect("register listener");
            let rng = std::rc::Rc::new(Cell::new(0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 + 1)));
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        monoio::spawn(connection(stream, args.clone(), canned.clone(), rng.clone()));
                    }
                    Err(e) => {
                        eprintln!("upstream: accept failed: {e}");
                        monoio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
    });
}

/// xorshift64*: a tiny per-thread generator for delay distributions.
fn next_f64(state: &Cell<u64>) -> f64 {
    let mut x = state.get();
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state.set(x);
    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
}

fn delay(dist: DelayDist, rng: &Cell<u64>) -> Duration {
    match dist {
        DelayDist::Fixed(d) => d,
        DelayDist::Uniform(lo, hi) => lo + (hi.saturating_sub(lo)).mul_f64(next_f64(rng)),
        DelayDist::Exponential(mean) => mean.mul_f64(-(1.0 - next_f64(rng)).ln()),
    }
}

/// A parsed request: head length, body framing, method HEAD, client wants close.
struct Req {
    head_len: usize,
    body_len: Option<usize>,
    head: bool,
    close: bool,
}

fn parse_req(buf: &[u8]) -> Result<Option<Req>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Request::new(&mut headers);
    let head_len = match r.parse(buf).map_err(|_| ())? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let mut body_len = Some(0);
    let mut close = r.version == Some(0);
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body_len = Some(std::str::from_utf8(h.value).map_err(|_| ())?.trim().parse().map_err(|_| ())?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            body_len = None;
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = h.value.to_ascii_lowercase();
            close = v.windows(5).any(|w| w == b"close") || (close && !v.windows(10).any(|w| w == b"keep-alive"));
        }
    }
    Ok(Some(Req { head_len, body_len, head: r.method == Some("HEAD"), close }))
}

async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> bool {
    buf.reserve(8 * 1024);
    let len = buf.len();
    let cap = buf.capacity();
    let (res, slice) = stream.read(monoio::buf::IoBufMut::slice_mut(std::mem::take(buf), len..cap)).await;
    *buf = slice.into_inner();
    matches!(res, Ok(n) if n > 0)
}

async fn connection(mut stream: TcpStream, args: UpstreamArgs, canned: Canned, rng: std::rc::Rc<Cell<u64>>) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut served: u64 = 0;
    loop {
        let req = loop {
            match parse_req(&buf) {
                Ok(Some(r)) => break r,
                Ok(None) => {
                    if !read_more(&mut stream, &mut buf).await {
                        return;
                    }
                }
                Err(()) => {
                    let _ = stream
                        .write_all(&b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..])
                        .await;
                    return;
                }
            }
        };
        let _ = buf.split_to(req.head_len);
        // Skip the request body.
        match req.body_len {
            Some(mut n) => loop {
                let take = n.min(buf.len());
                let _ = buf.split_to(take);
                n -= take;
                if n == 0 {
                    break;
                }
                if !read_more(&mut stream, &mut buf).await {
                    return;
                }
            },
            None => loop {
                match chunked_len(&buf) {
                    Ok(Some(n)) => {
                        let _ = buf.split_to(n);
                        break;
                    }
                    Ok(None) if read_more(&mut stream, &mut buf).await => {}
                    _ => return,
                }
            },
        }
        if args.stall_after.is_some_and(|n| served >= n) {
            // Stall: keep the connection open, answer nothing, until the peer goes away.
            while read_more(&mut stream, &mut buf).await {
                buf.clear();
            }
            return;
        }
        if let Some(d) = args.delay {
            monoio::time::sleep(delay(d, &rng)).await;
        }
        served += 1;
        let close = req.close || args.close_after.is_some_and(|n| served >= n);
        let resp = match (req.head, close) {
            (false, false) => canned.keep.clone(),
            (false, true) => canned.close.clone(),
            (true, false) => canned.head_keep.clone(),
            (true, true) => canned.head_close.clone(),
        };
        let (res, _) = stream.write_all(resp).await;
        if res.is_err() || close {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_in_range() {
        let rng = Cell::new(42);
        for _ in 0..1000 {
            let d = delay(DelayDist::Uniform(Duration::from_millis(1), Duration::from_millis(3)), &rng);
            assert!(d >= Duration::from_millis(1) && d <= Duration::from_millis(3));
        }
        let mean: f64 = (0..20_000)
            .map(|_| delay(DelayDist::Exponential(Duration::from_millis(2)), &rng).as_secs_f64())
            .sum::<f64>()
            / 20_000.0;
        assert!((mean - 0.002).abs() < 0.0002, "mean {mean}");
    }
}
