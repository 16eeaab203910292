//! A route's response compression, `compress = { types, min_bytes, max_bytes, level }`:
//! which responses are worth compressing and how hard. Whether a request accepts gzip and
//! the compressing itself are the engine's.

use crate::raw::RawRouteCompress;
use crate::validate::Checker;

/// A route's `compress`: eligible responses go to clients that accept gzip gzip-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCompress {
    /// Media types compressed (lower case, without parameters); `type/*` covers a family.
    pub types: Vec<String>,
    /// Smaller bodies are sent as they are: a gzip stream costs about 20 bytes of framing.
    pub min_bytes: usize,
    /// Larger bodies (and close-delimited ones) are sent as they are: a body is compressed
    /// whole, from memory, so this bounds the memory a response holds.
    pub max_bytes: usize,
    /// 1 (fastest, nginx's default) to 9 (smallest).
    pub level: u32,
}

/// Compressed unless the route lists its own: the text formats APIs and pages send
/// (nginx's `gzip_types` plus the JSON and XML families; images and archives are compressed
/// already).
pub const DEFAULT_TYPES: [&str; 11] = [
    "text/html",
    "text/plain",
    "text/css",
    "text/csv",
    "text/xml",
    "text/javascript",
    "application/javascript",
    "application/json",
    "application/xml",
    "application/problem+json",
    "image/svg+xml",
];

pub(crate) fn route_compress(c: &mut Checker, path: &str, raw: &RawRouteCompress, proxied: bool) -> RouteCompress {
    if !proxied {
        c.err(path, "compress needs an upstream: only proxied responses are compressed");
    }
    let types = match &raw.types {
        None => DEFAULT_TYPES.iter().map(|t| t.to_string()).collect(),
        Some(list) => {
            for (i, t) in list.iter().enumerate() {
                if !is_media_range(t) {
                    c.err(format!("{path}.types[{i}]"), format!("{t:?} is not a media type (type/subtype or type/*)"));
                }
            }
            if list.is_empty() {
                c.err(format!("{path}.types"), "an empty list compresses nothing: remove compress instead");
            }
            list.iter().map(|t| t.to_ascii_lowercase()).collect()
        }
    };
    let min_bytes = c.bounded(&format!("{path}.min_bytes"), raw.min_bytes, 256, 0, 1 << 30);
    let max_bytes = c.bounded(&format!("{path}.max_bytes"), raw.max_bytes, 1 << 20, 1, 1 << 30);
    if min_bytes > max_bytes {
        c.err(format!("{path}.min_bytes"), format!("{min_bytes} is above max_bytes ({max_bytes})"));
    }
    let level = c.bounded(&format!("{path}.level"), raw.level, 1, 1, 9) as u32;
    RouteCompress { types, min_bytes, max_bytes, level }
}

fn is_media_range(t: &str) -> bool {
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
    match t.split_once('/') {
        Some((ty, sub)) => token(ty) && (sub == "*" || token(sub)),
        None => false,
    }
}

impl RouteCompress {
    /// Whether a response of this Content-Type value is compressed (its parameters, such as
    /// `charset`, do not matter).
    pub fn covers(&self, content_type: &[u8]) -> bool {
        let essence = content_type.split(|&b| b == b';').next().unwrap_or_default();
        let essence = essence.trim_ascii();
        self.types.iter().any(|t| match t.strip_suffix("/*") {
            Some(family) => {
                essence.len() > family.len() + 1
                    && essence[..family.len()].eq_ignore_ascii_case(family.as_bytes())
                    && essence[family.len()] == b'/'
            }
            None => essence.eq_ignore_ascii_case(t.as_bytes()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_covered() {
        let c = RouteCompress {
            types: vec!["application/json".into(), "text/*".into()],
            min_bytes: 0,
            max_bytes: 1,
            level: 1,
        };
        for (ct, want) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            (" application/json ;q", true),
            ("application/jsonx", false),
            ("text/html", true),
            ("text/", false),
            ("textual/html", false),
            ("image/png", false),
            ("", false),
        ] {
            assert_eq!(c.covers(ct.as_bytes()), want, "{ct:?}");
        }
        for (t, ok) in [("text/html", true), ("text/*", true), ("*/*", false), ("text", false), ("a b/c", false)] {
            assert_eq!(is_media_range(t), ok, "{t}");
        }
    }
}
