//! Time per component, reported to the host.
//!
//! A composed chain is one component to the host, which cannot see where
//! one middleware ends and the next begins. So when the host asks (the
//! request carries [`HEADER`], which only the host can set), each SDK
//! middleware measures its own time, excluding the time spent in `next`,
//! and appends `NAME;dur=MICROS` to [`HEADER`] on its response. The host
//! strips the header and records the values. Hosts that do not ask (Spin)
//! see nothing.
//!
//! Tollgate runs one request per instance at a time, so the time spent in
//! `next` is kept in a per-instance counter.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::HeaderValue;

/// Request: the host asks for timings. Response: the timings.
pub const HEADER: &str = "x-tollgate-timing";

/// Nanoseconds the current request has spent in `next`.
static IN_NEXT: AtomicU64 = AtomicU64::new(0);
/// Whether the current request is being timed; off, `next` reads no clock.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Now, in nanoseconds of the monotonic clock.
#[cfg(target_arch = "wasm32")]
pub(crate) fn now() -> u64 {
    spin_sdk::wasip3::clocks::monotonic_clock::now()
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn now() -> u64 {
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

/// A measurement of one request through this component.
pub(crate) struct Span {
    start: u64,
}

impl Span {
    /// Starts measuring if `headers` carry the host's request for timings.
    pub(crate) fn start(headers: &http::HeaderMap) -> Option<Span> {
        let timed = headers.contains_key(HEADER);
        ACTIVE.store(timed, Ordering::Relaxed);
        timed.then(|| {
            IN_NEXT.store(0, Ordering::Relaxed);
            Span { start: now() }
        })
    }

    /// Appends this component's own time to the response's timings.
    pub(crate) fn finish(self, component: &str, headers: &mut http::HeaderMap) {
        let total = now().saturating_sub(self.start);
        let own = total.saturating_sub(IN_NEXT.load(Ordering::Relaxed));
        if let Ok(v) = HeaderValue::from_str(&entry(component, own)) {
            headers.append(HEADER, v);
        }
    }
}

/// Runs `f` (a call to the rest of the chain), counting its time as spent
/// there when the request is being timed.
pub(crate) async fn in_next<T>(f: impl std::future::Future<Output = T>) -> T {
    if !ACTIVE.load(Ordering::Relaxed) {
        return f.await;
    }
    let sent = now();
    let out = f.await;
    add_next(now().saturating_sub(sent));
    out
}

/// Counts `nanos` as spent in the rest of the chain.
fn add_next(nanos: u64) {
    IN_NEXT.fetch_add(nanos, Ordering::Relaxed);
}

/// `NAME;dur=MICROS`, the shape of a `Server-Timing` entry.
fn entry(component: &str, nanos: u64) -> String {
    format!("{component};dur={:.1}", nanos as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_measures_when_the_host_asks() {
        let mut h = http::HeaderMap::new();
        assert!(Span::start(&h).is_none());
        h.insert(HEADER, HeaderValue::from_static("1"));
        assert!(Span::start(&h).is_some());
    }

    #[test]
    fn own_time_excludes_time_in_next() {
        let mut h = http::HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("1"));
        let span = Span::start(&h).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        add_next(25_000_000);
        let mut res = http::HeaderMap::new();
        res.append(HEADER, HeaderValue::from_static("inner;dur=7.0"));
        span.finish("outer", &mut res);
        let all: Vec<&str> = res
            .get_all(HEADER)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(all[0], "inner;dur=7.0");
        let dur: f64 = all[1].strip_prefix("outer;dur=").unwrap().parse().unwrap();
        // 30 ms slept minus 25 ms "in next": at least 5 ms, well under 30.
        assert!((5_000.0..25_000.0).contains(&dur), "{dur}");
    }

    #[test]
    fn entries_are_server_timing_shaped() {
        assert_eq!(entry("tollgate_auth", 12_345), "tollgate_auth;dur=12.3");
    }
}
