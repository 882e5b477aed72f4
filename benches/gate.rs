//! In-process benchmarks: the pieces of a request's cost, measured with
//! criterion. Run with `cargo bench -p tollgate --bench gate`.
//!
//! - `token_bucket`: one GCRA check against the embedded store (CAS read,
//!   decision, CAS write);
//! - `ssrf_check`: one URL through the url-guard policy;
//! - `jwt_hs256`: one HS256 token verification;
//! - `chain/*`: one request through the host's whole request path
//!   (`ingress::handle`: limits, routing, forwarding headers, the chain, the
//!   pooled client) to a real origin on loopback (the bundled fixed-body
//!   demo origin, in the same runtime), body read to the end:
//!   `chain/empty` is no middleware, the baseline; the gates take the
//!   filter fast path (`chain/four_components_composed`: the same four on
//!   the composed path, for comparison);
//! - `chain_echo/*`: the same, but the chain ends in the echo primary
//!   component (the shape of a Spin app under `tollgate up`, whose primary
//!   answers on the composed `wasi:http` path) and no network is used;
//! - `filter/*`: one pass through a run of filters alone (each built-in's
//!   filter call, and all four), with an in-process answer standing in for
//!   the rest of the chain: what the gates themselves cost per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{FOUR, gateway, loopback_origin};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tollgate::kv::MemoryStore;
use tollgate_sdk::limit::{Quota, gcra};

fn token_bucket(c: &mut Criterion) {
    let store = MemoryStore::new(100_000, Duration::from_secs(3600));
    let q = Quota {
        rate: u64::MAX / 4,
        period: 1_000_000,
        burst: u64::MAX / 4,
    };
    let mut now = 1_000_000_000u64;
    c.bench_function("token_bucket", |b| {
        b.iter(|| {
            now += 1;
            let (current, version) = store.cas_read("tollgate:rl:bench:203.0.113.7");
            let tat = current
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map(u64::from_le_bytes);
            let (decision, next) = gcra(tat, now, &q, 1);
            if let Some(n) = next {
                let _ = store.cas_swap(
                    "tollgate:rl:bench:203.0.113.7",
                    version,
                    n.to_le_bytes().to_vec(),
                );
            }
            decision
        })
    });
}

fn ssrf_check(c: &mut Criterion) {
    let policy = tollgate_url_guard::ssrf::Policy {
        schemes: vec!["https".into()],
        allowed_hosts: vec![],
        strict_ip_literals: true,
    };
    c.bench_function("ssrf_check", |b| {
        b.iter(|| {
            policy
                .check(std::hint::black_box("https://api.example.com/v1/hooks?x=1"))
                .is_ok()
        })
    });
}

fn jwt_hs256(c: &mut Criterion) {
    use tollgate_auth::jwt::{Alg, Key, KeyMaterial, Verifier};
    let secret = b"an-hs256-secret-of-at-least-32-bytes!!".to_vec();
    let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(r#"{"sub":"alice","exp":4000000000,"iss":"https://issuer.test","aud":"api","scope":"read"}"#);
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
    mac.update(format!("{h}.{p}").as_bytes());
    let token = format!(
        "{h}.{p}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );
    let v = Verifier {
        alg: Alg::HS256,
        keys: vec![Key {
            kid: None,
            material: KeyMaterial::Hmac(secret),
        }],
        issuer: Some("https://issuer.test".into()),
        audience: Some("api".into()),
        leeway_secs: 60,
    };
    c.bench_function("jwt_hs256", |b| {
        b.iter(|| {
            v.verify(std::hint::black_box(&token), 1_800_000_000)
                .unwrap()
        })
    });
}

fn chain(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let origin = loopback_origin(&rt);
    let mut group = c.benchmark_group("chain");
    for (name, middleware) in [
        ("empty", ""),
        ("headers", r#""headers""#),
        ("url_guard", r#""url-guard""#),
        ("auth", r#""auth""#),
        ("rate_limit", r#""rate-limit""#),
        ("four_components", FOUR),
        ("four_components_composed", FOUR),
    ] {
        let gw = rt.block_on(gateway(
            middleware,
            !name.ends_with("_composed"),
            Some(origin),
        ));
        bench_host_path(&mut group, &rt, name, gw);
    }
    group.finish();

    let mut group = c.benchmark_group("chain_echo");
    for (name, middleware) in [("empty", ""), ("four_components", FOUR)] {
        let gw = rt.block_on(gateway(middleware, true, None));
        bench_host_path(&mut group, &rt, name, gw);
    }
    group.finish();
}

/// One request through `ingress::handle`, its body read to the end (so an
/// origin connection goes back to the pool).
fn bench_host_path(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    gw: Arc<tollgate::gateway::Gateway>,
) {
    group.bench_function(name, |b| {
        b.to_async(rt).iter(|| common::host_path(gw.clone()))
    });
}

/// Each built-in's filter call, and the four in one run, with the rest of
/// the chain replaced by an in-process 200.
fn filter(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("filter");
    for (name, middleware) in [
        ("headers", r#""headers""#),
        ("url_guard", r#""url-guard""#),
        ("auth", r#""auth""#),
        ("rate_limit", r#""rate-limit""#),
        ("four_components", FOUR),
    ] {
        // The origin is never called: the rest of the chain is replaced.
        let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let gw = rt.block_on(gateway(middleware, true, Some(unused)));
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| common::filter_pass(gw.clone(), name))
        });
    }
    group.finish();
}

criterion_group!(benches, token_bucket, ssrf_check, jwt_hs256, chain, filter);
criterion_main!(benches);
