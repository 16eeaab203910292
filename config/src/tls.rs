//! The `[tls]` section: the addresses that accept TLS connections and the certificates
//! served there, read from their PEM files and checked for shape (a certificate chain, one
//! private key, valid server names, a DER OCSP response), and what client certificates must
//! chain to, with their revocation lists. Whether a key suits its certificate and the crypto
//! provider is the engine's check, at startup, since it needs the provider.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::raw::{RawTls, RawUpstreamTls};
use crate::validate::Checker;

/// TLS termination: empty `listen` means none.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub listen: Vec<std::net::SocketAddr>,
    /// The first is also served to clients that send no server name (SNI) or one that no
    /// certificate lists, as nginx's default server does.
    pub certificates: Vec<Certificate>,
    /// Client certificates (mTLS), when `client_ca_file` is set.
    pub client_auth: Option<ClientAuth>,
    /// The oldest protocol version a client may speak.
    pub min_version: TlsVersion,
    /// The cipher suites spoken, by IANA name (one of [`CIPHER_SUITES`]), most preferred
    /// first; empty: rustls' defaults.
    pub cipher_suites: Vec<String>,
    /// The handshake follows `cipher_suites`' order, not the client's.
    pub prefer_server_ciphers: bool,
    /// How sessions are resumed.
    pub session_tickets: crate::SessionTickets,
}

/// The cipher suites coregate can speak (rustls with the ring provider; its defaults are all
/// of them): TLS 1.3's, then TLS 1.2's. None is weak; choosing among them is for policies
/// that name suites (AES only, say), or to prefer ChaCha20 for clients without AES
/// instructions.
pub const CIPHER_SUITES: [&str; 9] = [
    "TLS13_AES_256_GCM_SHA384",
    "TLS13_AES_128_GCM_SHA256",
    "TLS13_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// The protocol version a suite of [`CIPHER_SUITES`] belongs to, as nginx's `$ssl_protocol`
/// names it.
pub fn suite_protocol(suite: &str) -> &'static str {
    if suite.starts_with("TLS13_") {
        "TLSv1.3"
    } else {
        "TLSv1.2"
    }
}

/// A `cipher_suites` key: names from [`CIPHER_SUITES`], each once, leaving a suite for
/// TLS 1.3 when that is the oldest version allowed.
fn cipher_suites(c: &mut Checker, path: &str, names: &[String], min_version: TlsVersion) -> Vec<String> {
    let mut seen: Vec<String> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        if !CIPHER_SUITES.contains(&name.as_str()) {
            c.err(
                format!("{path}[{i}]"),
                format!("{name:?} is not a cipher suite coregate speaks: {}", CIPHER_SUITES.join(", ")),
            );
        } else if seen.contains(name) {
            c.err(format!("{path}[{i}]"), format!("{name:?} is listed twice"));
        } else {
            seen.push(name.clone());
        }
    }
    if min_version == TlsVersion::V1_3 && !seen.is_empty() && !seen.iter().any(|n| suite_protocol(n) == "TLSv1.3") {
        c.err(path, "names no TLS 1.3 suite, and min_version is \"1.3\": no handshake could succeed");
    }
    seen
}

/// TLS versions coregate speaks (rustls has no older ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    #[default]
    V1_2,
    V1_3,
}

/// Which client certificates the TLS listeners ask for and accept.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// The authorities a client certificate must chain to.
    pub roots: Vec<CertificateDer<'static>>,
    /// A client without a certificate is let in too (routes see no certificate then);
    /// one with a certificate that does not verify is still refused.
    pub optional: bool,
    /// Revocation lists: with any, a client certificate must be covered by one from its
    /// issuer and not be listed there.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// What the upstream learns of the certificate.
    pub details: CertDetails,
}

/// What `X-Forwarded-Client-Cert` carries beside the certificate's hash (Envoy's
/// `set_current_client_cert_details`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CertDetails {
    /// The subject's distinguished name, RFC 4514 text.
    pub subject: bool,
    /// Each URI alternative name (a SPIFFE ID, say).
    pub uri: bool,
    /// Each DNS alternative name.
    pub dns: bool,
}

impl CertDetails {
    pub fn any(self) -> bool {
        self.subject || self.uri || self.dns
    }
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
    /// An OCSP response (DER) stapled to every handshake that serves this certificate and
    /// whose client asks for one (RFC 6066 8, RFC 8446 4.4.2.1).
    pub ocsp: Option<Vec<u8>>,
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
    // A name may be served by several certificates whose keys differ in kind (ECDSA and
    // RSA); the engine checks the kinds, which needs the crypto provider.
    let mut certificates = Vec::new();
    for (i, rc) in raw.certificates.iter().enumerate() {
        let path = format!("tls.certificates[{i}]");
        let mut server_names: Vec<String> = Vec::new();
        for (j, name) in rc.server_names.iter().enumerate() {
            let p = format!("{path}.server_names[{j}]");
            match server_name(name) {
                Some(n) if server_names.contains(&n) => c.err(p, format!("{name:?} is listed twice")),
                Some(n) => server_names.push(n),
                None => c.err(p, format!("{name:?} is not a host name or a *.suffix wildcard")),
            }
        }
        if let Some((chain, key, cert_file)) = cert_and_key(c, &path, rc.cert_file.as_deref(), rc.key_file.as_deref()) {
            let ocsp = rc
                .ocsp_file
                .as_deref()
                .and_then(|f| read_ocsp(&c.file(f)).map_err(|e| c.err(format!("{path}.ocsp_file"), e)).ok());
            certificates.push(Certificate { chain, key, server_names, cert_file, ocsp });
        }
    }
    let client_auth = match (&raw.client_ca_file, raw.client_auth.as_deref()) {
        (None, None) => None,
        (None, Some(_)) => {
            c.err("tls.client_auth", "needs tls.client_ca_file: the authorities client certificates chain to");
            None
        }
        (Some(f), mode) => {
            let optional = match mode {
                None | Some("required") => false,
                Some("optional") => true,
                Some(other) => {
                    c.err("tls.client_auth", format!("{other:?} is not \"required\" or \"optional\""));
                    false
                }
            };
            let roots = read_chain(&c.file(f)).map_err(|e| c.err("tls.client_ca_file", e)).ok();
            let crls = match &raw.client_crl_file {
                None => Some(Vec::new()),
                Some(f) => read_crls(&c.file(f)).map_err(|e| c.err("tls.client_crl_file", e)).ok(),
            };
            let details = cert_details(c, &raw.client_cert_details);
            roots.zip(crls).map(|(roots, crls)| ClientAuth { roots, optional, crls, details })
        }
    };
    for (key, set) in [
        ("tls.client_crl_file", raw.client_crl_file.is_some()),
        ("tls.client_cert_details", !raw.client_cert_details.is_empty()),
    ] {
        if set && raw.client_ca_file.is_none() {
            c.err(key, "needs tls.client_ca_file: no client certificates are asked for");
        }
    }
    if client_auth.is_some() && raw.listen.is_empty() {
        c.err("tls.client_ca_file", "client certificates need a TLS listen address (tls.listen)");
    }
    let min_version = tls_version(c, "tls.min_version", raw.min_version.as_deref());
    let cipher_suites = cipher_suites(c, "tls.cipher_suites", &raw.cipher_suites, min_version);
    let prefer_server_ciphers = raw.prefer_server_ciphers.unwrap_or(false);
    if prefer_server_ciphers && cipher_suites.is_empty() {
        c.err("tls.prefer_server_ciphers", "needs tls.cipher_suites: the order to prefer");
    }
    let session_tickets = crate::tickets::build(c, raw.session_tickets, &raw.session_ticket_keys);
    Tls { listen, certificates, client_auth, min_version, cipher_suites, prefer_server_ciphers, session_tickets }
}

/// A `min_version` key: `"1.2"` (also when absent) or `"1.3"`.
fn tls_version(c: &mut Checker, path: &str, raw: Option<&str>) -> TlsVersion {
    match raw {
        None | Some("1.2") => TlsVersion::V1_2,
        Some("1.3") => TlsVersion::V1_3,
        Some(other) => {
            c.err(path, format!("{other:?} is not \"1.2\" or \"1.3\" (the versions coregate speaks)"));
            TlsVersion::V1_2
        }
    }
}

/// A certificate chain and its key, from the PEM files at `{path}.cert_file` and
/// `{path}.key_file` (both required), with the chain's file for messages.
type Loaded = (Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>, String);

fn cert_and_key(c: &mut Checker, path: &str, cert_file: Option<&str>, key_file: Option<&str>) -> Option<Loaded> {
    let chain = match cert_file {
        None => {
            c.err(format!("{path}.cert_file"), "missing certificate file");
            None
        }
        Some(f) => read_chain(&c.file(f)).map_err(|e| c.err(format!("{path}.cert_file"), e)).ok(),
    };
    let key = match key_file {
        None => {
            c.err(format!("{path}.key_file"), "missing private key file");
            None
        }
        Some(f) => PrivateKeyDer::from_pem_file(c.file(f))
            .map_err(|e| c.err(format!("{path}.key_file"), format!("cannot load a private key from {f:?}: {e}")))
            .ok(),
    };
    let cert_file = cert_file.map(|f| c.file(f).display().to_string()).unwrap_or_default();
    Some((chain?, Arc::new(key?), cert_file))
}

/// TLS from coregate to an upstream's endpoints (`upstreams[].tls`).
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Sent as SNI and matched against the certificate; `None`: the endpoint's IP address
    /// is matched (and no SNI is sent, RFC 6066 3 allows only host names there).
    pub server_name: Option<String>,
    /// The certificate authorities trusted; `None`: the Mozilla roots built into coregate.
    pub roots: Option<Vec<CertificateDer<'static>>>,
    /// `false`: any certificate is accepted (the handshake's signatures are still checked).
    pub verify: bool,
    /// Presented when the upstream asks for a client certificate (mTLS); no server names.
    pub client_cert: Option<Certificate>,
    /// The oldest protocol version spoken to the upstream.
    pub min_version: TlsVersion,
    /// The cipher suites offered, most preferred first; empty: rustls' defaults.
    pub cipher_suites: Vec<String>,
    /// SHA-256 hashes of the public keys (DER SubjectPublicKeyInfo) the upstream's own
    /// certificate may carry; empty: any key.
    pub pins: Vec<[u8; 32]>,
    /// Revocation lists for the upstream's certificate; empty: none checked.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
}

pub(crate) fn build_upstream_tls(c: &mut Checker, path: &str, raw: &RawUpstreamTls) -> UpstreamTls {
    let server_name = raw.server_name.as_ref().and_then(|name| {
        let ip = name.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_string());
        let host = server_name(name).filter(|n| !n.starts_with("*."));
        let valid = ip.or(host);
        if valid.is_none() {
            c.err(format!("{path}.server_name"), format!("{name:?} is not a host name or an IP address"));
        }
        valid
    });
    let verify = raw.verify.unwrap_or(true);
    let roots = raw.ca_file.as_ref().and_then(|f| {
        if !verify {
            c.err(format!("{path}.ca_file"), "is not used with verify = false: remove one of them");
            return None;
        }
        read_chain(&c.file(f)).map_err(|e| c.err(format!("{path}.ca_file"), e)).ok()
    });
    let client_cert = (raw.cert_file.is_some() || raw.key_file.is_some())
        .then(|| cert_and_key(c, path, raw.cert_file.as_deref(), raw.key_file.as_deref()))
        .flatten()
        .map(|(chain, key, cert_file)| Certificate { chain, key, server_names: Vec::new(), cert_file, ocsp: None });
    let min_version = tls_version(c, &format!("{path}.min_version"), raw.min_version.as_deref());
    let cipher_suites = cipher_suites(c, &format!("{path}.cipher_suites"), &raw.cipher_suites, min_version);
    let pins = pins(c, &format!("{path}.pin_sha256"), &raw.pin_sha256);
    let crls = raw.crl_file.as_ref().and_then(|f| {
        if !verify {
            c.err(format!("{path}.crl_file"), "is not used with verify = false: remove one of them");
            return None;
        }
        read_crls(&c.file(f)).map_err(|e| c.err(format!("{path}.crl_file"), e)).ok()
    });
    UpstreamTls {
        server_name,
        roots,
        verify,
        client_cert,
        min_version,
        cipher_suites,
        pins,
        crls: crls.unwrap_or_default(),
    }
}

/// A `pin_sha256` key: each value the base64 of a SHA-256 hash (32 bytes), as HPKP's
/// `pin-sha256` and curl's `--pinnedpubkey sha256//...` write them.
fn pins(c: &mut Checker, path: &str, raw: &[String]) -> Vec<[u8; 32]> {
    use base64::Engine as _;
    let how = "openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64";
    raw.iter()
        .enumerate()
        .filter_map(|(i, v)| {
            let decoded = base64::engine::general_purpose::STANDARD.decode(v.trim_start_matches("sha256//"));
            match decoded.ok().and_then(|d| <[u8; 32]>::try_from(d).ok()) {
                Some(pin) => Some(pin),
                None => {
                    c.err(format!("{path}[{i}]"), format!("{v:?} is not the base64 of a SHA-256 hash ({how})"));
                    None
                }
            }
        })
        .collect()
}

fn read_chain(file: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    read_pem(file, "certificates", "PEM certificate")
}

/// `tls.client_cert_details`: which of the certificate's names the upstream learns.
fn cert_details(c: &mut Checker, names: &[String]) -> CertDetails {
    let mut d = CertDetails::default();
    for (i, name) in names.iter().enumerate() {
        match name.as_str() {
            "subject" => d.subject = true,
            "uri" => d.uri = true,
            "dns" => d.dns = true,
            other => c.err(
                format!("tls.client_cert_details[{i}]"),
                format!("{other:?} is not \"subject\", \"uri\" or \"dns\""),
            ),
        }
    }
    d
}

/// Every certificate revocation list in a PEM file (`X509 CRL` blocks).
fn read_crls(file: &std::path::Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    read_pem(file, "revocation lists", "PEM revocation list (X509 CRL)")
}

/// An OCSP response as `openssl ocsp -respout` writes it: DER, one SEQUENCE. Its contents
/// (status, validity, which certificate it covers) are the client's to check.
fn read_ocsp(file: &std::path::Path) -> Result<Vec<u8>, String> {
    let der = std::fs::read(file).map_err(|e| format!("cannot read an OCSP response from {file:?}: {e}"))?;
    if der.len() < 2 || der[0] != 0x30 {
        return Err(format!("{file:?} is not a DER OCSP response"));
    }
    Ok(der)
}

/// Every PEM block of one kind in `file`, at least one; `plural` and `one` name the kind in
/// messages.
fn read_pem<T: PemObject>(file: &std::path::Path, plural: &str, one: &str) -> Result<Vec<T>, String> {
    let items = T::pem_file_iter(file)
        .and_then(|items| items.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot load {plural} from {file:?}: {e}"))?;
    if items.is_empty() {
        return Err(format!("{file:?} holds no {one}"));
    }
    Ok(items)
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
