//! RFC 9457 problem-details answers. Middleware that rejects a request
//! answers with one of these, never with internal detail.

use crate::{Response, full};

/// A problem+json response: `status`, a fixed `title` and `detail`.
pub fn problem(status: u16, title: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    });
    let mut res = crate::response(status, body.to_string());
    let h = res.headers_mut();
    h.insert(
        "content-type",
        crate::HeaderValue::from_static("application/problem+json"),
    );
    h.insert("cache-control", crate::HeaderValue::from_static("no-store"));
    res
}

/// A problem response whose title is the status's reason phrase.
pub fn respond(status: u16, detail: &str) -> Response {
    let title = crate::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    problem(status, title, detail)
}

/// An empty response, for preflight answers and the like.
pub fn empty(status: u16) -> Response {
    let mut res = Response::new(full(bytes::Bytes::new()));
    *res.status_mut() =
        crate::StatusCode::from_u16(status).unwrap_or(crate::StatusCode::NO_CONTENT);
    res
}
