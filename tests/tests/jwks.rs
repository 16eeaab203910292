//! The remote JWT key set (`[auth.jwt.jwks]`), end to end on both drivers: keys served by an
//! upstream verify tokens, a rotated set replaces them when fetched again
//! (`Server::refresh_jwks`, which the binary runs every `refresh`), a failed fetch keeps the
//! keys it had (a reload too), a key set that cannot be fetched at start refuses its tokens while the
//! gateway serves everything else, discovery finds the set through the provider's OpenID
//! configuration, a token naming a key the set lacks has it fetched again, and a provider's
//! max-age shortens the refresh.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

use coregate_tests::*;

const SECRET_A: &str = "key-a-0123456789abcdef0123456789abcdef";
const SECRET_B: &str = "key-b-0123456789abcdef0123456789abcdef";

/// A JWKS document with an HS256 key per `(kid, secret)`.
fn key_set(keys: &[(&str, &str)]) -> String {
    let keys: Vec<_> = keys
        .iter()
        .map(|(kid, secret)| {
            let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
            format!(r#"{{"kty":"oct","alg":"HS256","kid":"{kid}","k":"{k}"}}"#)
        })
        .collect();
    format!(r#"{{"keys":[{}]}}"#, keys.join(","))
}

fn token(kid: &str, secret: &str) -> String {
    token_with(kid, secret, serde_json::json!({ "sub": "user-1" }))
}

/// As [`token`], issued by `issuer`.
fn token_from(kid: &str, secret: &str, issuer: &str) -> String {
    token_with(kid, secret, serde_json::json!({ "sub": "user-1", "iss": issuer }))
}

/// An HS256 token naming `kid` with `claims` and an `exp` five minutes away.
fn token_with(kid: &str, secret: &str, mut claims: serde_json::Value) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 300;
    claims["exp"] = exp.into();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    encode(&header, &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

/// An identity provider serving `GET /jwks` from `served` (status, body), counting requests.
fn provider(served: Arc<Mutex<(u16, String)>>, asked: Arc<AtomicUsize>) -> Upstream {
    Upstream::start(move |mut c| {
        while let Some(req) = c.read_request() {
            assert!(req.start.starts_with("GET /jwks "), "{}", req.start);
            asked.fetch_add(1, Ordering::SeqCst);
            let (status, body) = served.lock().unwrap().clone();
            let mut out = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n").into_bytes();
            with_length(&mut out, body.as_bytes(), &req);
            if !c.write(out) {
                return;
            }
        }
    })
}

fn toml(idp: std::net::SocketAddr, api: std::net::SocketAddr) -> String {
    format!(
        "[[upstreams]]\nname = \"idp\"\nendpoints = [\"{idp}\"]\n[[upstreams]]\nname = \"api\"\nendpoints = [\"{api}\"]\n\
         [auth.jwt.jwks]\nupstream = \"idp\"\npath = \"/jwks\"\nrefresh = \"1h\"\n\
         [[routes]]\npath = \"/open\"\nupstream = \"api\"\n\
         [[routes]]\npath = \"/\"\nupstream = \"api\"\nauth = \"jwt\"\n"
    )
}

/// The status of `GET /x` with `token` on a new connection.
fn status_with(gw: &Gateway, token: &str) -> u16 {
    gw.client().request(format!("GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n")).status()
}

both_drivers!(keys_come_from_the_provider_and_follow_its_rotation, |io| {
    let served = Arc::new(Mutex::new((200, key_set(&[("a", SECRET_A)]))));
    let asked = Arc::new(AtomicUsize::new(0));
    let idp = provider(served.clone(), asked.clone());
    let api = Upstream::echo();
    let mut gw = Gateway::start(io, &toml(idp.addr, api.addr));
    assert_eq!(asked.load(Ordering::SeqCst), 1, "fetched once at start");
    let (a, b) = (token("a", SECRET_A), token("b", SECRET_B));
    assert_eq!(status_with(&gw, &a), 200);
    assert_eq!(status_with(&gw, &b), 401);

    // The provider rotates: b is published, a withdrawn.
    served.lock().unwrap().1 = key_set(&[("b", SECRET_B)]);
    assert_eq!(gw.refresh_jwks(), Ok(true));
    assert_eq!(status_with(&gw, &b), 200);
    assert_eq!(status_with(&gw, &a), 401);
    // The same set again: nothing to reload.
    assert_eq!(gw.refresh_jwks(), Ok(false));

    // The provider fails, then serves something that is not a key set: b's key stays.
    served.lock().unwrap().0 = 503;
    let e = gw.refresh_jwks().unwrap_err();
    assert!(e.contains("GET /jwks from upstream \"idp\"") && e.contains("status 503"), "{e}");
    *served.lock().unwrap() = (200, "<html>maintenance</html>".into());
    assert!(gw.refresh_jwks().unwrap_err().contains("not a JWKS document"));
    assert_eq!(status_with(&gw, &b), 200);
    // A reload (SIGHUP) fetches the set anew; failing, it keeps the one fetched before.
    gw.reload_extra(&toml(idp.addr, api.addr)).unwrap();
    assert_eq!(status_with(&gw, &b), 200);
    assert_eq!(asked.load(Ordering::SeqCst), 6);
    // Once the provider is back, a reload takes its set.
    *served.lock().unwrap() = (200, key_set(&[("a", SECRET_A)]));
    gw.reload_extra(&toml(idp.addr, api.addr)).unwrap();
    assert_eq!((status_with(&gw, &a), status_with(&gw, &b)), (200, 401));
});

both_drivers!(a_key_set_that_cannot_be_fetched_refuses_its_tokens_and_the_rest_serves, |io| {
    let api = Upstream::echo();
    let mut gw = Gateway::start(io, &toml(dead_addr(), api.addr));
    assert_eq!(gw.client().request("GET /open HTTP/1.1\r\nHost: a\r\n\r\n").status(), 200);
    let r = gw
        .client()
        .request(format!("GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\n\r\n", token("a", SECRET_A)));
    assert_eq!(r.status(), 401);
    assert!(r.header("www-authenticate").unwrap().contains("invalid_token"));
    assert!(gw.refresh_jwks().unwrap_err().contains("connect"));
});

both_drivers!(discovery_finds_the_key_set_through_the_provider_configuration, |io| {
    // An identity provider that publishes its configuration and, where that names, its keys.
    let issuer = Arc::new(Mutex::new("https://idp.test/realms/main".to_string()));
    let served = issuer.clone();
    let idp = Upstream::start(move |mut c| {
        while let Some(req) = c.read_request() {
            let (status, body) = if req.start.starts_with("GET /.well-known/openid-configuration ") {
                let iss = served.lock().unwrap().clone();
                (200, format!(r#"{{"issuer":"{iss}","jwks_uri":"https://idp.test/realms/main/certs"}}"#))
            } else if req.start.starts_with("GET /realms/main/certs ") {
                (200, key_set(&[("a", SECRET_A)]))
            } else {
                (404, String::new())
            };
            let mut out = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n").into_bytes();
            with_length(&mut out, body.as_bytes(), &req);
            if !c.write(out) {
                return;
            }
        }
    });
    let api = Upstream::echo();
    let config = toml(idp.addr, api.addr)
        .replace("path = \"/jwks\"", "discovery = \"/.well-known/openid-configuration\"")
        + "[auth.jwt]\nissuer = \"https://idp.test/realms/main\"\n";
    let mut gw = Gateway::start(io, &config);
    let a = token_from("a", SECRET_A, "https://idp.test/realms/main");
    assert_eq!(status_with(&gw, &a), 200);
    assert_eq!(gw.refresh_jwks(), Ok(false), "the same set through the same configuration");
    // A configuration for another realm is not taken, and the keys fetched before stay.
    *issuer.lock().unwrap() = "https://idp.test/realms/other".into();
    let e = gw.refresh_jwks().unwrap_err();
    assert!(e.contains("GET /.well-known/openid-configuration") && e.contains("not auth.jwt.issuer"), "{e}");
    assert_eq!(status_with(&gw, &a), 200);
});

both_drivers!(a_token_naming_a_key_the_set_lacks_fetches_it_again_at_most_every_10_s, |io| {
    let served = Arc::new(Mutex::new((200, key_set(&[("a", SECRET_A)]))));
    let asked = Arc::new(AtomicUsize::new(0));
    let idp = provider(served.clone(), asked.clone());
    let api = Upstream::echo();
    let mut gw = Gateway::start(io, &toml(idp.addr, api.addr));
    let (a, b) = (token("a", SECRET_A), token("b", SECRET_B));
    assert_eq!(status_with(&gw, &a), 200);
    assert!(!gw.jwks_wanted(), "known keys ask for nothing");
    // The provider publishes b; a token signed with it is refused, and asks for the set.
    served.lock().unwrap().1 = key_set(&[("a", SECRET_A), ("b", SECRET_B)]);
    assert_eq!(status_with(&gw, &b), 401);
    assert!(gw.jwks_wanted());
    // Within 10 s of the last fetch nothing is fetched; after, the set is, and b passes.
    assert_eq!(gw.refresh_jwks_for_unknown_key(std::time::Duration::ZERO), Ok(false));
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!(gw.refresh_jwks_for_unknown_key(std::time::Duration::from_secs(11)), Ok(true));
    assert_eq!(status_with(&gw, &b), 200);
    // A token whose kid is known but whose signature is wrong asks for nothing.
    assert_eq!(status_with(&gw, &token("b", SECRET_A)), 401);
    assert!(!gw.jwks_wanted());
});

both_drivers!(the_providers_max_age_shortens_the_refresh, |io| {
    let max_age = Arc::new(Mutex::new(60));
    let served = max_age.clone();
    let idp = Upstream::start(move |mut c| {
        while let Some(req) = c.read_request() {
            let age = *served.lock().unwrap();
            let mut out = format!("HTTP/1.1 200 OK\r\ncache-control: public, max-age={age}\r\n").into_bytes();
            with_length(&mut out, key_set(&[("a", SECRET_A)]).as_bytes(), &req);
            if !c.write(out) {
                return;
            }
        }
    });
    let api = Upstream::echo();
    let gw = Gateway::start(io, &toml(idp.addr, api.addr));
    assert_eq!(status_with(&gw, &token("a", SECRET_A)), 200);
    // refresh = "1h" in the configuration: the provider's 60 s is sooner.
    assert_eq!(gw.jwks_interval(), Some(std::time::Duration::from_secs(60)));
    // A max-age of a few seconds does not make the gateway ask that often.
    *max_age.lock().unwrap() = 2;
    let gw = Gateway::start(io, &toml(idp.addr, api.addr));
    assert_eq!(gw.jwks_interval(), Some(std::time::Duration::from_secs(30)));
});
