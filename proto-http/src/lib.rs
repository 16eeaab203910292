//! HTTP/1.1 wire format for coregate: zero-copy head parsing (httparse offsets into one
//! `Bytes`), message framing (RFC 9112 section 6), the chunked codec (RFC 9112 section 7),
//! hop-by-hop rules (RFC 9110 section 7.6.1), Cache-Control directives (RFC 9111 section 5.2),
//! path normalisation (RFC 3986 section 6.2.2) and head serialisation.
//!
//! This crate owns no sockets, runtimes, clocks or configuration: callers feed it bytes and
//! limits and act on what it returns. Errors are small `Copy` values with static messages;
//! mapping them to status codes is the engine's job.
#![forbid(unsafe_code)]

pub mod accept_encoding;
pub mod cache_control;
pub mod chunked;
pub mod cookie;
mod error;
mod fields;
mod limits;
pub mod path;
pub mod proxy_protocol;
pub mod request;
pub mod response;
mod span;
pub mod trace_context;
pub mod write;

pub use error::ParseError;
pub use fields::{is_hop_by_hop, name_is, via_lists, ConnectionFlags, FieldList};
pub use limits::Limits;
pub use path::{normalize_request_path, PathRules};
pub use request::{
    downgrade_minor_version, parse_request, parse_request_in, BodyFraming, Method, RequestHead, RequestMeta, Version,
};
pub use response::{parse_response, parse_response_in, ResponseBody, ResponseHead, ResponseMeta};
pub use span::{HeaderSpan, Span};
