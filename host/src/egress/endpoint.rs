//! One endpoint of an upstream and what the gateway knows about its
//! health: requests in flight, passive health (outlier ejection after
//! consecutive failures) and active health (set by
//! [`super::health_check`]).
//!
//! Ejection: after `consecutive_failures` failed attempts in a row the
//! endpoint is out for `base_ejection × n` (n = how many times it has been
//! ejected recently, capped at `max_ejection`), then comes back by itself.
//! Whether an ejection may happen at all (the share of endpoints already
//! out) is the upstream's call; see [`super::upstream::Upstream::record`].

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::Origin;

/// The validated `[upstreams.NAME.outlier]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// At most this share (percent) of the endpoints is ejected at once;
    /// never all of them.
    pub max_ejected_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// One endpoint: where it is, and its live state.
pub struct Endpoint {
    pub origin: Origin,
    /// The endpoint's URL, for logs and metric labels.
    pub name: Arc<str>,
    pub weight: u32,
    in_flight: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Nanoseconds after `epoch` until which it is ejected; 0 when it is not.
    ejected_until: AtomicU64,
    ejections: Mutex<Ejections>,
    /// The last active health verdict (true until a check says otherwise).
    healthy: AtomicBool,
    epoch: Instant,
}

#[derive(Default)]
struct Ejections {
    /// Ejections since the endpoint last stayed in for a whole `max_ejection`.
    recent: u32,
    last_end: Option<Instant>,
}

impl Endpoint {
    pub fn new(origin: Origin, weight: u32, epoch: Instant) -> Self {
        Self {
            name: origin.to_string().into(),
            origin,
            weight,
            in_flight: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: Mutex::new(Ejections::default()),
            healthy: AtomicBool::new(true),
            epoch,
        }
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && self.nanos(now) < until
    }

    /// Whether it may take traffic now.
    pub fn is_usable(&self, now: Instant) -> bool {
        self.is_healthy() && !self.is_ejected(now)
    }

    /// Records an attempt's result. Returns true when this failure reaches
    /// the consecutive-failure threshold (the caller decides on ejection).
    pub fn record(&self, failed: bool, config: Option<&OutlierConfig>) -> bool {
        if !failed {
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        config.is_some_and(|c| n >= c.consecutive_failures)
    }

    /// Ejects it; returns for how long.
    pub fn eject(&self, now: Instant, config: &OutlierConfig) -> Duration {
        let mut e = self.ejections.lock().unwrap_or_else(|p| p.into_inner());
        if e.last_end
            .is_some_and(|end| now > end + config.max_ejection)
        {
            e.recent = 0;
        }
        e.recent += 1;
        let period = config
            .base_ejection
            .saturating_mul(e.recent)
            .min(config.max_ejection);
        e.last_end = Some(now + period);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejected_until
            .store(self.nanos(now + period).max(1), Ordering::Relaxed);
        period
    }

    /// Sets the active health verdict. An endpoint that comes back (was
    /// unhealthy, now passes) is also let back in if it was ejected.
    /// Returns whether the verdict changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        let changed = self.healthy.swap(healthy, Ordering::Relaxed) != healthy;
        if changed && healthy {
            self.ejected_until.store(0, Ordering::Relaxed);
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        changed
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

/// A request in flight on an endpoint.
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_origin;

    fn endpoint() -> Endpoint {
        Endpoint::new(
            parse_origin("http://10.0.0.1:80").unwrap(),
            1,
            Instant::now(),
        )
    }

    #[test]
    fn consecutive_failures_reach_the_threshold_and_a_success_resets() {
        let c = OutlierConfig {
            consecutive_failures: 3,
            ..OutlierConfig::default()
        };
        let e = endpoint();
        assert!(!e.record(true, Some(&c)));
        assert!(!e.record(true, Some(&c)));
        assert!(!e.record(false, Some(&c)));
        assert!(!e.record(true, Some(&c)));
        assert!(!e.record(true, Some(&c)));
        assert!(e.record(true, Some(&c)));
        assert!(!endpoint().record(true, None));
    }

    #[test]
    fn ejection_lasts_longer_each_time_and_ends_by_itself() {
        let c = OutlierConfig {
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            ..OutlierConfig::default()
        };
        let e = endpoint();
        let t = Instant::now();
        assert!(e.is_usable(t));
        assert_eq!(e.eject(t, &c), Duration::from_secs(10));
        assert!(!e.is_usable(t + Duration::from_secs(9)));
        assert!(e.is_usable(t + Duration::from_secs(11)));
        assert_eq!(
            e.eject(t + Duration::from_secs(12), &c),
            Duration::from_secs(20)
        );
        assert_eq!(
            e.eject(t + Duration::from_secs(40), &c),
            Duration::from_secs(25)
        );
        // Coming back through the health checks lets it in at once; a
        // check that passes while it was healthy all along does not.
        assert!(!e.set_healthy(true));
        assert!(!e.is_usable(t + Duration::from_secs(41)));
        e.set_healthy(false);
        assert!(e.set_healthy(true));
        assert!(e.is_usable(t + Duration::from_secs(41)));
        // Long after the last ejection, the count starts over.
        assert_eq!(
            e.eject(t + Duration::from_secs(1000), &c),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn an_unhealthy_endpoint_is_not_usable() {
        let e = endpoint();
        assert!(e.set_healthy(false));
        assert!(!e.set_healthy(false));
        assert!(!e.is_usable(Instant::now()));
        assert!(e.set_healthy(true));
        assert!(e.is_usable(Instant::now()));
    }
}
