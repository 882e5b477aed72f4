//! The ingress: everything between a client's socket and the route's
//! chain.
//!
//! - [`listen`]: accepting, TLS termination ([`tls`]), HTTP/1.1 and
//!   HTTP/2, graceful shutdown;
//! - [`request`]: one request's way through limits, [`framing`], routing,
//!   forwarding headers ([`forwarded`], or [`spin_headers`] for a Spin app),
//!   the chain, and the access log;
//! - [`compression`]: gzip and brotli on the way back.

pub mod compression;
pub mod forwarded;
pub mod framing;
mod listen;
mod request;
pub mod spin_headers;
pub mod tls;

pub use listen::{Bound, Listener, Live, bind_reuseport, serve, serve_workers};
pub use request::{ResponseBody, handle, valid_request_id};
