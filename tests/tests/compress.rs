//! Response compression (`routes[].compress`) end to end, on both drivers: what is gzipped
//! (or encoded with brotli or zstd, as the client's weights and the route's order choose)
//! and how it is marked (Content-Encoding, Vary, a weak ETag, the length), what is left as
//! it came (no or refused Accept-Encoding, small, large, incompressible, already encoded,
//! `no-transform`, types not listed, HEAD), chunked upstream bodies, the cache beside it,
//! and the settings that are refused.

use std::io::Read;

use coregate_tests::*;

/// A JSON document of `n` bytes that compresses well.
fn json(n: usize) -> Vec<u8> {
    let mut v = b"[".to_vec();
    let mut i = 0;
    while v.len() < n - 1 {
        v.extend_from_slice(format!("{{\"id\":{i},\"name\":\"item\"}},").as_bytes());
        i += 1;
    }
    v.truncate(n - 1);
    v.push(b']');
    v
}

/// `n` bytes that gzip cannot shrink.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Answers by path: the body and the fields that make each case.
fn origin() -> Upstream {
    Upstream::start(|mut c| {
        while let Some(req) = c.read_request() {
            let path = req.start.split(' ').nth(1).unwrap_or("").to_string();
            let (fields, body) = match path.as_str() {
                "/json" | "/cached" => ("content-type: application/json\r\netag: \"v1\"\r\n", json(3000)),
                "/small" => ("content-type: application/json\r\n", json(100)),
                "/png" => ("content-type: image/png\r\n", json(3000)),
                "/encoded" => ("content-type: application/json\r\ncontent-encoding: br\r\n", json(3000)),
                "/no-transform" => ("content-type: application/json\r\ncache-control: no-transform\r\n", json(3000)),
                "/big" | "/off/big" => ("content-type: text/plain; charset=utf-8\r\n", json(9000)),
                "/huge" => ("content-type: application/json\r\n", json(3_000_000)),
                "/noise" => ("content-type: application/json\r\n", noise(3000)),
                "/created" => ("content-type: application/json\r\n", json(1000)),
                _ => ("content-type: text/plain\r\n", b"no".to_vec()),
            };
            let status = if path == "/created" { "201 Created" } else { "200 OK" };
            let mut out = format!("HTTP/1.1 {status}\r\n{fields}").into_bytes();
            if path == "/chunked" || path == "/big-chunked" {
                let n = if path == "/chunked" { 5000 } else { 50_000 };
                out.extend_from_slice(b"content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n");
                out.extend_from_slice(&chunked(&json(n), 1000, ""));
            } else if path == "/close" {
                // Close-delimited: the body ends when the connection does.
                out.extend_from_slice(b"content-type: application/json\r\n\r\n");
                out.extend_from_slice(&json(20_000));
                c.write(out);
                return;
            } else {
                with_length(&mut out, &body, &req);
            }
            if !c.write(out) {
                return;
            }
        }
    })
}

fn gateway(io: &str, up: &Upstream) -> Gateway {
    Gateway::start(
        io,
        &format!(
            "[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n\
             [[routes]]\npath = \"/cached\"\nupstream = \"api\"\ncompress = {{}}\ncache = {{ ttl = \"60s\" }}\n\
             [[routes]]\npath = \"/off/\"\nupstream = \"api\"\ncompress = {{ max_bytes = 8192, stream = false }}\n\
             [[routes]]\npath = \"/\"\nupstream = \"api\"\ncompress = {{ max_bytes = 8192 }}\n",
            up.addr
        ),
    )
}

fn get(c: &mut Client, path: &str, accept: &str) -> Message {
    c.request(format!("GET {path} HTTP/1.1\r\nHost: api.test\r\n{accept}\r\n"))
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body).read_to_end(&mut out).expect("a gzip body");
    out
}

both_drivers!(eligible_responses_are_gzipped_for_clients_that_accept_it, |io| {
    let up = origin();
    let gw = gateway(io, &up);
    let mut c = gw.client();
    for (path, original) in [("/json", json(3000)), ("/chunked", json(5000)), ("/created", json(1000))] {
        let r = get(&mut c, path, "Accept-Encoding: br, gzip;q=0.8\r\n");
        assert_eq!(r.header("content-encoding"), Some("gzip"), "{path}");
        assert_eq!(r.header("vary"), Some("accept-encoding"), "{path}");
        assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()), "{path}");
        assert!(!r.chunked && r.body.len() < original.len() / 3, "{path}: {} bytes", r.body.len());
        assert!(gunzip(&r.body) == original, "{path}: the body came back changed");
    }
    let r = get(&mut c, "/json", "Accept-Encoding: gzip\r\n");
    assert_eq!(r.header("etag"), Some("W/\"v1\""), "the gzip bytes are another representation");
});

both_drivers!(responses_are_left_as_they_came_otherwise, |io| {
    let up = origin();
    let gw = gateway(io, &up);
    let mut c = gw.client();
    // The client does not accept gzip: as it came, but caches after coregate learn that the
    // representation depends on Accept-Encoding.
    for accept in ["", "Accept-Encoding: identity\r\n", "Accept-Encoding: gzip;q=0, br\r\n"] {
        let r = get(&mut c, "/json", accept);
        assert_eq!(r.header("content-encoding"), None, "{accept:?}");
        assert_eq!(r.header("vary"), Some("accept-encoding"), "{accept:?}");
        assert_eq!(r.header("etag"), Some("\"v1\""));
        assert!(r.body == json(3000));
    }
    let gz = "Accept-Encoding: gzip\r\n";
    // Not worth it or not allowed: the same for every client, so no Vary either.
    for (path, body, encoding) in [
        ("/small", json(100), None),
        ("/png", json(3000), None),
        ("/encoded", json(3000), Some("br")),
        ("/no-transform", json(3000), None),
        ("/off/big", json(9000), None),
    ] {
        let r = get(&mut c, path, gz);
        assert_eq!(r.header("content-encoding"), encoding, "{path}");
        assert_eq!(r.header("vary"), None, "{path}");
        assert!(r.body == body, "{path}");
    }
    // Incompressible: sent as it came (gzip would be larger), marked as depending on it.
    let r = get(&mut c, "/noise", gz);
    assert_eq!((r.header("content-encoding"), r.header("vary")), (None, Some("accept-encoding")));
    assert!(r.body == noise(3000));
    // HEAD: no body to compress; the fields are the upstream's.
    c.send("HEAD /json HTTP/1.1\r\nHost: api.test\r\nAccept-Encoding: gzip\r\n\r\n");
    let r = c.response_to(true);
    assert_eq!((r.status(), r.header("content-encoding")), (200, None));
    assert_eq!(r.header("content-length"), Some("3000"));
    assert_eq!(up.connection_count(), 1, "every answer kept the connection usable");
});

both_drivers!(cached_responses_are_gzipped_on_the_way_out, |io| {
    let up = origin();
    let gw = gateway(io, &up);
    let mut c = gw.client();
    for (accept, status) in [("Accept-Encoding: gzip\r\n", "MISS"), ("", "HIT"), ("Accept-Encoding: gzip\r\n", "HIT")] {
        let r = get(&mut c, "/cached", accept);
        assert_eq!(r.header("x-cache-status"), Some(status));
        let body = if accept.is_empty() { r.body.clone() } else { gunzip(&r.body) };
        assert!(body == json(3000), "{status} {accept:?}");
        assert_eq!(r.header("content-encoding"), (!accept.is_empty()).then_some("gzip"), "{status} {accept:?}");
        assert_eq!(r.header("vary"), Some("accept-encoding"));
    }
});

/// The body decoded by the coding a response names.
fn decoded(r: &Message) -> Vec<u8> {
    match r.header("content-encoding") {
        None => r.body.clone(),
        Some("gzip") => gunzip(&r.body),
        Some("br") => {
            let mut out = Vec::new();
            brotli::BrotliDecompress(&mut &r.body[..], &mut out).expect("a brotli body");
            out
        }
        Some("zstd") => zstd::stream::decode_all(&r.body[..]).expect("a zstd body"),
        Some(other) => panic!("unexpected coding {other}"),
    }
}

both_drivers!(brotli_and_zstd_follow_the_clients_weights_then_the_routes_order, |io| {
    let up = origin();
    let gw = Gateway::start(
        io,
        &format!(
            "[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n\
             [[routes]]\npath = \"/cached\"\nupstream = \"api\"\ncache = {{ ttl = \"60s\" }}\n\
             compress = {{ encodings = [\"zstd\", \"br\", \"gzip\"], br_level = 5, zstd_level = 9 }}\n\
             [[routes]]\npath = \"/\"\nupstream = \"api\"\ncompress = {{ encodings = [\"zstd\", \"br\", \"gzip\"] }}\n",
            up.addr
        ),
    );
    let mut c = gw.client();
    for (path, original) in [("/json", json(3000)), ("/chunked", json(5000)), ("/cached", json(3000))] {
        for (accept, coding) in [
            ("gzip, deflate, br, zstd", Some("zstd")),
            ("gzip, br", Some("br")),
            ("br;q=0.5, gzip", Some("gzip")),
            ("zstd;q=0, *", Some("br")),
            ("deflate", None),
        ] {
            let r = get(&mut c, path, &format!("Accept-Encoding: {accept}\r\n"));
            assert_eq!(r.header("content-encoding"), coding, "{path} {accept}");
            assert_eq!(r.header("vary"), Some("accept-encoding"), "{path} {accept}");
            assert!(coding.is_none() || r.body.len() < original.len() / 3, "{path} {accept}: {} bytes", r.body.len());
            assert!(decoded(&r) == original, "{path} {accept}: the body came back changed");
        }
    }
    assert_eq!(up.connection_count(), 1, "every answer kept the connection usable");
});

both_drivers!(large_and_close_delimited_bodies_are_compressed_as_they_stream, |io| {
    let up = origin();
    let gw = Gateway::start(
        io,
        &format!(
            "[[upstreams]]\nname = \"api\"\nendpoints = [\"{}\"]\n\
             [[routes]]\npath = \"/\"\nupstream = \"api\"\ncompress = {{ max_bytes = 8192, encodings = [\"gzip\", \"br\", \"zstd\"] }}\n",
            up.addr
        ),
    );
    let mut c = gw.client();
    for (path, original) in
        [("/big", json(9000)), ("/big-chunked", json(50_000)), ("/huge", json(3_000_000)), ("/close", json(20_000))]
    {
        for coding in ["gzip", "br", "zstd"] {
            let r = get(&mut c, path, &format!("Accept-Encoding: {coding}\r\n"));
            assert_eq!((r.status(), r.header("content-encoding")), (200, Some(coding)), "{path} {coding}");
            assert!(r.chunked && r.header("content-length").is_none(), "{path} {coding}: sent as it is made");
            assert_eq!(r.header("vary"), Some("accept-encoding"));
            assert!(r.body.len() < original.len() / 3, "{path} {coding}: {} bytes", r.body.len());
            assert!(decoded(&r) == original, "{path} {coding}: the body came back changed");
        }
        // Not accepted: as it came, marked as depending on Accept-Encoding.
        let r = get(&mut c, path, "");
        assert!(r.header("content-encoding").is_none() && r.body == original, "{path}");
    }
    // HTTP/1.0 has no chunks: the compressed stream ends with the connection.
    let mut old = gw.client();
    old.send("GET /big HTTP/1.0\r\nHost: api.test\r\nAccept-Encoding: gzip\r\n\r\n");
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut old.reader, &mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(head.contains("content-encoding: gzip") && !head.contains("content-length"), "{head}");
    assert!(gunzip(&raw[split..]) == json(9000));
});

#[test]
fn compress_settings_are_checked() {
    let base = "[server]\nlisten = [\"127.0.0.1:0\"]\n[[upstreams]]\nname = \"api\"\nendpoints = [\"127.0.0.1:9\"]\n[[routes]]\npath = \"/\"\n";
    let parse = |route: &str| config::Config::parse(&format!("{base}{route}"));
    let err = |route: &str| parse(route).expect_err(route).to_string();
    assert!(err("respond = { status = 200 }\ncompress = {}\n").contains("routes[0].compress"));
    assert!(err("upstream = \"api\"\ncompress = { types = [\"json\"] }\n").contains("routes[0].compress.types[0]"));
    assert!(err("upstream = \"api\"\ncompress = { types = [] }\n").contains("routes[0].compress.types"));
    assert!(err("upstream = \"api\"\ncompress = { level = 0 }\n").contains("routes[0].compress.level"));
    assert!(err("upstream = \"api\"\ncompress = { level = 10 }\n").contains("routes[0].compress.level"));
    assert!(err("upstream = \"api\"\ncompress = { min_bytes = 9, max_bytes = 8 }\n").contains("min_bytes"));
    assert!(err("upstream = \"api\"\ncompress = { gzip = true }\n").contains("routes[0].compress.gzip"));
    assert!(err("upstream = \"api\"\ncompress = { encodings = [\"deflate\"] }\n")
        .contains("routes[0].compress.encodings[0]"));
    let cfg = parse("upstream = \"api\"\ncompress = {}\n").unwrap();
    let c = cfg.routes[0].compress.as_ref().unwrap();
    assert_eq!((c.level, c.min_bytes, c.max_bytes), (1, 256, 1 << 20));
    assert_eq!(c.types.len(), config::COMPRESS_TYPES.len());
}
