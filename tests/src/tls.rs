//! TLS for the end-to-end tests: self-signed certificates written to a temporary directory
//! for the gateway's `[tls]` section and `upstreams[].tls`, a blocking rustls client that
//! trusts exactly the certificates a test gives it, and an HTTPS upstream.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use crate::{read_message, Framing, Message, IO_TIMEOUT};

/// A self-signed certificate for some names, with its PEM files on disk.
pub struct TestCert {
    pub der: CertificateDer<'static>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCert {
    /// Makes a certificate for `names` and writes `cert.pem` and `key.pem` into a fresh
    /// directory under the system's temporary directory.
    pub fn new(names: &[&str]) -> TestCert {
        let made = rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("a self-signed certificate");
        Self::write(&made.cert, &made.key_pair)
    }

    /// As [`TestCert::new`], with an RSA key (the JWT tests' fixture key; rcgen cannot make
    /// RSA keys with ring).
    pub fn rsa(names: &[&str]) -> TestCert {
        let key = rcgen::KeyPair::from_pem(include_str!("../fixtures/rsa-private.pem")).expect("the RSA fixture");
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        Self::write(&params.self_signed(&key).expect("a self-signed RSA certificate"), &key)
    }

    /// Writes `cert` and `key` as `cert.pem` and `key.pem` into a fresh directory.
    fn write(cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> TestCert {
        let dir = fresh_dir();
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        TestCert { der: cert.der().clone(), cert_file, key_file }
    }

    /// A `[[tls.certificates]]` entry for this certificate serving `names`.
    pub fn toml_entry(&self, names: &[&str]) -> String {
        format!(
            "[[tls.certificates]]\ncert_file = {:?}\nkey_file = {:?}\nserver_names = {names:?}\n",
            self.cert_file.display().to_string(),
            self.key_file.display().to_string(),
        )
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        if let Some(dir) = self.cert_file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A new directory under the system's temporary directory, for one test's files.
fn fresh_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("coregate-tls-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A certificate authority that issues client certificates by serial number and revocation
/// lists naming some of them; `ca.cert_file` is its certificate, for `tls.client_ca_file`.
pub struct TestCa {
    pub ca: TestCert,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { ca: TestCert::write(&cert, &key), cert, key }
    }

    /// A client certificate for `client.test` with serial number `serial`.
    pub fn issue(&self, serial: u64) -> TestCert {
        self.issue_with(serial, |_| {})
    }

    /// As [`TestCa::issue`], with `edit` changing the certificate's parameters first.
    pub fn issue_with(&self, serial: u64, edit: impl FnOnce(&mut rcgen::CertificateParams)) -> TestCert {
        let mut params = rcgen::CertificateParams::new(vec!["client.test".to_string()]).unwrap();
        params.serial_number = Some(serial.into());
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        edit(&mut params);
        let key = rcgen::KeyPair::generate().unwrap();
        TestCert::write(&params.signed_by(&key, &self.cert, &self.key).unwrap(), &key)
    }

    /// Writes a revocation list naming `revoked` (serial numbers) next to the CA's
    /// certificate and returns its path.
    pub fn crl_file(&self, revoked: &[u64]) -> PathBuf {
        use rcgen::{date_time_ymd, CertificateRevocationListParams, KeyIdMethod, RevokedCertParams};
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(2099, 1, 1),
            crl_number: 1u64.into(),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: serial.into(),
                    revocation_time: date_time_ymd(2024, 6, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.cert, &self.key).unwrap();
        let file = self.ca.cert_file.with_file_name("crl.pem");
        std::fs::write(&file, crl.pem().unwrap()).unwrap();
        file
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A client configuration trusting only `roots`, offering `alpn`.
pub fn client_config(roots: &[&TestCert], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.der.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// As [`client_config`], presenting `cert` when the server asks for a client certificate.
pub fn client_config_with_cert(roots: &[&TestCert], cert: &TestCert) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.der.clone()).unwrap();
    }
    let key = PrivateKeyDer::from_pem_file(&cert.key_file).expect("the test key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_client_auth_cert(vec![cert.der.clone()], key)
        .expect("a client certificate");
    Arc::new(cfg)
}

/// A client configuration trusting `server`, speaking only `version`; what it returns beside
/// holds the OCSP response the server stapled to the last handshake (empty for none).
pub fn client_config_seeing_ocsp(
    server: &TestCert,
    version: &'static rustls::SupportedProtocolVersion,
) -> (Arc<ClientConfig>, Arc<std::sync::Mutex<Vec<u8>>>) {
    let mut store = RootCertStore::empty();
    store.add(server.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone()).build().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let verifier = Arc::new(SeesOcsp { inner, seen: seen.clone() });
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    (Arc::new(cfg), seen)
}

/// Verifies as WebPKI does, keeping the stapled OCSP response.
#[derive(Debug)]
struct SeesOcsp {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    seen: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl rustls::client::danger::ServerCertVerifier for SeesOcsp {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = ocsp_response.to_vec();
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// An HTTP/1.1 client over one TLS connection.
pub struct TlsClient {
    pub reader: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// Connects to `addr` as `server_name` with `cfg`; the handshake runs with the first
    /// write or read (see [`TlsClient::handshake`]).
    pub fn connect(addr: SocketAddr, server_name: &str, cfg: Arc<ClientConfig>) -> TlsClient {
        Self::after(addr, b"", server_name, cfg)
    }

    /// As [`TlsClient::connect`], sending `prefix` (a PROXY protocol header, say) and the
    /// ClientHello in one write, so that the gateway reads them together.
    pub fn after(addr: SocketAddr, prefix: &[u8], server_name: &str, cfg: Arc<ClientConfig>) -> TlsClient {
        let mut tcp = TcpStream::connect(addr).expect("connect to gateway");
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let name = ServerName::try_from(server_name.to_string()).expect("a server name");
        let mut conn = ClientConnection::new(cfg, name).expect("a client connection");
        if !prefix.is_empty() {
            let mut first = prefix.to_vec();
            conn.write_tls(&mut first).expect("the ClientHello");
            tcp.write_all(&first).expect("write to gateway");
        }
        TlsClient { reader: BufReader::new(StreamOwned::new(conn, tcp)) }
    }

    /// Completes the handshake now; the error is rustls' (or the socket's).
    pub fn handshake(&mut self) -> std::io::Result<()> {
        let s = self.reader.get_mut();
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(())
    }

    /// The negotiated ALPN protocol.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.reader.get_ref().conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    /// The handshake resumed an earlier session (a ticket from any worker).
    pub fn resumed(&self) -> bool {
        self.reader.get_ref().conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// The certificate the gateway presented.
    pub fn peer_cert(&self) -> CertificateDer<'static> {
        self.reader.get_ref().conn.peer_certificates().expect("a handshake")[0].clone()
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let s = self.reader.get_mut();
        s.write_all(bytes.as_ref()).expect("write to gateway");
        s.flush().expect("flush to gateway");
    }

    pub fn response(&mut self) -> Message {
        read_message(&mut self.reader, Framing::Response { head_request: false })
            .expect("read response")
            .expect("a response before EOF")
    }

    pub fn request(&mut self, raw: impl AsRef<[u8]>) -> Message {
        self.send(raw);
        self.response()
    }

    /// Sends close_notify.
    pub fn close_notify(&mut self) {
        let s = self.reader.get_mut();
        s.conn.send_close_notify();
        s.flush().expect("flush close_notify");
    }
}

/// A connection to a [`TlsUpstream`], as its handler sees it.
pub struct TlsUpConn {
    pub reader: BufReader<StreamOwned<ServerConnection, TcpStream>>,
    /// The connection's sequence number at this upstream (0-based).
    pub index: usize,
}

impl TlsUpConn {
    /// The next request; `None` at EOF, close_notify, or a broken handshake.
    pub fn read_request(&mut self) -> Option<Message> {
        read_message(&mut self.reader, Framing::Request).ok().flatten()
    }

    pub fn write(&mut self, bytes: impl AsRef<[u8]>) -> bool {
        let s = self.reader.get_mut();
        s.write_all(bytes.as_ref()).and_then(|()| s.flush()).is_ok()
    }

    /// Sends close_notify and closes the socket.
    pub fn close(mut self) {
        let s = self.reader.get_mut();
        s.conn.send_close_notify();
        let _ = s.flush();
        let _ = s.sock.shutdown(std::net::Shutdown::Both);
    }

    /// The client certificate the gateway presented, if any.
    pub fn client_cert(&self) -> Option<CertificateDer<'static>> {
        self.reader.get_ref().conn.peer_certificates().map(|c| c[0].clone())
    }
}

/// An HTTPS upstream on 127.0.0.1:0 serving `cert`, that runs `handler` on a thread per
/// accepted connection (after accepting it; the handshake runs with the first read). With
/// `client_ca`, it demands a client certificate issued by (here: equal to) that one.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

impl TlsUpstream {
    pub fn start(
        cert: &TestCert,
        client_ca: Option<&TestCert>,
        handler: impl Fn(TlsUpConn) + Send + Sync + 'static,
    ) -> TlsUpstream {
        Self::speaking(rustls::DEFAULT_VERSIONS, cert, client_ca, handler)
    }

    /// An echoing upstream that speaks only `versions`.
    pub fn echo_speaking(versions: &[&'static rustls::SupportedProtocolVersion], cert: &TestCert) -> TlsUpstream {
        Self::speaking(versions, cert, None, |mut c| {
            while let Some(req) = c.read_request() {
                if !c.write(crate::echo_response(&req)) {
                    return;
                }
            }
        })
    }

    fn speaking(
        versions: &[&'static rustls::SupportedProtocolVersion],
        cert: &TestCert,
        client_ca: Option<&TestCert>,
        handler: impl Fn(TlsUpConn) + Send + Sync + 'static,
    ) -> TlsUpstream {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions).unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.der.clone()).unwrap();
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let key = PrivateKeyDer::from_pem_file(&cert.key_file).expect("the test key");
        let cfg = Arc::new(builder.with_single_cert(vec![cert.der.clone()], key).expect("a server configuration"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let handler = Arc::new(handler);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let index = count.fetch_add(1, Ordering::SeqCst);
                stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let (handler, cfg) = (handler.clone(), cfg.clone());
                std::thread::spawn(move || {
                    let conn = ServerConnection::new(cfg).expect("a server connection");
                    handler(TlsUpConn { reader: BufReader::new(StreamOwned::new(conn, stream)), index });
                });
            }
        });
        TlsUpstream { addr, connections }
    }

    /// Answers every request as [`crate::Upstream::echo`] does.
    pub fn echo(cert: &TestCert, client_ca: Option<&TestCert>) -> TlsUpstream {
        TlsUpstream::start(cert, client_ca, |mut c| {
            while let Some(req) = c.read_request() {
                if !c.write(crate::echo_response(&req)) {
                    return;
                }
            }
        })
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}
