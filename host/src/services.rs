//! Host services for components beyond `wasi:http`: `spin:variables@3.0.0`
//! and `wasi:keyvalue@0.2.0-draft2` (store, atomics, batch), the versions
//! Spin implements, so one `.wasm` runs on both hosts.
//!
//! Values come from the route's [`RouteServices`]: its merged variables and
//! the key-value stores its chain was granted.

use std::collections::BTreeMap;

use wasmtime::component::{Accessor, HasData, Linker, Resource, ResourceTable};

use crate::store::{CasRead, KvBackend, StoreError};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "tollgate:host/services",
        imports: {
            "spin:variables/variables.get": async | store,
            // Everything that reaches the backend may wait on the network.
            "wasi:keyvalue/store.[method]bucket.get": async | trappable,
            "wasi:keyvalue/store.[method]bucket.set": async | trappable,
            "wasi:keyvalue/store.[method]bucket.delete": async | trappable,
            "wasi:keyvalue/store.[method]bucket.exists": async | trappable,
            "wasi:keyvalue/store.[method]bucket.list-keys": async | trappable,
            "wasi:keyvalue/atomics.increment": async | trappable,
            "wasi:keyvalue/atomics.swap": async | trappable,
            "wasi:keyvalue/atomics.[static]cas.new": async | trappable,
            "wasi:keyvalue/batch.get-many": async | trappable,
            "wasi:keyvalue/batch.set-many": async | trappable,
            "wasi:keyvalue/batch.delete-many": async | trappable,
            default: trappable,
        },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
            "wasi:keyvalue/atomics.cas": super::Cas,
        },
    });
}

use bindings::spin::variables::variables;
use bindings::wasi::keyvalue::{atomics, batch, store};

/// What one route's chain may see: its variables and its stores.
pub struct RouteServices {
    pub variables: BTreeMap<String, String>,
    pub stores: Vec<String>,
    pub kv: KvBackend,
}

/// An open bucket: which store label it came from.
pub struct Bucket {
    #[allow(dead_code)]
    label: String,
}

/// A compare-and-swap handle: the key and what was read there.
pub struct Cas {
    pub(crate) key: String,
    pub(crate) read: CasRead,
}

/// The view of a store's data these services need.
pub struct ServicesView<'a> {
    pub table: &'a mut ResourceTable,
    pub route: &'a RouteServices,
}

struct Services;

impl HasData for Services {
    type Data<'a> = ServicesView<'a>;
}

/// Implemented by the store data of component instances.
pub trait HasServices: Send + 'static {
    fn services(&mut self) -> ServicesView<'_>;
}

pub fn add_to_linker<T: HasServices>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    variables::add_to_linker::<T, Services>(linker, T::services)?;
    store::add_to_linker::<T, Services>(linker, T::services)?;
    atomics::add_to_linker::<T, Services>(linker, T::services)?;
    batch::add_to_linker::<T, Services>(linker, T::services)?;
    Ok(())
}

// --- spin:variables -------------------------------------------------------

impl<T> variables::HostWithStore<T> for Services {
    async fn get(accessor: &Accessor<T, Self>, name: String) -> Result<String, variables::Error> {
        accessor.with(|mut access| {
            let view = access.get();
            if !crate::config::valid_variable_name(&name) {
                return Err(variables::Error::InvalidName(name));
            }
            view.route
                .variables
                .get(&name)
                .cloned()
                .ok_or(variables::Error::Undefined(name))
        })
    }
}

impl variables::Host for ServicesView<'_> {}

// --- wasi:keyvalue/store --------------------------------------------------

type KvResult<T> = wasmtime::Result<Result<T, store::Error>>;

fn store_error(e: StoreError) -> store::Error {
    store::Error::Other(e.to_string())
}

impl ServicesView<'_> {
    /// The backend behind `bucket`, after checking the handle is live.
    fn backend(&mut self, bucket: &Resource<Bucket>) -> wasmtime::Result<KvBackend> {
        self.table.get(bucket)?;
        Ok(self.route.kv.clone())
    }
}

impl store::Host for ServicesView<'_> {
    fn open(&mut self, identifier: String) -> KvResult<Resource<Bucket>> {
        if !self.route.stores.iter().any(|s| *s == identifier) {
            // Same answer for unknown and ungranted stores: no probing.
            return Ok(Err(store::Error::AccessDenied));
        }
        Ok(Ok(self.table.push(Bucket { label: identifier })?))
    }
}

impl store::HostBucket for ServicesView<'_> {
    fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }

    async fn get(&mut self, b: Resource<Bucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        let kv = self.backend(&b)?;
        Ok(kv.get(&key).await.map_err(store_error))
    }

    async fn set(&mut self, b: Resource<Bucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        let kv = self.backend(&b)?;
        Ok(kv.set(&key, value).await.map_err(store_error))
    }

    async fn delete(&mut self, b: Resource<Bucket>, key: String) -> KvResult<()> {
        let kv = self.backend(&b)?;
        Ok(kv.delete(&key).await.map_err(store_error))
    }

    async fn exists(&mut self, b: Resource<Bucket>, key: String) -> KvResult<bool> {
        let kv = self.backend(&b)?;
        Ok(kv.exists(&key).await.map_err(store_error))
    }

    async fn list_keys(
        &mut self,
        b: Resource<Bucket>,
        cursor: Option<String>,
    ) -> KvResult<store::KeyResponse> {
        const PAGE: usize = 1000;
        let kv = self.backend(&b)?;
        let keys = match kv.keys().await {
            Ok(k) => k,
            Err(e) => return Ok(Err(store_error(e))),
        };
        let start = match cursor {
            Some(c) => keys.partition_point(|k| k.as_str() <= c.as_str()),
            None => 0,
        };
        let page: Vec<String> = keys[start..].iter().take(PAGE).cloned().collect();
        let cursor = (start + page.len() < keys.len())
            .then(|| page.last().cloned())
            .flatten();
        Ok(Ok(store::KeyResponse { keys: page, cursor }))
    }
}

// --- wasi:keyvalue/atomics ------------------------------------------------

impl atomics::Host for ServicesView<'_> {
    async fn increment(&mut self, b: Resource<Bucket>, key: String, delta: i64) -> KvResult<i64> {
        let kv = self.backend(&b)?;
        Ok(kv.increment(&key, delta).await.map_err(store_error))
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let (handle, kv) = (self.table.delete(cas)?, self.route.kv.clone());
        match kv.cas_swap(&handle.key, &handle.read, value).await {
            Ok(Ok(())) => Ok(Ok(())),
            Ok(Err(read)) => {
                let fresh = self.table.push(Cas {
                    key: handle.key,
                    read,
                })?;
                Ok(Err(atomics::CasError::CasFailed(fresh)))
            }
            Err(e) => Ok(Err(atomics::CasError::StoreError(store_error(e)))),
        }
    }
}

impl atomics::HostCas for ServicesView<'_> {
    fn current(&mut self, cas: Resource<Cas>) -> KvResult<Option<Vec<u8>>> {
        Ok(Ok(self.table.get(&cas)?.read.value.clone()))
    }

    fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }

    async fn new(&mut self, b: Resource<Bucket>, key: String) -> KvResult<Resource<Cas>> {
        let kv = self.backend(&b)?;
        let read = match kv.cas_read(&key).await {
            Ok(r) => r,
            Err(e) => return Ok(Err(store_error(e))),
        };
        let cas = self.table.push(Cas { key, read })?;
        Ok(Ok(cas))
    }
}

// --- wasi:keyvalue/batch --------------------------------------------------

impl batch::Host for ServicesView<'_> {
    async fn get_many(
        &mut self,
        b: Resource<Bucket>,
        keys: Vec<String>,
    ) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        let kv = self.backend(&b)?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            match kv.get(&k).await {
                Ok(v) => out.push((k, v)),
                Err(e) => return Ok(Err(store_error(e))),
            }
        }
        Ok(Ok(out))
    }

    async fn set_many(&mut self, b: Resource<Bucket>, kvs: Vec<(String, Vec<u8>)>) -> KvResult<()> {
        let kv = self.backend(&b)?;
        for (k, v) in kvs {
            if let Err(e) = kv.set(&k, v).await {
                return Ok(Err(store_error(e)));
            }
        }
        Ok(Ok(()))
    }

    async fn delete_many(&mut self, b: Resource<Bucket>, keys: Vec<String>) -> KvResult<()> {
        let kv = self.backend(&b)?;
        for k in keys {
            if let Err(e) = kv.delete(&k).await {
                return Ok(Err(store_error(e)));
            }
        }
        Ok(Ok(()))
    }
}
