//! Gateway policies end to end, on both drivers: routing by method and exact path, direct
//! responses and redirects, API keys and consumers, HTTP Basic users, rate limits (including the global
//! promise across workers), header edits and prefix stripping.

use std::sync::{Arc, Mutex};

use coregate_tests::*;

/// An upstream that records every request it sees and echoes it.
fn recording() -> (Upstream, Arc<Mutex<Vec<Message>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let up = Upstream::start(move |mut c| {
        while let Some(req) = c.read_request() {
            log.lock().unwrap().push(req.clone());
            c.write(echo_response(&req));
        }
    });
    (up, seen)
}

fn upstream_section(addr: std::net::SocketAddr) -> String {
    format!("[[upstreams]]\nname = \"api\"\nendpoints = [\"{addr}\"]\n")
}

both_drivers!(methods_exact_paths_direct_responses_and_redirects, |io| {
    let (up, _) = recording();
    let gw = Gateway::start(
        io,
        &format!(
            "{}\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n\
             [[routes]]\npath_exact = \"/health\"\nrespond = {{ status = 200, body = \"ok\\n\", headers = {{ content-type = \"text/plain\" }} }}\n\
             [[routes]]\npath = \"/old\"\nredirect = {{ location = \"https://example.com/new\", status = 301 }}\n\
             [[routes]]\npath = \"/write\"\nmethods = [\"POST\"]\nrespond = {{ status = 202, body = \"queued\" }}\n",
            upstream_section(up.addr)
        ),
    );
    let mut c = gw.client();
    let r = c.request("GET /health HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status(), r.text().as_str(), r.header("content-type")), (200, "ok\n", Some("text/plain")));
    assert_eq!(c.request("GET /health/x HTTP/1.1\r\nHost: a\r\n\r\n").text(), "GET /health/x\n", "exact, not prefix");
    let r = c.request("GET /old/page HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status(), r.header("location")), (301, Some("https://example.com/new")));
    assert_eq!(c.request("POST /write HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").status(), 202);
    assert_eq!(c.request("GET /write HTTP/1.1\r\nHost: a\r\n\r\n").text(), "GET /write\n", "GET falls through");
    assert_eq!(up.connection_count(), 1);
});

both_drivers!(api_keys_identify_consumers, |io| {
    let (up, seen) = recording();
    let gw = Gateway::start(
        io,
        &format!(
            "{}\n[auth.api_key]\nquery = \"api_key\"\n\
             [[consumers]]\nname = \"alice\"\nkeys = [\"alice-secret-1\"]\n\
             [[consumers]]\nname = \"bob\"\nkeys = [\"sha256:{}\"]\n\
             [[routes]]\npath = \"/\"\nupstream = \"api\"\nauth = \"api_key\"\n\
             [[routes]]\npath = \"/admin\"\nupstream = \"api\"\nauth = \"api_key\"\nconsumers = [\"alice\"]\n",
            upstream_section(up.addr),
            // sha256("bob-secret-22")
            "416b11aaf26760a8cc99fa15978ff9be2396347b01beb743d9f8b83f07716ea5"
        ),
    );
    let mut c = gw.client();
    let r = c.request("GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), 401);
    assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("ApiKey")));
    assert_eq!(c.request("GET /x HTTP/1.1\r\nHost: a\r\nX-Api-Key: wrong-key-123\r\n\r\n").status(), 401);
    let r = c.request("GET /x HTTP/1.1\r\nHost: a\r\nX-Api-Key: alice-secret-1\r\nX-Consumer: admin\r\n\r\n");
    assert_eq!(r.status(), 200);
    let r = c.request("GET /x?a=1&api_key=alice-secret-1&b=2 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text(), "GET /x?a=1&b=2\n", "the key is stripped from the query");
    assert_eq!(c.request("GET /admin HTTP/1.1\r\nHost: a\r\nX-Api-Key: alice-secret-1\r\n\r\n").status(), 200);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "refused requests never reach the upstream");
        assert_eq!(seen[0].header_all("x-consumer"), vec!["alice"], "the consumer is named, a spoofed value dropped");
        assert_eq!(seen[0].header("x-api-key"), None, "the key is not forwarded");
    }
    // Bob's key is configured only as its digest; it works, but not on alice's route.
    assert_eq!(c.request("GET /y HTTP/1.1\r\nHost: a\r\nX-Api-Key: bob-secret-22\r\n\r\n").status(), 200);
    assert_eq!(c.request("GET /admin HTTP/1.1\r\nHost: a\r\nX-Api-Key: bob-secret-22\r\n\r\n").status(), 403);
});

both_drivers!(consumer_allow_list_is_403, |io| {
    let (up, _) = recording();
    let gw = Gateway::start(
        io,
        &format!(
            "{}\n[[consumers]]\nname = \"alice\"\nkeys = [\"alice-secret-1\"]\n\
             [[consumers]]\nname = \"bob\"\nkeys = [\"bob-secret-22\"]\n\
             [[routes]]\npath = \"/admin\"\nupstream = \"api\"\nauth = \"api_key\"\nconsumers = [\"alice\"]\n",
            upstream_section(up.addr)
        ),
    );
    let mut c = gw.client();
    assert_eq!(c.request("GET /admin HTTP/1.1\r\nHost: a\r\nX-Api-Key: bob-secret-22\r\n\r\n").status(), 403);
    assert_eq!(c.request("GET /admin HTTP/1.1\r\nHost: a\r\nX-Api-Key: alice-secret-1\r\n\r\n").status(), 200);
});

// Groups (Kong's ACL): a route admits the members of the groups it names, beside the
// consumers it names; Basic users are consumers too.
both_drivers!(routes_admit_consumer_groups, |io| {
    let (up, seen) = recording();
    let gw = Gateway::start(
        io,
        &format!(
            "{}\n[[consumers]]\nname = \"alice\"\nkeys = [\"alice-secret-1\"]\ngroups = [\"partners\", \"staff\"]\n\
             [[consumers]]\nname = \"bob\"\nkeys = [\"bob-secret-22\"]\ngroups = [\"partners\"]\n\
             [[consumers]]\nname = \"carol\"\nkeys = [\"carol-secret-3\"]\n\
             [[routes]]\npath = \"/partners\"\nupstream = \"api\"\nauth = \"api_key\"\ngroups = [\"partners\"]\n\
             [[routes]]\npath = \"/staff\"\nupstream = \"api\"\nauth = \"api_key\"\ngroups = [\"staff\"]\nconsumers = [\"carol\"]\n\
             [[routes]]\npath = \"/public\"\nupstream = \"api\"\nauth = \"api_key\"\ndeny_groups = [\"staff\"]\n",
            upstream_section(up.addr)
        ),
    );
    let mut c = gw.client();
    for (path, key, status) in [
        ("/partners", "alice-secret-1", 200),
        ("/partners", "bob-secret-22", 200),
        ("/partners", "carol-secret-3", 403),
        ("/staff", "alice-secret-1", 200),
        ("/staff", "bob-secret-22", 403),
        ("/staff", "carol-secret-3", 200),
        ("/public", "alice-secret-1", 403),
        ("/public", "bob-secret-22", 200),
        ("/public", "carol-secret-3", 200),
    ] {
        let r = c.request(format!("GET {path} HTTP/1.1\r\nHost: a\r\nX-Api-Key: {key}\r\n\r\n"));
        assert_eq!(r.status(), status, "{path} with {key}");
    }
    // The upstream learns the consumer's groups; a client's own claim to some never passes.
    let r = c
        .request("GET /partners HTTP/1.1\r\nHost: a\r\nX-Api-Key: alice-secret-1\r\nX-Consumer-Groups: admins\r\n\r\n");
    assert_eq!(r.status(), 200);
    let r =
        c.request("GET /public HTTP/1.1\r\nHost: a\r\nX-Api-Key: carol-secret-3\r\nX-Consumer-Groups: admins\r\n\r\n");
    assert_eq!(r.status(), 200);
    let seen = seen.lock().unwrap();
    let (alice, carol) = (&seen[seen.len() - 2], &seen[seen.len() - 1]);
    assert_eq!(alice.header_all("x-consumer-groups"), vec!["partners, staff"]);
    assert_eq!(alice.header("x-consumer"), Some("alice"));
    assert!(carol.header_all("x-consumer-groups").is_empty(), "carol is in no group");
});

both_drivers!(consumers_carry_their_own_limits_across_routes, |io| {
    let (up, _) = recording();
    let gw = Gateway::start_with_workers(
        io,
        1,
        &format!(
            "{}\n[[consumers]]\nname = \"free\"\nkeys = [\"free-key-123\"]\nrate_limits = [{{ rate = 0.1, burst = 5 }}]\n\
             [[consumers]]\nname = \"gold\"\nkeys = [\"gold-key-456\"]\n\
             [[routes]]\npath = \"/a\"\nupstream = \"api\"\nauth = \"api_key\"\n\
             [[routes]]\npath = \"/b\"\nupstream = \"api\"\nauth = \"api_key\"\n",
            upstream_section(up.addr)
        ),
    );
    let mut c = gw.client();
    let get = |c: &mut Client, path: &str, key: &str| {
        c.request(format!("GET {path} HTTP/1.1\r\nHost: a\r\nX-Api-Key: {key}\r\n\r\n")).status()
    };
    // The free plan's burst is spent over both routes together (plus at most one lease of
    // credit, see ratelimit.rs), then both refuse.
    let free: Vec<u16> = (0..20).map(|i| get(&mut c, if i % 2 == 0 { "/a" } else { "/b" }, "free-key-123")).collect();
    let ok = free.iter().filter(|&&s| s == 200).count();
    assert!((5..=8).contains(&ok), "{free:?}");
    assert_eq!(&free[16..], [429, 429, 429, 429], "{free:?}");
    // Another consumer without a plan is not limited.
    assert!((0..12).all(|_| get(&mut c, "/a", "gold-key-456") == 200));
});

both_drivers!(basic_credentials_identify_consumers, |io| {
    use base64::Engine;
    let (up, seen) = recording();
    let hash = bcrypt::hash_with_salt("wonderland", 4, [9; 16]).unwrap().format_for_version(bcrypt::Version::TwoY);
    let gw = Gateway::start(
        io,
        &format!(
            "{}
[auth.basic]
realm = \"staff only\"
             [[consumers]]
name = \"alice\"
passwords = [\"{hash}\"]
             [[consumers]]
name = \"bob\"
passwords = [\"{}\"]
             [[routes]]
path = \"/\"
upstream = \"api\"
auth = \"basic\"
             [[routes]]
path = \"/admin\"
upstream = \"api\"
auth = \"basic\"
consumers = [\"alice\"]
",
            upstream_section(up.addr),
            config::sha256_password("builder"),
        ),
    );
    let basic = |cred: &str| base64::engine::general_purpose::STANDARD.encode(cred);
    let mut c = gw.client();
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), 401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"staff only\", charset=\"UTF-8\""));
    for wrong in ["alice:Wonderland", "bob:wonderland", "carol:builder"] {
        let r = c.request(format!("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic {}\r\n\r\n", basic(wrong)));
        assert_eq!(r.status(), 401, "{wrong}");
    }
    // Twice: the second is answered from the worker's memory of verified credentials.
    for _ in 0..2 {
        let r = c.request(format!(
            "GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Basic {}\r\nX-Consumer: mallory\r\n\r\n",
            basic("alice:wonderland")
        ));
        assert_eq!(r.status(), 200);
    }
    let bob = format!("Authorization: Basic {}\r\n", basic("bob:builder"));
    assert_eq!(c.request(format!("GET /y HTTP/1.1\r\nHost: a\r\n{bob}\r\n")).status(), 200);
    assert_eq!(c.request(format!("GET /admin HTTP/1.1\r\nHost: a\r\n{bob}\r\n")).status(), 403);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    // The upstream learns who, never the password, and never a client's own claim.
    assert_eq!(seen[0].header_all("x-consumer"), vec!["alice"]);
    assert_eq!(seen[2].header_all("x-consumer"), vec!["bob"]);
    assert!(seen.iter().all(|m| m.header("authorization").is_none()));
});

both_drivers!(header_edits_and_prefix_stripping, |io| {
    let (up, seen) = recording();
    let gw = Gateway::start(
        io,
        &format!(
            "{}\n[[routes]]\npath = \"/svc/\"\nupstream = \"api\"\nstrip_prefix = true\n\
             request_headers = {{ set = {{ x-client = \"ip={{client_ip}}\", x-original-uri = \"{{uri}}\", x-site = \"{{host}}\" }}, add = {{ x-added = \"1\" }}, remove = [\"x-secret\"] }}\n\
             response_headers = {{ set = {{ x-served-by = \"coregate\" }}, remove = [\"x-echo-x-added\"] }}\n",
            upstream_section(up.addr)
        ),
    );
    let mut c = gw.client();
    let r =
        c.request("GET /svc/users/7?q=1 HTTP/1.1\r\nHost: A.example:81\r\nX-Secret: s\r\nX-Client: spoofed\r\n\r\n");
    assert_eq!(r.text(), "GET /users/7?q=1\n");
    assert_eq!(r.header("x-served-by"), Some("coregate"));
    assert_eq!(r.header("x-echo-x-added"), None, "response field removed");
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].header("x-secret"), None);
    assert_eq!(seen[0].header_all("x-client"), vec!["ip=127.0.0.1"]);
    assert_eq!(seen[0].header("x-added"), Some("1"));
    // `{uri}`: the target as the client sent it (before strip_prefix); `{host}`: nginx's $host.
    assert_eq!(seen[0].header("x-original-uri"), Some("/svc/users/7?q=1"));
    assert_eq!(seen[0].header("x-site"), Some("a.example"));
});

both_drivers!(fields_coregate_writes_give_way_to_the_routes_edits, |io| {
    let (up, seen) = recording();
    let gw = Gateway::start(
        io,
        &format!(
            "{}\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n\
             request_headers = {{ set = {{ host = \"billing.internal\", x-forwarded-proto = \"https\" }}, remove = [\"x-forwarded-for\"] }}\n",
            upstream_section(up.addr)
        ),
    );
    let r = gw.client().request("GET / HTTP/1.1\r\nHost: api.example\r\nX-Forwarded-For: 10.1.1.1\r\n\r\n");
    assert_eq!(r.status(), 200);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].header_all("host"), vec!["billing.internal"], "one Host, the route's");
    assert_eq!(seen[0].header("x-forwarded-host"), Some("api.example"), "the client's, for the upstream");
    assert_eq!(seen[0].header_all("x-forwarded-proto"), vec!["https"], "the route's, once");
    assert!(seen[0].header_all("x-forwarded-for").is_empty(), "removed: neither the client's nor coregate's");
});

both_drivers!(rate_limit_answers_429_with_headers, |io| {
    let (up, _) = recording();
    let gw = Gateway::start(
        io,
        &format!(
            "{}\n[[routes]]\npath = \"/\"\nupstream = \"api\"\nrate_limits = [{{ rate = 0.5, burst = 10, key = \"ip\" }}]\n",
            upstream_section(up.addr)
        ),
    );
    let mut c = gw.client();
    let mut ok = 0;
    let mut refused = None;
    for i in 0..40 {
        let r = c.request(format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n"));
        match r.status() {
            200 => ok += 1,
            429 => refused = Some(r),
            s => panic!("status {s}"),
        }
    }
    // The burst, plus at most one lease of credit per worker (see ratelimit.rs).
    assert!((10..=16).contains(&ok), "{ok} passed");
    let r = refused.expect("some requests were refused");
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(r.header("ratelimit-limit"), Some("10"));
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    assert!(r.header("ratelimit-reset").is_some());
});

both_drivers!(rate_limit_is_global_across_workers, |io| {
    use std::time::{Duration, Instant};
    let up = Upstream::echo();
    let gw = Gateway::start(
        io,
        &format!(
            "{}\n[[routes]]\npath = \"/\"\nupstream = \"api\"\nrate_limits = [{{ rate = 100, burst = 20 }}]\n",
            upstream_section(up.addr)
        ),
    );
    // Eight clients on their own connections (spread over both workers by the kernel),
    // each as fast as it can for two seconds.
    let run_for = Duration::from_secs(2);
    let start = Instant::now();
    let addr = gw.addr;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut ok = 0u32;
                while start.elapsed() < run_for {
                    if c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status() == 200 {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let ok: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let secs = start.elapsed().as_secs_f64();
    let expected = 20.0 + 100.0 * secs;
    let ratio = f64::from(ok) / expected;
    assert!((0.85..=1.15).contains(&ratio), "{ok} admitted in {secs:.2}s, expected about {expected:.0} ({ratio:.3})");
});

both_drivers!(ip_rules_deny_then_allow, |io| {
    let (up, _) = recording();
    let gw = Gateway::start(
        io,
        &format!(
            "{}\n[[routes]]\npath = \"/open\"\nupstream = \"api\"\nallow_ips = [\"127.0.0.0/8\"]\n\
             [[routes]]\npath = \"/internal\"\nupstream = \"api\"\nallow_ips = [\"10.0.0.0/8\"]\n\
             [[routes]]\npath = \"/blocked\"\nupstream = \"api\"\ndeny_ips = [\"127.0.0.1\"]\n",
            upstream_section(up.addr)
        ),
    );
    let mut c = gw.client();
    assert_eq!(c.request("GET /open HTTP/1.1\r\nHost: a\r\n\r\n").status(), 200);
    assert_eq!(c.request("GET /internal HTTP/1.1\r\nHost: a\r\n\r\n").status(), 403);
    assert_eq!(c.request("GET /blocked HTTP/1.1\r\nHost: a\r\n\r\n").status(), 403);
    assert_eq!(c.request("GET /open HTTP/1.1\r\nHost: a\r\n\r\n").status(), 200, "a 403 keeps the connection");
});

both_drivers!(cors_preflight_and_response_fields, |io| {
    let (up, seen) = recording();
    let gw = Gateway::start(
        io,
        &format!(
            "{}\n[[consumers]]\nname = \"alice\"\nkeys = [\"alice-secret-1\"]\n\
             [[routes]]\npath = \"/\"\nupstream = \"api\"\nauth = \"api_key\"\n\
             cors = {{ origins = [\"https://app.example.com\"], methods = [\"GET\", \"POST\"], headers = [\"x-api-key\", \"content-type\"], expose_headers = [\"x-request-id\"], max_age = \"10m\", credentials = true }}\n",
            upstream_section(up.addr)
        ),
    );
    let mut c = gw.client();
    // The preflight is answered by the gateway, before authentication.
    let r = c.request("OPTIONS /items HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example.com\r\nAccess-Control-Request-Method: POST\r\n\r\n");
    assert_eq!(r.status(), 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(r.header("access-control-allow-headers"), Some("x-api-key, content-type"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let r = c.request("OPTIONS /items HTTP/1.1\r\nHost: a\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n\r\n");
    assert_eq!(r.status(), 403);
    let r = c.request(
        "GET /items HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example.com\r\nX-Api-Key: alice-secret-1\r\n\r\n",
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(r.header("access-control-expose-headers"), Some("x-request-id"));
    assert_eq!(r.header("vary"), Some("origin"));
    let r = c
        .request("GET /items HTTP/1.1\r\nHost: a\r\nOrigin: https://evil.example\r\nX-Api-Key: alice-secret-1\r\n\r\n");
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(seen.lock().unwrap().len(), 2, "preflights never reach the upstream");
});

both_drivers!(jwt_bearer_tokens, |io| {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let secret = "0123456789abcdef0123456789abcdef";
    let (up, seen) = recording();
    let gw = Gateway::start(
        io,
        &format!(
            "{}\n[auth.jwt]\nissuer = \"https://issuer.test\"\nclaims_to_headers = {{ sub = \"x-user\", scope = \"x-scope\" }}\n\
             keys = [{{ alg = \"HS256\", secret = \"{secret}\" }}, {{ alg = \"RS256\", pem_file = \"{}/fixtures/rsa-public.pem\" }}]\n\
             [[routes]]\npath = \"/\"\nupstream = \"api\"\nauth = \"jwt\"\n\
             request_headers = {{ set = {{ x-who = \"{{consumer}}\", x-iss = \"{{claim:iss}}\" }} }}\n\
             rate_limits = [{{ rate = 1000, burst = 1000, key = \"consumer\" }}]\n\
             [[routes]]\npath = \"/write\"\nupstream = \"api\"\nauth = \"jwt\"\nrequire_claims = {{ scope = \"write\", sub = [\"user-7\", \"user-8\"] }}\n\
             [[routes]]\npath = \"/admin\"\nupstream = \"api\"\nauth = \"jwt\"\nrequire_claims = {{ scope = \"admin\" }}\n",
            upstream_section(up.addr),
            env!("CARGO_MANIFEST_DIR")
        ),
    );
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 300;
    let claims =
        serde_json::json!({"sub": "user-7", "iss": "https://issuer.test", "exp": exp, "scope": ["read", "write"]});
    let token = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap();
    let mut c = gw.client();
    let r = c.request("GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"coregate\""));
    let r = c.request("GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer not.a.token\r\n\r\n");
    assert_eq!(r.status(), 401);
    assert!(r.header("www-authenticate").unwrap().contains("invalid_token"));
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert_eq!(
        c.request(format!("GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {forged}\r\n\r\n")).status(),
        401
    );
    let r = c.request(format!("GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nX-User: admin\r\n\r\n"));
    assert_eq!(r.status(), 200);
    // Authorisation by claims: "write" is in the scope array and the subject is listed.
    let bearer = format!("Authorization: Bearer {token}\r\n");
    assert_eq!(c.request(format!("GET /write HTTP/1.1\r\nHost: a\r\n{bearer}\r\n")).status(), 200);
    let r = c.request(format!("GET /admin HTTP/1.1\r\nHost: a\r\n{bearer}\r\n"));
    assert_eq!(r.status(), 403);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"coregate\", error=\"insufficient_scope\""));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "refused requests never reach the upstream");
    assert_eq!(seen[0].header_all("x-user"), vec!["user-7"], "claims forwarded, a spoofed field dropped");
    assert_eq!(seen[0].header("x-scope"), Some("read write"));
    assert_eq!(seen[0].header("x-who"), Some("user-7"));
    assert_eq!(seen[0].header("x-iss"), Some("https://issuer.test"));
});

both_drivers!(templates_conditions_and_rewrites, |io| {
    let (up, seen) = recording();
    let gw = Gateway::start(
        io,
        &format!(
            "{}\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n\
             [[routes]]\npath_template = \"/users/{{id}}/orders/{{order}}\"\nupstream = \"api\"\n\
             rewrite = \"/v2/orders/{{order}}\"\nquery_add = {{ user = \"x\" }}\nquery_remove = [\"debug\"]\n\
             request_headers = {{ set = {{ x-user-id = \"{{id}}\" }} }}\n\
             [[routes]]\npath = \"/beta\"\nheaders = {{ x-beta = \"*\" }}\nrespond = {{ status = 200, body = \"beta\" }}\n\
             [[routes]]\npath = \"/beta\"\nquery = {{ v = \"2\" }}\nrespond = {{ status = 200, body = \"v2\" }}\n",
            upstream_section(up.addr)
        ),
    );
    let mut c = gw.client();
    let r = c.request("GET /users/42/orders/9?debug=1&x=y HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.text(), "GET /v2/orders/9?x=y&user=x\n");
    assert_eq!(seen.lock().unwrap()[0].header("x-user-id"), Some("42"));
    assert_eq!(
        c.request("GET /users/42/orders HTTP/1.1\r\nHost: a\r\n\r\n").text(),
        "GET /users/42/orders\n",
        "segment count differs"
    );
    assert_eq!(c.request("GET /beta HTTP/1.1\r\nHost: a\r\nX-Beta: yes\r\n\r\n").text(), "beta");
    assert_eq!(c.request("GET /beta?v=2 HTTP/1.1\r\nHost: a\r\n\r\n").text(), "v2");
    assert_eq!(
        c.request("GET /beta?v=3 HTTP/1.1\r\nHost: a\r\n\r\n").text(),
        "GET /beta?v=3\n",
        "no condition holds: next route"
    );
});

both_drivers!(regex_routes_capture_rewrite_and_redirect, |io| {
    let (up, seen) = recording();
    let gw = Gateway::start(
        io,
        &format!(
            "{}\n[[routes]]\npath = \"/files\"\nrespond = {{ status = 200, body = \"prefix\" }}\n\
             [[routes]]\npath_regex = '/files/(?P<name>[a-z0-9_-]+)\\.(?P<ext>png|jpg)'\nupstream = \"api\"\n\
             rewrite = \"/static/{{ext}}/{{name}}\"\nrequest_headers = {{ set = {{ x-file = \"{{name}}\" }} }}\n\
             [[routes]]\npath_exact = \"/files/a.png\"\nrespond = {{ status = 200, body = \"exact\" }}\n\
             [[routes]]\npath_regex = '/old/(?P<rest>.+)'\nredirect = {{ location = \"/new/{{rest}}\", status = 301 }}\n",
            upstream_section(up.addr)
        ),
    );
    let mut c = gw.client();
    assert_eq!(c.request("GET /files/cat.png?v=1 HTTP/1.1\r\nHost: a\r\n\r\n").text(), "GET /static/png/cat?v=1\n");
    assert_eq!(seen.lock().unwrap()[0].header("x-file"), Some("cat"));
    assert_eq!(c.request("GET /files/a.png HTTP/1.1\r\nHost: a\r\n\r\n").text(), "exact", "an exact path first");
    assert_eq!(c.request("GET /files/cat.gif HTTP/1.1\r\nHost: a\r\n\r\n").text(), "prefix", "no match: the prefix");
    assert_eq!(c.request("GET /files/x/cat.png HTTP/1.1\r\nHost: a\r\n\r\n").text(), "prefix", "the whole path");
    let r = c.request("GET /old/a/b?q HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status(), r.header("location")), (301, Some("/new/a/b")));
    assert_eq!(seen.lock().unwrap().len(), 1, "only the regex route's request went upstream");
});

#[test]
fn edits_of_framing_fields_and_a_second_host_are_refused() {
    let base = "[server]\nlisten = [\"127.0.0.1:0\"]\n[[upstreams]]\nname = \"api\"\nendpoints = [\"127.0.0.1:9\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n";
    let err = |route: &str| config::Config::parse(&format!("{base}{route}")).expect_err(route).to_string();
    for (edit, key) in [
        ("request_headers = { set = { content-length = \"1\" } }", "routes[0].request_headers.set.content-length"),
        ("request_headers = { add = { Transfer-Encoding = \"chunked\" } }", "request_headers.add.Transfer-Encoding"),
        ("request_headers = { add = { host = \"x\" } }", "routes[0].request_headers.add.host"),
        ("request_headers = { remove = [\"host\"] }", "routes[0].request_headers.remove[0]"),
        ("request_headers = { remove = [\"connection\"] }", "routes[0].request_headers.remove[0]"),
        ("response_headers = { set = { host = \"x\" } }", "routes[0].response_headers.set.host"),
        ("response_headers = { set = { content-length = \"5\" } }", "routes[0].response_headers.set.content-length"),
        ("response_headers = { remove = [\"transfer-encoding\"] }", "routes[0].response_headers.remove[0]"),
    ] {
        assert!(err(edit).contains(key), "{edit}: {}", err(edit));
    }
    assert!(
        config::Config::parse(&format!("{base}request_headers = {{ set = {{ Host = \"b.internal\" }} }}\n")).is_ok()
    );
}
