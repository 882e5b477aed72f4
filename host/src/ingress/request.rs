//! The request phase of the ingress: checks framing ([`super::framing`])
//! and the header and body limits, picks the route, sets forwarding
//! headers and the request id, runs the route's chain (or forwards straight
//! to the upstream for an empty chain), maps failures to problem+json, and
//! logs and counts every request, naming the endpoint that answered. The
//! same for HTTP/1.1, HTTP/2 and TLS: only the scheme differs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::uri::Scheme;
use http::{Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use wasmtime_wasi_http::handler::{ExpirationError, InstantiationError};
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

use super::{compression, forwarded, framing, spin_headers};
use crate::chain::ChainError;
use crate::chain::composed::ComposedRequest;
use crate::chain::slot::{Failure, RequestSlot};
use crate::egress::strip_hop_by_hop;
use crate::gateway::{Gateway, RouteRuntime};
use crate::problem::Problem;
use crate::routes::Matchable;
use crate::timing;
use crate::traces::{self, RequestTrace};

/// The request id header, sent to the origin and the client.
const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Which upstream endpoint answered a response (or was tried last), for
/// the access log.
#[derive(Clone)]
struct AnsweredBy(Arc<str>);

/// The body type of every response the gateway sends.
pub type ResponseBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Handles one request from end to end; never fails. Public so that the
/// in-process benchmarks can drive the gateway without sockets.
pub async fn handle<B>(
    gw: Arc<Gateway>,
    peer: SocketAddr,
    scheme: Scheme,
    req: Request<B>,
) -> Response<ResponseBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let start = Instant::now();
    gw.metrics.request_started();
    let request_id = request_id(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let trace = gw
        .traces
        .as_ref()
        .map(|t| Arc::new(t.start(req.headers(), method.as_str(), &path)));
    let trace_id = match &trace {
        Some(t) => Some(t.trace_id()),
        None => traces::incoming_trace_id(req.headers()),
    };

    let (route_name, response) = match admit(&gw, peer, &scheme, req, &request_id).await {
        Err((route, problem)) => (route, problem.response(&request_id)),
        Ok((route, req)) => {
            let mut res = dispatch(&gw, route, req, &request_id, trace.as_ref()).await;
            if !route.compression {
                res.extensions_mut().insert(compression::RouteOff);
            }
            route.counts.record(res.status().as_u16(), start.elapsed());
            (route.name.clone(), res)
        }
    };
    let mut response = response;
    response
        .headers_mut()
        .entry(REQUEST_ID)
        .or_insert_with(|| HeaderValue::from_str(&request_id).expect("ids are header-safe"));

    let status = response.status().as_u16();
    let elapsed = start.elapsed();
    let endpoint = response
        .extensions()
        .get::<AnsweredBy>()
        .map(|a| a.0.clone());
    gw.metrics
        .record(&route_name, status, elapsed.as_secs_f64());
    if let Some(t) = &trace {
        t.finish(&route_name, &request_id, status);
    }
    tracing::info!(
        target: "tollgate::access",
        request_id = %request_id,
        route = %route_name,
        method = %method,
        path = %path,
        status,
        endpoint = endpoint.as_deref().unwrap_or("-"),
        trace_id = trace_id.as_deref().unwrap_or("-"),
        duration_us = elapsed.as_micros() as u64,
        decision = decision(status),
        "request"
    );
    response
}

fn decision(status: u16) -> &'static str {
    match status {
        200..=399 => "allow",
        401 | 403 => "deny-auth",
        429 => "deny-rate",
        400..=499 => "reject",
        _ => "error",
    }
}

/// Checks the request against the limits and routes, and prepares it for
/// the chain. Errors carry the route name for metrics (`-` when none).
async fn admit<'g, B>(
    gw: &'g Gateway,
    peer: SocketAddr,
    scheme: &Scheme,
    req: Request<B>,
    request_id: &str,
) -> Result<(&'g RouteRuntime, Request<wasmtime_wasi_http::WasiBody>), (String, Problem)>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let none = || "-".to_string();
    if framing::header_block_size(&req) > gw.limits.max_header_bytes {
        return Err((none(), Problem::HeadersTooLarge));
    }
    framing::check_method(&req).map_err(|p| (none(), p))?;
    let Some(host) = framing::request_host(&req) else {
        return Err((none(), Problem::BadRequest));
    };
    let Some(route) = gw.routes.find(&host, req.uri().path()) else {
        return Err((none(), Problem::NotFound));
    };
    let fail = |p| (route.name.clone(), p);
    framing::check_route_method(&req, route.allow_trace).map_err(fail)?;

    let declared = match framing::content_length(req.headers()) {
        Ok(n) => n,
        Err(()) => return Err(fail(Problem::BadRequest)),
    };
    if declared.is_some_and(|n| n > gw.limits.max_body_bytes as u64) {
        return Err(fail(Problem::BodyTooLarge));
    }
    let (mut parts, body) = req.into_parts();
    // Buffer the (bounded) body before anything sees the request: a body
    // over the limit is refused whole, never half-forwarded.
    let body = match Limited::new(body, gw.limits.max_body_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(fail(Problem::BodyTooLarge));
        }
        Err(_) => return Err(fail(Problem::BadRequest)),
    };

    strip_hop_by_hop(&mut parts.headers);
    // Room for the forwarding headers and the request id, in one growth.
    parts.headers.reserve(6);
    // Only the gateway says who the client is, and asks for timings.
    parts.headers.remove(timing::HEADER);
    parts.headers.remove(forwarded::CLIENT_IP);
    // Kept as parsed: the URI below reuses it rather than parse it again.
    let pq = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    if route.upstream.is_none() {
        // A Spin app: the request as Spin's trigger would hand it over.
        spin_headers::apply(
            &mut parts.headers,
            peer,
            &format!("{scheme}://{host}{}", pq.as_str()),
            parts.uri.path(),
            route.prefix(),
            route.exact(),
        );
    } else {
        forwarded::apply(
            &mut parts.headers,
            peer.ip(),
            scheme.as_str(),
            &host,
            &gw.trusted_proxies,
        );
        parts.headers.remove(forwarded::SPIN_CLIENT_ADDR);
    }
    parts.headers.insert(
        REQUEST_ID,
        HeaderValue::from_str(request_id).expect("ids are header-safe"),
    );
    // Components see an absolute URI naming the host the client asked for.
    parts.uri = match Uri::builder()
        .scheme(scheme.clone())
        .authority(host.as_str())
        .path_and_query(pq)
        .build()
    {
        Ok(u) => u,
        Err(_) => return Err(fail(Problem::BadRequest)),
    };
    parts.version = http::Version::HTTP_11;
    let body = Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok((route, Request::from_parts(parts, body)))
}

/// Runs the route's chain, or forwards directly when it has none.
async fn dispatch(
    gw: &Gateway,
    route: &RouteRuntime,
    req: Request<wasmtime_wasi_http::WasiBody>,
    request_id: &str,
    trace: Option<&Arc<RequestTrace>>,
) -> Response<ResponseBody> {
    let Some(chain) = &route.chain else {
        let Some(upstream) = &route.upstream else {
            return Problem::BadGateway.response(request_id);
        };
        let deadline = Instant::now() + gw.limits.request_timeout;
        let forwarded = upstream
            .forward(&gw.client, req, deadline, trace.map(|t| &**t))
            .await;
        let mut res = match forwarded.result {
            Ok(res) => res.map(|b| b.map_err(Into::into).boxed_unsync()),
            Err(e) => problem_for_http_error(&e).response(request_id),
        };
        if let Some(endpoint) = forwarded.endpoint {
            res.extensions_mut().insert(AnsweredBy(endpoint));
        }
        return res;
    };
    // Admission: at most `max_instances` requests inside chains at once.
    let permit = match tokio::time::timeout(
        gw.limits.request_timeout,
        gw.admission.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(p)) => p,
        _ => return Problem::Overloaded.response(request_id),
    };
    let started = Instant::now();
    let slot =
        Arc::new(RequestSlot::new(request_id, gw.limits.request_timeout).traced(trace.cloned()));
    let mut req = req;
    if chain.has_composed {
        // Composed SDK middleware report their own times when asked.
        req.headers_mut()
            .insert(timing::HEADER, HeaderValue::from_static("1"));
    }
    let result = chain.run(0, req, &slot).await;
    drop(permit);
    let endpoint = slot.endpoint();
    gw.metrics.record_chain(
        &route.name,
        &chain.components,
        started.elapsed().as_secs_f64(),
    );
    for t in slot.take_times() {
        gw.metrics
            .record_component(&route.name, &t.name, t.took.as_secs_f64());
        route.counts.record_component(&t.name, t.took);
        if let Some(trace) = trace {
            trace.component(&t.name, t.started, t.took, true);
        }
    }
    let mut res = match result {
        Ok(mut res) => {
            if chain.has_composed {
                for (component, seconds) in timing::take(res.headers_mut()) {
                    if chain.reporters.admit(&component) {
                        gw.metrics
                            .record_component(&route.name, &component, seconds);
                        let took = Duration::from_secs_f64(seconds);
                        route.counts.record_component(&component, took);
                        if let Some(trace) = trace {
                            trace.component(&component, started, took, false);
                        }
                    }
                }
            }
            res.map(|b| b.map_err(Into::into).boxed_unsync())
        }
        Err(ChainError::Origin(e)) => problem_for_http_error(&e).response(request_id),
        Err(ChainError::Component(e)) => {
            let failure = slot.failure();
            let problem = classify_failure(&e, failure);
            if matches!(problem, Problem::ComponentFailed | Problem::GatewayTimeout) {
                tracing::error!(
                    request_id = %request_id,
                    route = %route.name,
                    components = %chain.components,
                    failure = failure_kind(&e, failure),
                    "middleware chain failed"
                );
            }
            problem.response(request_id)
        }
    };
    if let Some(endpoint) = endpoint {
        res.extensions_mut().insert(AnsweredBy(endpoint));
    }
    res
}

/// Maps a chain failure to the problem the client sees.
fn classify_failure(e: &wasmtime::Error, failure: Option<Failure>) -> Problem {
    if e.is::<ExpirationError>() || failure == Some(Failure::DeadlineExceeded) {
        return Problem::GatewayTimeout;
    }
    if matches!(failure, Some(Failure::Trapped | Failure::MemoryLimit)) {
        return Problem::ComponentFailed;
    }
    if let Some(code) = e.downcast_ref::<ErrorCode>() {
        return problem_for_code(code);
    }
    Problem::ComponentFailed
}

/// A short, fixed description of a failure for logs: never the guest's text.
fn failure_kind(e: &wasmtime::Error, failure: Option<Failure>) -> &'static str {
    match failure {
        Some(Failure::DeadlineExceeded) => "deadline-exceeded",
        Some(Failure::MemoryLimit) => "memory-limit",
        Some(Failure::Trapped) => "trap-or-panic",
        None if e.is::<ExpirationError>() => "deadline-exceeded",
        None if e.is::<InstantiationError<ComposedRequest>>() => "instantiation-failed",
        None if e.downcast_ref::<ErrorCode>().is_some() => "upstream-error",
        None => "trap-or-panic",
    }
}

fn problem_for_code(code: &ErrorCode) -> Problem {
    match code {
        ErrorCode::DestinationUnavailable => Problem::NoHealthyUpstream,
        ErrorCode::HttpResponseTimeout
        | ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout => Problem::GatewayTimeout,
        _ => Problem::BadGateway,
    }
}

fn problem_for_http_error(e: &wasmtime_wasi_http::Error) -> Problem {
    use wasmtime_wasi_http::Error as E;
    match e {
        E::DestinationUnavailable => Problem::NoHealthyUpstream,
        E::HttpResponseTimeout | E::ConnectionTimeout | E::ConnectionReadTimeout => {
            Problem::GatewayTimeout
        }
        _ => Problem::BadGateway,
    }
}

/// A valid incoming `X-Request-ID` is kept; anything else is replaced.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map_or_else(new_request_id, str::to_owned)
}

/// A random UUID, hyphenated, written without `fmt`.
fn new_request_id() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
}

pub fn valid_request_id(v: &str) -> bool {
    (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_validated() {
        assert!(valid_request_id("abc-123_x.y:z"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("has space"));
        assert!(!valid_request_id(&"a".repeat(129)));
        let mut h = HeaderMap::new();
        h.insert("x-request-id", "bad id\t".parse().unwrap());
        let fresh = request_id(&h);
        assert!(valid_request_id(&fresh));
        assert_eq!(uuid::Uuid::parse_str(&fresh).unwrap().get_version_num(), 4);
        assert_eq!(fresh, fresh.to_lowercase());
        assert_ne!(request_id(&h), "bad id\t");
        h.insert("x-request-id", "good-id".parse().unwrap());
        assert_eq!(request_id(&h), "good-id");
    }
}
