//! Tollgate's host runner as a library: the `tollgate` binary is a thin
//! command line over it, and the in-process benchmarks drive it directly.
//!
//! Data path of a request: [`ingress`] (TLS, HTTP/1.1 and HTTP/2, limits, framing, routing, forwarding headers)
//! → [`chain`] (the route's filters, called synchronously, and composed
//! `wasi:http` middleware) → [`egress`] (upstreams: balancing, retries,
//! health, and the pooled client to the origin services). Host
//! services for components are in [`services`] over [`kv`]; configuration
//! in [`config`] and [`manifest`]; logs and metrics in [`telemetry`], traces in [`traces`]; reloads in
//! [`reload`]; the admin API and dashboard in [`admin`].

pub mod admin;
pub mod builtin;
pub mod chain;
pub mod config;
pub mod demo_origin;
pub mod egress;
pub mod gateway;
pub mod ingress;
pub mod kv;
pub mod kv_redis;
pub mod manifest;
pub mod problem;
pub mod reload;
pub mod route_stats;
pub mod routes;
pub mod runtime_config;
pub mod services;
pub mod services_embedded;
pub mod stdio;
pub mod store;
pub mod telemetry;
pub mod timing;
pub mod traces;
