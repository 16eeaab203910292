//! The heads coregate writes: the request head sent upstream and the response head sent
//! to the client, with hop-by-hop fields removed (RFC 9110 7.6.1), framing re-stated by the
//! proxy (RFC 9112 6), and the X-Forwarded-* fields set; plus the small error responses.

use config::{HeaderOps, Piece, Template};

use proto_http::write::{field, field_from, field_u64, reason, request_line, request_line_with, status_line};
use proto_http::{is_hop_by_hop, name_is, BodyFraming, FieldList, RequestHead, ResponseHead, Version};

use crate::date::with_date;

/// True for fields named by a Connection header of this message (RFC 9110 7.6.1).
pub(crate) fn named_by_connection<'a>(mut connection_values: impl Iterator<Item = &'a [u8]>, name: &[u8]) -> bool {
    connection_values.any(|v| FieldList::new(v).any(|token| token.eq_ignore_ascii_case(name)))
}

pub(crate) fn connection_values<'a>(
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> impl Iterator<Item = &'a [u8]> {
    headers.filter(|(n, _)| n.eq_ignore_ascii_case(b"connection")).map(|(_, v)| v)
}

/// Policy edits to the heads of one exchange (see `config::HeaderOps`).
pub(crate) struct Edits<'a> {
    /// How the target sent upstream differs from the client's (rewrite, strip_prefix,
    /// query edits, key removal); `None`: the client's.
    pub target: Option<crate::policy::TargetEdit<'a>>,
    pub request_ops: &'a HeaderOps,
    pub response_ops: &'a HeaderOps,
    /// Request fields never forwarded: the API key's header, the consumer and groups headers
    /// (a client must not name its own consumer or groups), and X-Forwarded-Client-Cert
    /// where client certificates are verified (a client must not claim one).
    pub drop: [Option<&'a [u8]>; 4],
    /// The consumer header and the authenticated consumer's name.
    pub consumer: Option<(&'a [u8], &'a [u8])>,
    /// The groups header and the authenticated consumer's groups (a consumer in none: `None`).
    pub consumer_groups: Option<(&'a [u8], &'a [u8])>,
    /// The authenticated identity for `{consumer}` (API-key consumer or JWT subject).
    pub identity_name: Option<&'a [u8]>,
    /// Fields the authentication adds: JWT claims, or an authorization service's.
    pub claim_fields: &'a [(Vec<u8>, Vec<u8>)],
    /// The names of the fields the route's authentication may add: never from the client.
    pub claim_headers: Protected<'a>,
    /// Path-template or path-regex captures, for `{name}` in the target and field templates.
    pub captures: &'a [(&'a str, &'a [u8])],
    /// The client's request, for `{host}` and `{uri}`.
    pub request: &'a RequestHead,
    /// Verified JWT claims, for `{claim:NAME}`.
    pub claims: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// The client's address as text (formatted once per connection).
    pub client_ip: &'a [u8],
    /// The TCP peer's address, appended to X-Forwarded-For (the client's own unless
    /// `server.trusted_proxies` named another).
    pub hop: &'a [u8],
    /// The route's CORS policy and the request's allowed Origin, for the response fields.
    pub cors: Option<(&'a config::Cors, &'a [u8])>,
    /// A WebSocket upgrade is forwarded (RFC 9110 7.8): the request asks the upstream to
    /// switch with its own `Upgrade` and `Connection` fields (the client's are hop-by-hop).
    pub websocket: bool,
    /// The client connection speaks TLS: `X-Forwarded-Proto: https`.
    pub https: bool,
    /// Add this hop's element to `Forwarded` (`server.forwarded`).
    pub forwarded: bool,
    /// `X-Forwarded-Client-Cert` for the client's verified certificate.
    pub client_cert: Option<std::rc::Rc<[u8]>>,
    /// The request id field and its value (`server.request_id`): sent upstream and back in
    /// place of any field of that name from either side.
    pub request_id: Option<(&'a [u8], &'a [u8])>,
    /// The `traceparent` of coregate's span (`[tracing]`): sent upstream in place of the
    /// client's.
    pub traceparent: Option<&'a [u8]>,
    /// This gateway's pseudonym (`server.via`), added to the Via of both heads.
    pub via: Option<&'a [u8]>,
    /// A TRACE or OPTIONS request's Max-Forwards (above 0), sent on one lower (RFC 9110
    /// 7.6.2); `None` forwards the field as it came, if it came.
    pub max_forwards: Option<u64>,
}

/// The request fields a route's authentication owns (see [`Edits::claim_headers`]).
#[derive(Clone, Copy)]
pub(crate) enum Protected<'a> {
    None,
    /// `auth.jwt.claims_to_headers`: (claim, field) pairs.
    Claims(&'a [(String, String)]),
    /// `auth.external.upstream_headers`.
    Names(&'a [String]),
}

impl Protected<'_> {
    fn contains(self, name: &[u8]) -> bool {
        match self {
            Protected::None => false,
            Protected::Claims(pairs) => pairs.iter().any(|(_, h)| h.as_bytes().eq_ignore_ascii_case(name)),
            Protected::Names(names) => names.iter().any(|h| h.as_bytes().eq_ignore_ascii_case(name)),
        }
    }
}

impl Edits<'_> {
    fn dropped(&self, name: &[u8]) -> bool {
        self.drop.iter().flatten().any(|d| d.eq_ignore_ascii_case(name))
            || self.request_id.is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
            || (self.traceparent.is_some() && name.eq_ignore_ascii_case(b"traceparent"))
            || self.claim_headers.contains(name)
    }

    fn expand(&self, out: &mut Vec<u8>, t: &Template) {
        for piece in &t.0 {
            match piece {
                Piece::Text(s) => out.extend_from_slice(s.as_bytes()),
                Piece::ClientIp => {
                    out.extend_from_slice(self.client_ip);
                }
                Piece::Consumer => out.extend_from_slice(self.identity_name.unwrap_or_default()),
                Piece::Capture(name) => expand_capture(out, self.captures, name),
                Piece::Claim(name) => {
                    if let Some(v) = self.claims.and_then(|c| c.get(name)).and_then(crate::jwt::claim_value) {
                        out.extend_from_slice(v.as_bytes());
                    }
                }
                Piece::Host => push_host(out, self.request),
                Piece::Uri => out.extend_from_slice(self.request.path()),
            }
        }
    }

    /// Writes the `set` and `add` fields of `ops`. The test for none is inlined into the
    /// head writers, where a call that found nothing cost about 57 instructions (callgrind).
    #[inline]
    fn write_ops(&self, out: &mut Vec<u8>, ops: &HeaderOps) {
        if !ops.set.is_empty() || !ops.add.is_empty() {
            self.write_ops_out(out, ops);
        }
    }

    fn write_ops_out(&self, out: &mut Vec<u8>, ops: &HeaderOps) {
        for (name, t) in ops.set.iter().chain(&ops.add) {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            self.expand(out, t);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Appends the value captured as `name`.
pub(crate) fn expand_capture(out: &mut Vec<u8>, captures: &[(&str, &[u8])], name: &str) {
    if let Some((_, v)) = captures.iter().find(|(n, _)| *n == name) {
        out.extend_from_slice(v);
    }
}

/// True when `ops` removes or replaces the field `name`. Inlined: on a route without edits
/// (most) it is two tests, where the call cost about 25 instructions per field (callgrind).
#[inline]
pub(crate) fn replaced(ops: &HeaderOps, name: &[u8]) -> bool {
    (!ops.remove.is_empty() || !ops.set.is_empty()) && replaced_by(ops, name)
}

fn replaced_by(ops: &HeaderOps, name: &[u8]) -> bool {
    ops.remove.iter().any(|r| r.as_bytes().eq_ignore_ascii_case(name))
        || ops.set.iter().any(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
}

/// Writes the request head for the upstream into `out`.
///
/// - Origin-form target, always HTTP/1.1.
/// - Host kept from the client (or the absolute-form authority, RFC 9112 3.2.2); for an
///   HTTP/1.0 request without one, `fallback_host` (the endpoint address).
/// - Content-Length re-stated as one value; chunked bodies are re-encoded, so
///   Transfer-Encoding is re-stated as `chunked`.
/// - Expect is not forwarded: coregate answers `100-continue` itself before it reads the body.
/// - X-Forwarded-For appended to (several fields are joined), X-Forwarded-Proto and
///   X-Forwarded-Host set.
/// - The policy edits of `edits`: fields removed, set and added, the consumer named.
pub(crate) fn request_head(
    out: &mut Vec<u8>,
    req: &RequestHead,
    edits: &Edits<'_>,
    fallback_host: impl FnOnce() -> String,
) {
    out.clear();
    out.reserve(req.bytes.len() + 128);
    match &edits.target {
        Some(t) => request_line_with(out, req.method(), |out| t.write(out, req.path(), edits.captures)),
        None => request_line(out, req.method(), req.path()),
    }
    let other_tokens = req.meta.connection.other;
    let ops = edits.request_ops;
    let mut forwarded_for = 0;
    for h in &req.meta.headers {
        let name = h.name.get(&req.bytes);
        if is_hop_by_hop(name)
            || name_is(name, b"content-length")
            || name_is(name, b"host")
            || name_is(name, b"expect")
            || name_is(name, b"x-forwarded-for")
            || name_is(name, b"x-forwarded-proto")
            || name_is(name, b"x-forwarded-host")
            || (other_tokens && named_by_connection(connection_values(req.headers()), name))
            || edits.dropped(name)
            || replaced(ops, name)
            || (edits.max_forwards.is_some() && name_is(name, b"max-forwards"))
        {
            forwarded_for += usize::from(name_is(name, b"x-forwarded-for"));
            continue;
        }
        field_from(out, &req.bytes, h);
    }
    // The fields coregate writes give way to the route's edits: a `set` one replaces it
    // (written with the other edits), a removed one is not sent (Host cannot be removed).
    // Looked up once, and only for a route with edits: the plain path pays one test.
    let [mut host, mut xff, mut xfp, mut xfh] = [true; 4];
    if !ops.set.is_empty() || !ops.remove.is_empty() {
        [host, xff, xfp, xfh] =
            [&b"host"[..], b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"].map(|n| !replaced(ops, n));
    }
    if host {
        match req.host() {
            Some(h) => field(out, b"host", h),
            None => field(out, b"host", fallback_host().as_bytes()),
        }
    }
    match req.meta.body {
        BodyFraming::Empty => {}
        BodyFraming::Length(n) => field_u64(out, b"content-length", n),
        BodyFraming::Chunked => field(out, b"transfer-encoding", b"chunked"),
    }
    // X-Forwarded-For: earlier values (several fields joined), then the client's address.
    if xff {
        out.extend_from_slice(b"x-forwarded-for: ");
        if forwarded_for > 0 {
            for (name, value) in req.headers() {
                if name.eq_ignore_ascii_case(b"x-forwarded-for") && !value.is_empty() {
                    out.extend_from_slice(value);
                    out.extend_from_slice(b", ");
                }
            }
        }
        out.extend_from_slice(edits.hop);
        out.extend_from_slice(b"\r\n");
    }
    if xfp {
        field(out, b"x-forwarded-proto", if edits.https { b"https" } else { b"http" });
    }
    if edits.forwarded && !replaced(ops, b"forwarded") {
        forwarded(out, edits.hop, edits.https, req.host());
    }
    if let Some(value) = &edits.client_cert {
        field(out, b"x-forwarded-client-cert", value);
    }
    if let Some(h) = req.host().filter(|_| xfh) {
        field(out, b"x-forwarded-host", h);
    }
    for (name, value) in edits.consumer.iter().chain(&edits.consumer_groups) {
        field(out, name, value);
    }
    if let Some((name, id)) = edits.request_id {
        field(out, name, id);
    }
    if let Some(tp) = edits.traceparent {
        field(out, b"traceparent", tp);
    }
    if let Some(name) = edits.via {
        via(out, req.meta.version, name);
    }
    if let Some(n) = edits.max_forwards {
        field_u64(out, b"max-forwards", n.saturating_sub(1));
    }
    for (name, value) in edits.claim_fields {
        field(out, name, value);
    }
    edits.write_ops(out, ops);
    if edits.websocket {
        field(out, b"upgrade", b"websocket");
        field(out, b"connection", b"upgrade");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends this hop's element of `Forwarded` (RFC 7239 4) as a field line of its own, after
/// any the request came with (the same list, RFC 9110 5.3): `for` the TCP peer (an IPv6
/// address in brackets and quotes, RFC 7239 6), `proto`, and `host` quoted, since a port's
/// `:` is not a token character (the parser admitted only reg-name characters there, so
/// nothing needs escaping).
fn forwarded(out: &mut Vec<u8>, hop: &[u8], https: bool, host: Option<&[u8]>) {
    out.extend_from_slice(b"forwarded: for=");
    if hop.contains(&b':') {
        out.extend_from_slice(b"\"[");
        out.extend_from_slice(hop);
        out.extend_from_slice(b"]\"");
    } else {
        out.extend_from_slice(hop);
    }
    out.extend_from_slice(if https { b";proto=https" } else { b";proto=http" });
    if let Some(h) = host.filter(|h| !h.is_empty()) {
        out.extend_from_slice(b";host=\"");
        out.extend_from_slice(h);
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends this gateway's Via member for a message received as `version` (RFC 9110 7.6.3:
/// the protocol it came in, then the pseudonym). A Via the message had is forwarded before
/// it as its own field line, which means the same as one list (RFC 9110 5.3).
fn via(out: &mut Vec<u8>, version: Version, name: &[u8]) {
    out.extend_from_slice(if version == Version::Http10 { b"via: 1.0 " } else { b"via: 1.1 " });
    out.extend_from_slice(name);
    out.extend_from_slice(b"\r\n");
}

/// How the response body is framed towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientFraming {
    None,
    Length(u64),
    Chunked,
    /// Close-delimited: the client connection closes after the body.
    Close,
    /// A 101 to WebSocket: no body, the connection becomes a tunnel (`crate::tunnel`).
    Tunnel,
}

/// Writes the response head for the client into `out`. `keep_alive` says whether the
/// client connection stays open after this response; `http10` whether the client spoke 1.0.
pub(crate) fn response_head(
    out: &mut Vec<u8>,
    resp: &ResponseHead,
    framing: ClientFraming,
    keep_alive: bool,
    http10: bool,
    edits: &Edits<'_>,
) {
    out.clear();
    out.reserve(resp.bytes.len() + 64);
    status_line(out, resp.meta.status, resp.reason());
    let other_tokens = resp.meta.connection.other;
    let mut dated = false;
    for h in &resp.meta.headers {
        let name = h.name.get(&resp.bytes);
        dated |= name_is(name, b"date");
        let is_length = name_is(name, b"content-length");
        if is_hop_by_hop(name)
            || (is_length && framing != ClientFraming::None)
            || (other_tokens && named_by_connection(connection_values(resp.headers()), name))
            || replaced(edits.response_ops, name)
            || (edits.cors.is_some() && name.len() > 15 && name[..15].eq_ignore_ascii_case(b"access-control-"))
            || edits.request_id.is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            continue;
        }
        field_from(out, &resp.bytes, h);
    }
    if !dated && resp.meta.status >= 200 && !replaced(edits.response_ops, b"date") {
        // RFC 9110 6.6.1: a recipient with a clock forwarding a response without Date adds
        // one (nginx always writes its own); a 101 may go without, and a route that sets or
        // removes Date has its way. A stored response got its Date when it was stored.
        with_date(|d| field(out, b"date", d));
    }
    edits.write_ops(out, edits.response_ops);
    if let Some((name, id)) = edits.request_id {
        field(out, name, id);
    }
    if let Some(name) = edits.via {
        via(out, resp.meta.version, name);
    }
    if let Some((cors, origin)) = edits.cors {
        field(out, b"access-control-allow-origin", if cors.origins.is_empty() { b"*" } else { origin });
        if !cors.origins.is_empty() {
            field(out, b"vary", b"origin");
        }
        if cors.credentials {
            field(out, b"access-control-allow-credentials", b"true");
        }
        if !cors.expose_headers.is_empty() {
            field(out, b"access-control-expose-headers", cors.expose_headers.as_bytes());
        }
    }
    match framing {
        ClientFraming::Length(n) => field_u64(out, b"content-length", n),
        ClientFraming::Chunked => field(out, b"transfer-encoding", b"chunked"),
        ClientFraming::None | ClientFraming::Close => {}
        // RFC 9110 7.8: the 101 names the protocol switched to, in a Connection option.
        ClientFraming::Tunnel => {
            field(out, b"upgrade", b"websocket");
            field(out, b"connection", b"upgrade");
            out.extend_from_slice(b"\r\n");
            return;
        }
    }
    if !keep_alive {
        field(out, b"connection", b"close");
    } else if http10 {
        field(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
}

/// An informational (1xx) response head relayed as received, hop-by-hop fields removed.
pub(crate) fn informational_head(out: &mut Vec<u8>, resp: &ResponseHead) {
    out.clear();
    status_line(out, resp.meta.status, resp.reason());
    for (name, value) in resp.headers().filter(|(n, _)| !is_hop_by_hop(n)) {
        field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// What an error response generated by coregate says: its status, a fixed text, the
/// request's id (if it has one) and the `[errors]` settings that write its body.
pub(crate) struct ErrorAnswer<'a> {
    pub status: u16,
    pub detail: &'a str,
    pub request_id: Option<&'a [u8]>,
    pub pages: &'a config::ErrorPages,
    /// The Server field's value (`server.server_header`); empty: none.
    pub server: &'a [u8],
}

/// A small, complete error response generated by coregate, with `extra` fields (such as
/// WWW-Authenticate or Retry-After); its body as `[errors]` says (`error_page`).
pub(crate) fn error_response(
    e: &ErrorAnswer<'_>,
    extra: &[(&[u8], &[u8])],
    keep_alive: bool,
    version: Version,
) -> Vec<u8> {
    let (content_type, body) = crate::error_page::render(e.pages, e.status, e.detail, e.request_id);
    let mut fields: Vec<(&[u8], &[u8])> = vec![(b"content-type", content_type)];
    fields.extend_from_slice(extra);
    local_response(e.status, e.server, &fields, &body, keep_alive, version)
}

/// A complete response generated by coregate itself (errors, policy refusals, direct
/// responses, redirects): Date, Server (`server`, unless empty), the given fields,
/// Content-Length and the body.
pub(crate) fn local_response(
    status: u16,
    server: &[u8],
    headers: &[(&[u8], &[u8])],
    body: &[u8],
    keep_alive: bool,
    version: Version,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.len());
    status_line(&mut out, status, reason(status).as_bytes());
    with_date(|d| field(&mut out, b"date", d));
    if !server.is_empty() {
        field(&mut out, b"server", server);
    }
    for (n, v) in headers {
        field(&mut out, n, v);
    }
    field_u64(&mut out, b"content-length", body.len() as u64);
    if !keep_alive {
        field(&mut out, b"connection", b"close");
    } else if version == Version::Http10 {
        field(&mut out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Appends `{host}`: the request's Host in lower case, without its port or a trailing dot
/// (nginx's `$host`); nothing without one. The parser checked its characters.
pub(crate) fn push_host(out: &mut Vec<u8>, req: &RequestHead) {
    let host = req.host().map(crate::route::normalise_host).unwrap_or_default();
    out.extend(host.iter().map(u8::to_ascii_lowercase));
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proto_http::{parse_request, Limits};

    fn req(text: &str) -> RequestHead {
        let meta = parse_request(text.as_bytes(), &Limits::default()).unwrap().unwrap();
        RequestHead::new(Bytes::copy_from_slice(text.as_bytes()), meta)
    }

    fn plain_edits<'a>(none: &'a HeaderOps, r: &'a RequestHead) -> Edits<'a> {
        Edits {
            request: r,
            target: None,
            request_ops: none,
            response_ops: none,
            drop: [None, None, None, None],
            consumer: None,
            consumer_groups: None,
            identity_name: None,
            claim_fields: &[],
            claim_headers: Protected::None,
            captures: &[],
            claims: None,
            client_ip: b"10.0.0.9",
            hop: b"10.0.0.9",
            cors: None,
            websocket: false,
            https: false,
            forwarded: false,
            client_cert: None,
            request_id: None,
            traceparent: None,
            via: None,
            max_forwards: None,
        }
    }

    #[test]
    fn request_head_drops_hop_by_hop_and_appends_forwarded_for() {
        let r = req("POST http://h.example/p?q HTTP/1.1\r\nHost: h.example\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: websocket\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nX-Forwarded-Proto: https\r\nContent-Length: 3, 3\r\nExpect: 100-continue\r\nAccept: */*\r\n\r\n");
        let mut out = Vec::new();
        let none = HeaderOps::default();
        let edits = plain_edits(&none, &r);
        request_head(&mut out, &r, &edits, || "fallback".into());
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "POST /p?q HTTP/1.1\r\naccept: */*\r\n".replace("accept", "Accept")
                + "host: h.example\r\ncontent-length: 3\r\nx-forwarded-for: 1.2.3.4, 5.6.7.8, 10.0.0.9\r\nx-forwarded-proto: http\r\nx-forwarded-host: h.example\r\n\r\n"
        );
    }

    #[test]
    fn websocket_heads_name_the_upgrade_themselves() {
        let r = req("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket, foo\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n");
        let none = HeaderOps::default();
        let edits = Edits { websocket: true, ..plain_edits(&none, &r) };
        let mut out = Vec::new();
        request_head(&mut out, &r, &edits, || "fallback".into());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /ws HTTP/1.1\r\nSec-WebSocket-Key: k\r\nhost: h\r\n"), "{text}");
        assert!(text.ends_with("upgrade: websocket\r\nconnection: upgrade\r\n\r\n"), "{text}");
        assert_eq!(text.matches("onnection").count(), 1, "{text}");

        let raw = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Hop\r\nX-Hop: 1\r\nContent-Length: 0\r\nSec-WebSocket-Accept: a\r\n\r\n";
        let meta = proto_http::parse_response(raw.as_bytes(), &Limits::default(), false).unwrap().unwrap();
        let resp = ResponseHead::new(Bytes::copy_from_slice(raw.as_bytes()), meta);
        let mut out = Vec::new();
        response_head(&mut out, &resp, ClientFraming::Tunnel, true, false, &edits);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: a\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_elements_quote_what_is_not_a_token() {
        let r = req("GET / HTTP/1.1\r\nHost: h.example:8443\r\nForwarded: for=192.0.2.1\r\n\r\n");
        let none = HeaderOps::default();
        let edits = Edits { forwarded: true, https: true, hop: b"2001:db8::1", ..plain_edits(&none, &r) };
        let mut out = Vec::new();
        request_head(&mut out, &r, &edits, || "fallback".into());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Forwarded: for=192.0.2.1\r\n"), "{text}");
        assert!(
            text.contains("\r\nforwarded: for=\"[2001:db8::1]\";proto=https;host=\"h.example:8443\"\r\n"),
            "{text}"
        );
        let edits = Edits { forwarded: true, ..plain_edits(&none, &r) };
        let mut out = Vec::new();
        request_head(&mut out, &r, &edits, || "fallback".into());
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("\r\nforwarded: for=10.0.0.9;proto=http;host=\"h.example:8443\"\r\n"));
    }

    #[test]
    fn a_response_without_date_gets_one() {
        let r = req("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let none = HeaderOps::default();
        let edits = plain_edits(&none, &r);
        for (raw, dates) in [
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1),
            ("HTTP/1.1 404 Not Found\r\nDATE: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 0\r\n\r\n", 1),
        ] {
            let meta = proto_http::parse_response(raw.as_bytes(), &Limits::default(), false).unwrap().unwrap();
            let resp = ResponseHead::new(Bytes::copy_from_slice(raw.as_bytes()), meta);
            let mut out = Vec::new();
            response_head(&mut out, &resp, ClientFraming::Length(0), true, false, &edits);
            let text = String::from_utf8(out).unwrap().to_ascii_lowercase();
            assert_eq!(text.matches("\r\ndate: ").count(), dates, "{text}");
            assert!(!raw.contains("1994") || text.contains("1994"), "the upstream's Date is kept: {text}");
        }
        // A route that sets Date (or removes it) is not second-guessed.
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let meta = proto_http::parse_response(raw.as_bytes(), &Limits::default(), false).unwrap().unwrap();
        let resp = ResponseHead::new(Bytes::copy_from_slice(raw.as_bytes()), meta);
        let set =
            HeaderOps { set: vec![("date".into(), Template(vec![Piece::Text("x".into())]))], ..HeaderOps::default() };
        let edits = Edits { response_ops: &set, ..plain_edits(&none, &r) };
        let mut out = Vec::new();
        response_head(&mut out, &resp, ClientFraming::Length(0), true, false, &edits);
        assert_eq!(String::from_utf8(out).unwrap().matches("date: ").count(), 1);
    }

    #[test]
    fn error_response_is_complete() {
        let pages = config::ErrorPages::default();
        let e = ErrorAnswer { status: 502, detail: "upstream refused", request_id: None, pages: &pages, server: b"gw" };
        let out = error_response(&e, &[], false, Version::Http11);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(text.contains("\r\nserver: gw\r\n"), "{text}");
        let e = ErrorAnswer { server: b"", ..e };
        let text = String::from_utf8(error_response(&e, &[], false, Version::Http11)).unwrap();
        assert!(!text.contains("server:"), "{text}");
        assert!(text.contains("connection: close\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().parse().unwrap();
        assert_eq!(len, body.len());
    }
}
