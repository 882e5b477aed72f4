//! Logs and metrics: JSON structured logging through `tracing`, the
//! Prometheus registry (upstream and store families included), and what
//! the admin listener ([`crate::admin`]) answers on `/metrics`,
//! `/healthz` and `/readyz`.
//!
//! Request logs carry ids, routes, statuses and durations, never header
//! values: nothing here ever sees `Authorization`, cookies or API keys.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

use crate::chain::composed::PoolStats;

/// Lines the log writer may hold before it drops (and counts) new ones.
const LOG_BUFFER_LINES: usize = 64 * 1024;

/// Lines dropped because the log consumer did not keep up
/// (`tollgate_log_lines_dropped_total`).
static LOG_DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the JSON log subscriber; `RUST_LOG` filters (default `info`).
///
/// Lines are formatted on the thread that logs and written to stderr by
/// a writer thread of their own, in batches (one `write` per batch, not
/// per line), so a request never waits on the log's consumer. If that
/// consumer stalls long enough to fill the buffer, new lines are dropped
/// and counted in a metric rather than holding requests up. Keep the
/// returned guard until exit: dropping it flushes what is buffered.
pub fn init_logging() -> WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .thread_name("tollgate-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let _ = LOG_DROPPED.set(writer.error_counter());
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(writer)
        .try_init();
    guard
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabel {
    route: String,
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChainLabel {
    route: String,
    components: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabel {
    upstream: String,
    endpoint: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    upstream: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabel {
    route: String,
    upstream: String,
    result: String,
}

/// The upstream metric families, handed to each [`Upstream`] so it can
/// resolve its counters once, at startup.
///
/// [`Upstream`]: crate::egress::Upstream
#[derive(Clone, Default)]
pub struct UpstreamFamilies {
    attempts: Family<AttemptLabel, Counter>,
    ejections: Family<EndpointLabel, Counter>,
    retries: Family<RetryLabel, Counter>,
    healthy: Family<EndpointLabel, Gauge>,
    ejected: Family<EndpointLabel, Gauge>,
    in_flight: Family<EndpointLabel, Gauge>,
}

impl UpstreamFamilies {
    /// Attempts on one endpoint that ended in `outcome`.
    pub fn attempt(&self, upstream: &str, endpoint: &str, outcome: &str) -> Counter {
        self.attempts
            .get_or_create(&AttemptLabel {
                upstream: upstream.into(),
                endpoint: endpoint.into(),
                outcome: outcome.into(),
            })
            .clone()
    }

    /// Ejections of one endpoint.
    pub fn ejection(&self, upstream: &str, endpoint: &str) -> Counter {
        self.ejections
            .get_or_create(&EndpointLabel {
                upstream: upstream.into(),
                endpoint: endpoint.into(),
            })
            .clone()
    }

    /// Retries on a route: `retried`, or `over-budget` (refused).
    pub fn retry(&self, route: &str, upstream: &str, result: &str) -> Counter {
        self.retries
            .get_or_create(&RetryLabel {
                route: route.into(),
                upstream: upstream.into(),
                result: result.into(),
            })
            .clone()
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "upstream_attempts",
            "Attempts on an upstream endpoint, by outcome (answered, failed-status, connect-failed, reset, timed-out)",
            self.attempts.clone(),
        );
        registry.register(
            "upstream_retries",
            "Retries by route: retried, or over-budget (refused by the retry budget)",
            self.retries.clone(),
        );
        registry.register(
            "upstream_ejections",
            "Times an endpoint was ejected after consecutive failures",
            self.ejections.clone(),
        );
        registry.register(
            "upstream_endpoint_healthy",
            "1 while an endpoint passes its active health checks (or has none)",
            self.healthy.clone(),
        );
        registry.register(
            "upstream_endpoint_ejected",
            "1 while an endpoint is ejected",
            self.ejected.clone(),
        );
        registry.register(
            "upstream_endpoint_in_flight",
            "Requests in flight on an endpoint",
            self.in_flight.clone(),
        );
    }

    /// Sets the gauges from `upstream`'s live state.
    fn refresh(&self, upstream: &crate::egress::Upstream) {
        let now = std::time::Instant::now();
        for e in &upstream.endpoints {
            let label = EndpointLabel {
                upstream: upstream.name.to_string(),
                endpoint: e.name.to_string(),
            };
            self.healthy
                .get_or_create(&label)
                .set(e.is_healthy() as i64);
            self.ejected
                .get_or_create(&label)
                .set(e.is_ejected(now) as i64);
            self.in_flight
                .get_or_create(&label)
                .set(e.in_flight() as i64);
        }
    }
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The shared store's metrics, handed to the Redis store at startup.
#[derive(Clone)]
pub struct StoreMetrics {
    /// Calls that failed (timeouts, refused or dropped connections, errors).
    pub errors: Counter,
    /// Round-trip time of every call.
    pub seconds: Histogram,
    /// Recoveries: the store answering again after failing, and each
    /// switch to a new master named by the sentinels.
    pub reconnects: Counter,
    /// Whether the last call (or the last ping) succeeded.
    pub up: Arc<AtomicBool>,
}

impl StoreMetrics {
    /// Fresh, unregistered metrics (a gateway's come from
    /// [`Metrics::store_metrics`]; benchmarks use these).
    pub fn new() -> Self {
        Self {
            errors: Counter::default(),
            seconds: Histogram::new(latency_buckets()),
            reconnects: Counter::default(),
            up: Arc::new(AtomicBool::new(false)),
        }
    }

    fn register_in(&self, registry: &mut Registry) {
        registry.register(
            "kv_store_errors",
            "Shared-store calls that failed",
            self.errors.clone(),
        );
        registry.register(
            "kv_store_call_seconds",
            "Round-trip time of shared-store calls",
            self.seconds.clone(),
        );
        registry.register(
            "kv_store_reconnects",
            "Times the shared store answered again after failing, or a new master was followed",
            self.reconnects.clone(),
        );
    }
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    duration: Family<RouteLabel, Histogram>,
    chain: Family<ChainLabel, Histogram>,
    component: Family<ComponentLabel, Histogram>,
    /// What the running configuration's pieces report at each scrape;
    /// replaced whole when a reload swaps the configuration.
    watched: arc_swap::ArcSwap<Watched>,
    instances_created: Family<ChainLabel, Gauge>,
    instances_dropped: Family<ChainLabel, Gauge>,
    instances_live: Family<ChainLabel, Gauge>,
    instantiate_failures: Family<ChainLabel, Gauge>,
    in_flight: Gauge,
    kv_entries: Gauge,
    log_dropped: Counter,
    /// What [`LOG_DROPPED`] said at the last scrape.
    log_dropped_seen: AtomicU64,
    upstream_families: UpstreamFamilies,
    store: StoreMetrics,
    store_up: Gauge,
    route_counts:
        std::sync::Mutex<std::collections::HashMap<String, Arc<crate::route_stats::RouteCounts>>>,
    pub ready: AtomicBool,
}

/// The live pieces of one configuration that metrics and readiness read:
/// gathered while a gateway is built, installed when it starts serving.
#[derive(Default)]
pub struct Watched {
    pools: Vec<(ChainLabel, Arc<PoolStats>)>,
    kv: Option<Arc<crate::kv::MemoryStore>>,
    /// Whether a shared store is configured (and so part of readiness).
    store: bool,
    /// Each route's upstream, for readiness and the endpoint gauges.
    route_upstreams: Vec<(String, Arc<crate::egress::Upstream>)>,
}

impl Watched {
    /// Exports the embedded store's size.
    pub fn kv(&mut self, kv: Arc<crate::kv::MemoryStore>) {
        self.kv = Some(kv);
    }

    /// Makes readiness depend on the shared store.
    pub fn store(&mut self) {
        self.store = true;
    }

    /// Watches a route's upstream: for `/readyz`, and the endpoint gauges.
    pub fn route_upstream(&mut self, route: &str, upstream: Arc<crate::egress::Upstream>) {
        self.route_upstreams.push((route.into(), upstream));
    }

    /// Registers a chain's pool so its counters are exported.
    pub fn pool(&mut self, route: &str, components: &str, stats: Arc<PoolStats>) {
        self.pools.push((
            ChainLabel {
                route: route.into(),
                components: components.into(),
            },
            stats,
        ));
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let requests = Family::<RouteStatus, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        let duration = Family::<RouteLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(latency_buckets())) as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, by route",
            duration.clone(),
        );
        let chain = Family::<ChainLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(latency_buckets())) as fn() -> Histogram,
        );
        registry.register(
            "chain_duration_seconds",
            "Time spent in a route's middleware chain, origin wait included",
            chain.clone(),
        );
        let component = Family::<ComponentLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(latency_buckets())) as fn() -> Histogram,
        );
        registry.register(
            "component_duration_seconds",
            "A component's own time per request (time in the rest of the chain excluded), as it reports it",
            component.clone(),
        );
        let instances_created = Family::default();
        registry.register(
            "instances_created",
            "Component instances created, by chain",
            instances_created.clone(),
        );
        let instances_dropped = Family::default();
        registry.register(
            "instances_retired",
            "Component instances retired, by chain",
            instances_dropped.clone(),
        );
        let instances_live = Family::default();
        registry.register(
            "instances_live",
            "Component instances alive now, by chain",
            instances_live.clone(),
        );
        let instantiate_failures = Family::default();
        registry.register(
            "instantiate_failures",
            "Failed instantiations, by chain",
            instantiate_failures.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Requests being handled now",
            in_flight.clone(),
        );
        let kv_entries = Gauge::default();
        registry.register(
            "kv_entries",
            "Entries held by the embedded key-value store",
            kv_entries.clone(),
        );
        let log_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because stderr's reader did not keep up",
            log_dropped.clone(),
        );
        let upstream_families = UpstreamFamilies::default();
        upstream_families.register(&mut registry);
        let store = StoreMetrics::new();
        store.register_in(&mut registry);
        let store_up = Gauge::default();
        registry.register(
            "kv_store_up",
            "1 while the shared store answers (absent without one)",
            store_up.clone(),
        );
        Self {
            store,
            store_up,
            route_counts: Default::default(),
            upstream_families,
            kv_entries,
            log_dropped,
            log_dropped_seen: AtomicU64::new(0),
            registry,
            requests,
            duration,
            chain,
            component,
            watched: Default::default(),
            instances_created,
            instances_dropped,
            instances_live,
            instantiate_failures,
            in_flight,
            ready: AtomicBool::new(false),
        }
    }

    /// The shared store's metrics (shared handles, kept across reloads).
    pub fn store_metrics(&self) -> StoreMetrics {
        self.store.clone()
    }

    /// The upstream metric families (shared handles).
    pub fn upstream_families(&self) -> UpstreamFamilies {
        self.upstream_families.clone()
    }

    /// The answer counts of route `name` (the same ones across reloads).
    pub fn route_counts(&self, name: &str) -> Arc<crate::route_stats::RouteCounts> {
        self.route_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Installs what the now-running configuration reports.
    pub fn set_watched(&self, watched: Watched) {
        self.watched.store(Arc::new(watched));
    }

    /// Routes none of whose endpoints passes its health checks.
    pub fn unready_routes(&self) -> Vec<String> {
        self.watched
            .load()
            .route_upstreams
            .iter()
            .filter(|(_, u)| !u.any_healthy())
            .map(|(r, _)| r.clone())
            .collect()
    }

    pub fn request_started(&self) {
        self.in_flight.inc();
    }

    pub fn record(&self, route: &str, status: u16, seconds: f64) {
        self.in_flight.dec();
        self.requests
            .get_or_create(&RouteStatus {
                route: route.into(),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabel {
                route: route.into(),
            })
            .observe(seconds);
    }

    pub fn record_chain(&self, route: &str, components: &str, seconds: f64) {
        self.chain
            .get_or_create(&ChainLabel {
                route: route.into(),
                components: components.into(),
            })
            .observe(seconds);
    }

    pub fn record_component(&self, route: &str, component: &str, seconds: f64) {
        self.component
            .get_or_create(&ComponentLabel {
                route: route.into(),
                component: component.into(),
            })
            .observe(seconds);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let watched = self.watched.load();
        for (label, stats) in &watched.pools {
            let created = stats.instantiated.load(Ordering::Relaxed) as i64;
            let dropped = stats.dropped.load(Ordering::Relaxed) as i64;
            self.instances_created.get_or_create(label).set(created);
            self.instances_dropped.get_or_create(label).set(dropped);
            self.instances_live
                .get_or_create(label)
                .set(created - dropped);
            self.instantiate_failures
                .get_or_create(label)
                .set(stats.failed.load(Ordering::Relaxed) as i64);
        }
        if let Some(kv) = &watched.kv {
            self.kv_entries.set(kv.len() as i64);
        }
        if watched.store {
            self.store_up
                .set(self.store.up.load(Ordering::Relaxed) as i64);
        }
        let mut seen = std::collections::HashSet::new();
        for (_, upstream) in &watched.route_upstreams {
            if seen.insert(Arc::as_ptr(upstream)) {
                self.upstream_families.refresh(upstream);
            }
        }
        if let Some(dropped) = LOG_DROPPED.get() {
            let now = dropped.dropped_lines() as u64;
            let seen = self.log_dropped_seen.swap(now, Ordering::Relaxed);
            self.log_dropped.inc_by(now.saturating_sub(seen));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `/metrics`, `/healthz` and `/readyz` (`None` path: 404), for the admin
/// listener ([`crate::admin`]).
pub fn ops_response(path: &str, metrics: &Metrics) -> (u16, &'static str, String) {
    match path {
        "/metrics" => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" => (200, "text/plain", "ok\n".to_string()),
        "/readyz" => readiness(metrics),
        _ => (404, "text/plain", "not found\n".into()),
    }
}

/// `/readyz`: ready once the gateway serves, while every route has an
/// endpoint that passes its health checks, and while the shared store (if
/// any) answers; otherwise 503 naming what is not.
fn readiness(metrics: &Metrics) -> (u16, &'static str, String) {
    if !metrics.ready.load(Ordering::Relaxed) {
        return (503, "text/plain", "not ready\n".into());
    }
    let mut lines: String = metrics
        .unready_routes()
        .iter()
        .map(|r| format!("route {r}: no healthy upstream endpoint\n"))
        .collect();
    if metrics.watched.load().store && !metrics.store.up.load(Ordering::Relaxed) {
        lines.push_str("kv store: unavailable\n");
    }
    if lines.is_empty() {
        return (200, "text/plain", "ready\n".into());
    }
    (503, "text/plain", format!("not ready\n{lines}"))
}

/// Binds the admin listener, if configured.
pub async fn bind_admin(addr: Option<SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        None => Ok(None),
        Some(a) => Ok(Some(TcpListener::bind(a).await.map_err(|e| {
            anyhow::anyhow!("server.admin_listen: cannot bind {a}: {e}")
        })?)),
    }
}
