//! Instructions per request, for comparing changes on a noisy machine.
//!
//! Wall-clock benchmarks on this project's shared 2-core machine swing by
//! ±15% between runs of the same binary, more than most single changes
//! move them. Instruction counts do not: run under callgrind, this binary
//! does `WARMUP` requests uncounted, then `N` requests inside
//! [`measured`], which callgrind alone counts (`--toggle-collect`), so the
//! count divided by `N` is the user-space instructions one request costs.
//! Instructions are not time (cache misses and syscalls are not in them),
//! so this complements criterion and `load.py`, it does not replace them.
//!
//! Cases (`benches/instructions.sh` runs them all):
//! - `filter/<gate>`, `filter/four_components`: one pass through a run of
//!   filters, the rest of the chain an in-process 200 (as `gate.rs`);
//! - `chain/empty`, `chain/four_components`: the whole host path to the
//!   fixed-body origin on loopback (which runs on another thread, so its
//!   instructions are not counted; the kernel's never are).
//!
//! Usage: `instructions <case> <n>` (see `benches/instructions.sh`).

mod common;

use std::sync::Arc;

use common::{FOUR, gateway_with, loopback_origin};
use tollgate::gateway::Gateway;

const WARMUP: usize = 50;
/// A small instance pool: valgrind cannot map the address space the
/// default pool reserves, and one request at a time needs few slots.
const LIMITS: &str = "[limits]\nmax_instances = 2\ninstance_memory_bytes = 16777216";

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let case = args.next().expect("usage: instructions <case> <n>");
    let n: usize = args.next().map_or(200, |n| n.parse().expect("n"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (group, name) = case.split_once('/').expect("case is group/name");
    let middleware = match name {
        "empty" => "",
        "headers" => r#""headers""#,
        "url_guard" => r#""url-guard""#,
        "auth" => r#""auth""#,
        "rate_limit" => r#""rate-limit""#,
        "four_components" => FOUR,
        other => panic!("unknown case {other}"),
    };
    let origin = match group {
        // The origin runs on its own thread, so only the gateway's
        // instructions are counted.
        "chain" => {
            let origin_rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let addr = loopback_origin(&origin_rt);
            // Kept running for the life of the process.
            std::mem::forget(origin_rt);
            addr
        }
        "filter" => "127.0.0.1:9".parse().unwrap(),
        other => panic!("unknown group {other}"),
    };
    let gw = rt.block_on(gateway_with(middleware, true, Some(origin), LIMITS));
    let chain = group == "chain";
    for _ in 0..WARMUP {
        one(&rt, &gw, chain, name);
    }
    measured(&rt, &gw, chain, name, n);
    println!("{case}: {n} requests measured");
}

/// The only function callgrind counts (`--toggle-collect=*measured*`).
#[inline(never)]
fn measured(rt: &tokio::runtime::Runtime, gw: &Arc<Gateway>, chain: bool, name: &str, n: usize) {
    for _ in 0..n {
        one(rt, gw, chain, name);
    }
}

fn one(rt: &tokio::runtime::Runtime, gw: &Arc<Gateway>, chain: bool, name: &str) {
    if chain {
        rt.block_on(common::host_path(gw.clone()));
    } else {
        rt.block_on(common::filter_pass(gw.clone(), name));
    }
}
