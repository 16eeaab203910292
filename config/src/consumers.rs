//! Consumers and what routes make of them: API keys and passwords (stored as digests),
//! groups, the API-key settings, and each route's admitted list (`consumers`, `groups`,
//! `deny_groups`), all settled at load. Checking a request's credentials is the engine's.

use sha2::{Digest, Sha256};

use crate::policy::{is_field_value, is_token, rate_limit};
use crate::raw::{RawApiKey, RawConsumer, RawRoute};
use crate::validate::Checker;
use crate::{ApiKeyAuth, AuthKind, Consumer, LimitKey, RateLimit};

pub(crate) fn build_consumers(c: &mut Checker, raw: &[RawConsumer]) -> Vec<Consumer> {
    let mut out: Vec<Consumer> = Vec::new();
    for (i, rc) in raw.iter().enumerate() {
        let path = format!("consumers[{i}]");
        let name = match &rc.name {
            Some(n) if is_field_value(n) && !n.is_empty() => n.clone(),
            _ => {
                c.err(format!("{path}.name"), "missing or invalid consumer name");
                continue;
            }
        };
        if out.iter().any(|o| o.name == name) {
            c.err(format!("{path}.name"), format!("duplicate consumer {name:?}"));
        }
        let mut keys: Vec<(String, String)> =
            rc.keys.iter().enumerate().map(|(k, v)| (format!("{path}.keys[{k}]"), v.clone())).collect();
        if let Some(file) = &rc.keys_file {
            match std::fs::read_to_string(c.file(file)) {
                Ok(text) => keys.extend(
                    text.lines()
                        .enumerate()
                        .map(|(n, l)| (format!("{path}.keys_file {file}:{}", n + 1), l.trim().to_string()))
                        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#')),
                ),
                Err(e) => c.err(format!("{path}.keys_file"), format!("cannot read {file:?}: {e}")),
            }
        }
        if keys.is_empty() && rc.passwords.is_empty() {
            c.err(format!("{path}.keys"), "a consumer needs at least one key or password");
        }
        let mut key_digests = Vec::new();
        for (kpath, k) in keys {
            match digest_of(&k) {
                Ok(d) => key_digests.push(d),
                Err(msg) => c.err(kpath, msg),
            }
        }
        if !rc.passwords.is_empty() && !crate::basic::valid_user(&name) {
            c.err(format!("{path}.name"), "a consumer with passwords is a Basic user-id: visible characters, no ':'");
        }
        let mut passwords = Vec::new();
        for (k, p) in rc.passwords.iter().enumerate() {
            match crate::basic::password(p) {
                Ok(p) => passwords.push(p),
                Err(msg) => c.err(format!("{path}.passwords[{k}]"), msg),
            }
        }
        let rate_limits = rc
            .rate_limits
            .iter()
            .enumerate()
            .filter_map(|(k, l)| {
                let at = format!("{path}.rate_limits[{k}]");
                if l.key.as_deref().is_some_and(|key| key != "consumer") {
                    c.err(format!("{at}.key"), "a consumer's own limits count its requests: leave key out");
                }
                rate_limit(c, &at, l).map(|l| RateLimit { key: LimitKey::Consumer, ..l })
            })
            .collect();
        let groups = rc
            .groups
            .iter()
            .enumerate()
            .filter(|(k, g)| {
                let ok = is_token(g);
                if !ok {
                    c.err(format!("{path}.groups[{k}]"), format!("{g:?} is not a group name (letters, digits, -_.)"));
                }
                ok
            })
            .map(|(_, g)| g.clone())
            .collect::<Vec<_>>();
        let groups_field = groups.join(", ");
        out.push(Consumer { name, key_digests, passwords, rate_limits, groups, groups_field });
    }
    for (i, a) in out.iter().enumerate() {
        for b in &out[i + 1..] {
            if a.key_digests.iter().any(|d| b.key_digests.contains(d)) {
                c.err("consumers", format!("consumers {:?} and {:?} share a key", a.name, b.name));
            }
        }
    }
    out
}

/// A key as stored: `sha256:<hex>` as given, anything else hashed.
fn digest_of(k: &str) -> Result<[u8; 32], String> {
    if let Some(hex) = k.strip_prefix("sha256:") {
        return hex_digest(hex);
    }
    if k.len() < 8 {
        return Err("an API key must have at least 8 characters".into());
    }
    Ok(Sha256::digest(k.as_bytes()).into())
}

/// The 32 bytes written as 64 hex digits after `sha256:`.
pub(crate) fn hex_digest(hex: &str) -> Result<[u8; 32], String> {
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok())).collect();
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| "sha256: must be followed by 64 hex digits".to_string())
}

pub(crate) fn build_api_key(c: &mut Checker, raw: &RawApiKey) -> ApiKeyAuth {
    let name = |c: &mut Checker, path: &str, v: &Option<String>, default: &str| match v {
        None => default.to_string(),
        Some(h) if is_token(h) => h.to_ascii_lowercase(),
        Some(h) => {
            c.err(path, format!("{h:?} is not a header name"));
            default.to_string()
        }
    };
    let auth = ApiKeyAuth {
        header: name(c, "auth.api_key.header", &raw.header, "x-api-key"),
        query: raw.query.clone().filter(|q| !q.is_empty()),
        consumer_header: name(c, "auth.api_key.consumer_header", &raw.consumer_header, "x-consumer"),
        groups_header: name(c, "auth.api_key.groups_header", &raw.groups_header, "x-consumer-groups"),
    };
    // Each names a different field: the gateway drops all three from requests and writes
    // the last two itself. A later key naming an earlier one's field is the error.
    let fields =
        [("header", &auth.header), ("consumer_header", &auth.consumer_header), ("groups_header", &auth.groups_header)];
    for (j, (later, field)) in fields.iter().enumerate() {
        if let Some((earlier, _)) = fields[..j].iter().find(|(_, f)| f == field) {
            c.err(
                format!("auth.api_key.{later}"),
                format!("names the same field as auth.api_key.{earlier} ({field:?})"),
            );
        }
    }
    auth
}

/// The consumers a route admits (indices into `consumers`; empty: every authenticated one):
/// those its `consumers` names and the members of its `groups`, less the members of its
/// `deny_groups`. `path` is the route's key path, `auth` its authentication.
pub(crate) fn admitted(
    c: &mut Checker,
    path: &str,
    r: &RawRoute,
    consumers: &[Consumer],
    auth: AuthKind,
) -> Vec<usize> {
    let mut allowed: Vec<usize> = r
        .consumers
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match consumers.iter().position(|k| &k.name == n) {
            Some(x) => Some(x),
            None => {
                c.err(format!("{path}.consumers[{i}]"), format!("no consumer named {n:?}"));
                None
            }
        })
        .collect();
    // Groups are settled here: the route admits their members, less the members of its
    // deny groups, and nothing is looked up per request.
    let members = |c: &mut Checker, key: &str, i: usize, g: &String| {
        let found: Vec<usize> = (0..consumers.len()).filter(|&k| consumers[k].groups.contains(g)).collect();
        if found.is_empty() {
            c.err(format!("{path}.{key}[{i}]"), format!("no consumer is in group {g:?}"));
        }
        found
    };
    for (i, g) in r.groups.iter().enumerate() {
        allowed.extend(members(c, "groups", i, g));
    }
    let mut denied = Vec::new();
    for (i, g) in r.deny_groups.iter().enumerate() {
        denied.extend(members(c, "deny_groups", i, g));
    }
    // An empty list admits every consumer: deny groups alone make the list explicit.
    let listed = !r.consumers.is_empty() || !r.groups.is_empty();
    if !listed && !denied.is_empty() {
        allowed.extend(0..consumers.len());
    }
    allowed.retain(|k| !denied.contains(k));
    allowed.sort_unstable();
    allowed.dedup();
    if !denied.is_empty() && allowed.is_empty() {
        c.err(format!("{path}.deny_groups"), "the deny groups refuse every consumer the route admits");
    }
    if (listed || !r.deny_groups.is_empty()) && !matches!(auth, AuthKind::ApiKey | AuthKind::Basic) {
        c.err(format!("{path}.consumers"), "a consumer list or groups need auth = \"api_key\" or \"basic\"");
    }
    allowed
}

#[cfg(test)]
mod tests {
    fn route(consumers: &str, keys: &str) -> Result<crate::Config, String> {
        crate::testing::config(&["api"], &format!("upstream = \"api\"\n{keys}\n{consumers}"))
    }

    const CONSUMERS: &str = "[[consumers]]\nname = \"a\"\nkeys = [\"key-of-a-123\"]\ngroups = [\"ops\", \"dev\"]\n\
                             [[consumers]]\nname = \"b\"\nkeys = [\"key-of-b-456\"]\ngroups = [\"dev\"]\n\
                             [[consumers]]\nname = \"c\"\nkeys = [\"key-of-c-789\"]\n";

    #[test]
    fn groups_admit_their_members_beside_named_consumers() {
        let c = route(CONSUMERS, "auth = \"api_key\"\ngroups = [\"ops\"]\nconsumers = [\"c\"]").unwrap();
        assert_eq!(c.routes[0].consumers, [0, 2]);
        let c = route(CONSUMERS, "auth = \"api_key\"\ngroups = [\"dev\", \"ops\"]\nconsumers = [\"a\"]").unwrap();
        assert_eq!(c.routes[0].consumers, [0, 1], "each consumer once");
        assert_eq!(c.consumers[0].groups, ["ops", "dev"]);
        assert_eq!(c.consumers[0].groups_field, "ops, dev");
        // Deny groups refuse their members whatever admits them; alone, they admit the rest.
        let c = route(CONSUMERS, "auth = \"api_key\"\ngroups = [\"dev\"]\ndeny_groups = [\"ops\"]").unwrap();
        assert_eq!(c.routes[0].consumers, [1]);
        let c =
            route(CONSUMERS, "auth = \"api_key\"\nconsumers = [\"a\"]\ndeny_groups = [\"ops\"]\ngroups = [\"dev\"]");
        assert_eq!(c.unwrap().routes[0].consumers, [1], "a named consumer is refused by its group too");
        let c = route(CONSUMERS, "auth = \"api_key\"\ndeny_groups = [\"dev\"]").unwrap();
        assert_eq!(c.routes[0].consumers, [2]);
        for (keys, consumers, path, says) in [
            (
                "auth = \"api_key\"\ngroups = [\"ops\"]\ndeny_groups = [\"dev\"]",
                CONSUMERS,
                "routes[0].deny_groups",
                "refuse every consumer",
            ),
            (
                "auth = \"api_key\"\ndeny_groups = [\"devs\"]",
                CONSUMERS,
                "routes[0].deny_groups[0]",
                "no consumer is in group \"devs\"",
            ),
            ("auth = \"jwt\"\ndeny_groups = [\"ops\"]", CONSUMERS, "routes[0].consumers", "need auth"),
            (
                "auth = \"api_key\"\n[auth.api_key]\ngroups_header = \"X-Consumer\"",
                CONSUMERS,
                "auth.api_key.groups_header",
                "same field as auth.api_key.consumer_header",
            ),
            (
                "auth = \"api_key\"\ngroups = [\"opps\"]",
                CONSUMERS,
                "routes[0].groups[0]",
                "no consumer is in group \"opps\"",
            ),
            (
                "auth = \"jwt\"\ngroups = [\"ops\"]",
                CONSUMERS,
                "routes[0].consumers",
                "need auth = \"api_key\" or \"basic\"",
            ),
            (
                "auth = \"api_key\"",
                "[[consumers]]\nname = \"a\"\nkeys = [\"key-of-a-123\"]\ngroups = [\"a b\"]",
                "consumers[0].groups[0]",
                "not a group name",
            ),
        ] {
            let e = route(consumers, keys).expect_err(keys);
            assert!(e.contains(path) && e.contains(says), "{keys}: {e}");
        }
    }
}
