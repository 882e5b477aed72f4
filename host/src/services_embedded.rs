//! Plain synchronous `wasi:keyvalue` functions for the embedded store.
//!
//! The embedded [`MemoryStore`] never waits, so its operations need none of
//! the component model's async machinery: no host task, no fiber hand-off,
//! no future per call. When the gateway's backend is the embedded store,
//! [`add_to_linker`] shadows the per-request functions of
//! [`crate::services`] (get, set, delete, exists, increment, `cas.new`,
//! `swap`) with sync ones that do exactly the same; Redis keeps the async
//! ones. A gate's hot path makes several of these calls per request
//! (lockout counters, token buckets), so this is where they get cheap.

use std::sync::Arc;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};

use crate::kv::MemoryStore;
use crate::services::bindings::wasi::keyvalue::{atomics, store};
use crate::services::{Bucket, Cas, HasServices};
use crate::store::CasRead;

const STORE: &str = "wasi:keyvalue/store@0.2.0-draft2";
const ATOMICS: &str = "wasi:keyvalue/atomics@0.2.0-draft2";

type Kv<T> = wasmtime::Result<(Result<T, store::Error>,)>;

fn error(e: crate::kv::KvError) -> store::Error {
    store::Error::Other(crate::store::StoreError::from(e).to_string())
}

/// Shadows the async per-request functions with sync ones on `memory`.
/// Call after [`crate::services::add_to_linker`].
pub fn add_to_linker<T: HasServices>(
    linker: &mut Linker<T>,
    memory: Arc<MemoryStore>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut kv = linker.instance(STORE)?;
    let m = memory.clone();
    kv.func_wrap(
        "[method]bucket.get",
        move |mut s: StoreContextMut<'_, T>, (b, key): (Resource<Bucket>, String)| -> Kv<_> {
            s.data_mut().services().table.get(&b)?;
            Ok((Ok(m.get(&key)),))
        },
    )?;
    let m = memory.clone();
    kv.func_wrap(
        "[method]bucket.set",
        move |mut s: StoreContextMut<'_, T>,
              (b, key, value): (Resource<Bucket>, String, Vec<u8>)|
              -> Kv<()> {
            s.data_mut().services().table.get(&b)?;
            m.set(&key, value);
            Ok((Ok(()),))
        },
    )?;
    let m = memory.clone();
    kv.func_wrap(
        "[method]bucket.delete",
        move |mut s: StoreContextMut<'_, T>, (b, key): (Resource<Bucket>, String)| -> Kv<()> {
            s.data_mut().services().table.get(&b)?;
            m.delete(&key);
            Ok((Ok(()),))
        },
    )?;
    let m = memory.clone();
    kv.func_wrap(
        "[method]bucket.exists",
        move |mut s: StoreContextMut<'_, T>, (b, key): (Resource<Bucket>, String)| -> Kv<bool> {
            s.data_mut().services().table.get(&b)?;
            Ok((Ok(m.exists(&key)),))
        },
    )?;

    let mut atomic = linker.instance(ATOMICS)?;
    let m = memory.clone();
    atomic.func_wrap(
        "increment",
        move |mut s: StoreContextMut<'_, T>,
              (b, key, delta): (Resource<Bucket>, String, i64)|
              -> Kv<i64> {
            s.data_mut().services().table.get(&b)?;
            Ok((m.increment(&key, delta).map_err(error),))
        },
    )?;
    let m = memory.clone();
    atomic.func_wrap(
        "[static]cas.new",
        move |mut s: StoreContextMut<'_, T>,
              (b, key): (Resource<Bucket>, String)|
              -> Kv<Resource<Cas>> {
            let table = s.data_mut().services().table;
            table.get(&b)?;
            let read = CasRead::memory(m.cas_read(&key));
            Ok((Ok(table.push(Cas { key, read })?),))
        },
    )?;
    let m = memory;
    atomic.func_wrap(
        "swap",
        move |mut s: StoreContextMut<'_, T>,
              (cas, value): (Resource<Cas>, Vec<u8>)|
              -> wasmtime::Result<(Result<(), atomics::CasError>,)> {
            let table = s.data_mut().services().table;
            let handle = table.delete(cas)?;
            match m.cas_swap(&handle.key, handle.read.version(), value) {
                Ok(()) => Ok((Ok(()),)),
                Err(fresh) => {
                    let fresh = table.push(Cas {
                        key: handle.key,
                        read: CasRead::memory(fresh),
                    })?;
                    Ok((Err(atomics::CasError::CasFailed(fresh)),))
                }
            }
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
