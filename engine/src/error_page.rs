//! The bodies of the error answers coregate makes itself (`[errors]`): plain text, JSON, or
//! an operator's page filled in. The status line and fields around them are `forward`'s;
//! which status an error gets is `error`'s.

use config::{ErrorFormat, ErrorPages, PagePiece};

/// The content type and body of the error answer `status` with `detail` (a fixed text
/// from coregate's code, never a client's bytes) and the request's id, if it has one.
pub(crate) fn render<'p>(
    pages: &'p ErrorPages,
    status: u16,
    detail: &str,
    request_id: Option<&[u8]>,
) -> (&'p [u8], Vec<u8>) {
    let reason = proto_http::write::reason(status);
    let id = request_id.map(String::from_utf8_lossy).unwrap_or_default();
    if let Some(page) = pages.page(status) {
        let mut body = Vec::with_capacity(256);
        for piece in &page.body {
            let value = match piece {
                PagePiece::Text(t) => {
                    body.extend_from_slice(t.as_bytes());
                    continue;
                }
                PagePiece::Status => &status.to_string(),
                PagePiece::Reason => reason,
                PagePiece::Detail => detail,
                PagePiece::RequestId => &*id,
            };
            if page.json {
                // The content of a JSON string: quotes and escapes as serde_json writes them.
                let quoted = serde_json::to_string(value).unwrap_or_default();
                body.extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
            } else {
                body.extend_from_slice(value.as_bytes());
            }
        }
        return (page.content_type.as_bytes(), body);
    }
    match pages.format {
        ErrorFormat::Text => (b"text/plain; charset=utf-8", format!("{status} {reason}: {detail}\n").into_bytes()),
        ErrorFormat::Json => {
            let mut v = serde_json::json!({ "status": status, "error": reason, "detail": detail });
            if request_id.is_some() {
                v["request_id"] = serde_json::Value::String(id.into_owned());
            }
            let mut body = v.to_string().into_bytes();
            body.push(b'\n');
            (b"application/json", body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(toml: &str) -> ErrorPages {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[upstreams]]\nname = \"api\"\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\npath = \"/\"\nupstream = \"api\"\n[errors]\n{toml}\n"
        );
        config::Config::parse(&text).unwrap().errors
    }

    fn text(r: (&[u8], Vec<u8>)) -> (String, String) {
        (String::from_utf8(r.0.to_vec()).unwrap(), String::from_utf8(r.1).unwrap())
    }

    #[test]
    fn formats_and_pages() {
        let plain = pages("");
        assert_eq!(
            text(render(&plain, 502, "connecting to the upstream", None)),
            ("text/plain; charset=utf-8".into(), "502 Bad Gateway: connecting to the upstream\n".into())
        );
        let json = pages("format = \"json\"");
        assert_eq!(
            text(render(&json, 429, "rate limit \"route\"", Some(b"abc-1"))),
            (
                "application/json".into(),
                "{\"detail\":\"rate limit \\\"route\\\"\",\"error\":\"Too Many Requests\",\"request_id\":\"abc-1\",\"status\":429}\n"
                    .into()
            )
        );
        assert!(!text(render(&json, 404, "no route", None)).1.contains("request_id"));
        let own = pages(
            "format = \"json\"\npages = [\
             { status = [\"5xx\"], body = \"<p>{status} {reason}: {detail} ({request_id}) {x}</p>\" },\
             { status = [404], body = \"{\\\"e\\\": \\\"{detail}\\\"}\", content_type = \"application/json\" }]",
        );
        assert_eq!(
            text(render(&own, 503, "no endpoint", Some(b"r1"))),
            ("text/html; charset=utf-8".into(), "<p>503 Service Unavailable: no endpoint (r1) {x}</p>".into())
        );
        assert_eq!(text(render(&own, 404, "a \"b\"", None)).1, r#"{"e": "a \"b\""}"#);
        // Statuses without a page take the format.
        assert_eq!(text(render(&own, 401, "x", None)).0, "application/json");
    }
}
