//! End to end through the real `tollgate` binary: a chain of two test
//! middlewares in front of a real origin; short-circuits; keep-alive to the
//! origin; concurrency without leakage; and the host services (variables,
//! key-value atomics, outbound allowlist).

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::*;
use http_body_util::Full;

fn chain_config(origin: &str, allowed: &str) -> String {
    config(&format!(
        r#"
[components.outer]
source = "{outer}"
[components.inner]
source = "{inner}"
[components.services]
source = "{services}"
variables = {{ greeting = "hello from config", secret = "${{env:TEST_SECRET}}" }}
key_value_stores = ["default"]
allowed_outbound_hosts = [{allowed}]

[[route]]
name = "chain"
origin = "{origin}"
middleware = ["outer", "inner", "services"]

[[route]]
name = "direct"
path_prefix = "/direct"
origin = "{origin}"
"#,
        outer = wasm("fixture_outer"),
        inner = wasm("fixture_inner"),
        services = wasm("fixture_services"),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_middleware_changes_request_and_response() {
    let origin = Origin::start().await;
    let gw = Gateway::start_with(&chain_config(&origin.url(), ""), &[("TEST_SECRET", "s3")]);
    let c = client();

    let r = get(&c, &gw.url("/hello?x=1")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "origin saw /hello");
    // Response-side changes from both middlewares reach the client.
    assert_eq!(r.header("x-outer-response"), Some("200"));
    assert_eq!(r.header("x-inner-response"), Some("seen"));
    // Request-side changes from both reach the origin, in chain order.
    let seen = origin.last();
    assert_eq!(
        seen.headers.get("x-outer").map(String::as_str),
        Some("seen")
    );
    assert_eq!(
        seen.headers.get("x-inner").map(String::as_str),
        Some("seen")
    );
    assert_eq!(
        seen.headers.get("x-trail").map(String::as_str),
        Some("outer,inner")
    );
    // Forwarding headers and the request id are set by the host.
    assert_eq!(
        seen.headers.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1")
    );
    assert_eq!(
        seen.headers.get("x-forwarded-proto").map(String::as_str),
        Some("http")
    );
    assert_eq!(
        seen.headers["x-request-id"],
        r.header("x-request-id").unwrap()
    );
}

/// Each component's stdout and stderr reach the gateway log as JSON events
/// tagged with the route and that component's own name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn component_output_is_logged_per_component() {
    let origin = Origin::start().await;
    let gw = Gateway::start_with(&chain_config(&origin.url(), ""), &[("TEST_SECRET", "s3")]);
    let c = client();
    let req = http::Request::get(gw.url("/talk"))
        .header("x-say", "kumquat")
        .body(Default::default())
        .unwrap();
    assert_eq!(send(&c, req).await.status, 200);
    let event = |needle: &str| -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let log = gw.log_text();
            if let Some(line) = log.lines().find(|l| l.contains(needle)) {
                return serde_json::from_str(line).unwrap();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} in:\n{log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let outer = event("outer says kumquat");
    assert_eq!(outer["target"], "tollgate::component");
    assert_eq!(outer["fields"]["component"], "chain:fixture_outer");
    assert_eq!(outer["fields"]["stream"], "stdout");
    let inner = event("inner says kumquat");
    assert_eq!(inner["fields"]["component"], "chain:fixture_inner");
    assert_eq!(inner["fields"]["stream"], "stderr");
}

/// Each middleware reports its own time; the host records it per component
/// and keeps the report away from the origin and the client. A client
/// cannot forge a report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_time_each_component() {
    let origin = Origin::start().await;
    let gw = Gateway::start_with(&chain_config(&origin.url(), ""), &[("TEST_SECRET", "s3")]);
    let c = client();
    let req = http::Request::get(gw.url("/timed"))
        .header("x-tollgate-timing", "forged;dur=5")
        .body(Default::default())
        .unwrap();
    let r = send(&c, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-tollgate-timing"),
        None,
        "the report leaked to the client"
    );
    assert!(
        !origin.last().headers.contains_key("x-tollgate-timing"),
        "the origin saw the host's timing request"
    );
    let admin = gw.admin.unwrap();
    let metrics = get(&c, &format!("http://{admin}/metrics")).await.body;
    for component in ["fixture_outer", "fixture_inner", "fixture_services"] {
        let line = format!(
            "tollgate_component_duration_seconds_count{{route=\"chain\",component=\"{component}\"}} 1"
        );
        assert!(metrics.contains(&line), "no {line} in:\n{metrics}");
    }
    assert!(!metrics.contains("forged"), "a client forged a timing");
}

/// Bodies cross every hop intact in both directions: middlewares that do
/// not read a body hand its stream on, and nothing is lost or reordered
/// across many chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_bodies_cross_the_chain_intact() {
    let origin = Origin::start().await;
    let gw = Gateway::start_with(&chain_config(&origin.url(), ""), &[("TEST_SECRET", "s3")]);
    let c = client();
    // 300 KiB of numbered lines: any lost, repeated or reordered chunk shows.
    let payload: String = (0..30_000).map(|i| format!("line {i:05}\n")).collect();
    assert!(payload.len() > 256 * 1024);
    let req = http::Request::post(gw.url("/echo"))
        .body(Full::new(Bytes::from(payload.clone())))
        .unwrap();
    let r = send(&c, req).await;
    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(200)]);
    // The response went back out through both middlewares.
    assert_eq!(r.header("x-outer-response"), Some("200"));
    let seen = origin.last();
    assert_eq!(seen.body.len(), payload.len());
    assert!(
        seen.body == payload.as_bytes(),
        "the origin got a different body"
    );
    assert_eq!(r.body.len(), payload.len());
    assert!(r.body == payload, "the client got a different body back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_circuit_never_reaches_the_origin() {
    let origin = Origin::start().await;
    let gw = Gateway::start_with(&chain_config(&origin.url(), ""), &[("TEST_SECRET", "s3")]);
    let c = client();
    let before = origin.count();
    let req = http::Request::get(gw.url("/private"))
        .header("x-deny", "1")
        .body(Default::default())
        .unwrap();
    let r = send(&c, req).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    // The outer middleware still saw the response on its way out.
    assert_eq!(r.header("x-outer-response"), Some("401"));
    assert_eq!(
        origin.count(),
        before,
        "the origin must not see a short-circuited request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sequential_requests_reuse_origin_connections() {
    let origin = Origin::start().await;
    let gw = Gateway::start_with(&chain_config(&origin.url(), ""), &[("TEST_SECRET", "s3")]);
    let c = client();
    for i in 0..1000 {
        let r = get(&c, &gw.url(&format!("/seq/{i}"))).await;
        assert_eq!(r.status, 200, "request {i}: {r:?}");
    }
    assert_eq!(origin.count(), 1000);
    let accepts = origin.accepts.load(Ordering::SeqCst);
    assert!(
        accepts <= 4,
        "1000 sequential requests opened {accepts} origin connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_do_not_leak_into_each_other() {
    let origin = Origin::start().await;
    let gw = Gateway::start_with(&chain_config(&origin.url(), ""), &[("TEST_SECRET", "s3")]);
    let c = client();
    let url = gw.url("/concurrent");
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let c = c.clone();
            let url = format!("{url}/{i}");
            tokio::spawn(async move {
                let id = format!("req-{i}");
                let req = http::Request::get(&url)
                    .header("x-request-id", &id)
                    .body(Default::default())
                    .unwrap();
                (i, id, send(&c, req).await)
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        let (i, id, r) = t.await.unwrap();
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.header("x-request-id"), Some(id.as_str()));
        // The body is the origin's answer to this request's own path.
        assert_eq!(r.body, format!("origin saw /concurrent/{i}"));
        ids.insert(id);
    }
    assert_eq!(ids.len(), 500);
    // Each origin request carried exactly its own id and path.
    let seen = origin.seen.lock().unwrap();
    assert_eq!(seen.len(), 500);
    for s in seen.iter() {
        let i = s.path.rsplit('/').next().unwrap();
        assert_eq!(s.headers["x-request-id"], format!("req-{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_services_reach_components() {
    let origin = Origin::start().await;
    let allowed = format!("\"{}\"", origin.url());
    let gw = Gateway::start_with(
        &chain_config(&origin.url(), &allowed),
        &[("TEST_SECRET", "s3")],
    );
    let c = client();

    // Variables, including one resolved from the environment.
    assert_eq!(
        get(&c, &gw.url("/var/greeting")).await.body,
        "hello from config"
    );
    assert_eq!(get(&c, &gw.url("/var/secret")).await.body, "s3");
    assert_eq!(get(&c, &gw.url("/var/missing")).await.status, 404);

    // Atomic increment and compare-and-swap stay exact under concurrency.
    for kind in ["count", "cas"] {
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let c = c.clone();
                let url = gw.url(&format!("/{kind}/key-{kind}"));
                tokio::spawn(async move { get(&c, &url).await })
            })
            .collect();
        let mut values = Vec::new();
        for t in tasks {
            let r = t.await.unwrap();
            assert_eq!(r.status, 200, "{kind}: {r:?}");
            values.push(r.body.parse::<u64>().unwrap());
        }
        values.sort();
        assert_eq!(
            values,
            (1..=200).collect::<Vec<u64>>(),
            "{kind} lost or repeated updates"
        );
    }

    // Outbound calls reach allowed hosts only.
    let ok = get(&c, &gw.url(&format!("/fetch?url={}/x", origin.url()))).await;
    assert_eq!(ok.body, "upstream 200");
    let denied = get(&c, &gw.url("/fetch?url=http://127.0.0.2:9/x")).await;
    assert_eq!(denied.status, 502);
    assert_eq!(denied.body, "refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_chain_forwards_directly_and_metrics_count_it() {
    let origin = Origin::start().await;
    let gw = Gateway::start_with(&chain_config(&origin.url(), ""), &[("TEST_SECRET", "s3")]);
    let c = client();
    let r = get(&c, &gw.url("/direct/x")).await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.last().path, "/direct/x");
    assert!(!origin.last().headers.contains_key("x-outer"));

    let admin = gw.admin.unwrap();
    let metrics = get(&c, &format!("http://{admin}/metrics")).await.body;
    assert!(
        metrics.contains(r#"tollgate_requests_total{route="direct",status="200"} 1"#),
        "{metrics}"
    );
    assert_eq!(
        get(&c, &format!("http://{admin}/healthz")).await.status,
        200
    );
    assert_eq!(get(&c, &format!("http://{admin}/readyz")).await.status, 200);
    // Logs are JSON lines with the request id, route, status and duration.
    let id = r.header("x-request-id").unwrap().to_owned();
    let is_access = |l: &str| l.contains(&id) && l.contains("tollgate::access");
    let log = gw.wait_for_log("access log line", is_access);
    let line = log.lines().find(|l| is_access(l)).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["fields"]["route"], "direct");
    assert_eq!(v["fields"]["status"], 200);
    assert!(v["fields"]["duration_us"].is_u64());
}
