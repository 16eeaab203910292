//! TLS for `https://` targets, with rustls: the client configuration (the authorities of
//! `--cacert`, else the Mozilla roots; the certificate is always verified, for the URL's
//! host) and one connection's session over a monoio socket: the handshake, which belongs
//! to the connect (as wrk's does, so that it is not part of the first request's latency),
//! sealed requests and opened responses. The HTTP is `client`'s.

use std::io::{self, Read as _, Write as _};
use std::sync::Arc;

use bytes::BytesMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// Ciphertext read at a time: one whole record (16 KiB of plaintext and its overhead).
const RECORD_ROOM: usize = 16 * 1024 + 2048;

/// What every connection to one `https://` target shares.
#[derive(Clone)]
pub struct Target {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({:?})", self.name)
    }
}

impl Target {
    /// The configuration for `host` (a name or an IP address, as the URL has it), trusting
    /// the certificates in the PEM file `cacert`, or the Mozilla roots without one.
    pub fn new(host: &str, cacert: Option<&str>) -> Result<Target, String> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name =
            ServerName::try_from(host.to_string()).map_err(|e| format!("--url: {host:?} is no server name: {e}"))?;
        let mut roots = RootCertStore::empty();
        match cacert {
            Some(path) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect())
                    .map_err(|e| format!("--cacert {path:?}: {e}"))?;
                if certs.is_empty() {
                    return Err(format!("--cacert {path:?}: no certificate in it"));
                }
                for c in certs {
                    roots.add(c).map_err(|e| format!("--cacert {path:?}: {e}"))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Target { config: Arc::new(config), name })
    }

    /// Runs the handshake on a connected socket. Errors: the socket's, or rustls' refusal
    /// (an unknown authority, a name the certificate does not cover) as `InvalidData`.
    pub async fn handshake(&self, stream: &mut TcpStream) -> io::Result<Session> {
        let conn = ClientConnection::new(self.config.clone(), self.name.clone()).map_err(io::Error::other)?;
        let mut s = Session { conn, inbuf: Vec::with_capacity(RECORD_ROOM), fed: 0, out: Vec::new() };
        loop {
            s.feed()?;
            s.flush(stream).await?;
            if !s.conn.is_handshaking() {
                return Ok(s);
            }
            if s.read_more(stream).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed in the TLS handshake"));
            }
        }
    }
}

/// One connection's TLS state, and its buffers (reused from request to request).
pub struct Session {
    conn: ClientConnection,
    /// Ciphertext read from the socket; rustls has taken the first `fed` bytes.
    inbuf: Vec<u8>,
    fed: usize,
    /// Ciphertext to write.
    out: Vec<u8>,
}

impl Session {
    /// What the handshake agreed on, as the report counts it: the protocol version and
    /// the cipher suite ("TLSv1.3 TLS13_AES_256_GCM_SHA384").
    pub fn negotiated(&self) -> String {
        let version = match self.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            other => format!("{other:?}"),
        };
        match self.conn.negotiated_cipher_suite() {
            Some(suite) => format!("{version} {:?}", suite.suite()),
            None => version,
        }
    }

    /// Whether the handshake resumed an earlier session (no certificate sent).
    pub fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// Seals `plain` and writes it.
    pub async fn write_all(&mut self, stream: &mut TcpStream, plain: &[u8]) -> io::Result<()> {
        self.conn.writer().write_all(plain)?;
        self.flush(stream).await
    }

    /// Appends decrypted bytes to `buf`, reading ciphertext as needed; 0: the server
    /// closed (close_notify, or the end of the stream).
    pub async fn read(&mut self, stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            let state = self.feed()?;
            let pending = state.plaintext_bytes_to_read();
            if pending > 0 {
                let start = buf.len();
                buf.resize(start + pending, 0);
                let n = self.conn.reader().read(&mut buf[start..])?;
                buf.truncate(start + n);
                return Ok(n);
            }
            if state.peer_has_closed() {
                return Ok(0);
            }
            // Alerts and key updates rustls answers.
            self.flush(stream).await?;
            if self.read_more(stream).await? == 0 {
                return Ok(0);
            }
        }
    }

    /// Gives rustls the ciphertext it has not taken, until it holds plaintext or the
    /// bytes run out (it refuses more while its plaintext buffer is full).
    fn feed(&mut self) -> io::Result<rustls::IoState> {
        loop {
            let state = self.conn.process_new_packets().map_err(invalid)?;
            if self.fed == self.inbuf.len() || state.plaintext_bytes_to_read() > 0 {
                return Ok(state);
            }
            let mut rd = &self.inbuf[self.fed..];
            self.fed += self.conn.read_tls(&mut rd)?;
        }
    }

    /// Reads more ciphertext once rustls has taken all there was; returns how much (0:
    /// the end of the stream).
    async fn read_more(&mut self, stream: &mut TcpStream) -> io::Result<usize> {
        debug_assert_eq!(self.fed, self.inbuf.len());
        let mut inbuf = std::mem::take(&mut self.inbuf);
        inbuf.clear();
        self.fed = 0;
        let (res, b) = stream.read(inbuf).await;
        self.inbuf = b;
        res
    }

    /// Writes what rustls has sealed.
    async fn flush(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        if !self.conn.wants_write() {
            return Ok(());
        }
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut out)?;
        }
        let (res, out) = stream.write_all(out).await;
        self.out = out;
        res.map(|_| ())
    }
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}
