//! An example third-party Tollgate plugin, written only with the SDK:
//! refuses clients by IP address. Configure it with the variables `allow`
//! and `deny` (comma-separated CIDRs). The decision logic is in [`rules`];
//! this file is the filter's thin entry point.

pub mod rules;

use rules::Rules;
use tollgate_sdk::config::Vars;
use tollgate_sdk::filter::{Filter, Request, ResponseEdits, Verdict};
use tollgate_sdk::problem;
use tollgate_sdk::request::{CLIENT_IP_HEADERS, client_ip};

impl Filter for Rules {
    const VARIABLES: &'static [&'static str] = rules::VARIABLES;

    fn init(vars: &Vars) -> Result<Self, String> {
        Rules::parse(vars)
    }

    /// Only the client address matters.
    fn request_headers(&self) -> Option<Vec<String>> {
        Some(CLIENT_IP_HEADERS.map(String::from).to_vec())
    }

    fn on_request(&self, req: &mut Request, _: &mut ResponseEdits) -> Verdict {
        if self.admits(client_ip(req.headers())) {
            Verdict::Continue
        } else {
            Verdict::Answer(problem::answer(
                403,
                "Access from this address is not allowed.",
            ))
        }
    }
}

tollgate_sdk::export_filter!(Rules);
