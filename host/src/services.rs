//! Host services for components beyond `wasi:http`: `spin:variables@3.0.0`
//! and `wasi:keyvalue@0.2.0-draft2` (store, atomics, batch), the versions
//! Spin implements, so one `.wasm` runs on both hosts.
//!
//! Values come from the route's [`RouteServices`]: its merged variables and
//! the key-value stores its chain was granted.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{Accessor, HasData, Linker, Resource, ResourceTable};

use crate::kv::{MemoryStore, Version};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "tollgate:host/services",
        imports: {
            "spin:variables/variables.get": async | store,
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
    pub kv: Arc<MemoryStore>,
}

/// An open bucket: which store label it came from.
pub struct Bucket {
    #[allow(dead_code)]
    label: String,
}

/// A compare-and-swap handle: the key and the version it was read at.
pub struct Cas {
    key: String,
    value: Option<Vec<u8>>,
    version: Version,
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

impl ServicesView<'_> {
    fn bucket(&self, b: &Resource<Bucket>) -> wasmtime::Result<&Bucket> {
        Ok(self.table.get(b)?)
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
    fn get(&mut self, b: Resource<Bucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        self.bucket(&b)?;
        Ok(Ok(self.route.kv.get(&key)))
    }

    fn set(&mut self, b: Resource<Bucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        self.bucket(&b)?;
        self.route.kv.set(&key, value);
        Ok(Ok(()))
    }

    fn delete(&mut self, b: Resource<Bucket>, key: String) -> KvResult<()> {
        self.bucket(&b)?;
        self.route.kv.delete(&key);
        Ok(Ok(()))
    }

    fn exists(&mut self, b: Resource<Bucket>, key: String) -> KvResult<bool> {
        self.bucket(&b)?;
        Ok(Ok(self.route.kv.exists(&key)))
    }

    fn list_keys(
        &mut self,
        b: Resource<Bucket>,
        cursor: Option<String>,
    ) -> KvResult<store::KeyResponse> {
        self.bucket(&b)?;
        const PAGE: usize = 1000;
        let keys = self.route.kv.keys();
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

    fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

// --- wasi:keyvalue/atomics ------------------------------------------------

impl atomics::Host for ServicesView<'_> {
    fn increment(&mut self, b: Resource<Bucket>, key: String, delta: i64) -> KvResult<i64> {
        self.bucket(&b)?;
        Ok(self
            .route
            .kv
            .increment(&key, delta)
            .map_err(|e| store::Error::Other(e.to_string())))
    }

    fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let handle = self.table.delete(cas)?;
        match self.route.kv.cas_swap(&handle.key, handle.version, value) {
            Ok(()) => Ok(Ok(())),
            Err((value, version)) => {
                let fresh = self.table.push(Cas {
                    key: handle.key,
                    value,
                    version,
                })?;
                Ok(Err(atomics::CasError::CasFailed(fresh)))
            }
        }
    }
}

impl atomics::HostCas for ServicesView<'_> {
    fn new(&mut self, b: Resource<Bucket>, key: String) -> KvResult<Resource<Cas>> {
        self.bucket(&b)?;
        let (value, version) = self.route.kv.cas_read(&key);
        Ok(Ok(self.table.push(Cas {
            key,
            value,
            version,
        })?))
    }

    fn current(&mut self, cas: Resource<Cas>) -> KvResult<Option<Vec<u8>>> {
        Ok(Ok(self.table.get(&cas)?.value.clone()))
    }

    fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

// --- wasi:keyvalue/batch --------------------------------------------------

impl batch::Host for ServicesView<'_> {
    fn get_many(
        &mut self,
        b: Resource<Bucket>,
        keys: Vec<String>,
    ) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        self.bucket(&b)?;
        Ok(Ok(keys
            .into_iter()
            .map(|k| {
                let v = self.route.kv.get(&k);
                (k, v)
            })
            .collect()))
    }

    fn set_many(&mut self, b: Resource<Bucket>, kvs: Vec<(String, Vec<u8>)>) -> KvResult<()> {
        self.bucket(&b)?;
        for (k, v) in kvs {
            self.route.kv.set(&k, v);
        }
        Ok(Ok(()))
    }

    fn delete_many(&mut self, b: Resource<Bucket>, keys: Vec<String>) -> KvResult<()> {
        self.bucket(&b)?;
        for k in keys {
            self.route.kv.delete(&k);
        }
        Ok(Ok(()))
    }
}
