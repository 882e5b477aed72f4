//! The rate-limit gate component: every configured policy (per IP, per
//! identity, per header value, per route, global) must admit a request;
//! state lives in the key-value store and changes only atomically. Admitted
//! and refused responses carry the IETF `RateLimit` and `RateLimit-Policy`
//! headers; refusals are 429 with `Retry-After`.
//!
//! Configuration and decisions are in [`policy`]; the algorithms in the SDK.

pub mod policy;

use policy::{Algorithm, Config, Facts};
use tollgate_sdk::HeaderName;
use tollgate_sdk::config::Vars;
use tollgate_sdk::filter::{Filter, Request, ResponseEdits, Verdict};
use tollgate_sdk::http::header::RETRY_AFTER;
use tollgate_sdk::kv::{Store, StoreError};
use tollgate_sdk::limit::{check_gcra, now_micros, sliding_window};
use tollgate_sdk::problem;
use tollgate_sdk::request::{client_ip, header_str, set_header};

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

impl Filter for Config {
    const VARIABLES: &'static [&'static str] = policy::VARIABLES;

    fn init(vars: &Vars) -> Result<Self, String> {
        Config::parse(vars)
    }

    fn request_headers(&self) -> Option<Vec<String>> {
        Some(policy::headers_read(self))
    }

    fn on_request(&self, req: &mut Request, res: &mut ResponseEdits) -> Verdict {
        let headers = req.headers();
        let lookup = |name: &str| header_str(headers, name);
        let facts = Facts {
            ip: client_ip(headers),
            identity: header_str(headers, &self.identity_header),
            header: &lookup,
        };
        let now = now_micros();
        let store = Store::open(&self.store);
        let mut decisions = Vec::with_capacity(self.policies.len());
        for p in &self.policies {
            let Some(key) = policy::key_for(self, p, &facts) else {
                continue;
            };
            let result = match &store {
                Ok(store) => match self.algorithm {
                    Algorithm::TokenBucket => check_gcra(store, &key, now, &p.quota, p.cost),
                    Algorithm::SlidingWindow => sliding_window(store, &key, now, &p.quota, p.cost),
                },
                Err(e) => Err(e.clone()),
            };
            if let (Err(e), Ok(store)) = (&result, &store) {
                report(store, e, now, self.fail_open);
            }
            match result {
                Ok(d) => decisions.push((p, d)),
                Err(_) if self.fail_open => {}
                Err(_) => {
                    let mut a = problem::answer(503, "Rate limiting is unavailable; retry later.");
                    set_header(a.headers_mut(), RETRY_AFTER, "1");
                    return Verdict::Answer(a);
                }
            }
        }
        let verdict = policy::combine(&decisions);
        if !decisions.is_empty() {
            res.set(&RATELIMIT_POLICY, &verdict.policy_header);
            res.set(&RATELIMIT, &verdict.ratelimit_header);
        }
        if verdict.allowed {
            return Verdict::Continue;
        }
        let mut a = problem::answer(429, "Too many requests; retry later.");
        set_header(
            a.headers_mut(),
            RETRY_AFTER,
            &verdict.retry_after_secs.to_string(),
        );
        Verdict::Answer(a)
    }
}

/// Logs a store error. A store whose compare-and-swap never succeeds is a
/// configuration problem with one fix; that is logged at error level,
/// naming the fix, at most once a minute across every instance sharing the
/// store (the minute's slot is claimed with an atomic increment, which such
/// stores do support). Other errors are logged as they happen.
fn report(store: &Store, e: &StoreError, now: u64, admitting: bool) {
    let outcome = if admitting { "admitting" } else { "refusing" };
    if *e != StoreError::CasBroken {
        eprintln!("rate-limit: store error, {outcome}: {e}");
        return;
    }
    let slot = policy::cas_broken_log_key(now);
    if store.increment(&slot, 1).is_ok_and(|n| n > 1) {
        return;
    }
    eprintln!(
        "ERROR rate-limit: {e}, so the token bucket cannot run on it ({outcome} requests); set variable `algorithm = \"sliding-window\"`"
    );
}

tollgate_sdk::export_filter!(Config);
