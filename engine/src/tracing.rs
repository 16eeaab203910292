//! OpenTelemetry traces (`[tracing]`): every request gets a server span of coregate's own,
//! a child of the span its client's `traceparent` names (W3C Trace Context) or the root of
//! a new trace, and the upstream gets that span's `traceparent`, so the upstream's spans
//! hang below coregate's. Sampling is parent-based: a request with a `traceparent` follows
//! its sampled flag, a new trace is sampled for exactly `sample_percent` of a worker's
//! requests. Sampled spans go over a bounded channel to an exporter thread of the
//! generation, which posts them in batches to the collector as OTLP/HTTP JSON; spans that
//! find the channel full are dropped and counted, never waited for.
//!
//! Left to others: reading and writing the field (proto-http's `trace_context`), sending
//! it upstream (`forward`), the settings (`config::Tracing`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use proto_http::trace_context::{self, write_hex};
use proto_http::RequestHead;

use crate::share::Share;

/// Spans waiting for the exporter, at most; more are dropped.
const QUEUE: usize = 16 * 1024;
/// Spans per post, at most.
const BATCH: usize = 512;
/// A span waits this long for its batch to fill before the batch is posted.
const LINGER: Duration = Duration::from_secs(1);
/// Connecting to the collector, and each write and read of a post, time out after this.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// A request's place in its trace.
pub(crate) struct Context {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    /// The client's span, when it sent a `traceparent`.
    parent: Option<[u8; 8]>,
    sampled: bool,
    start: SystemTime,
    /// The `traceparent` the upstream gets.
    pub header: [u8; trace_context::LEN],
}

/// A finished span on its way to the exporter.
pub(crate) struct Span {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    start: SystemTime,
    end: SystemTime,
    method: String,
    target: String,
    route: Option<String>,
    upstream: Option<String>,
    status: u16,
    client: String,
}

/// One worker's side: ids, the sampling share, and the channel to the exporter.
pub(crate) struct Tracer {
    sample_percent: f64,
    share: Share,
    rng: crate::random::Rng,
    spans: Sender<Span>,
    dropped: Option<std::sync::Arc<crate::metrics::Stats>>,
}

impl Tracer {
    pub(crate) fn new(
        cfg: &config::Tracing,
        spans: Sender<Span>,
        stats: Option<std::sync::Arc<crate::metrics::Stats>>,
    ) -> Tracer {
        Tracer {
            sample_percent: cfg.sample_percent,
            share: Share::default(),
            rng: crate::random::Rng::new(),
            spans,
            dropped: stats,
        }
    }

    /// An id: unique and unpredictable enough for tracing (ids are not secrets), never 0.
    fn next(&self) -> u64 {
        self.rng.next() | 1
    }

    /// The request's span: in the client's trace, or a new one.
    pub(crate) fn start(&self, req: &RequestHead) -> Context {
        let parent = req
            .headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"traceparent"))
            .and_then(|(_, v)| trace_context::parse(v));
        let (trace_id, parent_id, sampled) = match parent {
            Some(p) => (p.trace_id, Some(p.parent_id), p.sampled),
            None => {
                let mut id = [0; 16];
                id[..8].copy_from_slice(&self.next().to_be_bytes());
                id[8..].copy_from_slice(&self.next().to_be_bytes());
                (id, None, self.sample_percent > 0.0 && self.share.take(self.sample_percent))
            }
        };
        let span_id = self.next().to_be_bytes();
        let mut header = [0; trace_context::LEN];
        trace_context::write(&mut header, &trace_id, &span_id, sampled);
        Context { trace_id, span_id, parent: parent_id, sampled, start: SystemTime::now(), header }
    }

    /// Ends the request's span; a sampled one goes to the exporter.
    pub(crate) fn end(
        &self,
        cx: &Context,
        req: &RequestHead,
        route: Option<&str>,
        upstream: Option<&str>,
        status: u16,
        client: &[u8],
    ) {
        if !cx.sampled {
            return;
        }
        let span = Span {
            trace_id: cx.trace_id,
            span_id: cx.span_id,
            parent: cx.parent,
            start: cx.start,
            end: SystemTime::now(),
            method: String::from_utf8_lossy(req.method()).into_owned(),
            target: String::from_utf8_lossy(req.path_only()).into_owned(),
            route: route.map(str::to_string),
            upstream: upstream.map(str::to_string),
            status,
            client: String::from_utf8_lossy(client).into_owned(),
        };
        if let Err(TrySendError::Full(_)) = self.spans.try_send(span) {
            if let Some(stats) = &self.dropped {
                stats.spans_dropped.add(1);
            }
        }
    }
}

/// The channel the workers send spans on, and the exporter thread that posts them; the
/// thread ends, after posting what it holds, when every worker's sender is gone.
pub(crate) fn start_exporter(cfg: &config::Tracing) -> std::io::Result<(Sender<Span>, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded(QUEUE);
    let cfg = cfg.clone();
    let thread = std::thread::Builder::new().name("coregate-traces".into()).spawn(move || export(&cfg, &rx))?;
    Ok((tx, thread))
}

fn export(cfg: &config::Tracing, rx: &Receiver<Span>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = match rx.recv() {
            Ok(span) => span,
            Err(_) => return,
        };
        batch.push(first);
        let until = std::time::Instant::now() + LINGER;
        let mut open = true;
        while batch.len() < BATCH {
            match rx.recv_deadline(until) {
                Ok(span) => batch.push(span),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if let Err(e) = post(cfg, &otlp_json(&cfg.service_name, &batch)) {
            log::warn!("tracing: {} spans not delivered to {}: {e}", batch.len(), cfg.collector);
        }
        batch.clear();
        if !open {
            return;
        }
    }
}

/// Posts one OTLP/HTTP request; Ok once the collector answered 2xx.
fn post(cfg: &config::Tracing, body: &[u8]) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&cfg.collector, POST_TIMEOUT)?;
    s.set_write_timeout(Some(POST_TIMEOUT))?;
    s.set_read_timeout(Some(POST_TIMEOUT))?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        cfg.path,
        cfg.collector,
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut status = [0; 12];
    s.read_exact(&mut status)?;
    match &status[..10] {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', _, b' ', b'2'] => Ok(()),
        _ => Err(std::io::Error::other(format!("the collector answered {:?}", String::from_utf8_lossy(&status)))),
    }
}

fn unix_nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos().to_string()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    write_hex(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

/// The spans as an OTLP `ExportTraceServiceRequest` in JSON (ids in hex, 64-bit numbers as
/// strings, as the OTLP JSON mapping has them).
fn otlp_json(service: &str, spans: &[Span]) -> Vec<u8> {
    use serde_json::{json, Value};
    let text = |k: &str, v: &str| json!({ "key": k, "value": { "stringValue": v } });
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut attributes = vec![
                text("http.request.method", &s.method),
                text("url.path", &s.target),
                json!({ "key": "http.response.status_code", "value": { "intValue": s.status.to_string() } }),
                text("client.address", &s.client),
            ];
            if let Some(r) = &s.route {
                attributes.push(text("http.route", r));
            }
            if let Some(u) = &s.upstream {
                attributes.push(text("coregate.upstream", u));
            }
            // A server span's status is an error for 5xx (and a request closed unanswered).
            let code = if s.status >= 500 || s.status == 0 { 2 } else { 0 };
            json!({
                "traceId": hex(&s.trace_id),
                "spanId": hex(&s.span_id),
                "parentSpanId": s.parent.map(|p| hex(&p)).unwrap_or_default(),
                "name": match &s.route { Some(r) => format!("{} {r}", s.method), None => s.method.clone() },
                "kind": 2,
                "startTimeUnixNano": unix_nanos(s.start),
                "endTimeUnixNano": unix_nanos(s.end),
                "attributes": attributes,
                "status": { "code": code },
            })
        })
        .collect();
    let doc = json!({ "resourceSpans": [{
        "resource": { "attributes": [text("service.name", service)] },
        "scopeSpans": [{ "scope": { "name": "coregate", "version": env!("CARGO_PKG_VERSION") }, "spans": spans }],
    }]});
    serde_json::to_vec(&doc).unwrap_or_default()
}
