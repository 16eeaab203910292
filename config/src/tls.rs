//! The `[tls]` section: the addresses that accept TLS connections and the certificates
//! served there, read from their PEM files and checked for shape (a certificate chain, one
//! private key, valid server names). Whether a key suits its certificate and the crypto
//! provider is the engine's check, at startup, since it needs the provider.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::raw::RawTls;
use crate::validate::Checker;

/// TLS termination: empty `listen` means none.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub listen: Vec<std::net::SocketAddr>,
    /// The first is also served to clients that send no server name (SNI) or one that no
    /// certificate lists, as nginx's default server does.
    pub certificates: Vec<Certificate>,
}

/// One certificate chain, its key, and the names it is chosen for.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub chain: Vec<CertificateDer<'static>>,
    /// Shared because a private key is deliberately not `Clone`.
    pub key: Arc<PrivateKeyDer<'static>>,
    /// Lower-case names without a trailing dot; `*.example.com` matches one label.
    pub server_names: Vec<String>,
    /// Where the chain came from, for messages.
    pub cert_file: String,
}

pub(crate) fn build_tls(c: &mut Checker, raw: &RawTls) -> Tls {
    let listen =
        raw.listen.iter().enumerate().filter_map(|(i, a)| c.addr(&format!("tls.listen[{i}]"), a)).collect::<Vec<_>>();
    if !raw.listen.is_empty() && raw.certificates.is_empty() {
        c.err("tls.certificates", "tls.listen needs at least one [[tls.certificates]] entry");
    }
    if raw.listen.is_empty() && !raw.certificates.is_empty() {
        c.err("tls.listen", "certificates are configured but no TLS listen address is");
    }
    let mut seen: Vec<String> = Vec::new();
    let mut certificates = Vec::new();
    for (i, rc) in raw.certificates.iter().enumerate() {
        let path = format!("tls.certificates[{i}]");
        let mut server_names = Vec::new();
        for (j, name) in rc.server_names.iter().enumerate() {
            let p = format!("{path}.server_names[{j}]");
            match server_name(name) {
                Some(n) if seen.contains(&n) => c.err(p, format!("{name:?} is already served by another certificate")),
                Some(n) => {
                    seen.push(n.clone());
                    server_names.push(n);
                }
                None => c.err(p, format!("{name:?} is not a host name or a *.suffix wildcard")),
            }
        }
        let chain = match &rc.cert_file {
            None => {
                c.err(format!("{path}.cert_file"), "missing certificate file");
                None
            }
            Some(f) => read_chain(&c.file(f)).map_err(|e| c.err(format!("{path}.cert_file"), e)).ok(),
        };
        let key = match &rc.key_file {
            None => {
                c.err(format!("{path}.key_file"), "missing private key file");
                None
            }
            Some(f) => PrivateKeyDer::from_pem_file(c.file(f))
                .map_err(|e| c.err(format!("{path}.key_file"), format!("cannot load a private key from {f:?}: {e}")))
                .ok(),
        };
        if let (Some(chain), Some(key)) = (chain, key) {
            let cert_file = rc.cert_file.as_deref().map(|f| c.file(f).display().to_string()).unwrap_or_default();
            certificates.push(Certificate { chain, key: Arc::new(key), server_names, cert_file });
        }
    }
    Tls { listen, certificates }
}

fn read_chain(file: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot load certificates from {file:?}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{file:?} holds no PEM certificate"));
    }
    Ok(chain)
}

/// A server name as configured, normalised: lower case, no trailing dot; `*.` only as the
/// whole first label.
fn server_name(name: &str) -> Option<String> {
    let n = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let host = n.strip_prefix("*.").unwrap_or(&n);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (!host.is_empty() && host.len() <= 253 && host.split('.').all(label_ok)).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::server_name;

    #[test]
    fn server_names() {
        for (input, want) in [
            ("example.com", Some("example.com")),
            ("API.Example.com.", Some("api.example.com")),
            ("*.example.com", Some("*.example.com")),
            ("localhost", Some("localhost")),
            ("a.*.example.com", None),
            ("*", None),
            ("", None),
            ("exa mple.com", None),
            ("-bad.example.com", None),
            ("example..com", None),
        ] {
            assert_eq!(server_name(input).as_deref(), want, "{input:?}");
        }
    }
}
