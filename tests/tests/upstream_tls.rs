//! TLS to upstreams (`upstreams[].tls`) end to end, on both drivers: requests and bodies over
//! a pooled HTTPS connection, upstreams that close idle connections, certificates that are
//! not trusted or not for the name, `verify = false`, client certificates (mTLS), WebSocket
//! tunnels and health checks over TLS, and the configurations that cannot start.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use coregate_tests::tls::{TestCa, TestCert, TlsUpstream};
use coregate_tests::*;

/// `upstreams[].tls` trusting `ca` for `name`, plus `extra` keys.
fn tls_table(ca: &TestCert, name: &str, extra: &str) -> String {
    format!("tls = {{ server_name = \"{name}\", ca_file = {:?}{extra} }}", ca.cert_file.display().to_string())
}

/// One worker (so that requests share its pool) in front of upstreams, each `(address,
/// tls table)`, routed by path: `/0/...` to the first, `/1/...` to the second, and so on.
fn gateway(io: &str, upstreams: &[(std::net::SocketAddr, String)]) -> Gateway {
    let mut toml = String::new();
    for (i, (addr, tls)) in upstreams.iter().enumerate() {
        toml.push_str(&format!(
            "[[upstreams]]\nname = \"u{i}\"\nendpoints = [\"{addr}\"]\n{tls}\n[[routes]]\npath = \"/{i}/\"\nupstream = \"u{i}\"\n"
        ));
    }
    Gateway::start_with_workers(io, 1, &toml)
}

fn get(c: &mut Client, path: &str) -> Message {
    c.request(format!("GET {path} HTTP/1.1\r\nHost: api.test\r\n\r\n"))
}

both_drivers!(requests_and_bodies_go_over_one_pooled_tls_connection, |io| {
    let cert = TestCert::new(&["upstream.test"]);
    let up = TlsUpstream::echo(&cert, None);
    let gw = gateway(io, &[(up.addr, tls_table(&cert, "upstream.test", ""))]);
    let mut c = gw.client();
    for i in 0..4 {
        let r = get(&mut c, &format!("/0/get/{i}"));
        assert_eq!(r.status(), 200);
        assert_eq!(r.text(), format!("GET /0/get/{i}\n"));
        assert_eq!(r.header("x-echo-host"), Some("api.test"));
    }
    // Larger than a TLS record both ways (16 KiB), with a length and chunked.
    let body: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut req =
        format!("POST /0/big HTTP/1.1\r\nHost: api.test\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    req.extend_from_slice(&body);
    let r = c.request(&req);
    assert_eq!(r.status(), 200);
    assert!(r.body[..] == [&b"POST /0/big\n"[..], &body].concat()[..], "the body came back changed");
    let mut req = b"POST /0/chunked HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(&body, 30_000, ""));
    let r = c.request(&req);
    assert_eq!(r.status(), 200);
    assert_eq!(r.body.len(), "POST /0/chunked\n".len() + body.len());
    assert_eq!(get(&mut c, "/0/last").status(), 200);
    assert_eq!(up.connection_count(), 1, "one handshake, then the pooled connection for every request");
});

both_drivers!(an_idle_tls_connection_the_upstream_closed_is_replaced, |io| {
    let cert = TestCert::new(&["upstream.test"]);
    // One response per connection, then close_notify and the socket closed: whether the close
    // arrives while the connection idles in the pool or as the next request is written, the
    // request is answered (on a new connection).
    let up = TlsUpstream::start(&cert, None, |mut c| {
        if let Some(req) = c.read_request() {
            c.write(echo_response(&req));
            c.close();
        }
    });
    let gw = gateway(io, &[(up.addr, tls_table(&cert, "upstream.test", ""))]);
    let mut c = gw.client();
    for i in 0..5 {
        let r = get(&mut c, &format!("/0/{i}"));
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text(), format!("GET /0/{i}\n"));
    }
    assert_eq!(up.connection_count(), 5);
});

both_drivers!(certificates_that_are_not_trusted_or_not_for_the_name_are_refused, |io| {
    let cert = TestCert::new(&["upstream.test"]);
    let stranger = TestCert::new(&["upstream.test"]);
    let up = TlsUpstream::echo(&cert, None);
    let plain = Upstream::echo();
    let gw = gateway(
        io,
        &[
            // Trusts another certificate for the same name.
            (up.addr, tls_table(&stranger, "upstream.test", "")),
            // Trusts the certificate, which is not for this name.
            (up.addr, tls_table(&cert, "other.test", "")),
            // Checks nothing.
            (up.addr, "tls = { server_name = \"other.test\", verify = false }".to_string()),
            // The endpoint's address as the name: the certificate has no IP address.
            (up.addr, format!("tls = {{ ca_file = {:?} }}", cert.cert_file.display().to_string())),
            // An upstream that speaks plain HTTP.
            (plain.addr, tls_table(&cert, "upstream.test", "")),
            // The Mozilla roots: a self-signed certificate is not among them.
            (up.addr, "tls = { server_name = \"upstream.test\" }".to_string()),
        ],
    );
    let mut c = gw.client();
    for (path, want) in [("/0/x", 502), ("/1/x", 502), ("/2/x", 200), ("/3/x", 502), ("/4/x", 502), ("/5/x", 502)] {
        let r = get(&mut c, path);
        assert_eq!(r.status(), want, "{path}: {}", r.text());
        if want == 200 {
            assert_eq!(r.text(), format!("GET {path}\n"));
        }
        c = gw.client();
    }
    assert_eq!(plain.connection_count(), 1, "one attempt at the plain upstream");
});

both_drivers!(a_handshake_the_upstream_never_answers_times_out_within_connect_timeout, |io| {
    // Accepts, reads the ClientHello and whatever follows, never answers.
    let silent = Upstream::start(|mut c| {
        let mut buf = [0; 1024];
        while c.reader.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    let cert = TestCert::new(&["upstream.test"]);
    let table = tls_table(&cert, "upstream.test", "");
    let gw = gateway(io, &[(silent.addr, format!("connect_timeout = \"200ms\"\n{table}"))]);
    let mut c = gw.client();
    let r = get(&mut c, "/0/x");
    assert_eq!(r.status(), 504, "{}", r.text());
    // The gateway carries on.
    assert_eq!(gw.client().request("GET /none HTTP/1.1\r\nHost: a\r\n\r\n").status(), 404);
});

both_drivers!(client_certificates_are_presented_to_upstreams_that_ask, |io| {
    let cert = TestCert::new(&["upstream.test"]);
    let client = TestCert::new(&["gateway.test"]);
    let expected = client.der.clone();
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    let up = TlsUpstream::start(&cert, Some(&client), move |mut c| {
        while let Some(req) = c.read_request() {
            assert!(c.client_cert() == Some(expected.clone()), "the gateway's client certificate");
            counted.fetch_add(1, Ordering::SeqCst);
            if !c.write(echo_response(&req)) {
                return;
            }
        }
    });
    let with_cert = format!(
        ", cert_file = {:?}, key_file = {:?}",
        client.cert_file.display().to_string(),
        client.key_file.display().to_string()
    );
    let gw = gateway(
        io,
        &[(up.addr, tls_table(&cert, "upstream.test", &with_cert)), (up.addr, tls_table(&cert, "upstream.test", ""))],
    );
    let mut c = gw.client();
    assert_eq!(get(&mut c, "/0/a").status(), 200);
    assert_eq!(get(&mut c, "/0/b").status(), 200);
    assert_eq!(get(&mut c, "/1/no-certificate").status(), 502);
    assert_eq!(seen.load(Ordering::SeqCst), 2);
});

both_drivers!(websocket_upgrades_tunnel_to_tls_upstreams, |io| {
    let cert = TestCert::new(&["upstream.test"]);
    let up = TlsUpstream::start(&cert, None, |mut c| {
        let Some(req) = c.read_request() else { return };
        assert_eq!(req.header("upgrade"), Some("websocket"));
        c.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nearly");
        let mut got = vec![0; 5];
        c.reader.read_exact(&mut got).unwrap();
        assert_eq!(got, b"hello");
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        c.write(&big);
        c.close();
    });
    let toml = format!(
        "[[upstreams]]\nname = \"ws\"\nendpoints = [\"{}\"]\n{}\n[[routes]]\npath = \"/\"\nupstream = \"ws\"\nwebsocket = true\n",
        up.addr,
        tls_table(&cert, "upstream.test", "")
    );
    let gw = Gateway::start(io, &toml);
    let mut c = gw.client();
    c.send("GET /chat HTTP/1.1\r\nHost: api.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    skip_head(&mut c.reader);
    let mut early = vec![0; 5];
    c.reader.read_exact(&mut early).unwrap();
    assert_eq!(early, b"early");
    c.send("hello");
    let mut rest = Vec::new();
    c.reader.read_to_end(&mut rest).unwrap();
    assert_eq!(rest.len(), 100_000, "the upstream's bytes, then the close passed on");
    assert!(rest.iter().enumerate().all(|(i, &b)| b == i as u8));
});

both_drivers!(health_checks_speak_tls_to_tls_upstreams, |io| {
    let cert = TestCert::new(&["upstream.test"]);
    let checks = Arc::new(AtomicUsize::new(0));
    let counted = checks.clone();
    let sick = TlsUpstream::start(&cert, None, move |mut c| {
        while let Some(req) = c.read_request() {
            assert!(req.start.starts_with("GET /healthz "), "only checks reach it once it is out: {}", req.start);
            counted.fetch_add(1, Ordering::SeqCst);
            if !c.write("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n") {
                return;
            }
        }
    });
    let good = TlsUpstream::echo(&cert, None);
    let toml = format!(
        "[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\", \"{}\"]\n{}\nhealth_check = {{ path = \"/healthz\", interval = \"20ms\", unhealthy_threshold = 1 }}\noutlier = {{ consecutive_failures = 0 }}\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n",
        sick.addr,
        good.addr,
        tls_table(&cert, "upstream.test", "")
    );
    let gw = Gateway::start_with_workers(io, 1, &toml);
    // The second check began after the first one failed: the endpoint is out.
    until(|| checks.load(Ordering::SeqCst) >= 2, std::thread::yield_now);
    let mut c = gw.client();
    for i in 0..6 {
        assert_eq!(get(&mut c, &format!("/{i}")).status(), 200);
    }
});

both_drivers!(the_oldest_upstream_tls_version_can_be_raised_to_1_3, |io| {
    let cert = TestCert::new(&["upstream.test"]);
    let old = TlsUpstream::echo_speaking(&[&rustls::version::TLS12], &cert);
    let both = TlsUpstream::echo_speaking(rustls::DEFAULT_VERSIONS, &cert);
    let strict = tls_table(&cert, "upstream.test", ", min_version = \"1.3\"");
    let gw = gateway(
        io,
        &[(old.addr, tls_table(&cert, "upstream.test", "")), (old.addr, strict.clone()), (both.addr, strict)],
    );
    let mut c = gw.client();
    assert_eq!(get(&mut c, "/0/a").text(), "GET /0/a\n", "TLS 1.2 by default");
    assert_eq!(get(&mut c, "/1/a").status(), 502, "a TLS 1.2 upstream where 1.3 is the oldest");
    assert_eq!(get(&mut c, "/2/a").text(), "GET /2/a\n");
});

both_drivers!(the_cipher_suites_offered_to_upstreams_can_be_chosen, |io| {
    let cert = TestCert::new(&["upstream.test"]);
    let new = TlsUpstream::echo_speaking(&[&rustls::version::TLS13], &cert);
    let old = TlsUpstream::echo_speaking(&[&rustls::version::TLS12], &cert);
    // The test certificates have ECDSA keys.
    let tls12 = tls_table(&cert, "upstream.test", ", cipher_suites = [\"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\"]");
    let both = tls_table(
        &cert,
        "upstream.test",
        ", cipher_suites = [\"TLS13_CHACHA20_POLY1305_SHA256\", \"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\"]",
    );
    let gw = gateway(io, &[(new.addr, tls12.clone()), (new.addr, both), (old.addr, tls12)]);
    let mut c = gw.client();
    assert_eq!(get(&mut c, "/0/a").status(), 502, "only a TLS 1.2 suite offered to a TLS 1.3 upstream");
    assert_eq!(get(&mut c, "/1/a").text(), "GET /1/a\n");
    assert_eq!(get(&mut c, "/2/a").text(), "GET /2/a\n");
});

/// The `pin_sha256` value of `cert`'s key: the base64 of the SHA-256 of its DER
/// SubjectPublicKeyInfo.
fn pin(cert: &TestCert) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&cert.key_file).unwrap()).unwrap();
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(key.public_key_der()))
}

both_drivers!(upstream_keys_can_be_pinned, |io| {
    let (cert, other) = (TestCert::new(&["upstream.test"]), TestCert::new(&["upstream.test"]));
    let up = TlsUpstream::echo(&cert, None);
    let checked = |key: &TestCert| tls_table(&cert, "upstream.test", &format!(", pin_sha256 = [{:?}]", pin(key)));
    let unchecked = |key: &TestCert| {
        format!("tls = {{ server_name = \"upstream.test\", verify = false, pin_sha256 = [{:?}] }}", pin(key))
    };
    let both = format!("tls = {{ verify = false, pin_sha256 = [{:?}, \"sha256//{}\"] }}", pin(&other), pin(&cert));
    let gw = gateway(
        io,
        &[
            (up.addr, checked(&cert)),
            (up.addr, checked(&other)),
            (up.addr, unchecked(&cert)),
            (up.addr, unchecked(&other)),
            (up.addr, both),
        ],
    );
    let mut c = gw.client();
    assert_eq!(get(&mut c, "/0/a").text(), "GET /0/a\n");
    assert_eq!(get(&mut c, "/1/a").status(), 502, "a trusted certificate whose key is not pinned");
    assert_eq!(get(&mut c, "/2/a").text(), "GET /2/a\n", "the pin alone, with verify = false");
    assert_eq!(get(&mut c, "/3/a").status(), 502, "a key that is not pinned, with verify = false");
    assert_eq!(get(&mut c, "/4/a").text(), "GET /4/a\n", "one of several pins, in curl's form");
});

both_drivers!(upstream_certificates_are_checked_against_revocation_lists, |io| {
    let ca = TestCa::new();
    let server = |serial| {
        ca.issue_with(serial, |p| {
            p.subject_alt_names = vec![rcgen::SanType::DnsName("upstream.test".try_into().unwrap())];
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        })
    };
    let (good, revoked) = (TlsUpstream::echo(&server(1), None), TlsUpstream::echo(&server(2), None));
    let crl = format!(", crl_file = {:?}", ca.crl_file(&[2]).display().to_string());
    let gw = gateway(
        io,
        &[
            (good.addr, tls_table(&ca.ca, "upstream.test", &crl)),
            (revoked.addr, tls_table(&ca.ca, "upstream.test", &crl)),
            (revoked.addr, tls_table(&ca.ca, "upstream.test", "")),
        ],
    );
    let mut c = gw.client();
    assert_eq!(get(&mut c, "/0/a").text(), "GET /0/a\n");
    assert_eq!(get(&mut c, "/1/a").status(), 502, "a revoked certificate");
    assert_eq!(get(&mut c, "/2/a").text(), "GET /2/a\n", "the same certificate without the list");
    // An issuer without a list in the file is refused, as for client certificates.
    let stranger = TestCa::new();
    let other_list = format!(", crl_file = {:?}", stranger.crl_file(&[]).display().to_string());
    let gw = gateway(io, &[(good.addr, tls_table(&ca.ca, "upstream.test", &other_list))]);
    assert_eq!(get(&mut gw.client(), "/0/a").status(), 502);
});

#[test]
fn tls_settings_of_upstreams_are_checked() {
    let cert = TestCert::new(&["upstream.test"]);
    let other = TestCert::new(&["upstream.test"]);
    let parse = |tls: &str| {
        config::Config::parse(&format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n[[upstreams]]\nname = \"api\"\nendpoints = [\"127.0.0.1:9\"]\ntls = {{ {tls} }}\n"
        ))
    };
    let err = |tls: &str| parse(tls).expect_err(tls).to_string();
    let ca = format!("ca_file = {:?}", cert.cert_file.display().to_string());
    assert!(err(&format!("{ca}, verify = false")).contains("upstreams[0].tls.ca_file"));
    assert!(err("ca_file = \"/nonexistent/ca.pem\"").contains("upstreams[0].tls.ca_file"));
    assert!(err("server_name = \"bad name\"").contains("upstreams[0].tls.server_name"));
    assert!(err("server_name = \"*.wild.test\"").contains("upstreams[0].tls.server_name"));
    let half = format!("cert_file = {:?}", cert.cert_file.display().to_string());
    assert!(err(&half).contains("upstreams[0].tls.key_file"));
    assert!(err("sni = \"x\"").contains("upstreams[0].tls.sni"));
    assert!(err("min_version = \"1.1\"").contains("upstreams[0].tls.min_version"));
    assert!(err("cipher_suites = [\"TLS13_AES_512\"]").contains("upstreams[0].tls.cipher_suites[0]"));
    let e = err("pin_sha256 = [\"c2hvcnQ=\"]");
    assert!(e.contains("upstreams[0].tls.pin_sha256[0]") && e.contains("SHA-256"), "{e}");
    assert!(err("crl_file = \"/nonexistent/crl.pem\"").contains("upstreams[0].tls.crl_file"));
    let crl = format!("crl_file = {:?}", TestCa::new().crl_file(&[]).display().to_string());
    assert!(err(&format!("{crl}, verify = false")).contains("upstreams[0].tls.crl_file"));
    assert!(
        err(&format!("crl_file = {:?}", cert.cert_file.display().to_string())).contains("upstreams[0].tls.crl_file")
    );
    let ok = parse(&format!("{ca}, server_name = \"10.0.0.1\"")).unwrap();
    let tls = ok.upstreams[0].tls.as_ref().unwrap();
    assert_eq!(tls.server_name.as_deref(), Some("10.0.0.1"));
    assert!(tls.verify && tls.roots.as_ref().is_some_and(|r| r.len() == 1));
    assert!(parse("").unwrap().upstreams[0].tls.as_ref().is_some_and(|t| t.verify && t.roots.is_none()));
    // A client key that is not the certificate's: well-formed, refused at start.
    let mismatched = format!(
        "cert_file = {:?}, key_file = {:?}",
        cert.cert_file.display().to_string(),
        other.key_file.display().to_string()
    );
    let e = engine::Server::start(parse(&mismatched).unwrap()).err().expect("a mismatched key is refused").to_string();
    assert!(e.contains("upstreams \"api\" tls") && e.contains("cert.pem"), "{e}");
}
