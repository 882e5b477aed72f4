//! Rate-limit algorithms, as pure functions of (state, clock, parameters),
//! plus the thin glue that applies them to the key-value store atomically.
//!
//! - [`gcra`]: a token bucket in GCRA form. Its state is one number (the
//!   theoretical arrival time), updated by compare-and-swap.
//! - [`sliding_window`]: an increment-only sliding-window counter, for
//!   stores whose compare-and-swap is unusable (Spin 4.1 + Redis).
//!
//! Both are exact under concurrency: each admission decision is made by one
//! atomic store operation, never by a read followed by a write.

use crate::kv::{Store, StoreError};

/// Times are in microseconds.
pub type Micros = u64;

/// A limit: `rate` requests per `period`, with bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub rate: u64,
    pub period: Micros,
    pub burst: u64,
}

impl Quota {
    /// Time one unit of quota takes to refill.
    pub fn interval(&self) -> Micros {
        (self.period / self.rate.max(1)).max(1)
    }

    /// The window in whole seconds, for the RateLimit-Policy header.
    pub fn window_secs(&self) -> u64 {
        self.period.div_ceil(1_000_000).max(1)
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Quota left after this request.
    pub remaining: u64,
    /// Seconds until the quota is whole again.
    pub reset_secs: u64,
    /// Seconds to wait before retrying (0 when allowed).
    pub retry_after_secs: u64,
}

/// GCRA: given the stored theoretical arrival time `tat` (None for a new
/// key), decide on a request of `cost` at `now`. Returns the decision and,
/// when allowed, the new state to store.
pub fn gcra(tat: Option<Micros>, now: Micros, q: &Quota, cost: u64) -> (Decision, Option<Micros>) {
    let t = q.interval();
    let capacity = t.saturating_mul(q.burst);
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat.saturating_add(t.saturating_mul(cost));
    let allow_at = new_tat.saturating_sub(capacity);
    if cost > q.burst || now < allow_at {
        let wait = if cost > q.burst {
            q.period
        } else {
            allow_at - now
        };
        let remaining = capacity.saturating_sub(tat - now) / t;
        return (
            Decision {
                allowed: false,
                remaining,
                reset_secs: secs_ceil(tat - now),
                retry_after_secs: secs_ceil(wait).max(1),
            },
            None,
        );
    }
    let used = new_tat - now;
    (
        Decision {
            allowed: true,
            remaining: capacity.saturating_sub(used) / t,
            reset_secs: secs_ceil(used),
            retry_after_secs: 0,
        },
        Some(new_tat),
    )
}

fn secs_ceil(us: Micros) -> u64 {
    us.div_ceil(1_000_000)
}

/// Attempts [`check_gcra`] makes before a conflict counts as contention.
/// One route-wide bucket is written by every request, so a writer can lose
/// many rounds in a row while its thread is preempted; an attempt is two
/// host calls (microseconds), cheap next to refusing the request.
const GCRA_ATTEMPTS: usize = 1024;

/// Applies [`gcra`] to `key` in `store` with a compare-and-swap loop.
pub fn check_gcra(
    store: &Store,
    key: &str,
    now: Micros,
    q: &Quota,
    cost: u64,
) -> Result<Decision, StoreError> {
    store.update(key, GCRA_ATTEMPTS, |current| {
        let tat = current
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes);
        let (decision, next) = gcra(tat, now, q, cost);
        (next.map(|n| n.to_le_bytes().to_vec()), decision)
    })
}

/// Counters needed by the sliding window: an atomic increment that returns
/// the new value. Implemented by [`Store`], and by test doubles.
pub trait Counter {
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError>;
}

impl Counter for Store {
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        Store::increment(self, key, delta)
    }
}

/// Sliding-window counter with increment only. The limit per period is
/// `max(rate, burst)`. The previous window counts in proportion to how much
/// of it still overlaps the sliding window. A rejected request takes its
/// increment back, so rejections do not eat into the next window.
pub fn sliding_window<C: Counter>(
    store: &C,
    key: &str,
    now: Micros,
    q: &Quota,
    cost: u64,
) -> Result<Decision, StoreError> {
    let limit = q.rate.max(q.burst) as i64;
    let window = q.period.max(1);
    let index = now / window;
    let into = now % window;
    let current_key = format!("{key}:{index}");
    // Reading a counter is an increment by zero: never decode raw bytes.
    let previous = store.increment(&format!("{key}:{}", index.wrapping_sub(1)), 0)?;
    let weight = (window - into) as f64 / window as f64;
    let carried = (previous as f64 * weight).floor() as i64;
    let count = store.increment(&current_key, cost as i64)?;
    let used = carried + count;
    let reset_secs = secs_ceil(window - into);
    if used > limit {
        store.increment(&current_key, -(cost as i64))?;
        // Wait until enough of the previous window has slid out, or the next one.
        let retry = if carried > 0 && count - (cost as i64) < limit {
            let excess = (used - limit) as f64;
            let needed = (excess / previous.max(1) as f64 * window as f64).ceil() as u64;
            needed.min(window - into)
        } else {
            window - into
        };
        return Ok(Decision {
            allowed: false,
            remaining: 0,
            reset_secs,
            retry_after_secs: secs_ceil(retry).max(1),
        });
    }
    Ok(Decision {
        allowed: true,
        remaining: (limit - used).max(0) as u64,
        reset_secs,
        retry_after_secs: 0,
    })
}

/// A sliding count of events over `window` (microseconds) at `key`,
/// read with increments of zero. Returns the weighted count and the
/// seconds until the current window ends.
pub fn sliding_count<C: Counter>(
    store: &C,
    key: &str,
    now: Micros,
    window: Micros,
) -> Result<(i64, u64), StoreError> {
    let window = window.max(1);
    let index = now / window;
    let into = now % window;
    let previous = store.increment(&window_key(key, index.wrapping_sub(1)), 0)?;
    let current = store.increment(&window_key(key, index), 0)?;
    let weight = (window - into) as f64 / window as f64;
    Ok((
        (previous as f64 * weight).floor() as i64 + current,
        secs_ceil(window - into),
    ))
}

/// Records `n` events at `key` in the current window of [`sliding_count`].
pub fn sliding_add<C: Counter>(
    store: &C,
    key: &str,
    now: Micros,
    window: Micros,
    n: i64,
) -> Result<(), StoreError> {
    let index = now / window.max(1);
    store.increment(&window_key(key, index), n).map(|_| ())
}

/// `key:index`: the store key of one window of a sliding count. Built
/// without `format!`: the gates make several of these per request.
fn window_key(key: &str, index: u64) -> String {
    let mut digits = itoa::Buffer::new();
    let index = digits.format(index);
    let mut k = String::with_capacity(key.len() + 1 + index.len());
    k.push_str(key);
    k.push(':');
    k.push_str(index);
    k
}

/// `"name";a=1;b=2`: a structured-field item with two integer parameters.
fn item(name: &str, (a, x): (&str, u64), (b, y): (&str, u64)) -> String {
    let (mut dx, mut dy) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (x, y) = (dx.format(x), dy.format(y));
    let mut v = String::with_capacity(name.len() + a.len() + b.len() + x.len() + y.len() + 6);
    for part in ["\"", name, "\";", a, "=", x, ";", b, "=", y] {
        v.push_str(part);
    }
    v
}

/// The IETF `RateLimit-Policy` value for a named quota.
pub fn policy_header(name: &str, q: &Quota) -> String {
    item(name, ("q", q.rate.max(q.burst)), ("w", q.window_secs()))
}

/// The IETF `RateLimit` value for a decision.
pub fn ratelimit_header(name: &str, d: &Decision) -> String {
    item(name, ("r", d.remaining), ("t", d.reset_secs))
}

/// Microseconds since the Unix epoch, from the wall clock.
pub fn now_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    const SEC: Micros = 1_000_000;

    /// Every `step` from 0 to `end`, sends requests until one is refused;
    /// returns how many were admitted in all.
    fn admitted(q: &Quota, step: Micros, end: Micros) -> u64 {
        let mut tat = None;
        let mut n = 0;
        let mut now = 1_000 * SEC;
        let stop = now + end;
        while now <= stop {
            loop {
                let (d, next) = gcra(tat, now, q, 1);
                if !d.allowed {
                    break;
                }
                n += 1;
                tat = next;
            }
            now += step;
        }
        n
    }

    #[test]
    fn gcra_admits_exactly_burst_plus_rate_times_t() {
        // 10 per second, burst 5, hammered every millisecond for t seconds.
        let q = Quota {
            rate: 10,
            period: SEC,
            burst: 5,
        };
        for t in [0, 1, 2, 7] {
            assert_eq!(admitted(&q, 1_000, t * SEC), 5 + 10 * t, "t = {t}");
        }
        // 10 per minute, burst 10: over 3 minutes, 10 + 30.
        let q = Quota {
            rate: 10,
            period: 60 * SEC,
            burst: 10,
        };
        assert_eq!(admitted(&q, 100_000, 180 * SEC), 10 + 30);
    }

    #[test]
    fn gcra_reports_remaining_and_retry_after() {
        let q = Quota {
            rate: 1,
            period: SEC,
            burst: 3,
        };
        let now = 50 * SEC;
        let (d1, t1) = gcra(None, now, &q, 1);
        assert!(d1.allowed);
        assert_eq!(d1.remaining, 2);
        let (d2, t2) = gcra(t1, now, &q, 1);
        assert_eq!(d2.remaining, 1);
        let (d3, t3) = gcra(t2, now, &q, 1);
        assert_eq!((d3.allowed, d3.remaining), (true, 0));
        let (d4, none) = gcra(t3, now, &q, 1);
        assert!(!d4.allowed);
        assert_eq!(none, None);
        assert_eq!(d4.retry_after_secs, 1);
        assert_eq!(d4.reset_secs, 3);
        // One interval later, one more fits.
        assert!(gcra(t3, now + SEC, &q, 1).0.allowed);
    }

    #[test]
    fn gcra_cost_counts_as_several_requests() {
        let q = Quota {
            rate: 10,
            period: SEC,
            burst: 10,
        };
        let (d, t) = gcra(None, SEC, &q, 7);
        assert!(d.allowed);
        assert_eq!(d.remaining, 3);
        assert!(!gcra(t, SEC, &q, 4).0.allowed);
        assert!(gcra(t, SEC, &q, 3).0.allowed);
        // A cost above the burst can never pass.
        assert!(!gcra(None, SEC, &q, 11).0.allowed);
    }

    struct MemCounter(RefCell<HashMap<String, i64>>);

    impl Counter for MemCounter {
        fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
            let mut m = self.0.borrow_mut();
            let v = m.entry(key.to_string()).or_insert(0);
            *v += delta;
            Ok(*v)
        }
    }

    #[test]
    fn sliding_window_admits_the_limit_per_window() {
        let c = MemCounter(RefCell::default());
        let q = Quota {
            rate: 10,
            period: 60 * SEC,
            burst: 10,
        };
        let start = 600 * SEC; // start of a window
        let allowed = (0..100)
            .filter(|i| {
                sliding_window(&c, "k", start + i * 1000, &q, 1)
                    .unwrap()
                    .allowed
            })
            .count();
        assert_eq!(allowed, 10);
        // Rejections were taken back: the window holds exactly the limit.
        assert_eq!(c.increment("k:10", 0).unwrap(), 10);
        // Half-way through the next window, half the previous still counts.
        let mid_next = start + 90 * SEC;
        let allowed = (0..100)
            .filter(|_| sliding_window(&c, "k", mid_next, &q, 1).unwrap().allowed)
            .count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn sliding_counts_weigh_the_previous_window() {
        let c = MemCounter(RefCell::default());
        let w = 100 * SEC;
        for _ in 0..8 {
            sliding_add(&c, "f", 1_000 * SEC, w, 1).unwrap();
        }
        assert_eq!(sliding_count(&c, "f", 1_000 * SEC, w).unwrap(), (8, 100));
        // A quarter into the next window, three quarters of it remain.
        assert_eq!(sliding_count(&c, "f", 1_125 * SEC, w).unwrap(), (6, 75));
        // Two windows later, nothing.
        assert_eq!(sliding_count(&c, "f", 1_200 * SEC, w).unwrap().0, 0);
    }

    #[test]
    fn headers_follow_the_ietf_draft() {
        let q = Quota {
            rate: 100,
            period: 60 * SEC,
            burst: 100,
        };
        assert_eq!(policy_header("burst", &q), "\"burst\";q=100;w=60");
        let d = Decision {
            allowed: true,
            remaining: 42,
            reset_secs: 12,
            retry_after_secs: 0,
        };
        assert_eq!(ratelimit_header("burst", &d), "\"burst\";r=42;t=12");
    }
}
