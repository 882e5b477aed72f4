//! The wasmtime side of the gateway: one engine (pooling allocator, epoch
//! interruption), one linker with every interface a gate component may
//! import, and per route a compiled, pre-instantiated chain served through
//! `wasmtime-wasi-http`'s `ProxyHandler`, which reuses instances.
//!
//! The sandbox lives here too: each request gets a wall-clock deadline
//! (epoch interruption traps a guest that spins past it), and each instance
//! a linear-memory cap. Whatever a guest does, only its own request fails.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::component::{Accessor, Component, GuestTaskId, Linker, Resource, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{
    Config as EngineConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    StoreContextMut, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, Proxy, ProxyHandler, ShouldAccept, WorkerExpiration, WorkerState,
    WorkerStatus,
};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::{client::HostWithStore as _, types as p3};
use wasmtime_wasi_http::{WasiHttp, WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::config::{Limits, Route};
use crate::outbound::{ClientHooks, OriginClient, OriginHooks};
use crate::services::{HasServices, RouteServices, ServicesView};
use crate::stdio::LogStream;

/// How often the epoch ticks; the granularity of deadline enforcement.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// How long an idle instance is kept for reuse.
const IDLE_INSTANCE: Duration = Duration::from_secs(30);
/// Most linear memories one composed chain may have (one or two per component).
const MEMORIES_PER_CHAIN: u32 = 32;

/// Builds the engine all chains share.
pub fn engine(limits: &Limits) -> wasmtime::Result<Engine> {
    let mut config = EngineConfig::new();
    config.wasm_component_model(true);
    config.wasm_component_model_async(true);
    config.epoch_interruption(true);
    let slots = pool_slots(limits);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots);
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
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    origin_hooks: OriginHooks,
    client_hooks: ClientHooks,
    services: Arc<RouteServices>,
    route: Arc<str>,
    memory_cap: usize,
    /// When the current request's time is up; checked at every epoch tick.
    deadline: Option<Instant>,
    /// The request being handled, where failures are recorded.
    current: Option<Arc<RequestSlot>>,
}

/// Why a request's chain failed, recorded before the trap unwinds so the
/// ingress can answer and log precisely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    DeadlineExceeded,
    MemoryLimit,
}

/// Per-request record shared between the ingress and the instance.
pub struct RequestSlot {
    request_id: String,
    failure: std::sync::Mutex<Option<Failure>>,
}

impl RequestSlot {
    pub fn new(request_id: &str) -> Self {
        Self {
            request_id: request_id.to_owned(),
            failure: Default::default(),
        }
    }

    pub fn failure(&self) -> Option<Failure> {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, f: Failure) {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(f);
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
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<ChainState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    crate::stdio::add_to_linker(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    crate::services::add_to_linker(&mut linker)?;
    add_terminal_handler(&mut linker)?;
    Ok(linker)
}

/// Serves the chain's innermost `wasi:http/handler` import by sending the
/// request to the origin through the same machinery as `client.send`, but
/// with the origin hooks.
fn add_terminal_handler(linker: &mut Linker<ChainState>) -> wasmtime::Result<()> {
    linker
        .instance(crate::compose::HANDLER)?
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

/// Counters for the instance pool, read by the metrics endpoint.
#[derive(Default)]
pub struct PoolStats {
    pub instantiated: AtomicU64,
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
}

/// Everything one route's chain needs to build instances.
pub struct Chain {
    pub route: String,
    pub components: String,
    engine: Engine,
    pre: ServicePre<ChainState>,
    client: Arc<crate::outbound::OriginClient>,
    origin: Option<crate::config::Origin>,
    allowed: Arc<[crate::config::Origin]>,
    services: Arc<RouteServices>,
    memory_cap: usize,
    timeout: Duration,
    reuse: usize,
    name_lookup: bool,
    pub stats: Arc<PoolStats>,
}

impl Chain {
    pub fn new(
        engine: &Engine,
        linker: &Linker<ChainState>,
        component: &Component,
        route: &Route,
        client: Arc<OriginClient>,
        services: Arc<RouteServices>,
        limits: &Limits,
        stats: Arc<PoolStats>,
    ) -> wasmtime::Result<Self> {
        let names: Vec<&str> = route.middleware.iter().map(|m| m.name.as_str()).collect();
        let components = names.join(",");
        let pre = linker
            .instantiate_pre(component)
            .with_context(|| format!("route `{}`: linking chain [{components}]", route.name))?;
        let pre = ServicePre::new(pre).with_context(|| {
            format!(
                "route `{}`: chain does not export wasi:http/handler",
                route.name
            )
        })?;
        Ok(Self {
            route: route.name.clone(),
            components,
            engine: engine.clone(),
            pre,
            client,
            origin: route.origin.clone(),
            allowed: route.allowed_outbound_hosts.clone().into(),
            services,
            memory_cap: limits.instance_memory_bytes,
            timeout: limits.request_timeout,
            reuse: limits.instance_reuse,
            name_lookup: route.allow_name_lookup,
            stats,
        })
    }

    fn new_store(&self) -> Store<ChainState> {
        let tag: Arc<str> = format!("{}:{}", self.route, self.components).into();
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
                client: self.client.clone(),
                origin: self.origin.clone(),
            },
            client_hooks: ClientHooks {
                client: self.client.clone(),
                allowed: self.allowed.clone(),
            },
            services: self.services.clone(),
            route: self.route.as_str().into(),
            memory_cap: self.memory_cap,
            deadline: None,
            current: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s);
        store.epoch_deadline_callback(|ctx| {
            let data = ctx.data();
            if data.deadline.is_some_and(|d| Instant::now() >= d) {
                if let Some(slot) = &data.current {
                    slot.record(Failure::DeadlineExceeded);
                }
                Err(wasmtime::Trap::Interrupt.into())
            } else {
                // Let other tasks (and the expiry check) run between ticks.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        store
    }
}

impl HandlerState for Chain {
    type StoreData = ChainState;
    type WorkerExpiration = Expiry;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<ChainState, Expiry, Worker>> {
        let mut store = self.new_store();
        let service = match self.pre.instantiate_async(&mut store).await {
            Ok(s) => s,
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        self.stats.instantiated.fetch_add(1, Ordering::Relaxed);
        Ok(Instance {
            store,
            proxy: Proxy::P3(service),
            view: <ChainState as WasiHttpView>::http,
            expiration: Expiry {
                timeout: self.timeout,
                sleep: None,
            },
            state: Worker {
                timeout: self.timeout,
                reuse: self.reuse,
                stats: self.stats.clone(),
            },
        })
    }
}

/// One instance's policy: one request at a time (so a runaway guest takes
/// down only its own request), recycled after `reuse` requests.
pub struct Worker {
    timeout: Duration,
    reuse: usize,
    stats: Arc<PoolStats>,
}

impl WorkerState for Worker {
    type StoreData = ChainState;
    type RequestData = Arc<RequestSlot>;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.reuse {
            ShouldAccept::Never
        } else if concurrent > 0 {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, ChainState>,
        slot: Arc<RequestSlot>,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        let data = store.data_mut();
        data.deadline = Some(Instant::now() + self.timeout);
        data.current = Some(slot);
        Box::pin(tokio::time::sleep(self.timeout))
    }

    fn drop(&self, store: Store<ChainState>, result: wasmtime::Result<()>) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            let data = store.data();
            let request_id = data.current.as_ref().map(|s| s.request_id.as_str());
            tracing::warn!(
                request_id = request_id.unwrap_or("-"),
                route = %data.route,
                component = failing_component(&e).as_deref().unwrap_or("unknown"),
                "component failed; its instance was discarded"
            );
            tracing::debug!(error = ?e, "component failure detail");
        }
    }
}

/// The component a trap happened in: the module of the innermost wasm
/// frame, named as its author's build named it (`fixture_runaway.wasm`).
fn failing_component(e: &wasmtime::Error) -> Option<String> {
    let bt = e.downcast_ref::<wasmtime::WasmBacktrace>()?;
    let name = bt.frames().first()?.module().name()?;
    Some(name.trim_end_matches(".wasm").to_owned())
}

/// When to retire an instance: idle too long, or (as a second line of
/// defence behind the per-request expiry) stuck past its deadline.
pub struct Expiry {
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WorkerExpiration for Expiry {
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        state: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let limit = match state {
            WorkerStatus::Idle => IDLE_INSTANCE,
            WorkerStatus::Requests | WorkerStatus::PostReturn => self.timeout + EPOCH_TICK * 10,
        };
        let at = tokio::time::Instant::from_std(start + limit);
        match &mut self.sleep {
            Some(s) if s.deadline() == at => {}
            slot => *slot = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.sleep.as_mut().expect("set above").as_mut().poll(cx)
    }
}

/// A route's runnable chain.
pub type ChainHandler = ProxyHandler<Chain>;
