//! The live dashboard: one page (`GET /` on the admin listener) with its
//! script and stylesheet, compiled into the binary from `dashboard/`. No
//! CDN, no framework, no build step. The page holds no data: its script
//! reads the admin API with the admin token, which the user types in (or
//! passes as `#token=…`, a fragment the browser never sends), so the page
//! itself is open like `/healthz`.
//!
//! A strict Content-Security-Policy lets the page run only its own script
//! and talk only to this listener.

use super::Answer;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The asset at `path`, if it is one of the dashboard's.
pub fn asset(path: &str) -> Option<Answer> {
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX),
        "/dashboard.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/dashboard.css" => ("text/css; charset=utf-8", STYLE),
        _ => return None,
    };
    Some(Answer::page(content_type, body.as_bytes().to_vec(), CSP))
}
