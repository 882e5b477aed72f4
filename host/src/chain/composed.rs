//! The composed path: a run of `wasi:http` middleware composed into one
//! component (see [`compose`](super::compose)) and served through
//! `wasmtime-wasi-http`'s `ProxyHandler`, which reuses instances. Its
//! innermost `wasi:http/handler` import goes on to the rest of the route's
//! chain (see [`egress::client`](crate::egress::client)).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, GuestTaskId, Linker};
use wasmtime::error::Context as _;
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, Proxy, ProxyHandler, ShouldAccept, WorkerExpiration, WorkerState,
    WorkerStatus,
};
use wasmtime_wasi_http::p3::bindings::ServicePre;

use super::sandbox::{ChainState, StoreFactory};
use super::slot::RequestSlot;
use crate::config::{Limits, Route};

/// How long an idle instance is kept for reuse.
const IDLE_INSTANCE: Duration = Duration::from_secs(30);
/// How long past its deadline a busy instance may be before it is retired.
const STUCK_GRACE: Duration = Duration::from_millis(100);

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
    pre: ServicePre<ChainState>,
    stores: StoreFactory,
    timeout: Duration,
    reuse: usize,
    pub stats: Arc<PoolStats>,
}

impl Chain {
    pub fn new(
        linker: &Linker<ChainState>,
        component: &Component,
        route: &Route,
        names: &[&str],
        stores: StoreFactory,
        limits: &Limits,
        stats: Arc<PoolStats>,
    ) -> wasmtime::Result<Self> {
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
            pre,
            stores,
            timeout: limits.request_timeout,
            reuse: limits.instance_reuse,
            stats,
        })
    }
}

impl HandlerState for Chain {
    type StoreData = ChainState;
    type WorkerExpiration = Expiry;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<ChainState, Expiry, Worker>> {
        let mut store = self.stores.store(&self.components);
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
                reuse: self.reuse,
                stats: self.stats.clone(),
            },
        })
    }
}

/// One instance's policy: one request at a time (so a runaway guest takes
/// down only its own request), recycled after `reuse` requests.
pub struct Worker {
    reuse: usize,
    stats: Arc<PoolStats>,
}

impl WorkerState for Worker {
    type StoreData = ChainState;
    type RequestData = ComposedRequest;

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
        request: ComposedRequest,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        // A fresh tick budget: a pooled instance's old epoch deadline has
        // passed, and would make its first instruction yield.
        store.set_epoch_deadline(1);
        let data = store.data_mut();
        data.arm(&request.slot);
        data.origin_hooks.downstream = request.downstream;
        let left = request
            .slot
            .deadline()
            .saturating_duration_since(Instant::now());
        Box::pin(tokio::time::sleep(left))
    }

    fn drop(&self, store: Store<ChainState>, result: wasmtime::Result<()>) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            let data = store.data();
            let request_id = data.current().map(|s| s.request_id());
            tracing::warn!(
                request_id = request_id.unwrap_or("-"),
                route = %data.route(),
                component = failing_component(&e).as_deref().unwrap_or("unknown"),
                "component failed; its instance was discarded"
            );
            tracing::debug!(error = ?e, "component failure detail");
        }
    }
}

/// What the composed path is handed with each request: the request's
/// record, and what comes after this run in the route's chain.
pub struct ComposedRequest {
    pub slot: Arc<RequestSlot>,
    pub downstream: Option<super::Downstream>,
}

/// The component a trap happened in: the module of the innermost wasm
/// frame, named as its author's build named it (`fixture_runaway.wasm`).
pub fn failing_component(e: &wasmtime::Error) -> Option<String> {
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
            WorkerStatus::Requests | WorkerStatus::PostReturn => self.timeout + STUCK_GRACE,
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
