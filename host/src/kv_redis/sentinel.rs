//! Following a Sentinel-managed master across failovers.
//!
//! The store talks to the current master through a `ConnectionManager`
//! held in an `ArcSwap`. An error that says the master is gone (the
//! connection refused or dropped, a timeout, or `READONLY` from a node
//! that was demoted to replica) asks the sentinels again, at most once per
//! [`RESOLVE_EVERY`], in one background task; when they name a master that
//! confirms its role, new commands go there. Until the failover completes
//! commands fail fast (within the store timeout) and the component's
//! `on_store_error` decides, as for any store error. So the gateway
//! follows a new master within the sentinels' own failover time plus one
//! store timeout and one [`RESOLVE_EVERY`].

use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redis::aio::ConnectionManager;
use redis::sentinel::SentinelClient;

use super::connect::manager_config;

/// The least time between two questions to the sentinels.
pub const RESOLVE_EVERY: Duration = Duration::from_millis(200);

/// The master the sentinels name, and how to find the next one.
pub struct SentinelMaster {
    current: ArcSwap<ConnectionManager>,
    sentinel: tokio::sync::Mutex<SentinelClient>,
    timeout: Duration,
    /// When the sentinels were last asked (None: never since startup).
    last_resolve: StdMutex<Option<Instant>>,
    /// Counted each time a new master connection replaces the old one.
    pub on_switch: prometheus_client::metrics::counter::Counter,
}

impl SentinelMaster {
    /// Asks the sentinels for the master and connects to it.
    pub async fn connect(
        mut sentinel: SentinelClient,
        timeout: Duration,
        on_switch: prometheus_client::metrics::counter::Counter,
    ) -> redis::RedisResult<Arc<Self>> {
        let manager = resolve(&mut sentinel, timeout).await?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(manager),
            sentinel: tokio::sync::Mutex::new(sentinel),
            timeout,
            last_resolve: StdMutex::new(None),
            on_switch,
        }))
    }

    /// A handle on the current master's connection.
    pub fn connection(&self) -> ConnectionManager {
        (**self.current.load()).clone()
    }

    /// Looks for a new master after an error that suggests the old one is
    /// gone; returns at once (the search runs in the background).
    pub fn on_error(self: &Arc<Self>, e: &redis::RedisError) {
        let master_gone = e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
        if !master_gone {
            return;
        }
        {
            let mut last = self.last_resolve.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < RESOLVE_EVERY) {
                return;
            }
            *last = Some(now);
        }
        let this = self.clone();
        tokio::spawn(async move {
            // One search at a time; a second error waits for this one.
            let Ok(mut sentinel) = this.sentinel.try_lock() else {
                return;
            };
            match resolve(&mut sentinel, this.timeout).await {
                Ok(manager) => {
                    this.current.store(Arc::new(manager));
                    this.on_switch.inc();
                    tracing::info!("shared store: connected to the master the sentinels name");
                }
                Err(e) => {
                    tracing::warn!(kind = ?e.kind(), "shared store: no master reachable through the sentinels yet");
                }
            }
        });
    }
}

async fn resolve(
    sentinel: &mut SentinelClient,
    timeout: Duration,
) -> redis::RedisResult<ConnectionManager> {
    let client = tokio::time::timeout(timeout * 4, sentinel.async_get_client())
        .await
        .map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::Io, "the sentinels did not answer in time"))
        })??;
    client
        .get_connection_manager_with_config(manager_config(timeout))
        .await
}
