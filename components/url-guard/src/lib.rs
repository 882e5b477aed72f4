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
use tollgate_sdk::filter::{Filter, Request, RequestMatch, ResponseEdits, Verdict};
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

    /// Without a configured query parameter or header (and with no body to
    /// check) there is no URL to check: such a request is not handed over.
    fn called_for(&self) -> Option<RequestMatch> {
        Some(RequestMatch {
            query_params: self.query_params.clone(),
            headers: self.headers.clone(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_sdk::HeaderMap;
    use tollgate_sdk::filter::Prepared;

    fn prepared() -> Prepared<Config> {
        Prepared::init(&Vars::from_pairs([
            ("query_params", "url, callback"),
            ("headers", "X-Webhook"),
        ]))
        .unwrap()
    }

    /// Runs the filter on `target` with `headers`; whether it was to be
    /// called, and what it did: passed on with no edits (`None`), or
    /// something else (`Some(status)`, 0 for a pass with edits).
    fn run(target: &str, headers: &[(&str, &str)]) -> (bool, Option<u16>) {
        let p = prepared();
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                tollgate_sdk::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let uri: tollgate_sdk::http::Uri = target.parse().unwrap();
        let called = p.called_for(uri.query(), &map);
        let mut req = Request::new(tollgate_sdk::http::Method::GET, uri, map, None);
        let mut res = ResponseEdits::default();
        let outcome = match p.filter.on_request(&mut req, &mut res) {
            Verdict::Answer(a) => Some(a.status().as_u16()),
            Verdict::Continue => {
                let (_, edits, _) = req.into_parts();
                (!edits.is_empty() || !res.into_ops().is_empty()).then_some(0)
            }
        };
        (called, outcome)
    }

    #[test]
    fn a_request_it_is_not_called_for_would_pass_unchanged() {
        // Skipping a request is only right if the filter would do nothing.
        let bad = "http://169.254.169.254/";
        for (target, headers) in [
            ("/v1/items", vec![]),
            ("/v1/items?q=1&URL=http://169.254.169.254/", vec![]),
            ("/v1/items?u%72=x", vec![("x-other", bad)]),
            ("/v1/items?urls=http://10.0.0.1/", vec![("referer", bad)]),
        ] {
            assert_eq!(run(target, &headers), (false, None), "{target}");
        }
    }

    #[test]
    fn every_place_a_url_can_hide_is_matched() {
        let bad = "http://169.254.169.254/";
        for (target, headers) in [
            ("/?url=http://169.254.169.254/", vec![]),
            // The host decodes names as the filter does: no bypass.
            ("/?%75rl=http%3A%2F%2F169.254.169.254%2F", vec![]),
            ("/?q=1&callback=http://127.0.0.1/", vec![]),
            ("/", vec![("x-webhook", bad)]),
        ] {
            assert_eq!(run(target, &headers), (true, Some(400)), "{target}");
        }
        assert_eq!(run("/?url=https://example.com/", &[]), (true, None));
    }
}
