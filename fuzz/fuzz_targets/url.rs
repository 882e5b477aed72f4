//! Fuzzes the SSRF check and the query, header and JSON extractors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_sdk::config::Vars;
use tollgate_url_guard::policy::{Config, check_headers, check_json, check_query};
use tollgate_url_guard::ssrf::Resolve;

const NO_DNS: Resolve = &|_, _| None;

fuzz_target!(|data: &[u8]| {
    let config = Config::parse(&Vars::from_pairs([
        ("query_params", "url"),
        ("headers", "x-hook"),
        ("json_pointers", "/url, /images"),
        ("allowed_schemes", "http,https"),
    ]))
    .unwrap();
    let _ = check_json(&config, data, NO_DNS);
    let _ = check_headers(&config, [("x-hook", data)].into_iter(), NO_DNS);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = config.allows(text, NO_DNS);
        let _ = check_query(&config, Some(text), NO_DNS);
    }
});
