//! The gateway configuration: the TOML schema, and the validation that turns
//! it into a [`Config`] every other module can trust.
//!
//! Everything is checked before a port is bound. Each error names the key
//! that is wrong (`route[1].origin`, `limits.max_body_bytes`, ...) and says
//! what is wrong with it; all errors are collected, not just the first.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use ipnet::IpNet;

use crate::egress::UpstreamConfig;
use crate::ingress::tls::TlsSettings;

mod kv;
mod telemetry;
mod upstreams;

pub use telemetry::TelemetryConfig;

pub use crate::kv_redis::connect::RedisConfig;
pub use kv::check_redis_url;

/// A validated gateway configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    /// `[server.tls]`: the TLS listeners and their certificate.
    pub tls: Option<TlsSettings>,
    pub admin_listen: Option<SocketAddr>,
    /// The admin API's bearer token (`server.admin_token`, from the
    /// environment); `None` leaves the API closed.
    pub admin_token: Option<Secret>,
    pub trusted_proxies: Vec<IpNet>,
    pub shutdown_timeout: Duration,
    /// Where compiled chains are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Whether filter-capable components take the fast path (default); off,
    /// every middleware runs as a composed `wasi:http` handler.
    pub fast_path: bool,
    /// I/O worker threads, each with its own runtime and `SO_REUSEPORT`
    /// socket per listener; 0 serves every connection on one
    /// multi-threaded runtime. Default: one per core.
    pub workers: usize,
    pub limits: Limits,
    pub kv: KvLimits,
    pub routes: Vec<Route>,
    /// `[components.NAME]`, as configured (for the admin API).
    pub components: Vec<ComponentInfo>,
    /// `[telemetry]`: where traces go.
    pub telemetry: TelemetryConfig,
}

/// A component as configured: its source and its own variables.
#[derive(Debug, Clone)]
pub struct ComponentInfo {
    pub name: String,
    pub source: ComponentSource,
    pub variables: BTreeMap<String, String>,
}

/// A secret value: compared, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Resource limits, all strictly positive.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    /// Wall-clock budget for one request inside the middleware chain.
    pub request_timeout: Duration,
    /// Linear-memory cap for one component instance.
    pub instance_memory_bytes: usize,
    /// How many component instances may exist at once, over all routes.
    pub max_instances: u32,
    /// How many requests one instance serves before it is recycled.
    pub instance_reuse: usize,
    pub origin_connect_timeout: Duration,
    pub origin_response_timeout: Duration,
    pub origin_idle_connections: usize,
}

/// Connect and per-command timeout for a Redis store unless configured.
pub const DEFAULT_REDIS_TIMEOUT_MS: i64 = 250;

/// Where component state lives, and its bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct KvLimits {
    pub max_entries: usize,
    pub idle_expiry: Duration,
    pub backend: KvBackendConfig,
    /// Fault injection for tests: the embedded store's compare-and-swap
    /// always reports a conflict (as Spin 4.1's Redis store does).
    pub simulate_broken_cas: bool,
}

/// The key-value backend: embedded (default) or a shared Redis (one
/// server, a cluster, or a Sentinel-managed master). Its `Debug` never
/// prints URLs or credentials.
#[derive(Clone, Debug, PartialEq)]
pub enum KvBackendConfig {
    Memory,
    Redis(RedisConfig),
}

/// One route: where it matches, what runs, and where admitted requests go.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    /// Lower-case host to match, without port; `None` matches any host.
    pub host: Option<String>,
    pub path_prefix: String,
    /// Match the path exactly rather than as a prefix (Spin's exact routes).
    pub exact: bool,
    /// Where admitted requests go: a named `[upstreams.NAME]`, or the
    /// route's single `origin` URL as an upstream of one endpoint. `None`
    /// when the chain ends in a primary component that answers (or
    /// forwards) itself, as in a Spin app.
    pub upstream: Option<Arc<UpstreamConfig>>,
    /// Whether non-idempotent requests (POST, PATCH) may be retried after
    /// they may have reached the origin.
    pub retry_non_idempotent: bool,
    /// The ordered chain, outermost first.
    pub middleware: Vec<Middleware>,
    /// Hosts the chain's own `wasi:http/client` calls may reach.
    pub allowed_outbound_hosts: Vec<Origin>,
    /// Variables visible to the chain through `spin:variables`.
    pub variables: BTreeMap<String, String>,
    /// Key-value store labels the chain may open.
    pub key_value_stores: Vec<String>,
    /// Whether the chain may resolve host names (url-guard's DNS mode).
    /// Sockets stay closed either way.
    pub allow_name_lookup: bool,
    /// Whether TRACE is forwarded (otherwise 405, as is CONNECT always).
    pub allow_trace: bool,
    /// Whether responses may be compressed (`compression.rs`).
    pub compression: bool,
}

/// A scheme + authority that requests are forwarded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

/// One middleware in a route's chain.
#[derive(Debug, Clone)]
pub struct Middleware {
    pub name: String,
    pub source: ComponentSource,
}

/// Where a component's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ComponentSource {
    /// A component compiled into the `tollgate` binary (`builtin:NAME`).
    Builtin(String),
    /// A `.wasm` file on disk.
    File(PathBuf),
}

/// All the problems found in a configuration, one per line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    kv: RawKv,
    #[serde(default)]
    telemetry: telemetry::RawTelemetry,
    #[serde(default)]
    components: BTreeMap<String, RawComponent>,
    #[serde(default)]
    upstreams: BTreeMap<String, upstreams::RawUpstream>,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_listen")]
    listen: Vec<String>,
    admin_listen: Option<String>,
    admin_token: Option<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default = "default_shutdown_ms")]
    shutdown_timeout_ms: i64,
    cache_dir: Option<String>,
    #[serde(default = "default_fast_path")]
    fast_path: bool,
    workers: Option<i64>,
    tls: Option<RawTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    listen: Vec<String>,
    cert: Option<String>,
    key: Option<String>,
    min_version: Option<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_listen: None,
            admin_token: None,
            trusted_proxies: Vec::new(),
            shutdown_timeout_ms: default_shutdown_ms(),
            cache_dir: None,
            fast_path: default_fast_path(),
            workers: None,
            tls: None,
        }
    }
}

fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:8080".into()]
}
fn default_fast_path() -> bool {
    true
}
fn default_shutdown_ms() -> i64 {
    10_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_header_bytes: i64,
    max_body_bytes: i64,
    request_timeout_ms: i64,
    instance_memory_bytes: i64,
    max_instances: i64,
    instance_reuse: i64,
    origin_connect_timeout_ms: i64,
    origin_response_timeout_ms: i64,
    origin_idle_connections: i64,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            request_timeout_ms: 10_000,
            instance_memory_bytes: 64 * 1024 * 1024,
            max_instances: 1_000,
            instance_reuse: 1_000,
            origin_connect_timeout_ms: 2_000,
            origin_response_timeout_ms: 8_000,
            origin_idle_connections: 64,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawKv {
    max_entries: i64,
    idle_expiry_secs: i64,
    backend: String,
    redis_url: Option<String>,
    /// `single` (default), `cluster` or `sentinel`.
    mode: Option<String>,
    /// Cluster seed nodes, or the sentinels' addresses.
    redis_urls: Vec<String>,
    master_name: Option<String>,
    redis_username: Option<String>,
    redis_password: Option<String>,
    redis_ca_file: Option<String>,
    redis_timeout_ms: i64,
    simulate_broken_cas: bool,
}

impl Default for RawKv {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            idle_expiry_secs: 3_600,
            backend: "memory".into(),
            redis_url: None,
            mode: None,
            redis_urls: Vec::new(),
            master_name: None,
            redis_username: None,
            redis_password: None,
            redis_ca_file: None,
            redis_timeout_ms: DEFAULT_REDIS_TIMEOUT_MS,
            simulate_broken_cas: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    source: String,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    allow_name_lookup: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<String>,
    host: Option<String>,
    #[serde(default = "default_prefix")]
    path_prefix: String,
    origin: Option<String>,
    upstream: Option<String>,
    #[serde(default)]
    retry_non_idempotent: bool,
    #[serde(default)]
    middleware: Vec<String>,
    #[serde(default)]
    allow_trace: bool,
    #[serde(default = "default_true")]
    compression: bool,
}

fn default_true() -> bool {
    true
}

fn default_prefix() -> String {
    "/".into()
}

// ---------------------------------------------------------------------------
// Loading and validation.

/// Where `builtin:` names are looked up, and how environment references
/// are resolved. Tests pass their own; the binary uses [`Env::process`].
pub struct Env<'a> {
    pub builtins: &'a [&'a str],
    pub var: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    pub fn process() -> Env<'static> {
        Env {
            builtins: crate::builtin::NAMES,
            var: &|k| std::env::var(k).ok(),
        }
    }
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path, env: &Env) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![format!("cannot read {}: {e}", path.display())]))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base, env)
}

/// Validates configuration text; relative component paths resolve against `base`.
pub fn parse(text: &str, base: &Path, env: &Env) -> Result<Config, ConfigErrors> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        // toml's message quotes the offending line, which names the key.
        ConfigErrors(vec![e.to_string().trim_end().to_string()])
    })?;
    let mut v = Validator::default();
    let config = v.config(raw, base, env);
    if v.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(v.errors))
    }
}

/// Server settings and limits at their defaults, with no routes: the base a
/// Spin manifest's routes are added to.
pub fn defaults(env: &Env) -> Config {
    Validator::default().config(RawConfig::default(), Path::new("."), env)
}

#[derive(Default)]
struct Validator {
    errors: Vec<String>,
}

impl Validator {
    fn err(&mut self, key: impl fmt::Display, msg: impl fmt::Display) {
        self.errors.push(format!("{key}: {msg}"));
    }

    fn positive(&mut self, key: &str, value: i64) -> u64 {
        if value <= 0 {
            self.err(key, format_args!("must be greater than 0 (got {value})"));
            1
        } else {
            value as u64
        }
    }

    fn millis(&mut self, key: &str, value: i64) -> Duration {
        Duration::from_millis(self.positive(key, value))
    }

    fn addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    key,
                    format_args!("`{value}` is not an IP:port socket address"),
                );
                None
            }
        }
    }

    fn config(&mut self, raw: RawConfig, base: &Path, env: &Env) -> Config {
        let listen: Vec<SocketAddr> = raw
            .server
            .listen
            .iter()
            .enumerate()
            .filter_map(|(i, a)| self.addr(&format!("server.listen[{i}]"), a))
            .collect();
        let tls = raw
            .server
            .tls
            .as_ref()
            .and_then(|t| self.tls(t, base, &listen));
        if raw.server.listen.is_empty() && tls.is_none() {
            self.err(
                "server.listen",
                "needs at least one address (or [server.tls] listeners)",
            );
        }
        let admin_listen = raw
            .server
            .admin_listen
            .as_deref()
            .and_then(|a| self.addr("server.admin_listen", a));
        if let Some(admin) = admin_listen
            && admin.port() != 0
            && (listen.contains(&admin) || tls.as_ref().is_some_and(|t| t.listen.contains(&admin)))
        {
            self.err(
                "server.admin_listen",
                "must differ from every server.listen and server.tls.listen address",
            );
        }
        let admin_token = raw
            .server
            .admin_token
            .as_deref()
            .and_then(|t| self.admin_token(t, env));
        if let Some(admin) = admin_listen
            && !admin.ip().is_loopback()
            && admin_token.is_none()
        {
            self.err(
                "server.admin_token",
                "is required when server.admin_listen is not a loopback address",
            );
        }
        let trusted_proxies = raw
            .server
            .trusted_proxies
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let net = p
                    .parse::<IpNet>()
                    .ok()
                    .or_else(|| p.parse::<IpAddr>().ok().map(IpNet::from));
                if net.is_none() {
                    self.err(
                        format_args!("server.trusted_proxies[{i}]"),
                        format_args!("`{p}` is not an IP address or CIDR block"),
                    );
                }
                net
            })
            .collect();
        let shutdown_timeout =
            self.millis("server.shutdown_timeout_ms", raw.server.shutdown_timeout_ms);
        // `cache_dir = ""` turns the cache off; unset means the user cache dir.
        let cache_dir = match raw.server.cache_dir.as_deref() {
            Some("") => None,
            Some(d) => Some(base.join(d)),
            None => (env.var)("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| (env.var)("HOME").map(|h| Path::new(&h).join(".cache")))
                .map(|d| d.join("tollgate")),
        };

        let l = &raw.limits;
        let limits = Limits {
            max_header_bytes: self.positive("limits.max_header_bytes", l.max_header_bytes) as usize,
            max_body_bytes: self.positive("limits.max_body_bytes", l.max_body_bytes) as usize,
            request_timeout: self.millis("limits.request_timeout_ms", l.request_timeout_ms),
            instance_memory_bytes: self
                .positive("limits.instance_memory_bytes", l.instance_memory_bytes)
                as usize,
            max_instances: self
                .positive("limits.max_instances", l.max_instances)
                .min(u32::MAX as u64) as u32,
            instance_reuse: self.positive("limits.instance_reuse", l.instance_reuse) as usize,
            origin_connect_timeout: self.millis(
                "limits.origin_connect_timeout_ms",
                l.origin_connect_timeout_ms,
            ),
            origin_response_timeout: self.millis(
                "limits.origin_response_timeout_ms",
                l.origin_response_timeout_ms,
            ),
            origin_idle_connections: self
                .positive("limits.origin_idle_connections", l.origin_idle_connections)
                as usize,
        };
        if l.origin_response_timeout_ms > 0
            && l.request_timeout_ms > 0
            && limits.origin_response_timeout >= limits.request_timeout
        {
            self.err(
                "limits.origin_response_timeout_ms",
                "must be less than limits.request_timeout_ms, which bounds the whole request",
            );
        }
        if limits.instance_memory_bytes < 1 << 20 {
            self.err(
                "limits.instance_memory_bytes",
                "must be at least 1048576 (1 MiB)",
            );
        }
        let kv = KvLimits {
            max_entries: self.positive("kv.max_entries", raw.kv.max_entries) as usize,
            idle_expiry: Duration::from_secs(
                self.positive("kv.idle_expiry_secs", raw.kv.idle_expiry_secs),
            ),
            backend: self.kv_backend(&raw.kv, env, base),
            simulate_broken_cas: raw.kv.simulate_broken_cas,
        };
        if kv.simulate_broken_cas && !matches!(kv.backend, KvBackendConfig::Memory) {
            self.err("kv.simulate_broken_cas", "needs kv.backend = \"memory\"");
        }

        let telemetry = self.telemetry(&raw.telemetry);
        let components = self.components(&raw.components, base, env);
        let component_list = components
            .iter()
            .map(|(name, c)| ComponentInfo {
                name: name.clone(),
                source: c.source.clone(),
                variables: c.variables.clone(),
            })
            .collect();
        let upstreams = self.upstreams(&raw.upstreams);
        let routes = self.routes(&raw.routes, &components, &upstreams, &raw.upstreams);
        if raw.routes.is_empty() {
            self.err("route", "at least one [[route]] is required");
        }
        Config {
            listen,
            tls,
            admin_listen,
            trusted_proxies,
            shutdown_timeout,
            cache_dir,
            fast_path: raw.server.fast_path,
            workers: self.workers(raw.server.workers),
            limits,
            kv,
            routes,
            admin_token,
            components: component_list,
            telemetry,
        }
    }

    /// `server.workers`: 0 to 256; absent, one per core.
    fn workers(&mut self, value: Option<i64>) -> usize {
        match value {
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Some(n @ 0..=256) => n as usize,
            Some(n) => {
                self.err(
                    "server.workers",
                    format_args!("must be between 0 and 256 (got {n})"),
                );
                1
            }
        }
    }

    /// `server.admin_token`: only from the environment, and long enough
    /// not to be guessed.
    fn admin_token(&mut self, value: &str, env: &Env) -> Option<Secret> {
        let key = "server.admin_token";
        let whole_reference =
            value.starts_with("${env:") && value.ends_with('}') && value.matches("${").count() == 1;
        if !whole_reference {
            self.err(
                key,
                "must be an ${env:NAME} reference: a token is never written in the file",
            );
            return None;
        }
        match expand(value, env) {
            Ok(t) if t.len() >= 16 => Some(Secret(t)),
            Ok(_) => {
                self.err(key, "must be at least 16 characters long");
                None
            }
            Err(e) => {
                self.err(key, e);
                None
            }
        }
    }

    /// `[server.tls]`: its listeners, and a certificate and key that load
    /// and belong together (read now, so a bad one stops startup).
    fn tls(&mut self, raw: &RawTls, base: &Path, plain: &[SocketAddr]) -> Option<TlsSettings> {
        let before = self.errors.len();
        let listen: Vec<SocketAddr> = raw
            .listen
            .iter()
            .enumerate()
            .filter_map(|(i, a)| self.addr(&format!("server.tls.listen[{i}]"), a))
            .collect();
        if raw.listen.is_empty() {
            self.err("server.tls.listen", "needs at least one address");
        }
        for (i, a) in listen.iter().enumerate() {
            if a.port() != 0 && plain.contains(a) {
                self.err(
                    format_args!("server.tls.listen[{i}]"),
                    format_args!("`{a}` is also in server.listen; one address speaks one protocol"),
                );
            }
        }
        let tls13_only = match raw.min_version.as_deref() {
            None | Some("1.2") => false,
            Some("1.3") => true,
            Some(other) => {
                self.err(
                    "server.tls.min_version",
                    format_args!("`{other}` is not a supported version (\"1.2\" or \"1.3\")"),
                );
                false
            }
        };
        let (Some(cert), Some(key)) = (raw.cert.as_deref(), raw.key.as_deref()) else {
            for (k, v) in [("server.tls.cert", &raw.cert), ("server.tls.key", &raw.key)] {
                if v.is_none() {
                    self.err(k, "is required: the path of a PEM file");
                }
            }
            return None;
        };
        let settings = TlsSettings {
            listen,
            cert: base.join(cert),
            key: base.join(key),
            tls13_only,
        };
        if let Err(e) = crate::ingress::tls::load(&settings.cert, &settings.key) {
            self.err(e.key, e.message);
        }
        (self.errors.len() == before).then_some(settings)
    }

    fn components(
        &mut self,
        raw: &BTreeMap<String, RawComponent>,
        base: &Path,
        env: &Env,
    ) -> BTreeMap<String, ResolvedComponent> {
        let mut out = BTreeMap::new();
        for (name, c) in raw {
            let key = format!("components.{name}");
            if !valid_name(name) {
                self.err(
                    &key,
                    "component names use lower-case letters, digits, '-' and '_'",
                );
            }
            let source = if let Some(b) = c.source.strip_prefix("builtin:") {
                if !env.builtins.contains(&b) {
                    self.err(
                        format_args!("{key}.source"),
                        format_args!("unknown builtin `{b}` (known: {})", env.builtins.join(", ")),
                    );
                }
                ComponentSource::Builtin(b.to_string())
            } else {
                let path = base.join(&c.source);
                if !path.is_file() {
                    self.err(
                        format_args!("{key}.source"),
                        format_args!("component file `{}` does not exist", c.source),
                    );
                }
                ComponentSource::File(path)
            };
            let mut variables = BTreeMap::new();
            for (var, value) in &c.variables {
                let vkey = format!("{key}.variables.{var}");
                if !valid_variable_name(var) {
                    self.err(&vkey, "variable names are lower-case letters, digits and '_', starting with a letter");
                }
                match expand(value, env) {
                    Ok(v) => {
                        variables.insert(var.clone(), v);
                    }
                    Err(e) => self.err(&vkey, e),
                }
            }
            let allowed_outbound_hosts = c
                .allowed_outbound_hosts
                .iter()
                .enumerate()
                .filter_map(|(i, h)| match parse_origin(h) {
                    Ok(o) => Some(o),
                    Err(e) => {
                        self.err(format_args!("{key}.allowed_outbound_hosts[{i}]"), e);
                        None
                    }
                })
                .collect();
            for (i, s) in c.key_value_stores.iter().enumerate() {
                if s != "default" {
                    self.err(
                        format_args!("{key}.key_value_stores[{i}]"),
                        format_args!("unknown store `{s}` (only `default` is provided)"),
                    );
                }
            }
            out.insert(
                name.clone(),
                ResolvedComponent {
                    source,
                    variables,
                    allowed_outbound_hosts,
                    key_value_stores: c.key_value_stores.clone(),
                    allow_name_lookup: c.allow_name_lookup,
                },
            );
        }
        out
    }

    fn routes(
        &mut self,
        raw: &[RawRoute],
        components: &BTreeMap<String, ResolvedComponent>,
        upstreams: &BTreeMap<String, Arc<UpstreamConfig>>,
        declared: &BTreeMap<String, upstreams::RawUpstream>,
    ) -> Vec<Route> {
        let mut seen_match = HashSet::new();
        let mut seen_name = HashSet::new();
        let mut out = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let key = format!("route[{i}]");
            let name = r.name.clone().unwrap_or_else(|| format!("route{i}"));
            if !valid_name(&name) {
                self.err(
                    format_args!("{key}.name"),
                    "route names use lower-case letters, digits, '-' and '_'",
                );
            }
            if !seen_name.insert(name.clone()) {
                self.err(
                    format_args!("{key}.name"),
                    format_args!("duplicate route name `{name}`"),
                );
            }
            let host = r
                .host
                .as_ref()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
            if let Some(h) = &host
                && (h.is_empty() || h.contains([':', '/', ' ']))
            {
                self.err(
                    format_args!("{key}.host"),
                    "must be a bare host name without port or path",
                );
            }
            if !r.path_prefix.starts_with('/') {
                self.err(format_args!("{key}.path_prefix"), "must start with '/'");
            }
            let prefix = normalise_prefix(&r.path_prefix);
            if !seen_match.insert((host.clone(), prefix.clone())) {
                self.err(
                    &key,
                    format_args!(
                        "duplicate route: another route already matches host {} and path_prefix `{prefix}`",
                        host.as_deref().unwrap_or("*")
                    ),
                );
            }
            let upstream = match (&r.origin, &r.upstream) {
                (Some(_), Some(_)) => {
                    self.err(&key, "set either origin or upstream, not both");
                    None
                }
                (None, None) => {
                    self.err(
                        format_args!("{key}.origin"),
                        "missing: every route needs an origin URL or an upstream",
                    );
                    None
                }
                (Some(o), None) => {
                    if r.retry_non_idempotent {
                        self.err(
                            format_args!("{key}.retry_non_idempotent"),
                            "needs an upstream: a single origin is never retried",
                        );
                    }
                    match parse_origin(o) {
                        Ok(o) => Some(Arc::new(UpstreamConfig::single(&name, o))),
                        Err(e) => {
                            self.err(format_args!("{key}.origin"), e);
                            None
                        }
                    }
                }
                (None, Some(u)) => match upstreams.get(u) {
                    Some(config) => Some(config.clone()),
                    // Declared but invalid: its own errors are reported.
                    None if declared.contains_key(u) => None,
                    None => {
                        self.err(
                            format_args!("{key}.upstream"),
                            format_args!("unknown upstream `{u}`: define it under [upstreams.{u}]"),
                        );
                        None
                    }
                },
            };
            let mut middleware = Vec::new();
            let mut variables: BTreeMap<String, (String, String)> = BTreeMap::new();
            let mut outbound = Vec::new();
            let mut stores = Vec::new();
            let mut seen_mw = HashSet::new();
            let mut name_lookup = false;
            for (j, m) in r.middleware.iter().enumerate() {
                let mkey = format!("{key}.middleware[{j}]");
                let Some(c) = components.get(m) else {
                    self.err(
                        &mkey,
                        format_args!("unknown component `{m}`: define it under [components.{m}]"),
                    );
                    continue;
                };
                if !seen_mw.insert(m) {
                    self.err(
                        &mkey,
                        format_args!("component `{m}` appears twice in one chain"),
                    );
                }
                for (var, value) in &c.variables {
                    match variables.get(var) {
                        Some((other, v)) if v != value => self.err(
                            &mkey,
                            format_args!(
                                "variable `{var}` of `{m}` conflicts with `{other}`: a chain shares one variable namespace"
                            ),
                        ),
                        _ => {
                            variables.insert(var.clone(), (m.clone(), value.clone()));
                        }
                    }
                }
                for o in &c.allowed_outbound_hosts {
                    if !outbound.contains(o) {
                        outbound.push(o.clone());
                    }
                }
                for s in &c.key_value_stores {
                    if !stores.contains(s) {
                        stores.push(s.clone());
                    }
                }
                name_lookup |= c.allow_name_lookup;
                middleware.push(Middleware {
                    name: m.clone(),
                    source: c.source.clone(),
                });
            }
            if let Some(upstream) = upstream {
                out.push(Route {
                    name,
                    host,
                    path_prefix: prefix,
                    exact: false,
                    upstream: Some(upstream),
                    retry_non_idempotent: r.retry_non_idempotent,
                    middleware,
                    allowed_outbound_hosts: outbound,
                    variables: variables.into_iter().map(|(k, (_, v))| (k, v)).collect(),
                    key_value_stores: stores,
                    allow_name_lookup: name_lookup,
                    allow_trace: r.allow_trace,
                    compression: r.compression,
                });
            }
        }
        out
    }
}

struct ResolvedComponent {
    source: ComponentSource,
    variables: BTreeMap<String, String>,
    allowed_outbound_hosts: Vec<Origin>,
    key_value_stores: Vec<String>,
    allow_name_lookup: bool,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Spin's rule for variable names.
pub fn valid_variable_name(s: &str) -> bool {
    s.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `/api/` and `/api` both match `/api` and `/api/...`, never `/apix`.
fn normalise_prefix(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() { "/".into() } else { t.into() }
}

/// Expands `${env:NAME}` references, so secrets stay out of the file.
fn expand(value: &str, env: &Env) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("unterminated `${` reference".into());
        };
        let reference = &after[..end];
        let Some(name) = reference.strip_prefix("env:") else {
            return Err(format!(
                "unsupported reference `${{{reference}}}`: only `${{env:NAME}}` is understood"
            ));
        };
        match (env.var)(name) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(format!(
                    "references environment variable `{name}`, which is not set"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses an origin URL with the WHATWG parser: scheme and authority only.
pub fn parse_origin(s: &str) -> Result<Origin, String> {
    let u = url::Url::parse(s).map_err(|e| format!("`{s}` is not a valid URL ({e})"))?;
    let scheme = match u.scheme() {
        "http" => http::uri::Scheme::HTTP,
        "https" => http::uri::Scheme::HTTPS,
        other => {
            return Err(format!(
                "`{s}`: scheme `{other}` is not supported (use http or https)"
            ));
        }
    };
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!("`{s}`: credentials in URLs are not allowed"));
    }
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() {
        return Err(format!(
            "`{s}`: give only scheme, host and port (no path or query)"
        ));
    }
    let host = u.host_str().ok_or_else(|| format!("`{s}` has no host"))?;
    let authority = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let authority = authority
        .parse()
        .map_err(|_| format!("`{s}`: host is not a valid authority"))?;
    Ok(Origin { scheme, authority })
}

/// Whether `ip` is one of the configured trusted proxies.
pub fn is_trusted(proxies: &[IpNet], ip: IpAddr) -> bool {
    proxies.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env<'static> {
        Env {
            builtins: &["headers"],
            var: &|k| (k == "SECRET").then(|| "s3cret".to_string()),
        }
    }

    fn check(text: &str) -> Result<Config, ConfigErrors> {
        parse(text, Path::new("/nonexistent"), &env())
    }

    #[test]
    fn minimal_config_is_valid_and_defaults_apply() {
        let c = check("[[route]]\norigin = \"http://127.0.0.1:9000\"\n").unwrap();
        assert_eq!(c.routes[0].path_prefix, "/");
        assert_eq!(
            c.routes[0].upstream.as_ref().unwrap().endpoints[0]
                .0
                .to_string(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(c.limits.max_body_bytes, 1024 * 1024);
    }

    #[test]
    fn env_references_expand_and_missing_ones_fail() {
        let ok = check(
            "[components.h]\nsource=\"builtin:headers\"\nvariables={key=\"a-${env:SECRET}\"}\n[[route]]\norigin=\"http://a\"\nmiddleware=[\"h\"]\n",
        )
        .unwrap();
        assert_eq!(ok.routes[0].variables["key"], "a-s3cret");
        let err = check(
            "[components.h]\nsource=\"builtin:headers\"\nvariables={key=\"${env:NOPE}\"}\n[[route]]\norigin=\"http://a\"\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("components.h.variables.key"),
            "{err}"
        );
        assert!(err.to_string().contains("NOPE"), "{err}");
    }

    #[test]
    fn errors_name_their_keys() {
        let err = check(
            "[limits]\nmax_body_bytes = -1\n[[route]]\npath_prefix=\"/a\"\n[[route]]\norigin=\"ftp://x\"\npath_prefix=\"/b\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("limits.max_body_bytes: must be greater than 0"),
            "{err}"
        );
        assert!(err.contains("route[0].origin: missing"), "{err}");
        assert!(err.contains("route[1].origin"), "{err}");
    }

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(normalise_prefix("/api/"), "/api");
        assert_eq!(normalise_prefix("/"), "/");
    }
}
