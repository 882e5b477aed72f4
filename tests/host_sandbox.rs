//! The sandbox: a component that loops forever, allocates without bound,
//! panics or traps fails only its own request, with a generic 5xx
//! problem+json inside the deadline, and the next request succeeds.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runaway_components_fail_only_their_request() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&config(&format!(
        r#"
[limits]
request_timeout_ms = 1000
origin_response_timeout_ms = 500
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
    let c = client();
    let deadline = Duration::from_millis(1000);
    for (path, status) in [
        ("/loop", 504),
        ("/alloc", 500),
        ("/panic", 500),
        ("/trap", 500),
    ] {
        // A well-behaved request in flight at the same time is unaffected.
        let neighbour = {
            let c = c.clone();
            let url = gw.url("/slow/300");
            tokio::spawn(async move { get(&c, &url).await })
        };
        let started = Instant::now();
        let r = get(&c, &gw.url(path)).await;
        let took = started.elapsed();
        assert_eq!(r.status, status, "{path}: {r:?}");
        assert!(
            took < deadline + Duration::from_millis(500),
            "{path} took {took:?}"
        );
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{path}"
        );
        // Generic body: nothing about traps, wasm, panics or files.
        for leak in ["wasm", "panic", "trap", "backtrace", ".rs", "fixture"] {
            assert!(!r.body.contains(leak), "{path} leaked {leak:?}: {}", r.body);
        }
        assert_eq!(neighbour.await.unwrap().status, 200, "neighbour of {path}");
        let next = get(&c, &gw.url("/fine")).await;
        assert_eq!(next.status, 200, "request after {path}: {next:?}");
    }
    // None of the failed requests reached the origin.
    let seen: Vec<String> = origin
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert!(
        seen.iter().all(|p| p == "/fine" || p == "/slow/300"),
        "{seen:?}"
    );
    // Each failure is logged with its request id and the failing component.
    gw.wait_for_log("memory-limit failure", |l| {
        l.contains("\"failure\":\"memory-limit\"")
    });
    let log = gw.wait_for_log("deadline failure", |l| {
        l.contains("\"failure\":\"deadline-exceeded\"")
    });
    assert!(log.contains("\"component\":\"fixture_runaway\""), "{log}");
    assert!(log.contains("\"failure\":\"deadline-exceeded\""), "{log}");
    assert!(log.contains("\"failure\":\"memory-limit\""), "{log}");
}
