//! Reloading the configuration under load, against the real binary: 32
//! clients keep requesting for 20 s while the config file alternates
//! between two valid versions and is reloaded 20 times with SIGHUP, once
//! with an invalid version in the middle. No request fails, the answers
//! show each switch, the invalid version changes nothing, and limits
//! counted before a reload still hold after it.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};

use common::*;

/// Config version `policy` (the Referrer-Policy the headers gate sets),
/// with a per-client limit whose state lives in the embedded store.
fn versioned(origin: &str, policy: &str) -> String {
    config(&format!(
        r#"
[components.headers]
source = "builtin:headers"
variables = {{ referrer_policy = "{policy}" }}

[components.rate-limit]
source = "builtin:rate-limit"
key_value_stores = ["default"]
variables = {{ policies = "per-route route 1000000/3600s burst=1000000" }}

[components.limited]
source = "builtin:rate-limit"
key_value_stores = ["default"]
variables = {{ policies = "tight route 3/3600s burst=3" }}

[[route]]
name = "main"
origin = "{origin}"
middleware = ["headers", "rate-limit"]

[[route]]
name = "tight"
path_prefix = "/tight"
origin = "{origin}"
middleware = ["limited"]
"#
    ))
}

fn sighup(gw: &Gateway) {
    let ok = Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Sends SIGHUP and waits for the log to say how it went (`n`-th time).
fn reload(gw: &Gateway, what: &str, n: usize) {
    sighup(gw);
    gw.wait_for_log(what, |_| gw.log_text().matches(what).count() >= n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_reloads_under_load_fail_no_request() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&versioned(&origin.url(), "no-referrer"));
    let path = gw.dir.path().join("tollgate.toml");
    let c = client();

    // Spend the tight limit's 3 requests before any reload.
    for _ in 0..3 {
        assert_eq!(get(&c, &gw.url("/tight")).await.status, 200);
    }
    assert_eq!(get(&c, &gw.url("/tight")).await.status, 429);

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let failures: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>> = Arc::default();
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (url, stop, failed, served, seen, failures) = (
            gw.url("/"),
            stop.clone(),
            failed.clone(),
            served.clone(),
            seen.clone(),
            failures.clone(),
        );
        clients.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(&url).body(Full::default()).unwrap();
                match tokio::time::timeout(Duration::from_secs(10), c.request(req)).await {
                    Ok(Ok(res)) if res.status() == 200 => {
                        let policy = res
                            .headers()
                            .get("referrer-policy")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let _ = res.into_body().collect().await;
                        served.fetch_add(1, Ordering::Relaxed);
                        seen.lock().unwrap().insert(policy);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let what = match other {
                            Ok(Ok(res)) => format!("status {}", res.status()),
                            Ok(Err(e)) => format!("error {e:?}"),
                            Err(_) => "timed out after 10 s".to_owned(),
                        };
                        failures.lock().unwrap().push(what);
                    }
                }
            }
        }));
    }

    let started = Instant::now();
    let policies = ["same-origin", "no-referrer"];
    let mut reloaded = 0;
    for i in 0..20 {
        let policy = policies[i % 2];
        std::fs::write(&path, versioned(&origin.url(), policy)).unwrap();
        reloaded += 1;
        reload(&gw, "configuration reloaded", reloaded);
        if i == 9 {
            // An invalid version in the middle: refused, nothing changes.
            std::fs::write(
                &path,
                versioned(&origin.url(), policy).replace("builtin:headers", "builtin:nope"),
            )
            .unwrap();
            reload(&gw, "configuration reload refused", 1);
            for _ in 0..20 {
                let r = get(&c, &gw.url("/")).await;
                assert_eq!(r.status, 200);
                assert_eq!(
                    r.header("referrer-policy"),
                    Some(policy),
                    "the invalid config changed nothing"
                );
            }
        }
        let r = get(&c, &gw.url("/")).await;
        assert_eq!(
            r.header("referrer-policy"),
            Some(policy),
            "reload {i} took effect"
        );
        // Twenty reloads spread over twenty seconds of load.
        tokio::time::sleep_until((started + Duration::from_secs(i as u64 + 1)).into()).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.await.unwrap();
    }
    let (served, failed) = (
        served.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    println!(
        "reload: {served} requests over {:?} with 20 reloads and one refused; {failed} failed",
        started.elapsed()
    );
    if failed > 0 {
        // What the gateway said about them, to tell a gateway fault from a
        // connection race.
        for line in gw.log_text().lines() {
            if line.contains("WARN")
                || line.contains("ERROR")
                || line.contains("\"status\":5")
                || line.contains("tollgate::component")
            {
                println!("gateway: {line}");
            }
        }
    }
    assert_eq!(
        failed,
        0,
        "no request fails across reloads: {:?}",
        failures.lock().unwrap()
    );
    assert!(served > 1000, "the load ran: {served}");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.contains("same-origin") && seen.contains("no-referrer"),
        "the clients saw both versions: {seen:?}"
    );
    // The limit spent before the reloads is still spent: the store carried over.
    assert_eq!(get(&c, &gw.url("/tight")).await.status, 429);
    let log = gw.log_text();
    assert!(
        log.contains("builtin `nope`"),
        "the refusal names the problem: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_that_changes_the_listeners_is_refused_naming_the_key() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&versioned(&origin.url(), "no-referrer"));
    let path = gw.dir.path().join("tollgate.toml");
    let moved = versioned(&origin.url(), "same-origin").replace(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1:0\", \"127.0.0.1:1\"]",
    );
    assert_ne!(moved, versioned(&origin.url(), "same-origin"));
    std::fs::write(&path, moved).unwrap();
    reload(&gw, "configuration reload refused", 1);
    let log = gw.log_text();
    assert!(
        log.contains("server.listen: cannot change on reload"),
        "{log}"
    );
    let c = client();
    let r = get(&c, &gw.url("/")).await;
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
}

/// `serve --watch`: a changed config file is reloaded with no signal, an
/// invalid one is refused (and not retried until it changes again), and
/// rewriting a component `.wasm` the config names reloads too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_reloads_on_a_changed_config_or_component_file() {
    let origin = Origin::start().await;
    let dir = tempdir::TempDir::new();
    let component = dir.path().join("headers.wasm");
    std::fs::copy(wasm("tollgate_headers"), &component).unwrap();
    let version = |policy: &str| {
        config(&format!(
            r#"
[components.headers]
source = "{}"
variables = {{ referrer_policy = "{policy}" }}

[[route]]
origin = "{}"
middleware = ["headers"]
"#,
            component.display(),
            origin.url()
        ))
    };
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, version("no-referrer")).unwrap();
    let path_text = path.display().to_string();
    let gw = Gateway::spawn(
        &["serve", "--config", &path_text, "--watch"],
        &[],
        dir,
        true,
    );
    let c = client();
    assert_eq!(
        get(&c, &gw.url("/")).await.header("referrer-policy"),
        Some("no-referrer")
    );
    gw.wait_for_log("watching", |l| l.contains("watching the configuration"));

    // Written through a rename, as editors do.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, version("same-origin")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let changed = "a watched file changed";
    // Reloads that took, as the watcher logs them.
    let reloads = |n: usize| {
        gw.wait_for_log(changed, |_| {
            gw.log_text()
                .lines()
                .filter(|l| l.contains("\"configuration reloaded\"") && l.contains(changed))
                .count()
                >= n
        })
    };
    reloads(1);
    assert_eq!(
        get(&c, &gw.url("/")).await.header("referrer-policy"),
        Some("same-origin")
    );

    // An invalid version is refused once and changes nothing.
    std::fs::write(
        &path,
        version("same-origin").replace("[[route]]", "[[route]]\nbogus = 1"),
    )
    .unwrap();
    gw.wait_for_log("reload refused", |l| {
        l.contains("configuration reload refused")
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        gw.log_text()
            .matches("configuration reload refused")
            .count(),
        1,
        "not retried while the file stays the same"
    );
    assert_eq!(
        get(&c, &gw.url("/")).await.header("referrer-policy"),
        Some("same-origin")
    );

    // Back to valid, then the component file itself is rewritten.
    std::fs::write(&path, version("strict-origin")).unwrap();
    reloads(2);
    assert_eq!(
        get(&c, &gw.url("/")).await.header("referrer-policy"),
        Some("strict-origin")
    );
    let bytes = std::fs::read(&component).unwrap();
    std::fs::write(&component, &bytes).unwrap();
    // mtime granularity: make sure the rewrite is seen as a change.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&component)
        .unwrap()
        .set_modified(later)
        .unwrap();
    reloads(3);
    assert_eq!(get(&c, &gw.url("/")).await.status, 200);
}
