//! TLS session tickets sealed with keys an operator supplies (`tls.session_ticket_keys`,
//! nginx's `ssl_session_ticket_key`, HAProxy's `tls-ticket-keys`): gateways that share the
//! key files resume each other's sessions, and a restart does not cost every client a full
//! handshake. The first key seals, every key opens; a reload reads the files again, so
//! keys rotate by writing a new first file and reloading. Reading and checking the files is
//! the config crate's (`config/src/tickets.rs`).
//!
//! A ticket is the key's 16-byte name, a random 12-byte nonce, and the session state sealed
//! with AES-256-GCM (the name as associated data) under a key derived from the file's secret
//! bytes with HKDF-SHA256. Only coregate opens these tickets, so the format is its own.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

/// The lifetime clients are told, as rustls' own ticketer says (it rotates its key every 6
/// hours); how long a key really opens tickets is the operator's rotation.
const LIFETIME_S: u32 = 6 * 3600;
const NAME_LEN: usize = 16;
const TAG_LEN: usize = 16;

pub(crate) struct Sealer {
    /// The first seals.
    keys: Vec<([u8; NAME_LEN], LessSafeKey)>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({} keys)", self.keys.len())
    }
}

impl Sealer {
    /// `keys` is never empty (the config crate makes `Keys` only from files it read).
    pub(crate) fn new(keys: &[config::TicketKey]) -> Sealer {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"coregate session ticket key");
        let keys = keys
            .iter()
            .map(|k| {
                let prk = salt.extract(&k.secret);
                let info = [&k.name[..]];
                let okm = prk.expand(&info, &AES_256_GCM).expect("32 bytes from HKDF-SHA256");
                (k.name, LessSafeKey::new(UnboundKey::from(okm)))
            })
            .collect();
        Sealer { keys, rng: SystemRandom::new() }
    }
}

impl rustls::server::ProducesTickets for Sealer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME_S
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let (name, key) = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(name);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let sealed = &mut out[NAME_LEN + NONCE_LEN..];
        let tag = key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(name), sealed).ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < NAME_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let (_, key) = self.keys.iter().find(|(n, _)| n[..] == *name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = key.open_in_place(nonce, Aad::from(name), &mut buf).ok()?.len();
        buf.truncate(plain);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::ProducesTickets;

    fn key(byte: u8) -> config::TicketKey {
        config::TicketKey { name: [byte; 16], secret: vec![byte ^ 0x5a; 64], file: format!("key-{byte}") }
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let state = b"the session's state".to_vec();
        let old = Sealer::new(&[key(1)]);
        let rotated = Sealer::new(&[key(2), key(1)]);
        let ticket = old.encrypt(&state).unwrap();
        assert_eq!(&ticket[..16], &[1; 16], "named by its key");
        assert_eq!(rotated.decrypt(&ticket), Some(state.clone()), "a retired key still opens");
        let new = rotated.encrypt(&state).unwrap();
        assert_eq!(&new[..16], &[2; 16], "the first key seals");
        assert_eq!(old.decrypt(&new), None, "a gateway without the new key cannot open it");
        assert_ne!(rotated.encrypt(&state).unwrap(), new, "a fresh nonce each time");
        // The same files on another gateway: the same keys.
        assert_eq!(Sealer::new(&[key(2)]).decrypt(&new), Some(state));
    }

    #[test]
    fn tickets_that_were_not_sealed_here_open_to_nothing() {
        let s = Sealer::new(&[key(1)]);
        let ticket = s.encrypt(b"state").unwrap();
        for i in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[i] ^= 1;
            assert_eq!(s.decrypt(&bad), None, "byte {i} changed");
        }
        for n in 0..ticket.len() {
            assert_eq!(s.decrypt(&ticket[..n]), None, "cut to {n} bytes");
        }
        // Same name, another secret.
        let other = Sealer::new(&[config::TicketKey { secret: vec![0; 32], ..key(1) }]);
        assert_eq!(other.decrypt(&ticket), None);
        assert_eq!(s.decrypt(&[]), None);
    }
}
