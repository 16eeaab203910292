//! TLS from coregate to upstreams (`upstreams[].tls`): the rustls client configuration of
//! each such upstream, the name its endpoints are checked against, and the handshake on a
//! new upstream connection, run within `connect_timeout` before the connection is used.
//!
//! After the handshake the connection is an ordinary [`Conn`] whose reads return plaintext
//! and whose writes are sealed ([`crate::tls`] holds the per-connection state for both
//! directions). Left to others: when to connect and reuse (`proxy`, `pool`), the health
//! checks' own blocking client (`health`), and the configuration's checks (`config`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::io::Conn;
use crate::tls::Tls;

/// One upstream's TLS: its client configuration (shared by every worker; rustls keeps the
/// session tickets it was given there, so a new connection on any worker resumes) and the
/// configured server name.
#[derive(Debug)]
pub(crate) struct UpstreamTls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

/// Per upstream, in configuration order: `None` for plain-HTTP upstreams.
pub(crate) type Clients = Arc<Vec<Option<UpstreamTls>>>;

/// Builds the client side of every upstream with `tls`. Errors name the upstream, such as a
/// client key that does not fit its certificate or a CA file rustls cannot use.
pub(crate) fn clients(cfg: &config::Config) -> Result<Clients, String> {
    let built = cfg
        .upstreams
        .iter()
        .map(|u| u.tls.as_ref().map(|t| client(t).map_err(|e| format!("upstreams {:?} tls: {e}", u.name))).transpose());
    Ok(Arc::new(built.collect::<Result<_, _>>()?))
}

pub(crate) fn client(t: &config::UpstreamTls) -> Result<UpstreamTls, String> {
    let provider = crate::tls::provider(&t.cipher_suites);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(crate::tls::versions(t.min_version))
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = if t.verify {
        let mut roots = RootCertStore::empty();
        match &t.roots {
            Some(certs) => {
                for c in certs {
                    roots.add(c.clone()).map_err(|e| format!("ca_file: {e}"))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        // As for client certificates: the end entity is looked up in its issuer's list, and
        // a certificate whose issuer has no list in the file is refused.
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        let (webpki, file) = match t.crls.is_empty() {
            true => (webpki, "ca_file"),
            false => (webpki.with_crls(t.crls.iter().cloned()).only_check_end_entity_revocation(), "crl_file"),
        };
        webpki.build().map_err(|e| format!("{file}: {e}"))?
    } else {
        Arc::new(AnyCertificate(provider))
    };
    let verifier = match t.pins.is_empty() {
        true => verifier,
        false => Arc::new(Pinned { inner: verifier, pins: t.pins.clone() }),
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    let mut config = match &t.client_cert {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .map_err(|e| format!("client certificate {}: {e}", c.cert_file))?,
        None => builder.with_no_client_auth(),
    };
    // Only HTTP/1.1 is spoken upstream too (RFC 7301): a server that insists on h2 refuses.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name = match &t.server_name {
        Some(n) => Some(ServerName::try_from(n.clone()).map_err(|e| format!("server_name {n:?}: {e}"))?),
        None => None,
    };
    Ok(UpstreamTls { config: Arc::new(config), server_name })
}

impl UpstreamTls {
    /// A client connection to `addr`, whose certificate must carry the configured name, else
    /// the name the endpoint was resolved from (`host`), else the address (an IP-address
    /// name, sent without SNI).
    pub(crate) fn connection(&self, addr: SocketAddr, host: Option<&str>) -> std::io::Result<ClientConnection> {
        let name = match (&self.server_name, host) {
            (Some(n), _) => n.clone(),
            (None, Some(h)) => ServerName::try_from(h.to_string()).map_err(std::io::Error::other)?,
            (None, None) => ServerName::IpAddress(addr.ip().into()),
        };
        ClientConnection::new(self.config.clone(), name).map_err(std::io::Error::other)
    }
}

impl Conn {
    /// Runs the client handshake on a new upstream connection to `addr` until `deadline`.
    /// Afterwards the connection reads plaintext and seals its writes. Errors are the
    /// socket's, or rustls' refusal (an untrusted certificate, a name that does not match)
    /// as `InvalidData`, after the alert it queued was sent.
    pub(crate) async fn tls_connect(
        &mut self,
        up: &UpstreamTls,
        addr: SocketAddr,
        host: Option<&str>,
        deadline: Instant,
    ) -> std::io::Result<()> {
        self.tls = Some(Tls::client(up.connection(addr, host)?));
        self.tls_handshake(deadline).await
    }
}

/// Key pinning (`pin_sha256`, Envoy's `verify_certificate_spki`): the upstream's own
/// certificate must carry one of the pinned public keys, on top of what `inner` checks
/// (everything, or with `verify = false` only the handshake's signatures). Pinning the key
/// rather than the certificate survives a renewal that keeps the key.
#[derive(Debug)]
struct Pinned {
    inner: Arc<dyn ServerCertVerifier>,
    pins: Vec<[u8; 32]>,
}

impl Pinned {
    /// Whether `cert`'s SubjectPublicKeyInfo hashes to a pin.
    fn pinned(&self, cert: &CertificateDer<'_>) -> bool {
        use sha2::Digest as _;
        use x509_cert::der::{Decode as _, Encode as _};
        let spki =
            x509_cert::Certificate::from_der(cert).and_then(|c| c.tbs_certificate.subject_public_key_info.to_der());
        spki.is_ok_and(|der| self.pins.contains(&<[u8; 32]>::from(sha2::Sha256::digest(der))))
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.pinned(end_entity) {
            return Err(rustls::Error::General("the certificate's public key is not pinned (pin_sha256)".into()));
        }
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any certificate (`verify = false`), as nginx's `proxy_ssl_verify off` does; the
/// signatures of the handshake are still checked, so the peer holds the key of the
/// certificate it sent.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
