//! Cookie hardening, as nginx's `proxy_cookie_flags` does it: every
//! `Set-Cookie` an origin sends gets the attributes the policy asks for
//! (`Secure`, `HttpOnly`, `SameSite=Lax` by default) that it lacks.
//!
//! Attributes are only ever added, never removed or weakened: a cookie
//! the origin marked `SameSite=Strict` stays `Strict`, and one it marked
//! `SameSite=None` keeps `None` (a deliberate cross-site cookie) but
//! always gets `Secure`, without which browsers refuse it. The cookie's
//! own text is left as the origin wrote it; attributes are appended.

use tollgate_sdk::config::Vars;

/// What the `SameSite` attribute is set to when a cookie has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

impl SameSite {
    fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// The attributes every cookie must carry, and the cookies left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookiePolicy {
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<SameSite>,
    /// Cookie names never touched (exact, case-sensitive, as browsers
    /// compare them).
    pub exempt: Vec<String>,
}

impl CookiePolicy {
    /// From `cookie_flags` (comma-separated `secure`, `httponly`,
    /// `samesite=lax|strict|none`; `off` or empty disables hardening) and
    /// `cookie_exempt` (cookie names). `None`: hardening is off.
    pub fn parse(v: &Vars) -> Result<Option<CookiePolicy>, String> {
        let flags = v.list("cookie_flags", "secure,httponly,samesite=lax");
        let mut policy = CookiePolicy {
            secure: false,
            http_only: false,
            same_site: None,
            exempt: v.list("cookie_exempt", ""),
        };
        if flags.iter().any(|f| f.eq_ignore_ascii_case("off")) {
            if flags.len() > 1 {
                return Err("variable `cookie_flags`: `off` cannot be combined with flags".into());
            }
            return Ok(None);
        }
        for flag in &flags {
            let lower = flag.to_ascii_lowercase();
            match lower.as_str() {
                "secure" => policy.secure = true,
                "httponly" => policy.http_only = true,
                "samesite=lax" => policy.same_site = Some(SameSite::Lax),
                "samesite=strict" => policy.same_site = Some(SameSite::Strict),
                "samesite=none" => policy.same_site = Some(SameSite::None),
                _ => {
                    return Err(format!(
                        "variable `cookie_flags`: `{flag}` is not one of secure, httponly, samesite=lax|strict|none, off"
                    ));
                }
            }
        }
        if !policy.secure && !policy.http_only && policy.same_site.is_none() {
            return Ok(None);
        }
        Ok(Some(policy))
    }

    /// `set_cookie` with the missing attributes appended, or `None` when
    /// it needs nothing (or is exempt, or is not a cookie at all).
    pub fn harden(&self, set_cookie: &str) -> Option<String> {
        let mut parts = set_cookie.split(';');
        let (name, _) = parts.next()?.split_once('=')?;
        let name = name.trim();
        if name.is_empty() || self.exempt.iter().any(|e| e == name) {
            return None;
        }
        let (mut secure, mut http_only, mut same_site) = (false, false, None);
        for attr in parts {
            let (key, value) = attr.split_once('=').unwrap_or((attr, ""));
            let key = key.trim();
            if key.eq_ignore_ascii_case("secure") {
                secure = true;
            } else if key.eq_ignore_ascii_case("httponly") {
                http_only = true;
            } else if key.eq_ignore_ascii_case("samesite") {
                // The last one counts, as in browsers; an unknown value
                // counts as none at all.
                same_site = match value.trim().to_ascii_lowercase().as_str() {
                    "lax" => Some(SameSite::Lax),
                    "strict" => Some(SameSite::Strict),
                    "none" => Some(SameSite::None),
                    _ => None,
                };
            }
        }
        let mut out = set_cookie.trim_end().trim_end_matches(';').to_owned();
        let before = out.len();
        let same_site = match (same_site, self.same_site) {
            (Some(s), _) => Some(s),
            (None, Some(s)) => {
                out.push_str("; SameSite=");
                out.push_str(s.as_str());
                Some(s)
            }
            (None, None) => None,
        };
        // SameSite=None without Secure is refused by browsers.
        if !secure && (self.secure || same_site == Some(SameSite::None)) {
            out.push_str("; Secure");
        }
        if !http_only && self.http_only {
            out.push_str("; HttpOnly");
        }
        (out.len() != before).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(pairs: &[(&str, &str)]) -> Result<Option<CookiePolicy>, String> {
        CookiePolicy::parse(&Vars::from_pairs(pairs.iter().copied()))
    }

    fn default() -> CookiePolicy {
        policy(&[]).unwrap().unwrap()
    }

    #[test]
    fn missing_attributes_are_added_by_default() {
        assert_eq!(
            default().harden("session=abc; Path=/").as_deref(),
            Some("session=abc; Path=/; SameSite=Lax; Secure; HttpOnly")
        );
        assert_eq!(
            default().harden("a=1;").as_deref(),
            Some("a=1; SameSite=Lax; Secure; HttpOnly")
        );
    }

    #[test]
    fn attributes_the_origin_set_are_never_weakened() {
        let p = default();
        assert_eq!(
            p.harden("pref=dark; SameSite=Strict").as_deref(),
            Some("pref=dark; SameSite=Strict; Secure; HttpOnly")
        );
        assert_eq!(
            p.harden("x=1; secure; HTTPONLY; samesite=strict"),
            None,
            "already hardened"
        );
        // A deliberate cross-site cookie keeps None, and gets Secure.
        assert_eq!(
            p.harden("t=1; SameSite=None; HttpOnly").as_deref(),
            Some("t=1; SameSite=None; HttpOnly; Secure")
        );
        // An unknown value counts as none: the policy's is added after it.
        assert_eq!(
            p.harden("u=1; SameSite=Bogus; Secure; HttpOnly").as_deref(),
            Some("u=1; SameSite=Bogus; Secure; HttpOnly; SameSite=Lax")
        );
    }

    #[test]
    fn samesite_none_gets_secure_even_when_the_policy_does_not_ask() {
        let p = policy(&[("cookie_flags", "httponly")]).unwrap().unwrap();
        assert_eq!(
            p.harden("t=1; SameSite=None").as_deref(),
            Some("t=1; SameSite=None; Secure; HttpOnly")
        );
        assert_eq!(p.harden("t=1").as_deref(), Some("t=1; HttpOnly"));
    }

    #[test]
    fn exempt_cookies_and_non_cookies_are_left_alone() {
        let p = policy(&[("cookie_exempt", "csrf, js_visible")])
            .unwrap()
            .unwrap();
        assert_eq!(p.harden("csrf=tok; Path=/"), None);
        assert_eq!(p.harden("js_visible=1"), None);
        assert!(p.harden("CSRF=tok").is_some(), "names are case-sensitive");
        assert_eq!(p.harden("no equals sign"), None);
        assert_eq!(p.harden("=value"), None);
    }

    #[test]
    fn the_policy_is_validated_naming_the_variable() {
        assert_eq!(policy(&[("cookie_flags", "off")]).unwrap(), None);
        assert_eq!(policy(&[("cookie_flags", "")]).unwrap(), None);
        let e = policy(&[("cookie_flags", "secure, samesite=sometimes")]).unwrap_err();
        assert!(e.starts_with("variable `cookie_flags`"), "{e}");
        assert!(policy(&[("cookie_flags", "off, secure")]).is_err());
        let p = policy(&[("cookie_flags", "SameSite=Strict")])
            .unwrap()
            .unwrap();
        assert_eq!(p.harden("a=1").as_deref(), Some("a=1; SameSite=Strict"));
    }
}
