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
    /// Compare-and-swap keeps failing though nobody else writes the key:
    /// the store cannot do it (see [`update_with`]).
    CasBroken,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Denied => f.write_str("key-value store access denied"),
            StoreError::Backend(e) => write!(f, "key-value store error: {e}"),
            StoreError::Contended => f.write_str("compare-and-swap contention"),
            StoreError::CasBroken => f.write_str("compare-and-swap never succeeds on this store"),
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
        update: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, R),
    ) -> Result<R, StoreError> {
        let mut cas = SpinCas {
            bucket: &self.0,
            key,
            handle: None,
        };
        update_with(&mut cas, attempts, update)
    }
}

/// A compare-and-swap on one key, as [`update_with`] drives it.
pub trait Swap {
    /// Reads the key; the next [`Swap::swap`] is checked against this read.
    fn current(&mut self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes `value` if the key still holds what `current` read; `false`
    /// on a conflict. Either way, `current` must be called again first.
    fn swap(&mut self, value: &[u8]) -> Result<bool, StoreError>;
}

struct SpinCas<'a> {
    bucket: &'a store::Bucket,
    key: &'a str,
    handle: Option<atomics::Cas>,
}

impl Swap for SpinCas<'_> {
    fn current(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        let cas = match self.handle.take() {
            Some(cas) => cas,
            None => atomics::Cas::new(self.bucket, self.key)?,
        };
        let value = cas.current()?;
        self.handle = Some(cas);
        Ok(value)
    }

    fn swap(&mut self, value: &[u8]) -> Result<bool, StoreError> {
        let Some(cas) = self.handle.take() else {
            return Err(StoreError::Backend(
                "compare-and-swap without a read".into(),
            ));
        };
        match atomics::swap(cas, value) {
            Ok(()) => Ok(true),
            // The fresh handle carries the fresh read.
            Err(atomics::CasError::CasFailed(fresh)) => {
                self.handle = Some(fresh);
                Ok(false)
            }
            Err(atomics::CasError::StoreError(e)) => Err(e.into()),
        }
    }
}

/// Failed probes in a row before a store's compare-and-swap counts as
/// broken.
const BROKEN_AFTER: usize = 2;

/// The compare-and-swap loop behind [`Store::update`].
///
/// A conflict normally means another writer changed the key. When the key
/// afterwards holds what it held before, or exactly what this loop tried
/// to write (another writer may have computed the same value, or the
/// failed write landed anyway, as on Spin 4.1's Redis store), the store is
/// probed with a swap that changes nothing: a working compare-and-swap
/// takes it unless someone writes the key meanwhile. When that fails
/// [`BROKEN_AFTER`] times in a row on an unchanged key, retrying would
/// only burn attempts (and, where failed writes land, tokens): that is
/// [`StoreError::CasBroken`].
pub fn update_with<S: Swap, R>(
    cas: &mut S,
    attempts: usize,
    mut update: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, R),
) -> Result<R, StoreError> {
    let mut current = cas.current()?;
    for _ in 0..attempts {
        let (next, result) = update(current.as_deref());
        let Some(next) = next else {
            return Ok(result);
        };
        if cas.swap(&next)? {
            return Ok(result);
        }
        let fresh = cas.current()?;
        current = if fresh == current || fresh.as_deref() == Some(&next[..]) {
            if cas_is_broken(cas, fresh)? {
                return Err(StoreError::CasBroken);
            }
            cas.current()?
        } else {
            fresh
        };
    }
    Err(StoreError::Contended)
}

/// Probes `cas`, which just read `value`, with swaps that change nothing.
fn cas_is_broken<S: Swap>(cas: &mut S, mut value: Option<Vec<u8>>) -> Result<bool, StoreError> {
    for _ in 0..BROKEN_AFTER {
        let Some(v) = value else {
            // Nothing to write back: a key that stays absent after a
            // failed swap is as telling.
            value = cas.current()?;
            if value.is_some() {
                return Ok(false);
            }
            continue;
        };
        if cas.swap(&v)? {
            return Ok(false);
        }
        let again = cas.current()?;
        if again.as_deref() != Some(&v[..]) {
            return Ok(false); // someone else wrote: contention
        }
        value = again;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store double. `broken`: no swap succeeds (`lands`: the "failed"
    /// write happens anyway). `rivals`: before each of our next `rivals`
    /// writes that change the value, a rival writes that same value first,
    /// so ours conflicts on a value equal to ours.
    #[derive(Default)]
    struct Double {
        value: Option<Vec<u8>>,
        broken: bool,
        lands: bool,
        rivals: usize,
        swaps: usize,
    }

    impl Swap for Double {
        fn current(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.value.clone())
        }
        fn swap(&mut self, value: &[u8]) -> Result<bool, StoreError> {
            self.swaps += 1;
            if self.rivals > 0 && self.value.as_deref() != Some(value) {
                self.rivals -= 1;
                self.value = Some(value.to_vec());
                return Ok(false);
            }
            if self.broken {
                if self.lands {
                    self.value = Some(value.to_vec());
                }
                return Ok(false);
            }
            self.value = Some(value.to_vec());
            Ok(true)
        }
    }

    /// A counter as a byte string: each update adds one byte.
    fn bump(current: Option<&[u8]>) -> (Option<Vec<u8>>, usize) {
        let n = current.map_or(0, |b| b.len()) + 1;
        (Some(vec![b'x'; n]), n)
    }

    #[test]
    fn a_cas_that_never_succeeds_is_reported_as_broken_not_as_contention() {
        for (lands, start) in [(false, None), (true, None), (false, Some(b"x".to_vec()))] {
            let mut d = Double {
                value: start,
                broken: true,
                lands,
                ..Double::default()
            };
            assert_eq!(update_with(&mut d, 64, bump), Err(StoreError::CasBroken));
            assert!(d.swaps <= 1 + BROKEN_AFTER, "gave up early: {}", d.swaps);
            // Where failed writes land, at most one was made.
            assert!(d.value.as_ref().map_or(0, Vec::len) <= 2);
        }
    }

    #[test]
    fn rivals_writing_the_same_value_are_contention_and_every_update_counts() {
        let mut d = Double {
            rivals: 20,
            ..Double::default()
        };
        // Each rival's write counts too: ours lands on top of all 20.
        assert_eq!(update_with(&mut d, 64, bump), Ok(21));
        assert_eq!(d.value.unwrap().len(), 21);
        let mut d = Double {
            rivals: 100,
            ..Double::default()
        };
        assert_eq!(update_with(&mut d, 8, bump), Err(StoreError::Contended));
    }

    #[test]
    fn no_write_needed_means_no_swap() {
        let mut d = Double {
            value: Some(b"v".to_vec()),
            ..Double::default()
        };
        assert_eq!(update_with(&mut d, 4, |_| (None, 7)), Ok(7));
        assert_eq!(d.swaps, 0);
    }
}
