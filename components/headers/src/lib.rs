//! The headers gate component: security headers on every response, origin
//! headers that disclose the server removed, CORS from an allowlist (with
//! preflights answered at the edge), and a request id on the way in and out.
//!
//! Decisions live in [`policy`]; this file only moves headers.

pub mod policy;

use std::sync::OnceLock;

use policy::{Config, is_preflight};
use tollgate_sdk::request::{REQUEST_ID, header_str, request_id, set_header};
use tollgate_sdk::{Request, Response, next, problem};

static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();

async fn handle(mut req: Request) -> tollgate_sdk::Result {
    let config = match tollgate_sdk::config::cached(&CONFIG, policy::VARIABLES, Config::parse).await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("headers: configuration error: {e}");
            return Ok(problem::respond(500, "The request could not be processed."));
        }
    };

    let id = request_id(req.headers())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    set_header(req.headers_mut(), REQUEST_ID, &id);

    let origin = header_str(req.headers(), "origin").map(str::to_owned);
    let grant = match (&config.cors, &origin) {
        (Some(cors), Some(o)) => cors.grant(o),
        _ => None,
    };

    let preflight = config.cors.is_some()
        && is_preflight(
            req.method().as_str(),
            origin.is_some(),
            req.headers().contains_key("access-control-request-method"),
        );
    let mut res = if preflight {
        let mut res = problem::empty(204);
        if let (Some(cors), Some(_)) = (&config.cors, &grant) {
            let h = res.headers_mut();
            set_header(h, "access-control-allow-methods", &cors.methods);
            set_header(h, "access-control-allow-headers", &cors.headers);
            set_header(h, "access-control-max-age", &cors.max_age.to_string());
        }
        res
    } else {
        next(req).await?
    };

    finish(&mut res, config, grant.as_ref(), &id);
    Ok(res)
}

/// Response-side changes shared by preflights and forwarded requests.
fn finish(res: &mut Response, config: &Config, grant: Option<&policy::CorsGrant>, id: &str) {
    let h = res.headers_mut();
    for name in &config.remove {
        h.remove(name.as_str());
    }
    for (name, value) in &config.security {
        set_header(h, name, value);
    }
    set_header(h, REQUEST_ID, id);
    if let Some(cors) = &config.cors {
        // Responses differ by Origin whenever CORS is on: caches must know.
        h.append("vary", tollgate_sdk::HeaderValue::from_static("Origin"));
        // Whatever the origin server said about CORS, the edge decides.
        for n in [
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "access-control-expose-headers",
        ] {
            h.remove(n);
        }
        if let Some(g) = grant {
            set_header(h, "access-control-allow-origin", &g.origin);
            set_header(h, "access-control-expose-headers", &cors.expose);
            if g.credentials {
                set_header(h, "access-control-allow-credentials", "true");
            }
        }
    }
}

tollgate_sdk::export_middleware!(handle);
