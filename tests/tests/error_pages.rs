//! `[errors]`, end to end on both drivers: coregate's own error answers in JSON with the
//! request id, an operator's page for a class of statuses filled in from a file, a request
//! too malformed to have an id, and an upstream's own error passing untouched.

use coregate_tests::*;

fn config(dead: std::net::SocketAddr, live: std::net::SocketAddr, page_file: &std::path::Path) -> String {
    format!(
        "[errors]\nformat = \"json\"\npages = [{{ status = [\"5xx\"], body_file = {:?} }}]\n\
         [[upstreams]]\nname = \"dead\"\nendpoints = [\"{dead}\"]\n[[upstreams]]\nname = \"live\"\nendpoints = [\"{live}\"]\n\
         [[routes]]\npath = \"/dead\"\nupstream = \"dead\"\n[[routes]]\npath = \"/live\"\nupstream = \"live\"\n",
        page_file.display().to_string()
    )
}

both_drivers!(coregate_errors_follow_the_configured_format_and_pages, |io| {
    let live = Upstream::start(|mut c| {
        while c.read_request().is_some() {
            if !c.write(
                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\noops!",
            ) {
                return;
            }
        }
    });
    let dir = std::env::temp_dir().join(format!("coregate-error-pages-{}-{io}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("5xx.html");
    std::fs::write(
        &page,
        "<h1>{status} {reason}</h1><p>{detail}</p><!-- {request_id} --><style>p { color: red }</style>",
    )
    .unwrap();
    let gw = Gateway::start_with(io, 2, "request_id = \"x-request-id\"", &config(dead_addr(), live.addr, &page));
    let mut c = gw.client();

    // No route: JSON, with the id the answer carries.
    let r = c.request("GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let id = r.header("x-request-id").expect("an id").to_string();
    let body: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(body["status"], 404);
    assert_eq!(body["error"], "Not Found");
    assert_eq!(body["request_id"], id.as_str());
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}");

    // The unreachable upstream: the operator's page for 5xx, filled in; other braces stay.
    let r = c.request("GET /dead HTTP/1.1\r\nHost: a\r\nX-Request-Id: req-42\r\n\r\n");
    assert_eq!(r.status(), 502);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let text = r.text();
    assert!(text.starts_with("<h1>502 Bad Gateway</h1><p>"), "{text}");
    assert!(text.ends_with("</p><!-- req-42 --><style>p { color: red }</style>"), "{text}");

    // The upstream's own 500 is its answer, not coregate's.
    let r = c.request("GET /live HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status(), r.text().as_str()), (500, "oops!"));
    assert_eq!(r.header("content-type"), Some("text/plain"));

    // Too malformed to read: JSON without an id, and the connection closes.
    let mut bad = gw.client();
    let r = bad.request("GET /live HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n");
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!((body["status"].as_u64(), body.get("request_id")), (Some(400), None));
    assert!(bad.closed());
    std::fs::remove_dir_all(&dir).unwrap();
});
