//! Retries: which failed attempts may be tried again, how long to wait
//! first, and the budget that stops retries from multiplying an outage.
//!
//! - A connect failure sent nothing, so any method may be retried.
//! - A reset before the response head, or a status in `on_status`, may
//!   have reached the origin: only idempotent methods (RFC 9110 §9.2.2)
//!   are retried, unless the route allows the others.
//! - With retries off (a single `origin`), only a bodiless idempotent
//!   request that met a reset goes once more (the keep-alive race, see
//!   `RouteUpstream::forward_once`).
//! - A response timeout is never retried: the origin may still be working,
//!   and the request's deadline is mostly spent.
//! - The wait is exponential backoff with full jitter: a uniform draw in
//!   `[0, min(max, base · 2^attempt)]`.
//! - The budget admits a retry while retries stay under `ratio` of the
//!   requests seen in the sliding window (plus a small floor, so a quiet
//!   route can still retry).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Method;

/// The validated `[upstreams.NAME.retry]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1 = never retry).
    pub attempts: u32,
    /// Origin statuses that count as a failed attempt.
    pub on_status: Vec<u16>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Retries allowed per request in the window (0.2 = 20% extra).
    pub budget_ratio: f64,
    pub budget_window: Duration,
    /// Retries always allowed per window, however quiet the route.
    pub budget_min_retries: u32,
    /// Whether each wait is a uniform draw below the ceiling (full
    /// jitter) or the ceiling itself (a primary component's own schedule,
    /// see `chain/primary.rs`).
    pub jitter: bool,
}

impl RetryConfig {
    /// No retries: a route's single `origin` URL.
    pub fn none() -> Self {
        Self {
            attempts: 1,
            ..Self::default()
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 3,
            on_status: vec![502, 503, 504],
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            budget_ratio: 0.2,
            budget_window: Duration::from_secs(10),
            budget_min_retries: 3,
            jitter: true,
        }
    }
}

/// How one attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response whose status is not a failure.
    Answered,
    /// A response whose status is in `on_status`.
    FailedStatus,
    /// No connection: refused, unreachable, or the connect timed out.
    ConnectFailed,
    /// The connection broke before a response head arrived.
    Reset,
    /// No response head within the response timeout.
    TimedOut,
}

impl Outcome {
    /// Whether the endpoint failed (for outlier ejection).
    pub fn is_failure(self) -> bool {
        self != Outcome::Answered
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::FailedStatus => "failed-status",
            Outcome::ConnectFailed => "connect-failed",
            Outcome::Reset => "reset",
            Outcome::TimedOut => "timed-out",
        }
    }
}

/// Whether an attempt that ended in `outcome` may be tried again.
pub fn retryable(outcome: Outcome, method: &Method, allow_non_idempotent: bool) -> bool {
    match outcome {
        Outcome::Answered | Outcome::TimedOut => false,
        Outcome::ConnectFailed => true,
        Outcome::Reset | Outcome::FailedStatus => allow_non_idempotent || idempotent(method),
    }
}

/// RFC 9110 §9.2.2.
pub fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The wait before retry number `retry` (0 for the first retry): full
/// jitter over an exponentially growing, capped ceiling, or without
/// `jitter` the ceiling. `unit` is a uniform draw in `[0, 1)`.
pub fn backoff(config: &RetryConfig, retry: u32, unit: f64) -> Duration {
    let ceiling = config
        .backoff_base
        .saturating_mul(1u32 << retry.min(20))
        .min(config.backoff_max);
    if !config.jitter {
        return ceiling;
    }
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// Requests and retries over a sliding window of ten buckets.
pub struct Budget {
    ratio: f64,
    min_retries: u32,
    bucket: Duration,
    state: Mutex<Window>,
}

const BUCKETS: usize = 10;

struct Window {
    /// Start of bucket 0's current period.
    epoch: Instant,
    /// Index of the newest bucket, counted in bucket periods from `epoch`.
    newest: u64,
    requests: [u64; BUCKETS],
    retries: [u64; BUCKETS],
}

impl Budget {
    pub fn new(config: &RetryConfig) -> Self {
        Self {
            ratio: config.budget_ratio,
            min_retries: config.budget_min_retries,
            bucket: (config.budget_window / BUCKETS as u32).max(Duration::from_millis(1)),
            state: Mutex::new(Window {
                epoch: Instant::now(),
                newest: 0,
                requests: [0; BUCKETS],
                retries: [0; BUCKETS],
            }),
        }
    }

    /// Counts a request (its first attempt).
    pub fn request(&self, now: Instant) {
        let mut w = self.window(now);
        let i = (w.newest % BUCKETS as u64) as usize;
        w.requests[i] += 1;
    }

    /// Takes one retry from the budget, if it has one.
    pub fn try_retry(&self, now: Instant) -> bool {
        let mut w = self.window(now);
        let requests: u64 = w.requests.iter().sum();
        let retries: u64 = w.retries.iter().sum();
        let allowed = (requests as f64 * self.ratio).floor() as u64 + self.min_retries as u64;
        if retries >= allowed {
            return false;
        }
        let i = (w.newest % BUCKETS as u64) as usize;
        w.retries[i] += 1;
        true
    }

    /// The window, with buckets older than it cleared.
    fn window(&self, now: Instant) -> std::sync::MutexGuard<'_, Window> {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let period = (now.saturating_duration_since(w.epoch).as_nanos()
            / self.bucket.as_nanos().max(1)) as u64;
        if period > w.newest {
            let stale = (period - w.newest).min(BUCKETS as u64);
            for k in 1..=stale {
                let i = ((w.newest + k) % BUCKETS as u64) as usize;
                w.requests[i] = 0;
                w.retries[i] = 0;
            }
            w.newest = period;
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_failures_retry_non_idempotent_methods() {
        let post = Method::POST;
        assert!(retryable(Outcome::ConnectFailed, &post, false));
        assert!(!retryable(Outcome::FailedStatus, &post, false));
        assert!(!retryable(Outcome::Reset, &post, false));
        assert!(retryable(Outcome::FailedStatus, &post, true));
        assert!(retryable(Outcome::FailedStatus, &Method::GET, false));
        assert!(retryable(Outcome::Reset, &Method::PUT, false));
        assert!(!retryable(Outcome::TimedOut, &Method::GET, true));
        assert!(!retryable(Outcome::Answered, &Method::GET, true));
        assert!(!idempotent(&Method::PATCH));
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let c = RetryConfig::default();
        assert_eq!(backoff(&c, 0, 0.0), Duration::ZERO);
        assert_eq!(backoff(&c, 0, 0.5), Duration::from_micros(12_500));
        assert_eq!(backoff(&c, 2, 0.5), Duration::from_millis(50));
        assert_eq!(backoff(&c, 30, 0.5), Duration::from_millis(125));
        assert!(backoff(&c, 3, 0.999) < c.backoff_max);
    }

    #[test]
    fn without_jitter_the_wait_is_the_ceiling() {
        let c = RetryConfig {
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(300),
            jitter: false,
            ..RetryConfig::default()
        };
        let waits: Vec<u64> = (0..5)
            .map(|n| backoff(&c, n, 0.1).as_millis() as u64)
            .collect();
        assert_eq!(waits, vec![50, 100, 200, 300, 300]);
    }

    #[test]
    fn the_budget_caps_retries_and_refills_as_the_window_slides() {
        let c = RetryConfig {
            budget_ratio: 0.2,
            budget_min_retries: 2,
            budget_window: Duration::from_secs(10),
            ..RetryConfig::default()
        };
        let b = Budget::new(&c);
        let t0 = Instant::now();
        for _ in 0..100 {
            b.request(t0);
        }
        // 20% of 100, plus the floor of 2.
        let granted = (0..100).filter(|_| b.try_retry(t0)).count();
        assert_eq!(granted, 22);
        // Still inside the window: nothing new.
        assert!(!b.try_retry(t0 + Duration::from_secs(9)));
        // The window has moved past all of it: only the floor is left.
        let later = t0 + Duration::from_secs(11);
        assert_eq!((0..10).filter(|_| b.try_retry(later)).count(), 2);
    }
}
