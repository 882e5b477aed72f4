//! The admin API v1 against the real binary: the bearer token and the
//! lockout after wrong ones, paginated camelCase lists, RFC 9457 errors,
//! redacted variables, reload through the API, the generated OpenAPI 3.1
//! document, and the startup rules for the admin listener.

mod common;

use std::process::Command;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use common::*;

const TOKEN: &str = "test-admin-token-0123456789";

fn admin_config(origin: &str, policy: &str) -> String {
    config(&format!(
        r#"
[server]
admin_token = "${{env:TG_ADMIN_TOKEN}}"

[components.headers]
source = "builtin:headers"
variables = {{ referrer_policy = "{policy}" }}

[components.auth]
source = "builtin:auth"
key_value_stores = ["default"]
variables = {{ api_keys = "svc:0000000000000000000000000000000000000000000000000000000000000000" }}

[[route]]
name = "web"
origin = "{origin}"
middleware = ["headers"]

[[route]]
name = "api"
path_prefix = "/api"
origin = "{origin}"
middleware = ["headers", "auth"]
"#
    ))
    // `config()` opens a [server] table of its own: merge the two.
    .replacen("\n[server]\nadmin_token", "\nadmin_token", 1)
}

async fn api(c: &HttpClient, gw: &Gateway, method: &str, path: &str, token: Option<&str>) -> Reply {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", gw.admin.unwrap()));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    send(c, req.body(Full::<Bytes>::default()).unwrap()).await
}

/// One sign-in with a wrong API key for `account`; its status.
async fn wrong_key(c: &HttpClient, gw: &Gateway, account: &str) -> u16 {
    let req = http::Request::get(gw.url("/api/orders"))
        .header("x-api-key", "a-wrong-key")
        .header("x-account", account)
        .body(Full::<Bytes>::default())
        .unwrap();
    send(c, req).await.status
}

/// `GET path` on the admin API with the token, as JSON.
async fn get_json(c: &HttpClient, gw: &Gateway, path: &str) -> serde_json::Value {
    json(&api(c, gw, "GET", path, Some(TOKEN)).await)
}

fn json(r: &Reply) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_lists_pages_redacts_reloads_and_documents_itself() {
    let origin = Origin::start().await;
    let gw = Gateway::start_with(
        &admin_config(&origin.url(), "no-referrer"),
        &[("TG_ADMIN_TOKEN", TOKEN)],
    );
    let c = client();
    for _ in 0..3 {
        get(&c, &gw.url("/")).await;
    }
    get(&c, &gw.url("/api/x")).await; // 401 from auth

    // Open endpoints stay open.
    assert_eq!(api(&c, &gw, "GET", "/healthz", None).await.status, 200);
    assert_eq!(api(&c, &gw, "GET", "/metrics", None).await.status, 200);

    let r = api(&c, &gw, "GET", "/api/v1/routes", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = json(&r);
    assert_eq!(v["total"], 2);
    assert_eq!(v["page"], 1);
    assert_eq!(v["totalPages"], 1);
    assert_eq!(v["data"][0]["name"], "api", "sorted by name");
    assert_eq!(v["data"][0]["pathPrefix"], "/api");
    assert_eq!(
        v["data"][0]["chain"],
        serde_json::json!(["headers", "auth"])
    );
    assert_eq!(v["data"][0]["requests"]["clientError"], 1);
    assert_eq!(v["data"][1]["requests"]["ok"], 3);
    assert_eq!(
        v["data"][1]["upstream"]["endpoints"][0]["url"],
        origin.url()
    );

    let r = api(
        &c,
        &gw,
        "GET",
        "/api/v1/routes?limit=1&page=2&sortBy=requests&sortOrder=desc",
        Some(TOKEN),
    )
    .await;
    let v = json(&r);
    assert_eq!(
        (v["total"].clone(), v["totalPages"].clone()),
        (2.into(), 2.into())
    );
    assert_eq!(
        v["data"][0]["name"], "api",
        "fewer requests, second when descending"
    );
    let r = api(&c, &gw, "GET", "/api/v1/routes?page=7", Some(TOKEN)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        json(&r)["data"],
        serde_json::json!([]),
        "an empty page is an empty list"
    );
    let r = api(&c, &gw, "GET", "/api/v1/routes?sortBy=colour", Some(TOKEN)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(
        json(&r)["detail"].as_str().unwrap().starts_with("sortBy:"),
        "{}",
        r.body
    );

    let r = api(&c, &gw, "GET", "/api/v1/routes/web", Some(TOKEN)).await;
    assert_eq!(json(&r)["name"], "web");
    let r = api(&c, &gw, "GET", "/api/v1/routes/nope", Some(TOKEN)).await;
    assert_eq!(r.status, 404);
    assert_eq!(json(&r)["status"], 404);

    let r = api(&c, &gw, "GET", "/api/v1/components", Some(TOKEN)).await;
    let v = json(&r);
    assert_eq!(v["total"], 2);
    let auth = &v["data"][0];
    assert_eq!(auth["name"], "auth");
    assert_eq!(auth["source"], "builtin:auth");
    assert_eq!(auth["variables"]["api_keys"], "[redacted]");
    assert!(!r.body.contains("svc:0000"), "a secret leaked: {}", r.body);
    assert_eq!(auth["sha256"].as_str().unwrap().len(), 64);
    assert!(
        auth["capabilities"]
            .as_array()
            .unwrap()
            .contains(&"filter".into())
    );
    assert_eq!(v["data"][1]["variables"]["referrer_policy"], "no-referrer");

    // Reload through the API: a valid change is applied ...
    let path = gw.dir.path().join("tollgate.toml");
    std::fs::write(&path, admin_config(&origin.url(), "same-origin")).unwrap();
    let r = api(&c, &gw, "POST", "/api/v1/reload", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["reloaded"], true);
    assert_eq!(
        get(&c, &gw.url("/")).await.header("referrer-policy"),
        Some("same-origin")
    );
    // ... an invalid one is answered with its errors and changes nothing.
    std::fs::write(
        &path,
        admin_config(&origin.url(), "same-origin").replace("builtin:auth", "builtin:nope"),
    )
    .unwrap();
    let r = api(&c, &gw, "POST", "/api/v1/reload", Some(TOKEN)).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let errors = json(&r)["errors"].clone();
    assert!(
        errors.to_string().contains("components.auth.source"),
        "{errors}"
    );
    assert_eq!(
        get(&c, &gw.url("/")).await.header("referrer-policy"),
        Some("same-origin")
    );
    assert_eq!(
        api(&c, &gw, "GET", "/api/v1/reload", Some(TOKEN))
            .await
            .status,
        405
    );

    let r = api(&c, &gw, "GET", "/api/v1/openapi.json", Some(TOKEN)).await;
    let doc = json(&r);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for p in [
        "/api/v1/routes",
        "/api/v1/routes/{name}",
        "/api/v1/components",
        "/api/v1/reload",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from the document"
        );
    }
    assert!(doc["components"]["schemas"].get("RouteView").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_tokens_are_refused_and_lock_the_address_out() {
    let origin = Origin::start().await;
    let gw = Gateway::start_with(
        &admin_config(&origin.url(), "no-referrer"),
        &[("TG_ADMIN_TOKEN", TOKEN)],
    );
    let c = client();
    let r = api(&c, &gw, "GET", "/api/v1/routes", None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    for _ in 0..4 {
        assert_eq!(
            api(&c, &gw, "GET", "/api/v1/routes", Some("wrong-token"))
                .await
                .status,
            401
        );
    }
    // Five wrong in all: this address is locked out, the right token too.
    let r = api(&c, &gw, "GET", "/api/v1/routes", Some(TOKEN)).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    // Another address is not.
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some("127.0.0.2".parse().unwrap()));
    let other: HttpClient = Client::builder(TokioExecutor::new()).build(connector);
    assert_eq!(
        api(&other, &gw, "GET", "/api/v1/routes", Some(TOKEN))
            .await
            .status,
        200
    );
    assert!(
        !gw.log_text().contains(TOKEN),
        "the token stays out of the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_token_the_api_is_closed_but_health_and_metrics_are_open() {
    let origin = Origin::start().await;
    let cfg = admin_config(&origin.url(), "no-referrer")
        .replace("admin_token = \"${env:TG_ADMIN_TOKEN}\"\n", "");
    let gw = Gateway::start(&cfg);
    let c = client();
    assert_eq!(
        api(&c, &gw, "GET", "/api/v1/routes", Some(TOKEN))
            .await
            .status,
        403
    );
    assert_eq!(api(&c, &gw, "GET", "/readyz", None).await.status, 200);
}

#[test]
fn admin_listener_rules_stop_startup_naming_the_key() {
    let dir = tempdir::TempDir::new();
    let cases: [(&str, &[(&str, &str)], &str); 3] = [
        (
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"0.0.0.0:0\"\n[[route]]\norigin = \"http://127.0.0.1:1\"\n",
            &[],
            "server.admin_token: is required when server.admin_listen is not a loopback address",
        ),
        (
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_token = \"written-in-the-file-0123\"\n[[route]]\norigin = \"http://127.0.0.1:1\"\n",
            &[],
            "server.admin_token: must be an ${env:NAME} reference",
        ),
        (
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_token = \"${env:TG_SHORT}\"\n[[route]]\norigin = \"http://127.0.0.1:1\"\n",
            &[("TG_SHORT", "short")],
            "server.admin_token: must be at least 16 characters",
        ),
    ];
    for (text, env, expected) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(tollgate_bin())
            .args(["serve", "--config", path.to_str().unwrap()])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains("written-in-the-file"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_lockout_lets_the_account_try_again() {
    let origin = Origin::start().await;
    let gw = Gateway::start_with(
        &admin_config(&origin.url(), "no-referrer"),
        &[("TG_ADMIN_TOKEN", TOKEN)],
    );
    let c = client();
    let attempt = |account: &'static str| wrong_key(&c, &gw, account);
    for _ in 0..5 {
        assert_eq!(attempt("alice").await, 401);
    }
    assert_eq!(attempt("alice").await, 429, "alice is locked out");
    let r = api(&c, &gw, "DELETE", "/api/v1/lockouts/alice", Some(TOKEN)).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(r.body.is_empty());
    assert_eq!(attempt("alice").await, 401, "the lockout is lifted");
    let r = api(
        &c,
        &gw,
        "DELETE",
        "/api/v1/lockouts/bad%20name",
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        api(&c, &gw, "DELETE", "/api/v1/lockouts/nobody", Some(TOKEN))
            .await
            .status,
        204
    );
}

/// A route with a token bucket per IP and a sliding window per API key,
/// behind auth with its lockout.
fn limits_config(origin: &str) -> String {
    config(&format!(
        r#"
admin_token = "${{env:TG_ADMIN_TOKEN}}"

[components.auth]
source = "builtin:auth"
key_value_stores = ["default"]
variables = {{ api_keys = "svc:0000000000000000000000000000000000000000000000000000000000000000", lockout_threshold = "3" }}

[components.bucket]
source = "builtin:rate-limit"
key_value_stores = ["default"]
variables = {{ policies = "per-ip ip 4/60s" }}

[components.window]
source = "builtin:rate-limit"
key_value_stores = ["default"]
variables = {{ policies = "per-tenant header:x-tenant 3/60s", algorithm = "sliding-window" }}

[[route]]
name = "open"
path_prefix = "/open"
origin = "{origin}"
middleware = ["bucket"]

[[route]]
name = "tenants"
path_prefix = "/t"
origin = "{origin}"
middleware = ["window"]

[[route]]
name = "api"
path_prefix = "/api"
origin = "{origin}"
middleware = ["auth"]
"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_and_lockouts_read_as_the_gates_keep_them() {
    let origin = Origin::start().await;
    let gw = Gateway::start_with(&limits_config(&origin.url()), &[("TG_ADMIN_TOKEN", TOKEN)]);
    let c = client();
    let data = |v: &serde_json::Value| v["data"].as_array().unwrap().clone();

    // Nothing counted yet: empty lists, and a key never seen is whole.
    let v = get_json(&c, &gw, "/api/v1/limits").await;
    assert_eq!((v["total"].clone(), data(&v).len()), (0.into(), 0));
    let r = api(
        &c,
        &gw,
        "GET",
        "/api/v1/limits/per-ip/127.0.0.1",
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = json(&r);
    assert_eq!(
        (v["remaining"].clone(), v["limit"].clone()),
        (4.into(), 4.into())
    );
    assert_eq!(v["algorithm"], "token-bucket");
    assert_eq!(v["route"], "open");
    assert_eq!(v["limited"], false);

    // Three of four taken from the bucket.
    for _ in 0..3 {
        assert_eq!(get(&c, &gw.url("/open")).await.status, 200);
    }
    let v = get_json(&c, &gw, "/api/v1/limits/per-ip/127.0.0.1").await;
    assert_eq!(v["remaining"], 1, "{v}");
    assert_eq!(v["windowSeconds"], 60);
    assert!(v["resetSeconds"].as_u64().unwrap() > 0);
    get(&c, &gw.url("/open")).await;
    let v = get_json(&c, &gw, "/api/v1/limits/per-ip/127.0.0.1").await;
    assert_eq!(
        (v["remaining"].clone(), v["limited"].clone()),
        (0.into(), true.into())
    );
    assert_eq!(
        get(&c, &gw.url("/open")).await.status,
        429,
        "the API agrees with the gate"
    );

    // The sliding window: two requests of three for tenant acme.
    for _ in 0..2 {
        let req = http::Request::get(gw.url("/t/x"))
            .header("x-tenant", "acme")
            .body(Full::<Bytes>::default())
            .unwrap();
        assert_eq!(send(&c, req).await.status, 200);
    }
    let v = get_json(&c, &gw, "/api/v1/limits/per-tenant/acme").await;
    assert_eq!(v["algorithm"], "sliding-window");
    assert_eq!(
        (v["remaining"].clone(), v["limited"].clone()),
        (1.into(), false.into())
    );

    // Both keys listed once, the fewest left first.
    let v = get_json(&c, &gw, "/api/v1/limits").await;
    let list = data(&v);
    assert_eq!(list.len(), 2, "{v}");
    assert_eq!(
        (list[0]["policy"].clone(), list[0]["key"].clone()),
        ("per-ip".into(), "127.0.0.1".into())
    );
    assert_eq!(
        (list[1]["policy"].clone(), list[1]["key"].clone()),
        ("per-tenant".into(), "acme".into())
    );
    let v = get_json(&c, &gw, "/api/v1/limits?sortBy=key&sortOrder=desc&limit=1").await;
    assert_eq!(
        (data(&v)[0]["key"].clone(), v["totalPages"].clone()),
        ("acme".into(), 2.into())
    );

    // Errors are problems naming what is wrong.
    let r = api(
        &c,
        &gw,
        "GET",
        "/api/v1/limits/no-such-policy/x",
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let r = api(&c, &gw, "GET", "/api/v1/limits?sortBy=colour", Some(TOKEN)).await;
    assert_eq!(r.status, 400);
    assert!(json(&r)["detail"].as_str().unwrap().starts_with("sortBy"));
    let r = api(&c, &gw, "GET", "/api/v1/limits/per-ip/a%00b", Some(TOKEN)).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        api(&c, &gw, "GET", "/api/v1/limits/per-ip/x", None)
            .await
            .status,
        401
    );

    // Lockouts: bob is locked after three wrong keys, carol is counting.
    let attempt = |account: &'static str| wrong_key(&c, &gw, account);
    for _ in 0..3 {
        attempt("bob").await;
    }
    attempt("carol").await;
    let v = get_json(&c, &gw, "/api/v1/lockouts?sortBy=failures&sortOrder=desc").await;
    let list = data(&v);
    assert_eq!(list.len(), 2, "{v}");
    assert_eq!(list[0]["account"], "bob");
    assert_eq!(
        (list[0]["failures"].clone(), list[0]["threshold"].clone()),
        (3.into(), 3.into())
    );
    assert_eq!(list[0]["locked"], true);
    assert!(list[0]["retryAfterSeconds"].as_u64().unwrap() > 0);
    assert_eq!(
        (list[1]["account"].clone(), list[1]["locked"].clone()),
        ("carol".into(), false.into())
    );
    // Lifting bob's lockout takes him off the list.
    assert_eq!(
        api(&c, &gw, "DELETE", "/api/v1/lockouts/bob", Some(TOKEN))
            .await
            .status,
        204
    );
    let v = get_json(&c, &gw, "/api/v1/lockouts").await;
    assert_eq!(data(&v).len(), 1, "{v}");

    // The documented paths are there.
    let doc = get_json(&c, &gw, "/api/v1/openapi.json").await;
    for p in [
        "/api/v1/limits",
        "/api/v1/limits/{policy}/{key}",
        "/api/v1/lockouts",
        "/api/v1/status",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from the document"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_routes_latency_and_the_dashboard_assets() {
    let origin = Origin::start().await;
    let gw = Gateway::start_with(&limits_config(&origin.url()), &[("TG_ADMIN_TOKEN", TOKEN)]);
    let c = client();
    for _ in 0..3 {
        get(&c, &gw.url("/open")).await;
    }
    let v = get_json(&c, &gw, "/api/v1/status").await;
    assert_eq!(v["configVersion"], 1);
    assert_eq!(v["routes"], 3);
    assert!(v["loadedAt"].as_str().unwrap().ends_with('Z'), "{v}");
    assert_eq!(v["lastReload"], serde_json::Value::Null);
    let r = api(&c, &gw, "POST", "/api/v1/reload", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = get_json(&c, &gw, "/api/v1/status").await;
    assert_eq!(v["configVersion"], 2);
    assert_eq!(v["lastReload"]["ok"], true);

    // The route has its latency quantiles and the component's time.
    let v = get_json(&c, &gw, "/api/v1/routes/open").await;
    let p50 = v["latencyMs"]["p50"].as_f64().unwrap();
    let p99 = v["latencyMs"]["p99"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99, "{v}");
    let comps = v["components"].as_array().unwrap();
    assert_eq!(comps.len(), 1, "{v}");
    assert_eq!(comps[0]["calls"], 3);
    assert!(comps[0]["meanMs"].as_f64().unwrap() > 0.0);

    // The dashboard is served open, under a strict CSP; its data is not.
    let page = api(&c, &gw, "GET", "/", None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(page.body.contains("/dashboard.js"));
    for asset in ["/dashboard.js", "/dashboard.css"] {
        assert_eq!(
            api(&c, &gw, "GET", asset, None).await.status,
            200,
            "{asset}"
        );
    }
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "no CDN"
    );
}
