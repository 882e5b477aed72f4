//! What the admin API and the dashboard show of each route's traffic:
//! answers by status class, latency quantiles, and time per component.
//! Recorded on the request path without locks (atomics, and a read lock
//! over a short list of component names), and kept across reloads: a
//! route keeps its numbers while its name stays.
//!
//! Prometheus has the same numbers as histograms for a scraper to turn
//! into rates and quantiles; these are the API's own, summed since start.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds; one more bucket
/// holds everything slower.
const BOUNDS_US: [u64; 24] = [
    50, 100, 150, 200, 300, 400, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000,
    20_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Answers on one route.
#[derive(Default, Debug)]
pub struct RouteCounts {
    pub total: AtomicU64,
    pub ok: AtomicU64,
    pub client_error: AtomicU64,
    pub limited: AtomicU64,
    pub server_error: AtomicU64,
    latency: [AtomicU64; BOUNDS_US.len() + 1],
    components: RwLock<Vec<ComponentTime>>,
}

/// One component's time on a route.
#[derive(Debug)]
pub struct ComponentTime {
    pub name: String,
    pub calls: AtomicU64,
    pub nanos: AtomicU64,
}

impl RouteCounts {
    /// One answer: its status and how long its head took.
    pub fn record(&self, status: u16, took: Duration) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let class = match status {
            429 => &self.limited,
            200..=399 => &self.ok,
            400..=499 => &self.client_error,
            _ => &self.server_error,
        };
        class.fetch_add(1, Ordering::Relaxed);
        let us = took.as_micros() as u64;
        let bucket = BOUNDS_US.partition_point(|&b| b < us);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The time one component took on one request.
    pub fn record_component(&self, name: &str, took: Duration) {
        let add = |c: &ComponentTime| {
            c.calls.fetch_add(1, Ordering::Relaxed);
            c.nanos.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        };
        {
            let list = self.components.read().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = list.iter().find(|c| c.name == name) {
                return add(c);
            }
        }
        // A name not seen before: only now the write lock.
        let mut list = self.components.write().unwrap_or_else(|p| p.into_inner());
        if !list.iter().any(|c| c.name == name) {
            list.push(ComponentTime {
                name: name.to_owned(),
                calls: AtomicU64::new(0),
                nanos: AtomicU64::new(0),
            });
        }
        let c = list.iter().find(|c| c.name == name).expect("just added");
        add(c);
    }

    /// Each component's calls and mean time, in the order first seen.
    pub fn components(&self) -> Vec<(String, u64, Duration)> {
        self.components
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|c| {
                let calls = c.calls.load(Ordering::Relaxed);
                let nanos = c.nanos.load(Ordering::Relaxed);
                (
                    c.name.clone(),
                    calls,
                    Duration::from_nanos(nanos.checked_div(calls).unwrap_or(0)),
                )
            })
            .collect()
    }

    /// The latency at quantile `q` (0 to 1), interpolated within its
    /// bucket; `None` before the first answer. Answers slower than the
    /// last bound count as that bound.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut below = 0u64;
        for (i, &n) in counts.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let lo = if i == 0 { 0 } else { BOUNDS_US[i - 1] };
                let hi = *BOUNDS_US.get(i).unwrap_or(&BOUNDS_US[BOUNDS_US.len() - 1]);
                let within = (rank - below as f64) / n as f64;
                let us = lo as f64 + (hi - lo) as f64 * within;
                return Some(Duration::from_nanos((us * 1000.0) as u64));
            }
            below += n;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_counted_by_class() {
        let c = RouteCounts::default();
        for s in [200, 302, 401, 404, 429, 429, 500, 503] {
            c.record(s, Duration::from_micros(100));
        }
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(get(&c.total), 8);
        assert_eq!(get(&c.ok), 2);
        assert_eq!(get(&c.client_error), 2);
        assert_eq!(get(&c.limited), 2);
        assert_eq!(get(&c.server_error), 2);
    }

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        let c = RouteCounts::default();
        assert_eq!(c.quantile(0.5), None);
        // 98 fast answers (120 µs) and 2 slow ones (40 ms).
        for _ in 0..98 {
            c.record(200, Duration::from_micros(120));
        }
        for _ in 0..2 {
            c.record(200, Duration::from_millis(40));
        }
        let p50 = c.quantile(0.5).unwrap();
        assert!(
            p50 > Duration::from_micros(100) && p50 <= Duration::from_micros(150),
            "{p50:?}"
        );
        let p99 = c.quantile(0.99).unwrap();
        assert!(
            p99 > Duration::from_millis(20) && p99 <= Duration::from_millis(50),
            "{p99:?}"
        );
        // Slower than every bound: reported as the last bound.
        let slow = RouteCounts::default();
        slow.record(200, Duration::from_secs(60));
        assert_eq!(slow.quantile(0.5), Some(Duration::from_secs(10)));
    }

    #[test]
    fn component_times_are_means_per_name() {
        let c = RouteCounts::default();
        c.record_component("auth", Duration::from_micros(10));
        c.record_component("auth", Duration::from_micros(30));
        c.record_component("headers", Duration::from_micros(5));
        let list = c.components();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0], ("auth".into(), 2, Duration::from_micros(20)));
        assert_eq!(list[1].0, "headers");
    }
}
