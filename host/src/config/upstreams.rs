//! `[upstreams.NAME]`: the schema of a named upstream (endpoints, balance,
//! retry, outlier ejection, health checks) and its validation into an
//! [`UpstreamConfig`]. Every error names its key, as in the rest of the
//! configuration.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use super::{Validator, parse_origin, valid_name};
use crate::egress::UpstreamConfig;
use crate::egress::balance::{Balance, HashOn};
use crate::egress::endpoint::OutlierConfig;
use crate::egress::health_check::HealthCheckConfig;
use crate::egress::retry::RetryConfig;

/// The highest weight an endpoint may have (bounds the round-robin
/// schedule and the hash ring).
const MAX_WEIGHT: i64 = 1000;
/// The most attempts a request may make, the first included.
const MAX_ATTEMPTS: i64 = 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    #[serde(default)]
    endpoints: Vec<RawEndpoint>,
    #[serde(default = "default_balance")]
    balance: String,
    hash_on: Option<String>,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    outlier: RawOutlier,
    health_check: Option<RawHealthCheck>,
}

fn default_balance() -> String {
    "round-robin".into()
}

/// `"http://host:port"` or `{ url = "...", weight = 2 }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawEndpoint {
    Url(String),
    Weighted { url: String, weight: i64 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetry {
    attempts: i64,
    on_status: Vec<i64>,
    backoff_base_ms: i64,
    backoff_max_ms: i64,
    budget_percent: i64,
    budget_window_ms: i64,
    budget_min_retries: i64,
}

impl Default for RawRetry {
    fn default() -> Self {
        let d = RetryConfig::default();
        Self {
            attempts: d.attempts.into(),
            on_status: d.on_status.iter().map(|&s| s.into()).collect(),
            backoff_base_ms: d.backoff_base.as_millis() as i64,
            backoff_max_ms: d.backoff_max.as_millis() as i64,
            budget_percent: (d.budget_ratio * 100.0).round() as i64,
            budget_window_ms: d.budget_window.as_millis() as i64,
            budget_min_retries: d.budget_min_retries.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawOutlier {
    enabled: bool,
    consecutive_failures: i64,
    base_ejection_ms: i64,
    max_ejection_ms: i64,
    max_ejected_percent: i64,
}

impl Default for RawOutlier {
    fn default() -> Self {
        let d = OutlierConfig::default();
        Self {
            enabled: true,
            consecutive_failures: d.consecutive_failures.into(),
            base_ejection_ms: d.base_ejection.as_millis() as i64,
            max_ejection_ms: d.max_ejection.as_millis() as i64,
            max_ejected_percent: d.max_ejected_percent.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    path: String,
    #[serde(default = "default_interval_ms")]
    interval_ms: i64,
    #[serde(default = "default_check_timeout_ms")]
    timeout_ms: i64,
    #[serde(default = "default_healthy")]
    healthy_threshold: i64,
    #[serde(default = "default_unhealthy")]
    unhealthy_threshold: i64,
}

fn default_interval_ms() -> i64 {
    5000
}
fn default_check_timeout_ms() -> i64 {
    1000
}
fn default_healthy() -> i64 {
    2
}
fn default_unhealthy() -> i64 {
    3
}

impl Validator {
    pub(super) fn upstreams(
        &mut self,
        raw: &BTreeMap<String, RawUpstream>,
    ) -> BTreeMap<String, std::sync::Arc<UpstreamConfig>> {
        raw.iter()
            .filter_map(|(name, u)| {
                let before = self.errors.len();
                let config = self.upstream(name, u);
                (self.errors.len() == before).then(|| (name.clone(), config.into()))
            })
            .collect()
    }

    fn upstream(&mut self, name: &str, raw: &RawUpstream) -> UpstreamConfig {
        let key = format!("upstreams.{name}");
        if !valid_name(name) {
            self.err(
                &key,
                "upstream names use lower-case letters, digits, '-' and '_'",
            );
        }
        if raw.endpoints.is_empty() {
            self.err(
                format_args!("{key}.endpoints"),
                "needs at least one endpoint URL",
            );
        }
        let mut seen = HashSet::new();
        let mut endpoints = Vec::new();
        for (i, e) in raw.endpoints.iter().enumerate() {
            let ekey = format!("{key}.endpoints[{i}]");
            let (url, weight) = match e {
                RawEndpoint::Url(u) => (u, 1),
                RawEndpoint::Weighted { url, weight } => (url, *weight),
            };
            if !(1..=MAX_WEIGHT).contains(&weight) {
                self.err(
                    format_args!("{ekey}.weight"),
                    format_args!("must be between 1 and {MAX_WEIGHT} (got {weight})"),
                );
            }
            match parse_origin(url) {
                Ok(o) if !seen.insert(o.to_string()) => {
                    self.err(&ekey, format_args!("`{url}` is listed twice"));
                }
                Ok(o) => endpoints.push((o, weight.clamp(1, MAX_WEIGHT) as u32)),
                Err(e) => self.err(&ekey, e),
            }
        }
        let balance = match (raw.balance.as_str(), raw.hash_on.as_deref()) {
            ("round-robin", None) => Balance::RoundRobin,
            ("least-request", None) => Balance::LeastRequest,
            ("hash", on) => Balance::Hash(self.hash_on(&key, on.unwrap_or("client-ip"))),
            ("round-robin" | "least-request", Some(_)) => {
                self.err(
                    format_args!("{key}.hash_on"),
                    "applies only with balance = \"hash\"",
                );
                Balance::RoundRobin
            }
            (other, _) => {
                self.err(
                    format_args!("{key}.balance"),
                    format_args!(
                        "must be \"round-robin\", \"least-request\" or \"hash\" (got \"{other}\")"
                    ),
                );
                Balance::RoundRobin
            }
        };
        UpstreamConfig {
            name: name.to_owned(),
            endpoints,
            balance,
            retry: self.retry(&format!("{key}.retry"), &raw.retry),
            outlier: self.outlier(&format!("{key}.outlier"), &raw.outlier),
            health_check: raw
                .health_check
                .as_ref()
                .map(|h| self.health_check(&format!("{key}.health_check"), h)),
        }
    }

    fn hash_on(&mut self, key: &str, value: &str) -> HashOn {
        if value == "client-ip" {
            return HashOn::ClientIp;
        }
        if let Some(h) = value.strip_prefix("header:")
            && let Ok(name) = http::header::HeaderName::from_bytes(h.as_bytes())
        {
            return HashOn::Header(name);
        }
        self.err(
            format_args!("{key}.hash_on"),
            format_args!("must be \"client-ip\" or \"header:NAME\" (got \"{value}\")"),
        );
        HashOn::ClientIp
    }

    fn retry(&mut self, key: &str, raw: &RawRetry) -> RetryConfig {
        let attempts = self.within(&format!("{key}.attempts"), raw.attempts, 1, MAX_ATTEMPTS);
        for (i, &s) in raw.on_status.iter().enumerate() {
            if !(400..=599).contains(&s) {
                self.err(
                    format_args!("{key}.on_status[{i}]"),
                    format_args!("must be an error status, 400 to 599 (got {s})"),
                );
            }
        }
        let backoff_base = self.millis(&format!("{key}.backoff_base_ms"), raw.backoff_base_ms);
        let backoff_max = self.millis(&format!("{key}.backoff_max_ms"), raw.backoff_max_ms);
        if backoff_max < backoff_base {
            self.err(
                format_args!("{key}.backoff_max_ms"),
                "must not be less than backoff_base_ms",
            );
        }
        let percent = self.within(&format!("{key}.budget_percent"), raw.budget_percent, 0, 100);
        RetryConfig {
            attempts,
            on_status: raw
                .on_status
                .iter()
                .map(|&s| s.clamp(400, 599) as u16)
                .collect(),
            backoff_base,
            backoff_max,
            budget_ratio: percent as f64 / 100.0,
            budget_window: self.millis(&format!("{key}.budget_window_ms"), raw.budget_window_ms),
            budget_min_retries: self.within(
                &format!("{key}.budget_min_retries"),
                raw.budget_min_retries,
                0,
                u32::MAX.into(),
            ),
            jitter: true,
        }
    }

    fn outlier(&mut self, key: &str, raw: &RawOutlier) -> Option<OutlierConfig> {
        let config = OutlierConfig {
            consecutive_failures: self.within(
                &format!("{key}.consecutive_failures"),
                raw.consecutive_failures,
                1,
                u32::MAX.into(),
            ),
            base_ejection: self.millis(&format!("{key}.base_ejection_ms"), raw.base_ejection_ms),
            max_ejection: self.millis(&format!("{key}.max_ejection_ms"), raw.max_ejection_ms),
            max_ejected_percent: self.within(
                &format!("{key}.max_ejected_percent"),
                raw.max_ejected_percent,
                0,
                100,
            ),
        };
        if config.max_ejection < config.base_ejection {
            self.err(
                format_args!("{key}.max_ejection_ms"),
                "must not be less than base_ejection_ms",
            );
        }
        raw.enabled.then_some(config)
    }

    fn health_check(&mut self, key: &str, raw: &RawHealthCheck) -> HealthCheckConfig {
        let path = match raw.path.parse::<http::uri::PathAndQuery>() {
            Ok(p) if raw.path.starts_with('/') => p,
            _ => {
                self.err(
                    format_args!("{key}.path"),
                    format_args!("`{}` is not a path starting with '/'", raw.path),
                );
                http::uri::PathAndQuery::from_static("/")
            }
        };
        let interval = self.millis(&format!("{key}.interval_ms"), raw.interval_ms);
        let timeout = self.millis(&format!("{key}.timeout_ms"), raw.timeout_ms);
        if timeout > interval {
            self.err(
                format_args!("{key}.timeout_ms"),
                "must not be more than interval_ms",
            );
        }
        HealthCheckConfig {
            path,
            interval,
            timeout,
            healthy_threshold: self.within(
                &format!("{key}.healthy_threshold"),
                raw.healthy_threshold,
                1,
                1000,
            ),
            unhealthy_threshold: self.within(
                &format!("{key}.unhealthy_threshold"),
                raw.unhealthy_threshold,
                1,
                1000,
            ),
        }
    }

    /// `value`, checked to lie in `lo..=hi`.
    fn within(&mut self, key: &str, value: i64, lo: i64, hi: i64) -> u32 {
        if !(lo..=hi).contains(&value) {
            self.err(
                key,
                format_args!("must be between {lo} and {hi} (got {value})"),
            );
        }
        value.clamp(lo, hi).min(u32::MAX.into()) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Env, parse};
    use std::path::Path;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn check(text: &str) -> Result<crate::config::Config, String> {
        let env = Env {
            builtins: &[],
            var: &|_| None,
        };
        parse(text, Path::new("/nonexistent"), &env).map_err(|e| e.to_string())
    }

    const ROUTE: &str = "[[route]]\nupstream = \"api\"\n";

    #[test]
    fn an_upstream_with_defaults_and_weights() {
        let c = check(&format!(
            "[upstreams.api]\nendpoints = [\"http://127.0.0.1:9001\", {{ url = \"http://127.0.0.1:9002\", weight = 2 }}]\n{ROUTE}"
        ))
        .unwrap();
        let u = c.routes[0].upstream.as_ref().unwrap();
        assert_eq!(u.name, "api");
        assert_eq!(u.endpoints[1].1, 2);
        assert_eq!(u.balance, Balance::RoundRobin);
        assert_eq!(u.retry, RetryConfig::default());
        assert_eq!(u.outlier, Some(OutlierConfig::default()));
        assert_eq!(u.health_check, None);
    }

    #[test]
    fn every_section_is_read() {
        let c = check(&format!(
            "[upstreams.api]\nendpoints = [\"http://127.0.0.1:9001\"]\nbalance = \"hash\"\nhash_on = \"header:X-User\"\n\
             [upstreams.api.retry]\nattempts = 2\non_status = [503]\nbackoff_base_ms = 5\nbackoff_max_ms = 50\nbudget_percent = 50\n\
             [upstreams.api.outlier]\nenabled = false\n\
             [upstreams.api.health_check]\npath = \"/healthz?deep=1\"\ninterval_ms = 200\ntimeout_ms = 100\n{ROUTE}retry_non_idempotent = true\n"
        ))
        .unwrap();
        let r = &c.routes[0];
        assert!(r.retry_non_idempotent);
        let u = r.upstream.as_ref().unwrap();
        assert_eq!(
            u.balance,
            Balance::Hash(HashOn::Header(http::header::HeaderName::from_static(
                "x-user"
            )))
        );
        assert_eq!(u.retry.attempts, 2);
        assert_eq!(u.retry.on_status, vec![503]);
        assert_eq!(u.retry.backoff_max, ms(50));
        assert_eq!(u.retry.budget_ratio, 0.5);
        assert_eq!(u.outlier, None);
        let h = u.health_check.as_ref().unwrap();
        assert_eq!(h.path.as_str(), "/healthz?deep=1");
        assert_eq!((h.interval, h.timeout), (ms(200), ms(100)));
    }

    #[test]
    fn bad_upstreams_fail_naming_the_key() {
        let cases = [
            (
                "endpoints = []",
                "upstreams.api.endpoints: needs at least one",
            ),
            (
                "endpoints = [\"ftp://x\"]",
                "upstreams.api.endpoints[0]: `ftp://x`",
            ),
            (
                "endpoints = [{ url = \"http://a\", weight = 0 }]",
                "upstreams.api.endpoints[0].weight: must be between 1 and 1000",
            ),
            (
                "endpoints = [\"http://a\", \"http://a:80\"]",
                "upstreams.api.endpoints[1]: `http://a:80` is listed twice",
            ),
            (
                "endpoints = [\"http://a\"]\nbalance = \"random\"",
                "upstreams.api.balance: must be",
            ),
            (
                "endpoints = [\"http://a\"]\nhash_on = \"client-ip\"",
                "upstreams.api.hash_on: applies only",
            ),
            (
                "endpoints = [\"http://a\"]\nbalance = \"hash\"\nhash_on = \"cookie:x\"",
                "upstreams.api.hash_on: must be",
            ),
            (
                "endpoints = [\"http://a\"]\nretry = { budget_percent = 150 }",
                "upstreams.api.retry.budget_percent: must be between 0 and 100 (got 150)",
            ),
            (
                "endpoints = [\"http://a\"]\nretry = { attempts = 0 }",
                "upstreams.api.retry.attempts: must be between 1 and 10",
            ),
            (
                "endpoints = [\"http://a\"]\nretry = { on_status = [200] }",
                "upstreams.api.retry.on_status[0]",
            ),
            (
                "endpoints = [\"http://a\"]\noutlier = { max_ejected_percent = 101 }",
                "upstreams.api.outlier.max_ejected_percent",
            ),
            (
                "endpoints = [\"http://a\"]\nhealth_check = { path = \"healthz\" }",
                "upstreams.api.health_check.path",
            ),
            (
                "endpoints = [\"http://a\"]\nhealth_check = { path = \"/h\", interval_ms = 100, timeout_ms = 500 }",
                "upstreams.api.health_check.timeout_ms",
            ),
        ];
        for (body, expected) in cases {
            let err = check(&format!("[upstreams.api]\n{body}\n{ROUTE}")).unwrap_err();
            assert!(err.contains(expected), "{body}\n=> {err}");
        }
    }

    #[test]
    fn routes_name_exactly_one_known_target() {
        let up = "[upstreams.api]\nendpoints = [\"http://a\"]\n";
        let both = check(&format!(
            "{up}[[route]]\norigin = \"http://b\"\nupstream = \"api\"\n"
        ))
        .unwrap_err();
        assert!(
            both.contains("route[0]: set either origin or upstream"),
            "{both}"
        );
        let unknown = check("[[route]]\nupstream = \"nope\"\n").unwrap_err();
        assert!(
            unknown.contains("route[0].upstream: unknown upstream `nope`"),
            "{unknown}"
        );
        let single =
            check("[[route]]\norigin = \"http://b\"\nretry_non_idempotent = true\n").unwrap_err();
        assert!(single.contains("route[0].retry_non_idempotent"), "{single}");
        // A single origin is an upstream of one endpoint that never retries.
        let c = check("[[route]]\nname = \"web\"\norigin = \"http://b:81\"\n").unwrap();
        let u = c.routes[0].upstream.as_ref().unwrap();
        assert_eq!(u.name, "route:web");
        assert_eq!(u.retry.attempts, 1);
        assert_eq!(u.outlier, None);
    }
}
