//! The upstream phase of a Spin app on the fast path: a primary component
//! that exports `tollgate:gate/upstream@0.4.0` (`wit/upstream.wit`) is
//! asked once, at startup, where its requests go, and then the host
//! forwards every request itself, as the component's `wasi:http` handler
//! would on Spin — so no guest runs, and no `wasi:http` hop is made, after
//! the route's filters.
//!
//! Startup checks what the component declared (each origin a valid
//! `scheme://host[:port]` in the app's `allowed_outbound_hosts`, the
//! trusted proxies valid networks) and refuses to start otherwise. Per
//! request: the `spin-*` headers go and the forwarding headers are set from
//! them (by the component's own rule, linked natively), the body limit and the route table
//! apply, and the request goes to that origin's [`RouteUpstream`], with the
//! component's attempts, backoff (no jitter, no budget) and response
//! timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http::header::{self, HeaderMap};
use http_body::Body as _;
use http_body_util::{BodyExt, Full, Limited};
use ipnet::IpNet;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use super::ChainError;
use super::filter::SetupError;
use super::sandbox::{ChainState, StoreFactory};
use super::slot::RequestSlot;
use crate::config::{Origin, parse_origin};
use crate::egress::client::is_allowed;
use crate::egress::retry::RetryConfig;
use crate::egress::{OriginClient, RouteUpstream, Upstream, UpstreamConfig};
use crate::problem::Problem;
use crate::telemetry::UpstreamFamilies;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "tollgate:gate/origin",
        exports: { default: async },
    });
}

use bindings::exports::tollgate::gate::upstream as wit;

/// The interface a primary component exports for the upstream phase.
pub const UPSTREAM: &str = "tollgate:gate/upstream@0.4.0";

type Request = http::Request<WasiBody>;
type Response = http::Response<WasiBody>;

/// A primary component's forwarding, run by the host.
pub struct Primary {
    /// (path prefix, its origin), longest prefix first.
    routes: Vec<(String, Arc<RouteUpstream>)>,
    max_body: usize,
    trusted: Vec<IpNet>,
}

/// What a route needs to turn a primary's declaration into upstreams.
pub struct PrimarySetup<'a> {
    pub route: &'a str,
    pub component: &'a str,
    pub allowed: &'a [Origin],
    pub families: UpstreamFamilies,
}

impl Primary {
    /// Calls the component's `init` with the route's variables and checks
    /// what it declared.
    pub async fn new(
        linker: &Linker<ChainState>,
        component: &Component,
        stores: &StoreFactory,
        setup: PrimarySetup<'_>,
    ) -> Result<Self, SetupError> {
        let mut store = stores.store(setup.component);
        let instance = bindings::Origin::instantiate_async(&mut store, component, linker).await?;
        let variables: Vec<(String, String)> = stores
            .services
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let peers = instance
            .tollgate_gate_upstream()
            .call_init(&mut store, &variables)
            .await?
            .map_err(|errors| SetupError::Config {
                component: setup.component.to_owned(),
                errors: errors
                    .into_iter()
                    .map(|e| (e.variable, e.message))
                    .collect(),
            })?;
        Self::from_peers(peers, &setup).map_err(|message| SetupError::Config {
            component: setup.component.to_owned(),
            errors: vec![(String::new(), message)],
        })
    }

    fn from_peers(peers: wit::Peers, setup: &PrimarySetup<'_>) -> Result<Self, String> {
        if peers.max_attempts == 0 || peers.response_timeout_ms == 0 {
            return Err("declared no attempts or no response timeout".into());
        }
        let retry = RetryConfig {
            attempts: peers.max_attempts,
            on_status: vec![502, 503, 504],
            backoff_base: Duration::from_millis(peers.backoff_base_ms.into()),
            backoff_max: Duration::from_millis(peers.backoff_cap_ms.into()),
            // As the component's own handler: every retry it allows.
            budget_min_retries: u32::MAX,
            jitter: false,
            ..RetryConfig::default()
        };
        let response_timeout = Duration::from_millis(peers.response_timeout_ms.into());
        let mut routes = Vec::with_capacity(peers.routes.len());
        for r in peers.routes {
            let origin = parse_origin(&r.origin).map_err(|e| format!("origin {e}"))?;
            let uri = Uri::builder()
                .scheme(origin.scheme.clone())
                .authority(origin.authority.clone())
                .path_and_query("/")
                .build()
                .map_err(|_| format!("origin `{}` is not a valid URL", r.origin))?;
            if !is_allowed(&uri, setup.allowed) {
                return Err(format!(
                    "origin `{origin}` is not in the app's allowed_outbound_hosts"
                ));
            }
            let config = UpstreamConfig {
                retry: retry.clone(),
                ..UpstreamConfig::single(setup.route, origin)
            };
            let name = format!("{}{}", setup.component, r.prefix);
            let upstream =
                Upstream::new(&UpstreamConfig { name, ..config }, setup.families.clone());
            let forward = RouteUpstream::new(setup.route, upstream, false)
                .with_response_timeout(response_timeout);
            routes.push((r.prefix, Arc::new(forward)));
        }
        routes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        // The component's own rule, so both hosts read the list alike.
        let trusted = tollgate_origin::forwarded::parse_trusted(&peers.trusted_proxies)?;
        Ok(Primary {
            routes,
            max_body: usize::try_from(peers.max_body_bytes).unwrap_or(usize::MAX),
            trusted,
        })
    }

    /// The upstream behind each declared prefix, for `/readyz` and the
    /// endpoint gauges.
    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<crate::egress::Upstream>> {
        self.routes.iter().map(|(_, forward)| &forward.upstream)
    }

    /// Forwards `req` as the component would: forwarding headers, body
    /// limit, route table, then the origin with retries.
    pub async fn forward(
        &self,
        client: &OriginClient,
        req: Request,
        slot: &RequestSlot,
    ) -> Result<Response, ChainError> {
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path();
        let Some((_, upstream)) = self.routes.iter().find(|(prefix, _)| matches(prefix, path))
        else {
            return Ok(problem(Problem::NotFound, slot));
        };
        let body = match body.size_hint().exact() {
            Some(n) if n > self.max_body as u64 => {
                return Ok(problem(Problem::BodyTooLarge, slot));
            }
            Some(_) => body,
            // A body streamed by a composed middleware: read it under the
            // limit, as the component does.
            None => match Limited::new(body, self.max_body).collect().await {
                Ok(b) => full(b.to_bytes()),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return Ok(problem(Problem::BodyTooLarge, slot));
                }
                Err(_) => return Ok(problem(Problem::BadRequest, slot)),
            },
        };
        for_origin(&mut parts.headers, &self.trusted);
        let forwarded = upstream
            .forward(
                client,
                http::Request::from_parts(parts, body),
                slot.deadline(),
                slot.trace(),
            )
            .await;
        if let Some(endpoint) = forwarded.endpoint {
            slot.set_endpoint(endpoint);
        }
        forwarded.result.map_err(ChainError::Origin)
    }
}

/// Whether `path` is under `prefix`: equal to it, or continuing it with `/`.
fn matches(prefix: &str, path: &str) -> bool {
    prefix.is_empty()
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The request's headers for the origin, by the origin component's own
/// rule (`components/origin/src/forwarded.rs`, linked natively, so both
/// hosts apply the same one): Spin's `spin-*` headers and the host's
/// client-address header go, and `X-Forwarded-*` come from what Spin's
/// trigger reported.
fn for_origin(headers: &mut HeaderMap, trusted: &[IpNet]) {
    tollgate_origin::forwarded::apply(headers, trusted);
    headers.remove(header::CONNECTION);
}

fn problem(p: Problem, slot: &RequestSlot) -> Response {
    p.response(slot.request_id())
        .map(|b| b.map_err(|_| HttpError::InternalError(None)).boxed_unsync())
}

fn full(b: Bytes) -> WasiBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(matches("", "/anything"));
        assert!(matches("/api", "/api"));
        assert!(matches("/api", "/api/x"));
        assert!(!matches("/api", "/apix"));
        assert!(!matches("/api", "/"));
    }
}
