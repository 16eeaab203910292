//! TLS termination of client connections (`[tls]` listeners) with rustls' sans-I/O API:
//! coregate's own sockets carry the ciphertext (owned buffers, both drivers, the same
//! timers), rustls turns it into the plaintext that [`Conn`](crate::io::Conn) hands to the
//! HTTP layer, and seals what is written back. The handshake runs inside the first reads of
//! the first request, under `timeouts.client_header`.
//!
//! Here: the rustls server configuration (certificates chosen by SNI with their stapled
//! OCSP responses, the oldest version allowed, client certificates checked against their
//! authorities and revocation lists, ALPN `http/1.1`, stateless session tickets that any
//! worker can open, their generated key kept across reloads, or keys from files:
//! `crate::tickets`), and the per-connection state, which connections to
//! HTTPS upstreams share. Left to others: when to read and write (`io`, `conn`, `tunnel`);
//! the client configuration for upstreams (`upstream_tls`).
//!
//! On io_uring, ciphertext is read through the connection's multishot receive
//! ([`crate::multishot`]), as a plain connection reads: against the readiness poll and
//! receive per read before, 0.941 of the CPU per request terminating TLS (paired median of
//! 20 alternating 2 s wrk runs, 18 lower) and 0.970 proxying to an HTTPS upstream (19 of 20
//! lower).

use std::future::Future;
use std::io::{self, Read as _, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf as _, BytesMut};
use monoio::buf::{IoBuf, IoBufMut as _};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, ServerConnection};
use rustls::sign::CertifiedKey;
use rustls::{ClientConnection, Connection};

use crate::io::Conn;

/// Ciphertext read from the socket at a time: one full TLS record (16 KiB of plaintext plus
/// its header and the largest expansion rustls accepts) fits.
pub(crate) const RECORD_ROOM: usize = 16 * 1024 + 2048;

/// Builds the configuration every worker's TLS connections share. Errors name the
/// certificate file whose key does not fit or is of a kind the provider cannot use.
pub(crate) fn server_config(tls: &config::Tls) -> Result<ServerConfig, String> {
    let provider = provider(&tls.cipher_suites);
    let mut certs = Vec::with_capacity(tls.certificates.len());
    for c in &tls.certificates {
        let mut key = CertifiedKey::from_der(c.chain.clone(), c.key.clone_key(), &provider)
            .map_err(|e| format!("tls certificate {}: {e}", c.cert_file))?;
        key.ocsp = c.ocsp.clone();
        certs.push((c.server_names.clone(), Arc::new(key)));
    }
    distinct_kinds(&certs, &tls.certificates.iter().map(|c| c.cert_file.as_str()).collect::<Vec<_>>())?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(tls.min_version))
        .map_err(|e| format!("tls: {e}"))?;
    let builder = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in &auth.roots {
                roots.add(c.clone()).map_err(|e| format!("tls.client_ca_file: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth.optional { verifier.allow_unauthenticated() } else { verifier };
            // Only the client's own certificate is looked up in the lists (nginx's `ssl_crl`
            // checks the whole chain, but lists for intermediates are rarely published); a
            // certificate whose issuer has no list there is refused, as OpenSSL does.
            let verifier = if auth.crls.is_empty() {
                verifier
            } else {
                verifier.with_crls(auth.crls.iter().cloned()).only_check_end_entity_revocation()
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("tls.client_ca_file: {e}"))?)
        }
    };
    let mut cfg = builder.with_cert_resolver(Arc::new(BySni { certs }));
    // Only HTTP/1.1 is spoken: a client that offers ALPN without it is refused in the
    // handshake (RFC 7301 3.2), one that offers h2 and http/1.1 gets http/1.1.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    // nginx's `ssl_prefer_server_ciphers`.
    cfg.ignore_client_order = tls.prefer_server_ciphers;
    // Stateless tickets: a client resumes on whichever worker its next connection lands
    // (SO_REUSEPORT spreads them), where a per-process session cache would need a lock
    // shared by every core. Without tickets there is no session cache either.
    match &tls.session_tickets {
        config::SessionTickets::Generated => {
            cfg.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| format!("tls: {e}"))?;
        }
        config::SessionTickets::Keys(keys) => cfg.ticketer = Arc::new(crate::tickets::Sealer::new(keys)),
        config::SessionTickets::Off => {
            cfg.send_tls13_tickets = 0;
            cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        }
    }
    Ok(cfg)
}

/// The ring provider with the cipher suites `names` (IANA names, checked by the config
/// crate against the same list), in that order; all of its own without any.
pub(crate) fn provider(names: &[String]) -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !names.is_empty() {
        let all = std::mem::take(&mut provider.cipher_suites);
        provider.cipher_suites =
            names.iter().filter_map(|n| all.iter().find(|s| s.suite().as_str() == Some(n.as_str())).copied()).collect();
    }
    Arc::new(provider)
}

/// The versions spoken from `oldest` on, to clients and to upstreams.
pub(crate) fn versions(oldest: config::TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    const TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    match oldest {
        config::TlsVersion::V1_2 => rustls::DEFAULT_VERSIONS,
        config::TlsVersion::V1_3 => TLS13_ONLY,
    }
}

/// `cfg` with the session-ticket key of `running` (the configuration a reload replaces),
/// so that clients resume across the reload; for generated keys only (key files are read
/// again by a reload, which is how they rotate).
pub(crate) fn successor(running: &ServerConfig, mut cfg: ServerConfig) -> ServerConfig {
    cfg.ticketer = running.ticketer.clone();
    cfg
}

/// Chooses a certificate by the client's server name: an exact name, then a `*.suffix`
/// covering one label, else the first certificate (also for clients that send no name).
/// Where several certificates serve the name (an ECDSA and an RSA one, as nginx serves
/// with two `ssl_certificate` lines; for the default, those listing the first one's names),
/// the first whose key can sign with a scheme the client offers; the first of them when
/// none can, whose handshake then fails.
#[derive(Debug)]
struct BySni {
    certs: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl BySni {
    /// The first of `candidates` whose key can sign with one of the client's `schemes`,
    /// else the first. A lone candidate (the common case) is taken without asking its key.
    fn pick<'a>(
        mut candidates: impl Iterator<Item = &'a (Vec<String>, Arc<CertifiedKey>)> + Clone,
        schemes: &[rustls::SignatureScheme],
    ) -> Option<&'a Arc<CertifiedKey>> {
        let (_, first) = candidates.clone().next()?;
        if candidates.clone().nth(1).is_none() {
            return Some(first);
        }
        candidates.find(|(_, k)| k.key.choose_scheme(schemes).is_some()).map(|(_, k)| k).or(Some(first))
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        let serving = |name: &str| {
            let name = name.to_string();
            self.certs.iter().filter(move |(names, _)| names.contains(&name))
        };
        let chosen = hello.server_name().and_then(|name| {
            let name = name.to_ascii_lowercase();
            let wildcard = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
            Self::pick(serving(&name), schemes).or_else(|| Self::pick(serving(wildcard.as_deref()?), schemes))
        });
        // The default: the first certificate and those listing the same names.
        let first = &self.certs.first()?.0;
        chosen.or_else(|| Self::pick(self.certs.iter().filter(|(names, _)| names == first), schemes)).cloned()
    }
}

/// Refuses two certificates that serve a name (or are both defaults, listing none) with
/// keys of the same kind: the second could never be chosen.
fn distinct_kinds(certs: &[(Vec<String>, Arc<CertifiedKey>)], files: &[&str]) -> Result<(), String> {
    for (i, (names, key)) in certs.iter().enumerate() {
        for (j, (earlier, other)) in certs[..i].iter().enumerate() {
            let shared = names.iter().find(|n| earlier.contains(n)).map(|n| format!("{n:?}"));
            let shared = shared.or_else(|| (names.is_empty() && earlier.is_empty()).then(|| "no names".to_string()));
            if let (Some(what), true) = (shared, key.key.algorithm() == other.key.algorithm()) {
                return Err(format!(
                    "tls certificate {}: serves {what} with a key of the kind {} has ({:?}): certificates \
                     may share names only with keys of different kinds (an ECDSA and an RSA one)",
                    files[i],
                    files[j],
                    key.key.algorithm(),
                ));
            }
        }
    }
    Ok(())
}

/// The cause of the error that ends a TLS connection whose client spoke plain HTTP: the
/// connection has left TLS, and the request reader answers 400.
#[derive(Debug)]
pub(crate) struct PlainHttpOnTls;

impl PlainHttpOnTls {
    pub(crate) const DETAIL: &'static str = "plain HTTP request sent to a TLS port";

    /// Whether `e` ends a connection for this.
    pub(crate) fn caused(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<PlainHttpOnTls>())
    }
}

impl std::fmt::Display for PlainHttpOnTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(Self::DETAIL)
    }
}

impl std::error::Error for PlainHttpOnTls {}

/// What feeding ciphertext found wrong.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The first bytes were not a TLS record but look like an HTTP request.
    PlainHttp,
    /// rustls refused the bytes; the alert it queued is in [`Tls::sealed`].
    Tls(rustls::Error),
}

/// One connection's TLS state: a client's (coregate the server) or an upstream's
/// (coregate the client, [`crate::upstream_tls`]).
pub(crate) struct Tls {
    conn: Connection,
    /// Ciphertext read from the socket and not yet given to rustls (it takes at most one
    /// record's worth of plaintext ahead of the reader).
    pub inbuf: BytesMut,
    /// Ciphertext to write; reused between writes.
    out: Vec<u8>,
    /// Decrypted bytes not yet taken.
    pending: usize,
    /// The client sent close_notify, or the socket reached EOF.
    closed: bool,
    /// Any bytes were fed: the plain-HTTP check looks at the first only.
    started: bool,
    /// The handshake was still under way at the last read.
    handshaking: bool,
    /// The client certificate's `X-Forwarded-Client-Cert` value, made at its first use.
    client_cert: std::cell::OnceCell<Option<std::rc::Rc<[u8]>>>,
}

impl Tls {
    /// The state of a client connection accepted on a `[tls]` listener.
    pub(crate) fn server(cfg: Arc<ServerConfig>) -> io::Result<Box<Tls>> {
        let conn = ServerConnection::new(cfg).map_err(io::Error::other)?;
        Ok(Tls::with(conn.into(), false))
    }

    /// The state of a connection to an HTTPS upstream, whose handshake
    /// ([`Conn::tls_handshake`]) is still to run. Its peer is no HTTP client: the
    /// plain-HTTP check is off.
    pub(crate) fn client(conn: ClientConnection) -> Box<Tls> {
        Tls::with(conn.into(), true)
    }

    fn with(conn: Connection, started: bool) -> Box<Tls> {
        Box::new(Tls {
            conn,
            inbuf: BytesMut::new(),
            out: Vec::new(),
            pending: 0,
            closed: false,
            started,
            handshaking: true,
            client_cert: std::cell::OnceCell::new(),
        })
    }

    /// The finished handshake's cipher suite (its index in [`config::CIPHER_SUITES`]) and
    /// whether it resumed a session; None while (or because) it has not finished.
    pub(crate) fn handshake_outcome(&self) -> Option<(usize, bool)> {
        if self.conn.is_handshaking() {
            return None;
        }
        let suite = self.conn.negotiated_cipher_suite()?.suite().as_str()?;
        let i = config::CIPHER_SUITES.iter().position(|s| *s == suite)?;
        Some((i, self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)))
    }

    /// Whether the peer presented a certificate (a client verified against
    /// `tls.client_ca_file`).
    pub(crate) fn has_client_cert(&self) -> bool {
        self.conn.peer_certificates().is_some_and(|chain| !chain.is_empty())
    }

    /// The `X-Forwarded-Client-Cert` value for the certificate the peer presented
    /// ([`crate::client_cert`]), made once per connection; None without one.
    pub(crate) fn client_cert_field(&self, details: config::CertDetails) -> Option<std::rc::Rc<[u8]>> {
        let field = self.client_cert.get_or_init(|| {
            let cert = self.conn.peer_certificates()?.first()?;
            Some(crate::client_cert::field_value(cert, details))
        });
        field.clone()
    }

    /// Decrypted bytes wait to be taken, or ciphertext already read waits to be decrypted:
    /// a wait for the socket's readability would not see either.
    pub(crate) fn has_buffered(&self) -> bool {
        self.pending > 0 || !self.inbuf.is_empty()
    }

    /// No more plaintext will come: close_notify or EOF.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Frees the buffers an idle connection does not need.
    pub(crate) fn shrink(&mut self) {
        if self.inbuf.is_empty() {
            self.inbuf = BytesMut::new();
        }
        self.out = Vec::new();
    }

    /// Gives rustls the ciphertext in `inbuf`, until it holds plaintext for the reader or
    /// the bytes run out.
    pub(crate) fn feed(&mut self) -> Result<(), Refused> {
        if !self.started && !self.inbuf.is_empty() {
            self.started = true;
            // A TLS record starts with its content type (22 for the ClientHello); a method
            // name starts with a letter.
            if self.inbuf[0].is_ascii_alphabetic() {
                return Err(Refused::PlainHttp);
            }
        }
        while !self.inbuf.is_empty() && self.pending == 0 {
            let mut rd = &self.inbuf[..];
            // Refuses more only while its plaintext buffer is full, which `pending == 0`
            // rules out.
            let n = self.conn.read_tls(&mut rd).map_err(|e| Refused::Tls(rustls::Error::General(e.to_string())))?;
            self.inbuf.advance(n);
            self.process()?;
        }
        Ok(())
    }

    /// The socket reached EOF: what rustls still holds may be taken, then the reader ends.
    pub(crate) fn eof(&mut self) -> Result<(), Refused> {
        let _ = self.conn.read_tls(&mut io::empty());
        self.process()?;
        self.closed = true;
        Ok(())
    }

    fn process(&mut self) -> Result<(), Refused> {
        match self.conn.process_new_packets() {
            Ok(state) => {
                self.pending = state.plaintext_bytes_to_read();
                self.closed |= state.peer_has_closed();
                Ok(())
            }
            Err(e) => Err(Refused::Tls(e)),
        }
    }

    /// Moves up to `room` decrypted bytes to the end of `buf`; returns how many.
    pub(crate) fn take_plaintext(&mut self, buf: &mut BytesMut, room: usize) -> usize {
        let start = buf.len();
        let want = room.min(self.pending);
        buf.resize(start + want, 0);
        let n = self.conn.reader().read(&mut buf[start..]).unwrap_or(0);
        buf.truncate(start + n);
        self.pending -= n;
        n
    }

    /// Ciphertext rustls wants sent (handshake flights, tickets, alerts), or None.
    pub(crate) fn sealed(&mut self) -> Option<Vec<u8>> {
        if !self.conn.wants_write() {
            return None;
        }
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        while self.conn.wants_write() {
            // Writing into a Vec cannot fail.
            let _ = self.conn.write_tls(&mut out);
        }
        Some(out)
    }

    /// Encrypts `plain` and returns the ciphertext to write (see [`Tls::recycle`]).
    pub(crate) fn seal(&mut self, mut plain: &[u8]) -> io::Result<Vec<u8>> {
        if self.conn.is_handshaking() {
            // Only error responses come here (a 408 for a handshake that timed out): no
            // answer can reach a client that has no keys yet.
            return Err(io::Error::other("the TLS handshake is not complete"));
        }
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        while !plain.is_empty() {
            let n = self.conn.writer().write(plain)?;
            if n == 0 {
                return Err(io::Error::other("TLS connection cannot take application data"));
            }
            plain = &plain[n..];
            while self.conn.wants_write() {
                let _ = self.conn.write_tls(&mut out);
            }
        }
        Ok(out)
    }

    /// Queues close_notify (the response side ends) and returns it sealed.
    pub(crate) fn close_notify(&mut self) -> Option<Vec<u8>> {
        if self.conn.is_handshaking() {
            return None;
        }
        self.conn.send_close_notify();
        self.sealed()
    }

    /// Takes back a buffer returned by [`Tls::seal`] or [`Tls::sealed`] once written.
    pub(crate) fn recycle(&mut self, out: Vec<u8>) {
        self.out = out;
    }
}

/// Bytes for the socket as TLS writes them: a type of its own, so that monoio's write
/// functions made for it are not those of the plain path's `Vec<u8>` writes. Sharing them
/// (`write_all::<Vec<u8>>`, or the `write` of its slices) stopped the compiler inlining
/// them into the plain path, which then copied each write's operation: +160 to +400
/// instructions per plain request (callgrind).
struct Sealed(Vec<u8>);

// SAFETY: the pointer and length are the Vec's: `len` initialised bytes at its pointer,
// which stays put while the Vec is not changed (it cannot be through this wrapper).
unsafe impl IoBuf for Sealed {
    fn read_ptr(&self) -> *const u8 {
        self.0.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.0.len()
    }
}

/// A TLS read or write, as [`Conn`]'s plain methods await it.
pub(crate) type Boxed<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + 'a>>;

/// The TLS side of [`Conn`]'s reads and writes.
impl Conn {
    /// [`Conn::fill_until`] on a TLS connection: decrypted bytes already there first, else
    /// ciphertext is read (and the handshake's own flights written) until some plaintext
    /// comes. Returns 0 once the client sent close_notify or closed the socket.
    pub(crate) async fn tls_fill_until(&mut self, room: usize, deadline: Instant) -> io::Result<usize> {
        loop {
            let tls = self.tls.as_deref_mut().expect("a TLS connection");
            if let Err(refused) = tls.feed() {
                return Err(self.refuse(refused, deadline).await);
            }
            let tls = self.tls.as_deref_mut().expect("a TLS connection");
            if tls.pending > 0 {
                let mut buf = self.read_buf(room);
                let tls = self.tls.as_deref_mut().expect("a TLS connection");
                let n = tls.take_plaintext(&mut buf, room);
                self.buf = buf;
                return Ok(n);
            }
            if tls.closed {
                return Ok(0);
            }
            let handshake_done = tls.handshaking && !tls.conn.is_handshaking();
            tls.handshaking = tls.conn.is_handshaking();
            if let Some(flight) = tls.sealed() {
                self.write_sealed(flight, deadline).await?;
            }
            let tls = self.tls.as_deref_mut().expect("a TLS connection");
            if handshake_done && tls.inbuf.is_empty() {
                // The client may take its time over the first request: wait for it without
                // a record-sized buffer (2,000 connections idle after their handshake: 17.6
                // KiB each with the buffer posted, nginx 14.6).
                tls.shrink();
                let timers = self.timers.clone();
                monoio::select! {
                    biased;
                    r = self.readable(false) => r?,
                    _ = timers.wait(deadline) => return Err(io::ErrorKind::TimedOut.into()),
                }
            }
            if self.read_ciphertext(deadline).await? == 0 {
                let tls = self.tls.as_deref_mut().expect("a TLS connection");
                if let Err(refused) = tls.eof() {
                    return Err(self.refuse(refused, deadline).await);
                }
            }
        }
    }

    /// Reads ciphertext after what `inbuf` holds; returns the number read (0: EOF). On
    /// io_uring through the connection's multishot receive ([`crate::multishot`]), as a
    /// plain connection reads. A pooled upstream connection without one has its first read
    /// posted while it idled, whose bytes are moved over.
    async fn read_ciphertext(&mut self, deadline: Instant) -> io::Result<usize> {
        if let Some(res) = self.read_ciphertext_multi(deadline).await {
            return res;
        }
        if let Some(res) = self.await_posted(deadline).await {
            let tls = self.tls.as_deref_mut().expect("a TLS connection");
            tls.inbuf.extend_from_slice(&self.buf);
            self.buf.clear();
            return res;
        }
        let tls = self.tls.as_deref_mut().expect("a TLS connection");
        let mut inbuf = std::mem::take(&mut tls.inbuf);
        inbuf.reserve(RECORD_ROOM);
        let (len, cap) = (inbuf.len(), inbuf.capacity());
        let (res, slice) = monoio::select! {
            biased;
            r = self.stream.read(inbuf.slice_mut(len..cap)) => r,
            _ = self.timers.wait(deadline) => return Err(io::ErrorKind::TimedOut.into()),
        };
        self.tls.as_deref_mut().expect("a TLS connection").inbuf = slice.into_inner();
        res
    }

    /// [`Conn::read_ciphertext`] through the multishot receive. `None`: the connection has
    /// none, or the kernel refused it (and it has none from now on).
    async fn read_ciphertext_multi(&mut self, deadline: Instant) -> Option<io::Result<usize>> {
        let Conn { stream, multi, tls, timers, .. } = self;
        let m = multi.as_mut()?;
        let inbuf = &mut tls.as_deref_mut().expect("a TLS connection").inbuf;
        inbuf.reserve(RECORD_ROOM);
        let r = monoio::select! {
            biased;
            r = crate::multishot::recv(stream, m, inbuf) => r,
            _ = timers.wait(deadline) => Err(io::ErrorKind::TimedOut.into()),
        };
        match r {
            Err(e) if crate::multishot::refused(&e) => {
                *multi = None;
                None
            }
            r => Some(r),
        }
    }

    /// Runs a client handshake ([`Tls::client`]) to its end: flights written, the server's
    /// read and checked. Errors: the socket's, EOF, or rustls' refusal (its alert sent).
    pub(crate) async fn tls_handshake(&mut self, deadline: Instant) -> io::Result<()> {
        loop {
            let tls = self.tls.as_deref_mut().expect("a TLS connection");
            if let Some(flight) = tls.sealed() {
                self.write_sealed(flight, deadline).await?;
            }
            let tls = self.tls.as_deref_mut().expect("a TLS connection");
            if !tls.conn.is_handshaking() {
                tls.handshaking = false;
                return Ok(());
            }
            if self.read_ciphertext(deadline).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed in the TLS handshake"));
            }
            let tls = self.tls.as_deref_mut().expect("a TLS connection");
            if let Err(refused) = tls.feed() {
                return Err(self.refuse(refused, deadline).await);
            }
        }
    }

    /// Ends a connection whose bytes rustls refused. A TLS error gets the alert rustls
    /// queued. A plain-HTTP request gets nothing here: the error returned carries
    /// [`PlainHttpOnTls`], which the request reader answers with a 400 in plain text (as
    /// nginx does), written as `[errors]` says, logged and counted like any other. Returns
    /// the error that ends the connection.
    async fn refuse(&mut self, refused: Refused, deadline: Instant) -> io::Error {
        let why = match refused {
            Refused::PlainHttp => io::Error::new(io::ErrorKind::InvalidData, PlainHttpOnTls),
            Refused::Tls(e) => {
                if let Some(alert) = self.tls.as_deref_mut().and_then(Tls::sealed) {
                    // Best effort: the connection closes either way.
                    let _ = self.write_sealed(alert, deadline).await;
                }
                io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
            }
        };
        // Nothing more goes out in TLS (no close_notify after the answer); an answer to a
        // plain-HTTP request goes out as it is.
        self.tls = None;
        why
    }

    /// [`Conn::tls_write`], boxed and out of line, so that the future of every plain
    /// [`Conn::write`] stays the size it has without TLS. With this, [`Sealed`] and the
    /// same for reads, the plain path went from 10,545 to 10,635 instructions per request
    /// (callgrind; 10,565 with only the `tls` field added to `Conn`).
    #[inline(never)]
    pub(crate) fn tls_write_boxed<'a, B: IoBuf + 'a>(&'a mut self, data: B, deadline: Instant) -> Boxed<'a, B> {
        Box::pin(self.tls_write(data, deadline))
    }

    /// [`Conn::tls_fill_until`], boxed and out of line, as [`Conn::tls_write_boxed`].
    #[inline(never)]
    pub(crate) fn tls_fill_boxed(&mut self, room: usize, deadline: Instant) -> Boxed<'_, usize> {
        Box::pin(self.tls_fill_until(room, deadline))
    }

    /// [`Conn::write`] on a TLS connection: `data` sealed and written.
    pub(crate) async fn tls_write<B: IoBuf>(&mut self, data: B, deadline: Instant) -> io::Result<B> {
        let tls = self.tls.as_deref_mut().expect("a TLS connection");
        // SAFETY: `IoBuf` promises `bytes_init` initialised bytes at `read_ptr` for as long
        // as the buffer lives and is not changed; `data` is held, unchanged, until this
        // slice is no longer used (it ends with `seal`).
        let plain = unsafe { std::slice::from_raw_parts(data.read_ptr(), data.bytes_init()) };
        let sealed = tls.seal(plain)?;
        self.write_sealed(sealed, deadline).await?;
        self.sent += data.bytes_init() as u64;
        Ok(data)
    }

    /// Writes ciphertext (or a plain answer) straight to the socket, then keeps the buffer.
    pub(crate) async fn write_sealed(&mut self, bytes: Vec<u8>, deadline: Instant) -> io::Result<()> {
        let (res, Sealed(bytes)) = monoio::select! {
            biased;
            r = self.stream.write_all(Sealed(bytes)) => r,
            _ = self.timers.wait(deadline) => return Err(io::ErrorKind::TimedOut.into()),
        };
        res?;
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.recycle(bytes);
        }
        Ok(())
    }

    /// Sends close_notify: the client learns that the response side ended cleanly.
    pub(crate) async fn tls_close_notify(&mut self, deadline: Instant) -> io::Result<()> {
        match self.tls.as_deref_mut().and_then(Tls::close_notify) {
            Some(alert) => self.write_sealed(alert, deadline).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::sync::Arc;
    use std::time::Duration;

    use monoio::net::TcpListener;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

    use super::Tls;
    use crate::io::testing::{fill, on_both_drivers, pair, poll_once};
    use crate::io::Conn;
    use crate::timers::CoarseTimers;

    /// Bounds every wait. `Conn`'s deadlines come from coarse timers that no task ticks
    /// here, so each wait is also bounded by a monoio timer.
    const WAIT: Duration = Duration::from_secs(10);

    /// Every suite the config crate accepts is one of the provider's, and all of them are
    /// named there: the two lists cannot drift apart unnoticed. Chosen suites keep their
    /// order; none chosen leaves the provider's own.
    #[test]
    fn the_cipher_suites_named_in_the_config_are_the_providers() {
        let name = |s: &rustls::SupportedCipherSuite| s.suite().as_str().unwrap().to_string();
        let all: Vec<String> = super::provider(&[]).cipher_suites.iter().map(name).collect();
        let mut known: Vec<String> = config::CIPHER_SUITES.iter().map(|s| s.to_string()).collect();
        let chosen = vec![known[2].clone(), known[0].clone()];
        assert_eq!(super::provider(&chosen).cipher_suites.iter().map(name).collect::<Vec<_>>(), chosen);
        known.sort();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(sorted, known);
    }

    /// A client connection and the server side of it, each with its TLS state (the server's
    /// certificate self-signed for `localhost`, and trusted by the client) and, on io_uring,
    /// a multishot receive. Neither has read anything.
    async fn tls_pair(timers: &Rc<CoarseTimers>) -> (Conn, Conn) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut client, peer) = pair(&listener, 0, timers).await;
        let mut server = Conn::new(peer, 0, timers.clone());
        let (server_cfg, client_cfg) = configs();
        server.tls = Some(Tls::server(server_cfg).unwrap());
        let name = ServerName::try_from("localhost").unwrap();
        client.tls = Some(Tls::client(ClientConnection::new(client_cfg, name).unwrap()));
        for conn in [&mut client, &mut server] {
            conn.multi = conn.stream.multishot();
        }
        (client, server)
    }

    /// A server configuration with a self-signed certificate for `localhost`, and a client
    /// one that trusts it.
    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![made.cert.der().clone()], key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(made.cert.der().clone()).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// Reads plaintext from `conn` until it holds `len` bytes, `room` at a time, giving up
    /// a wait for readability before each read (which arms a multishot receive).
    async fn read_len(conn: &mut Conn, len: usize, room: usize) {
        while conn.buf.len() < len {
            poll_once(conn.readable(true)).await;
            assert!(fill(conn, room).await > 0, "the end came early");
        }
    }

    /// A TLS connection reads its ciphertext through the multishot receive on io_uring, as
    /// a plain one does (and the usual way on epoll, which has none): the handshake, records
    /// longer than a ring buffer read in small pieces with waits given up in between, both
    /// directions, and close_notify as the end. A read that went past the receive would
    /// find its bytes already taken by it.
    #[test]
    fn tls_connections_read_through_the_multishot_receive() {
        on_both_drivers(|uring| async move {
            let timers = Rc::new(CoarseTimers::default());
            let (mut client, mut server) = tls_pair(&timers).await;
            for conn in [&mut client, &mut server] {
                poll_once(conn.readable(true)).await;
            }
            let up: Vec<u8> = (0..40_000).map(|i| (i % 251) as u8).collect();
            let down: Vec<u8> = up.iter().rev().copied().collect();
            let send = async {
                client.tls_handshake(timers.deadline(WAIT)).await.unwrap();
                client.write(up.clone(), WAIT).await.unwrap();
            };
            monoio::join!(send, read_len(&mut server, up.len(), 1000));
            assert_eq!(&server.buf[..], &up[..]);
            server.write(down.clone(), WAIT).await.unwrap();
            read_len(&mut client, down.len(), 1000).await;
            assert_eq!(&client.buf[..], &down[..]);
            assert_eq!((client.multi.is_some(), server.multi.is_some()), (uring, uring));
            client.tls_close_notify(timers.deadline(WAIT)).await.unwrap();
            drop(client);
            assert_eq!(fill(&mut server, 64).await, 0);
        });
    }

    /// After its handshake a server connection waits for the first request without a
    /// buffer, and that wait goes through the multishot receive too: a request that the
    /// receive took in while the server was still writing its session tickets is seen.
    /// (A readiness poll of the socket itself never fires then: the socket is empty.)
    #[test]
    fn the_wait_after_the_handshake_sees_bytes_the_receive_took_in() {
        on_both_drivers(|_| async move {
            let timers = Rc::new(CoarseTimers::default());
            let (mut client, mut server) = tls_pair(&timers).await;
            let read = async {
                let mut read = std::pin::pin!(server.fill(1000, WAIT));
                monoio::select! {
                    biased;
                    _ = &mut read => panic!("plaintext before any was sent"),
                    r = client.tls_handshake(timers.deadline(WAIT)) => r.unwrap(),
                }
                // The server read the client's Finished alone and writes its session tickets;
                // the read is left there, in that write, while the request goes out.
                monoio::select! {
                    biased;
                    r = client.readable(true) => r.unwrap(),
                    _ = &mut read => panic!("plaintext before any was sent"),
                }
                client.write(b"GET / HTTP/1.1\r\n\r\n".to_vec(), WAIT).await.unwrap();
                read.await
            };
            // A monoio timer: the coarse timers of `Conn`'s deadlines do not tick here.
            let read = monoio::time::timeout(WAIT, read).await.expect("the request was never seen");
            assert_eq!(read.unwrap(), 18);
            assert_eq!(&server.buf[..], b"GET / HTTP/1.1\r\n\r\n");
        });
    }
}
