//! The url-guard component's configuration and its per-request decision:
//! which inputs hold URLs, and whether each one passes the SSRF policy.

use tollgate_sdk::config::Vars;

use crate::ssrf::{Policy, Resolve, check_resolved};

/// Every variable this component reads.
pub const VARIABLES: &[&str] = &[
    "query_params",
    "headers",
    "json_pointers",
    "allowed_schemes",
    "allowed_hosts",
    "max_body_bytes",
    "dns_check",
    "strict_ip_literals",
];

#[derive(Debug, Clone)]
pub struct Config {
    pub query_params: Vec<String>,
    pub headers: Vec<String>,
    pub json_pointers: Vec<String>,
    pub policy: Policy,
    pub max_body_bytes: usize,
    /// Also resolve host names and refuse any that resolve inside.
    pub dns_check: bool,
}

impl Config {
    /// Whether `raw` passes the policy (and, in DNS mode, its resolution).
    pub fn allows(&self, raw: &str, resolve: Resolve) -> bool {
        match self.policy.check(raw) {
            Ok(url) => !self.dns_check || check_resolved(&url, resolve).is_ok(),
            Err(_) => false,
        }
    }
}

impl Config {
    pub fn parse(v: &Vars) -> Result<Config, String> {
        let json_pointers = v.list("json_pointers", "");
        if let Some(bad) = json_pointers.iter().find(|p| !p.starts_with('/')) {
            return Err(format!(
                "variable `json_pointers`: `{bad}` is not a JSON pointer (must start with '/')"
            ));
        }
        let schemes: Vec<String> = v
            .list("allowed_schemes", "https")
            .into_iter()
            .map(|s| s.to_ascii_lowercase())
            .collect();
        if schemes.is_empty() {
            return Err("variable `allowed_schemes`: needs at least one scheme".into());
        }
        let allowed_hosts = v
            .list("allowed_hosts", "")
            .into_iter()
            .map(|h| {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix('*') {
                    Some(rest) => rest.to_owned(),
                    None => h.trim_end_matches('.').to_owned(),
                }
            })
            .collect();
        let config = Config {
            query_params: v.list("query_params", ""),
            headers: v
                .list("headers", "")
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            json_pointers,
            policy: Policy {
                schemes,
                allowed_hosts,
                strict_ip_literals: v.boolean("strict_ip_literals", true)?,
            },
            max_body_bytes: v.number("max_body_bytes", 1024 * 1024)?,
            dns_check: v.boolean("dns_check", false)?,
        };
        if config.query_params.is_empty()
            && config.headers.is_empty()
            && config.json_pointers.is_empty()
        {
            return Err("variables `query_params`, `headers`, `json_pointers`: at least one must name a place to check".into());
        }
        Ok(config)
    }
}

/// The first input whose URL is refused, named for the client.
pub fn check_query(config: &Config, query: Option<&str>, resolve: Resolve) -> Option<String> {
    let query = query?;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if config.query_params.iter().any(|p| *p == name) && !config.allows(&value, resolve) {
            return Some(format!("query parameter `{name}`"));
        }
    }
    None
}

/// The first configured header whose URL is refused.
pub fn check_headers<'a>(
    config: &Config,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    resolve: Resolve,
) -> Option<String> {
    for (name, value) in headers {
        if config.headers.iter().any(|h| h == name) {
            let ok = std::str::from_utf8(value)
                .ok()
                .is_some_and(|v| config.allows(v, resolve));
            if !ok {
                return Some(format!("header `{name}`"));
            }
        }
    }
    None
}

/// Result of checking a JSON body.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyVerdict {
    Pass,
    Refused(String),
    Malformed,
}

/// Checks the configured JSON pointers of `body`. Strings are checked;
/// arrays of strings have each element checked.
pub fn check_json(config: &Config, body: &[u8], resolve: Resolve) -> BodyVerdict {
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return BodyVerdict::Malformed,
    };
    for pointer in &config.json_pointers {
        let refused = match value.pointer(pointer) {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::String(s)) => !config.allows(s, resolve),
            Some(serde_json::Value::Array(items)) => items.iter().any(|i| match i {
                serde_json::Value::String(s) => !config.allows(s, resolve),
                _ => true,
            }),
            // A URL field holding a number or object is not a URL.
            Some(_) => true,
        };
        if refused {
            return BodyVerdict::Refused(format!("JSON field `{pointer}`"));
        }
    }
    BodyVerdict::Pass
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_DNS: Resolve = &|_, _| None;

    fn config() -> Config {
        Config::parse(&Vars::from_pairs([
            ("query_params", "url, callback"),
            ("headers", "X-Webhook-Url"),
            ("json_pointers", "/hook/url, /images"),
        ]))
        .unwrap()
    }

    #[test]
    fn query_parameters_are_checked_after_decoding() {
        let c = config();
        assert_eq!(
            check_query(&c, Some("url=https%3A%2F%2Fexample.com%2F&x=1"), NO_DNS),
            None
        );
        assert_eq!(
            check_query(
                &c,
                Some("x=1&callback=https%3A%2F%2F169.254.169.254%2F"),
                NO_DNS
            ),
            Some("query parameter `callback`".into())
        );
        assert_eq!(
            check_query(&c, Some("other=http://127.0.0.1"), NO_DNS),
            None
        );
    }

    #[test]
    fn headers_are_checked() {
        let c = config();
        let h = [("x-webhook-url", &b"https://[::1]/"[..])];
        assert_eq!(
            check_headers(&c, h.into_iter(), NO_DNS),
            Some("header `x-webhook-url`".into())
        );
        let h = [("x-webhook-url", &b"https://example.com/"[..])];
        assert_eq!(check_headers(&c, h.into_iter(), NO_DNS), None);
    }

    #[test]
    fn json_pointers_are_checked() {
        let c = config();
        assert_eq!(
            check_json(&c, br#"{"hook":{"url":"https://example.com/"}}"#, NO_DNS),
            BodyVerdict::Pass
        );
        assert_eq!(
            check_json(&c, br#"{"hook":{"url":"https://0x7f.1/"}}"#, NO_DNS),
            BodyVerdict::Refused("JSON field `/hook/url`".into())
        );
        assert_eq!(
            check_json(
                &c,
                br#"{"images":["https://example.com/a","http://10.0.0.1/"]}"#,
                NO_DNS
            ),
            BodyVerdict::Refused("JSON field `/images`".into())
        );
        assert_eq!(check_json(&c, b"{not json", NO_DNS), BodyVerdict::Malformed);
    }

    #[test]
    fn config_needs_a_place_to_check() {
        let e = Config::parse(&Vars::default()).unwrap_err();
        assert!(e.contains("query_params"), "{e}");
        let e = Config::parse(&Vars::from_pairs([("json_pointers", "hook")])).unwrap_err();
        assert!(e.contains("json_pointers"), "{e}");
    }
}
