//! HTTP Basic authentication (RFC 7617): the `Authorization: Basic` credentials of a request
//! checked against the consumers' passwords (`consumers[].passwords`, `auth.basic.users_file`).
//!
//! A bcrypt check costs milliseconds of the worker's core (cost 5, htpasswd's default:
//! 3.5 ms on the build machine), so each worker remembers the credentials it verified, by their SHA-256
//! (up to [`REMEMBERED`], then it starts over): a client sending the same credentials on
//! every request pays the bcrypt check once per worker. Wrong passwords are not remembered
//! and are checked every time (limit them with `rate_limits`). Which routes ask, and the
//! answers, are `policy`'s.

use std::cell::RefCell;

use ahash::AHashMap as HashMap;
use base64::Engine;
use config::{Consumer, Password};
use proto_http::RequestHead;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Verified credentials a worker remembers before it forgets them all and starts over.
const REMEMBERED: usize = 4096;

/// Credentials longer than this (decoded) are refused unread.
const MAX_CREDENTIALS: usize = 1024;

/// Why a request's credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No `Authorization: Basic` field.
    Missing,
    /// Malformed, an unknown user, or a wrong password.
    Invalid,
}

/// This worker's view of the Basic users.
pub(crate) struct BasicUsers {
    /// Consumers with passwords, by name (the user-id).
    by_name: HashMap<Vec<u8>, usize>,
    /// SHA-256 of `user:password` verified here, and their consumer.
    verified: RefCell<HashMap<[u8; 32], usize>>,
}

impl BasicUsers {
    pub(crate) fn new(consumers: &[Consumer]) -> BasicUsers {
        let by_name = consumers
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.passwords.is_empty())
            .map(|(i, c)| (c.name.as_bytes().to_vec(), i))
            .collect();
        BasicUsers { by_name, verified: RefCell::default() }
    }

    /// The consumer whose credentials `req` carries.
    pub(crate) fn check(&self, consumers: &[Consumer], req: &RequestHead) -> Result<usize, Refused> {
        let value = req.header(b"authorization").ok_or(Refused::Missing)?;
        let credentials = decode(value)?;
        let digest: [u8; 32] = Sha256::digest(&credentials).into();
        if let Some((stored, &consumer)) = self.verified.borrow().get_key_value(&digest) {
            if bool::from(stored.ct_eq(&digest)) {
                return Ok(consumer);
            }
        }
        // RFC 7617 2: the user-id ends at the first colon; the password may hold more.
        let colon = credentials.iter().position(|&b| b == b':').ok_or(Refused::Invalid)?;
        let (user, password) = (&credentials[..colon], &credentials[colon + 1..]);
        let &consumer = self.by_name.get(user).ok_or(Refused::Invalid)?;
        let matches = |p: &Password| match p {
            Password::Sha256(want) => {
                let got: [u8; 32] = Sha256::digest(password).into();
                bool::from(got.ct_eq(want))
            }
            Password::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        };
        if !consumers[consumer].passwords.iter().any(matches) {
            return Err(Refused::Invalid);
        }
        let mut verified = self.verified.borrow_mut();
        if verified.len() >= REMEMBERED {
            verified.clear();
        }
        verified.insert(digest, consumer);
        Ok(consumer)
    }
}

/// The decoded `user:password` of an `Authorization: Basic <base64>` value (the scheme is
/// case-insensitive, RFC 9110 11.1).
fn decode(value: &[u8]) -> Result<Vec<u8>, Refused> {
    let scheme_end = value.iter().position(|&b| b == b' ').ok_or(Refused::Missing)?;
    if !value[..scheme_end].eq_ignore_ascii_case(b"basic") {
        return Err(Refused::Missing);
    }
    let token = value[scheme_end..].trim_ascii();
    if token.len() > MAX_CREDENTIALS * 4 / 3 + 4 {
        return Err(Refused::Invalid);
    }
    base64::engine::general_purpose::STANDARD.decode(token).map_err(|_| Refused::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn req(authorization: &str) -> RequestHead {
        let text = format!("GET / HTTP/1.1\r\nHost: a\r\n{authorization}\r\n");
        let meta = proto_http::parse_request(text.as_bytes(), &Default::default()).unwrap().unwrap();
        RequestHead::new(Bytes::from(text), meta)
    }

    fn basic(credentials: &str) -> String {
        format!("Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(credentials))
    }

    #[test]
    fn credentials_are_checked_and_remembered() {
        let salt = [7u8; 16];
        let hash = bcrypt::hash_with_salt("wonder:land", 4, salt).unwrap().format_for_version(bcrypt::Version::TwoY);
        let consumers = vec![
            Consumer {
                name: "keyonly".into(),
                key_digests: vec![[0; 32]],
                passwords: Vec::new(),
                ..Consumer::default()
            },
            Consumer {
                name: "alice".into(),
                key_digests: Vec::new(),
                passwords: vec![Password::Bcrypt(hash)],
                ..Consumer::default()
            },
            Consumer {
                name: "bob".into(),
                key_digests: Vec::new(),
                passwords: vec![Password::Sha256(Sha256::digest(b"builder").into())],
                ..Consumer::default()
            },
        ];
        let users = BasicUsers::new(&consumers);
        // A password may hold colons; the user-id may not.
        assert_eq!(users.check(&consumers, &req(&basic("alice:wonder:land"))), Ok(1));
        assert_eq!(users.verified.borrow().len(), 1);
        assert_eq!(users.check(&consumers, &req(&basic("alice:wonder:land"))), Ok(1));
        assert_eq!(users.check(&consumers, &req(&basic("bob:builder").replace("Basic", "bAsIc"))), Ok(2));
        for (value, why) in [
            (basic("alice:wonder"), Refused::Invalid),
            (basic("bob:Builder"), Refused::Invalid),
            (basic("keyonly:"), Refused::Invalid),
            (basic("carol:x"), Refused::Invalid),
            (basic("no colon"), Refused::Invalid),
            ("Authorization: Basic !!!\r\n".into(), Refused::Invalid),
            ("Authorization: Bearer abc\r\n".into(), Refused::Missing),
            (String::new(), Refused::Missing),
        ] {
            assert_eq!(users.check(&consumers, &req(&value)), Err(why), "{value}");
        }
        assert_eq!(users.verified.borrow().len(), 2, "failures are not remembered");
    }
}
