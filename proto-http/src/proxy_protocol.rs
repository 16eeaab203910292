//! The PROXY protocol header (HAProxy's specification, versions 1 and 2) that a layer-4 load
//! balancer sends before the client's bytes, naming the client's address. Reading it off a
//! connection, and what the address is used for, is the engine's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Version 2's signature, the header's first 12 bytes.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Version 1's longest header, CRLF included (spec 2.1).
const V1_MAX: usize = 107;
/// The longest version 2 header accepted: 16 fixed bytes and the addresses with their TLVs
/// (the spec allows 64 KiB; load balancers send a few hundred bytes at most).
pub const V2_MAX: usize = 16 + 2048;

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address; None for a connection the proxy made itself (v2 `LOCAL`, v1
    /// `UNKNOWN`, or an address family other than IPv4 and IPv6), whose own peer counts.
    pub source: Option<SocketAddr>,
    /// Bytes the header took.
    pub len: usize,
}

/// Why a header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The bytes start with neither signature.
    NotProxy,
    /// A version 1 line that does not follow the grammar, or is too long.
    BadV1,
    /// A version 2 header with an unknown version or command, or addresses that do not
    /// fit its length, or longer than [`V2_MAX`].
    BadV2,
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProxyError::NotProxy => "no PROXY protocol header",
            ProxyError::BadV1 => "a malformed PROXY protocol version 1 line",
            ProxyError::BadV2 => "a malformed PROXY protocol version 2 header",
        })
    }
}

/// Parses the header at the start of `buf`: `Ok(None)` when more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyError> {
    // Whether `buf` agrees with `sig` as far as both go.
    let agrees = |sig: &[u8]| buf.iter().zip(sig).all(|(a, b)| a == b);
    match buf.len() {
        0 => Ok(None),
        n if agrees(V2_SIGNATURE) => {
            if n < 16 {
                Ok(None)
            } else {
                v2(buf)
            }
        }
        n if agrees(b"PROXY ") => {
            if n < 6 {
                Ok(None)
            } else {
                v1(buf)
            }
        }
        _ => Err(ProxyError::NotProxy),
    }
}

/// `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n` or `PROXY UNKNOWN[ ...]\r\n` (spec 2.1).
fn v1(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyError> {
    let Some(lf) = buf.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX { Err(ProxyError::BadV1) } else { Ok(None) };
    };
    if buf[lf - 1] != b'\r' {
        return Err(ProxyError::BadV1);
    }
    let (end, len) = (lf - 1, lf + 1);
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| ProxyError::BadV1)?;
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok(Some(ProxyHeader { source: None, len }));
    }
    // Exactly five fields, single spaces between (spec 2.1); no allocation.
    let mut parts = line.split(' ');
    let mut next = || parts.next().ok_or(ProxyError::BadV1);
    let [family, src, dst, sport, dport] = [next()?, next()?, next()?, next()?, next()?];
    if parts.next().is_some() {
        return Err(ProxyError::BadV1);
    }
    let port = |p: &str| match p.bytes().all(|b| b.is_ascii_digit()) && !(p.len() > 1 && p.starts_with('0')) {
        true => p.parse::<u16>().ok(),
        false => None,
    };
    let ip = |s: &str| -> Option<IpAddr> {
        match family {
            "TCP4" => s.parse::<Ipv4Addr>().ok().map(IpAddr::from),
            "TCP6" => s.parse::<Ipv6Addr>().ok().map(IpAddr::from),
            _ => None,
        }
    };
    // The destination is checked and not kept: coregate knows where it listens.
    match (ip(src), ip(dst), port(sport), port(dport)) {
        (Some(src), Some(_), Some(sport), Some(_)) => {
            Ok(Some(ProxyHeader { source: Some(SocketAddr::new(src, sport)), len }))
        }
        _ => Err(ProxyError::BadV1),
    }
}

/// The binary header (spec 2.2): signature, version and command, family and protocol, the
/// length of what follows, then the addresses (and TLVs, skipped).
fn v2(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyError> {
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 || command > 1 {
        return Err(ProxyError::BadV2);
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX {
        return Err(ProxyError::BadV2);
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[16..len];
    // LOCAL (0): the proxy's own connection (a health check); its address block is ignored.
    if command == 0 {
        return Ok(Some(ProxyHeader { source: None, len }));
    }
    let source = match buf[13] >> 4 {
        1 => {
            let a: &[u8; 12] = body.get(..12).and_then(|b| b.try_into().ok()).ok_or(ProxyError::BadV2)?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        2 => {
            let a: &[u8; 36] = body.get(..36).and_then(|b| b.try_into().ok()).ok_or(ProxyError::BadV2)?;
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&a[..16]).expect("16 bytes"));
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[32], a[33]])))
        }
        // UNSPEC or UNIX: no address of a kind coregate keeps.
        0 | 3 => None,
        _ => return Err(ProxyError::BadV2),
    };
    Ok(Some(ProxyHeader { source, len }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(command: u8, family: u8, addrs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family << 4 | 1);
        h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h
    }

    #[test]
    fn version_1_table() {
        let ok: &[(&str, Option<&str>)] = &[
            ("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n", Some("192.0.2.1:56324")),
            ("PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n", Some("[2001:db8::1]:4000")),
            ("PROXY TCP4 192.0.2.1 198.51.100.2 0 65535\r\n", Some("192.0.2.1:0")),
            ("PROXY UNKNOWN\r\n", None),
            ("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None),
        ];
        for (line, source) in ok {
            let mut bytes = line.as_bytes().to_vec();
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let h = parse(&bytes).unwrap().unwrap_or_else(|| panic!("{line:?} incomplete"));
            assert_eq!(h.source, source.map(|s| s.parse().unwrap()), "{line:?}");
            assert_eq!(h.len, line.len());
            // Every prefix asks for more.
            for cut in 0..line.len() {
                assert_eq!(parse(&line.as_bytes()[..cut]), Ok(None), "{line:?} cut at {cut}");
            }
        }
        for bad in [
            "PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
            "PROXY TCP4 192.0.2.1 198.51.100.2 1 443 extra\r\n",
            "PROXY TCP4 192.0.2.1  198.51.100.2 56324 443\r\n",
            "PROXY TCP4 2001:db8::1 198.51.100.2 1 443\r\n",
            "PROXY TCP6 192.0.2.1 198.51.100.2 1 443\r\n",
            "PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
            "PROXY TCP4 192.0.2.1 198.51.100.2 +1 443\r\n",
            "PROXY TCP4 192.0.2.1 198.51.100.2 01 443\r\n",
            "PROXY TCP4 192.0.2.001 198.51.100.2 1 443\r\n",
            "PROXY UDP4 192.0.2.1 198.51.100.2 1 443\r\n",
            "PROXY TCP4 192.0.2.1 198.51.100.2 1 443\n",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(100));
        assert_eq!(parse(long.as_bytes()), Err(ProxyError::BadV1));
        assert_eq!(parse(&long.as_bytes()[..V1_MAX]), Err(ProxyError::BadV1));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"\x16\x03\x01"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b""), Ok(None));
    }

    #[test]
    fn version_2_table() {
        let inet = [192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb];
        let h = v2_header(1, 1, &inet);
        assert_eq!(parse(&h), Ok(Some(ProxyHeader { source: Some("192.0.2.1:56324".parse().unwrap()), len: 28 })));
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut]), Ok(None), "cut at {cut}");
        }
        // TLVs after the addresses are skipped; the bytes after the header are not its.
        let mut with_tlv = inet.to_vec();
        with_tlv.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        let mut h = v2_header(1, 1, &with_tlv);
        h.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(parse(&h).unwrap().unwrap().len, 16 + 17);
        let mut inet6 = vec![0x20, 0x01, 0x0d, 0xb8];
        inet6.extend_from_slice(&[0; 11]);
        inet6.push(1);
        inet6.extend_from_slice(&[0; 16]);
        inet6.extend_from_slice(&[0x0f, 0xa0, 0x01, 0xbb]);
        let source = parse(&v2_header(1, 2, &inet6)).unwrap().unwrap().source;
        assert_eq!(source, Some("[2001:db8::1]:4000".parse().unwrap()));
        // LOCAL (a health check of the balancer's own), UNSPEC and UNIX keep the real peer.
        assert_eq!(parse(&v2_header(0, 0, &[])).unwrap().unwrap().source, None);
        assert_eq!(parse(&v2_header(0, 1, &inet)).unwrap().unwrap().source, None);
        assert_eq!(parse(&v2_header(1, 0, &[])).unwrap().unwrap().source, None);
        assert_eq!(parse(&v2_header(1, 3, &[0; 216])).unwrap().unwrap().source, None);
        // Refused: version 1 in the binary form, command 2, family 4, short addresses, too long.
        let mut bad_version = v2_header(1, 1, &inet);
        bad_version[12] = 0x11;
        assert_eq!(parse(&bad_version), Err(ProxyError::BadV2));
        assert_eq!(parse(&v2_header(2, 1, &inet)), Err(ProxyError::BadV2));
        assert_eq!(parse(&v2_header(1, 4, &inet)), Err(ProxyError::BadV2));
        assert_eq!(parse(&v2_header(1, 1, &inet[..8])), Err(ProxyError::BadV2));
        assert_eq!(parse(&v2_header(1, 2, &inet)), Err(ProxyError::BadV2));
        assert_eq!(parse(&v2_header(1, 1, &vec![0; V2_MAX])), Err(ProxyError::BadV2));
    }
}
