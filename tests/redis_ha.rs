//! Shared limits on Redis deployments that survive failures, against real
//! `redis-server` processes on loopback started here: a 3-master Redis
//! Cluster (made with `redis-cli --cluster create`), a master with a
//! replica watched by 3 sentinels (killed under load), and a TLS server
//! with an ACL user. The gateways are the real binary.
//!
//! Needs `redis-server`, `redis-sentinel` and `redis-cli` on PATH
//! (`.ci/run` installs them).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A `redis-server` process (server or sentinel), killed on drop.
struct Node {
    child: Child,
    port: u16,
}

impl Node {
    fn start(port: u16, args: &[&str], dir: &Path) -> Node {
        Self::start_program("redis-server", port, args, dir)
    }

    /// `program` is `redis-server`, or `redis-sentinel` (Debian's package
    /// of the same binary, which starts in sentinel mode).
    fn start_program(program: &str, port: u16, args: &[&str], dir: &Path) -> Node {
        let child = Command::new(program)
            .args(args)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{program} is not installed ({e}): apt-get install redis-server redis-sentinel redis-tools (or run .ci/run)")
            });
        let node = Node { child, port };
        node.wait_for(|out| out.contains("PONG"), &["PING"]);
        node
    }

    /// Runs `redis-cli -p PORT ARGS...` and returns its output.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is not installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, pred: impl Fn(&str) -> bool, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.cli(args);
            if pred(&out) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "redis on {} never satisfied {args:?}: {out}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let p = fastrand::u16(20000..40000);
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(p) && free(p + 10000) {
            return p;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A route limited to `limit` requests a day (no token comes back within
/// a test, so anything admitted beyond `limit` is an overshoot).
fn limited_config(kv: &str, origin: &str, algorithm: &str, limit: u32) -> String {
    config(&format!(
        r#"
[kv]
backend = "redis"
redis_timeout_ms = 500
{kv}

[components.rate-limit]
source = "builtin:rate-limit"
key_value_stores = ["default"]
variables = {{ policies = "shared-{algorithm} route {limit}/86400s burst={limit}", algorithm = "{algorithm}" }}

[[route]]
name = "limited"
origin = "{origin}"
middleware = ["rate-limit"]
"#
    ))
}

/// `n` concurrent requests alternating between `a` and `b`; the statuses.
async fn burst(a: &Gateway, b: &Gateway, n: usize) -> Vec<u16> {
    let c = client();
    let requests = (0..n).map(|i| {
        let url = if i % 2 == 0 { a.url("/x") } else { b.url("/x") };
        let c = c.clone();
        async move { get(&c, &url).await.status }
    });
    futures::future::join_all(requests).await
}

struct Cluster {
    nodes: Vec<Node>,
    _dir: tempdir::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempdir::TempDir::new();
        let nodes: Vec<Node> = (0..3)
            .map(|i| {
                let port = cluster_port();
                let conf = dir.path().join(format!("nodes-{i}.conf"));
                Node::start(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        conf.to_str().unwrap(),
                        "--cluster-node-timeout",
                        "2000",
                    ],
                    dir.path(),
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for n in &nodes {
            n.wait_for(
                |o| o.contains("cluster_state:ok") && o.contains("cluster_known_nodes:3"),
                &["CLUSTER", "INFO"],
            );
        }
        Cluster { nodes, _dir: dir }
    }

    fn kv(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"redis://127.0.0.1:{}\"", n.port))
            .collect();
        format!("mode = \"cluster\"\nredis_urls = [{}]", urls.join(", "))
    }
}

async fn cluster_is_exact(algorithm: &str) {
    let cluster = Cluster::start();
    let origin = Origin::start().await;
    let cfg = limited_config(&cluster.kv(), &origin.url(), algorithm, 40);
    let (a, b) = (Gateway::start(&cfg), Gateway::start(&cfg));
    let statuses = burst(&a, &b, 300).await;
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(ok, 40, "{algorithm}: admitted on the cluster: {statuses:?}");
    assert_eq!(
        limited, 260,
        "{algorithm}: the rest are limited: {statuses:?}"
    );
    assert_eq!(origin.count(), 40);
    // The key lives on one master, whichever the slot map says.
    let keys: usize = cluster
        .nodes
        .iter()
        .map(|n| n.cli(&["DBSIZE"]).trim().parse::<usize>().unwrap_or(0))
        .sum();
    assert!(keys >= 1, "the limit's state is in the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_admits_exactly_the_limit_with_the_token_bucket() {
    cluster_is_exact("token-bucket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_admits_exactly_the_limit_with_the_sliding_window() {
    cluster_is_exact("sliding-window").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resharding_under_load_is_followed() {
    let cluster = Cluster::start();
    let origin = Origin::start().await;
    let cfg = limited_config(&cluster.kv(), &origin.url(), "token-bucket", 100_000);
    let gw = Gateway::start(&cfg);
    let c = client();
    assert_eq!(get(&c, &gw.url("/x")).await.status, 200);
    // Move every slot of node 0 to node 1 while requests keep coming: the
    // client follows MOVED and ASK.
    let from = cluster.nodes[0].cli(&["CLUSTER", "MYID"]).trim().to_owned();
    let to = cluster.nodes[1].cli(&["CLUSTER", "MYID"]).trim().to_owned();
    let addr = format!("127.0.0.1:{}", cluster.nodes[0].port);
    let reshard = std::thread::spawn(move || {
        Command::new("redis-cli")
            .args(["--cluster", "reshard", &addr])
            .args(["--cluster-from", &from, "--cluster-to", &to])
            .args(["--cluster-slots", "16384", "--cluster-yes"])
            .output()
            .expect("redis-cli")
    });
    let mut statuses = Vec::new();
    while !reshard.is_finished() {
        statuses.push(get(&c, &gw.url("/x")).await.status);
    }
    let out = reshard.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for _ in 0..50 {
        statuses.push(get(&c, &gw.url("/x")).await.status);
    }
    let failed = statuses.iter().filter(|&&s| s != 200).count();
    println!(
        "resharding: {} requests during and after, {failed} not 200",
        statuses.len()
    );
    assert_eq!(failed, 0, "{statuses:?}");
    assert_eq!(
        cluster.nodes[0].cli(&["DBSIZE"]).trim(),
        "0",
        "node 0 gave up all its keys"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_failover_under_load_is_followed_without_a_restart() {
    let dir = tempdir::TempDir::new();
    let master_port = free_port();
    let mut master = Node::start(master_port, &[], dir.path());
    let port = master_port.to_string();
    let replica = Node::start(
        free_port(),
        &["--replicaof", "127.0.0.1", &port],
        dir.path(),
    );
    replica.wait_for(
        |o| o.contains("master_link_status:up"),
        &["INFO", "replication"],
    );
    let sentinels: Vec<Node> = (0..3)
        .map(|i| {
            let p = free_port();
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "sentinel monitor main 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds main 1000\n\
                     sentinel failover-timeout main 5000\n\
                     sentinel parallel-syncs main 1\n"
                ),
            )
            .unwrap();
            Node::start_program("redis-sentinel", p, &[conf.to_str().unwrap()], dir.path())
        })
        .collect();
    for s in &sentinels {
        s.wait_for(
            |o| {
                let lines: Vec<&str> = o.lines().collect();
                let field = |name: &str| {
                    lines
                        .iter()
                        .position(|l| *l == name)
                        .and_then(|i| lines.get(i + 1))
                        .copied()
                };
                field("num-slaves") == Some("1") && field("num-other-sentinels") == Some("2")
            },
            &["SENTINEL", "MASTER", "main"],
        );
    }
    let urls: Vec<String> = sentinels
        .iter()
        .map(|s| format!("\"redis://127.0.0.1:{}\"", s.port))
        .collect();
    let kv = format!(
        "mode = \"sentinel\"\nmaster_name = \"main\"\nredis_urls = [{}]",
        urls.join(", ")
    );
    let origin = Origin::start().await;
    // Large enough that admissions are still going on when the master
    // dies (about 1,200 requests come before the kill), small enough that
    // the load reaches it after the failover.
    const LIMIT: usize = 2000;
    let cfg = limited_config(&kv, &origin.url(), "token-bucket", LIMIT as u32);
    let gateways = [Gateway::start(&cfg), Gateway::start(&cfg)];

    // Steady load: 4 clients per gateway, one request at a time each.
    let start = Instant::now();
    let run_for = Duration::from_secs(14);
    let kill_at = Duration::from_secs(3);
    let mut tasks = Vec::new();
    for gw in &gateways {
        for _ in 0..4 {
            let url = gw.url("/x");
            tasks.push(tokio::spawn(async move {
                let c = client();
                let mut seen: Vec<(Duration, u16)> = Vec::new();
                while start.elapsed() < run_for {
                    let r = get(&c, &url).await;
                    seen.push((start.elapsed(), r.status));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                seen
            }));
        }
    }
    tokio::time::sleep(kill_at).await;
    master.kill();
    let killed = start.elapsed();
    let mut seen: Vec<(Duration, u16)> = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    let admitted = seen.iter().filter(|(_, s)| *s == 200).count();
    let refused = seen.iter().filter(|(_, s)| *s == 503).count();
    let limited = seen.iter().filter(|(_, s)| *s == 429).count();
    let last_503 = seen
        .iter()
        .filter(|(_, s)| *s == 503)
        .map(|(t, _)| *t)
        .max();
    let gap = last_503.map(|t| t.saturating_sub(killed));
    println!(
        "sentinel failover: {} requests; {admitted} admitted (limit {LIMIT}, {} beyond it), {limited} limited, {refused} refused with 503; last 503 {gap:?} after the kill",
        seen.len(),
        admitted.saturating_sub(LIMIT)
    );
    assert!(
        seen.iter().all(|(_, s)| matches!(s, 200 | 429 | 503)),
        "only admitted, limited or store-unavailable answers"
    );
    let gap = gap.expect("the master's death was noticed (some 503s)");
    assert!(
        gap < Duration::from_secs(8),
        "both gateways follow the new master within the bound: {gap:?}"
    );
    // After the failover both gateways answer from the new master.
    let after: Vec<u16> = seen
        .iter()
        .filter(|(t, _)| *t > killed + gap + Duration::from_millis(100))
        .map(|(_, s)| *s)
        .collect();
    assert!(
        !after.is_empty() && after.iter().all(|&s| s != 503),
        "{after:?}"
    );
    assert!(
        admitted >= LIMIT.min(200),
        "the load reached the limit: {admitted}"
    );
    for gw in &gateways {
        let c = client();
        let m = get(&c, &format!("http://{}/metrics", gw.admin.unwrap()))
            .await
            .body;
        let switches: f64 = m
            .lines()
            .find(|l| l.starts_with("tollgate_kv_store_reconnects_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0);
        assert!(switches >= 1.0, "a reconnect is counted:\n{m}");
        assert!(m.contains("tollgate_kv_store_errors_total"), "{m}");
    }
}

fn tls_files(dir: &Path) -> (PathBuf, PathBuf) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join("redis.crt"), dir.join("redis.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_and_an_acl_user_from_the_environment() {
    let dir = tempdir::TempDir::new();
    let (cert, key) = tls_files(dir.path());
    let tls_port = free_port();
    let mut node = {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &tls_port.to_string()])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&cert)
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--user", "default", "off"])
            .args(["--user", "gateway", "on", ">s3cret-pw", "~*", "+@all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        Node {
            child,
            port: tls_port,
        }
    };
    // Wait until the TLS port accepts connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server with TLS did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let origin = Origin::start().await;
    let kv = format!(
        "redis_url = \"rediss://127.0.0.1:{tls_port}\"\nredis_ca_file = \"{}\"\nredis_username = \"gateway\"\nredis_password = \"${{env:TG_REDIS_PW}}\"",
        cert.display()
    );
    let cfg = limited_config(&kv, &origin.url(), "token-bucket", 3);
    let gw = Gateway::start_with(&cfg, &[("TG_REDIS_PW", "s3cret-pw")]);
    let c = client();
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(get(&c, &gw.url("/x")).await.status);
        }
        v
    };
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
    let readyz = format!("http://{}/readyz", gw.admin.unwrap());
    assert_eq!(get(&c, &readyz).await.status, 200);

    // The wrong password stops startup, naming the keys, not the secret.
    let path = dir.path().join("wrong.toml");
    std::fs::write(&path, &cfg).unwrap();
    let out = Command::new(tollgate_bin())
        .args(["serve", "--config", path.to_str().unwrap()])
        .env("TG_REDIS_PW", "not-the-password")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("kv.redis_url: the Redis server refused the credentials"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-password"), "{stderr}");

    // The store going away shows in /readyz.
    node.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&c, &readyz).await;
        if r.status == 503 {
            assert!(r.body.contains("kv store: unavailable"), "{}", r.body);
            break;
        }
        assert!(Instant::now() < deadline, "readyz did not notice the store");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
