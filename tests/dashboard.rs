//! The live dashboard in a real browser: headless Chromium (Debian's
//! `chromium`, which `.ci/run` installs) loads `GET /` from the admin
//! listener of a running gateway under light load, with the admin token
//! in the URL's fragment. The test reads the rendered page (`--dump-dom`)
//! and checks that what it shows matches the admin API: each route's
//! counts and latency, the component times, the rate-limited keys and the
//! lockouts, and the config version. Without the token the page asks for
//! it and shows no data.
//!
//! `TOLLGATE_DASHBOARD_SCREENSHOT=path.png` also saves a screenshot (how
//! the README's picture is made).

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use common::*;

const TOKEN: &str = "dashboard-admin-token-0123456789";

fn chromium() -> &'static str {
    for c in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(c).exists() {
            return c;
        }
    }
    panic!("Chromium is needed for this test: apt-get install chromium (.ci/run does)");
}

/// Runs headless Chromium on `url` and returns the page's DOM once its
/// scripts have run for `budget_ms` of virtual time.
fn render(url: &str, budget_ms: u32, screenshot: Option<&str>) -> String {
    let profile = tempdir::TempDir::new();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,900",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--virtual-time-budget={budget_ms}"));
    match screenshot {
        Some(path) => cmd.arg(format!("--screenshot={path}")),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().expect("running chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The rows of table `id` in the dumped DOM: each row's `data-*`
/// attributes and its `<td data-field="NAME">` cells, by name.
fn rows(dom: &str, id: &str) -> Vec<HashMap<String, String>> {
    let start = dom
        .find(&format!("<table id=\"{id}\""))
        .unwrap_or_else(|| panic!("no table {id}"));
    let table = &dom[start..];
    let body = &table[table.find("<tbody>").unwrap()..table.find("</tbody>").unwrap()];
    body.split("<tr ")
        .skip(1)
        .map(|tr| {
            let head = &tr[..tr.find('>').unwrap()];
            let mut m = pairs(head, "data-", "=\"", "\"");
            m.extend(pairs(tr, "<td data-field=\"", "\">", "</td>"));
            m
        })
        .collect()
}

/// Every `OPEN name SEP value CLOSE` in `text`.
fn pairs(text: &str, open: &str, sep: &str, close: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = text;
    while let Some(i) = rest.find(open) {
        rest = &rest[i + open.len()..];
        let Some(q) = rest.find(sep) else { break };
        let name = &rest[..q];
        let after = &rest[q + sep.len()..];
        let Some(e) = after.find(close) else { break };
        out.insert(name.to_owned(), unescape(&after[..e]));
        rest = &after[e..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

fn config_for(origin: &str) -> String {
    config(&format!(
        r#"
admin_token = "${{env:TG_ADMIN_TOKEN}}"

[components.headers]
source = "builtin:headers"

[components.auth]
source = "builtin:auth"
key_value_stores = ["default"]
variables = {{ api_keys = "svc:0000000000000000000000000000000000000000000000000000000000000000", lockout_threshold = "3" }}

[components.rate-limit]
source = "builtin:rate-limit"
key_value_stores = ["default"]
variables = {{ policies = "per-ip ip 20/3600s" }}

[[route]]
name = "web"
origin = "{origin}"
middleware = ["headers"]

[[route]]
name = "limited"
path_prefix = "/limited"
origin = "{origin}"
middleware = ["headers", "rate-limit"]

[[route]]
name = "api"
path_prefix = "/api"
origin = "{origin}"
middleware = ["auth"]
"#
    ))
}

async fn api_json(c: &HttpClient, gw: &Gateway, path: &str) -> serde_json::Value {
    let req = http::Request::get(format!("http://{}{path}", gw.admin.unwrap()))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let r = send(c, req).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

fn close(page: &str, api: &serde_json::Value, what: &str) {
    let shown: f64 = page.parse().unwrap_or_else(|_| panic!("{what}: `{page}`"));
    let want = api.as_f64().unwrap();
    assert!(
        (shown - want).abs() < 0.006,
        "{what}: page {shown}, API {want}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_what_the_api_says() {
    let origin = Origin::start().await;
    let gw = Gateway::start_with(&config_for(&origin.url()), &[("TG_ADMIN_TOKEN", TOKEN)]);
    let c = client();

    // Light load until the first page has rendered: pages, a rate limit
    // running out, and wrong API keys locking an account out.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (c, stop, base) = (c.clone(), stop.clone(), gw.url(""));
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                get(&c, &format!("{base}/page/{n}")).await;
                if n % 2 == 0 {
                    get(&c, &format!("{base}/limited/x")).await;
                }
                if n % 5 == 0 {
                    let req = http::Request::get(format!("{base}/api/orders"))
                        .header("x-api-key", "wrong")
                        .header("x-account", if n % 10 == 0 { "mallory" } else { "trent" })
                        .body(Full::<Bytes>::default())
                        .unwrap();
                    send(&c, req).await;
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = format!("http://{}/?interval=250#token={TOKEN}", gw.admin.unwrap());
    let live = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || render(&url, 4000, None))
            .await
            .unwrap()
    };
    if let Ok(path) = std::env::var("TOLLGATE_DASHBOARD_SCREENSHOT") {
        let url = url.clone();
        tokio::task::spawn_blocking(move || render(&url, 6000, Some(&path)))
            .await
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    // Under load the page drew the routes and saw traffic on them.
    assert!(
        live.contains("data-loaded="),
        "the page never loaded data:\n{live}"
    );
    assert!(
        live.contains("<form id=\"login\" hidden=\"\">"),
        "no login form once in"
    );
    let web = rows(&live, "routes")
        .into_iter()
        .find(|r| r.get("route").map(String::as_str) == Some("web"))
        .expect("a row for route web");
    let rps: f64 = web["rps"].parse().unwrap_or(0.0);
    let max: f64 = web["rps-max"].parse().unwrap();
    assert!(max > 0.0 && rps >= 0.0, "no live rate under load: {web:?}");

    // Quiet now: a fresh page shows exactly what the API says.
    let dom = tokio::task::spawn_blocking(move || render(&url, 1500, None))
        .await
        .unwrap();
    let routes = api_json(&c, &gw, "/api/v1/routes").await;
    let shown = rows(&dom, "routes");
    assert_eq!(shown.len(), 3, "{shown:?}");
    for r in routes["data"].as_array().unwrap() {
        let name = r["name"].as_str().unwrap();
        let row = shown
            .iter()
            .find(|s| s["route"] == name)
            .unwrap_or_else(|| panic!("no row for {name}"));
        for (field, key) in [
            ("total", "total"),
            ("ok", "ok"),
            ("clientError", "clientError"),
            ("rateLimited", "rateLimited"),
            ("serverError", "serverError"),
        ] {
            assert_eq!(row[field], r["requests"][key].to_string(), "{name} {field}");
        }
        close(&row["p50"], &r["latencyMs"]["p50"], &format!("{name} p50"));
        close(&row["p99"], &r["latencyMs"]["p99"], &format!("{name} p99"));
    }
    let limited = &routes["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "limited")
        .unwrap()["requests"];
    assert!(
        limited["rateLimited"].as_u64().unwrap() > 0,
        "the load ran the limit out"
    );

    // Time per component.
    let comps = rows(&dom, "components");
    for r in routes["data"].as_array().unwrap() {
        for c in r["components"].as_array().unwrap() {
            let row = comps
                .iter()
                .find(|x| {
                    x["route"] == r["name"].as_str().unwrap()
                        && x["component"] == c["name"].as_str().unwrap()
                })
                .unwrap_or_else(|| panic!("no component row for {c}"));
            assert_eq!(row["calls"], c["calls"].to_string());
            close(&row["meanMs"], &c["meanMs"], "component mean");
        }
    }

    // The rate-limited keys and the lockouts.
    let limits = api_json(
        &c,
        &gw,
        "/api/v1/limits?limit=10&sortBy=remaining&sortOrder=asc",
    )
    .await;
    let shown = rows(&dom, "limits");
    assert_eq!(shown.len(), limits["data"].as_array().unwrap().len());
    assert_eq!(shown[0]["key"], "127.0.0.1");
    assert_eq!(
        shown[0]["remaining"],
        limits["data"][0]["remaining"].to_string()
    );
    assert!(
        dom.contains("tag limited"),
        "the spent key is marked limited"
    );
    let lockouts = api_json(
        &c,
        &gw,
        "/api/v1/lockouts?limit=10&sortBy=failures&sortOrder=desc",
    )
    .await;
    let shown = rows(&dom, "lockouts");
    assert_eq!(
        shown.len(),
        lockouts["data"].as_array().unwrap().len(),
        "{lockouts}"
    );
    for l in lockouts["data"].as_array().unwrap() {
        let row = shown
            .iter()
            .find(|s| s["account"] == l["account"].as_str().unwrap())
            .unwrap();
        assert_eq!(row["failures"], l["failures"].to_string());
    }
    assert!(
        lockouts["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["locked"] == true),
        "the load locked an account out"
    );
    assert!(dom.contains("tag locked"));

    // The config version and the last reload.
    let status = api_json(&c, &gw, "/api/v1/status").await;
    assert!(dom.contains(&format!(
        "<dd data-field=\"configVersion\">{}</dd>",
        status["configVersion"]
    )));
    assert!(dom.contains(&format!(
        "<dd data-field=\"loadedAt\">{}</dd>",
        status["loadedAt"].as_str().unwrap()
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_token_the_page_asks_for_it_and_shows_nothing() {
    let origin = Origin::start().await;
    let gw = Gateway::start_with(&config_for(&origin.url()), &[("TG_ADMIN_TOKEN", TOKEN)]);
    let c = client();
    get(&c, &gw.url("/x")).await;
    let url = format!("http://{}/", gw.admin.unwrap());
    let dom = tokio::task::spawn_blocking(move || render(&url, 1000, None))
        .await
        .unwrap();
    assert!(
        dom.contains("<form id=\"login\">"),
        "the login form shows:\n{dom}"
    );
    assert!(
        dom.contains("<main id=\"board\" hidden=\"\">"),
        "no data shows"
    );
    assert!(!dom.contains("data-route=\"web\""));
    // A wrong token is refused and says so.
    let url = format!("http://{}/#token=not-the-token-at-all", gw.admin.unwrap());
    let dom = tokio::task::spawn_blocking(move || render(&url, 1000, None))
        .await
        .unwrap();
    assert!(dom.contains("A valid bearer token is required."), "{dom}");
    assert!(!dom.contains("data-route=\"web\""));
}
