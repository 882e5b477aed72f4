//! End to end, through the real `tollgate` binary and a real origin: the
//! SSRF guard refuses addresses by spelling (`strict_ip_literals`), the
//! headers gate hardens the origin's cookies, and the token bucket tells
//! a store whose compare-and-swap never succeeds from a limit.

mod common;

use common::*;

fn guard_config(origin: &str, strict: Option<bool>) -> String {
    let strict = strict.map_or(String::new(), |s| format!(", strict_ip_literals = \"{s}\""));
    config(&format!(
        "[components.url-guard]\nsource = \"builtin:url-guard\"\nvariables = {{ query_params = \"url\"{strict} }}\n[[route]]\norigin = \"{origin}\"\nmiddleware = [\"url-guard\"]\n"
    ))
}

fn fetch(url: &str) -> String {
    let q: String = url::form_urlencoded::byte_serialize(url.as_bytes()).collect();
    format!("/fetch?url={q}")
}

/// Each class of spelling, with at least five cases; every case names a
/// public address, or would pass a check by value alone.
const NON_CANONICAL_V4: &[&str] = &[
    "https://134744072/",       // one integer: 8.8.8.8
    "https://0x08080808/",      // hex integer
    "https://0x8.0x8.0x8.0x8/", // hex parts
    "https://010.010.010.010/", // octal parts: 8.8.8.8 here, 10.10.10.10 elsewhere
    "https://0010.0.0.1/",      // zero-padded octal
    "https://8.526344/",        // two parts
    "https://8.8.2056/",        // three parts
    "https://93.184.216.034/",  // one octal part
    "https://8.8.8.8./",        // trailing dot
    "https://%38.8.8.8/",       // percent-encoded digit
];

const V4_IN_V6: &[&str] = &[
    "https://[::ffff:8.8.8.8]/",                       // mapped
    "https://[::ffff:808:808]/",                       // mapped, hex
    "https://[::8.8.8.8]/",                            // compatible
    "https://[64:ff9b::808:808]/",                     // NAT64
    "https://[64:ff9b:1::808:808]/",                   // NAT64 local-use
    "https://[2002:5db8:d822::1]/",                    // 6to4 of 93.184.216.34
    "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", // Teredo
];

const PLATFORM: &[&str] = &[
    "https://168.63.129.16/",
    "https://168.63.129.16:32526/vmSettings",
    "https://168.63.129.16/machine?comp=goalstate",
    "https://168.63.129.16:80/metadata/instance",
    "https://metadata.azure.com/metadata/instance",
];

const PUBLIC: &[&str] = &[
    "https://8.8.8.8/",
    "https://93.184.216.34/index.html",
    "https://1.1.1.1:8443/dns-query",
    "https://[2606:4700:4700::1111]/",
    "https://example.com/",
    "https://api.github.com/repos/rust-lang/rust",
];

async fn addresses_are_refused_by_spelling() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&guard_config(&origin.url(), None));
    let c = client();
    for (class, cases) in [
        ("non-canonical IPv4", NON_CANONICAL_V4),
        ("IPv4 inside IPv6", V4_IN_V6),
        ("platform address", PLATFORM),
    ] {
        assert!(cases.len() >= 5, "{class}");
        for bad in cases {
            let r = get(&c, &gw.url(&fetch(bad))).await;
            assert_eq!(r.status, 400, "{class} {bad}: {r:?}");
            assert_eq!(
                r.header("content-type"),
                Some("application/problem+json"),
                "{bad}"
            );
            assert!(r.body.contains("query parameter `url`"), "{}", r.body);
        }
    }
    assert_eq!(origin.count(), 0, "a refused URL reached the origin");
    for ok in PUBLIC {
        let r = get(&c, &gw.url(&fetch(ok))).await;
        assert_eq!(r.status, 200, "{ok}: {r:?}");
    }
    assert_eq!(origin.count(), PUBLIC.len());
}

async fn strict_spelling_can_be_switched_off() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&guard_config(&origin.url(), Some(false)));
    let c = client();
    // By value only: public addresses pass however they are spelled...
    for ok in [
        "https://010.010.010.010/",
        "https://134744072/",
        "https://[::ffff:8.8.8.8]/",
    ] {
        assert_eq!(get(&c, &gw.url(&fetch(ok))).await.status, 200, "{ok}");
    }
    // ...and internal ones are still refused in every spelling.
    for bad in [
        "https://0x7f.1/",
        "https://[::ffff:10.0.0.1]/",
        "https://168.63.129.16/",
    ] {
        assert_eq!(get(&c, &gw.url(&fetch(bad))).await.status, 400, "{bad}");
    }
    assert_eq!(origin.count(), 3);
}

fn headers_config(origin: &str, vars: &str) -> String {
    config(&format!(
        "[components.headers]\nsource = \"builtin:headers\"\nvariables = {{ {vars} }}\n[[route]]\norigin = \"{origin}\"\nmiddleware = [\"headers\"]\n"
    ))
}

fn set_cookies(r: &Reply) -> Vec<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

async fn origin_cookies_are_hardened_one_field_each() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&headers_config(&origin.url(), "cookie_exempt = \"csrf\""));
    let c = client();
    let r = get(&c, &gw.url("/cookies")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        set_cookies(&r),
        [
            "session=abc123; Path=/; SameSite=Lax; Secure; HttpOnly",
            // Strict stays Strict.
            "pref=dark; Path=/; SameSite=Strict; Secure; HttpOnly",
            // A cross-site cookie stays cross-site, and gets Secure.
            "widget=1; SameSite=None; Secure; HttpOnly",
            // Exempt: as the origin sent it.
            "csrf=tok; Path=/",
            "done=1; Secure; HttpOnly; SameSite=Lax",
        ]
    );
    // The rest of the response is the headers gate's as always.
    assert!(r.header("strict-transport-security").is_some());
    assert_eq!(r.header("server"), None);
    // A response without cookies gets none.
    let r = get(&c, &gw.url("/plain")).await;
    assert!(set_cookies(&r).is_empty());
}

async fn cookie_policy_is_configurable() {
    let origin = Origin::start().await;
    let c = client();
    let off = Gateway::start(&headers_config(&origin.url(), "cookie_flags = \"off\""));
    assert_eq!(
        set_cookies(&get(&c, &off.url("/cookies")).await),
        ORIGIN_COOKIES
    );
    let strict = Gateway::start(&headers_config(
        &origin.url(),
        "cookie_flags = \"samesite=strict\"",
    ));
    let got = set_cookies(&get(&c, &strict.url("/cookies")).await);
    assert_eq!(got[0], "session=abc123; Path=/; SameSite=Strict");
    // SameSite=None without Secure gets Secure whatever the policy.
    assert_eq!(got[2], "widget=1; SameSite=None; Secure");
    assert_eq!(got[3], "csrf=tok; Path=/; SameSite=Strict");
}

#[test]
fn a_bad_cookie_policy_stops_startup_naming_the_variable() {
    let dir = tempdir::TempDir::new();
    let path = dir.path().join("bad-cookies.toml");
    let text = headers_config(
        "http://127.0.0.1:9",
        "cookie_flags = \"secure, samesite=sometimes\"",
    );
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(tollgate_bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("component headers: variable `cookie_flags`"),
        "{err}"
    );
}

on_both_paths!(
    addresses_are_refused_by_spelling,
    strict_spelling_can_be_switched_off,
    origin_cookies_are_hardened_one_field_each,
    cookie_policy_is_configurable,
    a_store_whose_cas_never_succeeds_is_not_mistaken_for_a_limit,
);

fn limited(origin: &str, vars: &str) -> String {
    config(&format!(
        "[kv]\nsimulate_broken_cas = true\n[components.rate-limit]\nsource = \"builtin:rate-limit\"\nkey_value_stores = [\"default\"]\nvariables = {{ policies = \"per-ip ip 5/60s\"{vars} }}\n[[route]]\norigin = \"{origin}\"\nmiddleware = [\"rate-limit\"]\n"
    ))
}

/// On a store whose compare-and-swap never succeeds (as Spin 4.1's Redis
/// store's), the token bucket must not pass for "rate limited": it answers
/// as `on_store_error` says, and logs the fix once.
async fn a_store_whose_cas_never_succeeds_is_not_mistaken_for_a_limit() {
    let origin = Origin::start().await;
    let c = client();
    let closed = Gateway::start(&limited(&origin.url(), ""));
    for _ in 0..10 {
        let r = get(&c, &closed.url("/x")).await;
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    assert_eq!(origin.count(), 0);
    let names_the_fix =
        |l: &&str| l.contains("compare-and-swap never succeeds") && l.contains("sliding-window");
    let mut log = closed.log_text();
    for _ in 0..40 {
        if log.lines().any(|l| names_the_fix(&l)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        log = closed.log_text();
    }
    let fix: Vec<&str> = log.lines().filter(names_the_fix).collect();
    assert_eq!(fix.len(), 1, "the fix is logged once a minute:\n{log}");
    assert!(fix[0].contains("ERROR"), "{}", fix[0]);

    let open = Gateway::start(&limited(&origin.url(), ", on_store_error = \"open\""));
    for _ in 0..3 {
        assert_eq!(get(&c, &open.url("/x")).await.status, 200);
    }
    // The sliding window needs only increments: exact on the same store.
    let sliding = Gateway::start(&limited(&origin.url(), ", algorithm = \"sliding-window\""));
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(get(&c, &sliding.url("/x")).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
}
