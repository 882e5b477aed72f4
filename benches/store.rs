//! One rate-limit decision against each key-value backend, in one run, so
//! they compare as ratios: `cargo bench -p tollgate --bench store`.
//!
//! A decision is what the rate-limit gate does per request and policy on
//! the token bucket: a compare-and-swap read, the GCRA decision, and the
//! compare-and-swap write, through the gateway's own store API
//! ([`KvBackend`]). Backends: the embedded store; one `redis-server`; a
//! 3-master Redis Cluster (`redis-cli --cluster create`), all on loopback
//! and started here (the Redis rows are skipped, saying so, when
//! `redis-server` is not installed).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::config::RedisConfig;
use tollgate::kv::MemoryStore;
use tollgate::kv_redis::RedisStore;
use tollgate::kv_redis::connect::Topology;
use tollgate::store::KvBackend;
use tollgate::telemetry::StoreMetrics;
use tollgate_sdk::limit::{Quota, gcra};

/// redis-server processes, killed when the benchmark ends.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn port() -> u16 {
    loop {
        let p = fastrand::u16(20000..40000);
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(p) && free(p + 10000) {
            return p;
        }
    }
}

fn redis(port: u16, extra: &[&str], dir: &std::path::Path) -> Option<Child> {
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(child)
}

/// A single server and a 3-master cluster, or `None` without redis-server.
fn start(dir: &std::path::Path) -> Option<(Servers, u16, Vec<u16>)> {
    let mut servers = Servers(Vec::new());
    let single = port();
    servers.0.push(redis(single, &[], dir)?);
    let nodes: Vec<u16> = (0..3).map(|_| port()).collect();
    for (i, p) in nodes.iter().enumerate() {
        let conf = format!("bench-nodes-{i}.conf");
        servers.0.push(redis(
            *p,
            &["--cluster-enabled", "yes", "--cluster-config-file", &conf],
            dir,
        )?);
    }
    let addrs: Vec<String> = nodes.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let ok = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    // Wait for every node to agree the cluster is up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes.iter().all(|p| {
        Command::new("redis-cli")
            .args(["-p", &p.to_string(), "CLUSTER", "INFO"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            .unwrap_or(false)
    }) {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Some((servers, single, nodes))
}

/// One token-bucket decision on `store`, at time `now` (µs).
async fn decision(store: &KvBackend, key: &str, now: u64) {
    let q = Quota {
        rate: u64::MAX / 4,
        period: 1_000_000,
        burst: u64::MAX / 4,
    };
    let read = store.cas_read(key).await.expect("the store answers");
    let tat = read
        .value
        .as_deref()
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .map(u64::from_le_bytes);
    let (_, next) = gcra(tat, now, &q, 1);
    if let Some(n) = next {
        let _ = store
            .cas_swap(key, &read, n.to_le_bytes().to_vec())
            .await
            .expect("the store answers");
    }
}

fn store(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = std::env::temp_dir().join(format!("tollgate-bench-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut backends = vec![(
        "embedded",
        KvBackend::Memory(std::sync::Arc::new(MemoryStore::new(
            100_000,
            Duration::from_secs(3600),
        ))),
    )];
    let servers = start(&dir);
    match &servers {
        None => {
            eprintln!("redis-server or redis-cli not found: only the embedded store is measured")
        }
        Some((_, single, nodes)) => {
            let timeout = Duration::from_millis(500);
            let single = RedisConfig::single(format!("redis://127.0.0.1:{single}"), timeout);
            let mut cluster = single.clone();
            cluster.topology = Topology::Cluster(
                nodes
                    .iter()
                    .map(|p| format!("redis://127.0.0.1:{p}"))
                    .collect(),
            );
            for (name, config) in [("redis", single), ("redis_cluster", cluster)] {
                let store = rt
                    .block_on(RedisStore::connect(
                        &config,
                        Duration::from_secs(3600),
                        StoreMetrics::new(),
                    ))
                    .expect("connecting to the benchmark's redis");
                backends.push((name, KvBackend::Redis(store)));
            }
        }
    }
    let mut group = c.benchmark_group("store_decision");
    group.measurement_time(Duration::from_secs(4));
    let now = AtomicU64::new(1_000_000_000);
    for (name, backend) in &backends {
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| async {
                let t = now.fetch_add(1, Ordering::Relaxed);
                decision(backend, "tollgate:rl:bench:203.0.113.7", t).await
            })
        });
    }
    group.finish();
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, store);
criterion_main!(benches);
