//! Fuzzes the components' variable parsers: rate-limit policies and the
//! auth configuration (API-key entries, JWT settings), with the input
//! split into variables at NUL bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_sdk::config::Vars;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let mut next = || parts.next().unwrap_or("");
    let (policies, algorithm, keys, jwt_alg, jwks) = (next(), next(), next(), next(), next());
    let _ = tollgate_rate_limit::policy::Config::parse(&Vars::from_pairs([
        ("policies", policies),
        ("algorithm", algorithm),
    ]));
    let mut auth = vec![("api_keys", keys)];
    if !jwt_alg.is_empty() {
        auth.extend([("jwt_algorithm", jwt_alg), ("jwt_jwks", jwks)]);
    }
    if let Ok(c) = tollgate_auth::policy::Config::parse(&Vars::from_pairs(auth)) {
        let _ = c.check_api_key(policies);
    }
});
