//! What [`export_filter!`](crate::export_filter) expands to: one
//! [`Filter`] served through both contracts.
//!
//! - `tollgate:gate/filter@0.4.0` (the bindings below, from `wit/`): plain
//!   data in, plain data out, called synchronously by Tollgate's host;
//! - `wasi:http/handler@0.3.0`: [`handle`] runs the same decision, then
//!   `next`, then the response edits, so Spin runs the same `.wasm`.
//!
//! Not part of the API: plugin authors only write a [`Filter`].

use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;

use crate::filter::{self, Filter, HeaderOp, Prepared, ResponseEdits, Verdict};

wit_bindgen::generate!({
    path: "../../wit",
    world: "tollgate:gate/gate",
    pub_export_macro: true,
    export_macro_name: "__export_gate",
    default_bindings_module: "tollgate_sdk::abi",
});

use exports::tollgate::gate::filter as wit;

/// Where an exported filter lives in its instance: built once by `init`
/// (or, on Spin, by the first request), or the configuration error.
pub type Cell<F> = OnceLock<Result<Prepared<F>, String>>;

// --- tollgate:gate/filter ---------------------------------------------------

pub fn init<F: Filter>(
    cell: &'static Cell<F>,
    name: &str,
    variables: Vec<(String, String)>,
) -> Result<wit::Capabilities, Vec<wit::ConfigError>> {
    match cell.get_or_init(|| Prepared::init(&crate::config::Vars::from_pairs(variables))) {
        Ok(p) => Ok(wit::Capabilities {
            name: name.to_owned(),
            body_limit: p
                .filter
                .body_limit()
                .map(|l| u32::try_from(l).unwrap_or(u32::MAX)),
            wants_response: F::WANTS_RESPONSE,
            request_headers: p.reads().map(names),
            response_headers: p.response_reads().map(names),
            response_edits: ops(p.fixed().ops().to_vec()),
            called_for: p.request_match().map(|m| wit::RequestMatch {
                query_params: m.query_params.clone(),
                headers: m.headers.clone(),
            }),
        }),
        Err(e) => {
            let (variable, message) = filter::split_config_error(e);
            Err(vec![wit::ConfigError {
                variable: variable.to_owned(),
                message: message.to_owned(),
            }])
        }
    }
}

pub fn on_request<F: Filter>(cell: &'static Cell<F>, head: wit::RequestHead) -> wit::Verdict {
    let Some(Ok(prepared)) = cell.get() else {
        return answer_only(internal_error());
    };
    let filter = &prepared.filter;
    let Some(mut req) = request(head, prepared.reads().unwrap_or_default()) else {
        return answer_only(crate::problem::answer(400, "The request is malformed."));
    };
    let mut res = ResponseEdits::default();
    let verdict = filter::decide(filter, &mut req, &mut res);
    let (_, edits, _) = req.into_parts();
    let response = ops(res.into_ops());
    match verdict {
        Verdict::Continue => wit::Verdict {
            request: ops(edits),
            response,
            answer: None,
        },
        Verdict::Answer(a) => wit::Verdict {
            request: Vec::new(),
            response,
            answer: Some(response_of(a)),
        },
    }
}

pub fn on_response<F: Filter>(
    cell: &'static Cell<F>,
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
) -> Vec<wit::HeaderOp> {
    let Some(Ok(prepared)) = cell.get() else {
        return Vec::new();
    };
    let filter = &prepared.filter;
    let headers =
        header_map(headers, prepared.response_reads().unwrap_or_default()).unwrap_or_default();
    let mut res = ResponseEdits::default();
    filter.on_response(status, &headers, &mut res);
    ops(res.into_ops())
}

fn names(list: &[HeaderName]) -> Vec<String> {
    list.iter().map(|n| n.as_str().to_owned()).collect()
}

fn internal_error() -> http::Response<Bytes> {
    crate::problem::answer(500, "The request could not be processed.")
}

fn answer_only(a: http::Response<Bytes>) -> wit::Verdict {
    wit::Verdict {
        request: Vec::new(),
        response: Vec::new(),
        answer: Some(response_of(a)),
    }
}

/// The header block the host sent. The host sends only the names the
/// filter declared, so they are taken from its declaration rather than
/// parsed again; the values keep the memory they were lowered into.
fn header_map(fields: Vec<(String, Vec<u8>)>, known: &[HeaderName]) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for (n, v) in fields {
        map.append(
            crate::header_name::known_or_parsed(&n, known)?,
            HeaderValue::from_maybe_shared(Bytes::from(v)).ok()?,
        );
    }
    Some(map)
}

fn request(head: wit::RequestHead, known: &[HeaderName]) -> Option<filter::Request> {
    let method = http::Method::from_bytes(head.method.as_bytes()).ok()?;
    let mut uri = http::Uri::builder();
    if !head.authority.is_empty() {
        uri = uri
            .scheme(head.scheme.as_str())
            .authority(head.authority.as_str());
    }
    let uri = uri
        .path_and_query(head.path_with_query.as_str())
        .build()
        .ok()?;
    let headers = header_map(head.headers, known)?;
    Some(filter::Request::new(
        method,
        uri,
        headers,
        head.body.map(Bytes::from),
    ))
}

fn fields(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

fn response_of(a: http::Response<Bytes>) -> wit::Response {
    wit::Response {
        status: a.status().as_u16(),
        headers: fields(a.headers()),
        body: a.into_body().to_vec(),
    }
}

fn ops(ops: Vec<HeaderOp>) -> Vec<wit::HeaderOp> {
    ops.into_iter()
        .map(|op| match op {
            HeaderOp::Set(n, v) => {
                wit::HeaderOp::Set((n.as_str().to_owned(), v.as_bytes().to_vec()))
            }
            HeaderOp::Append(n, v) => {
                wit::HeaderOp::Append((n.as_str().to_owned(), v.as_bytes().to_vec()))
            }
            HeaderOp::Remove(n) => wit::HeaderOp::Remove(n.as_str().to_owned()),
        })
        .collect()
}

// --- wasi:http/handler --------------------------------------------------------

/// The filter as a `wasi:http` middleware: the same decision, then `next`,
/// then the response edits. On Spin a configuration error can only show
/// here: it is logged (stderr, which Spin logs) and answered with 500.
#[cfg(feature = "middleware")]
pub async fn handle<F: Filter>(
    cell: &'static Cell<F>,
    name: &str,
    request: crate::Request,
) -> crate::Result {
    if cell.get().is_none() {
        let vars = crate::config::Vars::load(F::VARIABLES).await;
        let _ = cell.set(Prepared::init(&vars));
    }
    let prepared = match cell.get().expect("set above") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ERROR {name}: configuration error: {e}");
            return Ok(internal_error().map(crate::full));
        }
    };
    let filter = &prepared.filter;
    let (mut parts, body) = request.into_parts();
    // Nothing the filter looks at is there: as on Tollgate's host, it is
    // not called (never so for a filter that reads the body).
    let call = prepared.called_for(parts.uri.query(), &parts.headers);
    // The filter sees only the headers it reads, as on Tollgate's host;
    // its edits then go to the whole header block.
    let view = prepared.view(&parts.headers);
    let narrowed = view.is_some();
    let headers = view.unwrap_or_else(|| std::mem::take(&mut parts.headers));
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    let mut edits = prepared.fixed().clone();
    let mut res = match filter.body_limit() {
        None if !call => {
            if !narrowed {
                parts.headers = headers;
            }
            crate::next(http::Request::from_parts(parts, body)).await?
        }
        // The body is never read: it goes on as the stream it came as.
        None => {
            let mut req = filter::Request::new(method, uri, headers, None);
            match filter::decide(filter, &mut req, &mut edits) {
                Verdict::Answer(a) => a.map(crate::full),
                Verdict::Continue => {
                    take_edits(&mut parts.headers, req, narrowed);
                    crate::next(http::Request::from_parts(parts, body)).await?
                }
            }
        }
        Some(limit) => {
            let bytes = match http_body_util::Limited::new(body, limit).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return Ok(filter::body_too_large().map(crate::full));
                }
                Err(_) => {
                    return Ok(crate::problem::respond(
                        400,
                        "The request body could not be read.",
                    ));
                }
            };
            let mut req = filter::Request::new(method, uri, headers, Some(bytes));
            match filter::decide(filter, &mut req, &mut edits) {
                Verdict::Answer(a) => a.map(crate::full),
                Verdict::Continue => {
                    let bytes = take_edits(&mut parts.headers, req, narrowed);
                    let body = crate::full(bytes.unwrap_or_default());
                    crate::next(http::Request::from_parts(parts, body)).await?
                }
            }
        }
    };
    edits.apply(res.headers_mut());
    let mut more = ResponseEdits::default();
    prepared.respond(res.status().as_u16(), res.headers(), &mut more);
    more.apply(res.headers_mut());
    Ok(res)
}

/// Puts the filter's request edits into the forwarded header block: its
/// view is that block itself unless it was `narrowed` to the headers the
/// filter reads. Returns the body.
#[cfg(feature = "middleware")]
fn take_edits(headers: &mut HeaderMap, req: filter::Request, narrowed: bool) -> Option<Bytes> {
    let (view, edits, body) = req.into_parts();
    if narrowed {
        for op in &edits {
            op.apply(headers);
        }
    } else {
        *headers = view;
    }
    body
}
