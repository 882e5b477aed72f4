//! Assembly: turns a validated [`Config`] into a running [`Gateway`]:
//! loads each route's components, composes and compiles each distinct
//! chain once (through the on-disk cache), builds each upstream, and wires
//! the shared engine, client, key-value store, admission limit and metrics
//! together.
//!
//! Everything that can fail does so here, before a port is bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ipnet::IpNet;
use tokio::sync::Semaphore;
use wasmtime::component::Component;

use crate::admin::gates::Gates;
use crate::chain::compose::{self, CacheOutcome, Piece};
use crate::chain::composed::{Chain, ChainHandler, PoolStats};
use crate::chain::filter::{FILTER, FilterRun, SetupError};
use crate::chain::primary::{Primary, PrimarySetup, UPSTREAM};
use crate::chain::sandbox::{self, StoreFactory};
use crate::chain::{End, RouteChain, Segment};
use crate::config::KvBackendConfig;
use crate::config::{ComponentSource, Config, Limits};
use crate::egress::OriginClient;
use crate::egress::{RouteUpstream, Upstream, health_check};
use crate::kv::MemoryStore;
use crate::kv_redis::RedisStore;
use crate::routes::{Matchable, RouteTable};
use crate::services::RouteServices;
use crate::store::KvBackend;
use crate::telemetry::{Metrics, Watched};

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
    /// Every running upstream (their health checks start with serving).
    pub upstreams: Vec<Arc<Upstream>>,
    /// Each configured component, as the admin API shows it.
    pub components: Vec<ComponentSummary>,
    /// The rate-limit and auth gates' policies, for reading their state.
    pub gates: Gates,
    /// The tracer, when `[telemetry] otlp_endpoint` is set (kept across
    /// reloads, like the metrics).
    pub traces: Option<Arc<crate::traces::Traces>>,
    /// Which configuration this is: 1 at startup, one more per reload.
    pub version: u64,
    /// When this configuration was built, and when the gateway started.
    pub loaded_at: std::time::SystemTime,
    pub started_at: std::time::SystemTime,
}

/// A component as the admin API shows it: where it comes from, what its
/// bytes hash to, which contracts it exports, and its variables with
/// secret-looking values redacted.
#[derive(Debug, Clone)]
pub struct ComponentSummary {
    pub name: String,
    pub source: String,
    pub sha256: String,
    pub filter: bool,
    pub variables: std::collections::BTreeMap<String, String>,
}

/// Whether a variable's name says it holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    ["secret", "password", "token", "key", "credential"]
        .iter()
        .any(|w| name.contains(w))
}

fn summaries(config: &Config) -> anyhow::Result<Vec<ComponentSummary>> {
    use sha2::Digest;
    let mut out = Vec::new();
    for c in &config.components {
        let bytes = component_bytes(&c.source)?;
        let filter = compose::exports(&c.name, &bytes)
            .map(|e| e.iter().any(|x| x == FILTER))
            .unwrap_or(false);
        out.push(ComponentSummary {
            name: c.name.clone(),
            source: match &c.source {
                ComponentSource::Builtin(b) => format!("builtin:{b}"),
                ComponentSource::File(p) => p.display().to_string(),
            },
            sha256: hex::encode(sha2::Sha256::digest(&bytes)),
            filter,
            variables: c
                .variables
                .iter()
                .map(|(k, v)| {
                    let shown = if is_secret_name(k) {
                        "[redacted]".to_owned()
                    } else {
                        v.clone()
                    };
                    (k.clone(), shown)
                })
                .collect(),
        });
    }
    Ok(out)
}

impl Gateway {
    /// Starts the background work of a serving gateway: the active health
    /// checks of every upstream that has them, and (with `pinger`; once
    /// per store, so not after a reload) the shared store's pinger.
    /// `tollgate check` starts none, so a check contacts no origin.
    pub fn start_background(&self, pinger: bool) {
        for upstream in &self.upstreams {
            health_check::spawn(upstream, self.client.clone());
        }
        if let (true, KvBackend::Redis(r)) = (pinger, &self.kv) {
            r.spawn_pinger();
        }
    }
}

/// One route, ready to serve.
pub struct RouteRuntime {
    pub name: String,
    host: Option<String>,
    prefix: String,
    exact: bool,
    /// Where admitted requests go; `None` in a Spin app, whose last
    /// component answers.
    pub upstream: Option<Arc<RouteUpstream>>,
    pub chain: Option<Arc<RouteChain>>,
    /// Whether TRACE is forwarded on this route.
    pub allow_trace: bool,
    /// Whether its responses may be compressed.
    pub compression: bool,
    /// Its middleware names, in order (for the admin API).
    pub middleware: Vec<String>,
    /// Its answers by status class (for the admin API).
    pub counts: Arc<crate::route_stats::RouteCounts>,
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

/// A component's configuration was refused by the component itself
/// (its `init`); startup stops with exit status 2, like any config error.
#[derive(Debug)]
pub struct ComponentConfigError(pub String);

impl std::fmt::Display for ComponentConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ComponentConfigError {}

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
    build_with(config, None).await
}

/// Builds a gateway for a reloaded `config` beside the running
/// `previous` one: the same metrics and the same key-value store (so
/// limits and lockouts carry over); everything else is new. The caller
/// has checked that `[kv]` did not change.
pub async fn rebuild(config: &Config, previous: &Gateway) -> anyhow::Result<Gateway> {
    build_with(config, Some(previous)).await
}

async fn build_with(config: &Config, previous: Option<&Gateway>) -> anyhow::Result<Gateway> {
    let engine = sandbox::engine(&config.limits)?;
    sandbox::start_epoch_ticker(&engine);
    let client = OriginClient::new(&config.limits);
    let metrics = previous.map_or_else(|| Arc::new(Metrics::new()), |p| p.metrics.clone());
    let mut watched = Watched::default();
    let kv = match (previous, &config.kv.backend) {
        (Some(p), _) => {
            match &p.kv {
                KvBackend::Memory(m) => watched.kv(m.clone()),
                KvBackend::Redis(_) => watched.store(),
            }
            p.kv.clone()
        }
        (None, backend) => new_store(config, backend, &metrics, &mut watched).await?,
    };
    let mut gateway = finish(config, engine, client, metrics, watched, kv).await?;
    match previous {
        Some(p) => {
            gateway.version = p.version + 1;
            gateway.started_at = p.started_at;
            gateway.traces = p.traces.clone();
        }
        None => gateway.traces = crate::traces::Traces::new(&config.telemetry)?,
    }
    Ok(gateway)
}

/// The key-value store `backend` names, connected.
async fn new_store(
    config: &Config,
    backend: &KvBackendConfig,
    metrics: &Metrics,
    watched: &mut Watched,
) -> anyhow::Result<KvBackend> {
    Ok(match backend {
        KvBackendConfig::Memory => {
            let mut m = MemoryStore::new(config.kv.max_entries, config.kv.idle_expiry);
            if config.kv.simulate_broken_cas {
                tracing::warn!("kv.simulate_broken_cas: every compare-and-swap will fail");
                m = m.with_broken_cas();
            }
            let m = Arc::new(m);
            watched.kv(m.clone());
            KvBackend::Memory(m)
        }
        KvBackendConfig::Redis(redis) => {
            watched.store();
            KvBackend::Redis(
            RedisStore::connect(redis, config.kv.idle_expiry, metrics.store_metrics())
                .await
                // Never the URL or the cause's text: they may carry a password.
                .map_err(|e| {
                    let key = match redis.topology {
                        crate::kv_redis::connect::Topology::Single(_) => "kv.redis_url",
                        _ => "kv.redis_urls",
                    };
                    let crate::kv_redis::RedisKvError::Unavailable(cause) = &e;
                    let why = if cause.kind() == redis::ErrorKind::AuthenticationFailed
                        || cause.code() == Some("NOAUTH")
                        || cause.code() == Some("WRONGPASS")
                    {
                        "the Redis server refused the credentials (kv.redis_username, kv.redis_password)"
                    } else {
                        "the Redis server did not answer"
                    };
                    anyhow::anyhow!("{key}: {why}")
                })?,
            )
        }
    })
}

/// The rest of a build, once the store is there: upstreams, chains, routes.
async fn finish(
    config: &Config,
    engine: wasmtime::Engine,
    client: Arc<OriginClient>,
    metrics: Arc<Metrics>,
    mut watched: Watched,
    kv: KvBackend,
) -> anyhow::Result<Gateway> {
    let linker = sandbox::linker(&engine, &kv)?;

    // One running upstream per name, shared by the routes that use it;
    // a route's single origin is its own.
    let mut upstreams: HashMap<String, Arc<Upstream>> = HashMap::new();
    for u in config.routes.iter().filter_map(|r| r.upstream.as_ref()) {
        upstreams
            .entry(u.name.clone())
            .or_insert_with(|| Upstream::new(u, metrics.upstream_families()));
    }

    // The same list of components composes to the same chain: do it once.
    let mut compiled: HashMap<(Vec<ComponentSource>, bool), Component> = HashMap::new();
    let mut routes = Vec::new();
    for (index, route) in config.routes.iter().enumerate() {
        let upstream = route.upstream.as_ref().map(|u| {
            let up = upstreams[&u.name].clone();
            watched.route_upstream(&route.name, up.clone());
            Arc::new(RouteUpstream::new(
                &route.name,
                up,
                route.retry_non_idempotent,
            ))
        });
        let chain = if route.middleware.is_empty() {
            None
        } else {
            let services = Arc::new(RouteServices {
                variables: route.variables.clone(),
                stores: route.key_value_stores.clone(),
                kv: kv.clone(),
            });
            let stores =
                StoreFactory::new(&engine, route, client.clone(), services, &config.limits);
            let mut segments = Vec::new();
            let mut end = match &upstream {
                Some(u) => End::Upstream(u.clone()),
                None => End::Answers,
            };
            for run in plan(route, config.fast_path)? {
                let segment = match run {
                    Run::Primary(i) => {
                        let m = &route.middleware[i];
                        let (component, _) = compose::compile_cached(
                            &engine,
                            &component_bytes(&m.source)?,
                            config.cache_dir.as_deref(),
                        )
                        .with_context(|| {
                            format!("route `{}`: compiling component `{}`", route.name, m.name)
                        })?;
                        let setup = PrimarySetup {
                            route: &route.name,
                            component: &m.name,
                            allowed: &route.allowed_outbound_hosts,
                            families: metrics.upstream_families(),
                        };
                        let primary = Primary::new(&linker, &component, &stores, setup)
                            .await
                            .map_err(|e| setup_error(index, route, e))?;
                        for u in primary.upstreams() {
                            watched.route_upstream(&route.name, u.clone());
                        }
                        end = End::Primary(primary);
                        continue;
                    }
                    Run::Filters(range) => {
                        let mut components = Vec::new();
                        for m in &route.middleware[range] {
                            let bytes = component_bytes(&m.source)?;
                            let (component, _) = compose::compile_cached(
                                &engine,
                                &bytes,
                                config.cache_dir.as_deref(),
                            )
                            .with_context(|| {
                                format!("route `{}`: compiling component `{}`", route.name, m.name)
                            })?;
                            components.push((m.name.clone(), component));
                        }
                        let run = FilterRun::new(
                            &linker,
                            components,
                            stores.clone(),
                            config.limits.max_body_bytes,
                        )
                        .await
                        .map_err(|e| setup_error(index, route, e))?;
                        Segment::Filters(run)
                    }
                    Run::Composed(range) => {
                        // Without an origin, the last component answers by itself.
                        let ends = range.end == route.middleware.len() && route.upstream.is_none();
                        let pieces = &route.middleware[range];
                        let key = (
                            pieces.iter().map(|m| m.source.clone()).collect::<Vec<_>>(),
                            ends,
                        );
                        if !compiled.contains_key(&key) {
                            let component = compile_chain(&engine, route, pieces, ends, config)?;
                            compiled.insert(key.clone(), component);
                        }
                        let names: Vec<&str> = pieces.iter().map(|m| m.name.as_str()).collect();
                        let stats = Arc::new(PoolStats::default());
                        let chain = Chain::new(
                            &linker,
                            &compiled[&key],
                            route,
                            &names,
                            stores.clone(),
                            &config.limits,
                            stats.clone(),
                        )?;
                        watched.pool(&route.name, &chain.components, stats);
                        Segment::Composed(ChainHandler::new(chain))
                    }
                };
                segments.push(segment);
            }
            let names: Vec<&str> = route.middleware.iter().map(|m| m.name.as_str()).collect();
            Some(Arc::new(RouteChain::new(
                &route.name,
                names.join(","),
                segments,
                end,
                client.clone(),
            )))
        };
        routes.push(RouteRuntime {
            name: route.name.clone(),
            host: route.host.clone(),
            prefix: route.path_prefix.clone(),
            exact: route.exact,
            upstream,
            chain,
            allow_trace: route.allow_trace,
            compression: route.compression,
            middleware: route.middleware.iter().map(|m| m.name.clone()).collect(),
            counts: metrics.route_counts(&route.name),
        });
    }

    metrics.set_watched(watched);
    Ok(Gateway {
        routes: RouteTable::new(routes),
        limits: config.limits.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
        shutdown_timeout: config.shutdown_timeout,
        metrics,
        client,
        admission: Arc::new(Semaphore::new(config.limits.max_instances as usize)),
        kv,
        upstreams: upstreams.into_values().collect(),
        components: summaries(config)?,
        gates: Gates::new(&config.routes),
        traces: None,
        version: 1,
        loaded_at: std::time::SystemTime::now(),
        started_at: std::time::SystemTime::now(),
    })
}

/// How a route's middleware list is cut into segments.
enum Run {
    Filters(std::ops::Range<usize>),
    Composed(std::ops::Range<usize>),
    /// A Spin app's primary whose forwarding the host does (`chain::primary`).
    Primary(usize),
}

/// Cuts the middleware list into runs: consecutive filter-capable
/// components take the fast path (unless `fast_path` is off); the rest
/// are composed. A Spin app's primary (the last component of a route
/// without an origin) is never a filter: on the fast path, one that
/// exports the upstream phase is run by the host, any other is composed.
fn plan(route: &crate::config::Route, fast_path: bool) -> anyhow::Result<Vec<Run>> {
    let n = route.middleware.len();
    let mut runs: Vec<Run> = Vec::new();
    for (i, m) in route.middleware.iter().enumerate() {
        let primary = route.upstream.is_none() && i == n - 1;
        let exports = if fast_path {
            compose::exports(&m.name, &component_bytes(&m.source)?)
                .with_context(|| format!("route `{}`", route.name))?
        } else {
            Vec::new()
        };
        if primary && exports.iter().any(|e| e == UPSTREAM) {
            runs.push(Run::Primary(i));
            continue;
        }
        let filter = !primary && exports.iter().any(|e| e == FILTER);
        match (runs.last_mut(), filter) {
            (Some(Run::Filters(r)), true) | (Some(Run::Composed(r)), false) => r.end = i + 1,
            (_, true) => runs.push(Run::Filters(i..i + 1)),
            (_, false) => runs.push(Run::Composed(i..i + 1)),
        }
    }
    Ok(runs)
}

/// The startup error for a run that could not be set up.
fn setup_error(index: usize, route: &crate::config::Route, e: SetupError) -> anyhow::Error {
    match e {
        SetupError::Config { component, errors } => {
            let lines: Vec<String> = errors
                .iter()
                .map(|(variable, message)| {
                    if variable.is_empty() {
                        format!("route[{index}] component {component}: {message}")
                    } else {
                        format!(
                            "route[{index}] component {component}: variable `{variable}`: {message}"
                        )
                    }
                })
                .collect();
            ComponentConfigError(lines.join("\n")).into()
        }
        SetupError::Other(e) => {
            anyhow::Error::from(e).context(format!("route `{}`: starting its filters", route.name))
        }
    }
}

fn compile_chain(
    engine: &wasmtime::Engine,
    route: &crate::config::Route,
    middleware: &[crate::config::Middleware],
    primary_last: bool,
    config: &Config,
) -> anyhow::Result<Component> {
    let bytes: Vec<Vec<u8>> = middleware
        .iter()
        .map(|m| component_bytes(&m.source))
        .collect::<anyhow::Result<_>>()?;
    let pieces: Vec<Piece<'_>> = middleware
        .iter()
        .zip(&bytes)
        .map(|(m, b)| Piece {
            name: &m.name,
            bytes: b,
        })
        .collect();
    let composed = compose::compose(&pieces, primary_last)
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
