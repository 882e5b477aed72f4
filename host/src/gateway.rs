//! Assembly: turns a validated [`Config`] into a running [`Gateway`]:
//! loads each route's components, composes and compiles each distinct
//! chain once (through the on-disk cache), and wires the shared engine,
//! client, key-value store, admission limit and metrics together.
//!
//! Everything that can fail does so here, before a port is bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ipnet::IpNet;
use tokio::sync::Semaphore;
use wasmtime::component::Component;

use crate::compose::{self, CacheOutcome, Piece};
use crate::config::KvBackendConfig;
use crate::config::{ComponentSource, Config, Limits, Origin};
use crate::kv::MemoryStore;
use crate::kv_redis::RedisStore;
use crate::outbound::OriginClient;
use crate::routes::{Matchable, RouteTable};
use crate::runtime::{self, Chain, ChainHandler, PoolStats};
use crate::services::RouteServices;
use crate::store::KvBackend;
use crate::telemetry::Metrics;

/// The running gateway's shared state.
pub struct Gateway {
    pub routes: RouteTable<RouteRuntime>,
    pub limits: Limits,
    pub trusted_proxies: Vec<IpNet>,
    pub shutdown_timeout: Duration,
    pub metrics: Arc<Metrics>,
    pub client: Arc<OriginClient>,
    pub admission: Arc<Semaphore>,
    pub kv: KvBackend,
}

/// One route, ready to serve.
pub struct RouteRuntime {
    pub name: String,
    host: Option<String>,
    prefix: String,
    exact: bool,
    pub origin: Option<Origin>,
    pub chain: Option<RouteChain>,
}

impl Matchable for RouteRuntime {
    fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }
    fn prefix(&self) -> &str {
        &self.prefix
    }
    fn exact(&self) -> bool {
        self.exact
    }
}

/// A route's composed chain and its instance pool.
pub struct RouteChain {
    pub handler: ChainHandler,
    pub components: String,
    /// Names whose timings are recorded (see `timing.rs`).
    pub reporters: crate::timing::Reporters,
}

/// Reads a component's bytes.
pub fn component_bytes(source: &ComponentSource) -> anyhow::Result<Vec<u8>> {
    match source {
        ComponentSource::Builtin(name) => crate::builtin::bytes(name)
            .map(<[u8]>::to_vec)
            .with_context(|| format!("unknown builtin component `{name}`")),
        ComponentSource::File(path) => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        }
    }
}

/// Builds the gateway. Compiles every chain; no request pays for a compile.
/// Connects to the shared store, when one is configured.
pub async fn build(config: &Config) -> anyhow::Result<Gateway> {
    let engine = runtime::engine(&config.limits)?;
    runtime::start_epoch_ticker(&engine);
    let linker = runtime::linker(&engine)?;
    let client = OriginClient::new(&config.limits);
    let mut metrics = Metrics::new();
    let kv = match &config.kv.backend {
        KvBackendConfig::Memory => {
            let m = Arc::new(MemoryStore::new(
                config.kv.max_entries,
                config.kv.idle_expiry,
            ));
            metrics.watch_kv(m.clone());
            KvBackend::Memory(m)
        }
        KvBackendConfig::Redis { url, timeout } => KvBackend::Redis(
            RedisStore::connect(url, *timeout, config.kv.idle_expiry)
                .await
                // Never the URL itself: it may carry a password.
                .map_err(|_| anyhow::anyhow!("kv.redis_url: the Redis server did not answer"))?,
        ),
    };

    // The same list of components composes to the same chain: do it once.
    let mut compiled: HashMap<Vec<ComponentSource>, Component> = HashMap::new();
    let mut routes = Vec::new();
    for route in &config.routes {
        let chain = if route.middleware.is_empty() {
            None
        } else {
            let key: Vec<ComponentSource> =
                route.middleware.iter().map(|m| m.source.clone()).collect();
            if !compiled.contains_key(&key) {
                let component = compile_chain(&engine, route, config)?;
                compiled.insert(key.clone(), component);
            }
            let services = Arc::new(RouteServices {
                variables: route.variables.clone(),
                stores: route.key_value_stores.clone(),
                kv: kv.clone(),
            });
            let stats = Arc::new(PoolStats::default());
            let chain = Chain::new(
                &engine,
                &linker,
                &compiled[&key],
                route,
                client.clone(),
                services,
                &config.limits,
                stats.clone(),
            )?;
            metrics.add_pool(&route.name, &chain.components, stats);
            let components = chain.components.clone();
            Some(RouteChain {
                handler: ChainHandler::new(chain),
                components,
                reporters: crate::timing::Reporters::new(route.middleware.len()),
            })
        };
        routes.push(RouteRuntime {
            name: route.name.clone(),
            host: route.host.clone(),
            prefix: route.path_prefix.clone(),
            exact: route.exact,
            origin: route.origin.clone(),
            chain,
        });
    }

    Ok(Gateway {
        routes: RouteTable::new(routes),
        limits: config.limits.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
        shutdown_timeout: config.shutdown_timeout,
        metrics: Arc::new(metrics),
        client,
        admission: Arc::new(Semaphore::new(config.limits.max_instances as usize)),
        kv,
    })
}

fn compile_chain(
    engine: &wasmtime::Engine,
    route: &crate::config::Route,
    config: &Config,
) -> anyhow::Result<Component> {
    let bytes: Vec<Vec<u8>> = route
        .middleware
        .iter()
        .map(|m| component_bytes(&m.source))
        .collect::<anyhow::Result<_>>()?;
    let pieces: Vec<Piece<'_>> = route
        .middleware
        .iter()
        .zip(&bytes)
        .map(|(m, b)| Piece {
            name: &m.name,
            bytes: b,
        })
        .collect();
    // Without an origin, the last component must answer by itself.
    let composed = compose::compose(&pieces, route.origin.is_none())
        .with_context(|| format!("route `{}`", route.name))?;
    let started = std::time::Instant::now();
    let (component, outcome) =
        compose::compile_cached(engine, &composed, config.cache_dir.as_deref())
            .with_context(|| format!("route `{}`: compiling the chain", route.name))?;
    tracing::info!(
        route = %route.name,
        components = pieces.len(),
        cache = match outcome {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Disabled => "disabled",
        },
        millis = started.elapsed().as_millis() as u64,
        "chain ready"
    );
    Ok(component)
}
