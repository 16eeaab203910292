//! The `[server]` table to a validated [`Server`]: listeners, workers and driver, limits per
//! client, the path rules and the routes they would make unreachable. Shared checks (the
//! [`Checker`], durations, keep-alive bounds) are `validate`'s.

use std::num::NonZeroUsize;

use crate::raw::RawConfig;
use crate::validate::{keepalive_requests, keepalive_time, Checker};
use crate::{IoBatch, IoMode, ProxyProtocol, Server};

pub(crate) fn check_route_paths(
    c: &mut Checker,
    rules: Option<proto_http::PathRules>,
    routes: &[crate::raw::RawRoute],
) {
    let Some(rules) = rules else { return };
    for (i, r) in routes.iter().enumerate() {
        for (key, p) in [("path", &r.path), ("path_exact", &r.path_exact)] {
            let Some(p) = p.as_deref().filter(|p| p.starts_with('/')) else { continue };
            let mut b = p.as_bytes().to_vec();
            let why = match proto_http::path::normalize(&mut b, rules) {
                Ok(n) if b[..n] == *p.as_bytes() => continue,
                Ok(n) => format!("normalised, such a path reads {:?}", String::from_utf8_lossy(&b[..n])),
                Err(e) => format!("such a path is refused ({e})"),
            };
            c.err(
                format!("routes[{i}].{key}"),
                format!("{p:?} can never match: request paths are normalised first (server.normalize_path) and {why}"),
            );
        }
    }
}

/// `server.normalize_path` and what refines it. The refinements without normalising would be
/// ignored, so they are an error there.
fn path_rules(c: &mut Checker, s: &crate::raw::RawServer) -> Option<proto_http::PathRules> {
    let reject_encoded_slashes = match s.escaped_slashes.as_deref() {
        None | Some("keep") => false,
        Some("reject") => true,
        Some(other) => {
            c.err("server.escaped_slashes", format!("unknown action {other:?} (expected \"keep\" or \"reject\")"));
            false
        }
    };
    if s.normalize_path == Some(false) {
        for (key, set) in [
            ("server.merge_slashes", s.merge_slashes.is_some()),
            ("server.escaped_slashes", s.escaped_slashes.is_some()),
        ] {
            if set {
                c.err(key, "has no effect with normalize_path = false");
            }
        }
        return None;
    }
    Some(proto_http::PathRules { merge_slashes: s.merge_slashes.unwrap_or(true), reject_encoded_slashes })
}

pub(crate) fn build_server(c: &mut Checker, raw: &RawConfig) -> Server {
    let s = &raw.server;
    let listen = s.listen.iter().enumerate().filter_map(|(i, a)| c.addr(&format!("server.listen[{i}]"), a)).collect();
    let cores = std::thread::available_parallelism().map(NonZeroUsize::get).unwrap_or(1);
    let workers = match s.workers {
        None => NonZeroUsize::new(cores).unwrap_or(NonZeroUsize::MIN),
        Some(n) => NonZeroUsize::new(n).filter(|n| n.get() <= 1024).unwrap_or_else(|| {
            c.err("server.workers", format!("{n} is out of range 1..=1024"));
            NonZeroUsize::MIN
        }),
    };
    let io = match s.io.as_deref() {
        None | Some("auto") => IoMode::Auto,
        Some("io_uring") => IoMode::IoUring,
        Some("epoll") => IoMode::Epoll,
        Some(other) => {
            c.err("server.io", format!("unknown driver {other:?} (expected \"auto\", \"io_uring\" or \"epoll\")"));
            IoMode::Auto
        }
    };
    let request_id = s.request_id.as_deref().and_then(|h| {
        if crate::policy::is_token(h) {
            Some(h.to_ascii_lowercase())
        } else {
            c.err("server.request_id", format!("{h:?} is not a header name"));
            None
        }
    });
    Server {
        request_id,
        paths: path_rules(c, s),
        via: s.via.as_deref().and_then(|v| {
            if crate::policy::is_token(v) {
                Some(v.to_string())
            } else {
                c.err(
                    "server.via",
                    format!("{v:?} is not a token (RFC 9110 7.6.3 pseudonym: letters, digits, -._~ ...)"),
                );
                None
            }
        }),
        allow_trace: s.allow_trace.unwrap_or(false),
        forwarded: s.forwarded.unwrap_or(false),
        server_header: match s.server_header.as_deref() {
            None => "coregate".to_string(),
            Some(v) if crate::policy::is_field_value(v) && v.trim() == v && v.len() <= 256 => v.to_string(),
            Some(v) => {
                c.err(
                    "server.server_header",
                    format!("{v:?} is not a field value (printable, no surrounding spaces, at most 256 bytes)"),
                );
                String::new()
            }
        },
        keepalive_requests: keepalive_requests(c, "server", s.keepalive_requests),
        keepalive_time: keepalive_time(c, "server", s.keepalive_time.as_ref()),
        proxy_protocol: match &s.proxy_protocol {
            None | Some(toml::Value::Boolean(false)) => ProxyProtocol::Off,
            Some(toml::Value::Boolean(true)) => ProxyProtocol::All,
            Some(toml::Value::Array(items)) => ProxyProtocol::Only(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, a)| match a.as_str() {
                        Some(a) => c.addr(&format!("server.proxy_protocol[{i}]"), a),
                        None => {
                            c.err(format!("server.proxy_protocol[{i}]"), "expected a listen address \"IP:PORT\"");
                            None
                        }
                    })
                    .collect(),
            ),
            Some(_) => {
                c.err("server.proxy_protocol", "expected true, false, or a list of listen addresses");
                ProxyProtocol::Off
            }
        },
        trusted_proxies: crate::policy::cidrs(c, "server.trusted_proxies", &s.trusted_proxies),
        listen,
        workers,
        io,
        pin_cores: s.pin_cores.unwrap_or(true),
        io_batch: io_batch(c, s, io),
        max_connections_per_worker: c.bounded(
            "server.max_connections_per_worker",
            s.max_connections_per_worker,
            65_536,
            1,
            1 << 24,
        ),
        max_connections_per_ip: s
            .max_connections_per_ip
            .map(|n| c.bounded("server.max_connections_per_ip", Some(n), 1, 1, 1 << 24) as u32),
    }
}

/// `batch_wait_us` (0..=10,000, 0 for none) and `batch_completions` (2..=1,024): both only on
/// io_uring, and the completions only with a wait.
fn io_batch(c: &mut Checker, s: &crate::raw::RawServer, io: IoMode) -> Option<IoBatch> {
    let wait_us = c.bounded("server.batch_wait_us", s.batch_wait_us, 0, 0, 10_000) as u32;
    let completions = c.bounded("server.batch_completions", s.batch_completions, 16, 2, 1024) as u32;
    if wait_us == 0 {
        if s.batch_completions.is_some() {
            c.err("server.batch_completions", "has no effect without server.batch_wait_us");
        }
        return None;
    }
    if io == IoMode::Epoll {
        c.err(
            "server.batch_wait_us",
            "needs io_uring (io = \"auto\" or \"io_uring\"); the epoll driver does not batch",
        );
    }
    Some(IoBatch { completions, wait_us })
}
