//! The Tollgate SDK: everything a gate component needs, and nothing of the
//! WASI plumbing underneath.
//!
//! A gate is normally written as a [`filter::Filter`]: a decision on the
//! request head (and body, if asked for), with header edits to the request
//! and to the response coming back. [`export_filter!`] exports it twice
//! from one `.wasm`: as Tollgate's fast-path filter interface
//! (`tollgate:gate/filter@0.4.0`, `wit/filter.wit`) and as a standard
//! `wasi:http/middleware@0.3.0` handler, which Spin 4.1+ runs unchanged.
//!
//! ```text
//! use tollgate_sdk::filter::{Filter, Request, ResponseEdits, Verdict};
//!
//! struct Deny;
//! impl Filter for Deny {
//!     const VARIABLES: &'static [&'static str] = &[];
//!     fn init(_: &tollgate_sdk::config::Vars) -> Result<Self, String> { Ok(Deny) }
//!     fn on_request(&self, req: &mut Request, _: &mut ResponseEdits) -> Verdict {
//!         if req.headers().contains_key("x-forbidden") {
//!             return Verdict::Answer(tollgate_sdk::problem::answer(403, "Forbidden"));
//!         }
//!         Verdict::Continue
//!     }
//! }
//!
//! tollgate_sdk::export_filter!(Deny);
//! ```
//!
//! A plugin that needs the whole request (a streaming body, outbound calls
//! in the middle of a request) is written as an `async fn(Request) ->
//! tollgate_sdk::Result` that calls [`next`], and exported with
//! [`export_middleware!`]; it runs on the composed `wasi:http` path only.
//!
//! Modules: [`filter`] (the filter API), [`allocator`] (the components' allocator front), [`config`] (component variables), [`kv`] (key-value store with
//! atomic increment and compare-and-swap), [`problem`] (RFC 9457 answers),
//! [`request`] (client IP, request id, header helpers), [`timing`]
//! (time per component, reported to the host), and [`upstream`] (a
//! primary component's route table, for the host's upstream phase).

/// Every component built on the SDK allocates with talc instead of the
/// default (wasi-libc's dlmalloc), behind per-size free lists
/// ([`allocator`]): a filter call makes a few dozen small, short-lived
/// allocations (the lifted request, header maps, edits), which the lists
/// serve in a few instructions. talc grows the memory itself and coexists
/// with libc's own heap; a growth the host's memory cap refuses is an
/// allocation failure, which traps, as before.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: allocator::Cached<talc::wasm::WasmDynamicTalc> =
    allocator::Cached::new(talc::wasm::new_wasm_dynamic_allocator());

#[doc(hidden)]
pub mod abi;
pub mod allocator;
pub mod config;
pub mod filter;
pub mod header_name;
pub mod kv;
pub mod limit;
pub mod problem;
pub mod request;
pub mod timing;
pub mod upstream;
mod wire;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

pub use spin_sdk::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};

/// The `http` crate the SDK's request and response types come from.
pub use http;

/// An incoming request, as the previous handler (or the host) sent it.
pub type Request = spin_sdk::http::Request;

pub use wire::Body;

/// A response: from [`next`], or built by the middleware.
pub type Response = spin_sdk::http::Response<Body>;

/// The `wasi:http` error code a handler can fail with. The host maps
/// connection errors to 502 and timeouts to 504.
pub type ErrorCode = spin_sdk::wasip3::http::types::ErrorCode;

/// What a handler returns.
pub type Result<T = Response, E = ErrorCode> = std::result::Result<T, E>;

/// Passes `req` to the next handler in the chain (the origin, at the end)
/// and returns its response. `req` is the incoming request, or one rebuilt
/// around a body already read with [`read_body`].
#[cfg(feature = "middleware")]
pub async fn next<B>(req: http::Request<B>) -> Result
where
    B: http_body::Body + std::any::Any,
    B::Data: Into<Vec<u8>>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    let wasi = wire::into_wasi_request(req)?;
    let res = timing::in_next(spin_sdk::http::next(wasi)).await?;
    Ok(res.map(Body::passthrough))
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Broken,
}

/// Reads the whole request body, up to `limit` bytes. Returns the request
/// head and the bytes; rebuild with `http::Request::from_parts(parts, full(bytes))`.
pub async fn read_body(
    req: Request,
    limit: usize,
) -> std::result::Result<(http::request::Parts, Bytes), BodyError> {
    let (parts, body) = req.into_parts();
    let bytes = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                BodyError::TooLarge
            } else {
                BodyError::Broken
            }
        })?
        .to_bytes();
    Ok((parts, bytes))
}

/// A response with `status`, no headers, and `body`.
pub fn response(status: u16, body: impl Into<Bytes>) -> Response {
    let mut res = Response::new(full(body));
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    res
}

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body::boxed(Full::new(bytes.into()).map_err(|never| match never {}))
}

#[doc(hidden)]
pub mod __rt {
    //! Used by [`export_middleware!`]; not part of the API.
    pub use spin_sdk::wasip3;
    pub use std::vec::Vec;

    use spin_sdk::http::FromRequest;
    use spin_sdk::wasip3::http::types;

    /// Converts the wasi request, runs the handler, converts the response;
    /// reports the component's own time when the host asks for it.
    pub async fn dispatch<F, Fut>(
        request: types::Request,
        component: &str,
        handler: F,
    ) -> Result<types::Response, types::ErrorCode>
    where
        F: FnOnce(super::Request) -> Fut,
        Fut: core::future::Future<Output = super::Result>,
    {
        let request = super::Request::from_request(request)?;
        let span = super::timing::Span::start(request.headers());
        let mut response = handler(request).await?;
        if let Some(span) = span {
            span.finish(component, response.headers_mut());
        }
        super::wire::into_wasi_response(response)
    }
}

/// Exports `handler` (an `async fn(Request) -> tollgate_sdk::Result`) as
/// the component's `wasi:http/handler`.
#[macro_export]
macro_rules! export_middleware {
    ($handler:ident) => {
        // Natively (unit tests) there is nothing to export; keep the
        // handler referenced so it is not reported as dead code.
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = $handler;
        };

        #[cfg(target_arch = "wasm32")]
        mod __tollgate_export {
            $crate::__export_handler!(env!("CARGO_CRATE_NAME"), super::$handler);
        }
    };
}

/// The `wasi:http/handler` export both export macros share: converts the
/// request, runs `$handler`, reports timing, converts the response.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_handler {
    ($name:expr, $handler:path) => {
        pub struct Middleware;

        $crate::__rt::wasip3::http::service::export!(Middleware);

        impl $crate::__rt::wasip3::exports::http::handler::Guest for Middleware {
            async fn handle(
                request: $crate::__rt::wasip3::http::types::Request,
            ) -> ::core::result::Result<
                $crate::__rt::wasip3::http::types::Response,
                $crate::__rt::wasip3::http::types::ErrorCode,
            > {
                $crate::__rt::dispatch(request, $name, $handler).await
            }
        }
    };
}

/// Exports a [`filter::Filter`] type through both contracts: as
/// `tollgate:gate/filter@0.4.0` and as the component's `wasi:http/handler`.
#[cfg(feature = "middleware")]
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = <$filter as $crate::filter::Filter>::init;
        };

        #[cfg(target_arch = "wasm32")]
        mod __tollgate_filter {
            #[allow(unused_imports)]
            use super::*;

            type F = $filter;
            static FILTER: $crate::abi::Cell<F> = $crate::abi::Cell::new();
            const NAME: &str = env!("CARGO_CRATE_NAME");

            pub struct Gate;

            $crate::abi::__export_gate!(Gate with_types_in $crate::abi);

            impl $crate::abi::exports::tollgate::gate::filter::Guest for Gate {
                fn init(
                    variables: $crate::__rt::Vec<(String, String)>,
                ) -> ::core::result::Result<
                    $crate::abi::exports::tollgate::gate::filter::Capabilities,
                    $crate::__rt::Vec<$crate::abi::exports::tollgate::gate::filter::ConfigError>,
                > {
                    $crate::abi::init(&FILTER, NAME, variables)
                }

                fn on_request(
                    request: $crate::abi::exports::tollgate::gate::filter::RequestHead,
                ) -> $crate::abi::exports::tollgate::gate::filter::Verdict {
                    $crate::abi::on_request(&FILTER, request)
                }

                fn on_response(
                    status: u16,
                    headers: $crate::__rt::Vec<(String, $crate::__rt::Vec<u8>)>,
                ) -> $crate::__rt::Vec<$crate::abi::exports::tollgate::gate::filter::HeaderOp> {
                    $crate::abi::on_response(&FILTER, status, headers)
                }
            }

            async fn handle(req: $crate::Request) -> $crate::Result {
                $crate::abi::handle(&FILTER, NAME, req).await
            }

            $crate::__export_handler!(NAME, handle);
        }
    };
}

/// Sends a request to another service through `wasi:http/client`. Hosts
/// allow only the component's allowed outbound hosts.
pub async fn send<B>(req: http::Request<B>) -> Result
where
    B: http_body::Body + std::any::Any,
    B::Data: Into<Vec<u8>>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    let res = spin_sdk::http::send(wire::into_wasi_request(req)?).await?;
    Ok(res.map(Body::passthrough))
}

/// Makes an outbound GET and returns the status.
pub async fn http_get(url: &str) -> Result<u16> {
    let res = spin_sdk::http::get(url).await?;
    Ok(res.status().as_u16())
}

/// Sets connect and first-byte timeouts on an outbound request.
pub fn set_timeouts<B>(req: &mut http::Request<B>, connect_ms: u64, first_byte_ms: u64) {
    use spin_sdk::wasip3::http::types::RequestOptions;
    let o = RequestOptions::new();
    // A host that cannot honour a timeout says so; it still applies its own.
    let _ = o.set_connect_timeout(Some(connect_ms.saturating_mul(1_000_000)));
    let _ = o.set_first_byte_timeout(Some(first_byte_ms.saturating_mul(1_000_000)));
    req.extensions_mut()
        .insert(spin_sdk::wasip3::http_compat::RequestOptionsExtension(o));
}

/// Waits `ms` milliseconds without blocking other requests.
pub async fn sleep_ms(ms: u64) {
    spin_sdk::wasip3::clocks::monotonic_clock::wait_for(ms.saturating_mul(1_000_000)).await;
}
