//! JWT settings: verification keys (HS256/384/512 secrets; RS*, PS*, ES256/ES384 and EdDSA
//! public keys from PEM text, PEM files, a JWKS file, or a key set an upstream serves:
//! `crate::jwks`), issuer,
//! audience, leeway, and the claims forwarded as headers. Keys are parsed here, so a bad key
//! is a configuration error, not a runtime one.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use crate::jwks::{FetchedJwks, RemoteJwks};
use crate::raw::RawJwt;
use crate::validate::{parse_duration, Checker};
use crate::Upstream;

/// One verification key.
#[derive(Clone)]
pub struct JwtKey {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub key: DecodingKey,
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey").field("alg", &self.alg).field("kid", &self.kid).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default)]
pub struct JwtAuth {
    /// The keys written in the configuration (`keys`, `jwks_file`).
    pub keys: Vec<JwtKey>,
    /// `[auth.jwt.jwks]`: a key set fetched from an upstream.
    pub remote: Option<RemoteJwks>,
    /// Its keys as last fetched (by the engine; `None` until a fetch succeeded).
    pub fetched: Option<FetchedJwks>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
    /// (claim, lower-case header name)
    pub claims_to_headers: Vec<(String, String)>,
}

impl JwtAuth {
    /// Every key a token may be verified with: the configured ones, then the fetched ones.
    pub fn all_keys(&self) -> impl Iterator<Item = &JwtKey> {
        self.keys.iter().chain(self.fetched.iter().flat_map(|f| &f.keys))
    }
}

/// The signature algorithms coregate verifies (RFC 7518 3.1, RFC 8037 3.1), by their JOSE
/// names. `none` is never one; ES512 is left out (jsonwebtoken does not verify it).
pub(crate) fn algorithm(s: &str) -> Option<Algorithm> {
    use Algorithm::*;
    let all = [HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA];
    all.into_iter().find(|a| format!("{a:?}") == s)
}

/// What `alg` accepts, for error messages.
const ALGORITHMS: &str = "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA";

/// The shortest secret an HMAC algorithm takes: its hash's output (RFC 7518 3.2).
fn min_secret(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

pub(crate) fn build_jwt(c: &mut Checker, raw: &RawJwt, upstreams: &[Upstream]) -> JwtAuth {
    let mut keys = Vec::new();
    for (i, k) in raw.keys.iter().enumerate() {
        let path = format!("auth.jwt.keys[{i}]");
        let Some(alg) = k.alg.as_deref().and_then(algorithm) else {
            c.err(format!("{path}.alg"), format!("alg must be {ALGORITHMS}"));
            continue;
        };
        let pem = match (&k.pem, &k.pem_file) {
            (Some(p), None) => Some(p.clone().into_bytes()),
            (None, Some(f)) => match std::fs::read(c.file(f)) {
                Ok(b) => Some(b),
                Err(e) => {
                    c.err(format!("{path}.pem_file"), format!("cannot read {f:?}: {e}"));
                    continue;
                }
            },
            (None, None) => None,
            (Some(_), Some(_)) => {
                c.err(&path, "set pem or pem_file, not both");
                continue;
            }
        };
        let key = match (alg.family(), &k.secret, pem) {
            (AlgorithmFamily::Hmac, Some(secret), None) if secret.len() >= min_secret(alg) => {
                Ok(DecodingKey::from_secret(secret.as_bytes()))
            }
            (AlgorithmFamily::Hmac, Some(_), None) => {
                Err(format!("an {alg:?} secret needs at least {} bytes (RFC 7518 3.2)", min_secret(alg)))
            }
            (AlgorithmFamily::Rsa, None, Some(pem)) => {
                DecodingKey::from_rsa_pem(&pem).map_err(|e| format!("not an RSA public key: {e}"))
            }
            (AlgorithmFamily::Ec, None, Some(pem)) => {
                DecodingKey::from_ec_pem(&pem).map_err(|e| format!("not an EC public key: {e}"))
            }
            (AlgorithmFamily::Ed, None, Some(pem)) => {
                DecodingKey::from_ed_pem(&pem).map_err(|e| format!("not an Ed25519 public key: {e}"))
            }
            (AlgorithmFamily::Hmac, _, _) => Err(format!("{alg:?} takes a secret")),
            _ => Err(format!("{alg:?} takes a public key (pem or pem_file)")),
        };
        match key {
            Ok(key) => keys.push(JwtKey { alg, kid: k.kid.clone(), key }),
            Err(msg) => c.err(path, msg),
        }
    }
    if let Some(file) = &raw.jwks_file {
        match std::fs::read_to_string(c.file(file)).map_err(|e| e.to_string()).and_then(|t| crate::jwks::parse(&t)) {
            Ok(set) => keys.extend(set),
            Err(e) => c.err("auth.jwt.jwks_file", format!("cannot load {file:?}: {e}")),
        }
    }
    let remote = raw.jwks.as_ref().and_then(|r| crate::jwks::build(c, r, upstreams));
    let leeway = match &raw.leeway {
        None => Duration::from_secs(30),
        Some(s) => parse_duration(s).unwrap_or_else(|| {
            c.err("auth.jwt.leeway", format!("invalid duration {s:?}"));
            Duration::from_secs(30)
        }),
    };
    let claims_to_headers = raw
        .claims_to_headers
        .iter()
        .filter_map(|(claim, header)| {
            if header.is_empty()
                || !header.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                c.err(format!("auth.jwt.claims_to_headers.{claim}"), format!("{header:?} is not a header name"));
                return None;
            }
            Some((claim.clone(), header.to_ascii_lowercase()))
        })
        .collect();
    JwtAuth {
        keys,
        remote,
        fetched: None,
        issuer: raw.issuer.clone(),
        audience: raw.audience.clone(),
        leeway,
        claims_to_headers,
    }
}
