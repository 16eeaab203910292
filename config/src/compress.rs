//! A route's response compression, `compress = { types, min_bytes, max_bytes, encodings,
//! level, br_level, zstd_level }`: which responses are worth compressing, with which
//! codings, and how hard. Which coding a request accepts and the compressing itself are
//! the engine's.

use crate::raw::RawRouteCompress;
use crate::validate::Checker;

/// A route's `compress`: eligible responses go to clients that accept one of `encodings`
/// encoded with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCompress {
    /// Media types compressed (lower case, without parameters); `type/*` covers a family.
    pub types: Vec<String>,
    /// Smaller bodies are sent as they are: a gzip stream costs about 20 bytes of framing.
    pub min_bytes: usize,
    /// Larger bodies (and close-delimited ones) are not held whole: they are compressed as
    /// they pass with `stream`, else sent as they are. A body compressed whole goes out with
    /// its Content-Length; this bounds the memory that takes.
    pub max_bytes: usize,
    /// Bodies over `max_bytes` and close-delimited ones are compressed as they pass, sent
    /// chunked (true by default, as nginx's gzip); false sends them as they came.
    pub stream: bool,
    /// The codings offered, in the route's order of preference: a request's Accept-Encoding
    /// weights choose, and among codings it weighs alike the earlier one wins.
    pub encodings: Vec<Coding>,
    /// gzip's level: 1 (fastest, nginx's default) to 9 (smallest).
    pub level: u32,
    /// brotli's quality: 0 (fastest) to 6; 3 by default, as Envoy's. Bounded at 6: a 4 KB
    /// JSON body took 22 us at 3, 100 us at 6, 0.4 ms at 7 and 4 ms at 11 (measured here), and
    /// a response is compressed on the worker's core, every other connection on it waiting.
    pub br_level: u32,
    /// zstd's level: 1 (fastest) to 9; 3 by default, zstd's own. Bounded at 9 for the same
    /// reason: 5.7 us at 3, 26 us at 9, 0.14 ms at 12 and 0.9 ms at 19 on that body.
    pub zstd_level: i32,
}

/// A content coding coregate can apply (RFC 9110 8.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// RFC 1952, through zlib-rs.
    Gzip,
    /// RFC 7932, through the brotli crate.
    Br,
    /// RFC 8878, through libzstd.
    Zstd,
}

impl Coding {
    /// The coding's name in Accept-Encoding and Content-Encoding.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Br => "br",
            Coding::Zstd => "zstd",
        }
    }
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
    let encodings = match &raw.encodings {
        None => vec![Coding::Gzip],
        Some(list) => {
            let mut out = Vec::new();
            for (i, name) in list.iter().enumerate() {
                let at = format!("{path}.encodings[{i}]");
                match [Coding::Gzip, Coding::Br, Coding::Zstd]
                    .into_iter()
                    .find(|k| name.eq_ignore_ascii_case(k.token()))
                {
                    Some(k) if out.contains(&k) => c.err(at, format!("{name:?} is listed twice")),
                    Some(k) => out.push(k),
                    None => c.err(at, format!("{name:?} is no coding coregate applies (gzip, br, zstd)")),
                }
            }
            if list.is_empty() {
                c.err(format!("{path}.encodings"), "an empty list compresses nothing: remove compress instead");
            }
            out
        }
    };
    let level = c.bounded(&format!("{path}.level"), raw.level, 1, 1, 9) as u32;
    let br_level = c.bounded(&format!("{path}.br_level"), raw.br_level, 3, 0, 6) as u32;
    let zstd_level = c.bounded(&format!("{path}.zstd_level"), raw.zstd_level, 3, 1, 9) as i32;
    let stream = raw.stream.unwrap_or(true);
    RouteCompress { types, min_bytes, max_bytes, stream, encodings, level, br_level, zstd_level }
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
            stream: true,
            encodings: vec![Coding::Gzip],
            level: 1,
            br_level: 3,
            zstd_level: 3,
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

    fn compress(keys: &str) -> Result<RouteCompress, String> {
        crate::testing::route(&["api"], &format!("upstream = \"api\"\ncompress = {{ {keys} }}"))
            .map(|r| r.compress.unwrap())
    }

    #[test]
    fn encodings_in_order_of_preference() {
        let c = compress("").unwrap();
        assert_eq!((c.encodings, c.level, c.br_level, c.zstd_level), (vec![Coding::Gzip], 1, 3, 3));
        let c = compress("encodings = [\"zstd\", \"BR\", \"gzip\"], br_level = 5, zstd_level = 1").unwrap();
        assert_eq!((c.encodings, c.br_level, c.zstd_level), (vec![Coding::Zstd, Coding::Br, Coding::Gzip], 5, 1));
        for (keys, needle) in [
            ("encodings = []", "routes[0].compress.encodings: an empty list"),
            ("encodings = [\"deflate\"]", "routes[0].compress.encodings[0]: \"deflate\" is no coding"),
            ("encodings = [\"br\", \"br\"]", "routes[0].compress.encodings[1]: \"br\" is listed twice"),
            ("br_level = 7", "routes[0].compress.br_level: 7 is out of range 0..=6"),
            ("zstd_level = 10", "routes[0].compress.zstd_level: 10 is out of range 1..=9"),
            ("zstd_level = 0", "routes[0].compress.zstd_level: 0 is out of range 1..=9"),
        ] {
            let err = compress(keys).unwrap_err();
            assert!(err.contains(needle), "{keys}: {err}");
        }
    }
}
