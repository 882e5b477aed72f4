//! RFC 9457 problem-details answers. Middleware that rejects a request
//! answers with one of these, never with internal detail.

use bytes::Bytes;

use crate::{Response, full};

/// A problem+json answer as plain data: `status`, a fixed `title` and
/// `detail`. Filters return these; [`problem`] wraps one for middleware.
pub fn plain(status: u16, title: &str, detail: &str) -> http::Response<Bytes> {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    });
    let mut res = http::Response::new(Bytes::from(body.to_string()));
    *res.status_mut() =
        crate::StatusCode::from_u16(status).unwrap_or(crate::StatusCode::INTERNAL_SERVER_ERROR);
    let h = res.headers_mut();
    h.insert(
        "content-type",
        crate::HeaderValue::from_static("application/problem+json"),
    );
    h.insert("cache-control", crate::HeaderValue::from_static("no-store"));
    res
}

/// A plain problem answer whose title is the status's reason phrase.
pub fn answer(status: u16, detail: &str) -> http::Response<Bytes> {
    plain(status, reason(status), detail)
}

/// An empty plain answer, for preflights and the like.
pub fn empty_answer(status: u16) -> http::Response<Bytes> {
    let mut res = http::Response::new(Bytes::new());
    *res.status_mut() =
        crate::StatusCode::from_u16(status).unwrap_or(crate::StatusCode::NO_CONTENT);
    res
}

fn reason(status: u16) -> &'static str {
    crate::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// A problem+json response: `status`, a fixed `title` and `detail`.
pub fn problem(status: u16, title: &str, detail: &str) -> Response {
    plain(status, title, detail).map(full)
}

/// A problem response whose title is the status's reason phrase.
pub fn respond(status: u16, detail: &str) -> Response {
    answer(status, detail).map(full)
}

/// An empty response, for preflight answers and the like.
pub fn empty(status: u16) -> Response {
    empty_answer(status).map(full)
}
