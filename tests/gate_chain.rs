//! The built-in gate components end to end, through the real binary, as
//! the chain headers → url-guard → auth → rate-limit in front of a real
//! origin: exact limits under concurrency, identity stripping, CORS,
//! SSRF refusals, JWT scopes and brute-force lockout.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const JWT_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!!";

fn sha_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn jwt(claims: serde_json::Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(JWT_SECRET.as_bytes()).unwrap();
    mac.update(format!("{h}.{p}").as_bytes());
    format!(
        "{h}.{p}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The four built-ins in the order the issue names.
fn gate_config(origin: &str, required_scopes: &str) -> String {
    config(&format!(
        r#"
[components.headers]
source = "builtin:headers"
variables = {{ cors_allowed_origins = "https://app.example.com, *.example.org", cors_allow_credentials = "true" }}

[components.url-guard]
source = "builtin:url-guard"
variables = {{ query_params = "url", json_pointers = "/hook" }}

[components.auth]
source = "builtin:auth"
key_value_stores = ["default"]
variables = {{ api_keys = "alice:{alice}:read, bob:{bob}:read, carol:{carol}", jwt_algorithm = "HS256", jwt_secret = "{JWT_SECRET}", jwt_issuer = "https://issuer.test", public_paths = "/public/*", required_scopes = "{required_scopes}", lockout_threshold = "3", lockout_window_secs = "60" }}

[components.rate-limit]
source = "builtin:rate-limit"
key_value_stores = ["default"]
variables = {{ policies = "per-identity identity 10/60s burst=10" }}

[[route]]
name = "api"
origin = "{origin}"
middleware = ["headers", "url-guard", "auth", "rate-limit"]
"#,
        alice = sha_hex("alice-key"),
        bob = sha_hex("bob-key"),
        carol = sha_hex("carol-key"),
    ))
}

fn req(url: &str, headers: &[(&str, &str)]) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut b = http::Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Default::default()).unwrap()
}

async fn exactly_the_limit_reaches_the_origin_under_concurrency() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&gate_config(&origin.url(), ""));
    let c = client();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let c = c.clone();
            let url = gw.url(&format!("/items/{i}"));
            tokio::spawn(async move { send(&c, req(&url, &[("x-api-key", "alice-key")])).await })
        })
        .collect();
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.header("ratelimit").is_some(), "{r:?}");
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"per-identity\";q=10;w=60")
        );
        match r.status {
            200 => ok += 1,
            429 => {
                limited += 1;
                let retry: u64 = r
                    .header("retry-after")
                    .expect("Retry-After on 429")
                    .parse()
                    .unwrap();
                assert!((1..=60).contains(&retry), "retry-after {retry}");
                assert_eq!(r.header("content-type"), Some("application/problem+json"));
            }
            s => panic!("unexpected status {s}: {r:?}"),
        }
    }
    assert_eq!((ok, limited), (10, 90));
    assert_eq!(
        origin.count(),
        10,
        "exactly 10 requests may reach the origin"
    );
    // Another identity has its own bucket.
    assert_eq!(
        send(&c, req(&gw.url("/x"), &[("x-api-key", "bob-key")]))
            .await
            .status,
        200
    );
}

async fn forged_identity_headers_never_reach_the_origin() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&gate_config(&origin.url(), ""));
    let c = client();
    let forged = [
        ("x-auth-subject", "admin"),
        ("x-auth-scopes", "admin root"),
        ("x-user-id", "0"),
    ];

    // Valid key: the origin sees the verified identity only.
    let mut h = forged.to_vec();
    h.push(("x-api-key", "alice-key"));
    assert_eq!(send(&c, req(&gw.url("/me"), &h)).await.status, 200);
    let seen = origin.last();
    assert_eq!(seen.headers["x-auth-subject"], "alice");
    assert_eq!(seen.headers["x-auth-scopes"], "read");
    assert!(!seen.headers.contains_key("x-user-id"));
    assert!(
        !seen.headers.contains_key("x-api-key"),
        "the gateway's key is not forwarded"
    );

    // Public path: no identity at all, forged or otherwise.
    assert_eq!(
        send(&c, req(&gw.url("/public/info"), &forged)).await.status,
        200
    );
    let seen = origin.last();
    assert_eq!(seen.path, "/public/info");
    for (name, _) in forged {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the origin"
        );
    }

    // No credentials: refused, and the origin sees nothing more.
    let before = origin.count();
    let r = send(&c, req(&gw.url("/me"), &forged)).await;
    assert_eq!(r.status, 401);
    assert_eq!(origin.count(), before);
}

async fn every_auth_failure_looks_the_same() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&gate_config(&origin.url(), ""));
    let c = client();
    let expired =
        jwt(serde_json::json!({"sub": "dave", "exp": now() - 3600, "iss": "https://issuer.test"}));
    let wrong_iss =
        jwt(serde_json::json!({"sub": "dave", "exp": now() + 3600, "iss": "https://evil.test"}));
    let bad_sig = format!(
        "{}x",
        jwt(serde_json::json!({"sub": "dave", "exp": now() + 3600, "iss": "https://issuer.test"}))
    );
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"dave","exp":{}}}"#, now() + 3600))
    );
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![],
        vec![("x-api-key", "wrong".into())],
        vec![("authorization", format!("Bearer {expired}"))],
        vec![("authorization", format!("Bearer {wrong_iss}"))],
        vec![("authorization", format!("Bearer {bad_sig}"))],
        vec![("authorization", format!("Bearer {none}"))],
        vec![("authorization", "Basic YWxpY2U6cHc=".into())],
    ];
    let mut bodies = std::collections::HashSet::new();
    for (i, h) in cases.iter().enumerate() {
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // Distinct client IPs are not possible on one loopback address, so
        // keep under the lockout by giving each case its own account.
        let account = format!("case-{i}");
        let mut h = h.clone();
        h.push(("x-account", &account));
        let r = send(&c, req(&gw.url("/secure"), &h)).await;
        assert_eq!(r.status, 401, "case {i}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"tollgate\"")
        );
        bodies.insert(r.body);
    }
    assert_eq!(bodies.len(), 1, "failure bodies differ: {bodies:?}");
    assert_eq!(origin.count(), 0);

    // A valid token passes and its subject is the identity.
    let good = jwt(
        serde_json::json!({"sub": "erin", "exp": now() + 3600, "iss": "https://issuer.test", "scope": "read"}),
    );
    let r = send(
        &c,
        req(
            &gw.url("/secure"),
            &[("authorization", &format!("Bearer {good}"))],
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.last().headers["x-auth-subject"], "erin");
}

async fn missing_scopes_get_403() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&gate_config(&origin.url(), "read"));
    let c = client();
    assert_eq!(
        send(&c, req(&gw.url("/r"), &[("x-api-key", "alice-key")]))
            .await
            .status,
        200
    );
    assert_eq!(
        send(&c, req(&gw.url("/r"), &[("x-api-key", "carol-key")]))
            .await
            .status,
        403
    );
    assert_eq!(origin.count(), 1);
}

async fn repeated_failures_lock_the_account_even_for_the_right_key() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&gate_config(&origin.url(), ""));
    let c = client();
    for _ in 0..3 {
        let r = send(
            &c,
            req(
                &gw.url("/login"),
                &[("x-api-key", "guess"), ("x-account", "bob")],
            ),
        )
        .await;
        assert_eq!(r.status, 401);
    }
    // Locked: the correct key for bob now gets 429, with or without the
    // account header, until the window passes.
    let r = send(
        &c,
        req(
            &gw.url("/login"),
            &[("x-api-key", "bob-key"), ("x-account", "bob")],
        ),
    )
    .await;
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.header("retry-after").is_some());
    let r = send(&c, req(&gw.url("/login"), &[("x-api-key", "bob-key")])).await;
    assert_eq!(r.status, 429, "{r:?}");
    // Other accounts are unaffected.
    assert_eq!(
        send(&c, req(&gw.url("/login"), &[("x-api-key", "alice-key")]))
            .await
            .status,
        200
    );
    assert_eq!(origin.count(), 1);
}

async fn cors_never_reflects_an_unlisted_origin() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&gate_config(&origin.url(), ""));
    let c = client();
    let key = ("x-api-key", "alice-key");

    for evil in [
        "https://evil.com",
        "https://app.example.com.evil.com",
        "null",
        "http://app.example.com",
    ] {
        let r = send(&c, req(&gw.url("/data"), &[key, ("origin", evil)])).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("access-control-allow-origin"), None, "{evil}");
        assert_eq!(r.header("access-control-allow-credentials"), None, "{evil}");
        assert!(r.headers.get_all("vary").iter().any(|v| v == "Origin"));
    }
    let r = send(
        &c,
        req(
            &gw.url("/data"),
            &[key, ("origin", "https://app.example.com")],
        ),
    )
    .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    // Wildcard matches get the origin, never credentials.
    let r = send(
        &c,
        req(
            &gw.url("/data"),
            &[key, ("origin", "https://shop.example.org")],
        ),
    )
    .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://shop.example.org")
    );
    assert_eq!(r.header("access-control-allow-credentials"), None);

    // Preflights are answered at the edge.
    let before = origin.count();
    let pre = |o: &str| {
        http::Request::builder()
            .method("OPTIONS")
            .uri(gw.url("/data"))
            .header("origin", o)
            .header("access-control-request-method", "POST")
            .body(Default::default())
            .unwrap()
    };
    let r = send(&c, pre("https://app.example.com")).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-max-age"), Some("86400"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(r.headers.get_all("vary").iter().any(|v| v == "Origin"));
    let r = send(&c, pre("https://evil.com")).await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(
        origin.count(),
        before,
        "preflights must not reach the origin"
    );

    // Security headers on every response; the origin's Server header is gone.
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let r = send(&c, req(&gw.url("/data"), &[key])).await;
    assert!(r.header("strict-transport-security").is_some());
    assert!(r.header("content-security-policy").is_some());
    assert_eq!(r.header("server"), None);
    assert_eq!(r.header("x-powered-by"), None);
    assert!(r.header("x-request-id").is_some());
}

async fn ssrf_urls_are_refused_by_name() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&gate_config(&origin.url(), ""));
    let c = client();
    let key = ("x-api-key", "alice-key");
    for bad in [
        "http%3A%2F%2F169.254.169.254%2Flatest%2Fmeta-data",
        "https%3A%2F%2F0x7f.1%2F",
        "https%3A%2F%2F%5B%3A%3Affff%3A127.0.0.1%5D%2F",
        "https%3A%2F%2Fmetadata.google.internal.%2F",
    ] {
        let r = send(&c, req(&gw.url(&format!("/fetch?url={bad}")), &[key])).await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert!(r.body.contains("query parameter `url`"), "{}", r.body);
        assert!(
            !r.body.contains("169.254") && !r.body.contains("loopback"),
            "{}",
            r.body
        );
    }
    let json = |body: &str| {
        http::Request::post(gw.url("/hooks"))
            .header("x-api-key", "alice-key")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_owned(),
            )))
            .unwrap()
    };
    let r = send(&c, json(r#"{"hook":"https://[::1]/x"}"#)).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("JSON field `/hook`"), "{}", r.body);
    assert_eq!(origin.count(), 0);
    // A public URL passes, body intact.
    let r = send(&c, json(r#"{"hook":"https://example.com/x"}"#)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        &origin.last().body[..],
        br#"{"hook":"https://example.com/x"}"#
    );
    let r = send(
        &c,
        req(&gw.url("/fetch?url=https%3A%2F%2Fexample.com%2F"), &[key]),
    )
    .await;
    assert_eq!(r.status, 200);
}

/// A host name this machine resolves to a loopback address through
/// /etc/hosts, which the name rules alone do not block.
fn loopback_alias() -> String {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    hosts
        .lines()
        .filter(|l| l.trim_start().starts_with("127."))
        .flat_map(|l| l.split_whitespace().skip(1))
        .find(|n| !n.starts_with('#') && !n.contains("localhost") && !n.contains('.'))
        .map(str::to_owned)
        .expect("this test needs a loopback alias other than localhost in /etc/hosts")
}

async fn dns_mode_refuses_names_that_resolve_inside() {
    let origin = Origin::start().await;
    let alias = loopback_alias();
    let cfg = |dns: bool| {
        config(&format!(
            "[components.url-guard]\nsource = \"builtin:url-guard\"\nallow_name_lookup = {dns}\nvariables = {{ query_params = \"url\", dns_check = \"{dns}\" }}\n[[route]]\norigin = \"{}\"\nmiddleware = [\"url-guard\"]\n",
            origin.url()
        ))
    };
    let c = client();
    let url = |host: &str| format!("/fetch?url=https%3A%2F%2F{host}%2Fx");

    // Without DNS mode the name passes the rules...
    let plain = Gateway::start(&cfg(false));
    assert_eq!(
        get(&c, &plain.url(&url(&alias))).await.status,
        200,
        "{alias}"
    );
    // ...with it, its loopback address is found and refused.
    let dns = Gateway::start(&cfg(true));
    let r = get(&c, &dns.url(&url(&alias))).await;
    assert_eq!(r.status, 400, "{alias}: {r:?}");
    // A name that does not resolve is refused too: DNS mode fails closed.
    assert_eq!(
        get(&c, &dns.url(&url("no-such-host.invalid"))).await.status,
        400
    );
    assert_eq!(origin.count(), 1);
}

/// url-guard declares the inputs it checks (`called-for`): a request with
/// none of them passes without it being called, and no spelling of a
/// checked input gets past it that way.
async fn url_inputs_are_checked_however_spelled() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&config(&format!(
        "[components.url-guard]\nsource = \"builtin:url-guard\"\nvariables = {{ query_params = \"url, callback\", headers = \"X-Webhook\" }}\n[[route]]\norigin = \"{}\"\nmiddleware = [\"url-guard\"]\n",
        origin.url()
    )));
    let c = client();
    let bad = "http%3A%2F%2F169.254.169.254%2F";
    for target in [
        format!("/fetch?url={bad}"),
        format!("/fetch?%75rl={bad}"),
        format!("/fetch?q=1&%75%72%6C={bad}"),
        format!("/fetch?a=1&callback={bad}"),
    ] {
        let r = get(&c, &gw.url(&target)).await;
        assert_eq!(r.status, 400, "{target}: {r:?}");
    }
    let r = send(
        &c,
        req(&gw.url("/fetch"), &[("x-webhook", "http://127.0.0.1/")]),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("header `x-webhook`"), "{}", r.body);
    assert_eq!(origin.count(), 0);
    // Requests without a checked input pass, as they are.
    for target in ["/fetch", "/fetch?q=1", &format!("/fetch?urls={bad}")] {
        let r = send(
            &c,
            req(&gw.url(target), &[("x-other", "http://127.0.0.1/")]),
        )
        .await;
        assert_eq!(r.status, 200, "{target}: {r:?}");
    }
    assert_eq!(origin.count(), 3);
    assert_eq!(origin.last().path, "/fetch");
    assert_eq!(origin.last().headers["x-other"], "http://127.0.0.1/");
}

on_both_paths!(
    url_inputs_are_checked_however_spelled,
    exactly_the_limit_reaches_the_origin_under_concurrency,
    forged_identity_headers_never_reach_the_origin,
    every_auth_failure_looks_the_same,
    missing_scopes_get_403,
    repeated_failures_lock_the_account_even_for_the_right_key,
    cors_never_reflects_an_unlisted_origin,
    ssrf_urls_are_refused_by_name,
    dns_mode_refuses_names_that_resolve_inside,
);
