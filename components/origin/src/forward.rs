//! The origin forwarder's decisions, free of WASI: the route-to-origin
//! table, which requests may be retried, and the backoff schedule.

use tollgate_sdk::config::Vars;
use tollgate_sdk::upstream::Peers;

/// Every variable this component reads.
pub const VARIABLES: &[&str] = &[
    "origin_url",
    "origin_routes",
    "connect_timeout_ms",
    "response_timeout_ms",
    "max_attempts",
    "backoff_base_ms",
    "backoff_cap_ms",
    "max_body_bytes",
    "trusted_proxies",
];

#[derive(Debug, Clone)]
pub struct Config {
    /// (path prefix, origin base URL), longest prefix first.
    routes: Vec<(String, String)>,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    pub max_body_bytes: usize,
    /// Proxies whose forwarding headers are believed (see `forwarded`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

fn origin(name: &str, url: &str) -> Result<String, String> {
    let u = url.trim().trim_end_matches('/');
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| format!("variable `{name}`: `{url}` must start with http:// or https://"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "variable `{name}`: `{url}` must be scheme://host[:port] only"
        ));
    }
    Ok(u.to_owned())
}

impl Config {
    pub fn parse(v: &Vars) -> Result<Config, String> {
        let mut routes = Vec::new();
        for entry in v.list("origin_routes", "") {
            let (prefix, url) = entry
                .split_once('=')
                .ok_or_else(|| format!("variable `origin_routes`: `{entry}` is not PREFIX=URL"))?;
            let prefix = prefix.trim();
            if !prefix.starts_with('/') {
                return Err(format!(
                    "variable `origin_routes`: prefix `{prefix}` must start with '/'"
                ));
            }
            routes.push((
                prefix.trim_end_matches('/').to_owned(),
                origin("origin_routes", url)?,
            ));
        }
        if let Some(url) = v.get("origin_url") {
            routes.push((String::new(), origin("origin_url", url)?));
        }
        if routes.is_empty() {
            return Err(
                "variables `origin_url`, `origin_routes`: at least one origin is required".into(),
            );
        }
        routes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let config = Config {
            routes,
            connect_timeout_ms: v.number("connect_timeout_ms", 2_000)?,
            response_timeout_ms: v.number("response_timeout_ms", 8_000)?,
            max_attempts: v.number("max_attempts", 3)?,
            backoff_base_ms: v.number("backoff_base_ms", 50)?,
            backoff_cap_ms: v.number("backoff_cap_ms", 1_000)?,
            max_body_bytes: v.number("max_body_bytes", 1024 * 1024)?,
            trusted_proxies: crate::forwarded::parse_trusted(&v.list("trusted_proxies", ""))?,
        };
        if config.max_attempts == 0
            || config.connect_timeout_ms == 0
            || config.response_timeout_ms == 0
        {
            return Err("variables `max_attempts`, `connect_timeout_ms`, `response_timeout_ms`: must be at least 1".into());
        }
        Ok(config)
    }

    /// The same decisions as the host's upstream phase sees them
    /// (`tollgate:gate/upstream`): on Tollgate's fast path the host forwards
    /// by these, on Spin [`crate`]'s handler does.
    pub fn peers(&self) -> Peers {
        Peers {
            routes: self.routes.clone(),
            response_timeout_ms: self.response_timeout_ms,
            max_attempts: self.max_attempts,
            backoff_base_ms: self.backoff_base_ms,
            backoff_cap_ms: self.backoff_cap_ms,
            max_body_bytes: self.max_body_bytes,
            trusted_proxies: self.trusted_proxies.iter().map(|n| n.to_string()).collect(),
        }
    }

    /// The full URL a request for `path_and_query` goes to, if any route matches.
    pub fn target(&self, path: &str, path_and_query: &str) -> Option<String> {
        self.routes
            .iter()
            .find(|(prefix, _)| {
                prefix.is_empty()
                    || path == prefix
                    || (path.starts_with(prefix.as_str())
                        && path.as_bytes().get(prefix.len()) == Some(&b'/'))
            })
            .map(|(_, base)| format!("{base}{path_and_query}"))
    }

    /// Delay before attempt `n` (1-based retries): base·2ⁿ⁻¹, capped.
    pub fn backoff_ms(&self, retry: u32) -> u64 {
        let factor = 1u64
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u64::MAX);
        self.backoff_base_ms
            .saturating_mul(factor)
            .min(self.backoff_cap_ms)
    }
}

/// Methods that may be repeated safely (RFC 9110 §9.2.2).
pub fn idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    )
}

/// Answers worth another attempt: the origin was unavailable or timed out.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 502 | 503 | 504)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config::parse(&Vars::from_pairs(pairs.iter().copied())).unwrap()
    }

    #[test]
    fn longest_prefix_picks_the_origin() {
        let c = config(&[
            ("origin_url", "http://default:80/"),
            (
                "origin_routes",
                "/api=http://api:9000, /api/v2=https://v2.example",
            ),
        ]);
        assert_eq!(
            c.target("/api/v2/x", "/api/v2/x?q=1").unwrap(),
            "https://v2.example/api/v2/x?q=1"
        );
        assert_eq!(
            c.target("/api/x", "/api/x").unwrap(),
            "http://api:9000/api/x"
        );
        assert_eq!(
            c.target("/apix", "/apix").unwrap(),
            "http://default:80/apix"
        );
        let only = config(&[("origin_routes", "/api=http://api:9000")]);
        assert_eq!(only.target("/other", "/other"), None);
    }

    #[test]
    fn peers_carry_the_table_and_the_retry_settings() {
        let c = config(&[
            ("origin_url", "http://default:80/"),
            ("origin_routes", "/api=http://api:9000"),
            ("max_attempts", "5"),
            ("backoff_base_ms", "10"),
            ("backoff_cap_ms", "40"),
            ("response_timeout_ms", "700"),
            ("max_body_bytes", "99"),
            ("trusted_proxies", "10.0.0.0/8, 192.0.2.1"),
        ]);
        let p = c.peers();
        assert_eq!(
            p.routes,
            vec![
                ("/api".to_string(), "http://api:9000".to_string()),
                (String::new(), "http://default:80".to_string()),
            ]
        );
        assert_eq!(
            (
                p.max_attempts,
                p.backoff_base_ms,
                p.backoff_cap_ms,
                p.response_timeout_ms,
                p.max_body_bytes
            ),
            (5, 10, 40, 700, 99)
        );
        assert_eq!(p.trusted_proxies, vec!["10.0.0.0/8", "192.0.2.1/32"]);
    }

    #[test]
    fn bad_origins_name_the_variable() {
        for (k, v) in [
            ("origin_url", "ftp://x"),
            ("origin_url", "http://x/path"),
            ("origin_routes", "api=http://x"),
            ("origin_routes", "/a"),
        ] {
            let e = Config::parse(&Vars::from_pairs([(k, v)])).unwrap_err();
            assert!(e.contains(&format!("`{k}`")), "{k}={v}: {e}");
        }
        assert!(Config::parse(&Vars::default()).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = config(&[
            ("origin_url", "http://o"),
            ("backoff_base_ms", "50"),
            ("backoff_cap_ms", "300"),
        ]);
        let delays: Vec<u64> = (1..=5).map(|n| c.backoff_ms(n)).collect();
        assert_eq!(delays, vec![50, 100, 200, 300, 300]);
        assert_eq!(c.backoff_ms(200), 300);
    }

    #[test]
    fn only_idempotent_requests_retry_on_unavailable() {
        assert!(
            idempotent("GET") && idempotent("PUT") && !idempotent("POST") && !idempotent("PATCH")
        );
        assert!(retryable_status(503) && !retryable_status(500) && !retryable_status(429));
    }
}
