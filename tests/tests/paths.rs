//! Path normalisation end to end (RFC 3986 6.2.2): a route's answer cannot be walked around
//! with dot segments, percent-encodings or doubled slashes, the upstream gets the path the
//! routes saw, and paths no server should get are refused; on both drivers.

use coregate_tests::*;

/// `/admin` answers 403 from the gateway; everything else goes to `up`.
fn gateway(io: &str, up: &Upstream, server_extra: &str) -> Gateway {
    let routes = format!(
        "[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n\n\
         [[routes]]\npath = \"/admin\"\nrespond = {{ status = 403 }}\n\n\
         [[routes]]\npath = \"/\"\nupstream = \"api\"\n",
        up.addr
    );
    Gateway::start_with(io, 1, server_extra, &routes)
}

fn get(gw: &Gateway, target: &str) -> Message {
    gw.client().request(format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n"))
}

both_drivers!(routes_and_upstream_see_the_normalised_path, |io| {
    let up = Upstream::echo();
    let gw = gateway(io, &up, "");
    for target in
        ["/public/../admin", "/%61dmin/x", "/a/./b/../../admin", "//admin", "/%2e%2e/admin", "http://a/x/../admin"]
    {
        assert_eq!(get(&gw, target).status(), 403, "{target}");
    }
    assert_eq!(up.connection_count(), 0, "none of those reached the upstream");
    for (target, seen) in [
        ("/public/./x/%7e/%c3%a9?q=/../a&b=%7e", "/public/x/~/%C3%A9?q=/../a&b=%7e"),
        ("/a%2fb", "/a%2Fb"),
        ("/a//b/", "/a/b/"),
        ("/x/..", "/"),
        ("/.well-known/y", "/.well-known/y"),
    ] {
        let r = get(&gw, target);
        assert_eq!((r.status(), r.text()), (200, format!("GET {seen}\n")), "{target}");
    }
    for target in ["/a\\b", "/a%zz", "/a%4", "/a%00b", "/a|b", "/caf\u{e9}"] {
        let r = get(&gw, target);
        assert_eq!(r.status(), 400, "{target}");
        assert_eq!(r.header("connection"), Some("close"), "{target}");
    }
});

both_drivers!(encoded_slashes_can_be_refused_and_normalising_turned_off, |io| {
    let up = Upstream::echo();
    let gw = gateway(io, &up, "escaped_slashes = \"reject\"\nmerge_slashes = false");
    assert_eq!(get(&gw, "/a%2Fb").status(), 400);
    assert_eq!(get(&gw, "/a%5cb").status(), 400);
    let r = get(&gw, "/a//../c");
    assert_eq!(r.text(), "GET /a/c\n", "without merging, `..` drops the empty segment");
    drop(gw);

    let gw = gateway(io, &up, "normalize_path = false");
    assert_eq!(get(&gw, "/public/../admin").text(), "GET /public/../admin\n", "as sent, and routed as sent");
    assert_eq!(get(&gw, "/a%2fb").text(), "GET /a%2fb\n");
});
