//! Response compression at the edge: gzip or brotli (tower-http's
//! compression layer, over async-compression) when the client accepts it.
//! Which responses: those of a route with `compression` on (the default;
//! the gateway's own problem+json answers never),
//! of a compressible type (text, JSON, JavaScript, XML, SVG), of at least
//! [`MIN_BYTES`] when their length is known, not already encoded (the
//! layer never encodes twice) and without `Cache-Control: no-transform`.

use http::header::{self, HeaderMap};
use http_body_util::BodyExt;
use tower_http::compression::CompressionBody;
use tower_http::compression::predicate::Predicate;
use tower_http::compression::{CompressionLayer, CompressionLevel};

use crate::ingress::ResponseBody;

/// Smaller bodies are sent as they are: the framing would eat the gain.
pub const MIN_BYTES: u64 = 1024;

/// Set on a response (as an extension) by the ingress when its route has
/// compression off. Only then: an extension map is an allocation, and the
/// default path should not pay it per request.
#[derive(Clone, Copy, Debug)]
pub struct RouteOff;

/// The layer the ingress wraps every connection's service in.
pub fn layer() -> CompressionLayer<Policy> {
    CompressionLayer::new()
        .gzip(true)
        .br(true)
        .no_deflate()
        .no_zstd()
        .quality(CompressionLevel::Default)
        .compress_when(Policy)
}

/// A compressed (or passed-through) response as the ingress sends it.
pub fn boxed(res: http::Response<CompressionBody<ResponseBody>>) -> http::Response<ResponseBody> {
    res.map(|b| {
        b.map_err(|e| e as Box<dyn std::error::Error + Send + Sync>)
            .boxed_unsync()
    })
}

/// Which responses are compressed (module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy;

impl Predicate for Policy {
    fn should_compress<B>(&self, response: &http::Response<B>) -> bool
    where
        B: http_body::Body,
    {
        response.extensions().get::<RouteOff>().is_none()
            && compressible(response.headers())
            && !no_transform(response.headers())
            && !too_small(response.headers())
    }
}

/// Text, and the structured types sent as text.
fn compressible(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "image/svg+xml"
        )
        // The gateway's own problem+json answers are small; never them.
        || (essence.ends_with("+json") && essence != "application/problem+json")
        || essence.ends_with("+xml")
}

fn no_transform(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
}

fn too_small(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n < MIN_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(
        on: bool,
        headers: &[(&str, &str)],
    ) -> http::Response<http_body_util::Empty<bytes::Bytes>> {
        let mut r = http::Response::builder();
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let mut r = r.body(http_body_util::Empty::new()).unwrap();
        if !on {
            r.extensions_mut().insert(RouteOff);
        }
        r
    }

    #[test]
    fn text_of_a_route_that_allows_it_is_compressed() {
        let p = Policy;
        let big = [
            ("content-type", "text/html; charset=utf-8"),
            ("content-length", "5000"),
        ];
        assert!(p.should_compress(&response(true, &big)));
        assert!(p.should_compress(&response(
            true,
            &[("content-type", "application/vnd.api+json")]
        )));
        assert!(!p.should_compress(&response(false, &big)));
        assert!(!p.should_compress(&response(
            true,
            &[("content-type", "application/problem+json")]
        )));
    }

    #[test]
    fn other_types_small_bodies_and_no_transform_are_left_alone() {
        let p = Policy;
        for headers in [
            &[("content-type", "image/png"), ("content-length", "5000")][..],
            &[("content-type", "text/plain"), ("content-length", "100")],
            &[
                ("content-type", "text/plain"),
                ("cache-control", "public, No-Transform"),
            ],
            &[("content-length", "5000")],
        ] {
            assert!(!p.should_compress(&response(true, headers)), "{headers:?}");
        }
    }
}
