//! The client's address behind balancers and proxies, end to end on both drivers:
//! `server.proxy_protocol` (a PROXY protocol header, v1 or v2, from a layer-4 balancer: in
//! X-Forwarded-For, for IP rules, over TLS, and refusals) and `server.trusted_proxies`
//! (X-Forwarded-For believed from them).

use coregate_tests::tls::{client_config, TestCert, TlsClient};
use coregate_tests::*;

/// A v2 PROXY header for an IPv4 TCP client `a.b.c.d:port` (LOCAL when `local`).
fn v2(ip: [u8; 4], port: u16, local: bool) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[if local { 0x20 } else { 0x21 }, 0x11, 0, 12]);
    h.extend_from_slice(&ip);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h
}

fn gateway(io: &str, up: &Upstream, extra: &str) -> Gateway {
    Gateway::start_with(
        io,
        2,
        "proxy_protocol = true",
        &format!(
            "{extra}\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n[[routes]]\npath = \"/private\"\nupstream = \"api\"\nallow_ips = [\"192.0.2.0/24\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n",
            up.addr
        ),
    )
}

const GET: &str = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

both_drivers!(the_header_names_the_client, |io| {
    let up = Upstream::echo();
    let gw = gateway(io, &up, "");
    // Version 1, sent apart from the request; keep-alive goes on without a second header.
    let mut c = gw.client();
    c.send("PROXY TCP4 192.0.2.7 198.51.100.1 40000 80\r\n");
    let r = c.request(GET);
    assert_eq!(r.header("x-echo-x-forwarded-for"), Some("192.0.2.7"));
    assert_eq!(c.request("GET /private HTTP/1.1\r\nHost: x\r\n\r\n").status(), 200, "allowed by the header's address");
    // Version 2 in the same write as the request; an address the IP rule refuses.
    let mut c = gw.client();
    let mut bytes = v2([198, 51, 100, 9], 5000, false);
    bytes.extend_from_slice(b"GET /private HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.request(bytes).status(), 403);
    assert_eq!(c.request(GET).header("x-echo-x-forwarded-for"), Some("198.51.100.9"));
    // LOCAL (the balancer's own health check) and v1 UNKNOWN: the TCP peer counts.
    let mut c = gw.client();
    c.send(v2([0; 4], 0, true));
    assert_eq!(c.request(GET).header("x-echo-x-forwarded-for"), Some("127.0.0.1"));
    let mut c = gw.client();
    assert_eq!(c.request(format!("PROXY UNKNOWN\r\n{GET}")).header("x-echo-x-forwarded-for"), Some("127.0.0.1"));
});

both_drivers!(connections_without_a_valid_header_are_closed, |io| {
    let up = Upstream::echo();
    let gw = gateway(io, &up, "");
    for bytes in
        [GET.as_bytes().to_vec(), b"PROXY TCP4 192.0.2.7 nowhere 1 2\r\n".to_vec(), b"PROXY TCP4 1.2.3.4\n".to_vec()]
    {
        let mut c = gw.client();
        c.send(&bytes);
        assert!(c.closed(), "{:?} was answered", String::from_utf8_lossy(&bytes));
    }
    // The gateway goes on serving.
    let mut c = gw.client();
    c.send(v2([192, 0, 2, 1], 1, false));
    assert_eq!(c.request(GET).status(), 200);
    assert_eq!(up.connection_count(), 1);
});

both_drivers!(the_header_comes_before_the_tls_handshake, |io| {
    let up = Upstream::echo();
    let cert = TestCert::new(&["localhost"]);
    let tls = format!("[tls]\nlisten = [\"127.0.0.1:0\"]\n{}", cert.toml_entry(&["localhost"]));
    let gw = gateway(io, &up, &tls);
    // The header and the ClientHello in one segment: the handshake's bytes read with the
    // header go to TLS.
    let header = v2([192, 0, 2, 44], 1234, false);
    let mut c = TlsClient::after(gw.addr_at(1), &header, "localhost", client_config(&[&cert], &[]));
    let r = c.request(GET);
    assert_eq!(r.header("x-echo-x-forwarded-for"), Some("192.0.2.44"));
    assert_eq!(r.header("x-echo-x-forwarded-proto"), Some("https"));
});

both_drivers!(the_header_can_be_required_on_some_listeners_only, |io| {
    let up = Upstream::echo();
    let cert = TestCert::new(&["localhost"]);
    // The TLS listener faces a layer-4 balancer; the plain one serves clients directly.
    let gw = Gateway::start_with(
        io,
        2,
        "proxy_protocol = [\"127.0.0.2:0\"]",
        &format!(
            "[tls]\nlisten = [\"127.0.0.2:0\"]\n{}\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n",
            cert.toml_entry(&["localhost"]),
            up.addr
        ),
    );
    assert_eq!(gw.client().request(GET).header("x-echo-x-forwarded-for"), Some("127.0.0.1"));
    let header = v2([192, 0, 2, 45], 1234, false);
    let mut c = TlsClient::after(gw.addr_at(1), &header, "localhost", client_config(&[&cert], &[]));
    assert_eq!(c.request(GET).header("x-echo-x-forwarded-for"), Some("192.0.2.45"));
    // Without the header that listener closes the connection.
    let mut raw = std::net::TcpStream::connect(gw.addr_at(1)).unwrap();
    std::io::Write::write_all(&mut raw, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut raw, &mut rest);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    // A listed address that is no listener is refused at load.
    let err = config::Config::parse(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nproxy_protocol = [\"127.0.0.1:1\"]\n[[upstreams]]\nname = \"a\"\nendpoints = [\"127.0.0.1:9\"]\n[[routes]]\npath = \"/\"\nupstream = \"a\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("server.proxy_protocol[0]") && err.contains("not in server.listen"), "{err}");
});

both_drivers!(trusted_proxies_name_the_client_in_forwarded_for, |io| {
    let up = Upstream::echo();
    let routes = format!(
        "[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n[[routes]]\npath = \"/private\"\nupstream = \"api\"\nallow_ips = [\"192.0.2.0/24\"]\nrequest_headers = {{ set = {{ x-real-ip = \"{{client_ip}}\" }} }}\n",
        up.addr
    );
    let get = |gw: &Gateway, xff: &str| {
        gw.client().request(format!("GET /private HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {xff}\r\n\r\n"))
    };
    let gw = Gateway::start_with(io, 2, "trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]", &routes);
    // The rightmost address that is no trusted proxy is the client; the chain goes on with
    // the TCP peer appended.
    let r = get(&gw, "198.51.100.1, 192.0.2.7, 10.1.2.3");
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("x-echo-x-real-ip"), Some("192.0.2.7"));
    assert_eq!(r.header("x-echo-x-forwarded-for"), Some("198.51.100.1, 192.0.2.7, 10.1.2.3, 127.0.0.1"));
    assert_eq!(get(&gw, "192.0.2.7, 198.51.100.9").status(), 403, "the client is 198.51.100.9");
    drop(gw);
    // Not trusted: the field is anyone's claim, and the peer is the client.
    let gw = Gateway::start(io, &routes);
    assert_eq!(get(&gw, "192.0.2.7").status(), 403);
});
