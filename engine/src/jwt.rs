//! Bearer JWT verification with `jsonwebtoken` (no hand-written crypto): the token's `alg`
//! must be one a configured key has (HS256/384/512, RS*, PS*, ES256, ES384 or EdDSA; `none`
//! and everything else are refused), the signature must verify with such a key (matching `kid` when both name one),
//! `exp` is required, `exp`/`nbf` are checked with the configured leeway, and `iss`/`aud`
//! when configured. Any failure, however malformed the token, is a 401, never a 500.

use config::JwtAuth;
use jsonwebtoken::{decode, decode_header, Validation};
use proto_http::RequestHead;
use serde_json::{Map, Value};

/// Why a request has no valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JwtError {
    Missing,
    Invalid,
    /// Invalid, and naming a key (`kid`) no key has, with a remote key set configured: the
    /// provider may have published it since the set was fetched.
    UnknownKey,
}

/// The bearer token of a request (RFC 6750 2.1).
fn bearer(req: &RequestHead) -> Option<&[u8]> {
    let v = req.header(b"authorization")?;
    let (scheme, token) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| token.trim_ascii()).filter(|t| !t.is_empty())
}

/// Verifies the request's bearer token; returns its claims.
pub(crate) fn verify(cfg: &JwtAuth, req: &RequestHead) -> Result<Map<String, Value>, JwtError> {
    let token = bearer(req).ok_or(JwtError::Missing)?;
    verify_token(cfg, token)
}

pub(crate) fn verify_token(cfg: &JwtAuth, token: &[u8]) -> Result<Map<String, Value>, JwtError> {
    let token = std::str::from_utf8(token).map_err(|_| JwtError::Invalid)?;
    let header = decode_header(token).map_err(|_| JwtError::Invalid)?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = cfg.leeway.as_secs();
    validation.validate_nbf = true;
    match &cfg.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    if let Some(iss) = &cfg.issuer {
        validation.set_issuer(&[iss]);
    }
    let candidates = cfg.all_keys().filter(|k| {
        k.alg == header.alg
            && match (&k.kid, &header.kid) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    });
    for k in candidates {
        if let Ok(data) = decode::<Map<String, Value>>(token, &k.key, &validation) {
            return Ok(data.claims);
        }
    }
    let unknown = |kid: &String| !cfg.all_keys().any(|k| k.kid.as_ref() == Some(kid));
    match header.kid.as_ref() {
        Some(kid) if cfg.remote.is_some() && unknown(kid) => Err(JwtError::UnknownKey),
        _ => Err(JwtError::Invalid),
    }
}

/// A claim as a header value: strings as they are, numbers and booleans printed, arrays of
/// those joined by spaces; `None` for anything else or a value that cannot be a field value.
pub(crate) fn claim_value(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items.iter().map(claim_value).collect::<Option<Vec<_>>>()?.join(" "),
        _ => return None,
    };
    s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80).then_some(s)
}

/// Whether `claims` meet a route's `require_claims`: each named claim holds one of its
/// values: equal to a string, number or boolean claim, an element of an array claim, or a
/// word of a space-separated string claim (OAuth's `scope`, RFC 8693 4.2).
pub(crate) fn meets(required: &[(String, Vec<String>)], claims: &serde_json::Map<String, Value>) -> bool {
    required.iter().all(|(name, wanted)| {
        let Some(claim) = claims.get(name) else { return false };
        let has = |want: &str| match claim {
            Value::String(s) => s == want || s.split(' ').any(|word| word == want),
            Value::Array(items) => items.iter().any(|i| i.as_str() == Some(want)),
            Value::Number(n) => n.to_string() == want,
            Value::Bool(b) => b.to_string() == want,
            _ => false,
        };
        wanted.iter().any(|w| has(w))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use config::JwtKey;
    use jsonwebtoken::{encode, Algorithm, DecodingKey, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const RSA_PRIVATE: &str = include_str!("../../tests/fixtures/rsa-private.pem");
    const RSA_PUBLIC: &str = include_str!("../../tests/fixtures/rsa-public.pem");
    const EC_PRIVATE: &str = include_str!("../../tests/fixtures/ec-private.pem");
    const EC_PUBLIC: &str = include_str!("../../tests/fixtures/ec-public.pem");

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn cfg() -> JwtAuth {
        JwtAuth {
            keys: vec![
                JwtKey { alg: Algorithm::HS256, kid: None, key: DecodingKey::from_secret(SECRET) },
                JwtKey {
                    alg: Algorithm::RS256,
                    kid: Some("rsa1".into()),
                    key: DecodingKey::from_rsa_pem(RSA_PUBLIC.as_bytes()).unwrap(),
                },
                JwtKey {
                    alg: Algorithm::ES256,
                    kid: None,
                    key: DecodingKey::from_ec_pem(EC_PUBLIC.as_bytes()).unwrap(),
                },
            ],
            issuer: Some("https://issuer.test".into()),
            audience: Some("orders".into()),
            leeway: Duration::from_secs(5),
            claims_to_headers: vec![],
            ..JwtAuth::default()
        }
    }

    fn claims(exp_offset: i64) -> Value {
        json!({"sub": "user-7", "iss": "https://issuer.test", "aud": "orders", "exp": (now() as i64 + exp_offset), "scope": ["read", "write"]})
    }

    fn hs(claims: &Value) -> String {
        encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    #[test]
    fn good_tokens_of_every_algorithm() {
        let c = cfg();
        assert_eq!(verify_token(&c, hs(&claims(60)).as_bytes()).unwrap()["sub"], "user-7");
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("rsa1".into());
        let rs = encode(&h, &claims(60), &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap()).unwrap();
        assert!(verify_token(&c, rs.as_bytes()).is_ok());
        let es = encode(
            &Header::new(Algorithm::ES256),
            &claims(60),
            &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        assert!(verify_token(&c, es.as_bytes()).is_ok());
        // Within the leeway.
        assert!(verify_token(&c, hs(&claims(-2)).as_bytes()).is_ok());
    }

    /// A token of `claims(60)` signed with `alg` and `key`, naming `kid`.
    fn signed(alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_string);
        encode(&h, &claims(60), key).unwrap()
    }

    #[test]
    fn every_algorithm_from_configured_keys() {
        let fixture = |name: &str| format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let long = "s".repeat(64);
        let cfg = config::Config::parse(&format!(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[[upstreams]]\nname = \"u\"\nendpoints = [\"127.0.0.1:2\"]\n\
             [[routes]]\npath = \"/\"\nupstream = \"u\"\nauth = \"jwt\"\n\
             [auth.jwt]\nissuer = \"https://issuer.test\"\naudience = \"orders\"\nkeys = [\
             {{ alg = \"HS512\", secret = \"{long}\" }}, {{ alg = \"PS256\", pem_file = \"{}\" }},\
             {{ alg = \"RS384\", pem_file = \"{}\" }}, {{ alg = \"ES384\", pem_file = \"{}\" }},\
             {{ alg = \"EdDSA\", pem_file = \"{}\" }}]\n",
            fixture("rsa-public.pem"),
            fixture("rsa-public.pem"),
            fixture("ec384-public.pem"),
            fixture("ed25519-public.pem"),
        ))
        .unwrap();
        let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let ec384 = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec384-private.pem")).unwrap()).unwrap();
        let ed = EncodingKey::from_ed_pem(&std::fs::read(fixture("ed25519-private.pem")).unwrap()).unwrap();
        let hs512 = EncodingKey::from_secret(long.as_bytes());
        for (alg, key) in [
            (Algorithm::HS512, &hs512),
            (Algorithm::PS256, &rsa),
            (Algorithm::RS384, &rsa),
            (Algorithm::ES384, &ec384),
            (Algorithm::EdDSA, &ed),
        ] {
            assert!(verify_token(&cfg.jwt, signed(alg, None, key).as_bytes()).is_ok(), "{alg:?}");
        }
        // Algorithms no key has: refused, though the key would check the signature.
        for (alg, key) in [(Algorithm::RS256, &rsa), (Algorithm::PS512, &rsa), (Algorithm::HS256, &hs512)] {
            assert_eq!(verify_token(&cfg.jwt, signed(alg, None, key).as_bytes()), Err(JwtError::Invalid), "{alg:?}");
        }
        // Secrets shorter than the hash (RFC 7518 3.2) are refused at load.
        let short = config::Config::parse(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[auth.jwt]\nkeys = [{ alg = \"HS384\", secret = \"0123456789abcdef0123456789abcdef\" }]\n",
        );
        assert!(short.unwrap_err().to_string().contains("an HS384 secret needs at least 48 bytes"));
    }

    #[test]
    fn key_sets_as_providers_publish_them() {
        let text = include_str!("../../tests/fixtures/jwks-mixed.json");
        let keys = config::jwks_parse(text).unwrap();
        let kids: Vec<(Option<&str>, Algorithm)> = keys.iter().map(|k| (k.kid.as_deref(), k.alg)).collect();
        use Algorithm::*;
        let rsa = [RS256, RS384, RS512, PS256, PS384, PS512].map(|a| (Some("rsa-no-alg"), a));
        assert_eq!(
            kids,
            [&rsa[..], &[(Some("ec-no-alg"), ES256)]].concat(),
            "encryption keys and unknown curves left out"
        );
        let c = JwtAuth { keys, issuer: Some("https://issuer.test".into()), ..cfg() };
        let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let ec = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        for (alg, kid, key) in [(RS256, "rsa-no-alg", &rsa), (PS512, "rsa-no-alg", &rsa), (ES256, "ec-no-alg", &ec)] {
            assert!(verify_token(&c, signed(alg, Some(kid), key).as_bytes()).is_ok(), "{alg:?}");
        }
        // The encryption key's kid verifies nothing.
        assert_eq!(verify_token(&c, signed(RS256, Some("rsa-enc"), &rsa).as_bytes()), Err(JwtError::Invalid));
    }

    #[test]
    fn bad_tokens_are_invalid_never_a_panic() {
        let c = cfg();
        let invalid = |t: &str| assert_eq!(verify_token(&c, t.as_bytes()), Err(JwtError::Invalid), "{t}");
        invalid(&hs(&claims(-60))); // expired
        let mut wrong_iss = claims(60);
        wrong_iss["iss"] = json!("https://evil.test");
        invalid(&hs(&wrong_iss));
        let mut wrong_aud = claims(60);
        wrong_aud["aud"] = json!("billing");
        invalid(&hs(&wrong_aud));
        let mut not_yet = claims(600);
        not_yet["nbf"] = json!(now() + 300);
        invalid(&hs(&not_yet));
        let mut no_exp = claims(60);
        no_exp.as_object_mut().unwrap().remove("exp");
        invalid(&hs(&no_exp));
        // Wrong signature: signed with another secret.
        invalid(
            &encode(
                &Header::new(Algorithm::HS256),
                &claims(60),
                &EncodingKey::from_secret(b"another-secret-another-secret-!!"),
            )
            .unwrap(),
        );
        // alg = none, and an HS384 token (no key of that algorithm).
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&claims(60).to_string()));
        invalid(&none);
        invalid(&encode(&Header::new(Algorithm::HS384), &claims(60), &EncodingKey::from_secret(SECRET)).unwrap());
        // RS256 with a kid that names no key.
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("other".into());
        invalid(&encode(&h, &claims(60), &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap()).unwrap());
        // Malformed.
        for t in ["", "a", "a.b", "a.b.c", "....", "\u{0}\u{1}", "eyJhbGciOiJIUzI1NiJ9.e30.", &"x".repeat(10_000)] {
            invalid(t);
        }
    }

    fn b64(s: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn claims_become_header_values() {
        assert_eq!(claim_value(&json!("a b")), Some("a b".into()));
        assert_eq!(claim_value(&json!(7)), Some("7".into()));
        assert_eq!(claim_value(&json!(["read", "write"])), Some("read write".into()));
        assert_eq!(claim_value(&json!({"x": 1})), None);
        assert_eq!(claim_value(&json!("a\r\nb")), None);
    }

    #[test]
    fn required_claims() {
        let claims: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"role":"admin","scope":"orders:read orders:write","groups":["ops","dev"],"level":3,"staff":true}"#,
        )
        .unwrap();
        let req = |pairs: &[(&str, &[&str])]| -> Vec<(String, Vec<String>)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect()
        };
        assert!(meets(&req(&[]), &claims));
        assert!(meets(&req(&[("role", &["admin"]), ("scope", &["orders:write"])]), &claims));
        assert!(meets(&req(&[("groups", &["billing", "ops"]), ("level", &["3"]), ("staff", &["true"])]), &claims));
        assert!(!meets(&req(&[("role", &["adm"])]), &claims));
        assert!(!meets(&req(&[("scope", &["orders"])]), &claims));
        assert!(!meets(&req(&[("groups", &["billing"])]), &claims));
        assert!(!meets(&req(&[("tenant", &["a"])]), &claims));
        assert!(!meets(&req(&[("role", &["admin"]), ("staff", &["false"])]), &claims));
    }
}
