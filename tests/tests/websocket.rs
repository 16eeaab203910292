//! WebSocket upgrades end to end, on both drivers: the handshake forwarded with its own
//! Upgrade and Connection fields, the 101 relayed, bytes tunnelled both ways (including
//! those sent right after either head, a large transfer and half-closes), the idle timeout,
//! the drain's deadline, and the refusals: a route that turns upgrades off, a 101 that switches to something
//! else, an upstream that declines.

use std::io::{Read, Write};
use std::net::Shutdown;

use coregate_tests::*;

const HANDSHAKE: &str = "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade, X-Hop\r\nX-Hop: 1\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

const SWITCH: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// Bytes each way in the large transfer.
const LARGE: usize = 1 << 20;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Reads exactly `n` bytes from `r`.
fn read_n(r: &mut impl Read, n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    r.read_exact(&mut v).expect("tunnelled bytes");
    v
}

/// An upstream that accepts the upgrade, checks what it was sent, then: sends `early` with
/// its 101, echoes `hello` prefixed, swallows the large transfer while sending its own,
/// and after the client's half-close says `bye` and closes.
fn websocket_upstream() -> Upstream {
    Upstream::start(|mut c| {
        let Some(req) = c.read_request() else { return };
        if req.header("upgrade") != Some("websocket") || req.header("connection") != Some("upgrade") {
            c.write(format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-seen: {:?}\r\n\r\n", req.headers));
            return;
        }
        assert!(req.header("x-hop").is_none(), "a field named by Connection was forwarded");
        assert_eq!(req.header("sec-websocket-key"), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        c.write(format!("{SWITCH}early"));
        assert_eq!(read_n(&mut c.reader, 5), b"hello");
        c.write(b"echo:hello");
        let mut writer = c.stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || writer.write_all(&pattern(LARGE, 7)).unwrap());
        assert_eq!(read_n(&mut c.reader, LARGE), pattern(LARGE, 3));
        sender.join().unwrap();
        let mut rest = Vec::new();
        c.reader.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "bytes after the transfer: {}", rest.len());
        c.write(b"bye");
        c.stream.shutdown(Shutdown::Write).unwrap();
    })
}

both_drivers!(an_upgrade_tunnels_bytes_both_ways_until_both_close, |io| {
    let up = websocket_upstream();
    let gw = Gateway::proxy_to(io, up.addr, "");
    let mut c = gw.client();
    // The first frame goes in the same write as the handshake.
    c.send(format!("{HANDSHAKE}hello"));
    let r = c.response();
    assert_eq!(r.status(), 101, "{r:?}");
    assert_eq!(r.header("upgrade"), Some("websocket"));
    assert_eq!(r.header("connection"), Some("upgrade"));
    assert_eq!(r.header("sec-websocket-accept"), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    assert_eq!(read_n(&mut c.reader, 5), b"early");
    assert_eq!(read_n(&mut c.reader, 10), b"echo:hello");
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&pattern(LARGE, 3)).unwrap());
    assert_eq!(read_n(&mut c.reader, LARGE), pattern(LARGE, 7));
    sender.join().unwrap();
    c.stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.reader.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"bye", "the upstream's last bytes, then the close");
    // The tunnelled connection never goes back to the pool.
    assert_eq!(gw.client().request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status(), 400);
    assert_eq!(up.connection_count(), 2);
});

/// An upstream that accepts the upgrade, then holds the connection open and silent until
/// the gateway closes it.
fn silent_after_switching() -> Upstream {
    Upstream::start(|mut c| {
        if c.read_request().is_some() {
            c.write(SWITCH);
            let mut rest = Vec::new();
            let _ = c.reader.read_to_end(&mut rest);
        }
    })
}

both_drivers!(an_idle_tunnel_is_closed, |io| {
    let up = silent_after_switching();
    let gw = Gateway::proxy_to(io, up.addr, "[timeouts]\ntunnel_idle = \"200ms\"\n");
    let mut c = gw.client();
    assert_eq!(c.request(HANDSHAKE).status(), 101);
    assert!(c.closed(), "the idle tunnel was closed");
});

both_drivers!(the_drain_deadline_closes_an_open_tunnel, |io| {
    let up = silent_after_switching();
    let gw = Gateway::proxy_to(io, up.addr, "[timeouts]\ndrain = \"300ms\"\n");
    let mut c = gw.client();
    assert_eq!(c.request(HANDSHAKE).status(), 101);
    let server = gw.shutdown();
    assert!(c.closed(), "the tunnel was closed when the drain timed out");
    server.join();
});

both_drivers!(a_route_without_websocket_forwards_a_plain_request, |io| {
    let up = Upstream::echo();
    let gw = Gateway::start(
        io,
        &format!(
            "[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n\n[[routes]]\npath = \"/\"\nupstream = \"api\"\nwebsocket = false\n",
            up.addr
        ),
    );
    let mut c = gw.client();
    let r = c.request(HANDSHAKE);
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("x-echo-upgrade"), None);
    assert_eq!(r.header("x-echo-connection"), None);
    // The connection is an ordinary keep-alive one.
    assert_eq!(c.request("GET /next HTTP/1.1\r\nHost: a\r\n\r\n").status(), 200);
});

both_drivers!(refused_and_wrong_switches, |io| {
    static ANSWERS: &[&str] = &[
        // Declined: an ordinary response, the connections stay usable.
        "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope",
        // RFC 9110 15.2.2: a 101 must name the protocol; to another than asked for, or none.
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n",
    ];
    let up = Upstream::start(|mut c| {
        while let Some(req) = c.read_request() {
            let n: usize = req.start.split(' ').nth(1).and_then(|p| p[1..].parse().ok()).unwrap_or(0);
            if !c.write(ANSWERS[n]) {
                return;
            }
        }
    });
    let gw = Gateway::proxy_to(io, up.addr, "");
    let mut c = gw.client();
    let r = c.request(HANDSHAKE.replace("/chat", "/0"));
    assert_eq!((r.status(), r.text().as_str()), (426, "nope"));
    for (i, answer) in ANSWERS.iter().enumerate().skip(1) {
        let mut c = gw.client();
        assert_eq!(c.request(HANDSHAKE.replace("/chat", &format!("/{i}"))).status(), 502, "{answer}");
    }
    assert_eq!(c.request("GET /0 HTTP/1.1\r\nHost: a\r\n\r\n").status(), 426, "still keep-alive");
});
