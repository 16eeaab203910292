//! `[errors]`: how coregate writes the error answers it makes itself (a request it refuses,
//! an upstream it cannot reach): plain text (the default), JSON, or pages of the operator's
//! own chosen by status (nginx's `error_page`, Kong's error templates). Answers from
//! upstreams pass as they are. Filling a page in is the engine's (`engine/src/error_page.rs`).

use serde::Deserialize;

use crate::validate::Checker;

/// `[errors]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawErrors {
    /// `"text"` (default) or `"json"`.
    pub format: Option<String>,
    pub pages: Vec<RawErrorPage>,
}

/// One `[errors].pages` entry as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawErrorPage {
    /// Codes (502) and classes ("5xx") the page answers.
    pub status: Vec<toml::Value>,
    pub body: Option<String>,
    pub body_file: Option<String>,
    pub content_type: Option<String>,
}

/// `[errors]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorPages {
    pub format: ErrorFormat,
    /// The first page whose statuses hold an error's answers it.
    pub pages: Vec<ErrorPage>,
}

/// The body of an error without a page of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ErrorFormat {
    /// `502 Bad Gateway: connecting to the upstream` and a newline, `text/plain`.
    #[default]
    Text,
    /// `{"status":502,"error":"Bad Gateway","detail":"...","request_id":"..."}`.
    Json,
}

/// A page of the operator's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPage {
    /// Inclusive status ranges (a code is a range of one).
    pub statuses: Vec<(u16, u16)>,
    pub body: Vec<PagePiece>,
    pub content_type: String,
    /// Values put in the body are escaped as JSON string content (the content type names
    /// JSON).
    pub json: bool,
}

impl ErrorPages {
    /// The page for `status`, if one is configured.
    pub fn page(&self, status: u16) -> Option<&ErrorPage> {
        self.pages.iter().find(|p| p.statuses.iter().any(|&(lo, hi)| (lo..=hi).contains(&status)))
    }
}

/// A page body cut at its placeholders: `{status}`, `{reason}`, `{detail}` and
/// `{request_id}` (empty without request ids). Other braces are text (CSS, JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PagePiece {
    Text(String),
    Status,
    Reason,
    Detail,
    RequestId,
}

/// A page's body read from a file is at most this long: error pages are small, and each is
/// kept in memory by every worker.
pub const MAX_PAGE_BYTES: usize = 64 * 1024;

fn pieces(body: &str) -> Vec<PagePiece> {
    const NAMES: [(&str, PagePiece); 4] = [
        ("{status}", PagePiece::Status),
        ("{reason}", PagePiece::Reason),
        ("{detail}", PagePiece::Detail),
        ("{request_id}", PagePiece::RequestId),
    ];
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = body;
    while !rest.is_empty() {
        match NAMES.iter().find(|(name, _)| rest.starts_with(name)) {
            Some((name, piece)) => {
                if !text.is_empty() {
                    out.push(PagePiece::Text(std::mem::take(&mut text)));
                }
                out.push(piece.clone());
                rest = &rest[name.len()..];
            }
            None => {
                let c = rest.chars().next().unwrap_or_default();
                text.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !text.is_empty() {
        out.push(PagePiece::Text(text));
    }
    out
}

pub(crate) fn build(c: &mut Checker, raw: &RawErrors) -> ErrorPages {
    let format = match raw.format.as_deref() {
        None | Some("text") => ErrorFormat::Text,
        Some("json") => ErrorFormat::Json,
        Some(other) => {
            c.err("errors.format", format!("unknown format {other:?} (expected \"text\" or \"json\")"));
            ErrorFormat::Text
        }
    };
    let pages = raw.pages.iter().enumerate().filter_map(|(i, p)| page(c, &format!("errors.pages[{i}]"), p)).collect();
    ErrorPages { format, pages }
}

fn page(c: &mut Checker, path: &str, raw: &RawErrorPage) -> Option<ErrorPage> {
    if raw.status.is_empty() {
        c.err(format!("{path}.status"), "the codes (502) or classes (\"5xx\") this page answers");
    }
    let statuses = crate::validate::statuses(c, &format!("{path}.status"), &raw.status, 400);
    let body = match (&raw.body, &raw.body_file) {
        (Some(b), None) => Some(b.clone()),
        (None, Some(f)) => match std::fs::read(c.file(f)) {
            Ok(b) if b.len() > MAX_PAGE_BYTES => {
                c.err(format!("{path}.body_file"), format!("{f:?} is over {MAX_PAGE_BYTES} bytes"));
                None
            }
            Ok(b) => {
                String::from_utf8(b).map_err(|_| c.err(format!("{path}.body_file"), format!("{f:?} is not UTF-8"))).ok()
            }
            Err(e) => {
                c.err(format!("{path}.body_file"), format!("cannot read {f:?}: {e}"));
                None
            }
        },
        _ => {
            c.err(path, "one of body or body_file");
            None
        }
    };
    let content_type = raw.content_type.clone().unwrap_or_else(|| "text/html; charset=utf-8".into());
    if content_type.is_empty() || !content_type.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        c.err(format!("{path}.content_type"), format!("{content_type:?} is not a field value"));
    }
    let json = content_type.to_ascii_lowercase().contains("json");
    Some(ErrorPage { statuses, body: pieces(&body?), content_type, json })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(toml: &str) -> Result<ErrorPages, String> {
        crate::testing::config(&["api"], &format!("upstream = \"api\"\n[errors]\n{toml}")).map(|c| c.errors)
    }

    #[test]
    fn pages_by_status_with_placeholders() {
        let e = errors(
            "format = \"json\"\npages = [{ status = [\"5xx\", 429], body = \"<h1>{status} {reason}</h1>{detail} {request_id} {other} a{b}\" }]",
        )
        .unwrap();
        assert_eq!(e.format, ErrorFormat::Json);
        let p = e.page(503).unwrap();
        assert!(e.page(429).is_some() && e.page(404).is_none());
        assert_eq!((p.content_type.as_str(), p.json), ("text/html; charset=utf-8", false));
        assert_eq!(
            p.body,
            [
                PagePiece::Text("<h1>".into()),
                PagePiece::Status,
                PagePiece::Text(" ".into()),
                PagePiece::Reason,
                PagePiece::Text("</h1>".into()),
                PagePiece::Detail,
                PagePiece::Text(" ".into()),
                PagePiece::RequestId,
                PagePiece::Text(" {other} a{b}".into()),
            ]
        );
        let e =
            errors("pages = [{ status = [404], body = \"{}\", content_type = \"application/problem+json\" }]").unwrap();
        assert_eq!(e.format, ErrorFormat::Text);
        assert!(e.page(404).unwrap().json);
    }

    #[test]
    fn errors_name_their_keys() {
        for (toml, path, says) in [
            ("format = \"xml\"", "errors.format", "unknown format"),
            ("pages = [{ body = \"x\" }]", "errors.pages[0].status", "codes"),
            ("pages = [{ status = [200], body = \"x\" }]", "errors.pages[0].status[0]", "400-599"),
            ("pages = [{ status = [\"2xx\"], body = \"x\" }]", "errors.pages[0].status[0]", "400-599"),
            ("pages = [{ status = [500] }]", "errors.pages[0]", "one of body or body_file"),
            ("pages = [{ status = [500], body = \"x\", body_file = \"y\" }]", "errors.pages[0]", "one of body"),
            (
                "pages = [{ status = [500], body_file = \"/nonexistent/page.html\" }]",
                "errors.pages[0].body_file",
                "cannot read",
            ),
            (
                "pages = [{ status = [500], body = \"x\", content_type = \"a\\nb\" }]",
                "errors.pages[0].content_type",
                "field value",
            ),
            ("pages = [{ status = [500], body = \"x\", colour = 1 }]", "errors.pages[0].colour", "unknown"),
        ] {
            let e = errors(toml).expect_err(toml);
            assert!(e.contains(path) && e.contains(says), "{toml}: {e}");
        }
    }
}
