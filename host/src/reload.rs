//! Reloading the configuration without dropping a request: on `SIGHUP`,
//! the config file is read and validated again and every component is
//! loaded, composed, compiled and `init`ed again (through the compile
//! cache) beside the running gateway. Only when all of it succeeds is the
//! new gateway swapped in, atomically: requests in flight finish on the
//! chain they started on, new ones take the new chain. The key-value store
//! and the metrics carry over, so limits, lockouts and counters survive.
//!
//! What a reload cannot change (the listeners, the admin listener, TLS
//! listeners and certificate paths, and `[kv]`) is refused, naming the key:
//! those need a restart. A refused reload changes nothing: the old
//! configuration keeps serving, and the errors are logged.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::config::{self, Config};
use crate::gateway;
use crate::ingress::Live;

/// Re-reads `path` and swaps the running gateway when it is valid.
pub struct Reloader {
    path: PathBuf,
    live: Live,
    /// The configuration now serving; one reload at a time.
    current: Mutex<Config>,
}

impl Reloader {
    pub fn new(path: PathBuf, live: Live, current: Config) -> Arc<Self> {
        Arc::new(Self {
            path,
            live,
            current: Mutex::new(current),
        })
    }

    /// One reload; the errors when it is refused.
    pub async fn reload(&self) -> Result<(), Vec<String>> {
        let mut current = self.current.lock().await;
        let next = config::load(&self.path, &config::Env::process()).map_err(|e| e.0)?;
        let fixed = fixed_changes(&current, &next);
        if !fixed.is_empty() {
            return Err(fixed);
        }
        let old = self.live.load_full();
        let new = gateway::rebuild(&next, &old)
            .await
            .map_err(|e| vec![format!("{e:#}")])?;
        new.start_background(false);
        new.metrics
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.live.store(Arc::new(new));
        *current = next;
        Ok(())
    }

    /// Reloads on every `SIGHUP`, logging the outcome.
    pub fn on_sighup(self: &Arc<Self>) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot listen for SIGHUP: configuration reload is off");
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match this.reload().await {
                    Ok(()) => tracing::info!(
                        routes = this.live.load().routes.len(),
                        "configuration reloaded"
                    ),
                    Err(errors) => tracing::error!(
                        errors = %errors.join("; "),
                        "configuration reload refused; the previous configuration keeps serving"
                    ),
                }
            }
        });
    }
}

/// The settings a reload may not change, each named by its key.
fn fixed_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let restart = "cannot change on reload (restart the gateway to change it)";
    if old.listen != new.listen {
        out.push(format!("server.listen: {restart}"));
    }
    if old.admin_listen != new.admin_listen {
        out.push(format!("server.admin_listen: {restart}"));
    }
    if old.admin_token != new.admin_token {
        out.push(format!("server.admin_token: {restart}"));
    }
    if old.tls != new.tls {
        out.push(format!("server.tls: {restart}"));
    }
    if old.kv != new.kv {
        out.push(format!("kv: {restart}"));
    }
    out
}
