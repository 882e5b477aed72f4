//! Reloading the configuration without dropping a request: on `SIGHUP`,
//! the config file is read and validated again and every component is
//! loaded, composed, compiled and `init`ed again (through the compile
//! cache) beside the running gateway. Only when all of it succeeds is the
//! new gateway swapped in, atomically: requests in flight finish on the
//! chain they started on, new ones take the new chain. The key-value store
//! and the metrics carry over, so limits, lockouts and counters survive.
//!
//! What a reload cannot change (the listeners, the admin listener, TLS
//! listeners and certificate paths, `[kv]` and `[telemetry]`) is refused, naming the key:
//! those need a restart. A refused reload changes nothing: the old
//! configuration keeps serving, and the errors are logged.
//!
//! Reloads come from `SIGHUP` (here), `POST /api/v1/reload` (the admin
//! API) and `serve --watch` ([`watch`]).

pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

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
    /// How the last reload went, for the admin API.
    last: std::sync::Mutex<Option<LastReload>>,
}

/// When the last reload was tried, and the errors if it was refused.
#[derive(Debug, Clone)]
pub struct LastReload {
    pub at: SystemTime,
    pub errors: Vec<String>,
}

impl Reloader {
    pub fn new(path: PathBuf, live: Live, current: Config) -> Arc<Self> {
        Arc::new(Self {
            path,
            live,
            current: Mutex::new(current),
            last: Default::default(),
        })
    }

    /// How the last reload went (`None`: none was tried).
    pub fn last(&self) -> Option<LastReload> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The files the serving configuration is read from: the config file
    /// and every component `.wasm` it names.
    pub async fn watched_files(&self) -> Vec<PathBuf> {
        let current = self.current.lock().await;
        let mut files = vec![self.path.clone()];
        for c in &current.components {
            if let crate::config::ComponentSource::File(p) = &c.source
                && !files.contains(p)
            {
                files.push(p.clone());
            }
        }
        files
    }

    /// One reload; the errors when it is refused.
    pub async fn reload(&self) -> Result<(), Vec<String>> {
        let outcome = self.try_reload().await;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(LastReload {
            at: SystemTime::now(),
            errors: outcome.clone().err().unwrap_or_default(),
        });
        outcome
    }

    async fn try_reload(&self) -> Result<(), Vec<String>> {
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
                this.reload_and_log("SIGHUP").await;
            }
        });
    }

    /// One reload, logged with what asked for it.
    pub async fn reload_and_log(&self, trigger: &str) {
        match self.reload().await {
            Ok(()) => tracing::info!(
                routes = self.live.load().routes.len(),
                trigger,
                "configuration reloaded"
            ),
            Err(errors) => tracing::error!(
                errors = %errors.join("; "),
                trigger,
                "configuration reload refused; the previous configuration keeps serving"
            ),
        }
    }
}

/// The settings a reload may not change, each named by its key.
fn fixed_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let restart = "cannot change on reload (restart the gateway to change it)";
    if old.listen != new.listen {
        out.push(format!("server.listen: {restart}"));
    }
    if old.workers != new.workers {
        out.push(format!("server.workers: {restart}"));
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
    if old.telemetry != new.telemetry {
        out.push(format!("telemetry: {restart}"));
    }
    out
}
