//! Crossing between `wasi:http` values and `http` values, hop by hop.
//!
//! A middleware sees `http::Request`/`http::Response` heads, but a body it
//! never reads is handed on as the very stream it arrived as: the new
//! `wasi:http` value is built around the old one's body stream and
//! trailers future, so a hop copies the head, never the body bytes, and
//! spawns no copying task. Bodies the middleware built or read fall back to
//! spin-sdk's conversion, which streams them.

use std::any::Any;

use bytes::Bytes;
use spin_sdk::wasip3::http::types::{self, ErrorCode, Fields};
use spin_sdk::wasip3::http_compat::{
    IncomingMessage, IncomingRequestBody, IncomingResponseBody, RequestOptionsExtension,
    http_into_wasi_request,
};
use spin_sdk::wasip3::{wit_bindgen, wit_future};

/// The body of a response a middleware returns: the next handler's body,
/// handed on unread unless the middleware reads it, or one it built.
pub struct Body(Inner);

enum Inner {
    Passthrough(IncomingResponseBody),
    Boxed(spin_sdk::http::BoxBody),
}

impl Body {
    /// A body the middleware built.
    pub fn boxed<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<anyhow::Error>,
    {
        Body(Inner::Boxed(spin_sdk::http::box_body(body)))
    }

    pub(crate) fn passthrough(body: IncomingResponseBody) -> Self {
        Body(Inner::Passthrough(body))
    }
}

/// Builds the `wasi:http` request for `req`. An unread incoming body is
/// passed on as its stream.
pub(crate) fn into_wasi_request<B>(req: http::Request<B>) -> Result<types::Request, ErrorCode>
where
    B: http_body::Body + Any,
    B::Data: Into<Vec<u8>>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    let (mut parts, mut body) = req.into_parts();
    let Some(original) = (&mut body as &mut dyn Any)
        .downcast_mut::<IncomingRequestBody>()
        .and_then(IncomingRequestBody::take_unstarted)
    else {
        return http_into_wasi_request(http::Request::from_parts(parts, body));
    };

    // `wasi:http` carries the authority out of band; a `Host` header is
    // folded into it, as spin-sdk does.
    let host = match parts.headers.remove(http::header::HOST) {
        Some(v) => Some(v.to_str().map_err(internal)?.to_owned()),
        None => None,
    };
    let authority = match (parts.uri.authority(), host) {
        (Some(a), Some(h)) if a.as_str() != h => {
            return Err(internal("Host header does not match URI authority"));
        }
        (Some(a), _) => Some(a.as_str().to_owned()),
        (None, h) => h,
    };
    let options = parts
        .extensions
        .remove::<RequestOptionsExtension>()
        .map(|o| o.0);
    let headers = fields(parts.headers)?;

    let (stream, trailers, done) = relay(original);
    let (out, result) = types::Request::new(headers, Some(stream), trailers, options);
    forward(result, done);

    out.set_method(&(&parts.method).into())
        .map_err(|()| ErrorCode::HttpRequestMethodInvalid)?;
    let scheme = parts.uri.scheme().map(Into::into);
    out.set_scheme(scheme.as_ref())
        .map_err(|()| ErrorCode::HttpProtocolError)?;
    out.set_authority(authority.as_deref())
        .map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    out.set_path_with_query(parts.uri.path_and_query().map(|pq| pq.as_str()))
        .map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    Ok(out)
}

/// Builds the `wasi:http` response for `res`. A response body that came
/// from the next handler and was not read is passed on as its stream.
pub(crate) fn into_wasi_response(res: http::Response<Body>) -> Result<types::Response, ErrorCode> {
    let (parts, body) = res.into_parts();
    let mut incoming = match body.0 {
        Inner::Passthrough(incoming) => incoming,
        Inner::Boxed(boxed) => {
            return spin_sdk::http::IntoResponse::into_response(http::Response::from_parts(
                parts, boxed,
            ));
        }
    };
    let Some(original) = incoming.take_unstarted() else {
        return spin_sdk::http::IntoResponse::into_response(http::Response::from_parts(
            parts,
            spin_sdk::http::box_body(incoming),
        ));
    };
    let headers = fields(parts.headers)?;
    let (stream, trailers, done) = relay(original);
    let (out, result) = types::Response::new(headers, Some(stream), trailers);
    forward(result, done);
    out.set_status_code(parts.status.as_u16())
        .map_err(|()| internal("invalid status code"))?;
    Ok(out)
}

/// The stream and trailers of `msg`'s body, and the writer that reports to
/// its sender how the body's onward transmission ended.
fn relay<M: IncomingMessage>(
    msg: M,
) -> (
    wit_bindgen::StreamReader<u8>,
    wit_bindgen::FutureReader<Result<Option<types::Trailers>, ErrorCode>>,
    wit_bindgen::FutureWriter<Result<(), ErrorCode>>,
) {
    let (done, done_rx) = wit_future::new(|| Ok(()));
    let (stream, trailers) = msg.consume_body(done_rx);
    (stream, trailers, done)
}

/// Reports the onward transmission's outcome back to the body's sender.
fn forward(
    result: wit_bindgen::FutureReader<Result<(), ErrorCode>>,
    done: wit_bindgen::FutureWriter<Result<(), ErrorCode>>,
) {
    wit_bindgen::spawn(async move {
        let outcome = result.await;
        let _ = done.write(outcome).await;
    });
}

fn fields(headers: http::HeaderMap) -> Result<Fields, ErrorCode> {
    headers.try_into().map_err(internal)
}

fn internal(e: impl std::fmt::Display) -> ErrorCode {
    ErrorCode::InternalError(Some(e.to_string()))
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = anyhow::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, anyhow::Error>>> {
        match &mut self.get_mut().0 {
            Inner::Passthrough(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map_err(anyhow::Error::from),
            Inner::Boxed(b) => std::pin::Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Passthrough(b) => b.is_end_stream(),
            Inner::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.0 {
            Inner::Passthrough(b) => b.size_hint(),
            Inner::Boxed(b) => b.size_hint(),
        }
    }
}
