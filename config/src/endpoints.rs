//! An upstream's `endpoints` as written (`"IP:PORT"`, `"NAME:PORT"`, or
//! `{ address, weight }`) and the addresses they stand for: a name is resolved when the
//! configuration is loaded (every address it has is an endpoint, as nginx resolves the
//! names in its `upstream` blocks), and again every `upstreams[].resolve` interval
//! ([`crate::Config::resolve_again`], Envoy's strict DNS). Connecting and balancing are the
//! engine's.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::validate::Checker;
use crate::MAX_WEIGHT;

/// One `endpoints` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub host: Host,
    pub weight: u32,
}

/// Where an entry points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Addr(SocketAddr),
    /// A DNS name (or a name from /etc/hosts) and the port.
    Name(String, u16),
}

/// Resolves a name to its addresses (the system's resolver, or a test's).
pub type Resolver<'a> = &'a dyn Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>>;

/// The system's resolver (getaddrinfo: /etc/hosts, then DNS as nsswitch says).
pub fn system_resolver(name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    (name, port).to_socket_addrs().map(Iterator::collect)
}

/// The endpoints an upstream's entries stand for: addresses, their weights, and the name
/// each came from. A name's addresses are sorted (v4 first), so a resolver that rotates its
/// answers does not look like a change; a name without addresses is an error, as one that
/// does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expanded {
    pub addrs: Vec<SocketAddr>,
    pub weights: Vec<u32>,
    /// The name an endpoint came from (for Host, SNI and the checks' Host), if it did.
    pub names: Vec<Option<String>>,
}

/// Expands `entries`; on failure, the index of the entry that failed and why.
pub fn expand(entries: &[Entry], resolve: Resolver<'_>) -> Result<Expanded, (usize, String)> {
    let mut out = Expanded::default();
    for (i, e) in entries.iter().enumerate() {
        match &e.host {
            Host::Addr(a) => {
                out.addrs.push(*a);
                out.weights.push(e.weight);
                out.names.push(None);
            }
            Host::Name(name, port) => {
                let mut found = resolve(name, *port).map_err(|err| (i, format!("cannot resolve {name:?}: {err}")))?;
                if found.is_empty() {
                    return Err((i, format!("{name:?} has no addresses")));
                }
                found.sort();
                found.dedup();
                for a in found {
                    out.addrs.push(a);
                    out.weights.push(e.weight);
                    out.names.push(Some(name.clone()));
                }
            }
        }
    }
    Ok(out)
}

/// A name as written before its port: letters, digits, '-' and '.' (RFC 1123 2.1), and not
/// an address.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-'))
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// `IP:PORT`, `[IPv6]:PORT` or `NAME:PORT`.
fn host(c: &mut Checker, path: &str, s: &str) -> Option<Host> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(Host::Addr(a));
    }
    let named = s.rsplit_once(':').and_then(|(name, port)| {
        let port = port.parse::<u16>().ok().filter(|&p| p != 0)?;
        valid_name(name).then(|| Host::Name(name.to_ascii_lowercase(), port))
    });
    if named.is_none() {
        c.err(
            path,
            format!("invalid address {s:?} (expected IP:PORT or NAME:PORT, such as \"127.0.0.1:8080\", \"[::1]:8080\" or \"api.internal:8080\")"),
        );
    }
    named
}

/// The raw `endpoints` list's entries.
pub(crate) fn entries(c: &mut Checker, path: &str, raw: &[toml::Value]) -> Vec<Entry> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, e) in raw.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let (host, weight) = match e {
            toml::Value::String(s) => (host(c, &at, s), 1),
            toml::Value::Table(t) => {
                for key in t.keys().filter(|k| !matches!(k.as_str(), "address" | "weight")) {
                    c.err(format!("{at}.{key}"), "unknown key");
                }
                let host = match t.get("address") {
                    Some(toml::Value::String(s)) => host(c, &format!("{at}.address"), s),
                    Some(_) => {
                        c.err(format!("{at}.address"), "expected a string \"IP:PORT\" or \"NAME:PORT\"");
                        None
                    }
                    None => {
                        c.err(format!("{at}.address"), "missing endpoint address");
                        None
                    }
                };
                let weight = match t.get("weight") {
                    None => 1,
                    Some(toml::Value::Integer(w)) if (1..=i64::from(MAX_WEIGHT)).contains(w) => *w as u32,
                    Some(w) => {
                        c.err(format!("{at}.weight"), format!("{w} is not a weight (an integer 1..={MAX_WEIGHT})"));
                        1
                    }
                };
                (host, weight)
            }
            other => {
                c.err(&at, format!("expected \"IP:PORT\" or {{ address, weight }}, not {}", other.type_str()));
                (None, 1)
            }
        };
        if let Some(host) = host {
            out.push(Entry { host, weight });
        }
    }
    out
}

/// The shortest re-resolution interval accepted: a resolver asked more often than this
/// gains nothing (DNS TTLs are seconds at best), and every change costs a reload.
pub const MIN_RESOLVE: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        match name {
            "two.test" => Ok(vec![SocketAddr::from(([10, 0, 0, 2], port)), SocketAddr::from(([10, 0, 0, 1], port))]),
            "none.test" => Ok(Vec::new()),
            _ => Err(std::io::Error::other("no such name")),
        }
    }

    #[test]
    fn names_expand_to_their_sorted_addresses_with_the_entrys_weight() {
        let entries = [
            Entry { host: Host::Addr("127.0.0.1:1".parse().unwrap()), weight: 1 },
            Entry { host: Host::Name("two.test".into(), 80), weight: 3 },
        ];
        let e = expand(&entries, &fake).unwrap();
        let want: Vec<SocketAddr> = ["127.0.0.1:1", "10.0.0.1:80", "10.0.0.2:80"].map(|a| a.parse().unwrap()).into();
        assert_eq!((e.addrs, e.weights), (want, vec![1, 3, 3]));
        assert_eq!(e.names, [None, Some("two.test".into()), Some("two.test".into())]);
        let bad = [Entry { host: Host::Name("none.test".into(), 80), weight: 1 }];
        assert_eq!(expand(&bad, &fake).unwrap_err().0, 0);
        let bad = [entries[0].clone(), Entry { host: Host::Name("gone.test".into(), 80), weight: 1 }];
        let (i, why) = expand(&bad, &fake).unwrap_err();
        assert_eq!(i, 1);
        assert!(why.contains("cannot resolve \"gone.test\""), "{why}");
    }

    #[test]
    fn names_are_told_from_addresses() {
        for (s, ok) in [
            ("api.internal", true),
            ("localhost", true),
            ("a-b.c", true),
            ("1.2.3", false),
            ("-a.b", false),
            ("a..b", false),
            ("a_b", false),
            ("", false),
        ] {
            assert_eq!(valid_name(s), ok, "{s}");
        }
    }

    fn named(keys: &str) -> crate::Config {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[upstreams]]\nname = \"api\"\n{keys}\n[[upstreams]]\nname = \"fixed\"\nendpoints = [\"localhost:7\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n"
        );
        crate::Config::parse(&text).unwrap()
    }

    #[test]
    fn a_name_is_resolved_at_load_and_named_for_host_and_sni() {
        let c =
            named("endpoints = [\"127.0.0.2:80\", { address = \"LocalHost:8080\", weight = 2 }]\nresolve = \"30s\"");
        let u = &c.upstreams[0];
        assert_eq!(u.resolve, Some(Duration::from_secs(30)));
        assert_eq!(c.resolve_interval(), Some(Duration::from_secs(30)));
        assert_eq!(u.entries[1], Entry { host: Host::Name("localhost".into(), 8080), weight: 2 });
        assert_eq!(u.endpoints[0], "127.0.0.2:80".parse().unwrap());
        assert!(u.endpoints[1..].iter().all(|a| a.ip().is_loopback() && a.port() == 8080), "{:?}", u.endpoints);
        assert!(u.weights[1..].iter().all(|&w| w == 2));
        assert_eq!((u.endpoint_host(0), u.endpoint_host(1)), ("127.0.0.2:80".into(), "localhost:8080".into()));
        assert_eq!(named("endpoints = [\"127.0.0.2:80\"]").resolve_interval(), None);
    }

    #[test]
    fn resolving_again_changes_only_upstreams_with_resolve_and_keeps_addresses_on_failure() {
        let c = named("endpoints = [\"localhost:80\"]\nresolve = \"5s\"");
        // Loaded through the system's resolver; now "localhost" has the fake's two addresses.
        let two = |name: &str, port| match name {
            "localhost" => fake("two.test", port),
            _ => Err(std::io::Error::other("no such name")),
        };
        let (changed, failed) = c.resolve_again(&two);
        let changed = changed.expect("the addresses changed");
        assert!(failed.is_empty(), "{failed:?}");
        let want: Vec<SocketAddr> = ["10.0.0.1:80", "10.0.0.2:80"].map(|a| a.parse().unwrap()).into();
        assert_eq!(changed.upstreams[0].endpoints, want);
        assert_eq!(changed.upstreams[1].endpoints, c.upstreams[1].endpoints, "no resolve: not looked up again");
        // The same answer again: nothing to reload.
        assert!(changed.resolve_again(&two).0.is_none());
        // A failure keeps what the upstream had, and says which entry failed.
        let (again, failed) = changed.resolve_again(&fake);
        assert!(again.is_none());
        assert_eq!(failed.len(), 1);
        assert!(failed[0].starts_with("upstreams[0].endpoints[0] (api): cannot resolve"), "{failed:?}");
    }
}
