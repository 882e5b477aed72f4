//! Active health checks: one background task per upstream that has a
//! `health_check.path`. Every `interval` it sends `GET path` to each
//! endpoint at once, each within `timeout`; a 2xx passes, anything else
//! (another status, a refused connection, no answer in time) fails.
//!
//! An endpoint turns unhealthy after `unhealthy_threshold` failed checks in
//! a row and takes no traffic until `healthy_threshold` passing checks in a
//! row bring it back (which also lifts an ejection). Endpoints start
//! healthy, and the first round runs at startup. The task holds the
//! upstream weakly and ends when the gateway that owns it is dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::client::OriginClient;
use super::upstream::Upstream;

/// The validated `[upstreams.NAME.health_check]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    /// Path and query to request, starting with `/`.
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// Consecutive results of one endpoint's checks.
#[derive(Default, Clone, Copy)]
struct Streak {
    passed: u32,
    failed: u32,
}

impl Streak {
    /// Counts a result; returns the verdict it settles, if any.
    fn push(&mut self, passed: bool, config: &HealthCheckConfig) -> Option<bool> {
        if passed {
            self.passed += 1;
            self.failed = 0;
            (self.passed >= config.healthy_threshold).then_some(true)
        } else {
            self.failed += 1;
            self.passed = 0;
            (self.failed >= config.unhealthy_threshold).then_some(false)
        }
    }
}

/// Starts the checks for `upstream`, if it has any configured.
pub fn spawn(upstream: &Arc<Upstream>, client: Arc<OriginClient>) {
    let Some(config) = upstream.health_check.clone() else {
        return;
    };
    let weak = Arc::downgrade(upstream);
    tokio::spawn(run(weak, client, config));
}

async fn run(weak: Weak<Upstream>, client: Arc<OriginClient>, config: HealthCheckConfig) {
    let mut streaks: Vec<Streak> = Vec::new();
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(upstream) = weak.upgrade() else {
            return;
        };
        streaks.resize(upstream.endpoints.len(), Streak::default());
        let checks = upstream
            .endpoints
            .iter()
            .map(|e| client.probe(&e.origin, &config.path, config.timeout));
        let results = futures::future::join_all(checks).await;
        for ((endpoint, streak), passed) in upstream.endpoints.iter().zip(&mut streaks).zip(results)
        {
            let Some(healthy) = streak.push(passed, &config) else {
                continue;
            };
            if endpoint.set_healthy(healthy) {
                if healthy {
                    tracing::info!(upstream = %upstream.name, endpoint = %endpoint.name, "endpoint passes its health checks again");
                } else {
                    tracing::warn!(upstream = %upstream.name, endpoint = %endpoint.name, "endpoint fails its health checks");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_settle_verdicts_only_after_a_streak() {
        let c = HealthCheckConfig {
            path: "/healthz".parse().unwrap(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        };
        let mut s = Streak::default();
        assert_eq!(s.push(false, &c), None);
        assert_eq!(s.push(false, &c), None);
        assert_eq!(s.push(true, &c), None);
        assert_eq!(s.push(false, &c), None);
        assert_eq!(s.push(false, &c), None);
        assert_eq!(s.push(false, &c), Some(false));
        assert_eq!(s.push(true, &c), None);
        assert_eq!(s.push(true, &c), Some(true));
    }
}
