//! The remote JWT key set (`[auth.jwt.jwks]`): fetched from its upstream's endpoints in
//! turn (`fetch`; with `discovery`, at the path its provider's OpenID configuration names),
//! on the thread that starts and reloads the server, never a worker's. The server fetches it
//! when a configuration starts, every `refresh` (or the provider's shorter max-age) and for
//! a token naming a key it lacks; workers see a new set as a reload brings it
//! ([`crate::Server::refresh_jwks`]). Parsing it is config's.

use std::time::{Duration, Instant};

use config::{Config, MAX_DISCOVERY_BYTES, MAX_JWKS_BYTES};

use crate::fetch::{Get, Target};

/// A remote key set is fetched again this soon after a failure, whatever its `refresh`,
/// while the gateway has none of its keys (tokens signed with them are refused meanwhile).
pub(crate) const RETRY: Duration = Duration::from_secs(10);

/// A token naming a key the set lacks fetches the set again, at most this often.
pub(crate) const UNKNOWN_KEY_PAUSE: Duration = Duration::from_secs(10);

/// The key set's text and its answer's max-age, from the first endpoint that answers 200
/// with all of it (after the provider's configuration, with `discovery`, which names its
/// target); `None` without `[auth.jwt.jwks]`. The error names each endpoint tried and what
/// went wrong.
pub(crate) fn fetch(cfg: &Config) -> Option<Result<(String, Option<Duration>), String>> {
    let remote = cfg.jwt.remote.as_ref()?;
    let up = &cfg.upstreams[remote.upstream];
    let tls = match up.tls.as_ref().map(crate::upstream_tls::client).transpose() {
        Ok(tls) => tls,
        Err(e) => return Some(Err(format!("upstream {:?} tls: {e}", up.name))),
    };
    let text = |path: &str, what: &str, max_body: usize| {
        let get = Get { path, host: None, user_agent: "coregate-jwks", timeout: remote.timeout, max_body };
        let mut failures = Vec::new();
        for e in 0..up.endpoints.len() {
            let target = Target::of(up, e);
            let answer = crate::fetch::get(&target, &get, tls.as_ref()).and_then(|a| match a {
                a if a.status != 200 => Err(format!("status {}", a.status)),
                a if !a.whole => Err(format!("{what} over {max_body} bytes")),
                a => match String::from_utf8(a.body) {
                    Ok(text) => Ok((text, a.max_age.map(Duration::from_secs))),
                    Err(_) => Err(format!("{what} that is not UTF-8")),
                },
            });
            match answer {
                Ok(got) => return Ok(got),
                Err(why) => failures.push(format!("{}: {why}", target.addr)),
            }
        }
        Err(format!("GET {path} from upstream {:?}: {}", up.name, failures.join("; ")))
    };
    let path = match &remote.discovery {
        None => remote.path.clone(),
        Some(d) => match text(d, "a provider configuration", MAX_DISCOVERY_BYTES).and_then(|(doc, _)| {
            config::discovered(&doc, cfg.jwt.issuer.as_deref()).map_err(|e| format!("GET {d}: {e}"))
        }) {
            Ok(path) => path,
            Err(e) => return Some(Err(e)),
        },
    };
    Some(text(&path, "a key set", MAX_JWKS_BYTES))
}

/// `cfg` with its remote key set: fetched now unless `cfg` has one already (a copy of the
/// running configuration, as a DNS change makes). When the fetch fails, the set of
/// `running` stays if it came from the same place; otherwise the configuration starts
/// without it, its tokens refused until a fetch succeeds ([`RETRY`]): an identity
/// provider's outage must not keep the gateway (and its other routes) from starting.
/// `fetched_at` becomes the time of the fetch, when there is one.
pub(crate) fn with_fetched(cfg: Config, running: Option<&Config>, fetched_at: &mut Instant) -> Config {
    if cfg.jwt.fetched.is_some() {
        return cfg;
    }
    let Some(fetched) = fetch(&cfg) else { return cfg };
    *fetched_at = Instant::now();
    let why = match fetched.and_then(|(text, max_age)| cfg.with_jwks(&text, max_age)) {
        Ok(Some(with)) => return with,
        Ok(None) => return cfg,
        Err(why) => why,
    };
    let same_place = |r: &&Config| {
        r.jwt.remote == cfg.jwt.remote
            && cfg.jwt.remote.as_ref().is_some_and(|j| r.upstreams[j.upstream].name == cfg.upstreams[j.upstream].name)
    };
    match running.filter(same_place).and_then(|r| r.jwt.fetched.clone()) {
        Some(kept) => {
            log::error!("auth.jwt.jwks: {why}; the key set fetched before stays");
            let mut cfg = cfg;
            cfg.jwt.fetched = Some(kept);
            cfg
        }
        None => {
            log::error!("auth.jwt.jwks: {why}; its tokens are refused until a fetch succeeds (again in {RETRY:?})");
            cfg
        }
    }
}
