//! The filter fast path end to end: a mixed chain (filters around a
//! handler-only middleware) keeps its order; every component validates its
//! variables at startup (exit 2, naming route, component and variable,
//! never a secret); every built-in still is a standard `wasi:http`
//! middleware for Spin; and a spinning plugin does not push its healthy
//! neighbours past their deadline.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;

/// stamp (filter) → outer (handler only) → stamp (filter) → origin.
fn mixed_config(origin: &str) -> String {
    config(&format!(
        r#"
[components.stamp-a]
source = "{stamp}"
[components.outer]
source = "{outer}"
[components.stamp-b]
source = "{stamp}"

[[route]]
origin = "{origin}"
middleware = ["stamp-a", "outer", "stamp-b"]
"#,
        stamp = wasm("fixture_stamp"),
        outer = wasm("fixture_outer"),
    ))
}

fn all(reply: &Reply, name: &str) -> Vec<String> {
    reply
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

async fn a_mixed_chain_keeps_its_order() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&mixed_config(&origin.url()));
    let c = client();

    let mut req = http::Request::get(gw.url("/mixed"));
    req = req.header("x-stop", "9").header("x-secret", "s");
    let r = send(&c, req.body(Default::default()).unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = origin.last();
    // Each stamp is shown only the headers it reads (on both paths); the
    // others still reach the origin.
    assert_eq!(
        seen.headers.get("x-stamp1-saw").map(String::as_str),
        Some("x-stop")
    );
    assert_eq!(
        seen.headers.get("x-stamp2-saw").map(String::as_str),
        Some("x-stop,x-trail")
    );
    assert_eq!(seen.headers.get("x-secret").map(String::as_str), Some("s"));
    // Within each filter the fixed edit comes before the per-request one;
    // stamp1 is applied last, so its pair is what the client sees.
    assert_eq!(all(&r, "x-stamp-order"), ["fixed", "request"]);
    assert_eq!(
        seen.headers.get("x-trail").map(String::as_str),
        Some("stamp1,outer,stamp2")
    );
    assert_eq!(
        seen.headers.get("x-outer").map(String::as_str),
        Some("seen")
    );
    // Back out innermost first: stamp2's edit, outer's, then stamp1's.
    assert_eq!(all(&r, "x-filter-response"), ["stamp2", "stamp1"]);
    assert_eq!(r.header("x-outer-response"), Some("200"));
    assert_eq!(r.header("x-stamp1-status"), Some("200"));
    assert_eq!(r.header("x-stamp2-status"), Some("200"));

    // The inner filter answers: the origin never sees it, and the answer
    // goes back out through the handler and the outer filter.
    let before = origin.count();
    let mut req = http::Request::get(gw.url("/stop"));
    req = req.header("x-stop", "2");
    let r = send(&c, req.body(Default::default()).unwrap()).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(origin.count(), before);
    assert_eq!(all(&r, "x-filter-response"), ["stamp2", "stamp1"]);
    assert_eq!(r.header("x-outer-response"), Some("418"));
    assert_eq!(r.header("x-stamp1-status"), Some("418"));
}

on_both_paths!(a_mixed_chain_keeps_its_order);

/// One bad variable per built-in and for the example plugin.
fn bad_component_configs() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "auth",
            r#"source = "builtin:auth"
variables = { jwt_algorithm = "HS256", jwt_secret = "s3kr1t" }"#
                .into(),
            "jwt_secret",
        ),
        (
            "headers",
            r#"source = "builtin:headers"
variables = { cors_allowed_origins = "*" }"#
                .into(),
            "cors_allowed_origins",
        ),
        (
            "url-guard",
            r#"source = "builtin:url-guard"
variables = { json_pointers = "hook" }"#
                .into(),
            "json_pointers",
        ),
        (
            "rate-limit",
            r#"source = "builtin:rate-limit"
key_value_stores = ["default"]
variables = { policies = "per-ip ip 10/1s", algorithm = "leaky" }"#
                .into(),
            "algorithm",
        ),
        (
            "ip-filter",
            format!(
                "source = \"{}\"\nvariables = {{ allow = \"300.0.0.0/8\" }}",
                wasm("ip_filter")
            ),
            "allow",
        ),
    ]
}

fn run_tollgate(args: &[&str], text: &str) -> (Option<i32>, String) {
    let dir = tempdir::TempDir::new();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(tollgate_bin())
        .args(args)
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn components_validate_their_variables_at_startup() {
    for (name, component, variable) in bad_component_configs() {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[components.{name}]\n{component}\n\n[[route]]\nname = \"first\"\norigin = \"http://127.0.0.1:9\"\n\n[[route]]\nname = \"second\"\npath_prefix = \"/b\"\norigin = \"http://127.0.0.1:9\"\nmiddleware = [\"{name}\"]\n"
        );
        for command in [&["serve", "--config"][..], &["check"][..]] {
            let (code, stderr) = run_tollgate(command, &text);
            assert_eq!(code, Some(2), "{name} {command:?}: {stderr}");
            let expected = format!("route[1] component {name}: variable `{variable}`:");
            assert!(stderr.contains(&expected), "{name} {command:?}: {stderr}");
            assert!(
                !stderr.contains("s3kr1t"),
                "{name}: a secret was printed: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        }
    }
}

/// On the composed path (and on Spin, which has no startup hook) the same
/// mistake shows per request: a generic 500, and an error-level log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_fast_path_a_bad_variable_fails_each_request_generically() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nfast_path = false\n\n[components.auth]\nsource = \"builtin:auth\"\nvariables = {{ jwt_algorithm = \"HS256\", jwt_secret = \"s3kr1t\" }}\n\n[[route]]\norigin = \"{}\"\nmiddleware = [\"auth\"]\n",
        origin.url()
    ));
    let r = get(&client(), &gw.url("/x")).await;
    assert_eq!(r.status, 500);
    assert!(!r.body.contains("s3kr1t") && !r.body.contains("jwt_secret"));
    assert_eq!(origin.count(), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = gw.log_text();
    // Logged at error level (the host maps the SDK's `ERROR ` prefix).
    let line = log
        .lines()
        .find(|l| l.contains("tollgate_auth: configuration error: variable `jwt_secret`"))
        .unwrap_or_else(|| panic!("no configuration error logged:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(!log.contains("s3kr1t"), "{log}");
}

/// Spin parity: every gate component still exports and imports
/// `wasi:http/handler@0.3.0` (Spin's composer only uses that), and also
/// exports the filter interface.
#[test]
fn gates_export_both_contracts() {
    use tollgate::chain::compose::{exports, imports};
    for name in [
        "tollgate_headers",
        "tollgate_url_guard",
        "tollgate_auth",
        "tollgate_rate_limit",
        "ip_filter",
    ] {
        let bytes = std::fs::read(wasm(name)).unwrap();
        let ex = exports(name, &bytes).unwrap();
        let im = imports(&bytes).unwrap();
        assert!(
            ex.iter().any(|e| e == "wasi:http/handler@0.3.0"),
            "{name}: {ex:?}"
        );
        assert!(
            ex.iter().any(|e| e == "tollgate:gate/filter@0.4.0"),
            "{name}: {ex:?}"
        );
        assert!(
            im.iter().any(|i| i == "wasi:http/handler@0.3.0"),
            "{name}: {im:?}"
        );
    }
    // A handler-only middleware offers no filter.
    let outer = std::fs::read(wasm("fixture_outer")).unwrap();
    assert!(
        !exports("outer", &outer)
            .unwrap()
            .iter()
            .any(|e| e.starts_with("tollgate:gate/"))
    );
}

/// A spinning plugin must not push healthy requests past their deadline:
/// 10,000 requests from 4 clients, 10% `/loop`, 20% each `/panic`,
/// `/trap` and `/alloc`, 30% healthy, with a 300 ms request deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spinning_neighbours_do_not_delay_healthy_requests() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&config(&format!(
        r#"
[limits]
request_timeout_ms = 300
origin_response_timeout_ms = 200
instance_memory_bytes = 16777216

[components.runaway]
source = "{}"

[[route]]
origin = "{}"
middleware = ["runaway"]
"#,
        wasm("fixture_runaway"),
        origin.url()
    )));
    const TOTAL: usize = 10_000;
    let next = Arc::new(AtomicUsize::new(0));
    let healthy_failed = Arc::new(AtomicUsize::new(0));
    let healthy_ok = Arc::new(AtomicUsize::new(0));
    let bad_wrong = Arc::new(AtomicUsize::new(0));
    let base = gw.url("");
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (next, hf, hok, bw, base) = (
            next.clone(),
            healthy_failed.clone(),
            healthy_ok.clone(),
            bad_wrong.clone(),
            base.clone(),
        );
        clients.push(tokio::spawn(async move {
            let c = client();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= TOTAL {
                    break;
                }
                let (path, want) = match i % 10 {
                    0 => ("/loop", 504),
                    1 | 2 => ("/panic", 500),
                    3 | 4 => ("/trap", 500),
                    5 | 6 => ("/alloc", 500),
                    _ => ("/fine", 200),
                };
                let r = get(&c, &format!("{base}{path}")).await;
                match (want, r.status) {
                    (200, 200) => {
                        hok.fetch_add(1, Ordering::Relaxed);
                    }
                    (200, _) => {
                        hf.fetch_add(1, Ordering::Relaxed);
                    }
                    (w, s) if w != s => {
                        bw.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(healthy_ok.load(Ordering::Relaxed), 3_000);
    assert_eq!(healthy_failed.load(Ordering::Relaxed), 0);
    assert_eq!(bad_wrong.load(Ordering::Relaxed), 0);
    assert_eq!(origin.count(), 3_000);
}
