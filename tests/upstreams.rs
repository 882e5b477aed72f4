//! Upstreams end to end, against the real `tollgate` binary and real origin
//! servers on loopback: in-process hyper origins that count what they see,
//! and, where an endpoint must die and come back or answer slowly, real
//! `tollgate demo-origin` processes killed with SIGKILL.
//!
//! Covered: round-robin, weights and hash distribution; retries of a
//! refused connection on another endpoint; no retry of a POST that may
//! have reached the origin unless the route allows it; the retry budget
//! when every endpoint fails; failover under load with ejection, health
//! checks and recovery; `/readyz` and 503 with no healthy endpoint;
//! least-request against a slow endpoint; config errors; a GET sent into
//! a keep-alive connection the origin is closing goes once more.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use common::*;

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `tollgate demo-origin` process: a real origin that can be killed.
/// It echoes the request as JSON, `Host` included, which names the
/// endpoint that answered.
struct Instance {
    child: Child,
    port: u16,
}

impl Instance {
    fn start(port: u16, delay_ms: u64) -> Instance {
        let mut child = Command::new(tollgate_bin())
            .args([
                "demo-origin",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--delay-ms",
                &delay_ms.to_string(),
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting demo-origin");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("demo origin listening") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("demo-origin did not start");
        Instance { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `Host` a demo-origin saw: the endpoint that answered.
fn answered_by(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["headers"]["host"].as_str().map(str::to_owned)
}

fn endpoints(urls: &[String]) -> String {
    let list: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!("[{}]", list.join(", "))
}

async fn get_host(c: &HttpClient, gw: &Gateway, host: &str, path: &str) -> Reply {
    send(
        c,
        http::Request::get(gw.url(path))
            .header("host", host)
            .body(Full::default())
            .unwrap(),
    )
    .await
}

async fn post_host(c: &HttpClient, gw: &Gateway, host: &str, path: &str) -> Reply {
    send(
        c,
        http::Request::post(gw.url(path))
            .header("host", host)
            .body(Full::new(Bytes::from_static(b"{\"order\":1}")))
            .unwrap(),
    )
    .await
}

/// The sum of a metric's samples whose labels contain every `filter`.
async fn metric(c: &HttpClient, gw: &Gateway, name: &str, filters: &[&str]) -> f64 {
    let admin = gw.admin.expect("an admin listener");
    let text = get(c, &format!("http://{admin}/metrics")).await.body;
    text.lines()
        .filter(|l| l.starts_with(name) && filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_spreads_evenly_weights_hold_and_the_log_names_the_endpoint() {
    let even = [
        Origin::start().await,
        Origin::start().await,
        Origin::start().await,
    ];
    let weighted = [Origin::start().await, Origin::start().await];
    let urls: Vec<String> = even.iter().map(Origin::url).collect();
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.even]
endpoints = {}

[upstreams.weighted]
endpoints = [{{ url = "{}", weight = 1 }}, {{ url = "{}", weight = 2 }}]

[[route]]
host = "even.test"
upstream = "even"

[[route]]
host = "weighted.test"
upstream = "weighted"
"#,
        endpoints(&urls),
        weighted[0].url(),
        weighted[1].url(),
    )));
    let c = client();
    for _ in 0..300 {
        assert_eq!(get_host(&c, &gw, "even.test", "/").await.status, 200);
        assert_eq!(get_host(&c, &gw, "weighted.test", "/").await.status, 200);
    }
    let counts: Vec<usize> = even.iter().map(Origin::count).collect();
    assert!(
        counts.iter().all(|&n| (95..=105).contains(&n)),
        "round-robin over 3: {counts:?}"
    );
    let w: Vec<usize> = weighted.iter().map(Origin::count).collect();
    assert!(
        (95..=105).contains(&w[0]) && (195..=205).contains(&w[1]),
        "weights 1:2: {w:?}"
    );
    let endpoint = format!("\"endpoint\":\"{}\"", urls[1]);
    gw.wait_for_log("an access line naming the endpoint", |l| {
        l.contains("tollgate::access") && l.contains(&endpoint)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hash_on_a_header_sends_each_key_to_one_endpoint() {
    let origins = [
        Origin::start().await,
        Origin::start().await,
        Origin::start().await,
    ];
    let urls: Vec<String> = origins.iter().map(Origin::url).collect();
    let gw = Gateway::start(&config(&format!(
        "[upstreams.api]\nendpoints = {}\nbalance = \"hash\"\nhash_on = \"header:x-user\"\n[[route]]\nupstream = \"api\"\n",
        endpoints(&urls)
    )));
    let c = client();
    for round in 0..10 {
        for user in 0..30 {
            let req = http::Request::get(gw.url(&format!("/u/{user}/{round}")))
                .header("x-user", format!("user-{user}"))
                .body(Full::default())
                .unwrap();
            assert_eq!(send(&c, req).await.status, 200);
        }
    }
    let mut homes: HashMap<String, HashSet<usize>> = HashMap::new();
    for (i, o) in origins.iter().enumerate() {
        for seen in o.seen.lock().unwrap().iter() {
            let user = seen.headers["x-user"].clone();
            homes.entry(user).or_default().insert(i);
        }
    }
    assert_eq!(homes.len(), 30);
    for (user, at) in &homes {
        assert_eq!(at.len(), 1, "{user} was sent to endpoints {at:?}");
    }
    let used: HashSet<usize> = homes.values().flatten().copied().collect();
    assert_eq!(used.len(), 3, "30 keys should reach all 3 endpoints");
}

/// A refused connection sent nothing: it is retried on another endpoint,
/// for any method, on the fast path, on the composed path and without a
/// chain.
async fn a_refused_connection_is_retried_on_another_endpoint() {
    let origin = Origin::start().await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gw = Gateway::start(&config(&format!(
        r#"
[components.headers]
source = "builtin:headers"

[upstreams.api]
endpoints = ["{dead}", "{}"]
outlier = {{ enabled = false }}
retry = {{ backoff_base_ms = 1, backoff_max_ms = 5, budget_min_retries = 100 }}

[[route]]
host = "chain.test"
upstream = "api"
middleware = ["headers"]

[[route]]
host = "plain.test"
upstream = "api"
"#,
        origin.url()
    )));
    let c = client();
    for host in ["chain.test", "plain.test"] {
        for _ in 0..10 {
            let r = get_host(&c, &gw, host, "/item").await;
            assert_eq!(r.status, 200, "{host}: {}", r.body);
            assert_eq!(post_host(&c, &gw, host, "/orders").await.status, 200);
        }
    }
    assert_eq!(
        origin.count(),
        40,
        "every request reached the live endpoint once"
    );
    let refused = metric(
        &c,
        &gw,
        "tollgate_upstream_attempts_total",
        &["outcome=\"connect-failed\"", &dead],
    )
    .await;
    assert!(refused >= 10.0, "refusals counted: {refused}");
    let retried = metric(
        &c,
        &gw,
        "tollgate_upstream_retries_total",
        &["result=\"retried\""],
    )
    .await;
    assert_eq!(retried, refused, "each refusal was retried once");
}

on_both_paths!(a_refused_connection_is_retried_on_another_endpoint);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_post_that_hit_a_503_is_retried_only_where_the_route_allows() {
    let origins = [Origin::start().await, Origin::start().await];
    let urls: Vec<String> = origins.iter().map(Origin::url).collect();
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.api]
endpoints = {}
outlier = {{ enabled = false }}
retry = {{ attempts = 3, backoff_base_ms = 1, backoff_max_ms = 5, budget_min_retries = 100 }}

[[route]]
host = "strict.test"
upstream = "api"

[[route]]
host = "lenient.test"
upstream = "api"
retry_non_idempotent = true
"#,
        endpoints(&urls)
    )));
    let c = client();
    let total = || origins.iter().map(Origin::count).sum::<usize>();

    let r = post_host(&c, &gw, "strict.test", "/status/503").await;
    assert_eq!(r.status, 503, "the origin's own answer comes back");
    assert_eq!(total(), 1, "a POST that reached the origin is not retried");

    let r = get_host(&c, &gw, "strict.test", "/status/503").await;
    assert_eq!(r.status, 503);
    assert_eq!(total(), 4, "a GET is tried three times");
    assert!(
        origins.iter().all(|o| o.count() >= 2),
        "a retry goes to the other endpoint: {:?}",
        origins.iter().map(Origin::count).collect::<Vec<_>>()
    );

    let r = post_host(&c, &gw, "lenient.test", "/status/503").await;
    assert_eq!(r.status, 503);
    assert_eq!(total(), 7, "the route allows POST retries");

    // A status that is not in on_status is an answer, never retried.
    assert_eq!(
        get_host(&c, &gw, "strict.test", "/status/500").await.status,
        500
    );
    assert_eq!(total(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_retry_budget_caps_retries_when_every_endpoint_fails() {
    let origins = [
        Origin::start().await,
        Origin::start().await,
        Origin::start().await,
    ];
    let urls: Vec<String> = origins.iter().map(Origin::url).collect();
    let dead: Vec<String> = (0..3)
        .map(|_| format!("http://127.0.0.1:{}", free_port()))
        .collect();
    let gw = Gateway::start(&config(&format!(
        r#"
[limits]
request_timeout_ms = 5000
origin_response_timeout_ms = 2000

[upstreams.failing]
endpoints = {}
retry = {{ attempts = 3, budget_percent = 20, budget_min_retries = 2, backoff_base_ms = 2, backoff_max_ms = 10 }}

[upstreams.gone]
endpoints = {}
retry = {{ attempts = 3, budget_percent = 20, budget_min_retries = 2, backoff_base_ms = 2, backoff_max_ms = 10 }}

[[route]]
host = "failing.test"
upstream = "failing"

[[route]]
host = "gone.test"
upstream = "gone"
"#,
        endpoints(&urls),
        endpoints(&dead),
    )));
    let c = client();
    let mut slowest = Duration::ZERO;
    for _ in 0..100 {
        let t = Instant::now();
        assert_eq!(
            get_host(&c, &gw, "failing.test", "/status/503")
                .await
                .status,
            503
        );
        let r = get_host(&c, &gw, "gone.test", "/").await;
        assert_eq!(r.status, 502, "{}", r.body);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        slowest = slowest.max(t.elapsed());
    }
    let attempts: usize = origins.iter().map(Origin::count).sum();
    // 100 requests; retries at most 20% of them plus the floor of 2.
    assert!(
        (103..=122).contains(&attempts),
        "attempts on failing endpoints: {attempts}"
    );
    let refused = metric(
        &c,
        &gw,
        "tollgate_upstream_retries_total",
        &["result=\"over-budget\"", "upstream=\"gone\""],
    )
    .await;
    assert!(refused >= 50.0, "retries refused by the budget: {refused}");
    assert!(
        slowest < Duration::from_secs(1),
        "clients get their answer quickly, not at the 5 s deadline: {slowest:?}"
    );
    println!("budget: {attempts} attempts for 100 requests; slowest pair {slowest:?}");
}

/// Results of a bounded load run, by second.
#[derive(Default)]
struct Tally {
    ok: usize,
    errors: usize,
    /// Answers per endpoint (host:port) after `mark`.
    after_mark: HashMap<String, usize>,
    latencies: Vec<Duration>,
}

/// `clients` loops of GETs on `host` for `duration`; `mark` (seconds from
/// the start) splits answers into before and after.
async fn load(
    gw: &Gateway,
    host: &'static str,
    clients: usize,
    duration: Duration,
    mark: Option<Duration>,
) -> Tally {
    let url = gw.url("/");
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (url, stop) = (url.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut t = Tally::default();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < duration {
                let began = Instant::now();
                let req = http::Request::get(&url)
                    .header("host", host)
                    .body(Full::default())
                    .unwrap();
                let res = tokio::time::timeout(Duration::from_secs(10), c.request(req)).await;
                match res {
                    Ok(Ok(res)) if res.status() == 200 => {
                        let body = res.into_body().collect().await.unwrap().to_bytes();
                        t.latencies.push(began.elapsed());
                        t.ok += 1;
                        if mark.is_some_and(|m| began.duration_since(start) > m) {
                            let by =
                                answered_by(&String::from_utf8_lossy(&body)).unwrap_or_default();
                            *t.after_mark.entry(by).or_default() += 1;
                        }
                    }
                    _ => t.errors += 1,
                }
            }
            t
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.unwrap();
        all.ok += t.ok;
        all.errors += t.errors;
        all.latencies.extend(t.latencies);
        for (k, v) in t.after_mark {
            *all.after_mark.entry(k).or_default() += v;
        }
    }
    all.latencies.sort();
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_an_endpoint_under_load_costs_at_most_a_few_errors_and_it_comes_back() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut instances: Vec<Instance> = ports.iter().map(|&p| Instance::start(p, 0)).collect();
    let urls: Vec<String> = instances.iter().map(Instance::url).collect();
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.api]
endpoints = {}
outlier = {{ consecutive_failures = 3, base_ejection_ms = 1000 }}
health_check = {{ path = "/healthz", interval_ms = 200, timeout_ms = 150, healthy_threshold = 2, unhealthy_threshold = 2 }}

[[route]]
host = "api.test"
upstream = "api"
"#,
        endpoints(&urls)
    )));
    const CLIENTS: usize = 8;
    let victim = format!("127.0.0.1:{}", ports[0]);
    let load_run = load(
        &gw,
        "api.test",
        CLIENTS,
        Duration::from_secs(10),
        Some(Duration::from_secs(7)),
    );
    let chaos = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        instances[0].kill();
        tokio::time::sleep(Duration::from_secs(3)).await;
        instances[0] = Instance::start(ports[0], 0);
    };
    let (tally, ()) = tokio::join!(load_run, chaos);
    println!(
        "failover: {} ok, {} errors; answers after 7 s by endpoint: {:?}",
        tally.ok, tally.errors, tally.after_mark
    );
    // Each client has at most one request in flight when the endpoint dies;
    // retries on another endpoint should save it, so any error at all is
    // at most one per client.
    assert!(
        tally.errors <= CLIENTS,
        "{} client-visible errors",
        tally.errors
    );
    assert!(tally.ok > 1000, "the load ran: {} ok", tally.ok);
    let c = client();
    let ejections = metric(&c, &gw, "tollgate_upstream_ejections_total", &[&victim]).await;
    println!("failover: the dead endpoint was ejected {ejections} time(s)");
    assert!(ejections >= 1.0, "the dead endpoint was ejected");
    let log = gw.log_text();
    assert!(log.contains("endpoint fails its health checks"), "{log}");
    assert!(
        log.contains("endpoint passes its health checks again"),
        "{log}"
    );
    let back = tally.after_mark.get(&victim).copied().unwrap_or(0);
    assert!(
        back > 100,
        "traffic returned to the restarted endpoint: {:?}",
        tally.after_mark
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_no_healthy_endpoint_readyz_names_the_route_and_requests_get_503() {
    let mut instance = Instance::start(free_port(), 0);
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.api]
endpoints = ["{}"]
health_check = {{ path = "/healthz", interval_ms = 100, timeout_ms = 100, healthy_threshold = 1, unhealthy_threshold = 2 }}

[[route]]
name = "api"
upstream = "api"
"#,
        instance.url()
    )));
    let c = client();
    let readyz = format!("http://{}/readyz", gw.admin.unwrap());
    assert_eq!(get(&c, &readyz).await.status, 200);
    assert_eq!(get(&c, &gw.url("/")).await.status, 200);
    instance.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&c, &readyz).await;
        if r.status == 503 {
            assert!(
                r.body.contains("route api: no healthy upstream endpoint"),
                "{}",
                r.body
            );
            break;
        }
        assert!(Instant::now() < deadline, "readyz stayed ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = get(&c, &gw.url("/")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        r.body.contains("No healthy upstream endpoint"),
        "{}",
        r.body
    );
    let _instance = Instance::start(instance.port, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&c, &readyz).await.status != 200 {
        assert!(Instant::now() < deadline, "readyz did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&c, &gw.url("/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_request_keeps_p99_low_when_one_endpoint_is_slow() {
    let fast = [
        Instance::start(free_port(), 0),
        Instance::start(free_port(), 0),
    ];
    let slow = Instance::start(free_port(), 2000);
    let urls = vec![fast[0].url(), slow.url(), fast[1].url()];
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.lr]
endpoints = {list}
balance = "least-request"

[upstreams.rr]
endpoints = {list}

[[route]]
host = "lr.test"
upstream = "lr"

[[route]]
host = "rr.test"
upstream = "rr"
"#,
        list = endpoints(&urls)
    )));
    let lr = load(&gw, "lr.test", 16, Duration::from_secs(4), None).await;
    let rr = load(&gw, "rr.test", 16, Duration::from_secs(4), None).await;
    let (lr50, lr99) = (
        percentile(&lr.latencies, 0.5),
        percentile(&lr.latencies, 0.99),
    );
    let (rr50, rr99) = (
        percentile(&rr.latencies, 0.5),
        percentile(&rr.latencies, 0.99),
    );
    println!(
        "slow endpoint (2 s): least-request {} requests, p50 {lr50:?}, p99 {lr99:?}; round-robin {} requests, p50 {rr50:?}, p99 {rr99:?}",
        lr.ok, rr.ok
    );
    assert_eq!(lr.errors + rr.errors, 0);
    assert!(
        lr99 < Duration::from_millis(500),
        "least-request p99 {lr99:?}"
    );
    assert!(
        rr99 >= Duration::from_millis(1900),
        "round-robin meets the slow endpoint: p99 {rr99:?}"
    );
}

#[test]
fn bad_upstream_configs_stop_startup_naming_the_key() {
    let cases = [
        ("endpoints = []", "upstreams.api.endpoints"),
        (
            "endpoints = [\"http://a\"]\nbalance = \"random\"",
            "upstreams.api.balance",
        ),
        (
            "endpoints = [{ url = \"http://a\", weight = -2 }]",
            "upstreams.api.endpoints[0].weight",
        ),
        ("endpoints = [\"not a url\"]", "upstreams.api.endpoints[0]"),
        (
            "endpoints = [\"http://a\"]\nretry = { budget_percent = 101 }",
            "upstreams.api.retry.budget_percent",
        ),
    ];
    let dir = tempdir::TempDir::new();
    for (body, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            format!("[upstreams.api]\n{body}\n[[route]]\nupstream = \"api\"\n"),
        )
        .unwrap();
        let out = Command::new(tollgate_bin())
            .args(["serve", "--config", &path.display().to_string()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {stderr}");
        assert!(stderr.contains(key), "{body}: {stderr}");
    }
}

/// An origin that answers the first request on each connection and closes
/// the connection, unanswered, when a second request arrives on it: the
/// keep-alive race of an origin closing an idle connection just as the
/// gateway reuses it, made certain. Counts connections and requests.
async fn closes_reused_connections() -> (
    String,
    Arc<std::sync::atomic::AtomicUsize>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (conns, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, r) = (conns.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut answered = false;
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(got) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if got == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..got]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    r.fetch_add(1, Ordering::SeqCst);
                    if answered {
                        return; // the second request on this connection: close
                    }
                    buf.drain(..end + 4);
                    let body = format!("connection {n}");
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    if stream
                        .write_all(format!("{head}{body}").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    answered = true;
                }
            });
        }
    });
    (url, conns, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_get_sent_into_a_closing_keep_alive_connection_goes_once_more_and_a_post_does_not() {
    let (url, conns, requests) = closes_reused_connections().await;
    let gw = Gateway::start(&config(&format!(
        "[[route]]\nname = \"single\"\norigin = \"{url}\"\n"
    )));
    let c = client();
    let first = get(&c, &gw.url("/a")).await;
    assert_eq!((first.status, first.body.as_str()), (200, "connection 1"));
    // Reused: the origin closes it on reading the request; the gateway
    // sends the GET again on a new connection.
    let second = get(&c, &gw.url("/b")).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (200, "connection 2"),
        "{second:?}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 3);
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    // A POST may have been acted on: it is not sent again.
    let post = send(
        &c,
        http::Request::post(gw.url("/c"))
            .body(Full::new(Bytes::from_static(b"{\"order\":1}")))
            .unwrap(),
    )
    .await;
    assert_eq!(post.status, 502, "{post:?}");
    assert!(
        post.body.contains("\"status\":502"),
        "a problem answer: {}",
        post.body
    );
    assert_eq!(requests.load(Ordering::SeqCst), 4, "the POST went once");
    assert_eq!(conns.load(Ordering::SeqCst), 2);
}
