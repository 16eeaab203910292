//! A client connection: read request heads (with the header timeout for a head in
//! progress and the idle timeout between requests), hand each to the proxy, answer
//! malformed input with a small error response and close. Pipelined requests are served
//! in order from the bytes left in the buffer.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;
use proto_http::{parse_request, RequestHead, Version};

use crate::error::{Error, Kind, Side};
use crate::io::Conn;
use crate::proxy::{self, Next};
use crate::worker::Worker;

/// Initial read buffer of a client connection; heads larger than this grow it up to
/// `limits.max_head_bytes`.
const CLIENT_BUF: usize = 4 * 1024;

pub(crate) async fn serve(w: Rc<Worker>, stream: TcpStream, peer: SocketAddr) {
    let mut client = Conn::new(stream, CLIENT_BUF);
    let mut first = true;
    loop {
        let req = match read_head(&w, &mut client, first).await {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) => {
                if let Some(status) = e.status() {
                    log::debug!("{status} for {peer}: {e}");
                    proxy::send_error(&w, &mut client, status, e.context, false, Version::Http11).await;
                }
                return;
            }
        };
        first = false;
        if proxy::handle(&w, &mut client, peer, req).await == Next::Close {
            return;
        }
    }
}

/// Reads the next request head. `Ok(None)`: the connection ends quietly (clean close,
/// idle timeout, or draining with no request started).
async fn read_head(w: &Worker, client: &mut Conn, first: bool) -> Result<Option<RequestHead>, Error> {
    let t = &w.cfg.timeouts;
    let mut deadline: Option<Instant> = None;
    loop {
        if !client.buf.is_empty() {
            if let Some(meta) =
                parse_request(&client.buf, &w.cfg.limits.wire).map_err(|e| Error::malformed(Side::Client, e))?
            {
                let bytes = client.buf.split_to(meta.head_len).freeze();
                return Ok(Some(RequestHead::new(bytes, meta)));
            }
        }
        let read = if client.buf.is_empty() && deadline.is_none() {
            // Between requests: wait for a first byte, the idle timeout, or the drain.
            if w.drain.is_draining() {
                return Ok(None);
            }
            let idle = if first { t.client_header } else { t.client_idle };
            monoio::select! {
                r = client.fill(CLIENT_BUF, idle) => r,
                _ = w.drain.wait() => return Ok(None),
            }
        } else {
            let d = *deadline.get_or_insert_with(|| Instant::now() + t.client_header);
            client.fill(CLIENT_BUF, d.saturating_duration_since(Instant::now())).await
        };
        match read {
            Ok(0) if client.buf.is_empty() => return Ok(None),
            Ok(0) => return Err(Error::new(Kind::Closed, Side::Client, "closed in the middle of a request head")),
            Ok(_) => {
                deadline.get_or_insert_with(|| Instant::now() + t.client_header);
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut && deadline.is_none() => return Ok(None),
            Err(e) => return Err(Error::io(Side::Client, "reading the request head", e)),
        }
    }
}
