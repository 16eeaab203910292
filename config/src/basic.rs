//! HTTP Basic authentication (RFC 7617) settings: consumers' passwords (`consumers[].passwords`,
//! and users from an htpasswd file, `auth.basic.users_file`), and the realm. Checking a
//! request's credentials is the engine's (`engine/src/basic_auth.rs`).

use std::str::FromStr;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::validate::Checker;
use crate::Consumer;

/// `[auth.basic]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawBasic {
    pub realm: Option<String>,
    /// An htpasswd file: `name:hash` lines (bcrypt, as `htpasswd -B` writes them, or
    /// `sha256:<hex>`); each line is a consumer (or adds a password to the one of that name).
    pub users_file: Option<String>,
}

/// `[auth.basic]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// Named in the `WWW-Authenticate` challenge.
    pub realm: String,
}

/// A stored password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// A bcrypt hash (`$2a$`, `$2b$`, `$2y$`), salted and slow by design.
    Bcrypt(String),
    /// The SHA-256 of the password: for generated, high-entropy passwords only (fast to
    /// check, and unsalted: a guessable password falls to a dictionary).
    Sha256([u8; 32]),
}

/// The highest bcrypt cost accepted: a check runs on the worker's core, which serves
/// nothing else meanwhile (measured on the 2-core build machine, busy: cost 5, htpasswd's
/// default, 3.5 ms; 8, 26 ms; 10, 82 ms).
pub const MAX_BCRYPT_COST: u32 = 10;

/// A password as written: a bcrypt hash or `sha256:<64 hex digits>`. Plain text is refused.
pub(crate) fn password(s: &str) -> Result<Password, String> {
    if let Some(hex) = s.strip_prefix("sha256:") {
        return crate::consumers::hex_digest(hex).map(Password::Sha256);
    }
    if s.starts_with("$2") {
        let parts = bcrypt::HashParts::from_str(s).map_err(|e| format!("not a bcrypt hash: {e}"))?;
        if parts.get_cost() > MAX_BCRYPT_COST {
            return Err(format!(
                "bcrypt cost {} is over {MAX_BCRYPT_COST}: each check would hold a worker's core for too long",
                parts.get_cost()
            ));
        }
        return Ok(Password::Bcrypt(s.to_string()));
    }
    Err("expected a bcrypt hash (htpasswd -nbB NAME PASSWORD) or sha256:<64 hex digits>; plain text is refused".into())
}

/// `[auth.basic]`: the realm, and the users of `users_file` added to `consumers`.
pub(crate) fn build(c: &mut Checker, raw: &RawBasic, consumers: &mut Vec<Consumer>) -> BasicAuth {
    let realm = raw.realm.clone().unwrap_or_else(|| "coregate".into());
    if realm.is_empty() || !realm.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\') {
        c.err("auth.basic.realm", "printable ASCII without quotes or backslashes");
    }
    if let Some(file) = &raw.users_file {
        match std::fs::read_to_string(c.file(file)) {
            Err(e) => c.err("auth.basic.users_file", format!("cannot read {file:?}: {e}")),
            Ok(text) => {
                for (n, line) in text.lines().enumerate().map(|(n, l)| (n + 1, l.trim())) {
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let at = format!("auth.basic.users_file {file}:{n}");
                    let Some((name, hash)) = line.split_once(':') else {
                        c.err(at, "expected NAME:HASH");
                        continue;
                    };
                    if !valid_user(name) {
                        c.err(at, format!("{name:?} is not a user name (visible characters, no ':')"));
                        continue;
                    }
                    match password(hash) {
                        Err(msg) => c.err(at, msg),
                        Ok(p) => match consumers.iter_mut().find(|k| k.name == name) {
                            Some(k) => k.passwords.push(p),
                            None => consumers.push(Consumer {
                                name: name.to_string(),
                                key_digests: Vec::new(),
                                passwords: vec![p],
                                ..Consumer::default()
                            }),
                        },
                    }
                }
            }
        }
    }
    BasicAuth { realm }
}

/// A Basic user-id: visible ASCII or UTF-8, no colon (RFC 7617 2).
pub(crate) fn valid_user(name: &str) -> bool {
    !name.is_empty() && !name.contains(':') && name.bytes().all(|b| b > b' ' && b != 0x7f)
}

/// `sha256:` of `password`, for tests and for operators who script their configuration.
pub fn sha256_password(password: &str) -> String {
    let d: [u8; 32] = Sha256::digest(password.as_bytes()).into();
    format!("sha256:{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<crate::Config, String> {
        crate::testing::config(
            &["api"],
            &format!(
                "upstream = \"api\"
auth = \"basic\"
{extra}"
            ),
        )
    }

    // `htpasswd -nbB alice wonderland` (cost 5).
    const ALICE: &str = "$2y$05$7m1Jr1mXq0bd1eNw6Hwd8uq1Xo2b6yC8dB0OeM2C4q6i8gS1X6o9a";

    #[test]
    fn passwords_parse() {
        let c =
            config(&format!("[[consumers]]\nname = \"alice\"\npasswords = [{ALICE:?}, \"{}\"]", sha256_password("x")))
                .unwrap();
        assert_eq!(c.consumers[0].passwords.len(), 2);
        assert_eq!(c.basic.realm, "coregate");
        assert!(matches!(c.consumers[0].passwords[0], Password::Bcrypt(_)));
    }

    #[test]
    fn password_errors() {
        for (extra, want) in [
            ("[[consumers]]\nname = \"a\"\npasswords = [\"hunter2\"]", "consumers[0].passwords[0]"),
            ("[[consumers]]\nname = \"a\"\npasswords = [\"$2y$05$short\"]", "not a bcrypt hash"),
            (
                "[[consumers]]\nname = \"a\"\npasswords = [\"$2y$12$7m1Jr1mXq0bd1eNw6Hwd8uq1Xo2b6yC8dB0OeM2C4q6i8gS1X6o9a\"]",
                "cost 12 is over 10",
            ),
            ("[[consumers]]\nname = \"a:b\"\npasswords = [\"sha256:00\"]", "consumers[0].name"),
            ("", "needs at least one consumer with a password"),
            ("[auth.basic]\nrealm = \"a\\\"b\"\n[[consumers]]\nname = \"a\"\nkeys = [\"12345678\"]", "auth.basic.realm"),
            ("[auth.basic]\nusers_file = \"/nonexistent/htpasswd\"", "auth.basic.users_file"),
        ] {
            let err = config(extra).unwrap_err();
            assert!(err.contains(want), "{extra}: {err}");
        }
    }

    #[test]
    fn users_come_from_an_htpasswd_file() {
        let path = std::env::temp_dir().join(format!("coregate-htpasswd-{}", std::process::id()));
        std::fs::write(&path, format!("# users\nalice:{ALICE}\n\nbob:{}\n", sha256_password("builder"))).unwrap();
        let c = config(&format!(
            "[auth.basic]\nrealm = \"staff\"\nusers_file = {:?}\n[[consumers]]\nname = \"bob\"\nkeys = [\"bob-key-123\"]",
            path.display().to_string()
        ))
        .unwrap();
        let names: Vec<&str> = c.consumers.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["bob", "alice"]);
        assert_eq!((c.consumers[0].key_digests.len(), c.consumers[0].passwords.len()), (1, 1));
        assert_eq!(c.basic.realm, "staff");
        std::fs::write(&path, "carol\n").unwrap();
        let err = config(&format!("[auth.basic]\nusers_file = {:?}", path.display().to_string())).unwrap_err();
        assert!(err.contains(":1") && err.contains("NAME:HASH"), "{err}");
        let _ = std::fs::remove_file(&path);
    }
}
