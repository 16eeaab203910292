//! Endpoints given by name (`"NAME:PORT"`), end to end on both drivers: the name is
//! resolved when the configuration loads and names the upstream in the Host of requests
//! without one; `upstreams[].resolve` looks it up again (here through a test's resolver,
//! `Server::resolve_again`) and moves new connections to the new addresses, while a name
//! that stops resolving leaves the upstream where it was. Over HTTPS the name is the
//! certificate's to match.

use std::net::SocketAddr;

use coregate_tests::tls::{TestCert, TlsUpstream};
use coregate_tests::*;

fn named_upstream(port: u16) -> String {
    format!(
        "[[upstreams]]\nname = \"api\"\nendpoints = [\"localhost:{port}\"]\nresolve = \"1h\"\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n"
    )
}

/// The body of the answer to `GET /` on a new connection.
fn served_by(gw: &Gateway) -> String {
    gw.client().request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").text()
}

both_drivers!(a_name_resolves_at_load_and_is_the_host_of_requests_without_one, |io| {
    let up = Upstream::echo();
    let gw = Gateway::start(io, &named_upstream(up.addr.port()));
    // HTTP/1.0 without Host: the upstream hears the name it was configured by (RFC 9112 3.2
    // wants a Host in every HTTP/1.1 request the gateway sends).
    let mut c = gw.client();
    c.send("GET /a HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("x-echo-host"), Some(format!("localhost:{}", up.addr.port()).as_str()));
});

both_drivers!(resolving_again_follows_a_changed_address, |io| {
    let (a, b) = (Upstream::named("a"), Upstream::named("b"));
    let mut gw = Gateway::start(io, &named_upstream(a.addr.port()));
    let mut kept = gw.client();
    assert_eq!(kept.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").text(), "a");
    let to_b = |name: &str, _port| -> std::io::Result<Vec<SocketAddr>> {
        assert_eq!(name, "localhost");
        Ok(vec![b.addr])
    };
    assert_eq!(gw.resolve_again(&to_b), (true, Vec::new()));
    assert_eq!(served_by(&gw), "b");
    // The connection of the previous addresses finishes as a reload's do: closed when idle.
    assert!(kept.closed());
    // The same answer: no reload.
    assert_eq!(gw.resolve_again(&to_b), (false, Vec::new()));
    // A name that no longer resolves keeps the addresses it had.
    let (reloaded, failed) = gw.resolve_again(&|_, _| Err(std::io::Error::other("SERVFAIL")));
    assert!(!reloaded);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("cannot resolve \"localhost\": SERVFAIL"), "{failed:?}");
    assert_eq!(served_by(&gw), "b");
});

both_drivers!(a_named_https_endpoint_is_verified_against_its_name, |io| {
    // No `server_name`: the certificate must be for the name the endpoint was written with.
    let (right, wrong) = (TestCert::new(&["localhost"]), TestCert::new(&["other.test"]));
    let (good, bad) = (TlsUpstream::echo(&right, None), TlsUpstream::echo(&wrong, None));
    let mut toml = String::new();
    for (i, (up, cert)) in [(&good, &right), (&bad, &wrong)].into_iter().enumerate() {
        toml.push_str(&format!(
            "[[upstreams]]\nname = \"u{i}\"\nendpoints = [\"localhost:{}\"]\ntls = {{ ca_file = {:?} }}\n[[routes]]\npath = \"/{i}/\"\nupstream = \"u{i}\"\n",
            up.addr.port(),
            cert.cert_file.display().to_string()
        ));
    }
    let gw = Gateway::start(io, &toml);
    let r = gw.client().request("GET /0/x HTTP/1.1\r\nHost: api.test\r\n\r\n");
    assert_eq!((r.status(), r.text().as_str()), (200, "GET /0/x\n"));
    assert_eq!(gw.client().request("GET /1/x HTTP/1.1\r\nHost: api.test\r\n\r\n").status(), 502);
});
