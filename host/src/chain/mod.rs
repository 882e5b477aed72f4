//! A route's chain: the phase between the ingress and the origin.
//!
//! The route's middleware list is cut into segments, in order:
//!
//! - runs of components that export the filter interface take the fast
//!   path ([`filter`]): plain synchronous calls, one pass per request;
//! - runs of components that are only `wasi:http` middleware take the
//!   composed path ([`composed`], built by [`compose`]); its innermost
//!   `next` goes on to the following segment.
//!
//! After the last segment comes the route's [`End`]: its upstream; in a
//! Spin app on the fast path, the primary component's forwarding, done by
//! the host ([`primary`]); or, in a Spin app whose primary is composed,
//! nothing (the last composed segment ends in it, and it answers).
//! [`sandbox`] holds what every instance shares (engine, store data,
//! deadline, memory cap, linker) and [`slot`] the per-request record.

pub mod compose;
pub mod composed;
pub mod filter;
pub mod primary;
pub mod request_match;
pub mod sandbox;
pub mod slot;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use crate::egress::{OriginClient, RouteUpstream};
use composed::{ChainHandler, ComposedRequest};
use filter::FilterRun;
use primary::Primary;
use slot::{Failure, RequestSlot};

type Request = http::Request<WasiBody>;
type Response = http::Response<WasiBody>;

/// One segment of a route's chain.
pub enum Segment {
    Filters(FilterRun),
    Composed(ChainHandler),
}

/// What comes after a chain's last segment.
pub enum End {
    /// The route's upstream.
    Upstream(Arc<RouteUpstream>),
    /// A Spin app's primary component, whose forwarding the host does.
    Primary(Primary),
    /// A Spin app's primary component, composed into the last segment.
    Answers,
}

/// Why a chain did not produce a response.
#[derive(Debug)]
pub enum ChainError {
    /// A component failed (trap, panic, deadline, memory); the request's
    /// slot says which kind.
    Component(wasmtime::Error),
    /// The origin could not be reached or did not answer in time.
    Origin(HttpError),
}

impl From<wasmtime::Error> for ChainError {
    fn from(e: wasmtime::Error) -> Self {
        ChainError::Component(e)
    }
}

/// A route's runnable chain.
pub struct RouteChain {
    pub route: String,
    /// The route's middleware names, in order (for logs and metrics).
    pub components: String,
    segments: Vec<Segment>,
    end: End,
    client: Arc<OriginClient>,
    /// Whether a composed segment (whose SDK middleware report their own
    /// times) is in the chain.
    pub has_composed: bool,
    /// Names whose reported times are recorded (see `timing.rs`).
    pub reporters: crate::timing::Reporters,
}

/// The rest of a chain after a composed segment, handed to that segment's
/// innermost `next` for one request.
#[derive(Clone)]
pub struct Downstream {
    chain: Arc<RouteChain>,
    from: usize,
    slot: Arc<RequestSlot>,
}

impl Downstream {
    /// Whether only the upstream is left (no more components).
    pub fn is_upstream(&self) -> bool {
        self.from >= self.chain.segments.len()
    }

    /// Runs the rest of the chain; a component failure there has been
    /// recorded in the request's slot and becomes an internal error here.
    pub async fn run(self, req: Request) -> Result<Response, HttpError> {
        match self.chain.run(self.from, req, &self.slot).await {
            Ok(res) => Ok(res),
            Err(ChainError::Origin(e)) => Err(e),
            Err(ChainError::Component(_)) => {
                self.slot.record(Failure::Trapped);
                Err(HttpError::InternalError(None))
            }
        }
    }
}

impl RouteChain {
    pub fn new(
        route: &str,
        components: String,
        segments: Vec<Segment>,
        end: End,
        client: Arc<OriginClient>,
    ) -> Self {
        let has_composed = segments.iter().any(|s| matches!(s, Segment::Composed(_)));
        let reporters = crate::timing::Reporters::new(components.split(',').count());
        Self {
            reporters,
            route: route.to_owned(),
            components,
            segments,
            end,
            client,
            has_composed,
        }
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Runs `req` through segments `from..`, then the upstream.
    pub fn run<'a>(
        self: &'a Arc<Self>,
        from: usize,
        req: Request,
        slot: &'a Arc<RequestSlot>,
    ) -> Pin<Box<dyn Future<Output = Result<Response, ChainError>> + Send + 'a>> {
        Box::pin(async move {
            match self.segments.get(from) {
                None => match &self.end {
                    End::Upstream(upstream) => {
                        let forwarded = upstream
                            .forward(&self.client, req, slot.deadline(), slot.trace())
                            .await;
                        if let Some(endpoint) = forwarded.endpoint {
                            slot.set_endpoint(endpoint);
                        }
                        forwarded.result.map_err(ChainError::Origin)
                    }
                    End::Primary(primary) => primary.forward(&self.client, req, slot).await,
                    End::Answers => Err(ChainError::Origin(HttpError::DestinationNotFound)),
                },
                Some(Segment::Filters(run)) => {
                    run.handle(req, slot, |req| self.run(from + 1, req, slot))
                        .await
                }
                Some(Segment::Composed(handler)) => {
                    // Before `End::Answers`, the last segment answers itself.
                    let next = from + 1;
                    let downstream = (next < self.segments.len()
                        || !matches!(self.end, End::Answers))
                    .then(|| Downstream {
                        chain: self.clone(),
                        from: next,
                        slot: slot.clone(),
                    });
                    let request = ComposedRequest {
                        slot: slot.clone(),
                        downstream,
                    };
                    handler
                        .handle(request, req)
                        .await
                        .map_err(ChainError::Component)
                }
            }
        })
    }
}
