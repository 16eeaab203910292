//! JWKS documents (RFC 7517 5, `{"keys": [...]}`) turned into verification keys, for
//! `auth.jwt.jwks_file` and for `[auth.jwt.jwks]`, a key set served by one of the upstreams
//! (an identity provider's `jwks_uri`) and fetched again every `refresh`. Fetching it is the
//! engine's (`engine/src/jwks.rs`); here are its settings and the parsing of what it fetched.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::jwt::{algorithm, JwtKey};
use crate::policy::valid_path;
use crate::validate::Checker;
use crate::{Config, Upstream};

/// `[auth.jwt.jwks]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRemoteJwks {
    /// The upstream that serves the key set.
    pub upstream: Option<String>,
    /// Its target (default `/.well-known/jwks.json`).
    pub path: Option<String>,
    /// The target of the provider's OpenID configuration, whose `jwks_uri` names the key
    /// set's (instead of `path`).
    pub discovery: Option<String>,
    /// Fetch it again this often (default 5m).
    pub refresh: Option<String>,
    /// One fetch, connect to the end of the body (default 5s).
    pub timeout: Option<String>,
}

/// `[auth.jwt.jwks]`: where the remote key set is and how often it is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    /// Index into [`Config::upstreams`]: its endpoints (tried in turn), Host name and TLS
    /// settings serve the fetch.
    pub upstream: usize,
    /// The key set's target, unless `discovery` names it.
    pub path: String,
    /// The target of the provider's OpenID configuration (OpenID Connect Discovery 1.0,
    /// section 4): fetched first, its `jwks_uri` gives the key set's target.
    pub discovery: Option<String>,
    pub refresh: Duration,
    pub timeout: Duration,
}

/// The keys of the remote set as last fetched, and the document they came from (a fetch
/// that brings the same text changes nothing).
#[derive(Debug, Clone, Default)]
pub struct FetchedJwks {
    pub keys: Vec<JwtKey>,
    pub text: Arc<str>,
    /// The `Cache-Control: max-age` its answer carried (RFC 9111 5.2.2.1): the set is
    /// fetched again that soon when it is sooner than `refresh` ([`RemoteJwks::every`]).
    pub max_age: Option<Duration>,
}

/// A provider's max-age shortens the refresh to no less than this, so that a small or zero
/// max-age cannot make the gateway ask every second.
pub const MIN_MAX_AGE_REFRESH: Duration = Duration::from_secs(30);

impl RemoteJwks {
    /// How often the set is fetched again: `refresh`, or the provider's max-age when that is
    /// sooner (but not under [`MIN_MAX_AGE_REFRESH`]).
    pub fn every(&self, fetched: Option<&FetchedJwks>) -> Duration {
        match fetched.and_then(|f| f.max_age) {
            Some(age) => self.refresh.min(age.max(MIN_MAX_AGE_REFRESH)),
            None => self.refresh,
        }
    }
}

/// A key set larger than this is refused (identity providers publish a few keys, a few KiB).
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// Fetched again every five minutes unless configured: a rotated key is published ahead of
/// its use (OpenID Connect Core 10.1.1), so minutes of delay cost nothing, and the provider
/// is asked 288 times a day per gateway.
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
const MIN_REFRESH: Duration = Duration::from_secs(1);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn build(c: &mut Checker, raw: &RawRemoteJwks, upstreams: &[Upstream]) -> Option<RemoteJwks> {
    let p = "auth.jwt.jwks";
    let upstream = c.upstream_ref(
        &format!("{p}.upstream"),
        raw.upstream.as_ref(),
        upstreams,
        "the upstream that serves the key set",
    );
    let path = raw.path.clone().unwrap_or_else(|| "/.well-known/jwks.json".into());
    if !valid_path(&path) {
        c.err(format!("{p}.path"), format!("{path:?} is not an origin-form target (\"/...\")"));
    }
    if let Some(d) = &raw.discovery {
        if !valid_path(d) {
            c.err(format!("{p}.discovery"), format!("{d:?} is not an origin-form target (\"/...\")"));
        }
        if raw.path.is_some() {
            c.err(format!("{p}.path"), "set path or discovery, not both (discovery names the key set's path)");
        }
    }
    let refresh = c.duration(&format!("{p}.refresh"), raw.refresh.as_ref(), DEFAULT_REFRESH);
    if refresh < MIN_REFRESH {
        c.err(format!("{p}.refresh"), "at least 1s");
    }
    let timeout = c.duration(&format!("{p}.timeout"), raw.timeout.as_ref(), DEFAULT_TIMEOUT);
    Some(RemoteJwks { upstream: upstream?, path, discovery: raw.discovery.clone(), refresh, timeout })
}

/// The signature keys of a JWKS document (RFC 7517 5). Skipped, as keys a verifier has no
/// use for: keys for encryption (`"use": "enc"`, as Keycloak publishes beside its signing
/// key), keys with an algorithm coregate does not verify (`RSA-OAEP`, ES512), and keys of a
/// type or curve it does not know. A key without `alg` (RFC 7517 4.4 makes it optional;
/// Microsoft Entra leaves it out) serves the algorithms its type allows: an RSA key RS256,
/// RS384, RS512, PS256, PS384 and PS512, an EC key the one of its curve (ES256 for P-256,
/// ES384 for P-384), an Ed25519 key EdDSA; a symmetric key must name its algorithm. An
/// error says why the document is not a key set, or names the first key whose material is
/// broken (by index): such a document is refused whole.
pub fn parse(text: &str) -> Result<Vec<JwtKey>, String> {
    #[derive(Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for (i, value) in doc.keys.into_iter().enumerate() {
        // A key of a type or curve jsonwebtoken does not know does not parse: not ours.
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else { continue };
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        let algorithms: Vec<Algorithm> = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(named), _) => algorithm(&named.to_string()).into_iter().collect(),
            (None, AlgorithmParameters::RSA(_)) => {
                use Algorithm::*;
                vec![RS256, RS384, RS512, PS256, PS384, PS512]
            }
            (None, AlgorithmParameters::EllipticCurve(p)) => match p.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => vec![],
            },
            (None, AlgorithmParameters::OctetKeyPair(p)) if p.curve == EllipticCurve::Ed25519 => {
                vec![Algorithm::EdDSA]
            }
            (None, AlgorithmParameters::OctetKey(_)) => {
                return Err(format!("keys[{i}]: a symmetric key needs \"alg\""));
            }
            (None, _) => vec![],
        };
        if algorithms.is_empty() {
            continue;
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("keys[{i}]: not a valid key: {e}"))?;
        let kid = jwk.common.key_id;
        keys.extend(algorithms.into_iter().map(|alg| JwtKey { alg, kid: kid.clone(), key: key.clone() }));
    }
    Ok(keys)
}

/// An OpenID provider configuration larger than this is refused (they are a few KiB).
pub const MAX_DISCOVERY_BYTES: usize = 64 * 1024;

/// The key set's target from an OpenID provider configuration (OpenID Connect Discovery
/// 1.0, 3): the path and query of its `jwks_uri`, fetched from the same upstream (coregate
/// asks only its upstreams; a provider serves both documents from one host). With
/// `issuer` (`auth.jwt.issuer`), the document's `issuer` must be it exactly (4.3), so that a
/// configuration meant for another provider or realm is not taken.
pub fn discovered(text: &str, issuer: Option<&str>) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Provider {
        issuer: Option<String>,
        jwks_uri: Option<String>,
    }
    let doc: Provider = serde_json::from_str(text).map_err(|e| format!("not an OpenID provider configuration: {e}"))?;
    if let Some(want) = issuer {
        if doc.issuer.as_deref() != Some(want) {
            return Err(format!(
                "the provider's issuer is {:?}, not auth.jwt.issuer {want:?} (OpenID Connect Discovery 4.3)",
                doc.issuer.unwrap_or_default()
            ));
        }
    }
    let uri = doc.jwks_uri.ok_or("the provider configuration has no jwks_uri")?;
    let target = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))
        .map(|rest| rest.find('/').map_or("/", |i| &rest[i..]))
        .map(|t| t.split('#').next().unwrap_or(t))
        .filter(|t| !t.contains(|ch: char| ch.is_ascii_whitespace() || ch.is_ascii_control()))
        .ok_or_else(|| format!("jwks_uri {uri:?} is not an http(s) URL"))?;
    Ok(target.to_string())
}

impl Config {
    /// This configuration with the remote key set `text` (fetched from `[auth.jwt.jwks]`) in
    /// place of the one it had; `Ok(None)` when the text is the one it has.
    /// `max_age`: the answer's Cache-Control max-age, kept with a new set. The same set with
    /// another max-age changes nothing (no reload): providers count their max-age down
    /// towards their next rotation, so it differs at almost every fetch.
    pub fn with_jwks(&self, text: &str, max_age: Option<Duration>) -> Result<Option<Config>, String> {
        if self.jwt.fetched.as_ref().is_some_and(|f| &*f.text == text) {
            return Ok(None);
        }
        if text.len() > MAX_JWKS_BYTES {
            return Err(format!("the key set is over {MAX_JWKS_BYTES} bytes"));
        }
        let keys = parse(text)?;
        let mut cfg = self.clone();
        cfg.jwt.fetched = Some(FetchedJwks { keys, text: text.into(), max_age });
        Ok(Some(cfg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(jwks: &str) -> Result<Config, String> {
        crate::testing::config(&["idp", "api"], &format!("upstream = \"api\"\nauth = \"jwt\"\n[auth.jwt.jwks]\n{jwks}"))
    }

    const SET: &str =
        r#"{"keys":[{"kty":"oct","alg":"HS256","kid":"a","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}"#;

    #[test]
    fn settings_and_defaults() {
        let c = config("upstream = \"idp\"").unwrap();
        let want = RemoteJwks {
            upstream: 0,
            path: "/.well-known/jwks.json".into(),
            discovery: None,
            refresh: Duration::from_secs(300),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(c.jwt.remote, Some(want));
        assert!(c.jwt.fetched.is_none(), "nothing is fetched while parsing");
        let c = config("upstream = \"idp\"\npath = \"/keys\"\nrefresh = \"30s\"\ntimeout = \"2s\"").unwrap();
        let r = c.jwt.remote.unwrap();
        assert_eq!((r.path.as_str(), r.refresh, r.timeout), ("/keys", Duration::from_secs(30), Duration::from_secs(2)));
    }

    #[test]
    fn errors_name_their_keys() {
        for (keys, path, says) in [
            ("", "auth.jwt.jwks.upstream", "missing"),
            ("upstream = \"nope\"", "auth.jwt.jwks.upstream", "no upstream named"),
            ("upstream = \"idp\"\npath = \"keys\"", "auth.jwt.jwks.path", "origin-form"),
            ("upstream = \"idp\"\nrefresh = \"10ms\"", "auth.jwt.jwks.refresh", "at least 1s"),
            ("upstream = \"idp\"\ntimeout = \"0s\"", "auth.jwt.jwks.timeout", "greater than zero"),
            ("upstream = \"idp\"\nurl = \"x\"", "auth.jwt.jwks.url", "unknown"),
            ("upstream = \"idp\"\ndiscovery = \"x\"", "auth.jwt.jwks.discovery", "origin-form"),
            ("upstream = \"idp\"\ndiscovery = \"/d\"\npath = \"/k\"", "auth.jwt.jwks.path", "not both"),
        ] {
            let e = config(keys).expect_err(keys);
            assert!(e.contains(path) && e.contains(says), "{keys}: {e}");
        }
    }

    #[test]
    fn a_fetched_set_replaces_the_last_and_the_same_text_changes_nothing() {
        let c = config("upstream = \"idp\"").unwrap();
        let with = c.with_jwks(SET, None).unwrap().expect("a new set");
        let f = with.jwt.fetched.as_ref().unwrap();
        assert_eq!((f.keys.len(), f.keys[0].kid.as_deref()), (1, Some("a")));
        assert!(with.with_jwks(SET, None).unwrap().is_none());
        assert!(with.with_jwks(r#"{"keys":[]}"#, None).unwrap().unwrap().jwt.fetched.unwrap().keys.is_empty());
        for (bad, says) in [
            ("<html>", "not a JWKS document"),
            (r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#, "keys[0]: a symmetric key needs \"alg\""),
            (r#"{"keys":[{"kty":"RSA","alg":"RS256","n":"!!","e":"AQAB"}]}"#, "keys[0]: not a valid key"),
        ] {
            let e = c.with_jwks(bad, None).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(c.with_jwks(&" ".repeat(MAX_JWKS_BYTES + 1), None).unwrap_err().contains("over"));
        // The provider's max-age shortens the refresh, down to 30 s; a longer one changes nothing.
        let remote = c.jwt.remote.as_ref().unwrap();
        let every = |age: u64| {
            let with = c.with_jwks(SET, Some(Duration::from_secs(age))).unwrap().unwrap();
            remote.every(with.jwt.fetched.as_ref())
        };
        assert_eq!(remote.every(None), Duration::from_secs(300));
        assert_eq!(
            (every(60), every(0), every(86_400)),
            (Duration::from_secs(60), MIN_MAX_AGE_REFRESH, remote.refresh)
        );
        let with = c.with_jwks(SET, Some(Duration::from_secs(60))).unwrap().unwrap();
        assert!(with.with_jwks(SET, Some(Duration::from_secs(59))).unwrap().is_none(), "no reload for a max-age");
    }

    #[test]
    fn provider_configurations_name_the_key_set() {
        let doc = |issuer: &str, uri: &str| format!(r#"{{"issuer":"{issuer}","jwks_uri":"{uri}","other":[1]}}"#);
        let iss = "https://auth.test/realms/main";
        for (text, issuer, want) in [
            (doc(iss, "https://auth.test/realms/main/certs"), Some(iss), Ok("/realms/main/certs")),
            (doc(iss, "http://auth.test:8080/keys?v=2#x"), None, Ok("/keys?v=2")),
            (doc(iss, "https://auth.test"), None, Ok("/")),
            (doc("https://auth.test/realms/other", "https://auth.test/k"), Some(iss), Err("not auth.jwt.issuer")),
            (doc(iss, "ftp://auth.test/k"), None, Err("not an http(s) URL")),
            (doc(iss, "https://auth.test/a b"), None, Err("not an http(s) URL")),
            (r#"{"issuer":"x"}"#.to_string(), None, Err("no jwks_uri")),
            ("<html>".to_string(), None, Err("not an OpenID provider configuration")),
        ] {
            match (discovered(&text, issuer), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text}: {got:?}, wanted {want:?}"),
            }
        }
    }
}
