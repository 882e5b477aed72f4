//! The admin API, version 1: what each endpoint answers, and the OpenAPI
//! 3.1 document generated from these functions and types (utoipa).
//! JSON is camelCase; errors are RFC 9457 problem+json; lists are
//! paginated ([`super::page`]).

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::page;
use super::{Admin, Answer};
use crate::gateway::{ComponentSummary, RouteRuntime};

#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate admin API", version = "1"),
    paths(list_routes, get_route, list_components, reload, lift_lockout),
    components(schemas(RouteView, UpstreamView, EndpointView, RouteCountsView, ComponentView, RoutePage, ComponentPage, Reloaded, ProblemView)),
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
    }
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
    let prefix = format!("tollgate:af:acct:{account}:");
    let unavailable = || {
        Answer::problem(
            503,
            "Service Unavailable",
            "The store is unavailable; retry later.",
            vec![],
        )
    };
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
