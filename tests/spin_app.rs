//! The Spin deployment: the repository's own spin.toml, run by
//! `tollgate up` against a real origin; the origin component's retries;
//! manifest sources matching what the build produces; manifest errors.
//! On the fast path the origin component's forwarding is the host's
//! (`tollgate:gate/upstream`); on the composed path the component's own
//! `wasi:http` handler forwards, as on Spin: the same behaviour either way.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};

fn sha_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn up(origin: &Origin, extra: &[(&str, &str)]) -> Gateway {
    up_with(origin, extra, &[])
}

fn up_with(origin: &Origin, extra: &[(&str, &str)], args: &[&str]) -> Gateway {
    let manifest = repo_root().join("spin.toml").display().to_string();
    let keys = format!("alice:{}", sha_hex("alice-key"));
    let url = origin.url();
    let mut env = vec![
        ("SPIN_VARIABLE_ORIGIN_URL", url.as_str()),
        ("SPIN_VARIABLE_API_KEYS", keys.as_str()),
    ];
    env.extend_from_slice(extra);
    let mut argv = vec!["up", "-f", &manifest, "--listen", "127.0.0.1:0"];
    if composed() {
        argv.push("--no-fast-path");
    }
    argv.extend_from_slice(args);
    Gateway::spawn(&argv, &env, tempdir::TempDir::new(), false)
}

fn with_key(
    url: &str,
    extra: &[(&str, &str)],
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut b = http::Request::get(url).header("x-api-key", "alice-key");
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Default::default()).unwrap()
}

async fn spin_toml_runs_every_middleware_in_front_of_the_origin_component() {
    let origin = Origin::start().await;
    let gw = up(
        &origin,
        &[(
            "SPIN_VARIABLE_CORS_ALLOWED_ORIGINS",
            "https://app.example.com",
        )],
    );
    let c = client();

    // auth: no key, no entry.
    assert_eq!(get(&c, &gw.url("/a")).await.status, 401);
    assert_eq!(origin.count(), 0);

    let r = send(
        &c,
        with_key(
            &gw.url("/a?x=1"),
            &[
                ("x-auth-subject", "root"),
                ("origin", "https://app.example.com"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "origin saw /a");
    let seen = origin.last();
    assert_eq!(
        seen.headers["x-auth-subject"], "alice",
        "auth's verified identity, not the forged one"
    );
    // headers: security headers, CORS, server header removed.
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("server"), None);
    // rate-limit: the IETF headers.
    assert!(
        r.header("ratelimit-policy").unwrap().contains("\"per-ip\""),
        "{r:?}"
    );
    // url-guard: SSRF refused by name, never forwarded.
    let before = origin.count();
    let r = send(
        &c,
        with_key(&gw.url("/f?url=https%3A%2F%2F127.0.0.1%2F"), &[]),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("query parameter `url`"));
    assert_eq!(origin.count(), before);
}

async fn the_origin_component_retries_idempotent_requests_with_backoff() {
    let origin = Origin::start().await;
    let gw = up(&origin, &[]);
    let c = client();

    // Fails twice, then succeeds: three attempts, the client sees 200.
    let t = Instant::now();
    let r = send(&c, with_key(&gw.url("/flaky/a/2"), &[])).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(origin.count(), 3);
    // Backoff 50 ms then 100 ms.
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );

    // Never recovers: gives up after max_attempts (3) with the origin's 503.
    let r = send(&c, with_key(&gw.url("/flaky/b/10"), &[])).await;
    assert_eq!(r.status, 503);
    assert_eq!(origin.count(), 6);

    // POST is not idempotent: one attempt only.
    let post = http::Request::post(gw.url("/flaky/c/1"))
        .header("x-api-key", "alice-key")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"once",
        )))
        .unwrap();
    assert_eq!(send(&c, post).await.status, 503);
    assert_eq!(origin.count(), 7);
}

#[test]
fn manifest_sources_are_what_the_build_produces() {
    let text = std::fs::read_to_string(repo_root().join("spin.toml")).unwrap();
    let manifest: toml::Value = toml::from_str(&text).unwrap();
    let components = manifest["component"].as_table().unwrap();
    assert!(components.len() >= 5);
    let built = std::path::Path::new(env!("TOLLGATE_WASM_DIR"))
        .canonicalize()
        .unwrap();
    for (name, c) in components {
        let source = c["source"].as_str().unwrap();
        let path = repo_root().join(source);
        assert!(path.is_file(), "component {name}: {source} was not built");
        assert_eq!(
            path.canonicalize().unwrap().parent().unwrap(),
            built,
            "component {name}"
        );
        // The build command builds the package whose artifact is the source.
        let command = c["build"]["command"].as_str().unwrap();
        let package = command.split("-p ").nth(1).unwrap().trim();
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            format!("{}.wasm", package.replace('-', "_")),
            "component {name}"
        );
        assert!(
            command.contains("--target wasm32-wasip2 --target-dir target/wasm"),
            "{command}"
        );
    }
}

/// Runs `tollgate up` on `manifest`, which must fail; returns stderr.
fn up_fails(manifest: &str, env: &[(&str, &str)]) -> String {
    let dir = tempdir::TempDir::new();
    let path = dir.path().join("spin.toml");
    std::fs::write(&path, manifest).unwrap();
    let mut cmd = Command::new(tollgate_bin());
    cmd.args(["up", "-f"])
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("SPIN_VARIABLE_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "manifest was accepted:\n{manifest}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn manifest(route: &str, middleware: &str, middleware_source: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "t"
[variables]
token = {{ required = true }}
[[trigger.http]]
route = "{route}"
component = "app"
dependencies.middleware = [{{ component = "{middleware}", inherit_configuration = ["variables"] }}]
[component.app]
source = "{app}"
allowed_outbound_hosts = ["http://127.0.0.1:9"]
[component.app.variables]
token = "{{{{ token }}}}"
[component.mw]
source = "{middleware_source}"
"#,
        app = wasm("tollgate_origin"),
    )
}

#[test]
fn manifest_errors_name_the_problem() {
    let outer = wasm("fixture_outer");
    let origin = wasm("tollgate_origin");
    let token = [("SPIN_VARIABLE_TOKEN", "t")];
    let cases: Vec<(&str, String, Vec<(&str, &str)>, &str)> = vec![
        (
            "unknown component",
            manifest("/...", "ghost", &outer),
            token.to_vec(),
            "unknown component `ghost`",
        ),
        (
            "not a middleware",
            manifest("/...", "mw", &origin),
            token.to_vec(),
            "component `mw` is not a middleware",
        ),
        (
            "missing required variable",
            manifest("/...", "mw", &outer),
            vec![],
            "missing required variable `token`",
        ),
        (
            "bad route",
            manifest("api/...", "mw", &outer),
            token.to_vec(),
            "trigger.http[0].route",
        ),
        (
            "bad route syntax",
            manifest("/a/.../b", "mw", &outer),
            token.to_vec(),
            "not a supported route",
        ),
        (
            "unsupported key",
            manifest("/...", "mw", &outer)
                .replace("[component.mw]", "[component.mw]\nfiles = [\"x\"]"),
            token.to_vec(),
            "unknown field `files`",
        ),
        (
            "unsupported inheritance",
            manifest("/...", "mw", &outer).replace("[\"variables\"]", "[\"sqlite_databases\"]"),
            token.to_vec(),
            "`sqlite_databases` is not supported",
        ),
    ];
    for (what, text, env, expected) in cases {
        let stderr = up_fails(&text, &env);
        assert!(
            stderr.contains(expected),
            "{what}: expected {expected:?} in:\n{stderr}"
        );
    }
    // A key-value-using middleware must inherit key_value_stores, as on Spin.
    let kv_user = manifest("/...", "mw", &wasm("fixture_services"));
    let stderr = up_fails(&kv_user, &token);
    assert!(
        stderr.contains("does not inherit `key_value_stores`"),
        "{stderr}"
    );
}

/// Spin's runtime config moves the `default` store to Redis: two `tollgate
/// up` instances of the same spin.toml then share one limit, with the
/// increment-only algorithm a Spin app on Spin's Redis store would use, and
/// the state is in Redis under the rate limiter's keys.
async fn runtime_config_shares_state_through_redis() {
    let redis = Redis::start();
    let origin = Origin::start().await;
    let dir = tempdir::TempDir::new();
    let rc = dir.path().join("runtime-config.toml");
    std::fs::write(
        &rc,
        format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let rc = rc.display().to_string();
    let env = [
        ("SPIN_VARIABLE_RATE_POLICIES", "app route 3/3600s burst=3"),
        ("SPIN_VARIABLE_RATE_ALGORITHM", "sliding-window"),
    ];
    let args = ["--runtime-config-file", rc.as_str()];
    let (a, b) = (up_with(&origin, &env, &args), up_with(&origin, &env, &args));
    let c = client();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let gw = if i % 2 == 0 { &a } else { &b };
        statuses.push(send(&c, with_key(&gw.url("/s"), &[])).await.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(origin.count(), 3);

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tollgate:rl:app*")
        .query(&mut conn)
        .unwrap();
    assert!(!keys.is_empty(), "no rate-limit state in Redis");
}

#[test]
fn unsupported_runtime_config_is_refused_naming_the_key() {
    let dir = tempdir::TempDir::new();
    let rc = dir.path().join("runtime-config.toml");
    for (text, expected) in [
        (
            "[key_value_store.default]\ntype = \"azure_cosmos\"\n",
            "key_value_store.default.type: `azure_cosmos` is not supported",
        ),
        (
            "[key_value_store.default]\ntype = \"redis\"\n",
            "key_value_store.default.url: missing",
        ),
        (
            "[key_value_store.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n",
            "key_value_store.cache: only the `default` store can be configured",
        ),
        (
            "[llm_compute]\ntype = \"spin\"\n",
            "unknown field `llm_compute`",
        ),
        (
            // A syntax error on the line holding a password.
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://:hunter2@127.0.0.1:1\n",
            "line 3",
        ),
    ] {
        std::fs::write(&rc, text).unwrap();
        let out = Command::new(tollgate_bin())
            .args(["up", "-f"])
            .arg(repo_root().join("spin.toml"))
            .args(["--listen", "127.0.0.1:0", "--runtime-config-file"])
            .arg(&rc)
            .env("SPIN_VARIABLE_ORIGIN_URL", "http://127.0.0.1:9")
            .env("SPIN_VARIABLE_API_KEYS", "a:00")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text} was accepted");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in:\n{stderr}"
        );
        assert!(
            !stderr.contains("hunter2"),
            "the password leaked:\n{stderr}"
        );
    }
}

/// Under `tollgate up` the chain gets Spin's own `spin-*` headers (and no
/// forwarding headers), as on Spin; the origin component strips them and
/// sets the forwarding headers from Spin's client address.
async fn spin_headers_never_reach_the_origin_and_forwarding_headers_do() {
    let origin = Origin::start().await;
    let gw = up(&origin, &[]);
    let r = send(
        &client(),
        with_key(
            &gw.url("/api/items?x=1"),
            &[
                ("spin-client-addr", "6.6.6.6:1"),
                ("spin-full-url", "http://evil.example/"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-host", "evil.example"),
                ("x-tollgate-client-ip", "6.6.6.6"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = origin.last();
    let spin: Vec<_> = seen
        .headers
        .keys()
        .filter(|k| k.starts_with("spin-"))
        .collect();
    assert!(spin.is_empty(), "{spin:?}");
    assert!(!seen.headers.contains_key("x-tollgate-client-ip"));
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], gw.addr.to_string());
    // Rate limits keyed on the client saw the real address, not the forged one.
    assert!(!gw.log_text().contains("6.6.6.6"));
}

/// With `trusted_proxies` set (the app variable in spin.toml), a proxy in
/// front of Spin keeps its X-Forwarded-* chain, and the origin sees the
/// client the proxy reported, with Spin's peer appended.
async fn trusted_proxies_app_variable_keeps_the_proxys_forwarding_headers() {
    let origin = Origin::start().await;
    let gw = up(&origin, &[("SPIN_VARIABLE_TRUSTED_PROXIES", "127.0.0.0/8")]);
    let r = send(
        &client(),
        with_key(
            &gw.url("/api/items"),
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "api.example"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = origin.last();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-host"], "api.example");
}

/// Who forwarded shows in the access log: on the fast path the host, which
/// names the origin endpoint that answered; on the composed path the
/// component, through `wasi:http/client`, which names none.
async fn the_fast_path_forwards_from_the_host() {
    let origin = Origin::start().await;
    let gw = up(&origin, &[]);
    let r = send(&client(), with_key(&gw.url("/a"), &[])).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "origin saw /a");
    let log = gw.wait_for_log("access line", |l| l.contains("\"tollgate::access\""));
    let named = log.contains(&format!("\"endpoint\":\"{}\"", origin.url()));
    assert_eq!(named, !composed(), "{log}");
}

/// On the fast path the primary's upstreams are the host's: `/metrics`
/// shows their endpoints and `/readyz` counts them.
async fn the_primarys_upstreams_are_watched_on_the_fast_path() {
    let origin = Origin::start().await;
    let manifest = repo_root().join("spin.toml").display().to_string();
    let keys = format!("alice:{}", sha_hex("alice-key"));
    let url = origin.url();
    let env = [
        ("SPIN_VARIABLE_ORIGIN_URL", url.as_str()),
        ("SPIN_VARIABLE_API_KEYS", keys.as_str()),
    ];
    let mut argv = vec!["up", "-f", &manifest, "--listen", "127.0.0.1:0"];
    argv.extend(["--admin", "127.0.0.1:0"]);
    if composed() {
        argv.push("--no-fast-path");
    }
    let gw = Gateway::spawn(&argv, &env, tempdir::TempDir::new(), true);
    let c = client();
    assert_eq!(send(&c, with_key(&gw.url("/a"), &[])).await.status, 200);
    let admin = gw.admin.expect("an admin listener");
    let metrics = get(&c, &format!("http://{admin}/metrics")).await.body;
    let gauge = metrics.lines().find(|l| {
        l.starts_with("tollgate_upstream_endpoint_healthy")
            && l.contains(&format!("endpoint=\"{url}\""))
    });
    assert_eq!(gauge.is_some(), !composed(), "{metrics}");
    if let Some(line) = gauge {
        assert!(line.ends_with(" 1"), "healthy: {line}");
    }
    assert_eq!(get(&c, &format!("http://{admin}/readyz")).await.status, 200);
}

/// A Spin app of the origin component alone, allowed to reach `allowed`,
/// with `variables`; returns its directory and manifest path.
fn origin_app(allowed: &str, variables: &[(&str, &str)]) -> (tempdir::TempDir, String) {
    let dir = tempdir::TempDir::new();
    let path = dir.path().join("spin.toml");
    let mut text = format!(
        "spin_manifest_version = 2\n[application]\nname = \"t\"\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"app\"\n[component.app]\nsource = \"{}\"\nallowed_outbound_hosts = [\"{allowed}\"]\n[component.app.variables]\n",
        wasm("tollgate_origin")
    );
    for (k, v) in variables {
        text.push_str(&format!("{k} = \"{v}\"\n"));
    }
    std::fs::write(&path, text).unwrap();
    let path = path.display().to_string();
    (dir, path)
}

/// A path no origin route serves is answered 404, and a body over the
/// origin component's `max_body_bytes` 413, without reaching the origin;
/// a served path goes to its route's origin, path and query unchanged.
async fn unserved_paths_and_oversized_bodies_never_reach_the_origin() {
    let origin = Origin::start().await;
    let url = origin.url();
    let (dir, path) = origin_app(
        &url,
        &[
            ("origin_routes", &format!("/api={url}")),
            ("max_body_bytes", "10"),
        ],
    );
    let mut argv = vec!["up", "-f", path.as_str(), "--listen", "127.0.0.1:0"];
    if composed() {
        argv.push("--no-fast-path");
    }
    let gw = Gateway::spawn(&argv, &[], dir, false);
    let c = client();

    let r = get(&c, &gw.url("/other")).await;
    assert_eq!(r.status, 404, "{r:?}");
    let post = |n: usize| {
        http::Request::post(gw.url("/api/upload"))
            .body(http_body_util::Full::new(bytes::Bytes::from(vec![b'x'; n])))
            .unwrap()
    };
    let r = send(&c, post(11)).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(origin.count(), 0);

    let r = get(&c, &gw.url("/api/items?x=1")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "origin saw /api/items");
    let seen = origin.last();
    assert_eq!(seen.path, "/api/items");
    assert_eq!(
        Some(seen.headers["host"].as_str()),
        origin.url().strip_prefix("http://")
    );
    assert_eq!(send(&c, post(10)).await.status, 200);
    assert_eq!(origin.count(), 2);
}

/// The origin component's variables are checked when `tollgate up` starts
/// (its `init`), and the origins it declares must be allowed outbound
/// hosts; either failure stops startup with exit 2, naming the component.
#[test]
fn the_origin_components_configuration_is_checked_at_startup() {
    let keys = format!("alice:{}", sha_hex("alice-key"));
    let out = Command::new(tollgate_bin())
        .args(["up", "-f"])
        .arg(repo_root().join("spin.toml"))
        .args(["--listen", "127.0.0.1:0"])
        .env("SPIN_VARIABLE_ORIGIN_URL", "http://127.0.0.1:9")
        .env("SPIN_VARIABLE_API_KEYS", &keys)
        .env("SPIN_VARIABLE_MAX_ATTEMPTS", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("route[0] component origin:") && stderr.contains("`max_attempts`"),
        "{stderr}"
    );
    assert!(!stderr.contains(&keys), "{stderr}");

    let (_dir, path) = origin_app(
        "http://127.0.0.1:9",
        &[("origin_url", "http://127.0.0.1:10")],
    );
    let manifest = std::fs::read_to_string(path).unwrap();
    let stderr = up_fails(&manifest, &[]);
    assert!(
        stderr.contains(
            "component app: origin `http://127.0.0.1:10` is not in the app's allowed_outbound_hosts"
        ),
        "{stderr}"
    );
}

on_both_paths!(
    the_fast_path_forwards_from_the_host,
    the_primarys_upstreams_are_watched_on_the_fast_path,
    unserved_paths_and_oversized_bodies_never_reach_the_origin,
    spin_headers_never_reach_the_origin_and_forwarding_headers_do,
    trusted_proxies_app_variable_keeps_the_proxys_forwarding_headers,
    spin_toml_runs_every_middleware_in_front_of_the_origin_component,
    the_origin_component_retries_idempotent_requests_with_backoff,
    runtime_config_shares_state_through_redis,
);
