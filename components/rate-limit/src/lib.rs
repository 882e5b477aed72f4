//! The rate-limit gate component: every configured policy (per IP, per
//! identity, per header value, per route, global) must admit a request;
//! state lives in the key-value store and changes only atomically. Admitted
//! and refused responses carry the IETF `RateLimit` and `RateLimit-Policy`
//! headers; refusals are 429 with `Retry-After`.
//!
//! Configuration and decisions are in [`policy`]; the algorithms in the SDK.

pub mod policy;

use std::sync::OnceLock;

use policy::{Algorithm, Config, Facts};
use tollgate_sdk::kv::Store;
use tollgate_sdk::limit::{check_gcra, now_micros, sliding_window};
use tollgate_sdk::request::{client_ip, header_str, set_header};
use tollgate_sdk::{Request, next, problem};

static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();

async fn handle(req: Request) -> tollgate_sdk::Result {
    let config = match tollgate_sdk::config::cached(&CONFIG, policy::VARIABLES, Config::parse).await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rate-limit: configuration error: {e}");
            return Ok(problem::respond(500, "The request could not be processed."));
        }
    };
    let headers = req.headers();
    let lookup = |name: &str| header_str(headers, name);
    let facts = Facts {
        ip: client_ip(headers),
        identity: header_str(headers, &config.identity_header),
        header: &lookup,
    };
    let now = now_micros();
    let store = Store::open(&config.store);
    let mut decisions = Vec::with_capacity(config.policies.len());
    for p in &config.policies {
        let Some(key) = policy::key_for(config, p, &facts) else {
            continue;
        };
        let result = match &store {
            Ok(store) => match config.algorithm {
                Algorithm::TokenBucket => check_gcra(store, &key, now, &p.quota, p.cost),
                Algorithm::SlidingWindow => sliding_window(store, &key, now, &p.quota, p.cost),
            },
            Err(e) => Err(e.clone()),
        };
        match result {
            Ok(d) => decisions.push((p, d)),
            Err(e) if config.fail_open => eprintln!("rate-limit: store error, admitting: {e}"),
            Err(e) => {
                eprintln!("rate-limit: store error, refusing: {e}");
                let mut res = problem::respond(503, "Rate limiting is unavailable; retry later.");
                set_header(res.headers_mut(), "retry-after", "1");
                return Ok(res);
            }
        }
    }
    let verdict = policy::combine(&decisions);
    let mut res = if verdict.allowed {
        next(req).await?
    } else {
        let mut res = problem::respond(429, "Too many requests; retry later.");
        set_header(
            res.headers_mut(),
            "retry-after",
            &verdict.retry_after_secs.to_string(),
        );
        res
    };
    if !decisions.is_empty() {
        set_header(
            res.headers_mut(),
            "ratelimit-policy",
            &verdict.policy_header,
        );
        set_header(res.headers_mut(), "ratelimit", &verdict.ratelimit_header);
    }
    Ok(res)
}

tollgate_sdk::export_middleware!(handle);
