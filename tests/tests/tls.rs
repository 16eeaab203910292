//! TLS termination end to end, on both drivers: requests through `[tls]` listeners (keep-
//! alive, pipelined, large bodies both ways, X-Forwarded-Proto), certificates chosen by SNI,
//! ALPN, the answers to clients that do not speak TLS or break it, WebSocket over TLS, and
//! the configurations that cannot start.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

use coregate_tests::tls::{
    client_config, client_config_seeing_ocsp, client_config_with_cert, TestCa, TestCert, TlsClient,
};
use coregate_tests::*;

/// A gateway with a plain listener (address 0) and a TLS one (address 1) serving `certs`
/// (certificate, names), proxying everything to `upstream`.
fn tls_gateway(io: &str, upstream: std::net::SocketAddr, certs: &[(&TestCert, &[&str])], extra: &str) -> Gateway {
    let entries: String = certs.iter().map(|(c, names)| c.toml_entry(names)).collect();
    Gateway::start(
        io,
        &format!(
            "{extra}\n[tls]\nlisten = [\"127.0.0.1:0\"]\n{entries}\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{upstream}\"]\n\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n"
        ),
    )
}

both_drivers!(https_requests_are_proxied_with_keep_alive, |io| {
    let up = Upstream::echo();
    let cert = TestCert::new(&["localhost"]);
    let gw = tls_gateway(io, up.addr, &[(&cert, &["localhost"])], "");
    let cfg = client_config(&[&cert], &[b"http/1.1"]);
    let mut c = TlsClient::connect(gw.addr_at(1), "localhost", cfg.clone());
    for i in 0..3 {
        let r = c.request(format!("GET /n/{i} HTTP/1.1\r\nHost: localhost\r\n\r\n"));
        assert_eq!(r.status(), 200);
        assert_eq!(r.text(), format!("GET /n/{i}\n"));
        assert_eq!(r.header("x-echo-x-forwarded-proto"), Some("https"));
    }
    assert_eq!(c.alpn().as_deref(), Some(&b"http/1.1"[..]));
    // Two requests in one write, then a 1 MiB body each way.
    let r = c.request("GET /a HTTP/1.1\r\nHost: localhost\r\n\r\nGET /b HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(r.text(), "GET /a\n");
    assert_eq!(c.response().text(), "GET /b\n");
    let body: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    c.send(format!("POST /big HTTP/1.1\r\nHost: localhost\r\ncontent-length: {}\r\n\r\n", body.len()));
    c.send(&body);
    let r = c.response();
    assert_eq!(&r.body[..10], b"POST /big\n");
    assert_eq!(&r.body[10..], &body[..]);
    // The plain listener still says http.
    let r = gw.client().request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.header("x-echo-x-forwarded-proto"), Some("http"));
    // close_notify ends the connection cleanly.
    c.close_notify();
    let mut rest = Vec::new();
    assert_eq!(c.reader.read_to_end(&mut rest).unwrap(), 0, "{}", String::from_utf8_lossy(&rest));
    // The session tickets it received resume later connections, whichever of the two
    // workers accepts them.
    for _ in 0..4 {
        let mut again = TlsClient::connect(gw.addr_at(1), "localhost", cfg.clone());
        assert_eq!(again.request("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").status(), 200);
        assert!(again.resumed(), "a full handshake where a ticket was offered");
    }
});

both_drivers!(plain_requests_can_be_redirected_to_https, |io| {
    let up = Upstream::echo();
    let cert = TestCert::new(&["localhost"]);
    // A route for plain requests only, before the one every request may take.
    let redirect = "[[routes]]\npath = \"/\"\nscheme = \"http\"\nredirect = { location = \"https://{host}{uri}\", status = 308 }\n[[routes]]\npath_template = \"/old/{id}\"\nscheme = \"https\"\nredirect = { location = \"/new/{id}?from={host}\" }\n";
    let gw = tls_gateway(io, up.addr, &[(&cert, &["localhost"])], redirect);
    let mut c = gw.client();
    for (request, location) in [
        ("GET /a/b?c=1&d HTTP/1.1\r\nHost: Api.Test:8080\r\n\r\n", "https://api.test/a/b?c=1&d"),
        ("POST /x HTTP/1.1\r\nHost: [::1]:80\r\nContent-Length: 0\r\n\r\n", "https://[::1]/x"),
        ("GET /old/7 HTTP/1.1\r\nHost: h.\r\n\r\n", "https://h/old/7"),
    ] {
        let r = c.request(request);
        assert_eq!((r.status(), r.header("location")), (308, Some(location)), "{request}");
    }
    // Over TLS the plain route is passed over: proxied, or the https-only redirect.
    let mut t = TlsClient::connect(gw.addr_at(1), "localhost", client_config(&[&cert], &[]));
    let r = t.request("GET /a/b?c=1 HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!((r.status(), r.text().as_str()), (200, "GET /a/b?c=1\n"));
    let r = t.request("GET /old/42 HTTP/1.1\r\nHost: localhost:8443\r\n\r\n");
    assert_eq!((r.status(), r.header("location")), (302, Some("/new/42?from=localhost")));
});

both_drivers!(the_certificate_follows_the_server_name, |io| {
    let up = Upstream::echo();
    // `a` is also valid for names the gateway does not list for it, so that a client can
    // accept it as the default certificate.
    let a = TestCert::new(&["a.test", "unknown.test", "127.0.0.1"]);
    let b = TestCert::new(&["*.b.test"]);
    let gw = tls_gateway(io, up.addr, &[(&a, &["a.test"]), (&b, &["*.b.test"])], "");
    let addr = gw.addr_at(1);
    // An IP address sends no server name: the first certificate.
    for (name, want) in [("a.test", &a), ("x.b.test", &b), ("X.B.Test", &b), ("unknown.test", &a), ("127.0.0.1", &a)] {
        // Trusting both: the check is which one was presented.
        let mut c = TlsClient::connect(addr, name, client_config(&[&a, &b], &[]));
        c.handshake().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(c.peer_cert() == want.der, "{name}: the wrong certificate");
        assert_eq!(c.request(format!("GET / HTTP/1.1\r\nHost: {name}\r\n\r\n")).status(), 200);
    }
});

/// A client trusting `roots` that verifies RSA signatures only (so offers only RSA schemes).
fn rsa_only_client(roots: &[&TestCert]) -> std::sync::Arc<rustls::ClientConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    let algs = provider.signature_verification_algorithms;
    let rsa = |s: &rustls::SignatureScheme| format!("{s:?}").starts_with("RSA");
    let mapping: Vec<_> = algs.mapping.iter().filter(|(s, _)| rsa(s)).copied().collect();
    provider.signature_verification_algorithms =
        rustls::crypto::WebPkiSupportedAlgorithms { all: algs.all, mapping: Vec::leak(mapping) };
    client_with(roots, provider, rustls::DEFAULT_VERSIONS)
}

both_drivers!(ecdsa_and_rsa_certificates_can_serve_one_name, |io| {
    let up = Upstream::echo();
    let ec = TestCert::new(&["localhost", "127.0.0.1"]);
    let rsa = TestCert::rsa(&["localhost", "127.0.0.1"]);
    let both = client_config(&[&ec, &rsa], &[]);
    let rsa_only = rsa_only_client(&[&ec, &rsa]);
    let presented = |gw: &Gateway, name: &str, cfg: &std::sync::Arc<rustls::ClientConfig>| {
        let mut c = TlsClient::connect(gw.addr_at(1), name, cfg.clone());
        assert_eq!(c.request(format!("GET / HTTP/1.1\r\nHost: {name}\r\n\r\n")).status(), 200, "{name}");
        c.peer_cert()
    };
    for (first, second) in [(&ec, &rsa), (&rsa, &ec)] {
        let gw = tls_gateway(io, up.addr, &[(first, &["localhost"]), (second, &["localhost"])], "");
        // By name, and as the default (an IP address sends no name).
        for name in ["localhost", "127.0.0.1"] {
            assert!(presented(&gw, name, &both) == first.der, "{name}: a client taking both gets the first listed");
            assert!(presented(&gw, name, &rsa_only) == rsa.der, "{name}: an RSA-only client gets the RSA one");
        }
    }
    // The control: the RSA-only client cannot take the ECDSA certificate alone.
    let ec_alone = tls_gateway(io, up.addr, &[(&ec, &["localhost"])], "");
    let mut c = TlsClient::connect(ec_alone.addr_at(1), "localhost", rsa_only);
    assert!(c.handshake().is_err(), "an RSA-only client took an ECDSA certificate");
});

both_drivers!(alpn_offers_only_http_1_1, |io| {
    let up = Upstream::echo();
    let cert = TestCert::new(&["localhost"]);
    let gw = tls_gateway(io, up.addr, &[(&cert, &["localhost"])], "");
    let mut c = TlsClient::connect(gw.addr_at(1), "localhost", client_config(&[&cert], &[b"h2", b"http/1.1"]));
    c.handshake().unwrap();
    assert_eq!(c.alpn().as_deref(), Some(&b"http/1.1"[..]));
    let mut c = TlsClient::connect(gw.addr_at(1), "localhost", client_config(&[&cert], &[b"h2"]));
    let e = c.handshake().expect_err("an h2-only client is refused");
    assert!(e.to_string().contains("NoApplicationProtocol"), "{e}");
});

both_drivers!(clients_that_do_not_speak_tls_get_an_answer_and_the_gateway_carries_on, |io| {
    let up = Upstream::echo();
    let cert = TestCert::new(&["localhost"]);
    let gw = tls_gateway(io, up.addr, &[(&cert, &["localhost"])], "");
    let addr = gw.addr_at(1);
    // Plain HTTP on the TLS port: a plain 400 saying so, then close.
    let mut c = Client::connect(addr);
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), 400);
    assert!(r.text().contains("plain HTTP request sent to a TLS port"), "{}", r.text());
    assert!(c.closed());
    // Bytes that are not a TLS record: an alert (or nothing), then close.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.len() < 16, "a short alert at most: {rest:?}");
    // A client that closes in the middle of its handshake.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&[0x16, 0x03, 0x01]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    drop(s);
    // And the gateway still serves TLS.
    let mut c = TlsClient::connect(addr, "localhost", client_config(&[&cert], &[]));
    assert_eq!(c.request("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").status(), 200);
    // The 400 is written as `[errors]` says, like coregate's other answers.
    let gw = tls_gateway(io, up.addr, &[(&cert, &["localhost"])], "[errors]\nformat = \"json\"\n");
    let mut c = Client::connect(gw.addr_at(1));
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status(), r.header("content-type")), (400, Some("application/json")));
    assert!(r.text().contains("\"detail\":\"plain HTTP request sent to a TLS port\""), "{}", r.text());
    assert!(c.closed());
});

both_drivers!(a_silent_tls_connection_times_out_in_the_handshake, |io| {
    let up = Upstream::echo();
    let cert = TestCert::new(&["localhost"]);
    let gw = tls_gateway(io, up.addr, &[(&cert, &["localhost"])], "[timeouts]\nclient_header = \"300ms\"\n");
    // A ClientHello's first bytes, then silence: the header timeout closes the connection.
    let mut s = TcpStream::connect(gw.addr_at(1)).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing but the close: {rest:?}");
});

both_drivers!(websocket_upgrades_tunnel_over_tls, |io| {
    const LARGE: usize = 1 << 20;
    let pattern = |seed: u8| -> Vec<u8> { (0..LARGE).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect() };
    let up = Upstream::start(move |mut c| {
        let Some(req) = c.read_request() else { return };
        assert_eq!(req.header("x-forwarded-proto"), Some("https"));
        c.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nearly");
        let mut got = vec![0; 5];
        c.reader.read_exact(&mut got).unwrap();
        assert_eq!(got, b"hello");
        let mut writer = c.stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || writer.write_all(&pattern(7)).unwrap());
        let mut big = vec![0; LARGE];
        c.reader.read_exact(&mut big).unwrap();
        assert!(big == pattern(3), "the client's bytes arrived changed");
        sender.join().unwrap();
        let mut rest = Vec::new();
        c.reader.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        c.write(b"bye");
        c.stream.shutdown(Shutdown::Write).unwrap();
    });
    let cert = TestCert::new(&["localhost"]);
    let gw = tls_gateway(io, up.addr, &[(&cert, &["localhost"])], "");
    let mut c = TlsClient::connect(gw.addr_at(1), "localhost", client_config(&[&cert], &[]));
    c.send("GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nhello");
    skip_head(&mut c.reader);
    let mut early = vec![0; 5];
    c.reader.read_exact(&mut early).unwrap();
    assert_eq!(early, b"early");
    // Both directions at once: the client writes its megabyte from a second thread would need
    // a split TLS stream, so it writes first and reads after; the gateway must buffer neither
    // side whole for this to finish, as its relay alternates between the two.
    let sent = pattern(3);
    let mut written = 0;
    let mut received = Vec::with_capacity(LARGE);
    let mut buf = vec![0; 64 * 1024];
    while written < LARGE {
        let n = (LARGE - written).min(16 * 1024);
        c.send(&sent[written..written + n]);
        written += n;
    }
    c.close_notify();
    c.reader.get_ref().get_ref().shutdown(Shutdown::Write).unwrap();
    loop {
        let n = c.reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
    }
    assert_eq!(received.len(), LARGE + 3);
    assert!(received[..LARGE] == pattern(7)[..], "the upstream's bytes arrived changed");
    assert_eq!(&received[LARGE..], b"bye");
});

both_drivers!(a_reload_serves_new_certificates_to_new_connections, |io| {
    let up = Upstream::echo();
    let (a, b, other) = (TestCert::new(&["localhost"]), TestCert::new(&["localhost"]), TestCert::new(&["x"]));
    let mut gw = tls_gateway(io, up.addr, &[(&a, &["localhost"])], "");
    let addr = gw.addr_at(1);
    let old_cfg = client_config(&[&a, &b], &[]);
    let mut before = TlsClient::connect(addr, "localhost", old_cfg.clone());
    assert_eq!(before.request("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").status(), 200);
    assert!(before.peer_cert() == a.der);
    let reloaded = |cert: &TestCert, key: &TestCert| {
        format!(
            "[tls]\nlisten = [\"127.0.0.1:0\"]\n[[tls.certificates]]\ncert_file = {:?}\nkey_file = {:?}\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n",
            cert.cert_file.display().to_string(),
            key.key_file.display().to_string(),
            up.addr
        )
    };
    gw.reload_extra(&reloaded(&b, &b)).unwrap();
    // New connections, on the same address, get the new certificate.
    assert_eq!(gw.addr_at(1), addr);
    let mut after = TlsClient::connect(addr, "localhost", client_config(&[&a, &b], &[]));
    assert_eq!(after.request("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").status(), 200);
    assert!(after.peer_cert() == b.der, "the old certificate after the reload");
    // The idle connection of the old configuration is closed by its drain.
    let mut rest = Vec::new();
    assert!(matches!(before.reader.read_to_end(&mut rest), Ok(0)), "the old idle connection stays open");
    // Tickets from before the reload still resume.
    let mut resumed = TlsClient::connect(addr, "localhost", old_cfg);
    assert_eq!(resumed.request("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").status(), 200);
    assert!(resumed.resumed());
    // A key that does not fit: refused, and the running certificate stays.
    let e = gw.reload_extra(&reloaded(&b, &other)).expect_err("a mismatched key");
    assert!(e.contains("cert.pem"), "{e}");
    let mut last = TlsClient::connect(addr, "localhost", client_config(&[&a, &b], &[]));
    last.handshake().unwrap();
    assert!(last.peer_cert() == b.der);
});

/// A gateway whose TLS listener (address 1) asks for client certificates issued by (here:
/// equal to) `ca`, in `mode`; the plain listener is address 0. `/secure` requires a
/// certificate.
fn mtls_gateway(io: &str, upstream: std::net::SocketAddr, server: &TestCert, ca: &TestCert, mode: &str) -> Gateway {
    Gateway::start(
        io,
        &format!(
            "[tls]\nlisten = [\"127.0.0.1:0\"]\nclient_ca_file = {:?}\nclient_auth = \"{mode}\"\n{}\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{upstream}\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n[[routes]]\npath = \"/secure\"\nupstream = \"api\"\nrequire_client_cert = true\n",
            ca.cert_file.display().to_string(),
            server.toml_entry(&["localhost"])
        ),
    )
}

/// Whether the gateway refuses a TLS client made with `cfg`: in the handshake, or (TLS 1.3,
/// where the client finishes first) with the alert that answers its first request.
fn refused(addr: std::net::SocketAddr, cfg: std::sync::Arc<rustls::ClientConfig>) -> bool {
    let mut c = TlsClient::connect(addr, "localhost", cfg);
    if c.handshake().is_err() {
        return true;
    }
    let s = c.reader.get_mut();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").and_then(|()| s.flush());
    !matches!(read_message(&mut c.reader, Framing::Response { head_request: false }), Ok(Some(_)))
}

fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
}

both_drivers!(client_certificates_are_required_verified_and_forwarded, |io| {
    let up = Upstream::echo();
    let (server, client, stranger) =
        (TestCert::new(&["localhost"]), TestCert::new(&["client.test"]), TestCert::new(&["client.test"]));
    let gw = mtls_gateway(io, up.addr, &server, &client, "required");
    let tls = gw.addr_at(1);
    let mut c = TlsClient::connect(tls, "localhost", client_config_with_cert(&[&server], &client));
    for _ in 0..2 {
        let r = c.request("GET /who HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Client-Cert: Hash=forged\r\n\r\n");
        assert_eq!(r.status(), 200);
        let want = format!("Hash={}", sha256_hex(&client.der));
        assert_eq!(r.header_all("x-echo-x-forwarded-client-cert"), vec![want.as_str()], "the verified one, only");
    }
    assert!(refused(tls, client_config(&[&server], &[])), "no certificate");
    assert!(refused(tls, client_config_with_cert(&[&server], &stranger)), "a certificate from another issuer");
    // The plain listener: nobody's certificate, and a claimed one is dropped.
    let r = gw.client().request("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Client-Cert: Hash=forged\r\n\r\n");
    assert_eq!((r.status(), r.header("x-echo-x-forwarded-client-cert")), (200, None));
    // The refusals did not stop the listener.
    let mut again = TlsClient::connect(tls, "localhost", client_config_with_cert(&[&server], &client));
    assert_eq!(again.request("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").status(), 200);
});

both_drivers!(optional_client_certificates_let_clients_without_one_in, |io| {
    let up = Upstream::echo();
    let (server, client, stranger) =
        (TestCert::new(&["localhost"]), TestCert::new(&["client.test"]), TestCert::new(&["client.test"]));
    let gw = mtls_gateway(io, up.addr, &server, &client, "optional");
    let tls = gw.addr_at(1);
    let mut anonymous = TlsClient::connect(tls, "localhost", client_config(&[&server], &[]));
    let r = anonymous.request("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!((r.status(), r.header("x-echo-x-forwarded-client-cert")), (200, None));
    let mut known = TlsClient::connect(tls, "localhost", client_config_with_cert(&[&server], &client));
    let r = known.request("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(r.header("x-echo-x-forwarded-client-cert"), Some(format!("Hash={}", sha256_hex(&client.der)).as_str()));
    // A route that requires a certificate: 403 without one, on either listener.
    let secure = "GET /secure HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert_eq!(known.request(secure).status(), 200);
    let r = anonymous.request(secure);
    assert_eq!(r.status(), 403);
    assert!(r.text().contains("client certificate required"), "{}", r.text());
    assert_eq!(gw.client().request(secure).status(), 403);
    assert!(refused(tls, client_config_with_cert(&[&server], &stranger)), "a certificate that does not verify");
});

/// A gateway whose TLS listener (address 1) serves `server` with more `[tls]` keys.
fn tls_gateway_with(io: &str, upstream: std::net::SocketAddr, server: &TestCert, tls_keys: &str) -> Gateway {
    Gateway::start(io, &tls_with(upstream, server, tls_keys))
}

/// The configuration of [`tls_gateway_with`] after its `[server]` section.
fn tls_with(upstream: std::net::SocketAddr, server: &TestCert, tls_keys: &str) -> String {
    format!(
        "[tls]\nlisten = [\"127.0.0.1:0\"]\n{tls_keys}\n{}\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{upstream}\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n",
        server.toml_entry(&["localhost"])
    )
}

/// Writes an 80-byte session-ticket key file (every byte `seed`, then its index) beside
/// `cert`'s files; returns the `session_ticket_keys` entry naming it.
fn ticket_key(cert: &TestCert, seed: u8) -> String {
    let file = cert.cert_file.with_file_name(format!("ticket-{seed}.key"));
    std::fs::write(&file, (0..80u8).map(|i| seed ^ i).collect::<Vec<u8>>()).unwrap();
    format!("{:?}", file.display().to_string())
}

/// One request on a new TLS connection with `cfg` (whose tickets it keeps); whether the
/// handshake resumed a session.
fn resumes(addr: std::net::SocketAddr, cfg: &std::sync::Arc<rustls::ClientConfig>) -> bool {
    let mut c = TlsClient::connect(addr, "localhost", cfg.clone());
    assert_eq!(c.request("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").status(), 200);
    c.resumed()
}

/// A client trusting `server`, speaking TLS 1.3 or 1.2 (TLS 1.3 with these servers).
fn tls13_client(server: &TestCert) -> std::sync::Arc<rustls::ClientConfig> {
    client_config(&[server], &[])
}

/// As [`tls13_client`], speaking TLS 1.2 only (tickets of RFC 5077 rather than TLS 1.3's).
fn tls12_client(server: &TestCert) -> std::sync::Arc<rustls::ClientConfig> {
    client_with(&[server], rustls::crypto::ring::default_provider(), &[&rustls::version::TLS12])
}

both_drivers!(gateways_sharing_ticket_keys_resume_each_others_sessions, |io| {
    let up = Upstream::echo();
    let cert = TestCert::new(&["localhost"]);
    let (k1, k2) = (ticket_key(&cert, 1), ticket_key(&cert, 2));
    let keys = |files: &[&str]| format!("session_ticket_keys = [{}]", files.join(", "));
    let a = tls_gateway_with(io, up.addr, &cert, &keys(&[&k1]));
    let b = tls_gateway_with(io, up.addr, &cert, &keys(&[&k1]));
    let generated = tls_gateway_with(io, up.addr, &cert, "");
    let rotated = tls_gateway_with(io, up.addr, &cert, &keys(&[&k2, &k1]));
    let only_new = tls_gateway_with(io, up.addr, &cert, &keys(&[&k2]));
    for make in [tls13_client as fn(&TestCert) -> _, tls12_client] {
        let cfg = make(&cert);
        assert!(!resumes(a.addr_at(1), &cfg), "nothing to resume yet");
        assert!(resumes(b.addr_at(1), &cfg), "b opens a's ticket: the same key file");
        // A new client holding only tickets from `first` (each connection leaves the
        // client tickets from the gateway it spoke to).
        let cfg = |first: &Gateway| {
            let c = make(&cert);
            assert!(!resumes(first.addr_at(1), &c));
            c
        };
        let c = cfg(&a);
        assert!(!resumes(generated.addr_at(1), &c), "a gateway with its own key cannot open a's ticket");
        let c = cfg(&a);
        assert!(resumes(rotated.addr_at(1), &c), "a retired key (listed after the first) still opens");
        assert!(resumes(only_new.addr_at(1), &c), "the first key sealed the tickets rotated gave");
        let c = cfg(&a);
        assert!(!resumes(only_new.addr_at(1), &c), "a key no longer listed opens nothing");
    }
});

both_drivers!(tls_handshakes_are_counted_by_suite_and_resumption, |io| {
    let up = Upstream::echo();
    let cert = TestCert::new(&["localhost"]);
    let gw = tls_gateway(io, up.addr, &[(&cert, &["localhost"])], "[admin]\nlisten = \"127.0.0.1:0\"\n");
    let addr = gw.addr_at(1);
    let cfg = tls13_client(&cert);
    assert!(!resumes(addr, &cfg));
    assert!(resumes(addr, &cfg));
    assert!(resumes(addr, &cfg));
    assert!(!resumes(addr, &tls12_client(&cert)));
    // Two that do not finish: a record that is no ClientHello, and plain HTTP.
    let mut broken = TcpStream::connect(addr).unwrap();
    broken.write_all(b"\x16\x03\x01\x00\x05hello").unwrap();
    let _ = broken.read_to_end(&mut Vec::new());
    let mut plain = Client::connect(addr);
    assert_eq!(plain.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status(), 400);
    let want = [
        "coregate_tls_handshakes_total{protocol=\"TLSv1.3\",cipher=\"TLS13_AES_256_GCM_SHA384\",resumed=\"false\"} 1\n",
        "coregate_tls_handshakes_total{protocol=\"TLSv1.3\",cipher=\"TLS13_AES_256_GCM_SHA384\",resumed=\"true\"} 2\n",
        "coregate_tls_handshakes_total{protocol=\"TLSv1.2\",cipher=\"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\",resumed=\"false\"} 1\n",
        "coregate_tls_handshake_failures_total 2\n",
    ];
    // Counted on the worker just after the answer is written: wait for the count.
    let mut m = String::new();
    eventually(|| {
        m = gw.admin("GET", "/metrics").1;
        want.iter().all(|w| m.contains(w))
    });
    assert!(m.contains("cipher=\"TLS13_CHACHA20_POLY1305_SHA256\",resumed=\"false\"} 0\n"), "{m}");
    // Without [tls], no such families.
    let plain_gw = Gateway::start(io, &format!("[admin]\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n", up.addr));
    let m = plain_gw.admin("GET", "/metrics").1;
    assert!(!m.contains("coregate_tls_"), "{m}");
});

both_drivers!(the_access_log_names_the_tls_protocol_cipher_and_resumption, |io| {
    let up = Upstream::echo();
    let cert = TestCert::new(&["localhost"]);
    let log = cert.cert_file.with_file_name("access.log");
    let gw = tls_gateway(
        io,
        up.addr,
        &[(&cert, &["localhost"])],
        &format!("[access_log]\npath = {:?}\n", log.display().to_string()),
    );
    let cfg = tls13_client(&cert);
    assert!(!resumes(gw.addr_at(1), &cfg));
    assert!(resumes(gw.addr_at(1), &cfg));
    assert!(!resumes(gw.addr_at(1), &tls12_client(&cert)));
    assert_eq!(gw.client().request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status(), 200);
    let mut lines: Vec<serde_json::Value> = Vec::new();
    eventually(|| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        lines = text.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
        lines.len() >= 4
    });
    let tls = |l: &serde_json::Value| {
        (
            l["tls_protocol"].as_str().map(str::to_string),
            l["tls_cipher"].as_str().map(str::to_string),
            l["tls_resumed"].as_bool(),
        )
    };
    let seen: Vec<_> = lines.iter().map(tls).collect();
    let some = |p: &str, c: &str, r: bool| (Some(p.to_string()), Some(c.to_string()), Some(r));
    for want in [
        some("TLSv1.3", "TLS13_AES_256_GCM_SHA384", false),
        some("TLSv1.3", "TLS13_AES_256_GCM_SHA384", true),
        some("TLSv1.2", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", false),
        (None, None, None),
    ] {
        assert!(seen.contains(&want), "{want:?} not in {seen:?}");
    }
});

both_drivers!(session_tickets_can_be_switched_off_and_key_files_rotate_on_reload, |io| {
    let up = Upstream::echo();
    let cert = TestCert::new(&["localhost"]);
    let off = tls_gateway_with(io, up.addr, &cert, "session_tickets = false");
    let on = tls_gateway_with(io, up.addr, &cert, "");
    for make in [tls13_client as fn(&TestCert) -> _, tls12_client] {
        let cfg = make(&cert);
        for _ in 0..3 {
            assert!(!resumes(off.addr_at(1), &cfg), "a session resumed with tickets off");
        }
        // The same client resumes where tickets are on.
        assert!(!resumes(on.addr_at(1), &cfg));
        assert!(resumes(on.addr_at(1), &cfg));
    }
    // A reload reads the key files again: replacing the only key ends its tickets.
    let (k1, k2) = (ticket_key(&cert, 1), ticket_key(&cert, 2));
    let mut gw = tls_gateway_with(io, up.addr, &cert, &format!("session_ticket_keys = [{k1}]"));
    let cfg = client_config(&[&cert], &[]);
    assert!(!resumes(gw.addr_at(1), &cfg));
    assert!(resumes(gw.addr_at(1), &cfg));
    gw.reload_extra(&tls_with(up.addr, &cert, &format!("session_ticket_keys = [{k2}]"))).unwrap();
    assert!(!resumes(gw.addr_at(1), &cfg), "k1's ticket opened after k1 was removed");
    assert!(resumes(gw.addr_at(1), &cfg), "k2's ticket");
    // Rewriting the file in place and reloading rotates too (as nginx's key files are).
    std::fs::write(cert.cert_file.with_file_name("ticket-2.key"), [7u8; 80]).unwrap();
    gw.reload_extra(&tls_with(up.addr, &cert, &format!("session_ticket_keys = [{k2}]"))).unwrap();
    assert!(!resumes(gw.addr_at(1), &cfg), "the old bytes' ticket opened after the file changed");
});

both_drivers!(revoked_client_certificates_are_refused, |io| {
    let up = Upstream::echo();
    let server = TestCert::new(&["localhost"]);
    let (ca, listless) = (TestCa::new(), TestCa::new());
    // Both authorities are trusted; only the first has a revocation list in the file.
    let roots = ca.ca.cert_file.with_file_name("roots.pem");
    let pem = |c: &TestCert| std::fs::read_to_string(&c.cert_file).unwrap();
    std::fs::write(&roots, pem(&ca.ca) + &pem(&listless.ca)).unwrap();
    let keys = format!(
        "client_ca_file = {:?}\nclient_crl_file = {:?}\n",
        roots.display().to_string(),
        ca.crl_file(&[2]).display().to_string()
    );
    let gw = tls_gateway_with(io, up.addr, &server, &keys);
    let tls = gw.addr_at(1);
    let (good, revoked, unlisted) = (ca.issue(1), ca.issue(2), listless.issue(3));
    let mut c = TlsClient::connect(tls, "localhost", client_config_with_cert(&[&server], &good));
    assert_eq!(c.request("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").status(), 200);
    assert!(refused(tls, client_config_with_cert(&[&server], &revoked)), "serial 2 is on the list");
    assert!(refused(tls, client_config_with_cert(&[&server], &unlisted)), "its issuer published no list here");
    let mut again = TlsClient::connect(tls, "localhost", client_config_with_cert(&[&server], &good));
    assert_eq!(again.request("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").status(), 200);
});

both_drivers!(client_certificate_details_are_forwarded, |io| {
    use rcgen::{DnType, SanType};
    let up = Upstream::echo();
    let server = TestCert::new(&["localhost"]);
    let ca = TestCa::new();
    let client = ca.issue_with(7, |p| {
        p.distinguished_name.push(DnType::CommonName, "svc-a");
        p.distinguished_name.push(DnType::OrganizationName, "Acme, Inc.");
        p.subject_alt_names.push(SanType::URI("spiffe://example.org/ns/a/sa/svc-a".try_into().unwrap()));
    });
    let keys = format!(
        "client_ca_file = {:?}\nclient_cert_details = [\"subject\", \"uri\", \"dns\"]\n",
        ca.ca.cert_file.display().to_string()
    );
    let gw = tls_gateway_with(io, up.addr, &server, &keys);
    let mut c = TlsClient::connect(gw.addr_at(1), "localhost", client_config_with_cert(&[&server], &client));
    let want = format!(
        "Hash={};Subject=\"O=Acme\\\\, Inc.,CN=svc-a\";URI=spiffe://example.org/ns/a/sa/svc-a;DNS=client.test",
        sha256_hex(&client.der)
    );
    for _ in 0..2 {
        let r = c.request("GET / HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Client-Cert: Hash=forged\r\n\r\n");
        assert_eq!(r.header_all("x-echo-x-forwarded-client-cert"), vec![want.as_str()]);
    }
});

both_drivers!(the_oldest_tls_version_can_be_raised_to_1_3, |io| {
    let up = Upstream::echo();
    let server = TestCert::new(&["localhost"]);
    let (v12, v13) = (&rustls::version::TLS12, &rustls::version::TLS13);
    let default = tls_gateway_with(io, up.addr, &server, "");
    let strict = tls_gateway_with(io, up.addr, &server, "min_version = \"1.3\"");
    for (gw, version, served) in
        [(&default, v12, true), (&default, v13, true), (&strict, v13, true), (&strict, v12, false)]
    {
        let mut c = TlsClient::connect(gw.addr_at(1), "localhost", client_config_seeing_ocsp(&server, version).0);
        if served {
            assert_eq!(c.request("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").status(), 200, "{version:?}");
            assert_eq!(c.reader.get_ref().conn.protocol_version(), Some(version.version));
        } else {
            let e = c.handshake().expect_err("a TLS 1.2 client where 1.3 is the oldest");
            assert!(e.to_string().contains("ProtocolVersion"), "{e}");
        }
    }
});

/// A client trusting `server` that offers only the TLS 1.3 suites `names`, in that order.
fn client_offering(server: &TestCert, names: &[&str]) -> std::sync::Arc<rustls::ClientConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    let all = std::mem::take(&mut provider.cipher_suites);
    provider.cipher_suites =
        names.iter().map(|n| *all.iter().find(|s| s.suite().as_str() == Some(*n)).expect("a ring suite")).collect();
    client_with(&[server], provider, &[&rustls::version::TLS13])
}

/// A client trusting `roots`, with `provider`, speaking `versions`.
fn client_with(
    roots: &[&TestCert],
    provider: rustls::crypto::CryptoProvider,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::sync::Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.der.clone()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    std::sync::Arc::new(cfg)
}

both_drivers!(cipher_suites_can_be_chosen_and_ordered, |io| {
    let up = Upstream::echo();
    let server = TestCert::new(&["localhost"]);
    let (aes128, aes256, chacha) =
        ("TLS13_AES_128_GCM_SHA256", "TLS13_AES_256_GCM_SHA384", "TLS13_CHACHA20_POLY1305_SHA256");
    let chosen = format!("cipher_suites = [{aes128:?}, {chacha:?}]");
    let clients_order = tls_gateway_with(io, up.addr, &server, &chosen);
    let own_order = tls_gateway_with(io, up.addr, &server, &format!("{chosen}\nprefer_server_ciphers = true"));
    let cases = [
        (&clients_order, vec![chacha, aes128, aes256], Some(chacha)),
        (&own_order, vec![chacha, aes128, aes256], Some(aes128)),
        (&clients_order, vec![aes256], None),
    ];
    for (gw, offered, agreed) in cases {
        let mut c = TlsClient::connect(gw.addr_at(1), "localhost", client_offering(&server, &offered));
        match agreed {
            Some(suite) => {
                assert_eq!(c.request("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").status(), 200);
                let got = c.reader.get_ref().conn.negotiated_cipher_suite().map(|s| s.suite().as_str());
                assert_eq!(got, Some(Some(suite)), "offered {offered:?}");
            }
            None => {
                let e = c.handshake().expect_err("no suite in common");
                assert!(e.to_string().contains("HandshakeFailure"), "{e}");
            }
        }
    }
});

both_drivers!(ocsp_responses_are_stapled, |io| {
    let up = Upstream::echo();
    let (stapled, plain) = (TestCert::new(&["localhost"]), TestCert::new(&["plain.test"]));
    // The gateway staples the file's bytes as they are: checking them is the client's job.
    let response = [0x30, 0x03, 0x0a, 0x01, 0x00];
    let ocsp_file = stapled.cert_file.with_file_name("ocsp.der");
    std::fs::write(&ocsp_file, response).unwrap();
    let ocsp = format!("ocsp_file = {:?}\n", ocsp_file.display().to_string());
    let certs = format!("{}{ocsp}{}", stapled.toml_entry(&["localhost"]), plain.toml_entry(&["plain.test"]));
    let gw = Gateway::start(
        io,
        &format!("[tls]\nlisten = [\"127.0.0.1:0\"]\n{certs}\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n", up.addr),
    );
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        for (cert, name, want) in [(&stapled, "localhost", &response[..]), (&plain, "plain.test", &[][..])] {
            let (cfg, seen) = client_config_seeing_ocsp(cert, version);
            let mut c = TlsClient::connect(gw.addr_at(1), name, cfg);
            assert_eq!(c.request(format!("GET / HTTP/1.1\r\nHost: {name}\r\n\r\n")).status(), 200);
            assert_eq!(&seen.lock().unwrap()[..], want, "{name} over {version:?}");
        }
    }
});

#[test]
fn configurations_that_cannot_serve_tls_are_refused() {
    let cert = TestCert::new(&["localhost"]);
    let other = TestCert::new(&["localhost"]);
    let base = "[server]\nlisten = [\"127.0.0.1:0\"]\n[[upstreams]]\nname = \"api\"\nendpoints = [\"127.0.0.1:9\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n";
    let parse = |tls: &str| config::Config::parse(&format!("{base}{tls}"));
    let err = |tls: &str| parse(tls).expect_err(tls).to_string();
    assert!(err("[tls]\nlisten = [\"127.0.0.1:0\"]\n").contains("tls.certificates"));
    assert!(err(&cert.toml_entry(&[])).contains("tls.listen"));
    let listen = "[tls]\nlisten = [\"127.0.0.1:0\"]\n";
    assert!(err(&format!("{listen}client_auth = \"required\"\n{}", cert.toml_entry(&[]))).contains("tls.client_auth"));
    let ca = format!("client_ca_file = {:?}\n", cert.cert_file.display().to_string());
    assert!(err(&format!("{listen}{ca}client_auth = \"maybe\"\n{}", cert.toml_entry(&[]))).contains("tls.client_auth"));
    assert!(err(&format!("[tls]\n{ca}")).contains("tls.client_ca_file"));
    assert!(err("[[routes]]\npath = \"/s\"\nupstream = \"api\"\nrequire_client_cert = true\n")
        .contains("routes[1].require_client_cert"));
    assert!(err(&format!("{listen}client_ca_file = \"/nonexistent/ca.pem\"\n{}", cert.toml_entry(&[])))
        .contains("tls.client_ca_file"));
    assert!(err(&format!("{listen}client_crl_file = \"/nonexistent/crl.pem\"\n{}", cert.toml_entry(&[])))
        .contains("tls.client_crl_file: needs tls.client_ca_file"));
    let e = err(&format!(
        "{listen}{ca}client_crl_file = {:?}\n{}",
        cert.cert_file.display().to_string(),
        cert.toml_entry(&[])
    ));
    assert!(e.contains("tls.client_crl_file") && e.contains("no PEM revocation list"), "{e}");
    assert!(err(&format!("{listen}min_version = \"1.1\"\n{}", cert.toml_entry(&[]))).contains("tls.min_version"));
    let suites = |keys: &str| err(&format!("{listen}{keys}\n{}", cert.toml_entry(&[])));
    let e = suites("cipher_suites = [\"TLS_RSA_WITH_RC4_128_SHA\"]");
    assert!(e.contains("tls.cipher_suites[0]") && e.contains("TLS13_AES_128_GCM_SHA256"), "{e}");
    let e = suites("cipher_suites = [\"TLS13_AES_128_GCM_SHA256\", \"TLS13_AES_128_GCM_SHA256\"]");
    assert!(e.contains("tls.cipher_suites[1]") && e.contains("twice"), "{e}");
    let e = suites("min_version = \"1.3\"\ncipher_suites = [\"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\"]");
    assert!(e.contains("tls.cipher_suites: names no TLS 1.3 suite"), "{e}");
    assert!(suites("prefer_server_ciphers = true").contains("tls.prefer_server_ciphers: needs tls.cipher_suites"));
    let short = cert.cert_file.with_file_name("short.key");
    std::fs::write(&short, [1u8; 32]).unwrap();
    let e = suites(&format!("session_ticket_keys = [{:?}]", short.display().to_string()));
    assert!(e.contains("tls.session_ticket_keys[0]") && e.contains("32 bytes, not 80 or 48"), "{e}");
    let e = suites("session_ticket_keys = [\"/nonexistent/ticket.key\"]");
    assert!(e.contains("tls.session_ticket_keys[0]: cannot read"), "{e}");
    let (k, same_name) = (cert.cert_file.with_file_name("k.key"), cert.cert_file.with_file_name("k2.key"));
    std::fs::write(&k, [1u8; 80]).unwrap();
    std::fs::write(&same_name, [[1u8; 16], [2u8; 16], [2u8; 16]].concat()).unwrap();
    let e = suites(&format!(
        "session_ticket_keys = [{:?}, {:?}]",
        k.display().to_string(),
        same_name.display().to_string()
    ));
    assert!(e.contains("tls.session_ticket_keys[1]") && e.contains("has the name"), "{e}");
    let e = suites(&format!("session_tickets = false\nsession_ticket_keys = [{:?}]", k.display().to_string()));
    assert!(e.contains("tls.session_ticket_keys: keys are set but tls.session_tickets is false"), "{e}");
    let details = "client_cert_details = [\"subject\"]\n";
    assert!(err(&format!("{listen}{details}{}", cert.toml_entry(&[]))).contains("tls.client_cert_details: needs"));
    let e = err(&format!("{listen}{ca}client_cert_details = [\"email\"]\n{}", cert.toml_entry(&[])));
    assert!(e.contains("tls.client_cert_details[0]"), "{e}");
    let e = err(&format!("{listen}{}ocsp_file = {:?}\n", cert.toml_entry(&[]), cert.cert_file.display().to_string()));
    assert!(e.contains("tls.certificates[0].ocsp_file") && e.contains("not a DER OCSP response"), "{e}");
    let missing = "[tls]\nlisten = [\"127.0.0.1:0\"]\n[[tls.certificates]]\ncert_file = \"/nonexistent/c.pem\"\nkey_file = \"/nonexistent/k.pem\"\n";
    let e = err(missing);
    assert!(e.contains("tls.certificates[0].cert_file") && e.contains("tls.certificates[0].key_file"), "{e}");
    let bad_name = format!("[tls]\nlisten = [\"127.0.0.1:0\"]\n{}", cert.toml_entry(&["bad name"]));
    assert!(err(&bad_name).contains("server_names[0]"));
    // A key that is not the certificate's: the config is well-formed, the start fails.
    let mismatched = format!(
        "[tls]\nlisten = [\"127.0.0.1:0\"]\n[[tls.certificates]]\ncert_file = {:?}\nkey_file = {:?}\n",
        cert.cert_file.display().to_string(),
        other.key_file.display().to_string()
    );
    let e = engine::Server::start(parse(&mismatched).unwrap()).err().expect("a mismatched key is refused").to_string();
    assert!(e.contains("cert.pem"), "{e}");
    // Two certificates may share a name only with keys of different kinds.
    let twice = |names: &[&str]| {
        let cfg = format!("[tls]\nlisten = [\"127.0.0.1:0\"]\n{}{}", cert.toml_entry(names), other.toml_entry(names));
        engine::Server::start(parse(&cfg).unwrap()).err().expect("two ECDSA keys for one name").to_string()
    };
    let e = twice(&["localhost"]);
    assert!(e.contains("serves \"localhost\"") && e.contains("keys of different kinds"), "{e}");
    assert!(twice(&[]).contains("serves no names"));
    assert!(err(&format!("{listen}{}", cert.toml_entry(&["a.test", "A.test"]))).contains("listed twice"));
    // A TLS listener alone is enough.
    let only_tls = format!("[tls]\nlisten = [\"127.0.0.1:0\"]\n{}", cert.toml_entry(&[]));
    let cfg = config::Config::parse(&format!(
        "{only_tls}[[upstreams]]\nname = \"api\"\nendpoints = [\"127.0.0.1:9\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n"
    ))
    .unwrap();
    let mut server = engine::Server::start(cfg).unwrap();
    assert_eq!(server.local_addrs().len(), 1);
    server.shutdown();
    server.join();
}
