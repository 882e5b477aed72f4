//! Who may use the admin API: a bearer token (`server.admin_token`),
//! compared in constant time, and a lockout for addresses that keep
//! guessing: [`MAX_FAILURES`] wrong tokens within [`WINDOW`] lock an IP out
//! for [`LOCKOUT`], as the auth gate locks accounts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const MAX_FAILURES: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(300);
pub const LOCKOUT: Duration = Duration::from_secs(300);

/// The verdict on one request's credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No token, or a wrong one: 401.
    Denied,
    /// Too many wrong tokens from this address: 429, for this long.
    LockedOut(Duration),
    /// No token is configured: the API is closed (403).
    Closed,
}

pub struct Guard {
    /// SHA-256 of the token (so comparison time does not depend on length).
    token: Option<[u8; 32]>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

impl Guard {
    pub fn new(token: Option<&str>) -> Self {
        Self {
            token: token.map(|t| Sha256::digest(t.as_bytes()).into()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Checks `authorization` (the header's value) from `ip` at `now`.
    pub fn check(&self, ip: IpAddr, authorization: Option<&[u8]>, now: Instant) -> Verdict {
        let Some(expected) = &self.token else {
            return Verdict::Closed;
        };
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = failures.get(&ip).and_then(|f| f.locked_until)
            && now < until
        {
            return Verdict::LockedOut(until - now);
        }
        let offered = authorization.and_then(|h| h.strip_prefix(b"Bearer "));
        let ok = offered.is_some_and(|t| {
            let digest: [u8; 32] = Sha256::digest(t).into();
            bool::from(digest.ct_eq(expected))
        });
        if ok {
            failures.remove(&ip);
            return Verdict::Allowed;
        }
        let f = failures.entry(ip).or_insert(Failures {
            count: 0,
            first: now,
            locked_until: None,
        });
        if now.duration_since(f.first) > WINDOW || f.locked_until.is_some() {
            *f = Failures {
                count: 0,
                first: now,
                locked_until: None,
            };
        }
        f.count += 1;
        if f.count >= MAX_FAILURES {
            f.locked_until = Some(now + LOCKOUT);
            tracing::warn!(%ip, "admin API: too many wrong tokens; address locked out");
        }
        Verdict::Denied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_right_token_passes_and_guessing_locks_the_address_out() {
        let g = Guard::new(Some("a-long-admin-token-value"));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t = Instant::now();
        assert_eq!(
            g.check(ip, Some(b"Bearer a-long-admin-token-value"), t),
            Verdict::Allowed
        );
        assert_eq!(g.check(ip, None, t), Verdict::Denied);
        for _ in 0..MAX_FAILURES - 1 {
            assert_eq!(g.check(ip, Some(b"Bearer nope"), t), Verdict::Denied);
        }
        // Locked: even the right token waits.
        assert!(matches!(
            g.check(ip, Some(b"Bearer a-long-admin-token-value"), t),
            Verdict::LockedOut(_)
        ));
        assert_eq!(
            g.check(other, Some(b"Bearer a-long-admin-token-value"), t),
            Verdict::Allowed
        );
        let later = t + LOCKOUT + Duration::from_secs(1);
        assert_eq!(
            g.check(ip, Some(b"Bearer a-long-admin-token-value"), later),
            Verdict::Allowed
        );
        assert_eq!(Guard::new(None).check(ip, None, t), Verdict::Closed);
    }
}
