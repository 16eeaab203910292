//! coregate's configuration: the TOML schema ([`raw`]), validation into typed values
//! ([`Config`]) that collects every error with its key path, and defaults.
//!
//! The engine only ever sees the validated types: durations, socket addresses, indices.
//! Sockets, runtimes and routing data structures are left to the engine.
#![forbid(unsafe_code)]

mod error;
pub mod raw;
mod validate;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

pub use error::{ConfigError, Errors};
pub use proto_http::Limits as WireLimits;

/// Which I/O driver the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// io_uring where the kernel allows it, else epoll.
    Auto,
    IoUring,
    Epoll,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub workers: NonZeroUsize,
    pub io: IoMode,
    /// Pin worker N to core N (modulo the cores available).
    pub pin_cores: bool,
    /// Client connections one worker holds at once; more are closed on accept.
    pub max_connections_per_worker: usize,
}

/// Every timeout, all non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From the first byte of a request head to its end.
    pub client_header: Duration,
    /// Idle keep-alive wait for the next request.
    pub client_idle: Duration,
    /// Between two reads of a request body.
    pub client_body: Duration,
    /// For one write to a client to make progress.
    pub client_send: Duration,
    /// Connecting to an upstream endpoint.
    pub upstream_connect: Duration,
    /// For the response head, and between two reads of a response body.
    pub upstream_response: Duration,
    /// For one write to an upstream to make progress.
    pub upstream_send: Duration,
    /// How long a pooled keep-alive connection may stay idle.
    pub upstream_idle: Duration,
    /// After SIGTERM/SIGINT, how long in-flight requests may take before the exit.
    pub drain: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub wire: WireLimits,
    /// Request body bytes (413 above it).
    pub max_body_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub endpoints: Vec<SocketAddr>,
    /// Idle keep-alive connections kept per endpoint and worker.
    pub max_idle_per_endpoint: usize,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
}

/// How a route matches the request's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    /// Lower-case host, no port.
    Exact(String),
    /// `*.example.com`: stored as the suffix `.example.com`.
    Suffix(String),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub host: HostMatch,
    /// Path prefix, starting with '/'.
    pub path: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
}

impl Config {
    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, Errors> {
        validate::parse(text)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, Errors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Errors(vec![ConfigError::new("", format!("cannot read {}: {e}", path.display()))]))?;
        Self::parse(&text)
    }
}
