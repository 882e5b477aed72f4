//! The auth gate component: API keys and JWTs, default deny. Client-sent
//! identity headers are always stripped; on success the verified identity
//! and scopes are injected for the origin. Every failure gets the same
//! generic 401; a lacking scope gets 403; too many failures (per IP, per
//! account, globally) lock further attempts out with 429.
//!
//! Verification is in [`jwt`], configuration and key checks in [`policy`];
//! this file is the [`Filter`] entry point.

pub mod jwt;
pub mod policy;

use policy::{Config, Lockout, bearer, has_scopes};
use tollgate_sdk::HeaderName;
use tollgate_sdk::config::Vars;
use tollgate_sdk::filter::{Filter, Request, ResponseEdits, Verdict};
use tollgate_sdk::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use tollgate_sdk::kv::{Store, StoreError};
use tollgate_sdk::limit::{now_micros, sliding_add, sliding_count};
use tollgate_sdk::problem;
use tollgate_sdk::request::{CLIENT_IP_HEADERS, client_ip, header_str, set_header};

static AUTH_METHOD: HeaderName = HeaderName::from_static("x-auth-method");

type Response = tollgate_sdk::filter::Answer;

/// The one answer every authentication failure gets.
fn unauthorized(config: &Config) -> Response {
    let mut res = problem::answer(401, "Valid credentials are required.");
    set_header(res.headers_mut(), WWW_AUTHENTICATE, &config.challenge);
    res
}

fn too_many(retry_after: u64) -> Response {
    let mut res = problem::answer(429, "Too many failed attempts; retry later.");
    set_header(
        res.headers_mut(),
        "retry-after",
        &retry_after.max(1).to_string(),
    );
    res
}

fn unavailable() -> Response {
    let mut res = problem::answer(503, "Authentication is unavailable; retry later.");
    set_header(res.headers_mut(), "retry-after", "1");
    res
}

/// The lockout counters that apply to one attempt.
fn counter_keys(
    ip: Option<std::net::IpAddr>,
    account: Option<&str>,
) -> Vec<(String, fn(&Lockout) -> i64)> {
    let mut keys: Vec<(String, fn(&Lockout) -> i64)> =
        vec![("tollgate:af:global".into(), |l| l.global)];
    if let Some(ip) = ip {
        keys.push((format!("tollgate:af:ip:{ip}"), |l| l.per_ip));
    }
    if let Some(a) = account.filter(|a| !a.is_empty() && a.len() <= 256) {
        keys.push((Lockout::account_key(a), |l| l.per_account));
    }
    keys
}

/// Seconds until the attempt may be retried, if any counter is at its limit.
fn locked(
    store: &Store,
    l: &Lockout,
    keys: &[(String, fn(&Lockout) -> i64)],
    now: u64,
) -> Result<Option<u64>, StoreError> {
    let window = l.window_secs * 1_000_000;
    let mut wait = None;
    for (key, limit) in keys {
        let (count, reset) = sliding_count(store, key, now, window)?;
        if count >= limit(l) {
            wait = Some(wait.map_or(reset, |w: u64| w.max(reset)));
        }
    }
    Ok(wait)
}

fn record_failure(
    store: &Store,
    l: &Lockout,
    keys: &[(String, fn(&Lockout) -> i64)],
    now: u64,
) -> Result<(), StoreError> {
    for (key, _) in keys {
        sliding_add(store, key, now, l.window_secs * 1_000_000, 1)?;
    }
    Ok(())
}

impl Filter for Config {
    const VARIABLES: &'static [&'static str] = policy::VARIABLES;

    fn init(vars: &Vars) -> Result<Self, String> {
        Config::parse(vars)
    }

    fn request_headers(&self) -> Option<Vec<String>> {
        let mut names: Vec<String> = self
            .strip_headers
            .iter()
            .map(|h| h.as_str().to_owned())
            .collect();
        names.extend([
            self.api_key_header.as_str().to_owned(),
            "authorization".into(),
        ]);
        names.extend(CLIENT_IP_HEADERS.map(String::from));
        if let Some(l) = &self.lockout {
            names.push(l.account_header.as_str().to_owned());
        }
        Some(names)
    }

    fn on_request(&self, req: &mut Request, _: &mut ResponseEdits) -> Verdict {
        match authenticate(self, req) {
            Ok(()) => Verdict::Continue,
            Err(answer) => Verdict::Answer(answer),
        }
    }
}

/// Admits `req` (with the verified identity set on it) or answers it.
fn authenticate(config: &Config, req: &mut Request) -> Result<(), Response> {
    // Identity comes only from verified credentials.
    for h in &config.strip_headers {
        req.remove_header(h);
    }
    if config.is_public(req.uri().path()) {
        return Ok(());
    }

    let now = now_micros();
    let headers = req.headers();
    let api_key = header_str(headers, &config.api_key_header).map(str::to_owned);
    let token = header_str(headers, AUTHORIZATION)
        .and_then(bearer)
        .map(str::to_owned);
    let ip = client_ip(headers);

    // Failed attempts count against the claimed account (a header, or the
    // unverified `sub` of a presented token), the IP, and everyone.
    let lockout = match &config.lockout {
        None => None,
        Some(l) => match Store::open(&l.store) {
            Ok(store) => {
                let claimed = header_str(headers, &l.account_header)
                    .map(str::to_owned)
                    .or_else(|| token.as_deref().and_then(jwt::unverified_subject));
                let keys = counter_keys(ip, claimed.as_deref());
                match locked(&store, l, &keys, now) {
                    Ok(Some(wait)) => return Err(too_many(wait)),
                    Ok(None) => Some((store, l, keys)),
                    Err(e) => {
                        eprintln!("auth: lockout store error: {e}");
                        return Err(unavailable());
                    }
                }
            }
            Err(e) => {
                eprintln!("auth: lockout store error: {e}");
                return Err(unavailable());
            }
        },
    };

    let verified = match (&api_key, &token, &config.jwt) {
        (Some(k), _, _) => config
            .check_api_key(k)
            .map(|key| (key.identity.clone(), key.scopes.clone(), "api-key")),
        (None, Some(t), Some(v)) => v
            .verify(t, now / 1_000_000)
            .ok()
            .map(|c| (c.subject, c.scopes, "jwt")),
        _ => None,
    };

    let Some((identity, scopes, method)) = verified else {
        if let Some((store, l, keys)) = &lockout
            && let Err(e) = record_failure(store, l, keys, now)
        {
            eprintln!("auth: could not record a failed attempt: {e}");
        }
        return Err(unauthorized(config));
    };

    // A locked account stays locked even with the right credential.
    if let Some((store, l, _)) = &lockout {
        match locked(store, l, &counter_keys(None, Some(&identity))[1..], now) {
            Ok(Some(wait)) => return Err(too_many(wait)),
            Ok(None) => {}
            Err(e) => {
                eprintln!("auth: lockout store error: {e}");
                return Err(unavailable());
            }
        }
    }
    if !has_scopes(&scopes, &config.required_scopes) {
        return Err(problem::answer(
            403,
            "The credentials do not grant access to this resource.",
        ));
    }
    if !config.forward_api_key {
        req.remove_header(&config.api_key_header);
    }
    req.set_header(&config.subject_header, &identity);
    req.set_header(&config.scopes_header, &scopes.join(" "));
    req.set_header(&AUTH_METHOD, method);
    Ok(())
}

tollgate_sdk::export_filter!(Config);
