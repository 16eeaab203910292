//! `tls.session_tickets` and `tls.session_ticket_keys`: whether clients get session tickets,
//! and the keys that seal them when an operator supplies them (shared by several gateways,
//! kept across restarts, rotated by a reload). Reading and checking the key files is here;
//! sealing and opening tickets is the engine's (`engine/src/tickets.rs`).

use std::fmt;

use crate::validate::Checker;

/// The sizes a key file may have: nginx's `ssl_session_ticket_key` files (`openssl rand 80`
/// or `openssl rand 48`), so that the same key files and the same rotation scripts serve.
pub const TICKET_KEY_SIZES: [usize; 2] = [80, 48];

/// How the TLS listeners resume sessions.
#[derive(Debug, Clone, Default)]
pub enum SessionTickets {
    /// Tickets sealed with a key made at start, in memory, rotated every 6 hours by rustls
    /// and kept across reloads.
    #[default]
    Generated,
    /// Tickets sealed with the first key, opened with any of them.
    Keys(Vec<TicketKey>),
    /// No tickets, and so no resumption: every connection makes a full handshake.
    Off,
}

/// One operator-supplied ticket key: the first 16 bytes of its file name it (and the
/// tickets it seals), the rest is secret.
#[derive(Clone)]
pub struct TicketKey {
    pub name: [u8; 16],
    pub secret: Vec<u8>,
    /// The file it was read from, for messages.
    pub file: String,
}

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketKey").field("file", &self.file).finish_non_exhaustive()
    }
}

pub(crate) fn build(c: &mut Checker, enabled: Option<bool>, files: &[String]) -> SessionTickets {
    match (enabled.unwrap_or(true), files.is_empty()) {
        (false, false) => {
            c.err("tls.session_ticket_keys", "keys are set but tls.session_tickets is false: remove one of them");
            SessionTickets::Off
        }
        (false, true) => SessionTickets::Off,
        (true, true) => SessionTickets::Generated,
        (true, false) => {
            let mut keys: Vec<TicketKey> = Vec::with_capacity(files.len());
            for (i, f) in files.iter().enumerate() {
                let path = format!("tls.session_ticket_keys[{i}]");
                let file = c.file(f).display().to_string();
                match std::fs::read(&file) {
                    Err(e) => c.err(path, format!("cannot read {f:?}: {e}")),
                    Ok(b) if !TICKET_KEY_SIZES.contains(&b.len()) => c.err(
                        path,
                        format!("{f:?} holds {} bytes, not 80 or 48 (make one with `openssl rand 80 > {f}`)", b.len()),
                    ),
                    Ok(b) => {
                        let name: [u8; 16] = b[..16].try_into().expect("at least 48 bytes");
                        if let Some(other) = keys.iter().find(|k| k.name == name) {
                            c.err(path, format!("{f:?} has the name (first 16 bytes) of {:?}", other.file));
                        } else {
                            keys.push(TicketKey { name, secret: b[16..].to_vec(), file });
                        }
                    }
                }
            }
            SessionTickets::Keys(keys)
        }
    }
}
