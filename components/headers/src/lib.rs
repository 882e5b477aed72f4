//! The headers gate component: security headers on every response, origin
//! headers that disclose the server removed, CORS from an allowlist (with
//! preflights answered at the edge), and a request id on the way in and out.
//!
//! Decisions live in [`policy`]; this file only turns them into header
//! edits, as a [`Filter`].

pub mod policy;

use policy::{Config, is_preflight};
use tollgate_sdk::config::Vars;
use tollgate_sdk::filter::{Filter, Request, ResponseEdits, Verdict};
use tollgate_sdk::problem;
use tollgate_sdk::request::{REQUEST_ID, header_str, request_id, set_header};

impl Filter for Config {
    const VARIABLES: &'static [&'static str] = policy::VARIABLES;

    fn init(vars: &Vars) -> Result<Self, String> {
        Config::parse(vars)
    }

    fn request_headers(&self) -> Option<Vec<String>> {
        Some(vec![
            REQUEST_ID.into(),
            "origin".into(),
            "access-control-request-method".into(),
        ])
    }

    /// The same on every response: disclosure headers removed, security
    /// headers set, and, with CORS on, `Vary: Origin` and the origin
    /// server's own CORS headers removed (the edge decides).
    fn fixed_response_edits(&self, res: &mut ResponseEdits) {
        for name in &self.remove {
            res.remove(name);
        }
        for (name, value) in &self.security {
            res.set(name, value);
        }
        if self.cors.is_some() {
            // Responses differ by Origin whenever CORS is on: caches must know.
            res.append("vary", "Origin");
            for n in [
                "access-control-allow-origin",
                "access-control-allow-credentials",
                "access-control-expose-headers",
            ] {
                res.remove(n);
            }
        }
    }

    fn on_request(&self, req: &mut Request, res: &mut ResponseEdits) -> Verdict {
        let id = request_id(req.headers())
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        req.set_header(REQUEST_ID, &id);

        let origin = header_str(req.headers(), "origin");
        let grant = match (&self.cors, origin) {
            (Some(cors), Some(o)) => cors.grant(o),
            _ => None,
        };
        let preflight = self.cors.is_some()
            && is_preflight(
                req.method().as_str(),
                origin.is_some(),
                req.headers().contains_key("access-control-request-method"),
            );
        finish(res, self, grant.as_ref(), &id);
        if !preflight {
            return Verdict::Continue;
        }
        let mut answer = problem::empty_answer(204);
        if let (Some(cors), Some(_)) = (&self.cors, &grant) {
            let h = answer.headers_mut();
            set_header(h, "access-control-allow-methods", &cors.methods);
            set_header(h, "access-control-allow-headers", &cors.headers);
            set_header(h, "access-control-max-age", &cors.max_age.to_string());
        }
        Verdict::Answer(answer)
    }
}

/// The per-request response edits (after the fixed ones), for preflights
/// and forwarded requests alike: the request id and the CORS grant.
fn finish(res: &mut ResponseEdits, config: &Config, grant: Option<&policy::CorsGrant>, id: &str) {
    res.set(REQUEST_ID, id);
    if let (Some(cors), Some(g)) = (&config.cors, grant) {
        res.set("access-control-allow-origin", &g.origin);
        res.set("access-control-expose-headers", &cors.expose);
        if g.credentials {
            res.set("access-control-allow-credentials", "true");
        }
    }
}

tollgate_sdk::export_filter!(Config);
