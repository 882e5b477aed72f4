//! The embedded key-value store behind `wasi:keyvalue`: sharded, bounded in
//! entry count, with idle expiry, and with increment and compare-and-swap
//! that are atomic with respect to every other operation on the same key.
//!
//! Values are opaque bytes. `increment` keeps its counter as 8 bytes of
//! little-endian `i64` (what Spin's default store does); callers should only
//! use the number it returns.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seeded per process, so keys chosen by clients cannot be crafted to
/// collide (foldhash's `quality` variant: DoS-resistant, several times
/// faster than SipHash on short keys like ours).
type Hasher = foldhash::quality::RandomState;

const SHARDS: usize = 64;

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("the value at this key is not a counter")]
    NotACounter,
    #[error("counter overflow")]
    Overflow,
}

/// A version token for compare-and-swap. Every write bumps a key's version;
/// a key that does not exist has version 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Version(u64);

struct Entry {
    value: Vec<u8>,
    version: u64,
    touched: Instant,
}

struct Shard {
    map: HashMap<String, Entry, Hasher>,
    /// Versions are unique per shard, so a deleted-then-recreated key never
    /// repeats a version that a CAS handle might still hold.
    next_version: u64,
}

/// The in-memory store. Cheap to share behind an `Arc`.
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    hasher: Hasher,
    per_shard: usize,
    idle: Duration,
    /// Fault injection (`[kv] simulate_broken_cas`): every compare-and-swap
    /// reports a conflict and writes nothing.
    broken_cas: bool,
}

impl MemoryStore {
    /// Makes every compare-and-swap fail as Spin 4.1's Redis store's does:
    /// for testing how gates behave on such a store.
    pub fn with_broken_cas(mut self) -> Self {
        self.broken_cas = true;
        self
    }

    pub fn new(max_entries: usize, idle_expiry: Duration) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::default(),
                        next_version: 1,
                    })
                })
                .collect(),
            hasher: Hasher::default(),
            per_shard: max_entries.div_ceil(SHARDS).max(1),
            idle: idle_expiry,
            broken_cas: false,
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        // A poisoned shard only means another thread panicked mid-operation;
        // every operation leaves the map consistent, so keep using it.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry at `key` if it has not idled out, touched. An idle entry
    /// reads as absent; `put` overwrites it and `sweep` removes it.
    fn live<'a>(&self, shard: &'a mut Shard, key: &str, now: Instant) -> Option<&'a mut Entry> {
        let idle = self.idle;
        let e = shard
            .map
            .get_mut(key)
            .filter(|e| now.duration_since(e.touched) <= idle)?;
        e.touched = now;
        Some(e)
    }

    /// Stores `value`, making room first if the shard is full.
    fn put(&self, shard: &mut Shard, key: &str, value: Vec<u8>, now: Instant) {
        let version = shard.next_version;
        shard.next_version += 1;
        if let Some(e) = shard.map.get_mut(key) {
            e.value = value;
            e.version = version;
            e.touched = now;
            return;
        }
        if shard.map.len() >= self.per_shard {
            let idle = self.idle;
            shard
                .map
                .retain(|_, e| now.duration_since(e.touched) <= idle);
        }
        if shard.map.len() >= self.per_shard {
            // Still full of live keys: drop the least recently used one.
            if let Some(oldest) = shard
                .map
                .iter()
                .min_by_key(|(_, e)| e.touched)
                .map(|(k, _)| k.clone())
            {
                shard.map.remove(&oldest);
            }
        }
        shard.map.insert(
            key.to_string(),
            Entry {
                value,
                version,
                touched: now,
            },
        );
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut s = self.shard(key);
        self.live(&mut s, key, Instant::now())
            .map(|e| e.value.clone())
    }

    pub fn set(&self, key: &str, value: Vec<u8>) {
        let mut s = self.shard(key);
        self.put(&mut s, key, value, Instant::now());
    }

    pub fn delete(&self, key: &str) {
        self.shard(key).map.remove(key);
    }

    pub fn exists(&self, key: &str) -> bool {
        let mut s = self.shard(key);
        self.live(&mut s, key, Instant::now()).is_some()
    }

    /// Every live key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let now = Instant::now();
        let mut keys = Vec::new();
        for shard in &self.shards {
            let s = shard.lock().unwrap_or_else(|p| p.into_inner());
            keys.extend(
                s.map
                    .iter()
                    .filter(|(_, e)| now.duration_since(e.touched) <= self.idle)
                    .map(|(k, _)| k.clone()),
            );
        }
        keys.sort();
        keys
    }

    /// Adds `delta` to the counter at `key` (0 if absent) and returns the result.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let now = Instant::now();
        let mut s = self.shard(key);
        let current = match self.live(&mut s, key, now) {
            None => 0,
            Some(e) => decode_counter(&e.value)?,
        };
        if delta == 0 {
            // A read (the portable way to read a counter): nothing to
            // write, and no entry made for a key nobody has counted.
            return Ok(current);
        }
        let next = current.checked_add(delta).ok_or(KvError::Overflow)?;
        self.put(&mut s, key, next.to_le_bytes().to_vec(), now);
        Ok(next)
    }

    /// Reads the value and version a compare-and-swap will be checked against.
    pub fn cas_read(&self, key: &str) -> (Option<Vec<u8>>, Version) {
        let mut s = self.shard(key);
        match self.live(&mut s, key, Instant::now()) {
            Some(e) => (Some(e.value.clone()), Version(e.version)),
            None => (None, Version(0)),
        }
    }

    /// Writes `value` only if `key` is still at `expected`; otherwise returns
    /// the current value and version so the caller can retry.
    pub fn cas_swap(
        &self,
        key: &str,
        expected: Version,
        value: Vec<u8>,
    ) -> Result<(), (Option<Vec<u8>>, Version)> {
        let now = Instant::now();
        let mut s = self.shard(key);
        let version = s.next_version;
        match self.live(&mut s, key, now) {
            Some(e) if self.broken_cas => Err((Some(e.value.clone()), Version(e.version))),
            None if self.broken_cas => Err((None, Version(0))),
            Some(e) if e.version == expected.0 => {
                // Swapped in place: one lookup on the hot path.
                e.value = value;
                e.version = version;
                s.next_version += 1;
                Ok(())
            }
            Some(e) => Err((Some(e.value.clone()), Version(e.version))),
            None if expected.0 == 0 => {
                self.put(&mut s, key, value, now);
                Ok(())
            }
            None => Err((None, Version(0))),
        }
    }

    /// Drops every idle entry; the server calls this periodically.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut removed = 0;
        for shard in &self.shards {
            let mut s = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = s.map.len();
            s.map
                .retain(|_, e| now.duration_since(e.touched) <= self.idle);
            removed += before - s.map.len();
        }
        removed
    }

    /// Number of entries held, live or not yet swept.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).map.len())
            .sum()
    }
}

fn decode_counter(bytes: &[u8]) -> Result<i64, KvError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| KvError::NotACounter)?;
    Ok(i64::from_le_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn increment_is_exact_under_contention() {
        let store = Arc::new(MemoryStore::new(1000, Duration::from_secs(60)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        s.increment("n", 1).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(store.increment("n", 0).unwrap(), 80_000);
    }

    #[test]
    fn cas_loop_is_exact_under_contention() {
        let store = Arc::new(MemoryStore::new(1000, Duration::from_secs(60)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        let (mut value, mut version) = s.cas_read("c");
                        loop {
                            let n = value
                                .as_deref()
                                .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
                            match s.cas_swap("c", version, (n + 1).to_le_bytes().to_vec()) {
                                Ok(()) => break,
                                Err((v, ver)) => (value, version) = (v, ver),
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let v = store.get("c").unwrap();
        assert_eq!(u64::from_le_bytes(v.try_into().unwrap()), 16_000);
    }

    #[test]
    fn stale_cas_fails_and_reports_current() {
        let store = MemoryStore::new(10, Duration::from_secs(60));
        let (_, v0) = store.cas_read("k");
        store.set("k", b"other".to_vec());
        let (cur, v1) = store.cas_swap("k", v0, b"mine".to_vec()).unwrap_err();
        assert_eq!(cur.as_deref(), Some(&b"other"[..]));
        store.cas_swap("k", v1, b"mine".to_vec()).unwrap();
        assert_eq!(store.get("k").as_deref(), Some(&b"mine"[..]));
    }

    #[test]
    fn a_flood_of_keys_stays_bounded() {
        let store = MemoryStore::new(640, Duration::from_secs(60));
        for i in 0..100_000 {
            store.set(&format!("k{i}"), vec![1]);
        }
        assert!(store.len() <= 640, "{} entries", store.len());
        // The newest key survives eviction.
        assert!(store.exists("k99999"));
    }

    #[test]
    fn idle_entries_expire() {
        let store = MemoryStore::new(100, Duration::from_millis(20));
        store.set("a", vec![1]);
        std::thread::sleep(Duration::from_millis(40));
        // Idle reads as absent at once, for every kind of read.
        assert_eq!(store.get("a"), None);
        assert!(!store.exists("a"));
        assert_eq!(store.cas_read("a"), (None, Version(0)));
        assert!(store.keys().is_empty());
        store.set("b", vec![1]);
        std::thread::sleep(Duration::from_millis(40));
        // The sweep frees both idle entries.
        assert_eq!(store.len(), 2);
        assert_eq!(store.sweep(), 2);
        assert_eq!(store.len(), 0);
        // A swap against "absent" succeeds on a key that idled out.
        store.set("c", vec![1]);
        std::thread::sleep(Duration::from_millis(40));
        store.cas_swap("c", Version(0), vec![2]).unwrap();
        assert_eq!(store.get("c"), Some(vec![2]));
    }

    #[test]
    fn increment_rejects_non_counters() {
        let store = MemoryStore::new(10, Duration::from_secs(60));
        store.set("s", b"text".to_vec());
        assert_eq!(store.increment("s", 1), Err(KvError::NotACounter));
    }

    #[test]
    fn reading_a_counter_by_adding_zero_writes_nothing() {
        let store = MemoryStore::new(10, Duration::from_secs(60));
        assert_eq!(store.increment("c", 0), Ok(0));
        assert!(!store.exists("c"), "a read must not make an entry");
        assert_eq!(store.increment("c", 3), Ok(3));
        let (_, version) = store.cas_read("c");
        assert_eq!(store.increment("c", 0), Ok(3));
        assert_eq!(
            store.cas_read("c").1,
            version,
            "a read must not bump the version"
        );
    }
}
