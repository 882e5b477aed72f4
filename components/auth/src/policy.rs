//! The auth component's configuration and decisions: API keys (SHA-256
//! hashes compared in constant time), the JWT verifier, public paths,
//! required scopes, identity headers, and the failed-attempt lockout.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_sdk::HeaderName;
use tollgate_sdk::config::Vars;

use crate::jwt::{self, Alg, Verifier};

/// Every variable this component reads.
pub const VARIABLES: &[&str] = &[
    "api_keys",
    "api_key_header",
    "jwt_algorithm",
    "jwt_jwks",
    "jwt_secret",
    "jwt_issuer",
    "jwt_audience",
    "jwt_leeway_secs",
    "required_scopes",
    "public_paths",
    "strip_headers",
    "subject_header",
    "scopes_header",
    "realm",
    "lockout",
    "lockout_threshold",
    "lockout_window_secs",
    "ip_failure_limit",
    "global_failure_limit",
    "account_header",
    "store",
    "forward_api_key",
];

/// A configured API key: its owner, the SHA-256 of the key, its scopes.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub identity: String,
    hash: [u8; 32],
    pub scopes: Vec<String>,
}

/// Failed-attempt limits, counted over a sliding window.
#[derive(Debug, Clone)]
pub struct Lockout {
    pub per_account: i64,
    pub per_ip: i64,
    pub global: i64,
    pub window_secs: u64,
    pub account_header: HeaderName,
    pub store: String,
}

impl Lockout {
    /// The lockout variables; `None` when `lockout = false`. The host's
    /// admin API reads lockouts with this too, so both agree on them.
    pub fn parse(v: &Vars) -> Result<Option<Lockout>, String> {
        let lockout = if v.boolean("lockout", true)? {
            Some(Lockout {
                per_account: v.number("lockout_threshold", 5)?,
                per_ip: v.number("ip_failure_limit", 50)?,
                global: v.number("global_failure_limit", 10_000)?,
                window_secs: v.number("lockout_window_secs", 900)?,
                account_header: v.header_name("account_header", "x-account")?,
                store: v.get_or("store", "default").to_owned(),
            })
        } else {
            None
        };
        if let Some(l) = &lockout
            && (l.per_account < 1 || l.per_ip < 1 || l.global < 1 || l.window_secs == 0)
        {
            return Err("variables `lockout_threshold`, `ip_failure_limit`, `global_failure_limit`, `lockout_window_secs`: must be at least 1".into());
        }
        Ok(lockout)
    }

    /// The store key of an account's failure counter.
    pub fn account_key(account: &str) -> String {
        ["tollgate:af:acct:", account].concat()
    }
}

#[derive(Debug)]
pub struct Config {
    pub api_keys: Vec<ApiKey>,
    pub api_key_header: HeaderName,
    pub jwt: Option<Verifier>,
    pub required_scopes: Vec<String>,
    public_paths: Vec<String>,
    pub strip_headers: Vec<HeaderName>,
    pub subject_header: HeaderName,
    pub scopes_header: HeaderName,
    pub challenge: String,
    pub lockout: Option<Lockout>,
    /// Whether the API key header travels on to the origin (default: no).
    pub forward_api_key: bool,
}

impl Config {
    pub fn parse(v: &Vars) -> Result<Config, String> {
        let api_keys = v
            .list("api_keys", "")
            .iter()
            .map(|entry| parse_api_key(entry))
            .collect::<Result<Vec<_>, _>>()?;
        let jwt = match v.get("jwt_algorithm") {
            None => None,
            Some(name) => {
                let alg = Alg::parse(name).ok_or_else(|| {
                    format!("variable `jwt_algorithm`: `{name}` is not one of HS256, RS256, ES256, EdDSA")
                })?;
                let keys = match (v.get("jwt_jwks"), v.get("jwt_secret")) {
                    (Some(jwks), _) => jwt::parse_jwks(jwks, alg)
                        .map_err(|e| format!("variable `jwt_jwks`: {e}"))?,
                    (None, Some(secret)) if alg == Alg::HS256 => {
                        if secret.len() < 32 {
                            return Err("variable `jwt_secret`: must be at least 32 bytes".into());
                        }
                        vec![jwt::Key {
                            kid: None,
                            material: jwt::KeyMaterial::Hmac(secret.as_bytes().to_vec()),
                        }]
                    }
                    _ => {
                        return Err(format!(
                            "variable `jwt_jwks`: required for {name} (or `jwt_secret` for HS256)"
                        ));
                    }
                };
                Some(Verifier {
                    alg,
                    keys,
                    issuer: v.get("jwt_issuer").map(str::to_owned),
                    audience: v.get("jwt_audience").map(str::to_owned),
                    leeway_secs: v.number("jwt_leeway_secs", 60)?,
                })
            }
        };
        if api_keys.is_empty() && jwt.is_none() {
            return Err(
                "variables `api_keys`, `jwt_algorithm`: configure API keys, JWT, or both".into(),
            );
        }
        let public_paths = v.list("public_paths", "");
        if let Some(bad) = public_paths.iter().find(|p| !p.starts_with('/')) {
            return Err(format!(
                "variable `public_paths`: `{bad}` must start with '/'"
            ));
        }
        let realm = v.get_or("realm", "tollgate");
        if realm.contains(['"', '\\']) || realm.bytes().any(|b| b < 0x20) {
            return Err(
                "variable `realm`: must not contain quotes, backslashes or control characters"
                    .into(),
            );
        }
        let subject_header = v.header_name("subject_header", "x-auth-subject")?;
        let scopes_header = v.header_name("scopes_header", "x-auth-scopes")?;
        let mut strip_headers = v
            .list(
                "strip_headers",
                "x-auth-subject,x-auth-scopes,x-auth-method,x-user-id,x-user,x-remote-user",
            )
            .iter()
            .map(|h| tollgate_sdk::config::header_name("strip_headers", h))
            .collect::<Result<Vec<_>, _>>()?;
        // The headers we inject are always stripped first.
        for h in [&subject_header, &scopes_header] {
            if !strip_headers.contains(h) {
                strip_headers.push(h.clone());
            }
        }
        let scheme = if jwt.is_some() { "Bearer" } else { "ApiKey" };
        let lockout = Lockout::parse(v)?;
        Ok(Config {
            api_keys,
            api_key_header: v.header_name("api_key_header", "x-api-key")?,
            jwt,
            required_scopes: v
                .get_or("required_scopes", "")
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            public_paths,
            strip_headers,
            subject_header,
            scopes_header,
            challenge: format!("{scheme} realm=\"{realm}\""),
            lockout,
            forward_api_key: v.boolean("forward_api_key", false)?,
        })
    }

    /// Whether `path` needs no credentials: an exact entry, or a `/prefix/*`.
    pub fn is_public(&self, path: &str) -> bool {
        self.public_paths.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == p,
        })
    }

    /// The identity of a presented API key. Every configured hash is
    /// compared, in constant time, whatever matches.
    pub fn check_api_key(&self, presented: &str) -> Option<&ApiKey> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for key in &self.api_keys {
            if bool::from(key.hash.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found
    }
}

/// `identity:sha256hex[:scope scope ...]`
fn parse_api_key(entry: &str) -> Result<ApiKey, String> {
    let mut parts = entry.splitn(3, ':');
    let identity = parts.next().unwrap_or("").trim();
    let hash_hex = parts.next().unwrap_or("").trim();
    if identity.is_empty() || !identity.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("variable `api_keys`: each entry is identity:sha256hex[:scopes]".into());
    }
    let bytes = hex_decode(hash_hex)
        .filter(|b| b.len() == 32)
        .ok_or_else(|| format!("variable `api_keys`: the entry for `{identity}` needs a 64-hex-digit SHA-256 hash, not a key"))?;
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&bytes);
    let scopes = parts
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    Ok(ApiKey {
        identity: identity.to_owned(),
        hash,
        scopes,
    })
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    // `from_str_radix` alone would also take a sign (`+a` is 10).
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether the granted scopes cover every required one.
pub fn has_scopes(granted: &[String], required: &[String]) -> bool {
    required.iter().all(|r| granted.iter().any(|g| g == r))
}

/// The bearer token of an `Authorization` header.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha_hex(s: &str) -> String {
        Sha256::digest(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn api_keys_are_hashes_and_map_to_identities() {
        let v = Vars::from_pairs([(
            "api_keys",
            format!(
                "alice:{}:read write, bob:{}",
                sha_hex("key-a"),
                sha_hex("key-b")
            ),
        )]);
        let c = Config::parse(&v).unwrap();
        assert_eq!(c.check_api_key("key-a").unwrap().identity, "alice");
        assert_eq!(
            c.check_api_key("key-a").unwrap().scopes,
            vec!["read", "write"]
        );
        assert_eq!(c.check_api_key("key-b").unwrap().identity, "bob");
        assert!(c.check_api_key("key-c").is_none());
        assert!(c.check_api_key("").is_none());
        // A hash with a sign in it is not hex (`from_str_radix` takes
        // `+5`; found by tests/properties/tests/inputs.rs).
        let signed = format!("+{}", &sha_hex("key-a")[1..]);
        assert!(
            Config::parse(&Vars::from_pairs([("api_keys", format!("alice:{signed}"))])).is_err()
        );
        // A plaintext key in the config is refused.
        let e =
            Config::parse(&Vars::from_pairs([("api_keys", "alice:my-secret-key")])).unwrap_err();
        assert!(
            e.contains("`api_keys`") && !e.contains("my-secret-key"),
            "{e}"
        );
    }

    #[test]
    fn nothing_configured_is_an_error() {
        let e = Config::parse(&Vars::default()).unwrap_err();
        assert!(e.contains("api_keys"));
        let e = Config::parse(&Vars::from_pairs([("jwt_algorithm", "none")])).unwrap_err();
        assert!(e.contains("`jwt_algorithm`"));
        let e = Config::parse(&Vars::from_pairs([
            ("jwt_algorithm", "HS256"),
            ("jwt_secret", "short"),
        ]))
        .unwrap_err();
        assert!(e.contains("`jwt_secret`"));
    }

    #[test]
    fn public_paths_and_scopes() {
        let v = Vars::from_pairs([
            ("api_keys", format!("a:{}", sha_hex("k"))),
            ("public_paths", "/health, /docs/*".to_string()),
            ("required_scopes", "read write".to_string()),
        ]);
        let c = Config::parse(&v).unwrap();
        assert!(c.is_public("/health"));
        assert!(!c.is_public("/health/x"));
        assert!(c.is_public("/docs/a/b"));
        assert!(!c.is_public("/docsx"));
        assert!(!has_scopes(&["read".into()], &c.required_scopes));
        assert!(has_scopes(
            &["write".into(), "read".into(), "x".into()],
            &c.required_scopes
        ));
        // Injected headers are always in the strip list.
        assert!(c.strip_headers.iter().any(|h| h == "x-auth-subject"));
        assert_eq!(c.challenge, "ApiKey realm=\"tollgate\"");
    }

    #[test]
    fn header_names_are_checked_at_init() {
        let key = ("api_keys", format!("a:{}", sha_hex("k")));
        let c = Config::parse(&Vars::from_pairs([
            key.clone(),
            ("api_key_header", "X-Key".to_string()),
        ]))
        .unwrap();
        assert_eq!(c.api_key_header, "x-key");
        for (var, bad) in [
            ("api_key_header", "bad name"),
            ("subject_header", "x:y"),
            ("account_header", ""),
            ("strip_headers", "x-ok, bad\tname"),
        ] {
            let e = Config::parse(&Vars::from_pairs([key.clone(), (var, bad.to_string())]))
                .unwrap_err();
            assert_eq!(e, format!("variable `{var}`: must be a valid header name"));
        }
    }

    #[test]
    fn bearer_tokens_are_extracted() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
