//! The url-guard gate component: refuses requests that carry a URL the
//! SSRF policy forbids, in configured query parameters, headers or JSON
//! body fields. A refusal is a 400 problem+json that names the input, not
//! the reason.
//!
//! The policy is in [`ssrf`], the per-request checks in [`policy`].

pub mod policy;
pub mod ssrf;

use std::sync::OnceLock;

use policy::{BodyVerdict, Config};
use tollgate_sdk::{BodyError, Request, full, next, problem};

static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();

fn refuse(input: &str) -> tollgate_sdk::Response {
    problem::problem(
        400,
        "Bad Request",
        &format!("The URL in {input} is not allowed."),
    )
}

async fn handle(req: Request) -> tollgate_sdk::Result {
    let config = match tollgate_sdk::config::cached(&CONFIG, policy::VARIABLES, Config::parse).await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("url-guard: configuration error: {e}");
            return Ok(problem::respond(500, "The request could not be processed."));
        }
    };
    let resolve: ssrf::Resolve = &resolve;
    if let Some(input) = policy::check_query(config, req.uri().query(), resolve) {
        return Ok(refuse(&input));
    }
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()));
    if let Some(input) = policy::check_headers(config, headers, resolve) {
        return Ok(refuse(&input));
    }
    let is_json =
        tollgate_sdk::request::header_str(req.headers(), "content-type").is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.starts_with("application/json") || ct.contains("+json")
        });
    if config.json_pointers.is_empty() || !is_json {
        return next(req).await;
    }
    let (parts, body) = match tollgate_sdk::read_body(req, config.max_body_bytes).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return Ok(problem::respond(
                413,
                "The request body is too large to inspect.",
            ));
        }
        Err(BodyError::Broken) => {
            return Ok(problem::respond(400, "The request body could not be read."));
        }
    };
    match policy::check_json(config, &body, resolve) {
        BodyVerdict::Pass => next(tollgate_sdk::http::Request::from_parts(parts, full(body))).await,
        BodyVerdict::Refused(input) => Ok(refuse(&input)),
        BodyVerdict::Malformed => Ok(problem::respond(400, "The request body is not valid JSON.")),
    }
}

/// Resolves through the host (`wasi:sockets` name lookup); the host must
/// grant the component name lookups (`allow_name_lookup = true`).
fn resolve(host: &str, port: u16) -> Option<Vec<std::net::IpAddr>> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .ok()
        .map(|addrs| addrs.map(|a| a.ip()).collect())
}

tollgate_sdk::export_middleware!(handle);
