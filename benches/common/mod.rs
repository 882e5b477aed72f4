//! What the in-process benchmarks share: a gateway with one route running
//! given middleware, a fixed-body origin on loopback, the request every
//! bench sends, and one pass through a route's filters alone (the rest of
//! the chain replaced by an in-process 200). `gate.rs` times these with
//! criterion; `instructions.rs` counts their instructions under callgrind.

#![allow(dead_code)] // each bench uses its own subset

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};
use tollgate::chain::Segment;
use tollgate::chain::slot::RequestSlot;
use tollgate::config::{self, ComponentSource, Middleware};

/// The four built-in gates, in the order the load bench runs them.
pub const FOUR: &str = r#""headers", "url-guard", "auth", "rate-limit""#;

/// A gateway whose one route runs `middleware`, with limits high enough
/// that nothing is refused, and forwards to `origin` (or, with `None`,
/// ends in the echo primary component).
pub async fn gateway(
    middleware: &str,
    fast_path: bool,
    origin: Option<SocketAddr>,
) -> Arc<tollgate::gateway::Gateway> {
    gateway_with(middleware, fast_path, origin, "").await
}

/// [`gateway`], with `extra` TOML tables (say, `[limits]`) added.
pub async fn gateway_with(
    middleware: &str,
    fast_path: bool,
    origin: Option<SocketAddr>,
    extra: &str,
) -> Arc<tollgate::gateway::Gateway> {
    let key_hash: String = Sha256::digest(b"bench-key")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let text = format!(
        r#"
[server]
cache_dir = "{cache}"
fast_path = {fast_path}
[components.headers]
source = "builtin:headers"
[components.url-guard]
source = "builtin:url-guard"
variables = {{ query_params = "url" }}
[components.auth]
source = "builtin:auth"
key_value_stores = ["default"]
variables = {{ api_keys = "bench:{key_hash}" }}
[components.rate-limit]
source = "builtin:rate-limit"
key_value_stores = ["default"]
variables = {{ policies = "per-ip ip 100000000/1s; per-user identity 100000000/1s" }}
{extra}
[[route]]
origin = "http://{origin}"
middleware = [{middleware}]
"#,
        cache = concat!(env!("CARGO_TARGET_TMPDIR"), "/cache"),
        origin = origin.map_or("127.0.0.1:9".to_owned(), |a| a.to_string()),
    );
    let mut cfg = config::parse(&text, std::path::Path::new("."), &config::Env::process()).unwrap();
    if origin.is_none() {
        let echo = format!("{}/fixture_echo.wasm", env!("TOLLGATE_WASM_DIR"));
        cfg.routes[0].upstream = None;
        cfg.routes[0].middleware.push(Middleware {
            name: "echo".into(),
            source: ComponentSource::File(echo.into()),
        });
    }
    Arc::new(tollgate::gateway::build(&cfg).await.unwrap())
}

/// Starts the fixed-body demo origin on a free loopback port, on `rt`.
pub fn loopback_origin(rt: &tokio::runtime::Runtime) -> SocketAddr {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    rt.spawn(tollgate::demo_origin::run(
        addr,
        true,
        std::time::Duration::ZERO,
    ));
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return addr;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the loopback origin did not start");
}

/// The request every chain and filter bench sends.
pub fn bench_request() -> http::Request<Full<Bytes>> {
    http::Request::get("/v1/items?q=1")
        .header("host", "api.example.com")
        .header("x-api-key", "bench-key")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// One request through the whole host path (`ingress::handle`), its body
/// read to the end (so an origin connection goes back to the pool).
pub async fn host_path(gw: Arc<tollgate::gateway::Gateway>) -> Bytes {
    let peer: SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let res = tollgate::ingress::handle(gw, peer, http::uri::Scheme::HTTP, bench_request()).await;
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap().to_bytes()
}

/// One pass through the route's first run of filters, with an in-process
/// 200 standing in for the rest of the chain.
pub async fn filter_pass(gw: Arc<tollgate::gateway::Gateway>, name: &str) {
    let route = gw.routes.find("api.example.com", "/v1/items").unwrap();
    let chain = route.chain.as_ref().unwrap();
    let Segment::Filters(run) = &chain.segments()[0] else {
        panic!("{name} is not on the fast path");
    };
    let slot = Arc::new(RequestSlot::new("bench", Duration::from_secs(10)));
    let (mut parts, _) = bench_request().into_parts();
    parts
        .headers
        .insert("x-tollgate-client-ip", "203.0.113.7".parse().unwrap());
    let req = http::Request::from_parts(
        parts,
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    let res = run
        .handle(req, &slot, |_req| async {
            Ok(http::Response::new(
                Full::new(Bytes::new())
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            ))
        })
        .await
        .unwrap_or_else(|_| panic!("{name} failed"));
    assert_eq!(res.status(), 200);
}
