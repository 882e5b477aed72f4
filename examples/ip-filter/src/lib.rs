//! An example third-party Tollgate plugin, written only with the SDK:
//! refuses clients by IP address. Configure it with the variables `allow`
//! and `deny` (comma-separated CIDRs). The decision logic is in [`rules`].

pub mod rules;

use std::sync::OnceLock;

use rules::Rules;
use tollgate_sdk::{Request, next, problem, request::client_ip};

static RULES: OnceLock<Result<Rules, String>> = OnceLock::new();

async fn handle(req: Request) -> tollgate_sdk::Result {
    let rules = match tollgate_sdk::config::cached(&RULES, rules::VARIABLES, Rules::parse).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ip-filter: configuration error: {e}");
            return Ok(problem::respond(500, "The request could not be processed."));
        }
    };
    if !rules.admits(client_ip(req.headers())) {
        return Ok(problem::respond(
            403,
            "Access from this address is not allowed.",
        ));
    }
    next(req).await
}

tollgate_sdk::export_middleware!(handle);
