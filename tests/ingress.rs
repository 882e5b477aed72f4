//! Ingress end to end (issue 10, part): request framing as RFC 9112 asks
//! of a server; HTTP/2 from clients with prior knowledge (h2c), with the
//! chain's effects the same as over HTTP/1.1 and a rapid-reset flood
//! (CVE-2023-44487) leaving the gateway serving; and response compression
//! (gzip, brotli) applied or skipped as it should be.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn framing_config(origin: &str) -> String {
    config(&format!(
        r#"
[components.headers]
source = "builtin:headers"

[[route]]
name = "traced"
path_prefix = "/trace-ok"
origin = "{origin}"
allow_trace = true

[[route]]
origin = "{origin}"
middleware = ["headers"]
"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn framing_errors_are_refused_before_the_origin() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&framing_config(&origin.url()));

    let cases: &[(&str, u16)] = &[
        // Two Host headers: which one routes is ambiguous.
        (
            "GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET /a HTTP/1.1\r\nHost: x\r\nHost: x\r\nConnection: close\r\n\r\n",
            400,
        ),
        // An absolute-form target naming another authority than Host.
        (
            "GET http://other.example/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET http://x:8080/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            400,
        ),
        // CONNECT is never proxied; TRACE only where a route allows it.
        (
            "CONNECT internal.example:443 HTTP/1.1\r\nHost: internal.example:443\r\nConnection: close\r\n\r\n",
            405,
        ),
        (
            "TRACE /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            405,
        ),
    ];
    for (request, status) in cases {
        let answer = raw(gw.addr, request.as_bytes()).await;
        assert_eq!(raw_status(&answer), *status, "{request:?} -> {answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        if *status == 405 {
            let allow = answer
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("allow:"))
                .unwrap_or_else(|| panic!("405 without Allow: {answer}"));
            assert!(
                !allow.contains("CONNECT") && !allow.contains("TRACE"),
                "{allow}"
            );
        }
    }
    assert_eq!(origin.count(), 0, "a refused request reached the origin");

    // Controls: the same requests, well framed, pass.
    for ok in [
        "GET http://x/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET http://X.:80/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "TRACE /trace-ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let answer = raw(gw.addr, ok.as_bytes()).await;
        assert_eq!(raw_status(&answer), 200, "{ok:?} -> {answer}");
    }
    assert_eq!(origin.count(), 3);
}

type H2Client = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn h2_client() -> H2Client {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// The response headers and what the origin saw, without the per-request
/// id and date.
async fn effects(
    reply: hyper::Response<hyper::body::Incoming>,
    origin: &Origin,
) -> (
    u16,
    BTreeMap<String, String>,
    BTreeMap<String, String>,
    Bytes,
) {
    let status = reply.status().as_u16();
    let mut headers: BTreeMap<String, String> = reply
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = reply.into_body().collect().await.unwrap().to_bytes();
    // x-origin-request is the test origin's own request counter.
    for h in [
        "x-request-id",
        "date",
        "content-length",
        "connection",
        "x-origin-request",
    ] {
        headers.remove(h);
    }
    let mut seen: BTreeMap<String, String> = origin.last().headers.into_iter().collect();
    for h in ["x-request-id", "content-length"] {
        seen.remove(h);
    }
    (status, headers, seen, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_with_prior_knowledge_has_the_same_chain_effects_as_http1() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&framing_config(&origin.url()));
    let request = |c: &str| {
        http::Request::get(gw.url("/items?x=1"))
            .header("origin", "https://app.example")
            .header("x-custom", c)
            .body(Full::default())
            .unwrap()
    };
    let h1 = client().request(request("same")).await.unwrap();
    assert_eq!(h1.version(), http::Version::HTTP_11);
    let h1 = effects(h1, &origin).await;
    let h2 = h2_client().request(request("same")).await.unwrap();
    assert_eq!(h2.version(), http::Version::HTTP_2);
    let h2 = effects(h2, &origin).await;
    assert_eq!(h1.0, 200);
    // The headers component's effects (security headers) are there, and
    // the same on both.
    assert!(h1.1.contains_key("x-content-type-options"), "{:?}", h1.1);
    assert_eq!(h1, h2);
    assert_eq!(origin.count(), 2);

    // Framing limits apply per stream: a header block over the limit is
    // refused on h2 as on h1.
    let big = "a".repeat(20_000);
    let res = h2_client()
        .request(
            http::Request::get(gw.url("/items"))
                .header("x-big", big)
                .body(Full::default())
                .unwrap(),
        )
        .await;
    match res {
        Ok(r) => assert_eq!(r.status(), 431),
        // hyper may refuse the header list at the protocol level instead.
        Err(e) => assert!(format!("{e:?}").to_lowercase().contains("header"), "{e:?}"),
    }
    assert_eq!(origin.count(), 2);
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rapid_reset_flood_leaves_the_gateway_serving() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&framing_config(&origin.url()));
    // Warm up, then measure.
    assert_eq!(get(&client(), &gw.url("/warm")).await.status, 200);
    let before = rss_kib(gw.child.id());

    // Each connection opens streams and cancels them at once, as fast as
    // it can, for a bounded number of streams.
    let started = Instant::now();
    let mut opened = 0usize;
    for _ in 0..10 {
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let Ok((mut h2, conn)) = h2::client::handshake(tcp).await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = conn.await;
        });
        for _ in 0..2_000 {
            let req = http::Request::get(format!("http://{}/flood", gw.addr))
                .body(())
                .unwrap();
            let ready = match tokio::time::timeout(Duration::from_secs(2), h2.ready()).await {
                Ok(Ok(r)) => r,
                _ => break, // the gateway closed the connection: good
            };
            h2 = ready;
            match h2.send_request(req, false) {
                Ok((_, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    opened += 1;
                }
                Err(_) => break,
            }
        }
    }
    eprintln!(
        "rapid reset: {opened} streams opened and reset in {:?}",
        started.elapsed()
    );
    assert!(opened > 0, "no stream was opened");
    // The rapid-reset cap closed connections before their 2,000 streams
    // (runs here open 3,000 to 12,000 of the 20,000 before GOAWAY).
    assert!(
        opened < 20_000,
        "no connection was cut short: {opened} streams"
    );
    assert!(started.elapsed() < Duration::from_secs(60));

    // Still serving, on both protocols, and memory stayed bounded.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&client(), &gw.url("/after")).await.status, 200);
    let r = h2_client()
        .request(
            http::Request::get(gw.url("/after2"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let after = rss_kib(gw.child.id());
    assert!(
        after < before + 200 * 1024,
        "RSS grew from {before} KiB to {after} KiB after {opened} reset streams"
    );
}

fn compression_config(origin: &str) -> String {
    config(&format!(
        r#"
[[route]]
name = "plain"
path_prefix = "/off"
origin = "{origin}"
compression = false

[[route]]
origin = "{origin}"
"#
    ))
}

/// Fetches `path` accepting `encoding`; the status, Content-Encoding and
/// body as sent.
async fn fetch(gw: &Gateway, path: &str, encoding: &str) -> (u16, Option<String>, Bytes) {
    let res = client()
        .request(
            http::Request::get(gw.url(path))
                .header("accept-encoding", encoding)
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status().as_u16();
    let ce = res
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        ce,
        res.into_body().collect().await.unwrap().to_bytes(),
    )
}

fn text(n: usize) -> Vec<u8> {
    ORIGIN_TEXT.repeat(n / ORIGIN_TEXT.len() + 1).as_bytes()[..n].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn responses_are_compressed_only_where_they_should_be() {
    use std::io::Read;
    let origin = Origin::start().await;
    let gw = Gateway::start(&compression_config(&origin.url()));

    // gzip and brotli, decoded back to what the origin sent.
    let (status, ce, body) = fetch(&gw, "/body/20000", "gzip").await;
    assert_eq!((status, ce.as_deref()), (200, Some("gzip")));
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, text(20000));
    assert!(body.len() < 2000, "gzip left {} bytes", body.len());

    let (_, ce, body) = fetch(&gw, "/body/20000", "br;q=1, gzip;q=0.5").await;
    assert_eq!(ce.as_deref(), Some("br"));
    let mut plain = Vec::new();
    brotli::Decompressor::new(&body[..], 4096)
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, text(20000));

    // Left alone: no Accept-Encoding, small, not text, no-transform,
    // already encoded, and a route with compression off.
    for (path, accept) in [
        ("/body/20000", "identity"),
        ("/body/100", "gzip"),
        ("/body/20000/png", "gzip, br"),
        ("/body/20000/no-transform", "gzip, br"),
        ("/off/body/20000", "gzip, br"),
    ] {
        let (status, ce, body) = fetch(&gw, path, accept).await;
        assert_eq!((status, ce.as_deref()), (200, None), "{path} {accept}");
        let n: usize = path.split('/').find_map(|p| p.parse().ok()).unwrap();
        assert_eq!(body.len(), n, "{path}");
    }
    let (_, ce, body) = fetch(&gw, "/body/20000/encoded", "gzip, br").await;
    assert_eq!(ce.as_deref(), Some("gzip"), "encoded twice or dropped");
    assert_eq!(
        &body[..],
        &text(20000)[..],
        "an encoded body was re-encoded"
    );
}

/// Both I/O models (one runtime per core with its own `SO_REUSEPORT`
/// socket, the default; and `workers = 0`, one shared multi-threaded
/// runtime) serve 64 concurrent keep-alive connections with the chain's
/// effects, and every connection's origin pool reuses its connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_io_models_serve_many_connections_with_the_chain() {
    for workers in ["", "workers = 3\n", "workers = 0\n"] {
        let origin = Origin::start().await;
        let cfg = framing_config(&origin.url()).replacen(
            "[server]\n",
            &format!("[server]\n{workers}"),
            1,
        );
        let gw = Gateway::start(&cfg);
        let mut tasks = Vec::new();
        for _ in 0..64 {
            // A client of its own per task: one keep-alive connection each.
            let (c, url) = (client(), gw.url("/x"));
            tasks.push(tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..10 {
                    let r = get(&c, &url).await;
                    if r.status == 200 && r.header("x-content-type-options") == Some("nosniff") {
                        ok += 1;
                    }
                }
                ok
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += t.await.unwrap();
        }
        assert_eq!(
            ok, 640,
            "{workers:?}: every answer, with the chain's header"
        );
        assert_eq!(origin.count(), 640);
        assert!(
            origin.accepts.load(std::sync::atomic::Ordering::SeqCst) <= 64 * 2,
            "{workers:?}: origin connections are reused"
        );
    }
}
