//! The egress: everything between a route's chain and the origin services.
//!
//! - [`client`]: the pooled HTTP client (connections per endpoint), and
//!   the `wasi:http` hooks that reach it from components;
//! - [`upstream`]: a route's upstream and one request's attempts on it,
//!   with retries ([`retry`]) under the route's budget;
//! - [`balance`]: which endpoint takes an attempt;
//! - [`endpoint`]: an endpoint's live state and passive health (outlier
//!   ejection);
//! - [`health_check`]: the active health checks, one task per upstream.

pub mod balance;
pub mod client;
pub mod endpoint;
pub mod health_check;
pub mod retry;
pub mod upstream;

pub use client::{OriginClient, strip_hop_by_hop};
pub use upstream::{Forwarded, RouteUpstream, Upstream, UpstreamConfig};
