//! RFC 9457 problem-details responses: the only error body the gateway
//! itself ever sends. Titles and details are fixed, generic strings; no
//! internal error text reaches a client.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full};

use crate::ingress::ResponseBody;

/// The methods the gateway forwards (TRACE only on routes that allow it).
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Which problem occurred; each maps to one status and one fixed text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    BadRequest,
    NotFound,
    /// CONNECT, or TRACE where the route does not allow it.
    MethodNotAllowed,
    BodyTooLarge,
    HeadersTooLarge,
    ComponentFailed,
    BadGateway,
    GatewayTimeout,
    Overloaded,
    /// Every endpoint of the route's upstream fails its health checks.
    NoHealthyUpstream,
}

impl Problem {
    pub fn status(self) -> StatusCode {
        match self {
            Problem::BadRequest => StatusCode::BAD_REQUEST,
            Problem::NotFound => StatusCode::NOT_FOUND,
            Problem::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Problem::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Problem::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Problem::ComponentFailed => StatusCode::INTERNAL_SERVER_ERROR,
            Problem::BadGateway => StatusCode::BAD_GATEWAY,
            Problem::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Problem::Overloaded | Problem::NoHealthyUpstream => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn detail(self) -> &'static str {
        match self {
            Problem::BadRequest => "The request is malformed.",
            Problem::NotFound => "No route matches this request.",
            Problem::MethodNotAllowed => "This method is not served here.",
            Problem::BodyTooLarge => "The request body exceeds the configured limit.",
            Problem::HeadersTooLarge => "The request header block exceeds the configured limit.",
            Problem::ComponentFailed => "The request could not be processed.",
            Problem::BadGateway => "The upstream service could not be reached.",
            Problem::GatewayTimeout => "The request did not complete in time.",
            Problem::Overloaded => "The gateway is at capacity; retry later.",
            Problem::NoHealthyUpstream => "No healthy upstream endpoint is available; retry later.",
        }
    }

    /// The response, with the request id as the problem's `instance`.
    pub fn response(self, request_id: &str) -> http::Response<ResponseBody> {
        let status = self.status();
        let body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.detail(),
            "instance": format!("urn:request:{request_id}"),
        });
        let mut res = http::Response::new(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *res.status_mut() = status;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-request-id", v);
        }
        if self == Problem::MethodNotAllowed {
            // RFC 9110 §15.5.6: a 405 lists what is allowed.
            h.insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
        }
        if matches!(self, Problem::Overloaded | Problem::NoHealthyUpstream) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}
