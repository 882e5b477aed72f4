//! Composition of a route's middleware list into one component, the way
//! Spin's trigger-http does it: each middleware's `wasi:http/handler` import
//! is wired to the next one's export, the outermost export becomes the
//! composed component's export, and the innermost import stays open for the
//! host to serve (it forwards to the origin).
//!
//! Also owns the on-disk cache of compiled chains, keyed by a content hash
//! of the composed bytes and the engine's compatibility settings, so a
//! restart does not recompile.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The interface every gate component exports and imports.
pub const HANDLER: &str = "wasi:http/handler@0.3.0";

/// A middleware's name (for errors) and bytes.
pub struct Piece<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
}

/// A component's import and export names.
fn interface(name: &str, bytes: &[u8]) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut graph = CompositionGraph::new();
    let pkg = Package::from_bytes(&package_name(0), None, bytes.to_vec(), graph.types_mut())
        .with_context(|| format!("component `{name}` is not a WebAssembly component"))?;
    let world = &graph.types()[pkg.ty()];
    Ok((
        world.imports.keys().cloned().collect(),
        world.exports.keys().cloned().collect(),
    ))
}

/// The names a component imports.
pub fn imports(bytes: &[u8]) -> anyhow::Result<Vec<String>> {
    Ok(interface("component", bytes)?.0)
}

/// The names component `name` exports.
pub fn exports(name: &str, bytes: &[u8]) -> anyhow::Result<Vec<String>> {
    Ok(interface(name, bytes)?.1)
}

/// Whether the component exports and imports `wasi:http/handler@0.3.0`.
fn handler_use(name: &str, bytes: &[u8]) -> anyhow::Result<(bool, bool)> {
    let (imports, exports) = interface(name, bytes)?;
    Ok((
        exports.iter().any(|e| e == HANDLER),
        imports.iter().any(|i| i == HANDLER),
    ))
}

/// Checks that `bytes` is a `wasi:http/middleware` component: it must export
/// and import `wasi:http/handler@0.3.0`.
pub fn check_middleware(name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    match handler_use(name, bytes)? {
        (true, true) => Ok(()),
        (false, _) => {
            bail!("component `{name}` is not a middleware: it does not export `{HANDLER}`")
        }
        (true, false) => bail!(
            "component `{name}` is not a middleware: it exports `{HANDLER}` but does not import it, so it cannot call the next handler"
        ),
    }
}

/// Checks that `bytes` exports `wasi:http/handler@0.3.0` and does not
/// expect a next handler.
pub fn check_primary(name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    match handler_use(name, bytes)? {
        (true, false) => Ok(()),
        (false, _) => {
            bail!("component `{name}` does not export `{HANDLER}`, so it cannot serve HTTP")
        }
        (true, true) => bail!(
            "component `{name}` is a middleware; a trigger's primary component must answer requests itself"
        ),
    }
}

fn package_name(i: usize) -> String {
    format!("tollgate:chain{i}")
}

/// Composes `chain` (outermost first) into one component. With
/// `primary_last`, the last piece is a primary component (Spin's `component`
/// of a trigger): it exports the handler and answers by itself.
pub fn compose(chain: &[Piece<'_>], primary_last: bool) -> anyhow::Result<Vec<u8>> {
    let Some((last, middleware)) = chain.split_last() else {
        bail!("an empty chain has nothing to compose");
    };
    for p in middleware {
        check_middleware(p.name, p.bytes)?;
    }
    if primary_last {
        check_primary(last.name, last.bytes)?;
    } else {
        check_middleware(last.name, last.bytes)?;
    }
    let mut graph = CompositionGraph::new();
    let mut packages = Vec::with_capacity(chain.len());
    for (i, p) in chain.iter().enumerate() {
        let pkg = Package::from_bytes(&package_name(i), None, p.bytes.to_vec(), graph.types_mut())
            .with_context(|| format!("reading component `{}`", p.name))?;
        packages.push(graph.register_package(pkg)?);
    }
    // Instantiate from the innermost out, plugging each into the one before.
    let mut inner = graph.instantiate(*packages.last().expect("non-empty"));
    for (i, pkg) in packages.iter().enumerate().rev().skip(1) {
        let outer = graph.instantiate(*pkg);
        let next = graph
            .alias_instance_export(inner, HANDLER)
            .with_context(|| format!("component `{}`: no `{HANDLER}` export", chain[i + 1].name))?;
        graph
            .set_instantiation_argument(outer, HANDLER, next)
            .with_context(|| {
                format!(
                    "component `{}` cannot call `{}`: handler types differ",
                    chain[i].name,
                    chain[i + 1].name
                )
            })?;
        inner = outer;
    }
    let export = graph.alias_instance_export(inner, HANDLER)?;
    graph.export(export, HANDLER)?;
    let bytes = graph
        .encode(EncodeOptions::default())
        .context("encoding the composed chain")?;
    Ok(bytes)
}

/// Compiles `bytes`, or loads the compiled form from `cache_dir` when this
/// exact component was compiled before by a compatible engine.
pub fn compile_cached(
    engine: &Engine,
    bytes: &[u8],
    cache_dir: Option<&Path>,
) -> anyhow::Result<(Component, CacheOutcome)> {
    let Some(dir) = cache_dir else {
        return Ok((Component::new(engine, bytes)?, CacheOutcome::Disabled));
    };
    let path = cache_path(engine, bytes, dir);
    if path.is_file() {
        // SAFETY: the file was written by `Component::serialize` of an engine
        // with the same compatibility hash (part of the file name), into a
        // directory only this user can write (created 0700 below).
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => return Ok((c, CacheOutcome::Hit)),
            Err(e) => {
                tracing::warn!(error = %e, "discarding unreadable compiled-chain cache entry")
            }
        }
    }
    let component = Component::new(engine, bytes)?;
    if let Err(e) = store(dir, &path, &component.serialize()?) {
        tracing::warn!(error = %e, "could not write the compiled-chain cache");
    }
    Ok((component, CacheOutcome::Miss))
}

/// What the cache did for one compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    Disabled,
}

fn cache_path(engine: &Engine, bytes: &[u8], dir: &Path) -> PathBuf {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(engine_hash.finish().to_le_bytes());
    h.update(bytes);
    dir.join(format!("{}.cwasm", hex::encode(h.finalize())))
}

fn store(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    // Write then rename, so a crash never leaves a torn entry behind.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}
