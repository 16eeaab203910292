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
    pub consumers: Vec<RawConsumer>,
    pub auth: RawAuth,
    pub tls: RawTls,
    pub admin: RawAdmin,
    pub access_log: Option<RawAccessLog>,
    pub cache: RawCache,
    pub errors: crate::error_pages::RawErrors,
    pub tracing: Option<crate::tracing::RawTracing>,
}

/// The response cache shared by the routes that have `cache`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCache {
    /// Bytes of cached heads and bodies, over all routes and workers.
    pub max_bytes: Option<u64>,
}

/// A route's response caching.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRouteCache {
    /// Freshness for responses that state none.
    pub ttl: Option<String>,
    pub max_entry_bytes: Option<u64>,
    /// Concurrent misses of one target wait this long for the first one's response.
    pub lock: Option<String>,
    /// How long past its freshness a stored response may answer when the upstream fails.
    pub stale_if_error: Option<String>,
    /// How long past its freshness a stored response answers while it is refreshed.
    pub stale_while_revalidate: Option<String>,
}

/// The admin listener: Prometheus metrics and the gateway's own health.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAdmin {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAccessLog {
    /// A file (appended to) or `"-"` for standard output.
    pub path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTls {
    /// Addresses that accept TLS connections (HTTPS); `server.listen` stays plain HTTP.
    pub listen: Vec<String>,
    pub certificates: Vec<RawCertificate>,
    /// PEM file of the authorities whose client certificates are accepted (mTLS).
    pub client_ca_file: Option<String>,
    /// `"required"` (default with client_ca_file) or `"optional"`.
    pub client_auth: Option<String>,
    /// PEM file of certificate revocation lists for client certificates.
    pub client_crl_file: Option<String>,
    /// What X-Forwarded-Client-Cert says beside the hash: "subject", "uri", "dns".
    pub client_cert_details: Vec<String>,
    /// The oldest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    pub min_version: Option<String>,
    /// The cipher suites offered, by IANA name, most preferred first (default: rustls').
    pub cipher_suites: Vec<String>,
    /// Choose by this order rather than the client's (default false).
    pub prefer_server_ciphers: Option<bool>,
    /// Whether clients get session tickets (default true).
    pub session_tickets: Option<bool>,
    /// Files of 80 or 48 random bytes: the first seals tickets, all open them.
    pub session_ticket_keys: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCertificate {
    /// PEM file: the server certificate first, then its intermediates.
    pub cert_file: Option<String>,
    /// PEM file: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: Option<String>,
    /// Names (SNI) this certificate serves: exact, or `*.example.com`.
    pub server_names: Vec<String>,
    /// DER file: an OCSP response for the certificate, stapled to handshakes.
    pub ocsp_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawServer {
    pub listen: Vec<String>,
    pub workers: Option<usize>,
    pub io: Option<String>,
    pub pin_cores: Option<bool>,
    /// io_uring: microseconds a busy worker's loop waits for `batch_completions` completions
    /// before it runs again (0, the default: no wait).
    pub batch_wait_us: Option<usize>,
    /// The completions a batched wait gathers (16 by default).
    pub batch_completions: Option<usize>,
    pub max_connections_per_worker: Option<usize>,
    /// Client connections open at once from one address, over all workers.
    pub max_connections_per_ip: Option<usize>,
    /// Header carrying a request id (kept from the client when sane, else made), e.g.
    /// `"x-request-id"`; none by default.
    pub request_id: Option<String>,
    /// Every connection starts with a PROXY protocol header (v1 or v2).
    /// `true` (every listener), or the listen addresses whose connections start with a
    /// PROXY protocol header.
    pub proxy_protocol: Option<toml::Value>,
    /// Addresses or CIDRs of proxies whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<String>,
    /// Requests one client connection carries before it is closed (nginx's keepalive_requests).
    pub keepalive_requests: Option<usize>,
    /// Age after which a client connection is closed with its next answer (nginx's keepalive_time).
    pub keepalive_time: Option<String>,
    /// This gateway's name in Via fields (RFC 9110 7.6.3); none by default.
    pub via: Option<String>,
    /// Add this hop's element to `Forwarded` (RFC 7239) on requests sent upstream; false by default.
    pub forwarded: Option<bool>,
    /// The Server field of coregate's own answers ("coregate" by default; "" for none).
    pub server_header: Option<String>,
    /// TRACE requests are served (proxied, or echoed at Max-Forwards 0); false by default (405).
    pub allow_trace: Option<bool>,
    /// Request paths normalised before routing (RFC 3986 6.2.2); true by default.
    pub normalize_path: Option<bool>,
    /// `//` read as `/` while normalising; true by default.
    pub merge_slashes: Option<bool>,
    /// What an encoded `/` or `\` in a path gets: "keep" (default) or "reject" (400).
    pub escaped_slashes: Option<String>,
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
    pub tunnel_idle: Option<String>,
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
    /// `"IP:PORT"`, `"NAME:PORT"` or `{ address = ..., weight = N }` each.
    pub endpoints: Vec<toml::Value>,
    /// Resolve the names in `endpoints` again this often (default: at load only).
    pub resolve: Option<String>,
    pub balance: Option<String>,
    pub hash_on: Option<String>,
    pub max_idle_per_endpoint: Option<usize>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub health_check: Option<RawHealthCheck>,
    pub outlier: Option<RawOutlier>,
    pub retries: Option<usize>,
    /// Exchanges per upstream connection, after which it is closed (nginx's keepalive_requests).
    pub keepalive_requests: Option<usize>,
    /// Age after which an upstream connection is closed once its exchange ends (nginx's keepalive_time).
    pub keepalive_time: Option<String>,
    /// Window over which an endpoint back in service ramps up to its full weight.
    pub slow_start: Option<String>,
    /// Base of the jittered exponential wait before each retry (`"0s"`: none).
    pub retry_backoff: Option<String>,
    /// Response statuses retried on another endpoint (default 502, 503, 504).
    pub retry_statuses: Option<Vec<i64>>,
    /// Retries in flight per worker, as a percentage of the upstream's requests in flight
    /// there (at least 3 are always allowed).
    pub retry_budget: Option<usize>,
    /// Requests in flight to the upstream from all workers, at most.
    pub max_requests: Option<usize>,
    /// Requests over max_requests wait for a slot.
    pub queue: Option<crate::queue::RawQueue>,
    /// Idempotent bodiless requests sent on one connection before their responses are read
    /// (HTTP/1.1 pipelining; 1: none).
    pub pipeline: Option<usize>,
    /// Speak TLS to the endpoints (HTTPS upstreams).
    pub tls: Option<RawUpstreamTls>,
}

/// TLS from coregate to an upstream's endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawUpstreamTls {
    /// Sent as SNI and checked against the certificate (default: the endpoint's address).
    pub server_name: Option<String>,
    /// PEM file of the certificate authorities trusted for this upstream (default: the
    /// Mozilla roots built into coregate).
    pub ca_file: Option<String>,
    /// Check the upstream's certificate (default true).
    pub verify: Option<bool>,
    /// PEM files of a client certificate and its key, for upstreams that ask for one (mTLS).
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// The oldest TLS version spoken to the upstream: "1.2" (default) or "1.3".
    pub min_version: Option<String>,
    /// The cipher suites offered to the upstream, most preferred first (default: rustls').
    pub cipher_suites: Vec<String>,
    /// Base64 SHA-256 hashes of public keys (SPKI) the upstream's certificate must have one of.
    pub pin_sha256: Vec<String>,
    /// PEM file of revocation lists the upstream's certificate is checked against.
    pub crl_file: Option<String>,
}

/// Active health checks of an upstream's endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawHealthCheck {
    pub path: Option<String>,
    /// Host field of the check (default: the endpoint's address).
    pub host: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    /// Statuses that pass: codes (`200`) and classes (`"2xx"`); default 2xx and 3xx.
    pub expect_status: Option<Vec<toml::Value>>,
    /// Text the body must contain to pass.
    pub expect_body: Option<String>,
}

/// Passive health (a circuit breaker per endpoint and worker).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawOutlier {
    pub consecutive_failures: Option<u32>,
    pub ejection: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRoute {
    /// A name for metrics and logs (default: the route's index).
    pub name: Option<String>,
    pub path: Option<String>,
    pub path_exact: Option<String>,
    /// `/users/{id}/orders/{order}`: one segment per `{name}`, same number of segments.
    pub path_template: Option<String>,
    /// A regular expression the whole path must match; named groups are captures.
    pub path_regex: Option<String>,
    /// Required request fields: a value, or `"*"` for presence.
    pub headers: std::collections::BTreeMap<String, String>,
    /// Required query parameters: a value, or `"*"` for presence.
    pub query: std::collections::BTreeMap<String, String>,
    /// Upstream path from a template (`{name}` takes a path_template or path_regex capture); the query is kept.
    pub rewrite: Option<String>,
    /// Query parameters added (or replaced) before forwarding.
    pub query_add: std::collections::BTreeMap<String, String>,
    /// Query parameters removed before forwarding.
    pub query_remove: Vec<String>,
    pub host: Option<String>,
    pub methods: Option<Vec<String>>,
    /// `"http"` or `"https"`: only requests that came over plain TCP or over TLS.
    pub scheme: Option<String>,
    pub upstream: Option<String>,
    /// Shares of the route's requests for several upstreams, by weight.
    pub split: Option<Vec<crate::split::RawArm>>,
    /// `client_ip`, `header:NAME`, `cookie:NAME` or `query:NAME`: the key that keeps a
    /// client on one side of a split.
    pub split_on: Option<String>,
    pub respond: Option<RawRespond>,
    pub redirect: Option<RawRedirect>,
    pub response_timeout: Option<String>,
    /// The whole exchange with the upstream, retries included (Envoy's route `timeout`).
    pub timeout: Option<String>,
    pub max_body_bytes: Option<u64>,
    /// Overrides the upstream's `retries` for this route.
    pub retries: Option<usize>,
    /// `"api_key"` to require an API key.
    pub auth: Option<String>,
    /// Consumers allowed on this route (403 for others); empty: any authenticated consumer.
    pub consumers: Vec<String>,
    /// Consumer groups allowed on this route, beside `consumers`.
    pub groups: Vec<String>,
    /// Consumer groups refused on this route, whatever admits them otherwise.
    pub deny_groups: Vec<String>,
    /// JWT claims a token must carry on this route: a value, or a list of which any will do.
    pub require_claims: std::collections::BTreeMap<String, toml::Value>,
    pub rate_limits: Vec<RawRateLimit>,
    pub strip_prefix: Option<bool>,
    pub request_headers: RawHeaderOps,
    pub response_headers: RawHeaderOps,
    /// CIDRs refused with 403 (checked first).
    pub deny_ips: Vec<String>,
    /// When set, only these CIDRs are admitted (others get 403).
    pub allow_ips: Vec<String>,
    pub cors: Option<RawCors>,
    /// Whether WebSocket upgrades are forwarded (default true).
    pub websocket: Option<bool>,
    /// Store and serve this route's responses (RFC 9111).
    pub cache: Option<RawRouteCache>,
    /// gzip eligible responses for clients that accept it.
    pub compress: Option<RawRouteCompress>,
    /// Copies of the route's requests to another upstream, answers dropped.
    pub mirror: Option<crate::mirror::RawMirror>,
    /// Delays and error answers injected into a share of the requests.
    pub fault: Option<crate::fault::RawFault>,
    /// Only clients that presented a verified certificate (mTLS) are served.
    pub require_client_cert: Option<bool>,
}

/// A route's response compression.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRouteCompress {
    pub types: Option<Vec<String>>,
    pub min_bytes: Option<usize>,
    pub max_bytes: Option<usize>,
    pub level: Option<usize>,
    pub encodings: Option<Vec<String>>,
    pub stream: Option<bool>,
    pub br_level: Option<usize>,
    pub zstd_level: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCors {
    /// Allowed origins, or `["*"]`.
    pub origins: Vec<String>,
    pub methods: Vec<String>,
    pub headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<String>,
    pub credentials: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRespond {
    pub status: Option<u16>,
    pub body: Option<String>,
    pub headers: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRedirect {
    pub location: Option<String>,
    pub status: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRateLimit {
    /// Requests per second.
    pub rate: Option<f64>,
    pub burst: Option<u32>,
    /// `route`, `ip`, `consumer` or `header:<name>`.
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawHeaderOps {
    pub add: std::collections::BTreeMap<String, String>,
    pub set: std::collections::BTreeMap<String, String>,
    pub remove: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConsumer {
    pub name: Option<String>,
    /// API keys: plain text (hashed at load) or `sha256:<64 hex digits>`.
    pub keys: Vec<String>,
    /// A file with one key per line (same forms; `#` comments and blank lines ignored).
    pub keys_file: Option<String>,
    /// HTTP Basic passwords: bcrypt hashes or `sha256:<64 hex digits>`.
    pub passwords: Vec<String>,
    /// The consumer's own limits (its plan), over every route it uses.
    pub rate_limits: Vec<RawRateLimit>,
    /// Groups it belongs to, which routes admit by `groups` (Kong's ACL groups).
    pub groups: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAuth {
    pub api_key: RawApiKey,
    pub jwt: RawJwt,
    pub basic: crate::basic::RawBasic,
    pub external: Option<crate::external::RawExternal>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawJwt {
    pub keys: Vec<RawJwtKey>,
    /// A JWKS document (`{"keys": [...]}`) with more keys.
    pub jwks_file: Option<String>,
    /// A key set one of the upstreams serves, fetched again as it changes.
    pub jwks: Option<crate::jwks::RawRemoteJwks>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew allowed for `exp` and `nbf` (default 30s).
    pub leeway: Option<String>,
    /// Claim name to request header, e.g. `{ sub = "x-user-id" }`.
    pub claims_to_headers: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawJwtKey {
    /// `HS256`, `RS256` or `ES256`.
    pub alg: Option<String>,
    pub kid: Option<String>,
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// RS256/ES256 public key, PEM text.
    pub pem: Option<String>,
    /// RS256/ES256 public key, PEM file.
    pub pem_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawApiKey {
    /// Request header carrying the key (default `x-api-key`).
    pub header: Option<String>,
    /// Query parameter carrying the key, if keys may come that way.
    pub query: Option<String>,
    /// Header naming the consumer upstream (default `x-consumer`).
    pub consumer_header: Option<String>,
    /// Header listing the consumer's groups upstream (default `x-consumer-groups`).
    pub groups_header: Option<String>,
}
