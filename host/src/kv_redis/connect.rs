//! Reaching Redis: the validated `[kv]` Redis settings ([`RedisConfig`])
//! and the connection each topology needs, all from the `redis` crate:
//!
//! - **single**: one server through a self-reconnecting
//!   `ConnectionManager`;
//! - **cluster**: the crate's async cluster client, which learns the slot
//!   map from the seed nodes and follows `MOVED` and `ASK` redirections
//!   (a resharding included) by itself;
//! - **sentinel**: the master the sentinels name, followed across
//!   failovers by [`super::sentinel`].
//!
//! `rediss://` URLs use TLS (rustls), with the system's roots or the CA in
//! `redis_ca_file`; an ACL username and password, when configured, are
//! sent on every connection (to sentinels as well). Nothing here logs a
//! URL or a credential.

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{IntoConnectionInfo, RedisResult, TlsCertificates, TlsMode};

/// Where the shared store is, and how to talk to it.
#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    pub topology: Topology,
    /// Connect and per-command timeout.
    pub timeout: Duration,
    /// Redis ACL credentials (from the environment), for every node.
    pub username: Option<String>,
    pub password: Option<String>,
    /// A PEM CA bundle for `rediss://` servers, instead of the system roots.
    pub ca_file: Option<PathBuf>,
}

impl RedisConfig {
    /// One server at `url`, no extra credentials.
    pub fn single(url: String, timeout: Duration) -> Self {
        Self {
            topology: Topology::Single(url),
            timeout,
            username: None,
            password: None,
            ca_file: None,
        }
    }

    /// The topology's name, for logs and metrics.
    pub fn mode(&self) -> &'static str {
        match self.topology {
            Topology::Single(_) => "single",
            Topology::Cluster(_) => "cluster",
            Topology::Sentinel { .. } => "sentinel",
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    /// Never prints URLs or credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("mode", &self.mode())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// How the Redis deployment is laid out.
#[derive(Clone, PartialEq)]
pub enum Topology {
    Single(String),
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
    /// Sentinel addresses and the name of the master they watch.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

/// The manager settings every single-server connection uses.
pub fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2))
}

fn certificates(config: &RedisConfig) -> RedisResult<Option<TlsCertificates>> {
    let Some(path) = &config.ca_file else {
        return Ok(None);
    };
    let root = std::fs::read(path).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "cannot read kv.redis_ca_file",
            e.to_string(),
        ))
    })?;
    Ok(Some(TlsCertificates {
        client_tls: None,
        root_cert: Some(root),
    }))
}

/// A client for one server at `url`, with the configured credentials.
fn client(url: &str, config: &RedisConfig) -> RedisResult<redis::Client> {
    let mut info = url.into_connection_info()?;
    let mut settings = info.redis_settings().clone();
    if let Some(u) = &config.username {
        settings = settings.set_username(u);
    }
    if let Some(p) = &config.password {
        settings = settings.set_password(p);
    }
    info = info.set_redis_settings(settings);
    match certificates(config)? {
        Some(certs) => redis::Client::build_with_tls(info, certs),
        None => redis::Client::open(info),
    }
}

/// Connects to one server (fails fast when it cannot be reached).
pub async fn single(url: &str, config: &RedisConfig) -> RedisResult<ConnectionManager> {
    client(url, config)?
        .get_connection_manager_with_config(manager_config(config.timeout))
        .await
}

/// Connects to a cluster through its seed nodes.
pub async fn cluster(seeds: &[String], config: &RedisConfig) -> RedisResult<ClusterConnection> {
    let mut builder = ClusterClient::builder(seeds.iter().map(String::as_str))
        .connection_timeout(config.timeout)
        .response_timeout(config.timeout)
        .retries(3);
    if let Some(u) = &config.username {
        builder = builder.username(u);
    }
    if let Some(p) = &config.password {
        builder = builder.password(p);
    }
    if seeds.iter().any(|s| s.starts_with("rediss://")) {
        builder = builder.tls(TlsMode::Secure);
    }
    if let Some(certs) = certificates(config)? {
        builder = builder.certs(certs);
    }
    builder.build()?.get_async_connection().await
}

/// A sentinel client for `master`, with the configured credentials and
/// TLS for both the sentinels and the master.
pub fn sentinel_client(
    sentinels: &[String],
    master: &str,
    config: &RedisConfig,
) -> RedisResult<SentinelClient> {
    let mut addrs = Vec::new();
    for s in sentinels {
        addrs.push(s.as_str().into_connection_info()?.addr().clone());
    }
    let tls = sentinels.iter().any(|s| s.starts_with("rediss://"));
    let mut b = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?;
    if tls {
        b = b
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(TlsMode::Secure);
    }
    if let Some(certs) = certificates(config)? {
        b = b
            .set_client_to_redis_certificates(certs.clone())
            .set_client_to_sentinel_certificates(certs);
    }
    if let Some(u) = &config.username {
        b = b
            .set_client_to_redis_username(u)
            .set_client_to_sentinel_username(u);
    }
    if let Some(p) = &config.password {
        b = b
            .set_client_to_redis_password(p)
            .set_client_to_sentinel_password(p);
    }
    b.build()
}
