//! The admin API, version 1: what each endpoint answers, and the OpenAPI
//! 3.1 document generated from these functions and types (utoipa).
//! JSON is camelCase; errors are RFC 9457 problem+json; lists are
//! paginated ([`super::page`]).

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::gates::{self, LimitView, LockoutView};
use super::page;
use super::{Admin, Answer};
use crate::gateway::{ComponentSummary, RouteRuntime};
use tollgate_sdk::limit::now_micros;

#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate admin API", version = "1"),
    paths(status, list_routes, get_route, list_components, reload, get_limit, list_limits, list_lockouts, lift_lockout),
    components(schemas(RouteView, UpstreamView, EndpointView, RouteCountsView, LatencyView, ComponentTimeView, ComponentView, RoutePage, ComponentPage, Reloaded, ProblemView, LimitView, LimitPage, LockoutView, LockoutPage, StatusView, LastReloadView)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// An RFC 9457 problem.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProblemView {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteCountsView {
    pub total: u64,
    pub ok: u64,
    pub client_error: u64,
    pub rate_limited: u64,
    pub server_error: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    pub url: String,
    pub weight: u32,
    pub healthy: bool,
    pub ejected: bool,
    pub in_flight: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamView {
    pub name: String,
    pub endpoints: Vec<EndpointView>,
}

/// A route: what it matches, what runs, where it goes, what it answered.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteView {
    pub name: String,
    pub host: Option<String>,
    pub path_prefix: String,
    pub exact: bool,
    pub chain: Vec<String>,
    pub upstream: Option<UpstreamView>,
    pub requests: RouteCountsView,
    /// Time to the response head, since start (`null` before the first).
    pub latency_ms: Option<LatencyView>,
    /// Each component's mean time per request (the host's measure).
    pub components: Vec<ComponentTimeView>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyView {
    pub p50: f64,
    pub p99: f64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentTimeView {
    pub name: String,
    pub calls: u64,
    pub mean_ms: f64,
}

/// The schema of a page of routes (`page::Page<RouteView>`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutePage {
    pub data: Vec<RouteView>,
    pub total: usize,
    pub page: usize,
    pub total_pages: usize,
}

/// A component: source, content hash, the contracts it exports, and its
/// variables (secret-looking ones redacted).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentView {
    pub name: String,
    pub source: String,
    pub sha256: String,
    /// `filter` (the fast path) and/or `wasi:http`.
    pub capabilities: Vec<String>,
    pub variables: std::collections::BTreeMap<String, String>,
}

/// The schema of a page of components (`page::Page<ComponentView>`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentPage {
    pub data: Vec<ComponentView>,
    pub total: usize,
    pub page: usize,
    pub total_pages: usize,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reloaded {
    pub reloaded: bool,
    pub routes: usize,
}

fn route_view(r: &RouteRuntime) -> RouteView {
    use crate::routes::Matchable;
    let now = Instant::now();
    let c = &r.counts;
    RouteView {
        name: r.name.clone(),
        host: r.host().map(str::to_owned),
        path_prefix: r.prefix().to_owned(),
        exact: r.exact(),
        chain: r.middleware.clone(),
        upstream: r.upstream.as_ref().map(|u| UpstreamView {
            name: u.upstream.name.to_string(),
            endpoints: u
                .upstream
                .endpoints
                .iter()
                .map(|e| EndpointView {
                    url: e.name.to_string(),
                    weight: e.weight,
                    healthy: e.is_healthy(),
                    ejected: e.is_ejected(now),
                    in_flight: e.in_flight(),
                })
                .collect(),
        }),
        requests: RouteCountsView {
            total: c.total.load(Ordering::Relaxed),
            ok: c.ok.load(Ordering::Relaxed),
            client_error: c.client_error.load(Ordering::Relaxed),
            rate_limited: c.limited.load(Ordering::Relaxed),
            server_error: c.server_error.load(Ordering::Relaxed),
        },
        latency_ms: c
            .quantile(0.5)
            .zip(c.quantile(0.99))
            .map(|(p50, p99)| LatencyView {
                p50: ms(p50),
                p99: ms(p99),
            }),
        components: c
            .components()
            .into_iter()
            .map(|(name, calls, mean)| ComponentTimeView {
                name,
                calls,
                mean_ms: ms(mean),
            })
            .collect(),
    }
}

/// Milliseconds, to the microsecond.
fn ms(d: std::time::Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

fn component_view(c: &ComponentSummary) -> ComponentView {
    let mut capabilities = Vec::new();
    if c.filter {
        capabilities.push("filter".to_owned());
    }
    capabilities.push("wasi:http".to_owned());
    ComponentView {
        name: c.name.clone(),
        source: c.source.clone(),
        sha256: c.sha256.clone(),
        capabilities,
        variables: c.variables.clone(),
    }
}

/// Lists the routes.
#[utoipa::path(get, path = "/api/v1/routes",
    params(
        ("page" = Option<usize>, Query, description = "1-based page (default 1)"),
        ("limit" = Option<usize>, Query, description = "items per page, 1 to 100 (default 20)"),
        ("sortBy" = Option<String>, Query, description = "name (default), pathPrefix or requests"),
        ("sortOrder" = Option<String>, Query, description = "asc (default) or desc"),
    ),
    responses(
        (status = 200, description = "A page of routes", body = RoutePage),
        (status = 400, description = "A bad list parameter", body = ProblemView, content_type = "application/problem+json"),
        (status = 401, description = "No or a wrong token", body = ProblemView, content_type = "application/problem+json"),
    ))]
pub fn list_routes(admin: &Admin, query: Option<&str>) -> Answer {
    let gw = admin.live.load_full();
    list(
        query,
        &["name", "pathPrefix", "requests"],
        || gw.routes.iter().map(route_view).collect(),
        |r: &RouteView, by| match by {
            "pathPrefix" => (r.path_prefix.clone(), 0),
            "requests" => (String::new(), r.requests.total),
            _ => (r.name.clone(), 0),
        },
    )
}

/// A list endpoint's answer: the query parsed (400 naming a bad
/// parameter), the items sorted and cut into the page envelope, which
/// [`RoutePage`] and [`ComponentPage`] document.
fn list<T: Serialize, K: Ord>(
    query: Option<&str>,
    fields: &[&str],
    items: impl FnOnce() -> Vec<T>,
    key: impl Fn(&T, &str) -> K,
) -> Answer {
    match page::parse(query, fields) {
        Ok(q) => Answer::json(200, &page::apply(items(), &q, key)),
        Err(e) => Answer::problem(400, "Bad Request", &e, vec![]),
    }
}

/// One route by name.
#[utoipa::path(get, path = "/api/v1/routes/{name}",
    params(("name" = String, Path, description = "the route's name")),
    responses(
        (status = 200, description = "The route", body = RouteView),
        (status = 404, description = "No route of that name", body = ProblemView, content_type = "application/problem+json"),
    ))]
pub fn get_route(admin: &Admin, name: &str) -> Answer {
    let gw = admin.live.load_full();
    match gw.routes.iter().find(|r| r.name == name) {
        Some(r) => Answer::json(200, &route_view(r)),
        None => Answer::problem(404, "Not Found", "No route has that name.", vec![]),
    }
}

/// Lists the configured components.
#[utoipa::path(get, path = "/api/v1/components",
    params(
        ("page" = Option<usize>, Query, description = "1-based page (default 1)"),
        ("limit" = Option<usize>, Query, description = "items per page, 1 to 100 (default 20)"),
        ("sortBy" = Option<String>, Query, description = "name (default) or source"),
        ("sortOrder" = Option<String>, Query, description = "asc (default) or desc"),
    ),
    responses(
        (status = 200, description = "A page of components", body = ComponentPage),
        (status = 400, description = "A bad list parameter", body = ProblemView, content_type = "application/problem+json"),
    ))]
pub fn list_components(admin: &Admin, query: Option<&str>) -> Answer {
    let gw = admin.live.load_full();
    list(
        query,
        &["name", "source"],
        || gw.components.iter().map(component_view).collect(),
        |c: &ComponentView, by| match by {
            "source" => c.source.clone(),
            _ => c.name.clone(),
        },
    )
}

/// Re-reads the configuration and every component, and swaps them in if
/// all of it is valid (as SIGHUP does).
#[utoipa::path(post, path = "/api/v1/reload",
    responses(
        (status = 200, description = "Reloaded", body = Reloaded),
        (status = 409, description = "Not started from a config file", body = ProblemView, content_type = "application/problem+json"),
        (status = 422, description = "The new configuration is invalid; nothing changed", body = ProblemView, content_type = "application/problem+json"),
    ))]
pub async fn reload(admin: &Admin) -> Answer {
    let Some(reloader) = &admin.reloader else {
        return Answer::problem(
            409,
            "Conflict",
            "This gateway was not started from a configuration file.",
            vec![],
        );
    };
    match reloader.reload().await {
        Ok(()) => {
            let routes = admin.live.load().routes.len();
            tracing::info!(routes, "configuration reloaded (admin API)");
            Answer::json(
                200,
                &Reloaded {
                    reloaded: true,
                    routes,
                },
            )
        }
        Err(errors) => {
            tracing::error!(errors = %errors.join("; "), "configuration reload refused; the previous configuration keeps serving");
            Answer::problem(
                422,
                "Unprocessable Content",
                "The new configuration is invalid; the previous one keeps serving.",
                errors,
            )
        }
    }
}

/// Lifts the auth gate's failed-attempt lockout of one account: its
/// counters (`tollgate:af:acct:ACCOUNT:*`) are deleted from the store.
/// Idempotent: 204 whether or not the account was locked.
#[utoipa::path(delete, path = "/api/v1/lockouts/{account}",
    params(("account" = String, Path, description = "the account, as the auth gate's account header carries it (letters, digits and . _ @ + -)")),
    responses(
        (status = 204, description = "No lockout counters are left for the account"),
        (status = 400, description = "Not an account name", body = ProblemView, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemView, content_type = "application/problem+json"),
    ))]
pub async fn lift_lockout(admin: &Admin, account: &str) -> Answer {
    let valid = (1..=256).contains(&account.len())
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_@+".contains(&b));
    if !valid {
        return Answer::problem(
            400,
            "Bad Request",
            "account: letters, digits and . _ @ + - only, 1 to 256 of them",
            vec![],
        );
    }
    let gw = admin.live.load_full();
    let prefix = format!("{}:", tollgate_auth::policy::Lockout::account_key(account));
    let unavailable = store_unavailable;
    let Ok(keys) = gw.kv.keys().await else {
        return unavailable();
    };
    let mut lifted = 0;
    for key in keys.iter().filter(|k| k.starts_with(&prefix)) {
        if gw.kv.delete(key).await.is_err() {
            return unavailable();
        }
        lifted += 1;
    }
    tracing::info!(counters = lifted, "admin API: account lockout lifted");
    Answer::no_content()
}

fn store_unavailable() -> Answer {
    Answer::problem(
        503,
        "Service Unavailable",
        "The store is unavailable; retry later.",
        vec![],
    )
}

/// The state of one rate-limit key: what is left and when it is whole
/// again. A key the store has never seen has its whole quota.
#[utoipa::path(get, path = "/api/v1/limits/{policy}/{key}",
    params(
        ("policy" = String, Path, description = "the policy's name, as in the rate-limit gate's `policies`"),
        ("key" = String, Path, description = "the key's parts after the policy name, `:`-separated (`203.0.113.7`, `alice:tenant-1`, `*` for global); percent-encoded"),
        ("route" = Option<String>, Query, description = "the route whose policy to use, when routes define it differently (default: the first that has it)"),
    ),
    responses(
        (status = 200, description = "The key's state", body = LimitView),
        (status = 400, description = "Not a key", body = ProblemView, content_type = "application/problem+json"),
        (status = 404, description = "No rate-limit policy of that name", body = ProblemView, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemView, content_type = "application/problem+json"),
    ))]
pub async fn get_limit(admin: &Admin, rest: &str, query: Option<&str>) -> Answer {
    let Some((policy, key)) = rest.split_once('/') else {
        return Answer::problem(
            404,
            "Not Found",
            "Use /api/v1/limits/{policy}/{key}.",
            vec![],
        );
    };
    let key = percent_encoding::percent_decode_str(key).decode_utf8();
    let Some(key) = key
        .ok()
        .filter(|k| (1..=512).contains(&k.len()) && !k.chars().any(char::is_control))
    else {
        return Answer::problem(
            400,
            "Bad Request",
            "key: 1 to 512 bytes of UTF-8 without control characters",
            vec![],
        );
    };
    let route = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "route")
        .map(|(_, v)| v.into_owned());
    let gw = admin.live.load_full();
    let Some(found) = gw.gates.policy(policy, route.as_deref()) else {
        return Answer::problem(
            404,
            "Not Found",
            "No route has a rate-limit policy of that name.",
            vec![],
        );
    };
    match gates::limit_state(&gw.kv, &found, &key, now_micros()).await {
        Ok(view) => Answer::json(200, &view),
        Err(_) => store_unavailable(),
    }
}

/// Every rate-limit key in the store, with its state; by default the
/// fewest requests left first.
#[utoipa::path(get, path = "/api/v1/limits",
    params(
        ("page" = Option<usize>, Query, description = "1-based page (default 1)"),
        ("limit" = Option<usize>, Query, description = "items per page, 1 to 100 (default 20)"),
        ("sortBy" = Option<String>, Query, description = "remaining (default), policy or key"),
        ("sortOrder" = Option<String>, Query, description = "asc (default) or desc"),
    ),
    responses(
        (status = 200, description = "A page of rate-limit keys", body = LimitPage),
        (status = 400, description = "A bad list parameter", body = ProblemView, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemView, content_type = "application/problem+json"),
    ))]
pub async fn list_limits(admin: &Admin, query: Option<&str>) -> Answer {
    let gw = admin.live.load_full();
    store_list(
        query,
        &["remaining", "policy", "key"],
        gw.gates.limits(&gw.kv, now_micros()),
        |l: &LimitView, by| match by {
            "policy" => (l.policy.clone(), l.key.clone(), 0),
            "key" => (l.key.clone(), l.policy.clone(), 0),
            _ => (String::new(), String::new(), l.remaining),
        },
    )
    .await
}

/// [`list`] for items read from the store: the query is checked before
/// the store is read, and a store that fails answers 503.
async fn store_list<T: Serialize, K: Ord>(
    query: Option<&str>,
    fields: &[&str],
    items: impl std::future::Future<Output = Result<Vec<T>, crate::store::StoreError>>,
    key: impl Fn(&T, &str) -> K,
) -> Answer {
    let q = match page::parse(query, fields) {
        Ok(q) => q,
        Err(e) => return Answer::problem(400, "Bad Request", &e, vec![]),
    };
    match items.await {
        Ok(items) => Answer::json(200, &page::apply(items, &q, key)),
        Err(_) => store_unavailable(),
    }
}

/// Every account the auth gate counts failed attempts for, and whether
/// it is locked out now.
#[utoipa::path(get, path = "/api/v1/lockouts",
    params(
        ("page" = Option<usize>, Query, description = "1-based page (default 1)"),
        ("limit" = Option<usize>, Query, description = "items per page, 1 to 100 (default 20)"),
        ("sortBy" = Option<String>, Query, description = "account (default) or failures"),
        ("sortOrder" = Option<String>, Query, description = "asc (default) or desc"),
    ),
    responses(
        (status = 200, description = "A page of accounts", body = LockoutPage),
        (status = 400, description = "A bad list parameter", body = ProblemView, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemView, content_type = "application/problem+json"),
    ))]
pub async fn list_lockouts(admin: &Admin, query: Option<&str>) -> Answer {
    let gw = admin.live.load_full();
    store_list(
        query,
        &["account", "failures"],
        gw.gates.lockouts(&gw.kv, now_micros()),
        |l: &LockoutView, by| match by {
            "failures" => (l.failures, String::new()),
            _ => (0, l.account.clone()),
        },
    )
    .await
}

/// The schema of a page of rate-limit keys (`page::Page<LimitView>`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitPage {
    pub data: Vec<LimitView>,
    pub total: usize,
    pub page: usize,
    pub total_pages: usize,
}

/// The schema of a page of accounts (`page::Page<LockoutView>`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockoutPage {
    pub data: Vec<LockoutView>,
    pub total: usize,
    pub page: usize,
    pub total_pages: usize,
}

/// The last reload: when it was tried, and why it was refused, if it was.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastReloadView {
    /// RFC 3339, UTC.
    pub at: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Which configuration serves, since when, and how the last reload went.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    /// 1 at startup, one more per accepted reload.
    pub config_version: u64,
    /// When the serving configuration was loaded (RFC 3339, UTC).
    pub loaded_at: String,
    pub started_at: String,
    pub uptime_seconds: u64,
    pub routes: usize,
    pub components: usize,
    /// `null` until a reload is tried.
    pub last_reload: Option<LastReloadView>,
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The gateway's status.
#[utoipa::path(get, path = "/api/v1/status",
    responses((status = 200, description = "The status", body = StatusView)))]
pub fn status(admin: &Admin) -> Answer {
    let gw = admin.live.load_full();
    let last = admin.reloader.as_ref().and_then(|r| r.last());
    Answer::json(
        200,
        &StatusView {
            config_version: gw.version,
            loaded_at: rfc3339(gw.loaded_at),
            started_at: rfc3339(gw.started_at),
            uptime_seconds: gw.started_at.elapsed().map_or(0, |d| d.as_secs()),
            routes: gw.routes.len(),
            components: gw.components.len(),
            last_reload: last.map(|l| LastReloadView {
                at: rfc3339(l.at),
                ok: l.errors.is_empty(),
                errors: l.errors,
            }),
        },
    )
}
