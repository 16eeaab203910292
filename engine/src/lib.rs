//! coregate's engine: one pinned OS thread per core, each with its own monoio runtime
//! (io_uring, or epoll where io_uring is not allowed), its own SO_REUSEPORT listeners, route
//! table, policy state and upstream pools. Nothing is shared between workers on the request
//! path; the named exceptions are the shutdown flag (control plane), the rate-limit bank,
//! reached once per lease, not per request (see `ratelimit`), the endpoints' states
//! (the active checks' verdicts and the admin's drains, one byte per endpoint, read; see
//! `health`), and the metrics counters (each
//! written by its own worker, read by the admin thread; see `metrics`), the response
//! cache of the routes that have one (a sharded store; see `cache`), and the in-flight count
//! of each upstream with `max_requests` (one atomic add and subtract per request to it; see
//! `concurrency`), and the connections open per client address with
//! `server.max_connections_per_ip` (a sharded table, touched per connection; see `per_ip`).
//!
//! Wire-format questions (parsing, framing, chunked coding) are answered by `proto-http`;
//! configuration is parsed and validated by the `config` crate. This crate owns sockets,
//! scheduling, routing, policies, pooling and the mapping of errors to status codes.

mod access_log;
mod admin;
mod arena;
mod auth;
mod balance;
mod basic_auth;
mod body;
mod cache;
mod client_cert;
mod client_ip;
mod compress;
mod compress_stream;
mod concurrency;
mod conn;
mod date;
mod deadline;
mod driver;
mod error;
mod error_page;
mod external_auth;
mod fault;
mod fetch;
mod forward;
mod generation;
mod health;
mod io;
mod jwks;
mod jwt;
mod listener;
mod local;
mod methods;
mod metrics;
mod mirror;
mod multishot;
mod per_ip;
mod pipeline;
mod policy;
mod pool;
mod posted;
mod proxy;
mod random;
mod ratelimit;
mod request_id;
mod retry;
mod route;
mod server;
mod share;
mod shutdown;
mod split;
mod tickets;
mod timers;
mod tls;
mod tls_tunnel;
mod tracing;
mod tunnel;
mod upstream;
mod upstream_tls;
mod waiters;
mod worker;

pub use driver::Driver;
pub use route::RouteTable;
pub use server::{Server, StartError};
