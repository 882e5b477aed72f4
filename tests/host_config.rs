//! Bad configuration fails fast: each invalid config makes `tollgate serve`
//! exit non-zero with a message naming the problem, before it binds a port;
//! `tollgate check` validates without serving.

mod common;

use std::net::TcpListener;
use std::process::Command;

use common::*;

/// Runs `tollgate serve` on `config_text`, which must fail; returns stderr.
/// The config asks for a port we know is free: it must still be free after.
fn serve_fails(config_text: &str) -> String {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempdir::TempDir::new();
    let path = dir.path().join("bad.toml");
    let text = config_text.replace("LISTEN", &format!("127.0.0.1:{port}"));
    std::fs::write(&path, text).unwrap();
    let out = Command::new(tollgate_bin())
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("UNSET_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success(), "config was accepted:\n{config_text}");
    // Nothing was bound: the port is still ours to take.
    TcpListener::bind(("127.0.0.1", port)).expect("tollgate bound a port despite a bad config");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn with_listen(body: &str) -> String {
    format!("[server]\nlisten = [\"LISTEN\"]\n{body}")
}

#[test]
fn invalid_configs_exit_nonzero_naming_the_problem() {
    let outer = wasm("fixture_outer");
    let cases: Vec<(&str, String, &str)> = vec![
        ("missing origin", with_listen("[[route]]\npath_prefix = \"/\"\n"), "route[0].origin: missing"),
        (
            "malformed origin URL",
            with_listen("[[route]]\norigin = \"http//nope\"\n"),
            "route[0].origin",
        ),
        (
            "origin with an unsupported scheme",
            with_listen("[[route]]\norigin = \"ftp://example.com\"\n"),
            "scheme `ftp` is not supported",
        ),
        (
            "unknown component file",
            with_listen("[components.x]\nsource = \"/no/such/file.wasm\"\n[[route]]\norigin = \"http://127.0.0.1:1\"\nmiddleware = [\"x\"]\n"),
            "components.x.source: component file",
        ),
        (
            "middleware not defined",
            with_listen("[[route]]\norigin = \"http://127.0.0.1:1\"\nmiddleware = [\"ghost\"]\n"),
            "route[0].middleware[0]: unknown component `ghost`",
        ),
        (
            "duplicate route",
            with_listen("[[route]]\nname = \"a\"\norigin = \"http://127.0.0.1:1\"\npath_prefix = \"/x\"\n[[route]]\nname = \"b\"\norigin = \"http://127.0.0.1:1\"\npath_prefix = \"/x/\"\n"),
            "route[1]: duplicate route",
        ),
        (
            "unresolved variable reference",
            with_listen(&format!("[components.o]\nsource = \"{outer}\"\nvariables = {{ key = \"${{env:UNSET_SECRET}}\" }}\n[[route]]\norigin = \"http://127.0.0.1:1\"\nmiddleware = [\"o\"]\n")),
            "components.o.variables.key: references environment variable `UNSET_SECRET`",
        ),
        (
            "unknown key",
            with_listen("[[route]]\norigin = \"http://127.0.0.1:1\"\nretries = 3\n"),
            "unknown field `retries`",
        ),
        (
            "zero limit",
            with_listen("[limits]\nmax_body_bytes = 0\n[[route]]\norigin = \"http://127.0.0.1:1\"\n"),
            "limits.max_body_bytes: must be greater than 0 (got 0)",
        ),
        (
            "negative limit",
            with_listen("[limits]\nrequest_timeout_ms = -5\n[[route]]\norigin = \"http://127.0.0.1:1\"\n"),
            "limits.request_timeout_ms: must be greater than 0 (got -5)",
        ),
        (
            "bad listen address",
            "[server]\nlisten = [\"localhost\"]\n[[route]]\norigin = \"http://127.0.0.1:1\"\n".into(),
            "server.listen[0]",
        ),
        (
            "too many I/O workers",
            "[server]\nlisten = [\"LISTEN\"]\nworkers = 1000\n[[route]]\norigin = \"http://127.0.0.1:1\"\n".into(),
            "server.workers: must be between 0 and 256 (got 1000)",
        ),
        (
            "bad trusted proxy",
            "[server]\nlisten = [\"LISTEN\"]\ntrusted_proxies = [\"10.0.0.0/33\"]\n[[route]]\norigin = \"http://127.0.0.1:1\"\n".into(),
            "server.trusted_proxies[0]: `10.0.0.0/33` is not an IP address or CIDR block",
        ),
        (
            "origin timeout not inside the request deadline",
            with_listen("[limits]\norigin_response_timeout_ms = 20000\nrequest_timeout_ms = 1000\n[[route]]\norigin = \"http://127.0.0.1:1\"\n"),
            "limits.origin_response_timeout_ms: must be less than",
        ),
        (
            "unknown store backend",
            with_listen("[kv]\nbackend = \"etcd\"\n[[route]]\norigin = \"http://127.0.0.1:1\"\n"),
            "kv.backend: must be \"memory\" or \"redis\" (got \"etcd\")",
        ),
        (
            "redis backend without a URL",
            with_listen("[kv]\nbackend = \"redis\"\n[[route]]\norigin = \"http://127.0.0.1:1\"\n"),
            "kv.redis_url: is required when kv.backend is \"redis\"",
        ),
        (
            "redis URL with a foreign scheme",
            with_listen("[kv]\nbackend = \"redis\"\nredis_url = \"http://user:pw@127.0.0.1:6379\"\n[[route]]\norigin = \"http://127.0.0.1:1\"\n"),
            "kv.redis_url: must be redis://host[:port][/db] or rediss:// for TLS (scheme `http` is not supported)",
        ),
        (
            "no routes",
            with_listen(""),
            "at least one [[route]] is required",
        ),
        (
            "not TOML at all",
            "this is { not toml".into(),
            "TOML parse error",
        ),
    ];
    assert!(cases.len() >= 8);
    for (what, text, expected) in cases {
        let stderr = serve_fails(&text);
        assert!(
            stderr.contains(expected),
            "{what}: expected {expected:?} in:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
}

#[test]
fn a_file_that_is_not_a_middleware_is_refused() {
    let dir = tempdir::TempDir::new();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm not really").unwrap();
    let stderr = serve_fails(&with_listen(&format!(
        "[components.j]\nsource = \"{}\"\n[[route]]\norigin = \"http://127.0.0.1:1\"\nmiddleware = [\"j\"]\n",
        junk.display()
    )));
    assert!(
        stderr.contains("component `j` is not a WebAssembly component"),
        "{stderr}"
    );
}

/// Runs `tollgate check` on a config with `text`.
fn check(dir: &tempdir::TempDir, name: &str, text: &str) -> std::process::Output {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    Command::new(tollgate_bin())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn check_validates_without_serving() {
    let dir = tempdir::TempDir::new();
    let good = format!(
        "[components.o]\nsource = \"{}\"\n[[route]]\norigin = \"http://127.0.0.1:1\"\nmiddleware = [\"o\"]\n",
        wasm("fixture_outer")
    );
    let out = check(&dir, "good.toml", &good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 routes)"));

    // A check validates the file; it does not need the shared store up.
    let shared = "[kv]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:1/\"\n[[route]]\norigin = \"http://127.0.0.1:1\"\n";
    let out = check(&dir, "shared.toml", shared);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = check(&dir, "bad.toml", "[[route]]\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("route[0].origin: missing"));
}
