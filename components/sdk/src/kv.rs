//! The key-value store (`wasi:keyvalue@0.2.0-draft2`): plain get/set, and
//! the two atomic operations that exact counters need: `increment` and a
//! compare-and-swap loop. On Spin the middleware must inherit
//! `key_value_stores`; on Tollgate the component lists them.

use std::cell::RefCell;
use std::rc::Rc;

use spin_sdk::experimental::wasi::keyvalue::{atomics, store};

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store is not granted to this component, or does not exist.
    Denied,
    /// The backend failed.
    Backend(String),
    /// A compare-and-swap kept conflicting beyond the retry budget.
    Contended,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Denied => f.write_str("key-value store access denied"),
            StoreError::Backend(e) => write!(f, "key-value store error: {e}"),
            StoreError::Contended => f.write_str("compare-and-swap contention"),
        }
    }
}

impl From<store::Error> for StoreError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::NoSuchStore | store::Error::AccessDenied => StoreError::Denied,
            store::Error::Other(s) => StoreError::Backend(s),
        }
    }
}

/// An open store.
pub struct Store(Rc<store::Bucket>);

thread_local! {
    /// The stores this instance has opened, kept for its later requests: a
    /// handle stays valid for the instance's life, and opening costs a host
    /// call. (A wasm instance has one thread; failures are not kept.)
    static OPEN: RefCell<Vec<(String, Rc<store::Bucket>)>> = const { RefCell::new(Vec::new()) };
}

impl Store {
    /// Opens the store with this label (`default` unless configured).
    pub fn open(label: &str) -> Result<Self, StoreError> {
        OPEN.with_borrow_mut(|open| {
            if let Some((_, bucket)) = open.iter().find(|(l, _)| l == label) {
                return Ok(Self(bucket.clone()));
            }
            let bucket = Rc::new(store::open(label)?);
            open.push((label.to_owned(), bucket.clone()));
            Ok(Self(bucket))
        })
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(key)?)
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        Ok(self.0.set(key, value)?)
    }

    pub fn delete(&self, key: &str) -> Result<(), StoreError> {
        Ok(self.0.delete(key)?)
    }

    /// Atomically adds `delta` and returns the new value. Never `set` or
    /// `get` a key you increment: each backend encodes counters its own way.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        Ok(atomics::increment(&self.0, key, delta)?)
    }

    /// Atomically replaces the value at `key` with `update(current)`,
    /// retrying on conflict up to `attempts` times. `update` returns the new
    /// value and a result to hand back, or `None` to leave the value as is.
    pub fn update<R>(
        &self,
        key: &str,
        attempts: usize,
        mut update: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, R),
    ) -> Result<R, StoreError> {
        let mut cas = atomics::Cas::new(&self.0, key)?;
        for _ in 0..attempts {
            let current = cas.current()?;
            let (next, result) = update(current.as_deref());
            let Some(next) = next else {
                return Ok(result);
            };
            match atomics::swap(cas, &next) {
                Ok(()) => return Ok(result),
                Err(atomics::CasError::CasFailed(fresh)) => cas = fresh,
                Err(atomics::CasError::StoreError(e)) => return Err(e.into()),
            }
        }
        Err(StoreError::Contended)
    }
}
