//! Metrics: counters each worker keeps for itself (written by that worker only, as a
//! relaxed load and store: no locked instruction on the request path), summed by the admin
//! thread when Prometheus scrapes `GET /metrics`, in its text format (0.0.4).
//!
//! Left to others: what a request's route, status and duration were (`conn`, `proxy`), when
//! an endpoint failed (`health`), serving the admin listener (`admin`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use config::Config;

/// Upper bounds of the duration histogram's buckets, in seconds (+Inf follows).
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Status classes: 1xx to 5xx, and "none" (closed without an answer).
const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// Cache lookup results, as `X-Cache-Status` names them.
/// REVALIDATED counts the EXPIRED lookups that a 304 from the upstream then confirmed,
/// STALE those answered stale because the upstream failed, UPDATING those answered stale
/// while a background task refreshed them (stale-while-revalidate).
const CACHE_RESULTS: [&str; 7] = ["HIT", "MISS", "EXPIRED", "BYPASS", "REVALIDATED", "STALE", "UPDATING"];

/// A counter with one writer (its worker) and any number of readers.
#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        // One writer: a load and a store, not a locked read-modify-write.
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The requests of one route (or of none).
#[derive(Default)]
struct RouteStats {
    by_class: [Counter; CLASSES.len()],
    buckets: [Counter; BUCKETS.len() + 1],
    micros: Counter,
}

/// One worker's counters.
pub(crate) struct Stats {
    /// One per route, then one for requests that matched none (or were refused unread).
    routes: Vec<RouteStats>,
    /// `[route]`: faults injected, by kind.
    faults: Vec<[Counter; crate::fault::NAMES.len()]>,
    /// `[route]`: authorization checks by outcome (`auth = "external"`).
    external_auth: Vec<[Counter; crate::external_auth::NAMES.len()]>,
    /// `[route]`: requests of mirrored routes by what became of their copy.
    mirrors: Vec<[Counter; crate::mirror::RESULTS.len()]>,
    /// `[route]`: route timeouts (`routes[].timeout`) that ran out, by what the client got.
    route_timeouts: Vec<[Counter; crate::deadline::RESULTS.len()]>,
    /// `[upstream]`: requests proxied there, by the status class of their answer.
    upstream_requests: Vec<[Counter; CLASSES.len()]>,
    /// `[upstream]`: writes of pipelined batches, and the requests they carried
    /// (`upstreams[].pipeline`).
    pipelined: Vec<[Counter; 2]>,
    /// `[upstream][endpoint]`: failed exchanges (as `health` counts them) and ejections.
    failures: Vec<Vec<Counter>>,
    ejections: Vec<Vec<Counter>>,
    /// Client connections open on this worker.
    pub connections: Counter,
    /// Client connections closed on accept for `server.max_connections_per_ip`.
    pub refused_per_ip: Counter,
    /// Cache lookups by result ([`CACHE_RESULTS`]).
    cache: [Counter; CACHE_RESULTS.len()],
    /// Sampled spans dropped because the exporter's queue was full (`[tracing]`).
    pub spans_dropped: Counter,
    /// TLS handshakes of client connections, by cipher suite ([`config::CIPHER_SUITES`])
    /// and whether they resumed a session; and those that began and did not finish.
    tls_handshakes: [[Counter; 2]; config::CIPHER_SUITES.len()],
    tls_failed: Counter,
}

impl Stats {
    pub(crate) fn new(cfg: &Config) -> Stats {
        let per_endpoint = || cfg.upstreams.iter().map(|u| u.endpoints.iter().map(|_| Counter::default()).collect());
        Stats {
            routes: (0..=cfg.routes.len()).map(|_| RouteStats::default()).collect(),
            upstream_requests: cfg.upstreams.iter().map(|_| Default::default()).collect(),
            pipelined: cfg.upstreams.iter().map(|_| Default::default()).collect(),
            mirrors: cfg.routes.iter().map(|_| Default::default()).collect(),
            route_timeouts: cfg.routes.iter().map(|_| Default::default()).collect(),
            faults: cfg.routes.iter().map(|_| Default::default()).collect(),
            external_auth: cfg.routes.iter().map(|_| Default::default()).collect(),
            failures: per_endpoint().collect(),
            ejections: per_endpoint().collect(),
            connections: Counter::default(),
            refused_per_ip: Counter::default(),
            cache: Default::default(),
            spans_dropped: Counter::default(),
            tls_handshakes: Default::default(),
            tls_failed: Counter::default(),
        }
    }

    /// Counts a client connection's TLS handshake, once its first request has been read
    /// (or its reading given up): `(suite, resumed)`, or None when it did not finish.
    pub(crate) fn tls_handshake(&self, outcome: Option<(usize, bool)>) {
        match outcome {
            Some((suite, resumed)) => self.tls_handshakes[suite][usize::from(resumed)].add(1),
            None => self.tls_failed.add(1),
        }
    }

    /// Counts one answered request; `route` None: it matched no route; `upstream`: where it
    /// was proxied, if it was.
    pub(crate) fn request(&self, route: Option<usize>, upstream: Option<usize>, status: u16, took: Duration) {
        let r = &self.routes[route.unwrap_or(self.routes.len() - 1)];
        let class = usize::from(status / 100).min(5);
        r.by_class[class].add(1);
        if let Some(u) = upstream {
            self.upstream_requests[u][class].add(1);
        }
        let secs = took.as_secs_f64();
        let bucket = BUCKETS.iter().position(|&b| secs <= b).unwrap_or(BUCKETS.len());
        r.buckets[bucket].add(1);
        r.micros.add(took.as_micros() as u64);
    }

    /// Counts a pipelined batch of `requests` written to `upstream`.
    pub(crate) fn pipelined(&self, upstream: usize, requests: usize) {
        self.pipelined[upstream][0].add(1);
        self.pipelined[upstream][1].add(requests as u64);
    }

    /// Counts a cache lookup by its `X-Cache-Status`.
    pub(crate) fn cache(&self, status: &[u8]) {
        if let Some(i) = CACHE_RESULTS.iter().position(|r| r.as_bytes() == status) {
            self.cache[i].add(1);
        }
    }

    /// Counts a fault injected into a request of `route`.
    pub(crate) fn fault(&self, route: usize, fault: crate::fault::Injected) {
        self.faults[route][fault as usize].add(1);
    }

    /// Counts an authorization check of a request of `route`.
    pub(crate) fn external_auth(&self, route: usize, outcome: crate::external_auth::Outcome) {
        self.external_auth[route][outcome as usize].add(1);
    }

    /// Counts what became of a mirrored route's request.
    pub(crate) fn mirror(&self, route: usize, result: crate::mirror::Result) {
        self.mirrors[route][result as usize].add(1);
    }

    /// Counts a route's timeout running out on a request of `route`.
    pub(crate) fn route_timeout(&self, route: usize, answer: crate::deadline::Answer) {
        self.route_timeouts[route][answer as usize].add(1);
    }

    pub(crate) fn failure(&self, upstream: usize, endpoint: usize, ejected: bool) {
        self.failures[upstream][endpoint].add(1);
        if ejected {
            self.ejections[upstream][endpoint].add(1);
        }
    }
}

/// Everything `GET /metrics` reports: every worker's counters and the active checks'
/// verdicts.
pub(crate) struct Registry {
    pub cfg: Arc<Config>,
    pub workers: Vec<Arc<Stats>>,
    pub verdicts: crate::health::Verdicts,
    pub draining: Arc<AtomicBool>,
    /// The response cache, when a route has one.
    pub cache: Option<Arc<crate::cache::Cache>>,
    /// Requests in flight per upstream (counted for upstreams with `max_requests`).
    pub in_flight: crate::concurrency::InFlight,
    /// Reloads applied since the start: this configuration's generation (0 at start).
    pub generation: u64,
}

/// Writes the counter family `(name, help)` with one value per listed route and each of
/// `label`'s values, `count(route, value index)`; nothing when no route is listed.
/// A gauge per upstream among `upstreams` (index and settings), with its HELP and TYPE
/// lines; nothing when there is none.
fn upstream_gauge<'a>(
    out: &mut String,
    (metric, help): (&str, &str),
    upstreams: impl Iterator<Item = (usize, &'a config::Upstream)>,
    value: impl Fn(usize) -> u32,
) {
    let mut upstreams = upstreams.peekable();
    if upstreams.peek().is_none() {
        return;
    }
    let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
    for (u, up) in upstreams {
        let _ = writeln!(out, "{metric}{{upstream=\"{}\"}} {}", up.name, value(u));
    }
}

fn per_route<'a>(
    out: &mut String,
    (metric, help): (&str, &str),
    (label, values): (&str, &[&str]),
    routes: impl Iterator<Item = (usize, &'a str)>,
    count: impl Fn(usize, usize) -> u64,
) {
    let mut routes = routes.peekable();
    if routes.peek().is_none() {
        return;
    }
    let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
    for (i, name) in routes {
        for (k, value) in values.iter().enumerate() {
            let _ = writeln!(out, "{metric}{{route=\"{name}\",{label}=\"{value}\"}} {}", count(i, k));
        }
    }
}

impl Registry {
    /// `coregate_tls_handshakes_total` (every suite rustls speaks, as nginx's `$ssl_protocol`
    /// and `$ssl_cipher` would tally them, and Envoy's `ssl.ciphers.*` and
    /// `ssl.session_reused`) and `coregate_tls_handshake_failures_total`.
    fn render_tls(&self, out: &mut String) {
        let sum = |f: &dyn Fn(&Stats) -> u64| self.workers.iter().map(|w| f(w)).sum::<u64>();
        out.push_str("# HELP coregate_tls_handshakes_total TLS handshakes of client connections, by protocol, cipher suite and resumption.\n# TYPE coregate_tls_handshakes_total counter\n");
        for (i, suite) in config::CIPHER_SUITES.iter().enumerate() {
            let protocol = config::suite_protocol(suite);
            for (r, resumed) in ["false", "true"].iter().enumerate() {
                let n = sum(&|s| s.tls_handshakes[i][r].get());
                let _ = writeln!(
                    out,
                    "coregate_tls_handshakes_total{{protocol=\"{protocol}\",cipher=\"{suite}\",resumed=\"{resumed}\"}} {n}"
                );
            }
        }
        let n = sum(&|s| s.tls_failed.get());
        let _ = writeln!(out, "# HELP coregate_tls_handshake_failures_total TLS handshakes of client connections that began and did not finish (refused, broken off, timed out, or plain HTTP on a TLS port).\n# TYPE coregate_tls_handshake_failures_total counter\ncoregate_tls_handshake_failures_total {n}");
    }

    /// The Prometheus text exposition of the sums over the workers.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let sum = |f: &dyn Fn(&Stats) -> u64| self.workers.iter().map(|w| f(w)).sum::<u64>();
        let route_name = |i: usize| self.cfg.routes.get(i).map_or("(none)", |r| r.name.as_str());
        let rows = self.cfg.routes.len() + 1;

        out.push_str("# HELP coregate_requests_total Requests answered, by route and status class (none: closed unanswered).\n# TYPE coregate_requests_total counter\n");
        for i in 0..rows {
            for (c, class) in CLASSES.iter().enumerate() {
                let n = sum(&|s| s.routes[i].by_class[c].get());
                let _ = writeln!(out, "coregate_requests_total{{route=\"{}\",code=\"{class}\"}} {n}", route_name(i));
            }
        }
        out.push_str("# HELP coregate_request_duration_seconds From the request head read to the response sent.\n# TYPE coregate_request_duration_seconds histogram\n");
        for i in 0..rows {
            let name = route_name(i);
            let mut cumulative = 0;
            for (b, le) in BUCKETS.iter().map(|b| b.to_string()).chain(["+Inf".to_string()]).enumerate() {
                cumulative += sum(&|s| s.routes[i].buckets[b].get());
                let _ = writeln!(
                    out,
                    "coregate_request_duration_seconds_bucket{{route=\"{name}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let micros = sum(&|s| s.routes[i].micros.get());
            let _ = writeln!(out, "coregate_request_duration_seconds_sum{{route=\"{name}\"}} {}", micros as f64 / 1e6);
            let _ = writeln!(out, "coregate_request_duration_seconds_count{{route=\"{name}\"}} {cumulative}");
        }
        out.push_str("# HELP coregate_upstream_requests_total Requests proxied to an upstream (on split routes, the one chosen), by the answer's status class.\n# TYPE coregate_upstream_requests_total counter\n");
        for (u, up) in self.cfg.upstreams.iter().enumerate() {
            for (c, class) in CLASSES.iter().enumerate() {
                let n = sum(&|s| s.upstream_requests[u][c].get());
                let _ =
                    writeln!(out, "coregate_upstream_requests_total{{upstream=\"{}\",code=\"{class}\"}} {n}", up.name);
            }
        }
        let pipelined = || self.cfg.upstreams.iter().enumerate().filter(|(_, u)| u.pipeline > 1);
        for (k, (metric, help)) in [
            (
                "coregate_upstream_pipeline_writes_total",
                "Writes that carried a batch of pipelined requests to an upstream (upstreams[].pipeline).",
            ),
            (
                "coregate_upstream_pipelined_requests_total",
                "Requests those writes carried: divided by the writes, the mean batch.",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            if pipelined().next().is_some() {
                let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
            }
            for (u, up) in pipelined() {
                let _ = writeln!(out, "{metric}{{upstream=\"{}\"}} {}", up.name, sum(&|s| s.pipelined[u][k].get()));
            }
        }
        let routes_with = |has: fn(&config::Route) -> bool| {
            self.cfg.routes.iter().enumerate().filter(move |(_, r)| has(r)).map(|(i, r)| (i, r.name.as_str()))
        };
        let faults = ("coregate_faults_total", "Faults injected (routes[].fault), by kind.");
        per_route(&mut out, faults, ("fault", &crate::fault::NAMES), routes_with(|r| r.fault.is_some()), |i, k| {
            sum(&|s| s.faults[i][k].get())
        });
        let checks = ("coregate_external_auth_total", "Authorization checks (auth = \"external\"), by outcome.");
        let external = routes_with(|r| r.auth == config::AuthKind::External);
        per_route(&mut out, checks, ("result", &crate::external_auth::NAMES), external, |i, k| {
            sum(&|s| s.external_auth[i][k].get())
        });
        let mirrors = ("coregate_mirror_requests_total", "Requests of mirrored routes, by what became of their copy.");
        per_route(
            &mut out,
            mirrors,
            ("result", &crate::mirror::RESULTS),
            routes_with(|r| r.mirror.is_some()),
            |i, k| sum(&|s| s.mirrors[i][k].get()),
        );
        let timeouts = (
            "coregate_route_timeouts_total",
            "Route timeouts (routes[].timeout) that ran out, by what the client got.",
        );
        per_route(
            &mut out,
            timeouts,
            ("answer", &crate::deadline::RESULTS),
            routes_with(|r| r.timeout.is_some()),
            |i, k| sum(&|s| s.route_timeouts[i][k].get()),
        );
        out.push_str("# HELP coregate_upstream_failures_total Failed exchanges (connect errors, timeouts, broken responses, 502-504).\n# TYPE coregate_upstream_failures_total counter\n");
        let mut ejections = String::from("# HELP coregate_upstream_ejections_total Times a worker ejected the endpoint.\n# TYPE coregate_upstream_ejections_total counter\n");
        let mut healthy = String::from("# HELP coregate_upstream_healthy 1 unless the active health checks failed the endpoint.\n# TYPE coregate_upstream_healthy gauge\n");
        let mut drained = String::from("# HELP coregate_upstream_drained 1 while the endpoint is drained through the admin listener.\n# TYPE coregate_upstream_drained gauge\n");
        for (u, up) in self.cfg.upstreams.iter().enumerate() {
            for (e, addr) in up.endpoints.iter().enumerate() {
                let labels = format!("upstream=\"{}\",endpoint=\"{addr}\"", up.name);
                let _ =
                    writeln!(out, "coregate_upstream_failures_total{{{labels}}} {}", sum(&|s| s.failures[u][e].get()));
                let _ = writeln!(
                    ejections,
                    "coregate_upstream_ejections_total{{{labels}}} {}",
                    sum(&|s| s.ejections[u][e].get())
                );
                let state = self.verdicts[u][e].load(Ordering::Relaxed);
                let _ = writeln!(
                    healthy,
                    "coregate_upstream_healthy{{{labels}}} {}",
                    u8::from(state & crate::health::FAILING == 0)
                );
                let _ = writeln!(
                    drained,
                    "coregate_upstream_drained{{{labels}}} {}",
                    u8::from(state & crate::health::DRAINED != 0)
                );
            }
        }
        out.push_str(&ejections);
        out.push_str(&healthy);
        out.push_str(&drained);
        let upstreams = || self.cfg.upstreams.iter().enumerate();
        upstream_gauge(
            &mut out,
            ("coregate_upstream_in_flight", "Requests in flight to an upstream with max_requests, over all workers."),
            upstreams().filter(|(_, u)| u.max_requests.is_some()),
            |u| self.in_flight[u].in_flight.load(Ordering::Relaxed),
        );
        upstream_gauge(
            &mut out,
            ("coregate_upstream_queued", "Requests waiting in an upstream's queue for a slot, over all workers."),
            upstreams().filter(|(_, u)| u.queue.is_some()),
            |u| self.in_flight[u].queued.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP coregate_config_generation Reloads applied since the start (counters restart at each).\n# TYPE coregate_config_generation gauge\ncoregate_config_generation {}",
            self.generation
        );
        out.push_str("# HELP coregate_client_connections Client connections open, by worker.\n# TYPE coregate_client_connections gauge\n");
        for (i, w) in self.workers.iter().enumerate() {
            let _ = writeln!(out, "coregate_client_connections{{worker=\"{i}\"}} {}", w.connections.get());
        }
        if !self.cfg.tls.listen.is_empty() {
            self.render_tls(&mut out);
        }
        if self.cfg.server.max_connections_per_ip.is_some() {
            let n = sum(&|s| s.refused_per_ip.get());
            let _ = writeln!(out, "# HELP coregate_client_connections_refused_per_ip_total Client connections closed on accept, their address having server.max_connections_per_ip open.\n# TYPE coregate_client_connections_refused_per_ip_total counter\ncoregate_client_connections_refused_per_ip_total {n}");
        }
        if self.cfg.tracing.is_some() {
            let n = sum(&|s| s.spans_dropped.get());
            let _ = writeln!(out, "# HELP coregate_trace_spans_dropped_total Sampled spans dropped, the exporter's queue full.\n# TYPE coregate_trace_spans_dropped_total counter\ncoregate_trace_spans_dropped_total {n}");
        }
        if let Some(cache) = &self.cache {
            out.push_str("# HELP coregate_cache_lookups_total Requests of cached routes, by X-Cache-Status.\n# TYPE coregate_cache_lookups_total counter\n");
            for (i, result) in CACHE_RESULTS.iter().enumerate() {
                let n = sum(&|s| s.cache[i].get());
                let _ = writeln!(out, "coregate_cache_lookups_total{{result=\"{}\"}} {n}", result.to_ascii_lowercase());
            }
            let (targets, bytes) = cache.usage();
            let _ = writeln!(out, "# HELP coregate_cache_targets Targets (URLs) with a stored response.\n# TYPE coregate_cache_targets gauge\ncoregate_cache_targets {targets}");
            let _ = writeln!(out, "# HELP coregate_cache_bytes Bytes the stored responses take, bookkeeping included.\n# TYPE coregate_cache_bytes gauge\ncoregate_cache_bytes {bytes}");
        }
        out
    }

    /// `GET /upstreams`: each upstream's balancing, bound and requests in flight, and each
    /// endpoint's weight, active-check verdict and failure and ejection counts (summed over
    /// the workers), as JSON. A worker's own passive circuits live on its core and are seen
    /// here through their ejection counts.
    pub(crate) fn upstreams(&self) -> String {
        let sum = |f: &dyn Fn(&Stats) -> u64| self.workers.iter().map(|w| f(w)).sum::<u64>();
        let upstreams: Vec<serde_json::Value> = self
            .cfg
            .upstreams
            .iter()
            .enumerate()
            .map(|(u, up)| {
                let endpoints: Vec<serde_json::Value> = up
                    .endpoints
                    .iter()
                    .enumerate()
                    .map(|(e, addr)| {
                        serde_json::json!({
                            "address": addr.to_string(),
                            "weight": up.weights[e],
                            "healthy": self.verdicts[u][e].load(Ordering::Relaxed) & crate::health::FAILING == 0,
                            "drained": self.verdicts[u][e].load(Ordering::Relaxed) & crate::health::DRAINED != 0,
                            "failures": sum(&|s| s.failures[u][e].get()),
                            "ejections": sum(&|s| s.ejections[u][e].get()),
                        })
                    })
                    .collect();
                let balance = match &up.balance {
                    config::Balance::RoundRobin => "round_robin",
                    config::Balance::LeastRequest => "least_request",
                    config::Balance::Hash(_) => "hash",
                };
                serde_json::json!({
                    "name": up.name,
                    "balance": balance,
                    "max_requests": up.max_requests,
                    "in_flight": up.max_requests.map(|_| self.in_flight[u].in_flight.load(Ordering::Relaxed)),
                    "queued": up.queue.map(|_| self.in_flight[u].queued.load(Ordering::Relaxed)),
                    "endpoints": endpoints,
                })
            })
            .collect();
        let doc = serde_json::json!({ "generation": self.generation, "upstreams": upstreams });
        format!("{doc:#}\n")
    }
}
