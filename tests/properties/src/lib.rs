//! Shared pieces of the property tests (`tests/*.rs` in this crate), which
//! throw generated input at every parser of untrusted input: the JWT
//! verifier, the SSRF check and URL extraction, the gateway config and Spin
//! manifest, the components' variables (rate-limit policies, API keys),
//! `X-Forwarded-For` and request ids.
//!
//! What lives here:
//! - [`config`]: the case count. `PROPTEST_CASES` raises it for a longer
//!   local run (`PROPTEST_CASES=20000 cargo test --release -p
//!   tollgate-properties`); the default keeps the whole crate near a
//!   minute in CI.
//! - [`Counting`] and [`peak_bytes`]: a global allocator that keeps a
//!   per-thread count of live bytes, so a property can bound what one
//!   parser call holds at its peak.
//! - [`untrusted`]: input up to 64 KiB, from arbitrary bytes and from a
//!   parser's own vocabulary (so that it gets past the first token).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use proptest::test_runner::Config;

/// The largest input the no-panic properties generate.
pub const MAX_INPUT: usize = 64 * 1024;

/// Cases per property when `PROPTEST_CASES` is unset.
pub const DEFAULT_CASES: u32 = 4096;

/// The runner configuration every property uses: `cases` from
/// `PROPTEST_CASES` (or `default`), and no regression files written into
/// the source tree (a failure prints its minimal input and seed instead).
pub fn config(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grew(by: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().wrapping_add(by);
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn shrank(by: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().wrapping_sub(by)));
}

/// The system allocator, counting live bytes per thread. A test binary
/// installs it with `#[global_allocator] static A: Counting = Counting;`.
pub struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping touches only const-initialised thread-locals, which never
// allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

/// Runs `f` and returns its result with the most bytes it had allocated
/// and not yet freed at any one time (on this thread, beyond what was
/// live before). Meaningful only under [`Counting`].
pub fn peak_bytes<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get);
    (r, peak.wrapping_sub(base))
}

/// Bytes a parser may hold per input byte, besides [`FIXED_ALLOWANCE`]:
/// parsers build tokens and trees of small nodes, so a bound proportional
/// to the input is the honest one. What it catches is a blow-up (a
/// quadratic copy, an allocation sized by a number in the input).
pub const BYTES_PER_INPUT_BYTE: usize = 32;

/// The TOML parser (`toml` 0.9, for the gateway config and the Spin
/// manifest) lexes the whole document into a token vector before it
/// parses, and its error quotes the offending line: measured at 37 to 117
/// bytes held per input byte (117 for a line of dots, 77 for `a=[`
/// repeated, 52 for most text), the same from 1 KiB to 64 KiB, so linear,
/// not a blow-up; just past a power of two the vector's doubling adds up
/// to half again (156 per byte for 16,385 dots, found by the suite after
/// a first bound of 96 and a second of 128). Config files come from the
/// operator, not from clients.
pub const TOML_BYTES_PER_INPUT_BYTE: usize = 256;

/// What any parse may hold whatever its input's size.
pub const FIXED_ALLOWANCE: usize = 256 * 1024;

/// The most one parse of `input_len` bytes may hold at its peak.
pub fn allocation_bound(input_len: usize, per_byte: usize) -> usize {
    per_byte * input_len + FIXED_ALLOWANCE
}

/// Asserts that `f` (one parser call on `input`) stays within
/// [`allocation_bound`] at [`BYTES_PER_INPUT_BYTE`], and returns its result.
pub fn within_bound<R>(input: &str, f: impl FnOnce() -> R) -> R {
    within_bound_of(BYTES_PER_INPUT_BYTE, input, f)
}

/// [`within_bound`] at `per_byte` bytes per input byte.
pub fn within_bound_of<R>(per_byte: usize, input: &str, f: impl FnOnce() -> R) -> R {
    let (r, peak) = peak_bytes(f);
    let bound = allocation_bound(input.len(), per_byte);
    assert!(
        peak <= bound,
        "held {peak} bytes at peak on {} bytes of input (bound {bound})",
        input.len(),
    );
    r
}

/// Untrusted text up to [`MAX_INPUT`] bytes: short arbitrary strings,
/// arbitrary bytes read as UTF-8 (lossily), and sequences of `vocabulary`
/// tokens, the last kind both short and repeated up to the limit.
pub fn untrusted(vocabulary: &'static [&'static str]) -> BoxedStrategy<String> {
    let tokens = proptest::collection::vec(proptest::sample::select(vocabulary), 0..64)
        .prop_map(|t| t.concat());
    let long = (tokens.clone(), 1usize..MAX_INPUT).prop_map(|(unit, want)| {
        if unit.is_empty() {
            return unit;
        }
        let mut s = unit.repeat(want / unit.len() + 1);
        let mut end = want.min(s.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s
    });
    prop_oneof![
        3 => any::<String>(),
        2 => proptest::collection::vec(any::<u8>(), 0..MAX_INPUT)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        4 => tokens,
        1 => long,
    ]
    .prop_map(|mut s| {
        // Lossy decoding can grow the text; keep the promise of the bound.
        let mut end = s.len().min(MAX_INPUT);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s
    })
    .boxed()
}
