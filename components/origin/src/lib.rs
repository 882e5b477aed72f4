//! The `origin` component: the primary (innermost) component of the Spin
//! app. It forwards each request to the origin chosen by the route table in
//! its variables, over `wasi:http/client` (so only `allowed_outbound_hosts`
//! are reachable), with connect and response timeouts, and retries
//! idempotent requests that fail to connect or get 502/503/504, with
//! capped exponential backoff. Spin's `spin-*` headers never reach the
//! origin; the forwarding headers are set from what Spin reports.
//!
//! On Tollgate's fast path the handler does not run: the component also
//! exports its route table and retry settings (`tollgate:gate/upstream`,
//! [`peers`]), and the host forwards by them.
//!
//! Decisions are in [`forward`] and [`forwarded`].

pub mod forward;
pub mod forwarded;

use std::sync::OnceLock;

use forward::{Config, idempotent, retryable_status};
use tollgate_sdk::http::{Request as HttpRequest, Uri};
use tollgate_sdk::{BodyError, Request, full, problem};

static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();

async fn handle(req: Request) -> tollgate_sdk::Result {
    let config =
        match tollgate_sdk::config::cached(&CONFIG, forward::VARIABLES, Config::parse).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("origin: configuration error: {e}");
                return Ok(problem::respond(500, "The request could not be processed."));
            }
        };
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    let Some(target) = config.target(req.uri().path(), &pq) else {
        return Ok(problem::respond(404, "No origin serves this path."));
    };
    let Ok(uri) = target.parse::<Uri>() else {
        return Ok(problem::respond(400, "The request is malformed."));
    };
    // The body is kept so that a retry can send it again.
    let (mut parts, body) = match tollgate_sdk::read_body(req, config.max_body_bytes).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return Ok(problem::respond(
                413,
                "The request body exceeds the configured limit.",
            ));
        }
        Err(BodyError::Broken) => {
            return Ok(problem::respond(400, "The request body could not be read."));
        }
    };
    parts.uri = uri;
    forwarded::apply(&mut parts.headers, &config.trusted_proxies);
    // Forbidden for a guest to set: the host sets them.
    parts.headers.remove("host");
    parts.headers.remove("connection");
    let attempts = if idempotent(parts.method.as_str()) {
        config.max_attempts
    } else {
        1
    };

    let mut last: Option<tollgate_sdk::Result> = None;
    for attempt in 1..=attempts {
        if attempt > 1 {
            tollgate_sdk::sleep_ms(config.backoff_ms(attempt - 1)).await;
        }
        let mut req = HttpRequest::from_parts(parts.clone(), full(body.clone()));
        tollgate_sdk::set_timeouts(
            &mut req,
            config.connect_timeout_ms,
            config.response_timeout_ms,
        );
        let result = tollgate_sdk::send(req).await;
        let retry = match &result {
            Ok(res) => retryable_status(res.status().as_u16()),
            Err(_) => true,
        };
        last = Some(result);
        if !retry {
            break;
        }
    }
    last.expect("at least one attempt")
}

/// The upstream phase's view of this component's configuration.
pub fn peers(v: &tollgate_sdk::config::Vars) -> Result<tollgate_sdk::upstream::Peers, String> {
    Config::parse(v).map(|c| c.peers())
}

tollgate_sdk::export_middleware!(handle);
tollgate_sdk::export_upstream!(peers);
