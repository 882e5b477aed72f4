//! Spin's runtime configuration file (`spin up --runtime-config-file`), the
//! part a gateway runs: where the `default` key-value store lives. With
//! `type = "redis"`, `tollgate up` keeps component state in that Redis,
//! the same keys and encodings Spin's Redis store uses, so Tollgate and
//! Spin instances of one app can share limits (with the increment-only
//! sliding window, as on Spin). Anything else in the file is refused at
//! startup, never ignored.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Config, ConfigErrors, DEFAULT_REDIS_TIMEOUT_MS, KvBackendConfig};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimeConfig {
    #[serde(default)]
    key_value_store: BTreeMap<String, Store>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Store {
    #[serde(rename = "type")]
    kind: String,
    url: Option<String>,
}

/// Reads the runtime config at `path` and applies it to `config`.
pub fn apply(path: &Path, config: &mut Config) -> Result<(), ConfigErrors> {
    let one = |e: String| ConfigErrors(vec![e]);
    let text = std::fs::read_to_string(path)
        .map_err(|e| one(format!("cannot read {}: {e}", path.display())))?;
    // The message and line only: the file's own text (a Redis URL with its
    // password, say) is never echoed.
    let rc: RuntimeConfig = toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start].lines().count().max(1));
        one(match line {
            Some(n) => format!("{}: line {n}: {}", path.display(), e.message()),
            None => format!("{}: {}", path.display(), e.message()),
        })
    })?;
    let mut errors = Vec::new();
    for (label, store) in &rc.key_value_store {
        let key = format!("key_value_store.{label}");
        if label != "default" {
            errors.push(format!("{key}: only the `default` store can be configured"));
            continue;
        }
        match (store.kind.as_str(), &store.url) {
            ("redis", Some(url)) => match crate::config::check_redis_url(url) {
                Ok(()) => {
                    config.kv.backend = KvBackendConfig::Redis(crate::config::RedisConfig::single(
                        url.clone(),
                        Duration::from_millis(DEFAULT_REDIS_TIMEOUT_MS as u64),
                    ))
                }
                Err(e) => errors.push(format!("{key}.url: {e}")),
            },
            ("redis", None) => errors.push(format!("{key}.url: missing")),
            (other, _) => errors.push(format!(
                "{key}.type: `{other}` is not supported (only \"redis\"; without this table the embedded store is used)"
            )),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}
