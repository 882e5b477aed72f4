//! Builds the workspace's WebAssembly components (the built-in gate
//! components, the test fixtures and the example plugin) for
//! `wasm32-wasip2`, so that building or testing the host is all a fresh
//! clone needs. Built-ins are embedded into the binary; the rest are found
//! through `TOLLGATE_WASM_DIR`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Built-in middleware: crate directory under components/ -> builtin name.
const BUILTINS: &[&str] = &["headers", "auth", "rate-limit", "url-guard"];

/// Packages that are primary components rather than middleware.
const PRIMARIES: &[&str] = &["tollgate-origin", "fixture-echo"];

fn main() {
    let host = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = host.parent().unwrap().to_path_buf();
    let target_dir = root.join("target").join("wasm");
    let wasm_dir = target_dir.join("wasm32-wasip2").join("release");

    let mut packages = Vec::new();
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    for dir in ["components", "tests/fixtures", "examples"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
        packages.extend(wasm_packages(&root.join(dir)));
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );

    if !packages.is_empty() {
        ensure_wasm_target();
        // Primary components are built on their own: built together with
        // middleware, feature unification would give them the SDK's `next`,
        // and with it an import of the next handler.
        let (primaries, middleware): (Vec<String>, Vec<String>) = packages
            .into_iter()
            .partition(|p| PRIMARIES.contains(&p.as_str()));
        for group in [middleware, primaries] {
            if !group.is_empty() {
                cargo_build_wasm(&root, &target_dir, &group);
            }
        }
    }

    // Embed the built-ins that exist.
    let mut names = Vec::new();
    let mut arms = String::new();
    for name in BUILTINS {
        let file = wasm_dir.join(format!("tollgate_{}.wasm", name.replace('-', "_")));
        if file.is_file() {
            names.push(format!("{name:?}"));
            arms.push_str(&format!(
                "        {name:?} => Some(include_bytes!({:?})),\n",
                file.display().to_string()
            ));
        }
    }
    let generated = format!(
        "/// Names of the built-in components.\npub const NAMES: &[&str] = &[{}];\n\n/// A built-in component's bytes.\npub fn bytes(name: &str) -> Option<&'static [u8]> {{\n    match name {{\n{arms}        _ => None,\n    }}\n}}\n",
        names.join(", ")
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("builtin.rs");
    std::fs::write(out, generated).unwrap();
    println!("cargo:rustc-env=TOLLGATE_WASM_DIR={}", wasm_dir.display());
}

/// Builds `packages` for wasm32-wasip2 into `target_dir`.
fn cargo_build_wasm(root: &Path, target_dir: &Path, packages: &[String]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    // Components ship small: no debug info in the .wasm. And whole-program
    // optimised: a guest's hot path runs through several crates (the SDK,
    // http, the allocator), and every component carries its own copy of
    // them, so inlining across crates shortens each filter call and
    // shrinks the code a request touches.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        .env("CARGO_PROFILE_RELEASE_LTO", "fat")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1");
    // The outer build's settings are for the host, not for wasm.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_LLVM_COV",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("running cargo to build the wasm components");
    if !status.success() {
        panic!("building the wasm components failed (see the cargo output above)");
    }
}

/// rust-toolchain.toml names the target, but rustup adds targets only when
/// it installs a toolchain; add it here when an existing toolchain lacks it.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = sysroot
        .map(|s| s.join("lib/rustlib/wasm32-wasip2").is_dir())
        .unwrap_or(false);
    if !installed {
        let ok = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .current_dir(std::env::var("CARGO_MANIFEST_DIR").unwrap())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            panic!(
                "the wasm32-wasip2 target is missing and `rustup target add wasm32-wasip2` failed"
            );
        }
    }
}

/// Package names of the crates directly under `dir` that build a cdylib.
fn wasm_packages(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let manifest = e.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        if !text.contains("cdylib") {
            continue;
        }
        let name = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'));
        if let Some(n) = name {
            out.push(n.to_string());
        }
    }
    out.sort();
    out
}
