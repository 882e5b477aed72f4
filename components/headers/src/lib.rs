//! The headers gate component: security headers on every response, origin
//! headers that disclose the server removed, CORS from an allowlist (with
//! preflights answered at the edge), a request id on the way in and out,
//! and `Secure`/`HttpOnly`/`SameSite` added to the origin's cookies.
//!
//! Decisions live in [`policy`]; this file only turns them into header
//! edits, as a [`Filter`].

pub mod cookies;
pub mod policy;

use policy::{Config, is_preflight};
use tollgate_sdk::config::Vars;
use tollgate_sdk::filter::{Filter, Request, ResponseEdits, Verdict};
use tollgate_sdk::http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, SET_COOKIE,
};
use tollgate_sdk::problem;
use tollgate_sdk::request::{REQUEST_ID, REQUEST_ID_NAME, header_str, request_id, set_header};
use tollgate_sdk::{HeaderMap, HeaderValue};

impl Filter for Config {
    const VARIABLES: &'static [&'static str] = policy::VARIABLES;
    /// For the cookies: only responses that set one are handed back.
    const WANTS_RESPONSE: bool = true;

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

    fn response_headers(&self) -> Option<Vec<String>> {
        // With hardening off, no response is ever handed back.
        Some(match self.cookies {
            Some(_) => vec!["set-cookie".into()],
            None => Vec::new(),
        })
    }

    /// Each `Set-Cookie` that lacks an attribute the policy asks for is
    /// rewritten; the fields stay separate, in their order.
    fn on_response(&self, _status: u16, headers: &HeaderMap, res: &mut ResponseEdits) {
        let Some(policy) = &self.cookies else {
            return;
        };
        // A value that is not text is kept as it came.
        let hardened: Vec<(&HeaderValue, Option<String>)> = headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| (v, v.to_str().ok().and_then(|c| policy.harden(c))))
            .collect();
        if hardened.iter().all(|(_, new)| new.is_none()) {
            return;
        }
        res.remove(SET_COOKIE);
        for (original, new) in hardened {
            match new {
                Some(new) => res.append(SET_COOKIE, &new),
                None => res.append_value(SET_COOKIE, original.clone()),
            }
        }
    }

    /// The same on every response: disclosure headers removed, security
    /// headers set, and, with CORS on, `Vary: Origin` and the origin
    /// server's own CORS headers removed (the edge decides).
    fn fixed_response_edits(&self, res: &mut ResponseEdits) {
        for name in &self.remove {
            res.remove(name);
        }
        for (name, value) in &self.security {
            res.set(*name, value);
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
        let mut fresh = uuid::Uuid::encode_buffer();
        let id = match request_id(req.headers()) {
            Some(id) => id.to_owned(),
            // Encoded in place: no formatting machinery per request.
            None => uuid::Uuid::new_v4()
                .hyphenated()
                .encode_lower(&mut fresh)
                .to_owned(),
        };
        req.set_header(&REQUEST_ID_NAME, &id);

        let origin = header_str(req.headers(), ORIGIN);
        let grant = match (&self.cors, origin) {
            (Some(cors), Some(o)) => cors.grant(o),
            _ => None,
        };
        let preflight = self.cors.is_some()
            && is_preflight(
                req.method().as_str(),
                origin.is_some(),
                req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD),
            );
        finish(res, self, grant.as_ref(), &id);
        if !preflight {
            return Verdict::Continue;
        }
        let mut answer = problem::empty_answer(204);
        if let (Some(cors), Some(_)) = (&self.cors, &grant) {
            let h = answer.headers_mut();
            set_header(h, ACCESS_CONTROL_ALLOW_METHODS, &cors.methods);
            set_header(h, ACCESS_CONTROL_ALLOW_HEADERS, &cors.headers);
            set_header(h, ACCESS_CONTROL_MAX_AGE, &cors.max_age.to_string());
        }
        Verdict::Answer(answer)
    }
}

/// The per-request response edits (after the fixed ones), for preflights
/// and forwarded requests alike: the request id and the CORS grant.
fn finish(res: &mut ResponseEdits, config: &Config, grant: Option<&policy::CorsGrant>, id: &str) {
    res.set(&REQUEST_ID_NAME, id);
    if let (Some(cors), Some(g)) = (&config.cors, grant) {
        res.set(ACCESS_CONTROL_ALLOW_ORIGIN, &g.origin);
        res.set(ACCESS_CONTROL_EXPOSE_HEADERS, &cors.expose);
        if g.credentials {
            res.set(ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
        }
    }
}

tollgate_sdk::export_filter!(Config);
