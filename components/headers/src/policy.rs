//! The headers component's decisions, free of WASI: its configuration,
//! which security headers to set, which origin headers to remove, and the
//! CORS answer for a given `Origin` (cookie hardening is in `cookies`).

use tollgate_sdk::config::Vars;

/// Every variable this component reads.
pub const VARIABLES: &[&str] = &[
    "hsts",
    "csp",
    "frame_options",
    "content_type_options",
    "referrer_policy",
    "permissions_policy",
    "remove_headers",
    "cors_allowed_origins",
    "cors_allow_credentials",
    "cors_allowed_methods",
    "cors_allowed_headers",
    "cors_expose_headers",
    "cors_max_age",
    "cookie_flags",
    "cookie_exempt",
];

/// Parsed configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// (header, value) pairs set on every response; empty values disable one.
    pub security: Vec<(&'static str, String)>,
    pub remove: Vec<String>,
    pub cors: Option<Cors>,
    /// `None`: origin cookies pass as they are.
    pub cookies: Option<crate::cookies::CookiePolicy>,
}

#[derive(Debug, Clone)]
pub struct Cors {
    exact: Vec<String>,
    /// Suffixes from `*.example.com` patterns, stored as `.example.com`.
    wildcard: Vec<String>,
    pub credentials: bool,
    pub methods: String,
    pub headers: String,
    pub expose: String,
    pub max_age: u32,
}

impl Config {
    pub fn parse(v: &Vars) -> Result<Config, String> {
        let defaults: [(&'static str, &str, &str); 6] = [
            (
                "strict-transport-security",
                "hsts",
                "max-age=63072000; includeSubDomains",
            ),
            (
                "content-security-policy",
                "csp",
                "default-src 'none'; frame-ancestors 'none'",
            ),
            ("x-frame-options", "frame_options", "DENY"),
            ("x-content-type-options", "content_type_options", "nosniff"),
            ("referrer-policy", "referrer_policy", "no-referrer"),
            (
                "permissions-policy",
                "permissions_policy",
                "geolocation=(), camera=(), microphone=()",
            ),
        ];
        let mut security = Vec::new();
        for (header, var, default) in defaults {
            let value = v.get_or(var, default).trim().to_owned();
            if value.bytes().any(|b| b < 0x20 || b == 0x7f) {
                return Err(format!("variable `{var}`: contains control characters"));
            }
            if !value.is_empty() {
                security.push((header, value));
            }
        }
        let remove = v
            .list(
                "remove_headers",
                "server,x-powered-by,x-aspnet-version,x-aspnetmvc-version,x-generator",
            )
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let origins = v.list("cors_allowed_origins", "");
        let cors = if origins.is_empty() {
            None
        } else {
            let mut exact = Vec::new();
            let mut wildcard = Vec::new();
            for o in origins {
                let o = o.to_ascii_lowercase();
                if o == "*" || o == "null" {
                    return Err(format!(
                        "variable `cors_allowed_origins`: `{o}` is not allowed; list origins explicitly"
                    ));
                }
                if let Some(rest) = o.strip_prefix("*.") {
                    if rest.is_empty() || rest.contains('*') {
                        return Err(format!(
                            "variable `cors_allowed_origins`: bad wildcard `{o}`"
                        ));
                    }
                    wildcard.push(format!(".{rest}"));
                } else if o.starts_with("http://") || o.starts_with("https://") {
                    exact.push(o.trim_end_matches('/').to_owned());
                } else {
                    return Err(format!(
                        "variable `cors_allowed_origins`: `{o}` must be a scheme://host origin or a *.domain pattern"
                    ));
                }
            }
            Some(Cors {
                exact,
                wildcard,
                credentials: v.boolean("cors_allow_credentials", false)?,
                methods: v
                    .get_or("cors_allowed_methods", "GET, POST, PUT, PATCH, DELETE")
                    .to_owned(),
                headers: v
                    .get_or(
                        "cors_allowed_headers",
                        "authorization, content-type, x-request-id",
                    )
                    .to_owned(),
                expose: v
                    .get_or(
                        "cors_expose_headers",
                        "x-request-id, ratelimit, ratelimit-policy, retry-after",
                    )
                    .to_owned(),
                max_age: v.number("cors_max_age", 86_400)?,
            })
        };
        Ok(Config {
            security,
            remove,
            cors,
            cookies: crate::cookies::CookiePolicy::parse(v)?,
        })
    }
}

/// What CORS allows for one request `Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsGrant {
    /// The origin to echo in `Access-Control-Allow-Origin`.
    pub origin: String,
    /// Whether `Access-Control-Allow-Credentials: true` may be sent.
    pub credentials: bool,
}

impl Cors {
    /// The grant for `origin`, or `None`: an unlisted origin is never echoed.
    pub fn grant(&self, origin: &str) -> Option<CorsGrant> {
        let lower = origin.to_ascii_lowercase();
        if self.exact.iter().any(|o| *o == lower) {
            return Some(CorsGrant {
                origin: origin.to_owned(),
                credentials: self.credentials,
            });
        }
        // Wildcards match https subdomains only, and never carry credentials.
        let host = lower.strip_prefix("https://")?;
        if host.contains(['/', '@', '?', '#']) {
            return None;
        }
        let bare = host.split(':').next().unwrap_or(host);
        if self
            .wildcard
            .iter()
            .any(|suffix| bare.ends_with(suffix.as_str()) && bare.len() > suffix.len())
        {
            return Some(CorsGrant {
                origin: origin.to_owned(),
                credentials: false,
            });
        }
        None
    }
}

/// Whether a request is a CORS preflight.
pub fn is_preflight(method: &str, has_origin: bool, has_request_method: bool) -> bool {
    method.eq_ignore_ascii_case("OPTIONS") && has_origin && has_request_method
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &str, credentials: bool) -> Cors {
        let v = Vars::from_pairs([
            ("cors_allowed_origins", origins.to_string()),
            ("cors_allow_credentials", credentials.to_string()),
        ]);
        Config::parse(&v).unwrap().cors.unwrap()
    }

    #[test]
    fn safe_defaults_are_set() {
        let c = Config::parse(&Vars::default()).unwrap();
        let names: Vec<_> = c.security.iter().map(|(h, _)| *h).collect();
        assert_eq!(names.len(), 6);
        assert!(names.contains(&"strict-transport-security"));
        assert!(c.remove.contains(&"server".to_string()));
        assert!(c.cors.is_none());
        // An empty value disables one header.
        let c = Config::parse(&Vars::from_pairs([("csp", "")])).unwrap();
        assert_eq!(c.security.len(), 5);
    }

    #[test]
    fn unlisted_origins_are_never_granted() {
        let c = cors("https://app.example.com, *.example.org", true);
        assert_eq!(
            c.grant("https://app.example.com"),
            Some(CorsGrant {
                origin: "https://app.example.com".into(),
                credentials: true
            })
        );
        for bad in [
            "https://evil.com",
            "https://app.example.com.evil.com",
            "http://app.example.com",
            "null",
            "https://example.org",
            "https://evilexample.org",
            "http://a.example.org",
        ] {
            assert_eq!(c.grant(bad), None, "{bad}");
        }
    }

    #[test]
    fn wildcards_never_get_credentials() {
        let c = cors("*.example.org", true);
        let g = c.grant("https://shop.example.org").unwrap();
        assert!(!g.credentials);
    }

    #[test]
    fn star_and_null_are_refused_in_config() {
        for bad in ["*", "null", "example.com", "*."] {
            let v = Vars::from_pairs([("cors_allowed_origins", bad)]);
            let e = Config::parse(&v).unwrap_err();
            assert!(e.contains("cors_allowed_origins"), "{e}");
        }
    }

    #[test]
    fn preflight_detection() {
        assert!(is_preflight("OPTIONS", true, true));
        assert!(!is_preflight("OPTIONS", true, false));
        assert!(!is_preflight("GET", true, true));
    }
}
