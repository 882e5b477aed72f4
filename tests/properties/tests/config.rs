//! Properties of the gateway config parser (`host/src/config/`) and the
//! Spin manifest reader (`host/src/manifest.rs`): any text up to 64 KiB,
//! and documents built from their own keys with values of every type, are
//! answered with a config or with errors (never a panic, never more than
//! the allocation bound); every number a limit accepts is the number
//! written, and every one refused is refused by a message naming its key.

use std::net::SocketAddr;
use std::path::Path;

use proptest::prelude::*;
use tollgate::config::{self, Env};
use tollgate::manifest;
use tollgate_properties::{
    Counting, DEFAULT_CASES, TOML_BYTES_PER_INPUT_BYTE, config as cases, untrusted, within_bound_of,
};

#[global_allocator]
static ALLOC: Counting = Counting;

const BUILTINS: &[&str] = &["headers", "auth", "rate-limit", "url-guard"];

fn env() -> Env<'static> {
    Env {
        builtins: BUILTINS,
        var: &|k| (k == "SECRET_TOKEN").then(|| "s3cr3t-value-from-env".to_owned()),
    }
}

fn listen() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A TOML value of any type, some of them plausible for the key.
fn value() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[ -~]{0,24}".prop_map(|s| format!("{s:?}")),
        prop_oneof![
            Just("\"builtin:auth\""),
            Just("\"builtin:nope\""),
            Just("\"http://127.0.0.1:9000\""),
            Just("\"redis://127.0.0.1:6379\""),
            Just("\"127.0.0.1:8080\""),
            Just("\"10.0.0.0/8\""),
            Just("\"/api\""),
            Just("\"/...\""),
            Just("\"${SECRET_TOKEN}\""),
            Just("\"${MISSING}\""),
            Just("\"memory\""),
            Just("\"redis\""),
            Just("\"cluster\""),
            Just("\"sentinel\""),
            Just("\"api\""),
            Just("\"least-request\""),
            Just("\"hash\""),
            Just("\"header:x-user\""),
            Just("\"${env:SECRET_TOKEN}\""),
            Just("{ budget_percent = 150 }"),
            Just("{ path = \"/healthz\" }"),
            Just("2"),
        ]
        .prop_map(str::to_owned),
    ];
    prop_oneof![
        4 => scalar.clone(),
        1 => proptest::collection::vec(scalar, 0..3).prop_map(|v| format!("[{}]", v.join(", "))),
    ]
}

/// `key = value` lines for a table, keys drawn from the table's own.
fn table(name: &'static str, keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::collection::btree_map(proptest::sample::select(keys), value(), 0..keys.len())
        .prop_map(move |kv| {
            let body: String = kv.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
            format!("{name}\n{body}")
        })
}

fn gateway_document() -> impl Strategy<Value = String> {
    (
        table(
            "[server]",
            &[
                "listen",
                "admin_listen",
                "trusted_proxies",
                "shutdown_timeout_ms",
                "cache_dir",
                "fast_path",
            ],
        ),
        table(
            "[limits]",
            &[
                "max_header_bytes",
                "max_body_bytes",
                "request_timeout_ms",
                "instance_memory_bytes",
                "max_instances",
                "instance_reuse",
                "origin_connect_timeout_ms",
                "origin_response_timeout_ms",
                "origin_idle_connections",
            ],
        ),
        table(
            "[kv]",
            &[
                "max_entries",
                "idle_expiry_secs",
                "backend",
                "redis_url",
                "redis_timeout_ms",
                "simulate_broken_cas",
                "mode",
                "redis_urls",
                "master_name",
                "redis_username",
                "redis_password",
                "redis_ca_file",
            ],
        ),
        table(
            "[components.gate]",
            &[
                "source",
                "key_value_stores",
                "allowed_outbound_hosts",
                "allow_name_lookup",
            ],
        ),
        table(
            "[components.gate.variables]",
            &["token", "policies", "api_keys", "Bad-Name"],
        ),
        proptest::collection::vec(
            table(
                "[[route]]",
                &[
                    "name",
                    "host",
                    "path_prefix",
                    "origin",
                    "upstream",
                    "retry_non_idempotent",
                    "middleware",
                ],
            ),
            0..3,
        ),
        table(
            "[upstreams.api]",
            &[
                "endpoints",
                "balance",
                "hash_on",
                "retry",
                "outlier",
                "health_check",
            ],
        ),
    )
        .prop_map(|(s, l, k, c, v, routes, u)| [s, l, k, c, v, routes.concat(), u].concat())
}

fn manifest_document() -> impl Strategy<Value = String> {
    (
        table("", &["spin_manifest_version"]),
        table(
            "[application]",
            &["name", "version", "description", "authors"],
        ),
        table("[variables]", &["origin_url", "api_keys", "Bad"]),
        proptest::collection::vec(table("[[trigger.http]]", &["route", "component"]), 0..3),
        table(
            "[component.origin]",
            &["source", "allowed_outbound_hosts", "key_value_stores"],
        ),
        table(
            "[component.origin.variables]",
            &["origin_url", "api_keys", "x"],
        ),
        table("[component.gate]", &["source"]),
    )
        .prop_map(|(top, app, vars, triggers, origin, ovars, gate)| {
            [top, app, vars, triggers.concat(), origin, ovars, gate].concat()
        })
}

const TOML_WORDS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\"",
    "'",
    "\n",
    " ",
    ".",
    ",",
    "{",
    "}",
    "route",
    "server",
    "limits",
    "kv",
    "components",
    "listen",
    "path_prefix",
    "origin",
    "middleware",
    "source",
    "variables",
    "1",
    "-1",
    "true",
    "\"builtin:auth\"",
    "\"/\"",
    "#",
    "\\u0000",
    "\"\"\"",
    "1e400",
    "trigger",
    "http",
    "spin_manifest_version = 2",
    "[[trigger.http]]",
    "route = \"/...\"",
    "component",
];

/// The limits that take a positive integer, with the field that holds it.
const LIMITS: &[&str] = &[
    "max_header_bytes",
    "max_body_bytes",
    "instance_reuse",
    "origin_idle_connections",
    "origin_connect_timeout_ms",
    "shutdown_timeout_ms",
];

fn stored(c: &config::Config, key: &str) -> u128 {
    let l = &c.limits;
    match key {
        "max_header_bytes" => l.max_header_bytes as u128,
        "max_body_bytes" => l.max_body_bytes as u128,
        "instance_reuse" => l.instance_reuse as u128,
        "origin_idle_connections" => l.origin_idle_connections as u128,
        "origin_connect_timeout_ms" => l.origin_connect_timeout.as_millis(),
        _ => c.shutdown_timeout.as_millis(),
    }
}

proptest! {
    #![proptest_config(cases(DEFAULT_CASES))]

    /// Any text: a config or errors, without panic, within the bound.
    #[test]
    fn any_text_is_answered_without_panic(raw in untrusted(TOML_WORDS)) {
        let base = Path::new("/nonexistent");
        within_bound_of(TOML_BYTES_PER_INPUT_BYTE, &raw, || drop(config::parse(&raw, base, &env())));
        within_bound_of(TOML_BYTES_PER_INPUT_BYTE, &raw, || drop(manifest::parse(&raw, base, &env(), listen(), None)));
    }

    /// Documents made of the parsers' own keys with values of every type:
    /// errors are never empty and never echo a secret from the
    /// environment.
    #[test]
    fn documents_of_real_keys_are_answered_with_named_errors(
        gw in gateway_document(),
        spin in manifest_document(),
    ) {
        let base = Path::new("/nonexistent");
        for result in [
            within_bound_of(TOML_BYTES_PER_INPUT_BYTE, &gw, || config::parse(&gw, base, &env()).map(drop)),
            within_bound_of(TOML_BYTES_PER_INPUT_BYTE, &spin, || manifest::parse(&spin, base, &env(), listen(), None).map(drop)),
        ] {
            if let Err(errors) = result {
                prop_assert!(!errors.0.is_empty());
                for e in &errors.0 {
                    prop_assert!(!e.trim().is_empty());
                    prop_assert!(!e.contains("s3cr3t-value-from-env"), "leaks a secret: {}", e);
                }
            }
        }
    }

    /// A positive limit is stored as written; anything else is refused
    /// with a message that names its key (`limits.<key>`).
    #[test]
    fn limits_are_stored_as_written_or_refused_by_name(
        key in proptest::sample::select(LIMITS),
        n in prop_oneof![any::<i64>(), -10i64..10, Just(i64::MAX), Just(i64::MIN)],
    ) {
        let table = if key == "shutdown_timeout_ms" { "server" } else { "limits" };
        let doc = format!("[{table}]\n{key} = {n}\n[[route]]\npath_prefix = \"/\"\norigin = \"http://127.0.0.1:9000\"\n");
        match config::parse(&doc, Path::new("."), &env()) {
            Ok(c) => {
                prop_assert!(n > 0, "accepted {} = {}", key, n);
                prop_assert_eq!(stored(&c, key), n as u128, "{}", doc);
            }
            Err(errors) => {
                let named = format!("{table}.{key}");
                prop_assert!(errors.0.iter().all(|e| e.starts_with(&named)), "{:?}", errors);
            }
        }
    }
}
