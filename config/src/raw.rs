//! The TOML schema as written by users: plain serde structs, every field optional so that
//! validation (not serde) reports missing values with their key paths. Unknown keys are
//! collected by `serde_ignored` in the validator, all of them, not just the first.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub server: RawServer,
    pub timeouts: RawTimeouts,
    pub limits: RawLimits,
    pub upstreams: Vec<RawUpstream>,
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawServer {
    pub listen: Vec<String>,
    pub workers: Option<usize>,
    pub io: Option<String>,
    pub pin_cores: Option<bool>,
    pub max_connections_per_worker: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTimeouts {
    pub client_header: Option<String>,
    pub client_idle: Option<String>,
    pub client_body: Option<String>,
    pub client_send: Option<String>,
    pub upstream_connect: Option<String>,
    pub upstream_response: Option<String>,
    pub upstream_send: Option<String>,
    pub upstream_idle: Option<String>,
    pub drain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawLimits {
    pub max_head_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_uri_bytes: Option<usize>,
    pub max_body_bytes: Option<u64>,
    pub max_chunk_ext_bytes: Option<usize>,
    pub max_trailer_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawUpstream {
    pub name: Option<String>,
    pub endpoints: Vec<String>,
    pub max_idle_per_endpoint: Option<usize>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRoute {
    pub path: Option<String>,
    pub host: Option<String>,
    pub upstream: Option<String>,
}
