//! The backend behind `wasi:keyvalue`: the embedded [`MemoryStore`] (the
//! default, nothing to install) or a shared [`RedisStore`]. One async API
//! for both; a compare-and-swap read carries whatever its backend compares
//! against (a version for the embedded store, the value for Redis).

use std::sync::Arc;

use crate::kv::{KvError, MemoryStore, Version};
use crate::kv_redis::RedisStore;

/// Where a gateway keeps component state.
#[derive(Clone)]
pub enum KvBackend {
    Memory(Arc<MemoryStore>),
    Redis(RedisStore),
}

/// Why a store operation failed, as components may learn it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The operation does not fit the value (the embedded store's errors).
    #[error(transparent)]
    Value(#[from] KvError),
    #[error("the store is unavailable")]
    Unavailable,
}

/// What `cas.new` read: the value, and what the swap is checked against.
#[derive(Debug, Clone)]
pub struct CasRead {
    pub value: Option<Vec<u8>>,
    version: Version,
}

impl CasRead {
    /// What the embedded store's `cas_read` returned.
    pub fn memory((value, version): (Option<Vec<u8>>, Version)) -> Self {
        CasRead { value, version }
    }

    /// The embedded store's version of the read.
    pub fn version(&self) -> Version {
        self.version
    }
}

type Result<T> = std::result::Result<T, StoreError>;

fn unavailable(e: crate::kv_redis::RedisKvError) -> StoreError {
    // Components see only "unavailable"; operators get the cause here.
    tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "shared store error");
    StoreError::Unavailable
}

impl KvBackend {
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self {
            KvBackend::Memory(m) => Ok(m.get(key)),
            KvBackend::Redis(r) => r.get(key).await.map_err(unavailable),
        }
    }

    pub async fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        match self {
            KvBackend::Memory(m) => Ok(m.set(key, value)),
            KvBackend::Redis(r) => r.set(key, value).await.map_err(unavailable),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        match self {
            KvBackend::Memory(m) => Ok(m.delete(key)),
            KvBackend::Redis(r) => r.delete(key).await.map_err(unavailable),
        }
    }

    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self {
            KvBackend::Memory(m) => Ok(m.exists(key)),
            KvBackend::Redis(r) => r.exists(key).await.map_err(unavailable),
        }
    }

    /// Every key, sorted.
    pub async fn keys(&self) -> Result<Vec<String>> {
        match self {
            KvBackend::Memory(m) => Ok(m.keys()),
            KvBackend::Redis(r) => r.keys().await.map_err(unavailable),
        }
    }

    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        match self {
            KvBackend::Memory(m) => Ok(m.increment(key, delta)?),
            KvBackend::Redis(r) => r.increment(key, delta).await.map_err(unavailable),
        }
    }

    pub async fn cas_read(&self, key: &str) -> Result<CasRead> {
        match self {
            KvBackend::Memory(m) => {
                let (value, version) = m.cas_read(key);
                Ok(CasRead { value, version })
            }
            KvBackend::Redis(r) => Ok(CasRead {
                value: r.get(key).await.map_err(unavailable)?,
                version: Version::default(),
            }),
        }
    }

    /// Writes `value` if the key is unchanged since `read`; otherwise
    /// returns a fresh read to retry from.
    pub async fn cas_swap(
        &self,
        key: &str,
        read: &CasRead,
        value: Vec<u8>,
    ) -> Result<std::result::Result<(), CasRead>> {
        match self {
            KvBackend::Memory(m) => Ok(m
                .cas_swap(key, read.version, value)
                .map_err(|(value, version)| CasRead { value, version })),
            KvBackend::Redis(r) => Ok(r
                .cas_swap(key, read.value.as_deref(), value)
                .await
                .map_err(unavailable)?
                .map_err(|value| CasRead {
                    value,
                    version: Version::default(),
                })),
        }
    }
}
