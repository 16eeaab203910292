//! TRACE and OPTIONS end to end on both drivers: TRACE refused with 405 unless
//! `server.allow_trace`, Max-Forwards counted down on the way upstream and, at 0, the request
//! answered by the gateway (RFC 9110 7.6.2, 9.3.7, 9.3.8), `OPTIONS *` answered for the
//! gateway, and malformed Max-Forwards or a TRACE with content refused.

use coregate_tests::*;

const ROUTES: &str = "[[routes]]\npath = \"/only\"\nmethods = [\"GET\", \"OPTIONS\"]\nupstream = \"api\"\n\
                      [[routes]]\npath = \"/\"\nupstream = \"api\"\n";

fn gateway(io: &str, up: &Upstream, server_extra: &str) -> Gateway {
    let extra = format!("[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n{ROUTES}", up.addr);
    Gateway::start_with(io, 1, server_extra, &extra)
}

both_drivers!(trace_is_refused_unless_allowed, |io| {
    let up = Upstream::echo();
    let gw = gateway(io, &up, "");
    let mut c = gw.client();
    let r = c.request("TRACE /a HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"));
    // The connection stays usable, and the upstream never saw the TRACE.
    assert_eq!(c.request("GET /b HTTP/1.1\r\nHost: a\r\n\r\n").text(), "GET /b\n");
    assert_eq!(up.connection_count(), 1);

    let gw = gateway(io, &up, "allow_trace = true");
    let mut c = gw.client();
    // Without Max-Forwards: proxied as it came.
    let r = c.request("TRACE /a HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.text(), "TRACE /a\n");
    assert_eq!(r.header("x-echo-max-forwards"), None);
});

both_drivers!(max_forwards_counts_down_and_ends_at_the_gateway, |io| {
    let up = Upstream::echo();
    let gw = gateway(io, &up, "allow_trace = true");
    let mut c = gw.client();
    for method in ["TRACE", "OPTIONS"] {
        let r = c.request(format!("{method} /a HTTP/1.1\r\nHost: a\r\nMax-Forwards: 3\r\n\r\n"));
        assert_eq!(r.text(), format!("{method} /a\n"));
        assert_eq!(r.header("x-echo-max-forwards"), Some("2"), "{method}");
    }
    // Other methods ignore it (RFC 9110 7.6.2), passing it on unchanged, 0 included.
    let r = c.request("GET /a HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n");
    assert_eq!(r.header("x-echo-max-forwards"), Some("0"));
    let before = up.connection_count();

    // At 0, the gateway is the final recipient: the echo of TRACE, without credentials.
    let r = c.request(
        "TRACE /a?q HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\nCookie: s=1\r\nAuthorization: Bearer t\r\nX-Api-Key: k\r\nX-Note: n\r\n\r\n",
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("content-type"), Some("message/http"));
    assert_eq!(r.text(), "TRACE /a?q HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\nX-Note: n\r\n\r\n");
    // OPTIONS: Allow, the route's methods where it names them, and no content.
    let r = c.request("OPTIONS /only HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n");
    assert_eq!((r.status(), r.header("allow"), r.header("content-length")), (200, Some("GET, OPTIONS"), Some("0")));
    let r = c.request("OPTIONS /x HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n");
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE"));
    // OPTIONS * is about the gateway itself: answered here whatever Max-Forwards says.
    let r = c.request("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status(), r.header("allow")), (200, Some("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE")));
    // None of these reached the upstream (its echo would carry none of those fields), and
    // the connection still serves requests that do.
    assert_eq!(c.request("GET /z HTTP/1.1\r\nHost: a\r\n\r\n").text(), "GET /z\n");
    assert_eq!(up.connection_count(), before);
});

both_drivers!(malformed_max_forwards_and_trace_content_are_refused, |io| {
    let up = Upstream::echo();
    let gw = gateway(io, &up, "allow_trace = true");
    for field in ["Max-Forwards: x", "Max-Forwards: 1, 2", "Max-Forwards: -1", "Max-Forwards: 1\r\nMax-Forwards: 1"] {
        let mut c = gw.client();
        let r = c.request(format!("OPTIONS /a HTTP/1.1\r\nHost: a\r\n{field}\r\n\r\n"));
        assert_eq!(r.status(), 400, "{field}");
        assert!(c.closed(), "{field}");
    }
    let mut c = gw.client();
    assert_eq!(c.request("TRACE /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi").status(), 400);
    assert_eq!(up.connection_count(), 0);
});
