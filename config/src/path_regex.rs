//! `routes[].path_regex`: a regular expression the whole request path must match, its named
//! groups captures like a path template's. Compiling and checking the pattern is here; the
//! route table (engine) decides when a regex is tried and keeps a copy per worker.

use regex::bytes::{Regex, RegexBuilder};

/// The compiled size a pattern may take (the `regex` crate's default is 10 MiB): a route's
/// pattern is a few dozen bytes, and a pattern a thousand times that is a mistake.
const SIZE_LIMIT: usize = 1 << 20;

/// A compiled `path_regex`, compared and printed by its pattern as written (route
/// fingerprints and the shadowed-route warning use those).
#[derive(Clone)]
pub struct PathRegex {
    pattern: String,
    regex: Regex,
}

impl PathRegex {
    /// Compiles `pattern` to match whole paths: `^(?:pattern)$`, as Envoy's `safe_regex`
    /// (nginx's `location ~` searches instead; write `.*` where that is meant). The `regex`
    /// crate matches in time linear in the path, whatever the pattern. Named groups must be
    /// named as template captures are (letters, digits, `_`), to be used as `{name}`.
    pub fn new(pattern: &str) -> Result<PathRegex, String> {
        let regex = RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(SIZE_LIMIT)
            .build()
            .map_err(|e| format!("{pattern:?} is not a regular expression: {e}"))?;
        let mut names = regex.capture_names().flatten();
        if let Some(bad) = names.clone().find(|n| !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')) {
            return Err(format!("group name {bad:?}: a capture's name has letters, digits and '_' only"));
        }
        if names.nth(crate::MAX_CAPTURES).is_some() {
            return Err(format!("more than {} named groups", crate::MAX_CAPTURES));
        }
        Ok(PathRegex { pattern: pattern.to_string(), regex })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The compiled expression; a worker clones it to search with a cache of its own.
    pub fn regex(&self) -> &Regex {
        &self.regex
    }

    /// The names of its capture groups.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.regex.capture_names().flatten()
    }
}

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for PathRegex {}

impl std::fmt::Debug for PathRegex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PathRegex({:?})", self.pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The named groups `regex` captures in `path`, when it matches.
    fn captures<'r, 'p>(regex: &'r Regex, path: &'p [u8]) -> Option<Vec<(&'r str, &'p [u8])>> {
        let caps = regex.captures(path)?;
        let names = regex.capture_names().enumerate();
        Some(names.filter_map(|(i, name)| Some((name?, caps.get(i)?.as_bytes()))).collect())
    }

    #[test]
    fn whole_paths_and_named_captures() {
        let re = PathRegex::new(r"/users/(?P<id>[0-9]+)(/orders/(?P<order>\w+))?").unwrap();
        type Captured = Option<&'static [(&'static str, &'static str)]>;
        let cases: &[(&str, Captured)] = &[
            ("/users/7", Some(&[("id", "7")])),
            ("/users/7/orders/a1", Some(&[("id", "7"), ("order", "a1")])),
            ("/users/x", None),
            ("/users/7/", None),
            ("/v1/users/7", None),
            ("/users/7?x=1", None),
        ];
        for (path, want) in cases {
            let got = captures(re.regex(), path.as_bytes());
            let want = want.map(|w| w.iter().map(|(n, v)| (*n, v.as_bytes())).collect::<Vec<_>>());
            assert_eq!(got, want, "{path}");
        }
        assert_eq!(re.names().collect::<Vec<_>>(), ["id", "order"]);
        // An alternation is anchored as a whole, not only its first branch.
        let alt = PathRegex::new("/a|/b").unwrap();
        assert!(alt.regex().is_match(b"/b") && !alt.regex().is_match(b"/b/c") && !alt.regex().is_match(b"/x/a"));
        let suffix = PathRegex::new(r".*\.php").unwrap();
        assert!(suffix.regex().is_match(b"/x/index.php") && !suffix.regex().is_match(b"/x/index.php/y"));
    }

    #[test]
    fn refused_patterns() {
        for (pattern, says) in [
            ("/a(", "is not a regular expression"),
            ("/(?P<a.b>x)", "letters, digits and '_'"),
            ("/x{1000}{1000}", "is not a regular expression"),
        ] {
            let err = PathRegex::new(pattern).unwrap_err();
            assert!(err.contains(says), "{pattern}: {err}");
        }
        assert_eq!(PathRegex::new("/a").unwrap(), PathRegex::new("/a").unwrap());
        assert_ne!(PathRegex::new("/a").unwrap(), PathRegex::new("/b").unwrap());
    }
}
