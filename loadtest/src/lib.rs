//! coregate-load: an HTTP/1.1 load generator (closed loop, open loop without coordinated
//! omission, and rate ramps) with latency in HdrHistograms, plus the bundled upstream used
//! for demos, tests and benchmarks.
//!
//! It never looks inside the gateway: it speaks HTTP/1.1 over sockets to any server.
//! Its own small response reader lives in [`wire`]; it does not share the gateway's parser.
#![forbid(unsafe_code)]

pub mod args;
pub mod client;
pub mod pacer;
pub mod report;
pub mod runtime;
pub mod schedule;
pub mod stats;
pub mod tls;
pub mod upstream;
pub mod wire;
