//! coregate's configuration: the TOML schema ([`raw`]), validation into typed values
//! ([`Config`]) that collects every error with its key path, and defaults.
//!
//! The engine only ever sees the validated types: durations, socket addresses, indices.
//! Sockets, runtimes and routing data structures are left to the engine.
#![forbid(unsafe_code)]

mod balance;
mod basic;
mod cache;
mod compress;
mod consumers;
mod endpoints;
mod error;
mod error_pages;
mod external;
mod fault;
mod jwks;
mod jwt;
mod mirror;
mod path_regex;
mod policy;
mod queue;
pub mod raw;
mod server;
mod split;
mod tickets;
mod tls;
mod tracing;
mod upstream;
mod validate;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

pub use balance::{Balance, HashOn, MAX_WEIGHT};
pub use basic::{sha256_password, BasicAuth, Password, MAX_BCRYPT_COST};
pub use cache::{Cache, RouteCache, SHARDS as CACHE_SHARDS};
pub use compress::{Coding, RouteCompress, DEFAULT_TYPES as COMPRESS_TYPES};
pub use endpoints::{system_resolver, Entry, Host, Resolver};
pub use error::{ConfigError, Errors};
pub use error_pages::{ErrorFormat, ErrorPage, ErrorPages, PagePiece, MAX_PAGE_BYTES};
pub use external::ExternalAuth;
pub use fault::Fault;
pub use jwks::{discovered, parse as jwks_parse, FetchedJwks, RemoteJwks, MAX_DISCOVERY_BYTES, MAX_JWKS_BYTES};
pub use jwt::{JwtAuth, JwtKey};
pub use mirror::Mirror;
pub use path_regex::PathRegex;
pub use proto_http::Limits as WireLimits;
pub use queue::Queue;
pub use split::Split;
pub use tickets::{SessionTickets, TicketKey, TICKET_KEY_SIZES};
pub use tls::{suite_protocol, CertDetails, Certificate, ClientAuth, Tls, TlsVersion, UpstreamTls, CIPHER_SUITES};
pub use tracing::Tracing;

/// `server.proxy_protocol`: on no listener, every one, or those listed (by their address in
/// `server.listen` or `tls.listen`, as nginx's `listen ... proxy_protocol`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProxyProtocol {
    #[default]
    Off,
    All,
    Only(Vec<SocketAddr>),
}

impl ProxyProtocol {
    /// Whether connections to the listener configured as `addr` start with the header.
    pub fn on(&self, addr: &SocketAddr) -> bool {
        match self {
            ProxyProtocol::Off => false,
            ProxyProtocol::All => true,
            ProxyProtocol::Only(addrs) => addrs.contains(addr),
        }
    }
}

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
    pub consumers: Vec<Consumer>,
    pub api_key: ApiKeyAuth,
    pub jwt: JwtAuth,
    /// `[auth.basic]`: the realm of Basic challenges.
    pub basic: BasicAuth,
    /// `[auth.external]`: the authorization service of `auth = "external"` routes.
    pub external_auth: Option<ExternalAuth>,
    pub tls: Tls,
    /// The admin listener (`GET /metrics`, `GET /healthz`), if any.
    pub admin: Option<SocketAddr>,
    /// Where the access log goes, if anywhere.
    pub access_log: Option<AccessLog>,
    /// The response cache's size (used when a route has `cache`).
    pub cache: Cache,
    /// OpenTelemetry traces (`[tracing]`), when on.
    pub tracing: Option<Tracing>,
    /// `[errors]`: how coregate's own error answers are written.
    pub errors: ErrorPages,
}

/// Access log destination: one JSON object per line and request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Stdout,
    /// Opened for appending at startup.
    File(std::path::PathBuf),
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub workers: NonZeroUsize,
    pub io: IoMode,
    /// Pin worker N to core N (modulo the cores available).
    pub pin_cores: bool,
    /// io_uring: a busy worker's loop waits briefly for a batch of completions.
    pub io_batch: Option<IoBatch>,
    /// Client connections one worker holds at once; more are closed on accept.
    pub max_connections_per_worker: usize,
    /// Client connections open at once from one client address over all workers (the
    /// PROXY protocol's source where a listener has it); more are closed on accept.
    pub max_connections_per_ip: Option<u32>,
    /// Lower-case name of the request id field, when request ids are on.
    pub request_id: Option<String>,
    /// Which listeners' connections start with a PROXY protocol header from a layer-4 load
    /// balancer, whose client address replaces the TCP peer's.
    pub proxy_protocol: ProxyProtocol,
    /// Proxies in front of coregate (a CDN, an L7 balancer): from a peer in these, the
    /// client is read from X-Forwarded-For, walking from the right past these addresses.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Requests a client connection carries before the answer to the last says
    /// `Connection: close`; None: no limit.
    pub keepalive_requests: Option<u32>,
    /// Age of a client connection after which its next answer says `Connection: close`.
    pub keepalive_time: Option<Duration>,
    /// This gateway's pseudonym in `Via` (RFC 9110 7.6.3), added to what it forwards both
    /// ways; a request already naming it is a loop. None: no Via.
    pub via: Option<String>,
    /// Requests sent upstream carry this hop's element of `Forwarded` (RFC 7239) beside the
    /// X-Forwarded-* fields.
    pub forwarded: bool,
    /// The Server field of the answers coregate makes itself; empty: none. Proxied answers
    /// keep the upstream's.
    pub server_header: String,
    /// TRACE is served: proxied, or echoed by coregate when Max-Forwards reaches 0
    /// (RFC 9110 9.3.8). Off: TRACE is answered 405, as nginx does.
    pub allow_trace: bool,
    /// How request paths are normalised before routing; `None` leaves them as sent.
    pub paths: Option<proto_http::PathRules>,
}

/// `server.batch_wait_us` and `server.batch_completions`: once a turn of a worker's loop
/// found at least half a batch of completions, its next wait lasts until `completions` are
/// there or `wait_us` has passed with one at least; a wait that runs out before its batch
/// ends the batching until the loop is that busy again (vendor/monoio, `batch.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoBatch {
    pub completions: u32,
    pub wait_us: u32,
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
    /// An upgraded (WebSocket) connection closes when neither side sent anything for this long.
    pub tunnel_idle: Duration,
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
    /// The addresses of `entries`, a name standing for all of its addresses.
    pub endpoints: Vec<SocketAddr>,
    /// Each endpoint's weight (1 unless configured), in `endpoints`' order.
    pub weights: Vec<u32>,
    /// The name each endpoint was resolved from, if it was (the Host of requests without
    /// one and of health checks, and the TLS server name).
    pub endpoint_names: Vec<Option<String>>,
    /// The `endpoints` entries as written, for resolving their names again.
    pub entries: Vec<Entry>,
    /// Resolve the names of `entries` again this often (`upstreams[].resolve`).
    pub resolve: Option<Duration>,
    /// How requests spread over the endpoints.
    pub balance: Balance,
    /// An endpoint back in service (its ejection over, its checks passing again) takes a
    /// share rising from 10% of its weight to all of it over this window (round robin and
    /// least request; Envoy's and nginx's slow start). None: at once.
    pub slow_start: Option<Duration>,
    /// Idle keep-alive connections kept per endpoint and worker.
    pub max_idle_per_endpoint: usize,
    /// Exchanges a connection carries before it is closed (nginx's `keepalive_requests`,
    /// Envoy's `max_requests_per_connection`); None: no limit.
    pub keepalive_requests: Option<u32>,
    /// Age after which a connection is closed when its exchange ends (nginx's
    /// `keepalive_time`, Envoy's `max_connection_duration`); None: no limit.
    pub keepalive_time: Option<Duration>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    /// Active checks, when configured.
    pub health_check: Option<HealthCheck>,
    /// Passive ejection of failing endpoints (on unless `consecutive_failures = 0`).
    pub outlier: Outlier,
    /// Further attempts on other endpoints for an idempotent request that failed or got a
    /// 502-504 before anything reached the client (0: none beyond the connect failover).
    pub retries: u32,
    /// The n-th retry waits a random time up to `retry_backoff * 2^(n-1)`, at most ten times
    /// `retry_backoff` (Envoy's fully jittered exponential backoff); zero: retries go at once.
    pub retry_backoff: Duration,
    /// The answers that are retried (with `retries`): 502, 503 and 504 unless configured
    /// (nginx's `proxy_next_upstream http_500 ...`, Envoy's retriable status codes).
    pub retry_statuses: Vec<u16>,
    /// Retries in flight from one worker to this upstream, at most this percentage of its
    /// requests in flight there, and never fewer than [`MIN_RETRY_BUDGET`] (Envoy's retry
    /// budget): an outage is not multiplied by the retries.
    pub retry_budget: u32,
    /// Requests in flight to this upstream from all workers together, at most; more are
    /// answered 503 at once (Envoy's circuit breaker `max_requests`), or wait in `queue`.
    /// None: no bound.
    pub max_requests: Option<u32>,
    /// Requests over `max_requests` wait here for a slot (HAProxy's server queue).
    pub queue: Option<Queue>,
    /// TLS to the endpoints (HTTPS upstreams); `None`: plain HTTP.
    pub tls: Option<UpstreamTls>,
    /// Requests that may share one write to the upstream and wait their turn for their
    /// responses on its connection (HTTP/1.1 pipelining, RFC 9112 9.3.2): idempotent ones
    /// without a body, made in the same turn of a worker's loop. 1: none (the default).
    pub pipeline: usize,
}

impl Upstream {
    /// The Host for endpoint `e` where the request has none (HTTP/1.0) or a health check
    /// names none: the name it was resolved from with its port, else its address.
    pub fn endpoint_host(&self, e: usize) -> String {
        match &self.endpoint_names[e] {
            Some(name) => format!("{name}:{}", self.endpoints[e].port()),
            None => self.endpoints[e].to_string(),
        }
    }
}

/// Retries a worker may always have in flight to an upstream, whatever its budget says
/// (Envoy's `min_retry_concurrency`).
pub const MIN_RETRY_BUDGET: u32 = 3;

/// Active health checks: a `GET path` to every endpoint each `interval`, from a thread of
/// its own. A status in `expect_status` (2xx or 3xx unless set) within `timeout` passes, with
/// `expect_body` in the body when that is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    /// The Host field sent (default: the endpoint's address).
    pub host: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes that make a failed endpoint healthy again.
    pub healthy_threshold: u32,
    /// Consecutive failures that take an endpoint out.
    pub unhealthy_threshold: u32,
    /// Statuses that pass, as inclusive ranges (default: 200-399).
    pub expect_status: Vec<(u16, u16)>,
    /// Text the response body must contain (searched in its first 64 KiB, decoded).
    pub expect_body: Option<String>,
}

impl HealthCheck {
    /// Whether a check answered with `status` passes (the body aside).
    pub fn passes(&self, status: u16) -> bool {
        self.expect_status.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

/// Passive health: after `consecutive_failures` failed exchanges in a row on one worker
/// (connect errors, timeouts, broken responses, 502/503/504), that worker sends the endpoint
/// nothing for `ejection`; then one request goes through, and one more failure ejects it
/// again while one success closes the circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    /// 0: never eject.
    pub consecutive_failures: u32,
    pub ejection: Duration,
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

/// How a route matches the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Segment-aware prefix, starting with '/'.
    Prefix(String),
    /// The whole path (query excluded).
    Exact(String),
    /// Segments, each literal or a capture; the path must have as many segments.
    Template(Vec<Segment>),
    /// A regular expression the whole path matches; its named groups are captures.
    Regex(PathRegex),
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `{name}`: any non-empty segment.
    Capture(String),
}

/// The most captures a route's path template or regex may have: the gateway keeps a
/// request's captures in a fixed array, not on the heap.
pub const MAX_CAPTURES: usize = 16;

/// Matches `path` against a template's `segments`, handing each capture to `each` (in
/// order); false when it does not match (captures handed over until then are meaningless).
pub fn template_captures<'s, 'p>(
    segments: &'s [Segment],
    path: &'p [u8],
    mut each: impl FnMut(&'s str, &'p [u8]),
) -> bool {
    let Some(rest) = path.strip_prefix(b"/") else { return false };
    let mut parts = rest.split(|&b| b == b'/');
    for seg in segments {
        let Some(part) = parts.next() else { return false };
        match seg {
            Segment::Literal(l) if l.as_bytes() == part => {}
            Segment::Capture(name) if !part.is_empty() => each(name, part),
            _ => return false,
        }
    }
    parts.next().is_none()
}

/// A condition on a request field or query parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Required {
    Present,
    Equals(String),
}

/// What a matched route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Proxy to [`Config::upstreams`]`[upstream]`.
    Proxy { upstream: usize },
    /// Proxy to one of several upstreams, chosen per request by weight.
    Split(Split),
    /// Answer directly.
    Respond { status: u16, headers: Vec<(String, String)>, body: String },
    /// Answer with a redirect to `location` (`{host}`, `{uri}` and path captures filled).
    Redirect { status: u16, location: Template },
}

impl Action {
    /// The upstreams it proxies to (one, the arms of a split, or none).
    pub fn upstreams(&self) -> Vec<usize> {
        match self {
            Action::Proxy { upstream } => vec![*upstream],
            Action::Split(s) => s.arms.iter().map(|&(u, _)| u).collect(),
            _ => Vec::new(),
        }
    }
}

/// A header value with placeholders filled per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// `{client_ip}`
    ClientIp,
    /// `{consumer}`: the authenticated consumer's name (empty without one).
    Consumer,
    /// `{name}`: a capture of the route's path template.
    Capture(String),
    /// `{claim:name}`: a claim of the request's verified JWT (empty without one).
    Claim(String),
    /// `{host}`: the request's Host without its port (empty without one; nginx's `$host`).
    Host,
    /// `{uri}`: the request target as the client sent it, path and query (nginx's
    /// `$request_uri`).
    Uri,
}

/// Header edits, applied in order: remove, set (replace), add (append).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOps {
    /// Lower-case names.
    pub remove: Vec<String>,
    pub set: Vec<(String, Template)>,
    pub add: Vec<(String, Template)>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// What a rate limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// One bucket for the route.
    Route,
    ClientIp,
    /// The authenticated consumer (requests without one share a bucket).
    Consumer,
    /// A request header's value (lower-case name; requests without it share a bucket).
    Header(String),
}

/// A token bucket: `rate` requests per second on average, `burst` at once.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub rate: f64,
    pub burst: u32,
    pub key: LimitKey,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// For metrics and logs: `name`, or the route's index in the file.
    pub name: String,
    pub host: HostMatch,
    pub path: PathMatch,
    /// Upper-case methods; empty matches any.
    pub methods: Vec<String>,
    /// `Some(true)`: only requests that came over TLS; `Some(false)`: only plain ones.
    pub https: Option<bool>,
    /// Required request fields (lower-case names).
    pub headers: Vec<(String, Required)>,
    /// Required query parameters.
    pub query: Vec<(String, Required)>,
    /// Upstream path template (replaces the path; the query is kept).
    pub rewrite: Option<Template>,
    pub query_add: Vec<(String, String)>,
    pub query_remove: Vec<String>,
    pub action: Action,
    /// Overrides the upstream's `response_timeout`.
    pub response_timeout: Option<Duration>,
    /// Bounds the whole exchange with the upstream, from the moment the route's policies let
    /// the request through to the response's last byte: queue, connects, retries and their
    /// backoff included, a WebSocket tunnel after its 101 not (Envoy's route `timeout`).
    pub timeout: Option<Duration>,
    /// Overrides `limits.max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// Overrides the upstream's `retries` (0 to 10): a route whose GETs are not safe to
    /// repeat turns them off, a critical one asks for more.
    pub retries: Option<u32>,
    /// Which credential the route requires.
    pub auth: AuthKind,
    /// Consumers allowed (indices into [`Config::consumers`]): those `consumers` names and
    /// the members of the `groups` it names; empty: any authenticated one.
    pub consumers: Vec<usize>,
    /// JWT claims required (`auth = "jwt"`): each claim must hold one of its values (an
    /// array claim or a space-separated one, as OAuth `scope`, must contain it); 403 else.
    pub require_claims: Vec<(String, Vec<String>)>,
    pub rate_limits: Vec<RateLimit>,
    /// Remove the matched prefix from the path sent upstream.
    pub strip_prefix: bool,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub access: IpRules,
    pub cors: Option<Cors>,
    /// Forward WebSocket upgrades (RFC 9110 7.8) and tunnel the connection after a 101.
    pub websocket: bool,
    /// Responses stored and served by the gateway.
    pub cache: Option<RouteCache>,
    /// gzip for clients that accept it.
    pub compress: Option<RouteCompress>,
    /// Copies of the requests to another upstream (answers dropped).
    pub mirror: Option<Mirror>,
    /// Delays and error answers injected into a share of the requests.
    pub fault: Option<Fault>,
    /// 403 unless the client presented a certificate verified against
    /// `tls.client_ca_file` (for routes on a listener where certificates are optional).
    pub require_client_cert: bool,
}

/// IP access rules: deny first, then (when non-empty) allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRules {
    pub deny: Vec<ipnet::IpNet>,
    pub allow: Vec<ipnet::IpNet>,
}

impl IpRules {
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        !self.deny.iter().any(|n| n.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip)))
    }
}

/// Cross-origin resource sharing, answered by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Empty means any origin (`*`).
    pub origins: Vec<String>,
    pub methods: String,
    pub headers: String,
    pub expose_headers: String,
    pub max_age_secs: u64,
    pub credentials: bool,
}

impl Cors {
    pub fn allows_origin(&self, origin: &[u8]) -> bool {
        self.origins.is_empty() || self.origins.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(origin))
    }
}

impl Route {
    /// The upstream this route proxies to, if it proxies to one only.
    pub fn upstream(&self) -> Option<usize> {
        match self.action {
            Action::Proxy { upstream } => Some(upstream),
            _ => None,
        }
    }
}

/// The credential a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    None,
    /// An API key of a [`Consumer`] ([`Config::api_key`]).
    ApiKey,
    /// A bearer JWT verified with [`Config::jwt`].
    Jwt,
    /// HTTP Basic credentials of a [`Consumer`] with passwords (RFC 7617).
    Basic,
    /// The verdict of the authorization service ([`Config::external_auth`]).
    External,
}

/// An API consumer: a name, the SHA-256 digests of its API keys, and its Basic passwords
/// (the name is the Basic user-id).
#[derive(Debug, Clone, Default)]
pub struct Consumer {
    pub name: String,
    pub key_digests: Vec<[u8; 32]>,
    pub passwords: Vec<Password>,
    /// Its own limits (a plan or tier), counted over every route it uses, after the
    /// route's own limits; keyed by the consumer.
    pub rate_limits: Vec<RateLimit>,
    /// The groups it belongs to (`consumers[].groups`), which routes admit by `groups`
    /// and refuse by `deny_groups`.
    pub groups: Vec<String>,
    /// Its groups as sent upstream in `auth.api_key.groups_header`: `a, b` (RFC 9110 5.6.1
    /// list syntax), made once at load.
    pub groups_field: String,
}

/// Where API keys are read from and how the consumer is named upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyAuth {
    /// Lower-case header name.
    pub header: String,
    pub query: Option<String>,
    /// Lower-case header name.
    pub consumer_header: String,
    /// Lower-case header name: the authenticated consumer's groups, sent upstream.
    pub groups_header: String,
}

impl Config {
    /// Resolves the names of the upstreams with `resolve` again: a copy of this
    /// configuration with their new addresses when any upstream's changed, and a message
    /// for each name that did not resolve (its upstream keeps the addresses it had: a
    /// resolver's bad minute does not take an upstream away, as Envoy keeps the last hosts).
    pub fn resolve_again(&self, resolve: Resolver<'_>) -> (Option<Config>, Vec<String>) {
        let mut failed = Vec::new();
        let mut changed = None::<Config>;
        for (i, u) in self.upstreams.iter().enumerate().filter(|(_, u)| u.resolve.is_some()) {
            match endpoints::expand(&u.entries, resolve) {
                Err((e, why)) => failed.push(format!("upstreams[{i}].endpoints[{e}] ({}): {why}", u.name)),
                Ok(x) if x.addrs == u.endpoints && x.weights == u.weights => {}
                Ok(x) => {
                    let up = &mut changed.get_or_insert_with(|| self.clone()).upstreams[i];
                    (up.endpoints, up.weights, up.endpoint_names) = (x.addrs, x.weights, x.names);
                }
            }
        }
        (changed, failed)
    }

    /// The shortest `upstreams[].resolve` interval, if any upstream has one.
    pub fn resolve_interval(&self) -> Option<Duration> {
        self.upstreams.iter().filter_map(|u| u.resolve).min()
    }

    /// Parses and validates TOML text; relative file names in it are relative to the
    /// working directory.
    pub fn parse(text: &str) -> Result<Config, Errors> {
        validate::parse(text, None)
    }

    /// Routes that can never match: an earlier route with the same host and path takes every
    /// request this one would (its methods include this one's, and it has no field or query
    /// conditions). Checked by `coregate check`, logged at startup.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (j, later) in self.routes.iter().enumerate() {
            let shadow = self.routes[..j].iter().position(|earlier| {
                earlier.host == later.host
                    && earlier.path == later.path
                    && earlier.headers.is_empty()
                    && earlier.query.is_empty()
                    && (earlier.https.is_none() || earlier.https == later.https)
                    && (earlier.methods.is_empty()
                        || (!later.methods.is_empty() && later.methods.iter().all(|m| earlier.methods.contains(m))))
            });
            if let Some(i) = shadow {
                out.push(format!(
                    "routes[{j}] can never match: routes[{i}] has the same host and path and takes all its requests"
                ));
            }
        }
        out
    }

    /// Reads, parses and validates a file; relative file names in it (certificates, keys,
    /// key lists) are relative to its directory.
    pub fn load(path: &Path) -> Result<Config, Errors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Errors(vec![ConfigError::new("", format!("cannot read {}: {e}", path.display()))]))?;
        validate::parse(&text, Some(path.parent().unwrap_or(Path::new("."))))
    }
}

/// Helpers for the modules' tests.
#[cfg(test)]
pub(crate) mod testing {
    /// A configuration with the upstreams `names` (one endpoint each: 127.0.0.1:1, :2, ...)
    /// and a route for `/` with `route_keys` (which may go on with more tables).
    pub(crate) fn config(names: &[&str], route_keys: &str) -> Result<crate::Config, String> {
        let upstreams: String = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("[[upstreams]]\nname = \"{n}\"\nendpoints = [\"127.0.0.1:{}\"]\n", i + 1))
            .collect();
        let text =
            format!("[server]\nlisten = [\"127.0.0.1:8080\"]\n{upstreams}[[routes]]\npath = \"/\"\n{route_keys}\n");
        crate::Config::parse(&text).map_err(|e| e.to_string())
    }

    /// That configuration's route.
    pub(crate) fn route(names: &[&str], route_keys: &str) -> Result<crate::Route, String> {
        config(names, route_keys).map(|c| c.routes[0].clone())
    }
}
