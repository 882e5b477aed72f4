//! The url-guard gate component: refuses requests that carry a URL the
//! SSRF policy forbids, in configured query parameters, headers or JSON
//! body fields. A refusal is a 400 problem+json that names the input, not
//! the reason.
//!
//! The policy is in [`ssrf`], the per-request checks in [`policy`]; this
//! file is the [`Filter`] entry point.

pub mod policy;
pub mod ssrf;

use policy::{BodyVerdict, Config};
use tollgate_sdk::config::Vars;
use tollgate_sdk::filter::{Filter, Request, ResponseEdits, Verdict};
use tollgate_sdk::problem;

fn refuse(input: &str) -> Verdict {
    Verdict::Answer(problem::plain(
        400,
        "Bad Request",
        &format!("The URL in {input} is not allowed."),
    ))
}

impl Filter for Config {
    const VARIABLES: &'static [&'static str] = policy::VARIABLES;

    fn init(vars: &Vars) -> Result<Self, String> {
        Config::parse(vars)
    }

    /// The headers that may carry URLs, and the body's type when JSON
    /// fields are checked.
    fn request_headers(&self) -> Option<Vec<String>> {
        let mut names = self.headers.clone();
        if !self.json_pointers.is_empty() {
            names.push("content-type".into());
        }
        Some(names)
    }

    /// Bodies are read only when JSON fields are to be checked.
    fn body_limit(&self) -> Option<usize> {
        (!self.json_pointers.is_empty()).then_some(self.max_body_bytes)
    }

    fn on_request(&self, req: &mut Request, _: &mut ResponseEdits) -> Verdict {
        let resolve: ssrf::Resolve = &resolve;
        if let Some(input) = policy::check_query(self, req.uri().query(), resolve) {
            return refuse(&input);
        }
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()));
        if let Some(input) = policy::check_headers(self, headers, resolve) {
            return refuse(&input);
        }
        let is_json = tollgate_sdk::request::header_str(
            req.headers(),
            tollgate_sdk::http::header::CONTENT_TYPE,
        )
        .is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.starts_with("application/json") || ct.contains("+json")
        });
        let Some(body) = req.body().filter(|_| is_json) else {
            return Verdict::Continue;
        };
        match policy::check_json(self, body, resolve) {
            BodyVerdict::Pass => Verdict::Continue,
            BodyVerdict::Refused(input) => refuse(&input),
            BodyVerdict::Malformed => {
                Verdict::Answer(problem::answer(400, "The request body is not valid JSON."))
            }
        }
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

tollgate_sdk::export_filter!(Config);
