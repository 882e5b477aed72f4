//! Edges of a request's life: oversized and malformed input is refused
//! before it reaches a component or the origin; origin failures become 502
//! and 504 inside their timeouts; secrets never reach the log; SIGTERM
//! drains in-flight requests, refuses new connections and exits 0; a log
//! reader that stops reading never holds requests up.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn passthrough_config(origin: &str) -> String {
    config(&format!(
        r#"
[limits]
max_header_bytes = 4096
max_body_bytes = 1024
request_timeout_ms = 3000
origin_connect_timeout_ms = 500
origin_response_timeout_ms = 700

[components.outer]
source = "{}"

[[route]]
origin = "{origin}"
middleware = ["outer"]
"#,
        wasm("fixture_outer")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_http_input_is_refused_before_the_origin() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&passthrough_config(&origin.url()));

    // Header block over the limit: 431 problem+json.
    let big = "a".repeat(5000);
    let answer = raw(
        gw.addr,
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&answer), 431, "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");

    // Body over the limit, declared by Content-Length: 413.
    let answer = raw(
        gw.addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 413, "{answer}");

    // Body over the limit, chunked with no length: 413 as well.
    let chunk = "x".repeat(800);
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
    );
    let answer = raw(gw.addr, chunked.as_bytes()).await;
    assert_eq!(raw_status(&answer), 413, "{answer}");

    // Malformed requests: 400.
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a@b\r\nConnection: close\r\n\r\n",
    ] {
        let answer = raw(gw.addr, bad).await;
        assert_eq!(
            raw_status(&answer),
            400,
            "{:?} -> {answer}",
            String::from_utf8_lossy(bad)
        );
    }

    // A small body passes, and nothing refused above reached the origin.
    let c = client();
    let req = http::Request::post(gw.url("/ok"))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"hello",
        )))
        .unwrap();
    assert_eq!(send(&c, req).await.status, 200);
    assert_eq!(origin.count(), 1);
    assert_eq!(&origin.last().body[..], b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_failures_become_502_and_504_in_time() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&passthrough_config(&origin.url()));
    let c = client();

    // Too slow: the 700 ms response timeout gives 504.
    let t = Instant::now();
    let r = get(&c, &gw.url("/slow/3000")).await;
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        t.elapsed()
    );

    // Down: nothing listens on the origin's port.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw2 = Gateway::start(&passthrough_config(&format!("http://{down}")));
    let t = Instant::now();
    let r = get(&c, &gw2.url("/anything")).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        !r.body.contains(&down.port().to_string()),
        "leaked the origin address: {}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_never_reach_the_log() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&passthrough_config(&origin.url()));
    let c = client();
    let req = http::Request::get(gw.url("/secret"))
        .header("authorization", "Bearer tok-SECRET-1")
        .header("cookie", "session=SECRET-2")
        .header("x-api-key", "SECRET-3")
        .body(Default::default())
        .unwrap();
    assert_eq!(send(&c, req).await.status, 200);
    let log = gw.wait_for_log("access line for /secret", |l| l.contains("/secret"));
    assert!(!log.contains("SECRET"), "a secret reached the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let origin = Origin::start().await;
    let mut gw = Gateway::start(&passthrough_config(&origin.url()).replace(
        "origin_response_timeout_ms = 700",
        "origin_response_timeout_ms = 2500",
    ));
    let c = client();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let c = c.clone();
            let url = gw.url(&format!("/slow/1000?i={i}"));
            tokio::spawn(async move { get(&c, &url).await })
        })
        .collect();
    // Wait until all 50 are at the origin, then ask the gateway to stop.
    let t = Instant::now();
    while origin.count() < 50 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "only {} reached the origin",
            origin.count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New connections are refused while the old ones drain.
    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "a new connection was accepted during shutdown"
    );
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
    let status = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        loop {
            if let Some(s) = gw.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "tollgate did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// The access log is written by a thread of its own: a log reader that
/// stops reading (a full pipe) never holds requests up. With one `write`
/// per request on the request's own thread, the gateway would stall once
/// the pipe's 64 KiB filled, a few hundred requests in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_log_reader_does_not_hold_requests_up() {
    use std::process::{Command, Stdio};

    let origin = Origin::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempdir::TempDir::new();
    let path = dir.path().join("tollgate.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[[route]]\norigin = \"{}\"\n",
            origin.url()
        ),
    )
    .unwrap();
    // stderr is a pipe nobody reads.
    let mut child = Command::new(tollgate_bin())
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/stall");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the gateway did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let c = client();
    let started = Instant::now();
    // About 300 bytes of log per request: 600 KB, far past a pipe's buffer.
    for i in 0..2_000 {
        let res = tokio::time::timeout(Duration::from_secs(5), get(&c, &url)).await;
        assert!(
            matches!(&res, Ok(r) if r.status == 200),
            "request {i} was held up or failed: {res:?}"
        );
    }
    let took = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert!(origin.count() >= 2_000);
    eprintln!("2,000 requests with a stalled log reader took {took:?}");
}
