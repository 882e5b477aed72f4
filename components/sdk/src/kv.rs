//! The key-value store (`wasi:keyvalue@0.2.0-draft2`): plain get/set, and
//! the two atomic operations that exact counters need: `increment` and a
//! compare-and-swap loop. On Spin the middleware must inherit
//! `key_value_stores`; on Tollgate the component lists them.

use std::cell::{Cell, RefCell};
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
pub struct Store(Rc<Opened>);

/// A bucket, and whether its compare-and-swap works (once probed).
struct Opened {
    bucket: store::Bucket,
    cas_works: Cell<Option<bool>>,
}

thread_local! {
    /// The stores this instance has opened, kept for its later requests: a
    /// handle stays valid for the instance's life, and opening costs a host
    /// call. (A wasm instance has one thread; failures are not kept.)
    static OPEN: RefCell<Vec<(String, Rc<Opened>)>> = const { RefCell::new(Vec::new()) };
}

impl Store {
    /// Opens the store with this label (`default` unless configured).
    pub fn open(label: &str) -> Result<Self, StoreError> {
        OPEN.with_borrow_mut(|open| {
            if let Some((_, bucket)) = open.iter().find(|(l, _)| l == label) {
                return Ok(Self(bucket.clone()));
            }
            let opened = Rc::new(Opened {
                bucket: store::open(label)?,
                cas_works: Cell::new(None),
            });
            open.push((label.to_owned(), opened.clone()));
            Ok(Self(opened))
        })
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.bucket.get(key)?)
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        Ok(self.0.bucket.set(key, value)?)
    }

    pub fn delete(&self, key: &str) -> Result<(), StoreError> {
        Ok(self.0.bucket.delete(key)?)
    }

    /// Atomically adds `delta` and returns the new value. Never `set` or
    /// `get` a key you increment: each backend encodes counters its own way.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        Ok(atomics::increment(&self.0.bucket, key, delta)?)
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
            store: &self.0,
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
    /// Whether compare-and-swap works on this store at all: whether a swap
    /// succeeds on a key nobody else writes.
    fn cas_works(&mut self) -> Result<bool, StoreError>;
}

struct SpinCas<'a> {
    store: &'a Opened,
    key: &'a str,
    handle: Option<atomics::Cas>,
}

/// The key a probe swaps: fresh and random, so no other writer touches it.
fn probe_key() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| StoreError::Backend("no randomness".into()))?;
    let mut key = String::from("tollgate:cas-probe:");
    for b in bytes {
        key.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        key.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    Ok(key)
}

impl Swap for SpinCas<'_> {
    fn current(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        let cas = match self.handle.take() {
            Some(cas) => cas,
            None => atomics::Cas::new(&self.store.bucket, self.key)?,
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

    fn cas_works(&mut self) -> Result<bool, StoreError> {
        if let Some(known) = self.store.cas_works.get() {
            return Ok(known);
        }
        let key = probe_key()?;
        let cas = atomics::Cas::new(&self.store.bucket, &key)?;
        let works = match atomics::swap(cas, b"probe") {
            Ok(()) => true,
            Err(atomics::CasError::CasFailed(_)) => false,
            Err(atomics::CasError::StoreError(e)) => return Err(e.into()),
        };
        // Where a failed swap writes anyway (Spin 4.1's Redis), too.
        let _ = self.store.bucket.delete(&key);
        self.store.cas_works.set(Some(works));
        Ok(works)
    }
}

/// The compare-and-swap loop behind [`Store::update`].
///
/// A conflict normally means another writer changed the key. When the key
/// afterwards holds what it held before, or exactly what this loop tried
/// to write, that is either a rival that computed the same value (common:
/// a token bucket's next state depends only on its last one once it runs
/// ahead of the clock) or a store whose compare-and-swap cannot succeed
/// (Spin 4.1's Redis store reports every swap as failed, and the write
/// lands anyway). [`Swap::cas_works`] tells them apart with a swap on a
/// private key, which no rival can disturb; a store that fails it is
/// [`StoreError::CasBroken`], since retrying would only burn attempts (and
/// there, tokens). The probe never writes the contended key: writers
/// probing it with unchanged values would keep invalidating one another's
/// reads, and under load that livelocks into [`StoreError::Contended`].
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
        let unchanged = fresh == current || fresh.as_deref() == Some(&next[..]);
        if unchanged && !cas.cas_works()? {
            return Err(StoreError::CasBroken);
        }
        current = fresh;
    }
    Err(StoreError::Contended)
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
        probes: usize,
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
        fn cas_works(&mut self) -> Result<bool, StoreError> {
            self.probes += 1;
            Ok(!self.broken)
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
            assert_eq!((d.swaps, d.probes), (1, 1), "one swap, then one probe");
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

    /// A working compare-and-swap shared by threads, as the gateway's
    /// embedded store does it: every write bumps a version, and a swap
    /// lands only on the version its read saw.
    #[derive(Default)]
    struct Shared(std::sync::Mutex<(Option<Vec<u8>>, u64)>);

    struct Handle<'a> {
        shared: &'a Shared,
        read: Option<(Option<Vec<u8>>, u64)>,
    }

    impl Swap for Handle<'_> {
        fn current(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
            let read = match self.read.take() {
                Some(r) => r,
                None => self.shared.0.lock().unwrap().clone(),
            };
            let value = read.0.clone();
            self.read = Some(read);
            Ok(value)
        }
        fn swap(&mut self, value: &[u8]) -> Result<bool, StoreError> {
            let (_, version) = self.read.take().expect("read first");
            let mut cell = self.shared.0.lock().unwrap();
            if cell.1 == version {
                *cell = (Some(value.to_vec()), version + 1);
                return Ok(true);
            }
            // The failed swap hands back a fresh read, as `cas-failed` does.
            self.read = Some(cell.clone());
            Ok(false)
        }
        fn cas_works(&mut self) -> Result<bool, StoreError> {
            Ok(true)
        }
    }

    #[test]
    fn many_writers_computing_the_same_values_never_make_a_working_cas_look_broken() {
        // Each update's new value depends only on the old one (as a token
        // bucket's does once it runs ahead of the clock), so every rival
        // that read the same value writes the same bytes.
        let shared = Shared::default();
        let (threads, each) = (8, 2_000);
        let errors = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..each {
                        let mut h = Handle {
                            shared: &shared,
                            read: None,
                        };
                        // Attempts without bound: threads outnumber cores, so
                        // an unlucky one may lose many rounds, and contention
                        // is not what this checks.
                        if let Err(e) = update_with(&mut h, usize::MAX, bump) {
                            errors.lock().unwrap().push(e);
                        }
                    }
                });
            }
        });
        let errors = errors.into_inner().unwrap();
        assert!(
            errors.is_empty(),
            "{} failed: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        let (value, writes) = shared.0.into_inner().unwrap();
        assert_eq!(
            value.map_or(0, |v| v.len()),
            threads * each,
            "every update counts once"
        );
        // Telling a rival from a broken store never writes the contended
        // key: such writes would invalidate every other writer's read.
        assert_eq!(
            writes as usize,
            threads * each,
            "only updates write the key"
        );
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
