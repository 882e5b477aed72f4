//! Limits shared through a real Redis: two `tollgate` processes on one
//! `redis-server`, concurrent load split across both, and the limit holds
//! exactly for the CAS-based token bucket and the increment-only sliding
//! window. When Redis goes away the rate limiter fails closed (503, nothing
//! reaches the origin) and recovers by itself when Redis is back.
//!
//! Needs `redis-server` on PATH (`.ci/run` installs it).

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn shared_config(origin: &str, redis: &str, algorithm: &str) -> String {
    config(&format!(
        r#"
[kv]
backend = "redis"
redis_url = "{redis}"
redis_timeout_ms = 300

[components.rate-limit]
source = "builtin:rate-limit"
key_value_stores = ["default"]
variables = {{ policies = "shared-{algorithm} route 10/3600s burst=10", algorithm = "{algorithm}" }}

[[route]]
name = "limited"
origin = "{origin}"
middleware = ["rate-limit"]
"#
    ))
}

/// 100 concurrent requests, alternating between two gateways that share
/// one Redis: exactly 10 reach the origin, the other 90 get 429.
async fn exact_across_two_gateways(algorithm: &str) {
    let redis = Redis::start();
    let origin = Origin::start().await;
    let cfg = shared_config(&origin.url(), &redis.url(), algorithm);
    let (a, b) = (Gateway::start(&cfg), Gateway::start(&cfg));
    let c = client();
    let requests = (0..100).map(|i| {
        let url = if i % 2 == 0 { a.url("/x") } else { b.url("/x") };
        let c = c.clone();
        async move { get(&c, &url).await }
    });
    let replies = futures::future::join_all(requests).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let limited: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(ok, 10, "{algorithm}: admitted across both gateways");
    assert_eq!(
        limited.len(),
        90,
        "{algorithm}: every other request is limited"
    );
    assert!(limited.iter().all(|r| r.header("retry-after").is_some()));
    assert_eq!(origin.count(), 10, "{algorithm}: requests at the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_bucket_is_exact_across_gateways() {
    exact_across_two_gateways("token-bucket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sliding_window_is_exact_across_gateways() {
    exact_across_two_gateways("sliding-window").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_fails_closed_and_recovers() {
    let redis = Redis::start();
    let origin = Origin::start().await;
    let gw = Gateway::start(&shared_config(&origin.url(), &redis.url(), "token-bucket"));
    let c = client();
    assert_eq!(get(&c, &gw.url("/x")).await.status, 200);

    let port = redis.stop();
    let before = origin.count();
    let started = Instant::now();
    let r = get(&c, &gw.url("/x")).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(
        !r.body.contains("redis"),
        "no internals in the answer: {}",
        r.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the store timeout bounds the wait"
    );
    assert_eq!(
        origin.count(),
        before,
        "nothing passes while limits cannot be checked"
    );

    // Back on the same port: the gateway reconnects without a restart.
    let _redis = Redis::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get(&c, &gw.url("/x")).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{r:?}");
        assert!(
            Instant::now() < deadline,
            "the gateway did not reconnect to Redis"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !gw.log_text().contains(&format!("127.0.0.1:{port}")),
        "the Redis address stays out of the logs"
    );
}

#[test]
fn an_unreachable_redis_stops_startup_naming_the_key() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("tollgate-redis-down-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tollgate.toml");
    let cfg = shared_config(
        "http://127.0.0.1:9",
        &format!("redis://:hunter2@127.0.0.1:{port}/"),
        "token-bucket",
    );
    std::fs::write(&path, cfg).unwrap();
    let out = Command::new(tollgate_bin())
        .args(["serve", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("kv.redis_url"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
}
