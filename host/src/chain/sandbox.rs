//! Every component instance's sandbox and store data, whichever path runs
//! it: the one engine (pooling allocator, epoch interruption), the store
//! data ([`ChainState`]) with its memory cap and per-request deadline, the
//! linker with every interface a gate component may import, and the
//! factory that makes stores for a route.
//!
//! Whatever a guest does, only its own request fails: a guest past its
//! deadline traps at the next epoch tick, and a memory over its cap does
//! not grow; both are recorded in the request's [`RequestSlot`] first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Accessor, Linker, Resource, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{
    Config as EngineConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p3::bindings::http::{client::HostWithStore as _, types as p3};
use wasmtime_wasi_http::{WasiHttp, WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::slot::{Failure, RequestSlot};
use crate::config::{Limits, Origin, Route};
use crate::egress::client::{ClientHooks, OriginClient, OriginHooks};
use crate::services::{HasServices, RouteServices, ServicesView};
use crate::stdio::LogStream;
use crate::store::KvBackend;

/// How often the epoch ticks: the granularity of deadline enforcement, and
/// how often a guest that keeps running yields its worker thread to other
/// requests (at 10 ms, healthy neighbours of spinning guests missed 300 ms
/// deadlines; at 1 ms they do not).
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// A request's guests run this long before ticks make them yield. A yield
/// costs a trip through the scheduler (measured: yielding at every tick
/// cost 15–25% of the full chain's throughput), so healthy requests, whose
/// guests run for microseconds, never pay it; a spinning guest yields at
/// every tick after this.
const YIELD_AFTER: Duration = Duration::from_millis(2);
/// Most linear memories one composed chain may have (one or two per component).
const MEMORIES_PER_CHAIN: u32 = 32;
/// Component instances per admission slot: room for filter sets.
const COMPONENTS_PER_SLOT: u32 = 8;

/// Builds the engine all chains share.
pub fn engine(limits: &Limits) -> wasmtime::Result<Engine> {
    let mut config = EngineConfig::new();
    config.wasm_component_model(true);
    config.wasm_component_model_async(true);
    config.epoch_interruption(true);
    if std::env::var_os("TOLLGATE_PERFMAP").is_some() {
        // For `benches/profile.sh`: names guest functions in `perf report`.
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let slots = pool_slots(limits);
    let mut pool = PoolingAllocationConfig::new();
    // A filter set is one component instance per filter, so allow several
    // per slot (a slot's metadata is small; memories are bounded below).
    pool.total_component_instances(slots.saturating_mul(COMPONENTS_PER_SLOT));
    pool.total_core_instances(slots * MEMORIES_PER_CHAIN);
    pool.total_memories(slots * MEMORIES_PER_CHAIN);
    pool.total_tables(slots * MEMORIES_PER_CHAIN);
    pool.total_stacks(slots);
    pool.max_memories_per_component(MEMORIES_PER_CHAIN);
    pool.max_tables_per_component(MEMORIES_PER_CHAIN);
    pool.max_core_instances_per_component(MEMORIES_PER_CHAIN * 2);
    pool.max_memory_size(limits.instance_memory_bytes);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // Reserve only what the cap allows, so thousands of slots fit in the
    // address space; bounds checks become explicit, which is cheap here.
    config.memory_reservation(limits.instance_memory_bytes as u64);
    config.memory_guard_size(64 * 1024);
    config.memory_reservation_for_growth(0);
    Engine::new(&config).context("configuring the wasm engine")
}

/// Pool capacity: the admission limit plus headroom for instances that are
/// finishing post-return work while their successors start.
fn pool_slots(limits: &Limits) -> u32 {
    limits
        .max_instances
        .saturating_add(limits.max_instances / 4 + 16)
}

/// Advances the engine's epoch forever on a background thread.
pub fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("tollgate-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}

/// Per-instance store data.
pub struct ChainState {
    pub(super) table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    pub(super) origin_hooks: OriginHooks,
    client_hooks: ClientHooks,
    services: Arc<RouteServices>,
    route: Arc<str>,
    memory_cap: usize,
    /// When the current request's time is up; checked at every epoch tick.
    deadline: Option<Instant>,
    /// When the instance was bound to the current request.
    armed_at: Option<Instant>,
    /// The request being handled, where failures are recorded.
    current: Option<Arc<RequestSlot>>,
}

impl ChainState {
    /// Binds the instance to `slot`'s request: its deadline and its record.
    pub fn arm(&mut self, slot: &Arc<RequestSlot>) {
        self.deadline = Some(slot.deadline());
        self.armed_at = Some(Instant::now());
        self.current = Some(slot.clone());
    }

    /// Unbinds the instance after its request.
    pub fn disarm(&mut self) {
        self.deadline = None;
        self.armed_at = None;
        self.current = None;
        self.origin_hooks.downstream = None;
    }

    pub fn route(&self) -> &str {
        &self.route
    }

    pub fn current(&self) -> Option<&Arc<RequestSlot>> {
        self.current.as_ref()
    }
}

/// Most table elements one instance may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for ChainState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            if let Some(slot) = &self.current {
                slot.record(Failure::MemoryLimit);
            }
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl WasiView for ChainState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ChainState {
    /// The chain's own `wasi:http/client` calls: allowlisted hosts only.
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.client_hooks,
        }
    }
}

impl ChainState {
    /// The innermost `next`: forwards to the route's origin.
    fn origin_view(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.origin_hooks,
        }
    }
}

impl crate::stdio::HasStdio for ChainState {
    fn stdio(&mut self) -> (&mut ResourceTable, &str) {
        (&mut self.table, &self.route)
    }
}

impl HasServices for ChainState {
    fn services(&mut self) -> ServicesView<'_> {
        ServicesView {
            table: &mut self.table,
            route: &self.services,
        }
    }
}

/// The linker shared by every chain.
pub fn linker(engine: &Engine, kv: &KvBackend) -> wasmtime::Result<Linker<ChainState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    crate::stdio::add_to_linker(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    crate::services::add_to_linker(&mut linker)?;
    if let KvBackend::Memory(memory) = kv {
        crate::services_embedded::add_to_linker(&mut linker, memory.clone())?;
    }
    add_terminal_handler(&mut linker)?;
    Ok(linker)
}

/// Serves the chain's innermost `wasi:http/handler` import by sending the
/// request to the origin through the same machinery as `client.send`, but
/// with the origin hooks.
fn add_terminal_handler(linker: &mut Linker<ChainState>) -> wasmtime::Result<()> {
    linker
        .instance(super::compose::HANDLER)?
        .func_wrap_concurrent(
            "handle",
            |accessor: &Accessor<ChainState>, (request,): (Resource<p3::Request>,)| {
                Box::pin(async move {
                    let origin = accessor.with_getter::<WasiHttp>(ChainState::origin_view);
                    match WasiHttp::send(&origin, request).await {
                        Ok(response) => Ok((Ok(response),)),
                        Err(e) => match e.downcast() {
                            Ok(code) => Ok((Err(code),)),
                            Err(trap) => Err(trap),
                        },
                    }
                })
            },
        )?;
    Ok(())
}

/// Makes stores for one route's instances, composed or filter.
#[derive(Clone)]
pub struct StoreFactory {
    pub engine: Engine,
    pub client: Arc<OriginClient>,
    /// The scheme of the route's upstream, for requests sent without one.
    pub scheme: Option<http::uri::Scheme>,
    pub allowed: Arc<[Origin]>,
    pub services: Arc<RouteServices>,
    pub route: Arc<str>,
    pub memory_cap: usize,
    pub name_lookup: bool,
}

impl StoreFactory {
    pub fn new(
        engine: &Engine,
        route: &Route,
        client: Arc<OriginClient>,
        services: Arc<RouteServices>,
        limits: &Limits,
    ) -> Self {
        Self {
            engine: engine.clone(),
            client,
            scheme: route
                .upstream
                .as_ref()
                .map(|u| u.endpoints[0].0.scheme.clone()),
            allowed: route.allowed_outbound_hosts.clone().into(),
            services,
            route: route.name.as_str().into(),
            memory_cap: limits.instance_memory_bytes,
            name_lookup: route.allow_name_lookup,
        }
    }

    /// A fresh store; `components` names what it will run, for log tags.
    pub fn store(&self, components: &str) -> Store<ChainState> {
        let tag: Arc<str> = format!("{}:{components}", self.route).into();
        let mut wasi = WasiCtx::builder();
        wasi.stdout(LogStream::new(tag.clone(), "stdout"));
        wasi.stderr(LogStream::new(tag, "stderr"));
        // No sockets, ever; name lookups only where the config grants them.
        wasi.allow_tcp(false).allow_udp(false);
        wasi.allow_ip_name_lookup(self.name_lookup);
        let state = ChainState {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            origin_hooks: OriginHooks {
                scheme: self.scheme.clone(),
                downstream: None,
            },
            client_hooks: ClientHooks {
                client: self.client.clone(),
                allowed: self.allowed.clone(),
            },
            services: self.services.clone(),
            route: self.route.clone(),
            memory_cap: self.memory_cap,
            deadline: None,
            armed_at: None,
            current: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s);
        store.epoch_deadline_callback(|ctx| {
            let data = ctx.data();
            let now = Instant::now();
            if data.deadline.is_some_and(|d| now >= d) {
                if let Some(slot) = &data.current {
                    slot.record(Failure::DeadlineExceeded);
                }
                Err(wasmtime::Trap::Interrupt.into())
            } else if data
                .armed_at
                .is_some_and(|t| now.duration_since(t) >= YIELD_AFTER)
            {
                // Running long: let other requests (and the expiry check) run.
                Ok(UpdateDeadline::Yield(1))
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        store.set_epoch_deadline(1);
        store
    }
}
