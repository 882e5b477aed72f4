//! `[kv]`'s shared-store settings: which Redis topology (`mode`), its
//! addresses, credentials and TLS, validated into a [`RedisConfig`].
//! Errors name the key and never echo a URL (it may hold a password).

use std::path::Path;

use super::{Env, KvBackendConfig, RawKv, Validator, expand};
use crate::kv_redis::connect::{RedisConfig, Topology};

impl Validator {
    pub(super) fn kv_backend(&mut self, raw: &RawKv, env: &Env, base: &Path) -> KvBackendConfig {
        let timeout = self.millis("kv.redis_timeout_ms", raw.redis_timeout_ms);
        match raw.backend.as_str() {
            "memory" => {
                for (key, set) in [
                    ("kv.redis_url", raw.redis_url.is_some()),
                    ("kv.redis_urls", !raw.redis_urls.is_empty()),
                    ("kv.mode", raw.mode.is_some()),
                    ("kv.master_name", raw.master_name.is_some()),
                    ("kv.redis_username", raw.redis_username.is_some()),
                    ("kv.redis_password", raw.redis_password.is_some()),
                    ("kv.redis_ca_file", raw.redis_ca_file.is_some()),
                ] {
                    if set {
                        self.err(key, "is set but kv.backend is \"memory\"");
                    }
                }
                KvBackendConfig::Memory
            }
            "redis" => {
                let before = self.errors.len();
                let topology = self.topology(raw, env);
                let config = RedisConfig {
                    topology,
                    timeout,
                    username: raw
                        .redis_username
                        .as_ref()
                        .and_then(|u| self.expanded("kv.redis_username", u, env)),
                    password: raw
                        .redis_password
                        .as_ref()
                        .and_then(|p| self.password(p, env)),
                    ca_file: raw.redis_ca_file.as_ref().map(|f| base.join(f)),
                };
                if let Some(ca) = &config.ca_file
                    && !ca.is_file()
                {
                    self.err(
                        "kv.redis_ca_file",
                        format_args!("`{}` does not exist", ca.display()),
                    );
                }
                if self.errors.len() == before {
                    KvBackendConfig::Redis(config)
                } else {
                    KvBackendConfig::Memory
                }
            }
            other => {
                self.err(
                    "kv.backend",
                    format_args!("must be \"memory\" or \"redis\" (got \"{other}\")"),
                );
                KvBackendConfig::Memory
            }
        }
    }

    fn topology(&mut self, raw: &RawKv, env: &Env) -> Topology {
        let mode = raw.mode.as_deref().unwrap_or("single");
        let urls: Vec<String> = raw
            .redis_urls
            .iter()
            .enumerate()
            .filter_map(|(i, u)| self.redis_url(&format!("kv.redis_urls[{i}]"), u, env))
            .collect();
        let single_only = |v: &mut Self| {
            if raw.redis_url.is_some() {
                v.err(
                    "kv.redis_url",
                    format_args!("is for mode = \"single\"; mode \"{mode}\" takes kv.redis_urls"),
                );
            }
        };
        match mode {
            "single" => {
                if !raw.redis_urls.is_empty() {
                    self.err("kv.redis_urls", "is for mode = \"cluster\" or \"sentinel\"");
                }
                if raw.master_name.is_some() {
                    self.err("kv.master_name", "is for mode = \"sentinel\"");
                }
                match &raw.redis_url {
                    None => {
                        self.err("kv.redis_url", "is required when kv.backend is \"redis\"");
                        Topology::Single(String::new())
                    }
                    Some(u) => {
                        Topology::Single(self.redis_url("kv.redis_url", u, env).unwrap_or_default())
                    }
                }
            }
            "cluster" => {
                single_only(self);
                if raw.redis_urls.is_empty() {
                    self.err(
                        "kv.redis_urls",
                        "needs at least one seed node when kv.mode is \"cluster\"",
                    );
                }
                if raw.master_name.is_some() {
                    self.err("kv.master_name", "is for mode = \"sentinel\"");
                }
                Topology::Cluster(urls)
            }
            "sentinel" => {
                single_only(self);
                if raw.redis_urls.is_empty() {
                    self.err(
                        "kv.redis_urls",
                        "needs the sentinels' addresses when kv.mode is \"sentinel\"",
                    );
                }
                let master = raw.master_name.clone().unwrap_or_else(|| {
                    self.err("kv.master_name", "is required when kv.mode is \"sentinel\"");
                    String::new()
                });
                Topology::Sentinel {
                    sentinels: urls,
                    master,
                }
            }
            other => {
                self.err(
                    "kv.mode",
                    format_args!(
                        "must be \"single\", \"cluster\" or \"sentinel\" (got \"{other}\")"
                    ),
                );
                Topology::Single(String::new())
            }
        }
    }

    fn expanded(&mut self, key: &str, value: &str, env: &Env) -> Option<String> {
        expand(value, env).map_err(|e| self.err(key, e)).ok()
    }

    fn redis_url(&mut self, key: &str, value: &str, env: &Env) -> Option<String> {
        let url = self.expanded(key, value, env)?;
        check_redis_url(&url).map_err(|e| self.err(key, e)).ok()?;
        Some(url)
    }

    /// The ACL password: only ever from the environment, so it is never
    /// written in the file.
    fn password(&mut self, value: &str, env: &Env) -> Option<String> {
        let whole_reference =
            value.starts_with("${env:") && value.ends_with('}') && value.matches("${").count() == 1;
        if !whole_reference {
            self.err(
                "kv.redis_password",
                "must be an ${env:NAME} reference: a password is never written in the file",
            );
            return None;
        }
        self.expanded("kv.redis_password", value, env)
    }
}

/// Checks a Redis URL. Errors name only the scheme: the URL may hold a
/// password.
pub fn check_redis_url(url: &str) -> Result<(), String> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some() => Ok(()),
        Ok(u) => Err(format!(
            "must be redis://host[:port][/db] or rediss:// for TLS (scheme `{}` is not supported)",
            u.scheme()
        )),
        Err(_) => Err("is not a valid URL".into()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigErrors, Env, KvBackendConfig, parse};
    use crate::kv_redis::connect::Topology;
    use std::path::Path;

    fn check(kv: &str) -> Result<Config, ConfigErrors> {
        let env = Env {
            builtins: &[],
            var: &|k| (k == "REDIS_PW").then(|| "s3cret".to_string()),
        };
        parse(
            &format!("[kv]\n{kv}\n[[route]]\norigin = \"http://a\"\n"),
            Path::new("/nonexistent"),
            &env,
        )
    }

    #[test]
    fn each_topology_is_read() {
        let c = check("backend = \"redis\"\nmode = \"cluster\"\nredis_urls = [\"redis://127.0.0.1:7000\", \"redis://127.0.0.1:7001\"]").unwrap();
        let KvBackendConfig::Redis(r) = &c.kv.backend else {
            panic!("not redis")
        };
        assert!(matches!(&r.topology, Topology::Cluster(s) if s.len() == 2));
        let c = check("backend = \"redis\"\nmode = \"sentinel\"\nredis_urls = [\"redis://127.0.0.1:26379\"]\nmaster_name = \"main\"\nredis_username = \"gw\"\nredis_password = \"${env:REDIS_PW}\"").unwrap();
        let KvBackendConfig::Redis(r) = &c.kv.backend else {
            panic!("not redis")
        };
        assert!(matches!(&r.topology, Topology::Sentinel { master, .. } if master == "main"));
        assert_eq!(r.password.as_deref(), Some("s3cret"));
        assert_eq!(r.username.as_deref(), Some("gw"));
        let c = check("backend = \"redis\"\nredis_url = \"rediss://cache.internal:6380\"").unwrap();
        assert!(matches!(c.kv.backend, KvBackendConfig::Redis(_)));
    }

    #[test]
    fn mistakes_name_their_keys_and_never_echo_secrets() {
        let cases = [
            (
                "backend = \"redis\"\nmode = \"ring\"\nredis_url = \"redis://a\"",
                "kv.mode: must be",
            ),
            (
                "backend = \"redis\"\nmode = \"cluster\"",
                "kv.redis_urls: needs at least one seed",
            ),
            (
                "backend = \"redis\"\nmode = \"cluster\"\nredis_url = \"redis://a\"\nredis_urls = [\"redis://b\"]",
                "kv.redis_url: is for mode = \"single\"",
            ),
            (
                "backend = \"redis\"\nmode = \"sentinel\"\nredis_urls = [\"redis://a\"]",
                "kv.master_name: is required",
            ),
            (
                "backend = \"redis\"\nredis_url = \"redis://a\"\nredis_urls = [\"redis://b\"]",
                "kv.redis_urls: is for mode",
            ),
            (
                "backend = \"redis\"\nmode = \"cluster\"\nredis_urls = [\"http://b\"]",
                "kv.redis_urls[0]: must be",
            ),
            (
                "backend = \"redis\"\nredis_url = \"redis://a\"\nredis_password = \"hunter2\"",
                "kv.redis_password: must be an ${env:NAME} reference",
            ),
            (
                "backend = \"redis\"\nredis_url = \"redis://a\"\nredis_password = \"${env:NOPE}\"",
                "kv.redis_password: references environment variable `NOPE`",
            ),
            (
                "backend = \"redis\"\nredis_url = \"rediss://a\"\nredis_ca_file = \"ca.pem\"",
                "kv.redis_ca_file",
            ),
            (
                "mode = \"cluster\"",
                "kv.mode: is set but kv.backend is \"memory\"",
            ),
        ];
        for (kv, expected) in cases {
            let err = check(kv).unwrap_err().to_string();
            assert!(err.contains(expected), "{kv}\n=> {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
