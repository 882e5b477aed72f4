//! The shared key-value backend: a Redis server, so several gateways (and
//! Spin apps on Spin's Redis backend) enforce one set of limits.
//!
//! Every operation is one Redis command or one server-side script, so it is
//! atomic on the server: `increment` is `INCRBY`, and compare-and-swap
//! compares the value read at `cas.new` inside a script. Every write
//! refreshes a TTL of the configured idle expiry, so abandoned keys leave
//! Redis as they leave the embedded store. Each call is bounded by the
//! configured timeout; a server that is down or slow is an error the
//! component sees (and decides on: rate-limit fails closed by default).

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Why a Redis operation failed. The detail stays in the gateway's debug
/// log; components only learn that the store is unavailable.
#[derive(Debug, thiserror::Error)]
pub enum RedisKvError {
    #[error("the shared store is unavailable")]
    Unavailable(#[source] redis::RedisError),
}

/// A pooled, self-reconnecting connection to one Redis server.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    ttl_secs: u64,
}

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
    /// Connects to `url` (fails fast when the server cannot be reached).
    pub async fn connect(
        url: &str,
        timeout: Duration,
        idle_expiry: Duration,
    ) -> Result<Self, RedisKvError> {
        let client = redis::Client::open(url).map_err(RedisKvError::Unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(RedisKvError::Unavailable)?;
        Ok(Self {
            conn,
            ttl_secs: idle_expiry.as_secs().max(1),
        })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RedisKvError> {
        let mut c = self.conn.clone();
        c.get(key).await.map_err(RedisKvError::Unavailable)
    }

    pub async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), RedisKvError> {
        let mut c = self.conn.clone();
        c.set_ex(key, value, self.ttl_secs)
            .await
            .map_err(RedisKvError::Unavailable)
    }

    pub async fn delete(&self, key: &str) -> Result<(), RedisKvError> {
        let mut c = self.conn.clone();
        c.del(key).await.map_err(RedisKvError::Unavailable)
    }

    pub async fn exists(&self, key: &str) -> Result<bool, RedisKvError> {
        let mut c = self.conn.clone();
        c.exists(key).await.map_err(RedisKvError::Unavailable)
    }

    /// Every key, sorted (by `SCAN`, so the server is never blocked).
    pub async fn keys(&self) -> Result<Vec<String>, RedisKvError> {
        let mut c = self.conn.clone();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .map_err(RedisKvError::Unavailable)?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// `INCRBY`, and a TTL refresh in the same transaction.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, RedisKvError> {
        let mut c = self.conn.clone();
        let (n,): (i64,) = redis::pipe()
            .atomic()
            .incr(key, delta)
            .expire(key, self.ttl_secs as i64)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(RedisKvError::Unavailable)?;
        Ok(n)
    }

    /// Writes `value` only if the key still holds `expected` (`None`:
    /// still absent); otherwise returns what it holds now.
    pub async fn cas_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
    ) -> Result<Result<(), Option<Vec<u8>>>, RedisKvError> {
        let mut c = self.conn.clone();
        // "0" = expect absent; "1" + bytes = expect exactly these bytes.
        let expect: Vec<u8> = match expected {
            None => b"0".to_vec(),
            Some(v) => [b"1".as_slice(), v].concat(),
        };
        let answer: Vec<redis::Value> = redis::Script::new(CAS_SCRIPT)
            .key(key)
            .arg(expect)
            .arg(value)
            .arg(self.ttl_secs)
            .invoke_async(&mut c)
            .await
            .map_err(RedisKvError::Unavailable)?;
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
