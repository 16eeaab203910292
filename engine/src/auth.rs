//! API-key authentication: keys are stored as SHA-256 digests (from config) and a presented
//! key is hashed and looked up by digest, then confirmed with a constant-time comparison.
//! Whatever timing the hash-map lookup shows depends only on the digest of the presented
//! key, which tells an attacker nothing about any stored key.

use ahash::AHashMap as HashMap;

use config::{ApiKeyAuth, Consumer};
use proto_http::RequestHead;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub(crate) struct ApiKeys {
    by_digest: HashMap<[u8; 32], usize>,
}

impl ApiKeys {
    pub(crate) fn new(consumers: &[Consumer]) -> Self {
        let mut by_digest = HashMap::new();
        for (i, c) in consumers.iter().enumerate() {
            for d in &c.key_digests {
                by_digest.insert(*d, i);
            }
        }
        Self { by_digest }
    }

    /// The consumer owning `key`, if any.
    pub(crate) fn consumer(&self, key: &[u8]) -> Option<usize> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let (stored, &idx) = self.by_digest.get_key_value(&digest)?;
        bool::from(stored.ct_eq(&digest)).then_some(idx)
    }
}

/// Where the credential was found, so it can be stripped before forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeySource {
    /// The API key's header.
    Header,
    /// The API key's query parameter.
    Query,
    /// `Authorization` (Basic credentials).
    Authorization,
}

/// The API key of a request: the header first, then the query parameter (taken as is,
/// without percent-decoding).
pub(crate) fn presented_key<'a>(req: &'a RequestHead, cfg: &ApiKeyAuth) -> Option<(&'a [u8], KeySource)> {
    if let Some(v) = req.header(cfg.header.as_bytes()) {
        return Some((v, KeySource::Header));
    }
    let name = cfg.query.as_deref()?;
    query_param(req.path(), name.as_bytes()).map(|v| (v, KeySource::Query))
}

/// The value of the first `name=value` pair in the query of `target`.
pub(crate) fn query_param<'a>(target: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let q = &target[target.iter().position(|&b| b == b'?')? + 1..];
    q.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_by_digest() {
        let consumers = vec![
            Consumer {
                name: "a".into(),
                key_digests: vec![Sha256::digest(b"key-of-a-123").into()],
                passwords: vec![],
                ..Consumer::default()
            },
            Consumer {
                name: "b".into(),
                key_digests: vec![Sha256::digest(b"key-of-b-456").into()],
                passwords: vec![],
                ..Consumer::default()
            },
        ];
        let keys = ApiKeys::new(&consumers);
        assert_eq!(keys.consumer(b"key-of-a-123"), Some(0));
        assert_eq!(keys.consumer(b"key-of-b-456"), Some(1));
        assert_eq!(keys.consumer(b"key-of-b-457"), None);
        assert_eq!(keys.consumer(b""), None);
    }

    #[test]
    fn query_parameters() {
        assert_eq!(query_param(b"/p?a=1&key=abc&b=2", b"key"), Some(&b"abc"[..]));
        assert_eq!(query_param(b"/p?keyx=1", b"key"), None);
        assert_eq!(query_param(b"/p", b"key"), None);
    }
}
