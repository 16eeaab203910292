//! The client's address behind trusted proxies (`server.trusted_proxies`): from a peer that
//! is one of them, X-Forwarded-For is walked from the right past trusted addresses, as
//! nginx's `real_ip_recursive on` and Envoy's trusted hops do. What the address is used for
//! (IP rules, rate limits, hashing, logs, templates) is the caller's; X-Forwarded-For sent
//! upstream still gets the TCP peer appended (`forward`).

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use proto_http::{FieldList, RequestHead};

/// The client: `peer` unless it is a trusted proxy; then, reading the elements of every
/// X-Forwarded-For field from the right, the first address that is not trusted. When all
/// are trusted, the leftmost; an element that is no address stops the walk (the address to
/// its right counts, the peer when it is the last), as nginx does. Port 0: a forwarded
/// address has none (an element's own port, `ip:port`, is dropped).
pub(crate) fn real_client(trusted: &[ipnet::IpNet], peer: SocketAddr, req: &RequestHead) -> SocketAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(&ip));
    if !is_trusted(peer.ip()) {
        return peer;
    }
    // Left to right, what a walk from the right would stop at if the list ended here.
    let mut found: Option<IpAddr> = None;
    let fields = req.headers().filter(|(n, _)| n.eq_ignore_ascii_case(b"x-forwarded-for"));
    for element in fields.flat_map(|(_, v)| FieldList::new(v)) {
        match address(element) {
            None => found = None,
            Some(ip) if !is_trusted(ip) || found.is_none() => found = Some(ip),
            Some(_) => {}
        }
    }
    found.map_or(peer, |ip| SocketAddr::new(ip, 0))
}

/// `ip`, `ip:port` or `[ip6]:port`.
fn address(element: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(element).ok()?;
    s.parse::<IpAddr>().ok().or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// `ip` as text in `buf` (no allocation per request); returns the bytes written.
pub(crate) fn write_ip(buf: &mut [u8; 46], ip: IpAddr) -> &[u8] {
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    write!(cursor, "{ip}").expect("an IPv6 address fits 45 bytes");
    let n = cursor.position() as usize;
    &buf[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_forwarded_for_past_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = ["10.0.0.0/8", "192.0.2.1/32"].iter().map(|s| s.parse().unwrap()).collect();
        let cases: &[(&str, &[&str], &str)] = &[
            // An untrusted peer: its X-Forwarded-For is anyone's claim.
            ("203.0.113.9:1", &["1.1.1.1"], "203.0.113.9:1"),
            ("10.0.0.5:1", &["198.51.100.7"], "198.51.100.7:0"),
            ("10.0.0.5:1", &["6.6.6.6, 198.51.100.7, 10.0.0.9"], "198.51.100.7:0"),
            ("10.0.0.5:1", &["6.6.6.6", "198.51.100.7", "10.1.1.1, 192.0.2.1"], "198.51.100.7:0"),
            // All trusted: the leftmost; none at all: the peer.
            ("10.0.0.5:1", &["10.9.9.9, 192.0.2.1"], "10.9.9.9:0"),
            ("10.0.0.5:1", &[], "10.0.0.5:1"),
            ("10.0.0.5:1", &[""], "10.0.0.5:1"),
            // Not an address: the walk stops to its right.
            ("10.0.0.5:1", &["198.51.100.7, unknown"], "10.0.0.5:1"),
            ("10.0.0.5:1", &["198.51.100.7, junk, 10.2.2.2"], "10.2.2.2:0"),
            ("10.0.0.5:1", &["junk, 198.51.100.7"], "198.51.100.7:0"),
            // Ports and IPv6.
            ("10.0.0.5:1", &["198.51.100.7:4711"], "198.51.100.7:0"),
            ("10.0.0.5:1", &["[2001:db8::7]:443"], "[2001:db8::7]:0"),
            ("10.0.0.5:1", &["2001:db8::7"], "[2001:db8::7]:0"),
        ];
        for (peer, fields, want) in cases {
            let mut head = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
            for f in *fields {
                head.push_str(&format!("X-Forwarded-For: {f}\r\n"));
            }
            head.push_str("\r\n");
            let meta = proto_http::parse_request(head.as_bytes(), &proto_http::Limits::default()).unwrap().unwrap();
            let req = RequestHead::new(bytes::Bytes::from(head), meta);
            let got = real_client(&trusted, peer.parse().unwrap(), &req);
            assert_eq!(got, want.parse().unwrap(), "{peer} {fields:?}");
        }
        let mut buf = [0u8; 46];
        let long: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".parse().unwrap();
        assert_eq!(write_ip(&mut buf, long), long.to_string().as_bytes());
    }
}
