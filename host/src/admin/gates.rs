//! What the gates keep in the store, read the way the gates read it: how
//! much of a rate-limit key's quota is left, and which accounts the auth
//! gate has locked out. The policies come from each route's variables and
//! are parsed by the gates' own parsers (the rate-limit and auth crates,
//! built natively), and the state is decoded by the SDK's own algorithms,
//! so the admin API cannot disagree with the gates on a key or a quota.
//!
//! Reading never changes a decision: a token bucket is read with `get`,
//! and a counter with an increment of zero, as the gates read them.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use tollgate_auth::policy::Lockout;
use tollgate_rate_limit::policy::{Algorithm, Config as LimitConfig, Policy, key_prefix};
use tollgate_sdk::config::Vars;
use tollgate_sdk::kv::StoreError as GateStoreError;
use tollgate_sdk::limit::{Counter, Micros, gcra, sliding_count};
use utoipa::ToSchema;

use crate::config::Route;
use crate::store::{KvBackend, StoreError};

/// The gate policies of every route, as configured.
#[derive(Default)]
pub struct Gates {
    limits: Vec<RouteLimits>,
    lockout: Option<Lockout>,
}

/// One route's rate-limit configuration.
struct RouteLimits {
    route: String,
    config: LimitConfig,
}

/// A rate-limit policy found by name: the route it was found on, its
/// configuration, and the policy.
pub struct Found<'a> {
    pub route: &'a str,
    pub config: &'a LimitConfig,
    pub policy: &'a Policy,
}

/// The state of one rate-limit key.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitView {
    pub policy: String,
    /// The key's parts after the policy name, `:`-separated, as the store
    /// holds them (`203.0.113.7`, or `203.0.113.7:api` for `ip+route`).
    pub key: String,
    /// The route whose configuration gave the policy.
    pub route: String,
    /// `token-bucket` or `sliding-window`.
    pub algorithm: String,
    /// Requests the key may make in a burst (token bucket) or per window.
    pub limit: u64,
    pub window_seconds: u64,
    /// Requests left now.
    pub remaining: u64,
    /// Seconds until the quota is whole again.
    pub reset_seconds: u64,
    /// Whether a request of the policy's cost would be refused now.
    pub limited: bool,
}

/// The auth gate's failure count for one account.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockoutView {
    pub account: String,
    /// Failed attempts counted over the sliding window.
    pub failures: i64,
    /// Failures that lock the account out (`lockout_threshold`).
    pub threshold: i64,
    pub locked: bool,
    /// Seconds until a locked account may try again (0 when not locked).
    pub retry_after_seconds: u64,
    pub window_seconds: u64,
}

impl Gates {
    /// Finds the rate-limit and auth gates of `routes` by their variables
    /// (`policies`; `api_keys` or `jwt_algorithm`). Every component was
    /// validated before this, so a configuration that does not parse is
    /// simply not a gate's.
    pub fn new(routes: &[Route]) -> Gates {
        let mut gates = Gates::default();
        for r in routes {
            let vars = Vars::from_pairs(r.variables.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            if r.variables.contains_key("policies")
                && let Ok(config) = LimitConfig::parse(&vars)
            {
                gates.limits.push(RouteLimits {
                    route: r.name.clone(),
                    config,
                });
            }
            let is_auth =
                r.variables.contains_key("api_keys") || r.variables.contains_key("jwt_algorithm");
            if is_auth
                && gates.lockout.is_none()
                && let Ok(Some(l)) = Lockout::parse(&vars)
            {
                gates.lockout = Some(l);
            }
        }
        gates
    }

    /// The policy `name`, on `route` if given, else on the first route
    /// (in configuration order) that has it.
    pub fn policy(&self, name: &str, route: Option<&str>) -> Option<Found<'_>> {
        self.limits
            .iter()
            .filter(|r| route.is_none_or(|want| r.route == want))
            .find_map(|r| {
                let policy = r.config.policies.iter().find(|p| p.name == name)?;
                Some(Found {
                    route: &r.route,
                    config: &r.config,
                    policy,
                })
            })
    }

    /// Every rate-limit key in the store, with its state.
    pub async fn limits(&self, kv: &KvBackend, now: Micros) -> Result<Vec<LimitView>, StoreError> {
        let keys = kv.keys().await?;
        let mut found = BTreeSet::new();
        for stored in keys.iter().filter_map(|k| k.strip_prefix("tollgate:rl:")) {
            let Some((name, rest)) = stored.split_once(':') else {
                continue;
            };
            let Some(f) = self.policy(name, None) else {
                continue;
            };
            let key = match f.config.algorithm {
                Algorithm::TokenBucket => rest,
                // `KEY:WINDOW-INDEX`: one key, several windows.
                Algorithm::SlidingWindow => match rest.rsplit_once(':') {
                    Some((key, index)) if index.bytes().all(|b| b.is_ascii_digit()) => key,
                    _ => continue,
                },
            };
            found.insert((name.to_owned(), key.to_owned()));
        }
        let mut out = Vec::with_capacity(found.len());
        for (name, key) in found {
            if let Some(f) = self.policy(&name, None) {
                out.push(limit_state(kv, &f, &key, now).await?);
            }
        }
        Ok(out)
    }

    /// Every account the auth gate has counted failures for.
    pub async fn lockouts(
        &self,
        kv: &KvBackend,
        now: Micros,
    ) -> Result<Vec<LockoutView>, StoreError> {
        let Some(l) = &self.lockout else {
            return Ok(Vec::new());
        };
        let prefix = Lockout::account_key("");
        let keys = kv.keys().await?;
        let accounts: BTreeSet<&str> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(prefix.as_str()))
            .filter_map(|rest| rest.rsplit_once(':'))
            .filter(|(_, index)| index.bytes().all(|b| b.is_ascii_digit()))
            .map(|(account, _)| account)
            .collect();
        let window = l.window_secs * 1_000_000;
        let mut out = Vec::with_capacity(accounts.len());
        for account in accounts {
            let (failures, reset) =
                counted(kv, &Lockout::account_key(account), now, window).await?;
            if failures <= 0 {
                continue;
            }
            let locked = failures >= l.per_account;
            out.push(LockoutView {
                account: account.to_owned(),
                failures,
                threshold: l.per_account,
                locked,
                retry_after_seconds: if locked { reset } else { 0 },
                window_seconds: l.window_secs,
            });
        }
        Ok(out)
    }
}

/// The state of `key` (the parts after the policy name) under `f`.
pub async fn limit_state(
    kv: &KvBackend,
    f: &Found<'_>,
    key: &str,
    now: Micros,
) -> Result<LimitView, StoreError> {
    let q = &f.policy.quota;
    let stored = format!("{}:{key}", key_prefix(f.policy));
    let (algorithm, limit, remaining, reset_seconds, limited) = match f.config.algorithm {
        Algorithm::TokenBucket => {
            let tat = kv
                .get(&stored)
                .await?
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .map(u64::from_le_bytes);
            // A request of cost 0 reads the bucket without taking from it.
            let (now_state, _) = gcra(tat, now, q, 0);
            let (next, _) = gcra(tat, now, q, f.policy.cost);
            (
                "token-bucket",
                q.burst,
                now_state.remaining,
                now_state.reset_secs,
                !next.allowed,
            )
        }
        Algorithm::SlidingWindow => {
            let limit = q.rate.max(q.burst);
            let (used, reset) = counted(kv, &stored, now, q.period).await?;
            let used = used.max(0) as u64;
            (
                "sliding-window",
                limit,
                limit.saturating_sub(used),
                reset,
                used + f.policy.cost > limit,
            )
        }
    };
    Ok(LimitView {
        policy: f.policy.name.clone(),
        key: key.to_owned(),
        route: f.route.to_owned(),
        algorithm: algorithm.into(),
        limit,
        window_seconds: q.window_secs(),
        remaining,
        reset_seconds,
        limited,
    })
}

/// The SDK's sliding count of `key`, over the host's async store: one
/// pass records which window counters it reads, they are fetched, and a
/// second pass counts from them. The key naming stays the SDK's.
async fn counted(
    kv: &KvBackend,
    key: &str,
    now: Micros,
    window: Micros,
) -> Result<(i64, u64), StoreError> {
    let wanted = Recorder::default();
    let _ = sliding_count(&wanted, key, now, window);
    let mut read = HashMap::new();
    for k in wanted.0.into_inner() {
        let n = kv.increment(&k, 0).await?;
        read.insert(k, n);
    }
    Ok(sliding_count(&Preloaded(read), key, now, window).expect("preloaded counters do not fail"))
}

/// A counter that notes the keys it is asked for.
#[derive(Default)]
struct Recorder(RefCell<Vec<String>>);

impl Counter for Recorder {
    fn increment(&self, key: &str, _: i64) -> Result<i64, GateStoreError> {
        self.0.borrow_mut().push(key.to_owned());
        Ok(0)
    }
}

/// Counters read beforehand; only reads (increments of zero) are asked.
struct Preloaded(HashMap<String, i64>);

impl Counter for Preloaded {
    fn increment(&self, key: &str, delta: i64) -> Result<i64, GateStoreError> {
        debug_assert_eq!(delta, 0, "the admin API only reads counters");
        Ok(self.0.get(key).copied().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemoryStore;
    use std::sync::Arc;
    use std::time::Duration;

    fn gates(vars: &[(&str, &str)]) -> Gates {
        let mut g = Gates::default();
        let v = Vars::from_pairs(vars.iter().copied());
        g.limits.push(RouteLimits {
            route: "api".into(),
            config: LimitConfig::parse(&v).unwrap(),
        });
        g.lockout = Lockout::parse(&v).unwrap();
        g
    }

    fn memory() -> (Arc<MemoryStore>, KvBackend) {
        let m = Arc::new(MemoryStore::new(1000, Duration::from_secs(600)));
        (m.clone(), KvBackend::Memory(m))
    }

    #[tokio::test]
    async fn a_token_bucket_reads_as_the_gate_left_it() {
        let g = gates(&[("policies", "per-ip ip 10/60s burst=3")]);
        let (m, kv) = memory();
        let now = 1_700_000_000_000_000;
        let f = g.policy("per-ip", None).unwrap();
        // Never seen: the whole burst is left.
        let s = limit_state(&kv, &f, "192.0.2.1", now).await.unwrap();
        assert_eq!((s.remaining, s.limit, s.limited), (3, 3, false));
        // Three requests, as the gate takes them.
        let mut tat = None;
        for _ in 0..3 {
            let (d, next) = gcra(tat, now, &f.policy.quota, 1);
            assert!(d.allowed);
            tat = next;
        }
        m.set(
            "tollgate:rl:per-ip:192.0.2.1",
            tat.unwrap().to_le_bytes().to_vec(),
        );
        let s = limit_state(&kv, &f, "192.0.2.1", now).await.unwrap();
        assert_eq!((s.remaining, s.limited), (0, true));
        assert_eq!(s.reset_seconds, 18, "3 × 6 s to refill");
        // Listed once, by its key parts.
        let all = g.limits(&kv, now).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].key, "192.0.2.1");
        // Reading changed nothing.
        assert_eq!(
            m.get("tollgate:rl:per-ip:192.0.2.1"),
            Some(tat.unwrap().to_le_bytes().to_vec())
        );
    }

    #[tokio::test]
    async fn a_sliding_window_and_a_lockout_read_their_counters() {
        let g = gates(&[
            ("policies", "per-key header:x-k 5/60s"),
            ("algorithm", "sliding-window"),
            ("api_keys", "k1=alice"),
            ("lockout_threshold", "2"),
        ]);
        let (m, kv) = memory();
        let now = 1_700_000_000_000_000;
        let index = now / 60_000_000;
        m.increment(&format!("tollgate:rl:per-key:abc:{index}"), 4)
            .unwrap();
        let s = limit_state(&kv, &g.policy("per-key", None).unwrap(), "abc", now)
            .await
            .unwrap();
        assert_eq!(
            (s.remaining, s.limited, s.algorithm.as_str()),
            (1, false, "sliding-window")
        );
        let all = g.limits(&kv, now).await.unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].key, "abc");

        let window = 900_000_000;
        let w = now / window;
        m.increment(&format!("tollgate:af:acct:bob:{w}"), 2)
            .unwrap();
        m.increment(&format!("tollgate:af:acct:carol:{w}"), 1)
            .unwrap();
        let l = g.lockouts(&kv, now).await.unwrap();
        assert_eq!(l.len(), 2);
        assert!(l[0].account == "bob" && l[0].locked && l[0].retry_after_seconds > 0);
        assert!(l[1].account == "carol" && !l[1].locked);
    }

    #[test]
    fn policies_are_found_by_name_and_route() {
        let g = gates(&[("policies", "a ip 1/1s; b global 5/1s")]);
        assert_eq!(g.policy("b", None).unwrap().policy.quota.rate, 5);
        assert!(g.policy("b", Some("api")).is_some());
        assert!(g.policy("b", Some("other")).is_none());
        assert!(g.policy("c", None).is_none());
    }
}
