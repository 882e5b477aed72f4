//! Shared harness for the end-to-end tests: a real origin server on
//! loopback that counts its connections and requests, the real `tollgate`
//! binary started as a child process, a throwaway `redis-server`, and a
//! small HTTP client.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Where the build script put the compiled test components.
pub fn wasm(name: &str) -> String {
    Path::new(env!("TOLLGATE_WASM_DIR"))
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn tollgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

/// What the origin saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

/// The cookies the test origin's `/cookies` sets, in order.
pub const ORIGIN_COOKIES: &[&str] = &[
    "session=abc123; Path=/",
    "pref=dark; Path=/; SameSite=Strict",
    "widget=1; SameSite=None",
    "csrf=tok; Path=/",
    "done=1; Secure; HttpOnly; SameSite=Lax",
];

/// What the origin's `/body/N` paths repeat.
pub const ORIGIN_TEXT: &str = "Tollgate compresses text at the edge. ";

/// A real HTTP origin on loopback.
///
/// Paths: `/slow/MS` answers after MS milliseconds; `/status/N` answers N;
/// `/flaky/KEY/N` fails with 503 the first N times for KEY, then answers
/// 200; `/echo` answers with the request's own body; `/cookies` sets
/// [`ORIGIN_COOKIES`], one `Set-Cookie` field each; `…/body/N[/KIND]`
/// answers N bytes of [`ORIGIN_TEXT`] as `text/plain`, or as `image/png`
/// (KIND `png`), with `Cache-Control: no-transform` (`no-transform`) or
/// claiming `Content-Encoding: gzip` (`encoded`); anything else answers
/// 200. Every other answer echoes the path, and every answer
/// carries `x-origin-request: <n>`, the origin's running request count.
pub struct Origin {
    pub addr: SocketAddr,
    pub accepts: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    pub async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let flaky: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (a, r, s) = (accepts.clone(), requests.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let (r, s, flaky) = (r.clone(), s.clone(), flaky.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (r, s, flaky) = (r.clone(), s.clone(), flaky.clone());
                        async move {
                            let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let path = parts.uri.path().to_string();
                            let headers = parts
                                .headers
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                                .collect();
                            s.lock().unwrap().push(Seen {
                                path: path.clone(),
                                headers,
                                body,
                            });
                            let mut status = 200u16;
                            let mut answer = Bytes::from(format!("origin saw {path}"));
                            if path == "/echo" {
                                answer = s.lock().unwrap().last().unwrap().body.clone();
                            } else if let Some(ms) = path.strip_prefix("/slow/") {
                                let ms: u64 = ms.parse().unwrap_or(100);
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            } else if let Some(code) = path.strip_prefix("/status/") {
                                status = code.parse().unwrap_or(200);
                            } else if let Some(rest) = path.strip_prefix("/flaky/") {
                                let (key, fails) = rest.split_once('/').unwrap_or((rest, "1"));
                                let fails: usize = fails.parse().unwrap_or(1);
                                let mut f = flaky.lock().unwrap();
                                let count = f.entry(key.to_string()).or_insert(0);
                                *count += 1;
                                if *count <= fails {
                                    status = 503;
                                }
                            }
                            let mut res = hyper::Response::builder()
                                .status(status)
                                .header("x-origin-request", n.to_string())
                                .header("server", "test-origin/1.0")
                                .header("x-powered-by", "test-stack");
                            if path == "/cookies" {
                                for c in ORIGIN_COOKIES {
                                    res = res.header("set-cookie", *c);
                                }
                            }
                            if let Some((_, rest)) = path.split_once("/body/") {
                                // /body/N[/TYPE-CHOICE]: N bytes of text.
                                let (n, kind) = rest.split_once('/').unwrap_or((rest, "text"));
                                let n: usize = n.parse().unwrap_or(0);
                                answer = Bytes::from(
                                    ORIGIN_TEXT.repeat(n / ORIGIN_TEXT.len() + 1)[..n].to_owned(),
                                );
                                res = match kind {
                                    "png" => res.header("content-type", "image/png"),
                                    "no-transform" => res
                                        .header("content-type", "text/plain")
                                        .header("cache-control", "public, no-transform"),
                                    "encoded" => res
                                        .header("content-type", "text/plain")
                                        .header("content-encoding", "gzip"),
                                    _ => res.header("content-type", "text/plain; charset=utf-8"),
                                };
                            }
                            Ok::<_, std::convert::Infallible>(res.body(Full::new(answer)).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin {
            addr,
            accepts,
            requests,
            seen,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the origin saw no request")
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running `tollgate` process.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub log: Arc<Mutex<Vec<String>>>,
    pub dir: tempdir::TempDir,
}

pub mod tempdir {
    //! A directory removed on drop (no extra crate needed).
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "tollgate-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Gateway {
    /// Starts `tollgate serve` on `config` (TOML; `listen` and `admin_listen`
    /// should use port 0) and waits until it listens.
    pub fn start(config: &str) -> Gateway {
        Self::start_with(config, &[])
    }

    pub fn start_with(config: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempdir::TempDir::new();
        let path = dir.path().join("tollgate.toml");
        std::fs::write(&path, config).unwrap();
        let path = path.display().to_string();
        let wants_admin = config.contains("admin_listen");
        Self::spawn(&["serve", "--config", &path], env, dir, wants_admin)
    }

    /// Starts `tollgate ARGS...` (a serving command) and waits until it listens.
    pub fn spawn(
        args: &[&str],
        env: &[(&str, &str)],
        dir: tempdir::TempDir,
        wants_admin: bool,
    ) -> Gateway {
        let mut cmd = Command::new(tollgate_bin());
        cmd.args(args)
            .env("RUST_LOG", "info")
            .env("XDG_CACHE_HOME", shared_cache_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("starting tollgate");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("\"listening\"") || line.contains("\"admin listening\"") {
                    let _ = tx.send(line.clone());
                }
                log2.lock().unwrap().push(line);
            }
        });
        let mut addr = None;
        let mut admin = None;
        while addr.is_none() || (wants_admin && admin.is_none()) {
            let line = match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "tollgate did not start; log:\n{}",
                        log.lock().unwrap().join("\n")
                    );
                }
            };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let a: SocketAddr = v["fields"]["addr"].as_str().unwrap().parse().unwrap();
            if line.contains("admin listening") {
                admin = Some(a);
            } else {
                addr = Some(a);
            }
        }
        Gateway {
            child,
            addr: addr.unwrap(),
            admin,
            log,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The log, once a line satisfies `pred` (log lines are written by
    /// the gateway's own writer thread, so one may land just after the
    /// response it describes). Panics after 10 s, showing the log.
    pub fn wait_for_log(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log_text();
            if log.lines().any(&pred) {
                return log;
            }
            assert!(Instant::now() < deadline, "no {what} in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The compiled-chain cache shared by all tests of one run, so each chain
/// is compiled once per run rather than once per test.
fn shared_cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cache")
}

thread_local! {
    /// Whether this test thread runs chains on the composed path only.
    static COMPOSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current test runs every middleware as a composed
/// `wasi:http` handler (`fast_path = false`) rather than as filters.
pub fn composed() -> bool {
    COMPOSED.with(|c| c.get())
}

/// Runs an async test body on a 4-worker runtime, on the chosen path.
pub fn run_on_path<F: std::future::Future<Output = ()>>(composed: bool, body: F) {
    COMPOSED.with(|c| c.set(composed));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
        .block_on(body);
}

/// Declares each named `async fn` test twice: on the filter fast path
/// (`fast_path::NAME`) and on the composed `wasi:http` path
/// (`composed_path::NAME`), so neither path can rot.
#[macro_export]
macro_rules! on_both_paths {
    ($($name:ident),* $(,)?) => {
        mod fast_path {
            $( #[test] fn $name() { $crate::common::run_on_path(false, super::$name()) } )*
        }
        mod composed_path {
            $( #[test] fn $name() { $crate::common::run_on_path(true, super::$name()) } )*
        }
    };
}

/// A gateway config with the given routes and components; listens on port 0.
/// On the composed path (see [`composed`]) filters are not used.
pub fn config(extra: &str) -> String {
    let fast_path = !composed();
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\nshutdown_timeout_ms = 10000\nfast_path = {fast_path}\n\n{extra}"
    )
}

/// A minimal response as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A pooled client. The gateway closes a keep-alive connection that has
/// been idle for 10 s (hyper's header-read timeout); a client that reuses
/// one at that instant sends its request into the close and sees
/// "connection closed before message completed". Keeping the client's
/// idle timeout below the server's, as well-behaved clients do, rules that
/// race out, so a failed request in a test is the gateway's doing.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(5))
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build_http()
}

pub async fn send(client: &HttpClient, req: http::Request<Full<Bytes>>) -> Reply {
    let res = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn get(client: &HttpClient, url: &str) -> Reply {
    send(
        client,
        http::Request::get(url).body(Full::default()).unwrap(),
    )
    .await
}

/// Sends raw bytes on a fresh connection and returns the raw answer.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Status code of a raw HTTP answer.
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// A throwaway `redis-server` on loopback, with no persistence.
pub struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    pub fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: apt-get install redis-server (or run .ci/run)");
        let redis = Redis { child, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while redis.ping().is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    pub fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn ping(&self) -> redis::RedisResult<String> {
        let client = redis::Client::open(self.url())?;
        let mut c = client.get_connection_with_timeout(Duration::from_millis(200))?;
        redis::cmd("PING").query(&mut c)
    }

    pub fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
