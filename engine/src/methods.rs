//! What coregate answers itself for TRACE and OPTIONS (RFC 9110 9.3.7, 9.3.8): TRACE is
//! refused unless `server.allow_trace`, Max-Forwards is read (RFC 9110 7.6.2) and, at 0,
//! the request is answered here as its final recipient; `OPTIONS *` is answered for the
//! gateway as a whole. Routing, the policies and counting Max-Forwards down in the head sent
//! upstream are the proxy's and `forward`'s.

use config::{Config, Route};
use proto_http::write::{field, request_line};
use proto_http::{Method, RequestHead, Version};

use crate::error::{Error, Kind, Side};
use crate::io::Conn;
use crate::local::{send_local, Reply};
use crate::proxy::Next;
use crate::worker::Worker;

/// The methods coregate proxies, for `Allow` (CONNECT never is).
const ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH";
const ALLOW_WITH_TRACE: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE";

/// Request fields a TRACE echo leaves out: credentials (RFC 9110 9.3.8 asks the final
/// recipient to exclude sensitive fields; reflected, they are what cross-site tracing
/// steals). The API key's header is added from the configuration.
const SECRET: [&[u8]; 3] = [b"authorization", b"proxy-authorization", b"cookie"];

/// `Allow` for the gateway as a whole: what a 405 and `OPTIONS *` list.
pub(crate) fn allowed(cfg: &Config) -> &'static str {
    if cfg.server.allow_trace {
        ALLOW_WITH_TRACE
    } else {
        ALLOW
    }
}

/// For a TRACE or OPTIONS request: its Max-Forwards, or why it is refused (TRACE while
/// `server.allow_trace` is off: 405; a malformed Max-Forwards: 400).
pub(crate) fn screen(cfg: &Config, req: &RequestHead) -> Result<Option<u64>, Error> {
    if req.meta.method == Method::Trace && !cfg.server.allow_trace {
        return Err(Error::new(Kind::MethodNotAllowed, Side::Client, "TRACE is not allowed (server.allow_trace)"));
    }
    req.max_forwards().map_err(|e| Error::malformed(Side::Client, e))
}

/// Answers a TRACE or OPTIONS request as its final recipient (Max-Forwards 0 on a proxied
/// route, or `OPTIONS *`): TRACE with 200 and the request as `message/http`, less the
/// credential fields; OPTIONS with 200, no content and `Allow`: the route's methods, or
/// every method coregate proxies when the route takes any (or for `*`).
pub(crate) async fn answer(
    w: &Worker,
    client: &mut Conn,
    route: Option<&Route>,
    req: &RequestHead,
    reply: Reply<'_>,
) -> Next {
    if req.meta.method == Method::Trace {
        let body = echo(req, w.cfg.api_key.header.as_bytes());
        return send_local(w, client, 200, &[(b"content-type", b"message/http")], &body, reply).await;
    }
    let allow = match route.map(|r| &r.methods) {
        Some(methods) if !methods.is_empty() => methods.join(", "),
        _ => allowed(&w.cfg).to_string(),
    };
    send_local(w, client, 200, &[(b"allow", allow.as_bytes())], b"", reply).await
}

/// The request as received, in `message/http` form (RFC 9112 2.1), without the fields in
/// [`SECRET`] and `key_header`.
fn echo(req: &RequestHead, key_header: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(req.meta.head_len);
    request_line(&mut out, req.method(), req.path());
    if req.meta.version == Version::Http10 {
        // `request_line` writes HTTP/1.1, the version coregate forwards; the echo is of
        // what came.
        let n = out.len();
        out[n - 3] = b'0';
    }
    for (name, value) in req.headers() {
        if !SECRET.iter().any(|s| s.eq_ignore_ascii_case(name)) && !name.eq_ignore_ascii_case(key_header) {
            field(&mut out, name, value);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn head(raw: &str) -> RequestHead {
        let meta = proto_http::parse_request(raw.as_bytes(), &proto_http::Limits::default()).unwrap().unwrap();
        RequestHead::new(Bytes::copy_from_slice(raw.as_bytes()), meta)
    }

    #[test]
    fn the_echo_is_the_request_without_credentials() {
        let req = head("TRACE /a?b HTTP/1.1\r\nHost: x\r\nCookie: s=1\r\nX-Api-Key: k\r\nAuthorization: Basic x\r\nVia: 1.1 p\r\nMax-Forwards: 0\r\n\r\n");
        let text = echo(&req, b"x-api-key");
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "TRACE /a?b HTTP/1.1\r\nHost: x\r\nVia: 1.1 p\r\nMax-Forwards: 0\r\n\r\n"
        );
        let req = head("TRACE / HTTP/1.0\r\n\r\n");
        assert_eq!(&echo(&req, b"x-api-key")[..], b"TRACE / HTTP/1.0\r\n\r\n");
    }
}
