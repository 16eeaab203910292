//! The admin listener (`admin.listen`): `GET /metrics` (Prometheus text format),
//! `GET /upstreams` (each upstream's endpoints and their state, JSON),
//! `POST /upstreams/NAME/endpoints/ADDR/drain` and `.../ready` (an endpoint out of service
//! and back, on every worker, kept by reloads),
//! `GET /healthz` (200 while serving, 503 once the drain began) and `DELETE /cache` (empties
//! the response cache, or purges one target named by `x-purge-host` and `x-purge-target`),
//! on a thread of its own so
//! that a scrape never runs on a worker's core loop. One connection at a time, each closed
//! after its answer; meant for a private address.
//!
//! Left to others: the counters and their rendering (`metrics`).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::metrics::Registry;

/// Serves `listener` until `stop` is dropped.
pub(crate) fn start(
    listener: TcpListener,
    registry: Registry,
    stop: crossbeam_channel::Receiver<()>,
) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("coregate-admin".into()).spawn(move || loop {
        match listener.accept() {
            Ok((s, peer)) => {
                if let Err(e) = answer(s, &registry) {
                    log::debug!("admin request from {peer}: {e}");
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => log::warn!("admin accept failed: {e}"),
        }
        // Nothing to accept: wait a little, or stop.
        if crate::health::stopped(&stop, Duration::from_millis(20)) {
            return;
        }
    })
}

/// Reads one request head (8 KiB at most, 2 s) and answers it.
fn answer(mut s: TcpStream, registry: &Registry) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 8192 {
            return respond(&mut s, "431 Request Header Fields Too Large", "text/plain", "head too large\n", false);
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let head_only = method == b"HEAD";
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    if path == b"/cache" {
        return match (method, &registry.cache) {
            (b"DELETE", Some(cache)) => {
                // Its fields as the proxy reads them (proto-http). `x-purge-target`: the target
                // as clients send it, purged on every route with a cache; none: everything.
                let Ok(Some(meta)) = proto_http::parse_request(&head, &proto_http::Limits::default()) else {
                    return respond(&mut s, "400 Bad Request", "text/plain", "malformed request\n", false);
                };
                let req = proto_http::RequestHead::new(bytes::Bytes::copy_from_slice(&head), meta);
                match (req.header(b"x-purge-host"), req.header(b"x-purge-target")) {
                    (None, None) => {
                        let targets = cache.clear();
                        log::info!("admin: response cache emptied ({targets} targets)");
                        respond(&mut s, "200 OK", "text/plain", &format!("purged {targets} targets\n"), false)
                    }
                    (host, Some(target)) => {
                        let cached = registry.cfg.routes.iter().enumerate().filter(|(_, r)| r.cache.is_some());
                        let spaces = crate::route::fingerprints(&registry.cfg);
                        let mut key = Vec::new();
                        let purged = cached
                            .filter(|(i, _)| {
                                crate::cache::key(&mut key, spaces[*i], host, target);
                                cache.invalidate(&key)
                            })
                            .count();
                        respond(&mut s, "200 OK", "text/plain", &format!("purged {purged} targets\n"), false)
                    }
                    (Some(_), None) => {
                        respond(&mut s, "400 Bad Request", "text/plain", "x-purge-target names the target\n", false)
                    }
                }
            }
            (b"DELETE", None) => respond(&mut s, "404 Not Found", "text/plain", "no route has a cache\n", false),
            _ => respond(&mut s, "405 Method Not Allowed", "text/plain", "DELETE\n", head_only),
        };
    }
    if let Some(rest) = path.strip_prefix(b"/upstreams/") {
        return match method {
            b"POST" => {
                let (status, body) = drain(registry, rest);
                respond(&mut s, status, "text/plain", &body, false)
            }
            _ => respond(&mut s, "405 Method Not Allowed", "text/plain", "POST\n", head_only),
        };
    }
    if method != b"GET" && !head_only {
        return respond(&mut s, "405 Method Not Allowed", "text/plain", "GET or HEAD\n", head_only);
    }
    match path {
        b"/metrics" => {
            let body = registry.render();
            respond(&mut s, "200 OK", "text/plain; version=0.0.4; charset=utf-8", &body, head_only)
        }
        b"/healthz" if registry.draining.load(Ordering::Relaxed) => {
            respond(&mut s, "503 Service Unavailable", "text/plain", "draining\n", head_only)
        }
        b"/healthz" => respond(&mut s, "200 OK", "text/plain", "ok\n", head_only),
        b"/upstreams" => respond(&mut s, "200 OK", "application/json", &registry.upstreams(), head_only),
        _ => respond(&mut s, "404 Not Found", "text/plain", "/metrics, /healthz, /upstreams or /cache\n", head_only),
    }
}

/// `POST /upstreams/NAME/endpoints/ADDR/drain` takes an endpoint out of service on every
/// worker (requests in flight on it finish; pooled connections to it idle until swept) and
/// `.../ready` puts it back (slow start applies); ADDR as `/upstreams` shows it, brackets
/// of an IPv6 address written as they are or percent-encoded. The active checks go on: a
/// drained endpoint that fails them is out for both reasons.
fn drain(registry: &Registry, rest: &[u8]) -> (&'static str, String) {
    let text = String::from_utf8_lossy(rest).replace("%5B", "[").replace("%5D", "]").replace("%3A", ":");
    let parts: Vec<&str> = text.split('/').collect();
    let [name, "endpoints", addr, action] = parts[..] else {
        return ("404 Not Found", "POST /upstreams/NAME/endpoints/ADDR/drain or /ready\n".into());
    };
    let Some(u) = registry.cfg.upstreams.iter().position(|u| u.name == name) else {
        return ("404 Not Found", format!("no upstream named {name:?}\n"));
    };
    let Some(e) = addr
        .parse()
        .ok()
        .and_then(|a: std::net::SocketAddr| registry.cfg.upstreams[u].endpoints.iter().position(|&x| x == a))
    else {
        return ("404 Not Found", format!("upstream {name:?} has no endpoint {addr:?}\n"));
    };
    let state = &registry.verdicts[u][e];
    match action {
        "drain" => {
            state.fetch_or(crate::health::DRAINED, Ordering::Relaxed);
            log::warn!("admin: upstream {name} endpoint {addr} drained");
            ("200 OK", format!("upstream {name} endpoint {addr} drained\n"))
        }
        "ready" => {
            state.fetch_and(!crate::health::DRAINED, Ordering::Relaxed);
            log::warn!("admin: upstream {name} endpoint {addr} ready");
            ("200 OK", format!("upstream {name} endpoint {addr} ready\n"))
        }
        _ => ("404 Not Found", format!("{action:?}: drain or ready\n")),
    }
}

fn respond(s: &mut TcpStream, status: &str, content_type: &str, body: &str, head_only: bool) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    if !head_only {
        s.write_all(body.as_bytes())?;
    }
    Ok(())
}
