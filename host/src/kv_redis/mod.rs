//! The shared key-value backend: Redis (one server, a Redis Cluster, or a
//! Sentinel-managed master; see [`connect`]), so several gateways (and
//! Spin apps on Spin's Redis backend) enforce one set of limits.
//!
//! Every operation is one Redis command or one server-side script on one
//! key, so it is atomic on the server and, in a cluster, never crosses a
//! hash slot: `increment` is `INCRBY` and a TTL refresh in one script,
//! and compare-and-swap compares the value read at `cas.new` inside a
//! script. (No decision needs two keys in one atomic step, so keys carry
//! no hash tags: each lands on its own slot.) Every write refreshes a TTL
//! of the configured idle expiry, so abandoned keys leave Redis as they
//! leave the embedded store. Each call is bounded by the configured
//! timeout; a server that is down or slow is an error the component sees
//! (and decides on: rate-limit fails closed by default). Every call is
//! timed and its failures counted ([`crate::telemetry::StoreMetrics`]).

pub mod connect;
pub mod sentinel;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Cmd, Pipeline, RedisFuture, Value};

use crate::telemetry::StoreMetrics;
use connect::{RedisConfig, Topology};
use sentinel::SentinelMaster;

/// Why a Redis operation failed. The detail stays in the gateway's debug
/// log; components only learn that the store is unavailable.
#[derive(Debug, thiserror::Error)]
pub enum RedisKvError {
    #[error("the shared store is unavailable")]
    Unavailable(#[source] redis::RedisError),
}

impl From<redis::RedisError> for RedisKvError {
    fn from(e: redis::RedisError) -> Self {
        RedisKvError::Unavailable(e)
    }
}

/// A connection to the shared store, whatever its topology.
#[derive(Clone)]
pub struct RedisStore {
    backend: Backend,
    ttl_secs: u64,
    metrics: StoreMetrics,
}

#[derive(Clone)]
enum Backend {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelMaster>),
}

/// One command's connection: a single server's or the cluster's.
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// `INCRBY` and the TTL refresh, atomically, on one key (a script rather
/// than `MULTI`, which cluster pipelines do not carry).
const INCREMENT_SCRIPT: &str = r"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return n
";

/// Sets `KEYS[1]` to `ARGV[2]` (with TTL `ARGV[3]`) only if its value is
/// still `ARGV[1]`; `ARGV[1]` empty with a leading `0` flag means "absent".
/// Returns `{1}` on success or `{0, current}` (current absent: `{0}`).
const CAS_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
local want_absent = ARGV[1] == '0'
local matches
if want_absent then
  matches = (cur == false)
else
  matches = (cur ~= false) and (cur == string.sub(ARGV[1], 2))
end
if matches then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return {1}
end
if cur == false then return {0} end
return {0, cur}
";

impl RedisStore {
    /// Connects as `config` says (fails fast when the store cannot be
    /// reached).
    pub async fn connect(
        config: &RedisConfig,
        idle_expiry: Duration,
        metrics: StoreMetrics,
    ) -> Result<Self, RedisKvError> {
        let backend = match &config.topology {
            Topology::Single(url) => Backend::Single(connect::single(url, config).await?),
            Topology::Cluster(seeds) => Backend::Cluster(connect::cluster(seeds, config).await?),
            Topology::Sentinel { sentinels, master } => {
                let client = connect::sentinel_client(sentinels, master, config)?;
                Backend::Sentinel(
                    SentinelMaster::connect(client, config.timeout, metrics.reconnects.clone())
                        .await?,
                )
            }
        };
        metrics.up.store(true, Ordering::Relaxed);
        Ok(Self {
            backend,
            ttl_secs: idle_expiry.as_secs().max(1),
            metrics,
        })
    }

    fn conn(&self) -> Conn {
        match &self.backend {
            Backend::Single(c) => Conn::Single(c.clone()),
            Backend::Cluster(c) => Conn::Cluster(c.clone()),
            Backend::Sentinel(s) => Conn::Single(s.connection()),
        }
    }

    /// Runs one call: times it, counts a failure, notes recovery, and
    /// lets a sentinel-managed store look for a new master.
    async fn call<T, F>(&self, f: impl FnOnce(Conn) -> F) -> Result<T, RedisKvError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let result = f(self.conn()).await;
        self.metrics
            .seconds
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(v) => {
                if !self.metrics.up.swap(true, Ordering::Relaxed) {
                    self.metrics.reconnects.inc();
                    tracing::info!("shared store: answering again");
                }
                Ok(v)
            }
            Err(e) => {
                self.metrics.errors.inc();
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    self.metrics.up.store(false, Ordering::Relaxed);
                }
                if let Backend::Sentinel(s) = &self.backend {
                    s.on_error(&e);
                }
                Err(RedisKvError::Unavailable(e))
            }
        }
    }

    /// `PING`, for readiness (run every second by [`Self::spawn_pinger`]).
    pub async fn ping(&self) -> Result<(), RedisKvError> {
        self.call(|mut c| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Pings the store every second so `/readyz` and the metrics notice an
    /// outage (and the recovery) even when no request needs the store.
    pub fn spawn_pinger(&self) {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if store.ping().await.is_err() {
                    store.metrics.up.store(false, Ordering::Relaxed);
                }
            }
        });
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RedisKvError> {
        self.call(|mut c| async move { c.get(key).await }).await
    }

    pub async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), RedisKvError> {
        let ttl = self.ttl_secs;
        self.call(|mut c| async move { c.set_ex(key, value, ttl).await })
            .await
    }

    pub async fn delete(&self, key: &str) -> Result<(), RedisKvError> {
        self.call(|mut c| async move { c.del(key).await }).await
    }

    pub async fn exists(&self, key: &str) -> Result<bool, RedisKvError> {
        self.call(|mut c| async move { c.exists(key).await }).await
    }

    /// Every key, sorted: by `SCAN` on one server (never blocking it), by
    /// `KEYS` on every cluster master (the cluster client fans it out).
    pub async fn keys(&self) -> Result<Vec<String>, RedisKvError> {
        let cluster = matches!(self.backend, Backend::Cluster(_));
        let mut keys: Vec<String> = self
            .call(|mut c| async move {
                if cluster {
                    return redis::cmd("KEYS").arg("*").query_async(&mut c).await;
                }
                let mut keys: Vec<String> = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c)
                        .await?;
                    keys.extend(batch);
                    if next == 0 {
                        return Ok(keys);
                    }
                    cursor = next;
                }
            })
            .await?;
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// `INCRBY`, and a TTL refresh in the same script.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, RedisKvError> {
        let ttl = self.ttl_secs;
        self.call(|mut c| async move {
            redis::Script::new(INCREMENT_SCRIPT)
                .key(key)
                .arg(delta)
                .arg(ttl)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    /// Writes `value` only if the key still holds `expected` (`None`:
    /// still absent); otherwise returns what it holds now.
    pub async fn cas_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
    ) -> Result<Result<(), Option<Vec<u8>>>, RedisKvError> {
        // "0" = expect absent; "1" + bytes = expect exactly these bytes.
        let expect: Vec<u8> = match expected {
            None => b"0".to_vec(),
            Some(v) => [b"1".as_slice(), v].concat(),
        };
        let ttl = self.ttl_secs;
        let answer: Vec<redis::Value> = self
            .call(|mut c| async move {
                redis::Script::new(CAS_SCRIPT)
                    .key(key)
                    .arg(expect)
                    .arg(value)
                    .arg(ttl)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match answer.as_slice() {
            [redis::Value::Int(1)] => Ok(Ok(())),
            [redis::Value::Int(0)] => Ok(Err(None)),
            [redis::Value::Int(0), redis::Value::BulkString(cur)] => Ok(Err(Some(cur.clone()))),
            _ => Err(RedisKvError::Unavailable(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "unexpected compare-and-swap answer",
            )))),
        }
    }
}
