//! Runs a Spin app: reads the subset of a Spin 4.1+ `spin.toml` that HTTP
//! apps with middleware use, and turns it into the gateway's [`Config`].
//!
//! Supported: `spin_manifest_version = 2`, `[application]`, `[variables]`
//! (`default`, `required`, `secret`), `[[trigger.http]]` (`route`,
//! `component`, `dependencies.middleware` with `inherit_configuration`),
//! and `[component.NAME]` (`source` as a path, `variables` with
//! `{{ name }}` templates, `key_value_stores`, `allowed_outbound_hosts`,
//! `build`). Anything else is refused at startup, never ignored.
//!
//! As in Spin, application variables come from `SPIN_VARIABLE_NAME`
//! environment variables, then from their defaults; middleware see the
//! primary component's variables, stores and outbound hosts only through
//! `inherit_configuration`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::config::{self, ComponentSource, Config, ConfigErrors, Env, Middleware, Route};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // `application` is validated for shape only.
struct Manifest {
    spin_manifest_version: i64,
    application: Application,
    #[serde(default)]
    variables: BTreeMap<String, Variable>,
    #[serde(default)]
    trigger: Triggers,
    #[serde(default)]
    component: BTreeMap<String, Component>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Validated for shape; Tollgate does not use these values.
struct Application {
    name: String,
    version: Option<String>,
    description: Option<String>,
    #[serde(default)]
    authors: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Variable {
    default: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    secret: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Triggers {
    #[serde(default)]
    http: Vec<HttpTrigger>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpTrigger {
    route: String,
    component: String,
    #[serde(default)]
    dependencies: Dependencies,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Dependencies {
    #[serde(default)]
    middleware: Vec<MiddlewareRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MiddlewareRef {
    component: String,
    #[serde(default)]
    inherit_configuration: Inherit,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Inherit {
    All(bool),
    Some(Vec<String>),
}

impl Default for Inherit {
    fn default() -> Self {
        Inherit::All(false)
    }
}

impl Inherit {
    fn has(&self, what: &str) -> bool {
        match self {
            Inherit::All(all) => *all,
            Inherit::Some(list) => list.iter().any(|s| s == what),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // `description` and `build` are for Spin's own tooling.
struct Component {
    source: toml::Value,
    description: Option<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    build: Option<Build>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Build {
    command: String,
    workdir: Option<String>,
    #[serde(default)]
    watch: Vec<String>,
}

/// What `inherit_configuration` may name (Spin 4.1).
const INHERITABLE: &[&str] = &[
    "ai_models",
    "allowed_outbound_hosts",
    "environment",
    "files",
    "key_value_stores",
    "sqlite_databases",
    "variables",
];
/// The subset Tollgate provides.
const SUPPORTED_INHERIT: &[&str] = &["allowed_outbound_hosts", "key_value_stores", "variables"];

/// Reads `path` and builds the gateway configuration for it.
pub fn load(
    path: &Path,
    env: &Env,
    listen: std::net::SocketAddr,
    admin: Option<std::net::SocketAddr>,
) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![format!("cannot read {}: {e}", path.display())]))?;
    parse(
        &text,
        path.parent().unwrap_or(Path::new(".")),
        env,
        listen,
        admin,
    )
}

/// Builds the gateway configuration from manifest text; component
/// `source` paths resolve against `base`.
pub fn parse(
    text: &str,
    base: &Path,
    env: &Env,
    listen: std::net::SocketAddr,
    admin: Option<std::net::SocketAddr>,
) -> Result<Config, ConfigErrors> {
    let m: Manifest = toml::from_str(text)
        .map_err(|e| ConfigErrors(vec![e.to_string().trim_end().to_owned()]))?;
    let mut errors = Vec::new();
    if m.spin_manifest_version != 2 {
        errors.push(format!(
            "spin_manifest_version: {} is not supported (only 2)",
            m.spin_manifest_version
        ));
    }
    let values = app_variables(&m.variables, env, &mut errors);
    let mut config = config::defaults(env);
    config.listen = vec![listen];
    config.admin_listen = admin;
    if m.trigger.http.is_empty() {
        errors.push("trigger.http: the app has no HTTP trigger".into());
    }
    for (i, t) in m.trigger.http.iter().enumerate() {
        if let Some(route) = trigger_route(i, t, &m, base, &values, &mut errors) {
            config.routes.push(route);
        }
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Resolves application variables: `SPIN_VARIABLE_NAME`, then the default.
fn app_variables(
    vars: &BTreeMap<String, Variable>,
    env: &Env,
    errors: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, v) in vars {
        let key = format!("variables.{name}");
        if !config::valid_variable_name(name) {
            errors.push(format!(
                "{key}: variable names are lower-case letters, digits and '_'"
            ));
            continue;
        }
        if v.required && v.default.is_some() {
            errors.push(format!(
                "{key}: a variable is either required or has a default, not both"
            ));
        }
        if !v.required && v.default.is_none() {
            errors.push(format!("{key}: needs a default or `required = true`"));
        }
        let _ = v.secret; // Secrets are never logged; nothing else differs.
        let from_env = (env.var)(&format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()));
        match from_env.or_else(|| v.default.clone()) {
            Some(value) => {
                out.insert(name.clone(), value);
            }
            None => errors.push(format!(
                "{key}: missing required variable `{name}` (set SPIN_VARIABLE_{})",
                name.to_ascii_uppercase()
            )),
        }
    }
    out
}

/// Expands `{{ name }}` templates from application variables.
fn template(value: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("unterminated `{{` template")?;
        let name = after[..end].trim();
        let v = vars
            .get(name)
            .ok_or_else(|| format!("refers to `{name}`, which is not an application variable"))?;
        out.push_str(v);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `/...` → prefix `/`; `/api/...` → prefix `/api`; `/x` → exact `/x`.
fn parse_route(route: &str) -> Result<(String, bool), String> {
    if !route.starts_with('/') {
        return Err(format!("`{route}` must start with '/'"));
    }
    let (path, wildcard) = match route.strip_suffix("/...") {
        Some(p) => (if p.is_empty() { "/" } else { p }, true),
        None => (route, false),
    };
    if path.contains("...")
        || path.contains(':')
        || path.contains("//")
        || path.contains(char::is_whitespace)
    {
        return Err(format!(
            "`{route}` is not a supported route (use /path or /path/...)"
        ));
    }
    Ok((path.to_owned(), !wildcard))
}

fn source_path(
    name: &str,
    c: &Component,
    base: &Path,
    errors: &mut Vec<String>,
) -> Option<ComponentSource> {
    let key = format!("component.{name}.source");
    let Some(rel) = c.source.as_str() else {
        errors.push(format!(
            "{key}: only a local file path is supported (not a URL or registry reference)"
        ));
        return None;
    };
    let path = base.join(rel);
    if !path.is_file() {
        errors.push(format!("{key}: component file `{rel}` does not exist (run `spin build`, or `cargo build` for Tollgate)"));
        return None;
    }
    Some(ComponentSource::File(path))
}

fn trigger_route(
    i: usize,
    t: &HttpTrigger,
    m: &Manifest,
    base: &Path,
    values: &BTreeMap<String, String>,
    errors: &mut Vec<String>,
) -> Option<Route> {
    let key = format!("trigger.http[{i}]");
    let before = errors.len();
    let (path, exact) = parse_route(&t.route)
        .map_err(|e| errors.push(format!("{key}.route: {e}")))
        .ok()?;
    let Some(primary) = m.component.get(&t.component) else {
        errors.push(format!(
            "{key}.component: unknown component `{}`",
            t.component
        ));
        return None;
    };
    let mut middleware = Vec::new();
    for (j, mw) in t.dependencies.middleware.iter().enumerate() {
        let mkey = format!("{key}.dependencies.middleware[{j}]");
        if let Inherit::Some(list) = &mw.inherit_configuration {
            for item in list {
                if !INHERITABLE.contains(&item.as_str()) {
                    errors.push(format!(
                        "{mkey}.inherit_configuration: unknown item `{item}`"
                    ));
                } else if !SUPPORTED_INHERIT.contains(&item.as_str()) {
                    errors.push(format!(
                        "{mkey}.inherit_configuration: `{item}` is not supported by Tollgate"
                    ));
                }
            }
        }
        let Some(c) = m.component.get(&mw.component) else {
            errors.push(format!(
                "{mkey}.component: unknown component `{}`",
                mw.component
            ));
            continue;
        };
        if let Some(source) = source_path(&mw.component, c, base, errors) {
            if let ComponentSource::File(p) = &source
                && !mw.inherit_configuration.has("key_value_stores")
                && imports_keyvalue(p)
            {
                errors.push(format!(
                    "{mkey}: `{}` uses wasi:keyvalue but does not inherit `key_value_stores` (Spin refuses this too)",
                    mw.component
                ));
            }
            middleware.push(Middleware {
                name: mw.component.clone(),
                source,
            });
        }
    }
    if let Some(source) = source_path(&t.component, primary, base, errors) {
        middleware.push(Middleware {
            name: t.component.clone(),
            source,
        });
    }
    // The primary's configuration, which middleware may inherit.
    let mut variables = BTreeMap::new();
    for (name, value) in &primary.variables {
        match template(value, values) {
            Ok(v) => {
                variables.insert(name.clone(), v);
            }
            Err(e) => errors.push(format!("component.{}.variables.{name}: {e}", t.component)),
        }
    }
    let mut allowed = Vec::new();
    for (j, h) in primary.allowed_outbound_hosts.iter().enumerate() {
        match template(h, values).and_then(|h| config::parse_origin(&h)) {
            Ok(o) => allowed.push(o),
            Err(e) => errors.push(format!(
                "component.{}.allowed_outbound_hosts[{j}]: {e}",
                t.component
            )),
        }
    }
    for (j, s) in primary.key_value_stores.iter().enumerate() {
        if s != "default" {
            errors.push(format!(
                "component.{}.key_value_stores[{j}]: unknown store `{s}` (only `default` is provided)",
                t.component
            ));
        }
    }
    // A composed chain shares one namespace: it carries the primary's
    // variables, stores and hosts, which middleware reach by inheriting.
    if errors.len() > before {
        return None;
    }
    Some(Route {
        name: format!("{}-{i}", t.component),
        host: None,
        path_prefix: path,
        exact,
        upstream: None,
        retry_non_idempotent: false,
        middleware,
        allowed_outbound_hosts: allowed,
        variables,
        key_value_stores: primary.key_value_stores.clone(),
        allow_name_lookup: false,
        allow_trace: false,
        compression: true,
    })
}

/// Whether a component file imports any `wasi:keyvalue` interface.
fn imports_keyvalue(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| crate::chain::compose::imports(&bytes).ok())
        .is_some_and(|names| names.iter().any(|n| n.starts_with("wasi:keyvalue/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_spin_syntax() {
        assert_eq!(parse_route("/...").unwrap(), ("/".into(), false));
        assert_eq!(parse_route("/api/...").unwrap(), ("/api".into(), false));
        assert_eq!(parse_route("/health").unwrap(), ("/health".into(), true));
        for bad in ["api", "/a/.../b", "/:id", "/a b"] {
            assert!(parse_route(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_use_application_variables() {
        let vars = BTreeMap::from([("origin".to_string(), "http://o:1".to_string())]);
        assert_eq!(template("{{ origin }}", &vars).unwrap(), "http://o:1");
        assert_eq!(template("x-{{origin}}-y", &vars).unwrap(), "x-http://o:1-y");
        assert!(
            template("{{ nope }}", &vars)
                .unwrap_err()
                .contains("`nope`")
        );
        assert!(template("{{ open", &vars).is_err());
    }
}
