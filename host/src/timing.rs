//! Time per component. A composed chain is one component to the host, so
//! the host asks the components themselves: the ingress marks the request
//! with [`HEADER`] (after dropping any a client sent), every SDK-built
//! middleware appends `NAME;dur=MICROS` (its own time, `next` excluded) to
//! the same header on its response, and [`take`] strips and parses it
//! before the answer leaves. The origin never sees the mark and cannot
//! forge timings (`egress/client.rs` strips the header both ways).
//!
//! Names are whatever the components say, so [`Reporters`] admits at most
//! as many distinct names per chain as the chain has components: a
//! component that makes names up cannot grow the metrics without bound.

use std::sync::Mutex;

use http::HeaderMap;

/// The component names one chain has reported, at most one per component.
pub struct Reporters {
    cap: usize,
    names: Mutex<Vec<String>>,
}

impl Reporters {
    pub fn new(components: usize) -> Self {
        Self {
            cap: components,
            names: Mutex::new(Vec::with_capacity(components)),
        }
    }

    /// Whether `name` may be recorded: already known, or room for it.
    pub fn admit(&self, name: &str) -> bool {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if names.iter().any(|n| n == name) {
            return true;
        }
        if names.len() < self.cap {
            names.push(name.to_owned());
            return true;
        }
        false
    }
}

/// The header both ways: a request for timings, and the timings.
pub const HEADER: http::HeaderName = http::HeaderName::from_static("x-tollgate-timing");

/// Removes the timings from a chain's response: (component, seconds).
pub fn take(headers: &mut HeaderMap) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for value in headers.get_all(&HEADER) {
        let Ok(text) = value.to_str() else { continue };
        out.extend(text.split(',').filter_map(parse_entry));
    }
    headers.remove(&HEADER);
    out
}

/// `NAME;dur=MICROS` → (NAME, seconds); anything else is ignored.
fn parse_entry(entry: &str) -> Option<(String, f64)> {
    let (name, dur) = entry.trim().split_once(";dur=")?;
    let micros: f64 = dur.trim().parse().ok()?;
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (valid_name && micros.is_finite() && micros >= 0.0).then(|| (name.to_owned(), micros / 1e6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_every_entry_and_strips_the_header() {
        let mut h = HeaderMap::new();
        h.append(HEADER, "fixture_inner;dur=12.5".parse().unwrap());
        h.append(
            HEADER,
            "fixture_outer;dur=3.0, bad entry, x;dur=-1"
                .parse()
                .unwrap(),
        );
        let t = take(&mut h);
        assert_eq!(
            t,
            vec![
                ("fixture_inner".to_owned(), 12.5e-6),
                ("fixture_outer".to_owned(), 3.0e-6)
            ]
        );
        assert!(h.get(HEADER).is_none());
    }

    #[test]
    fn a_chain_reports_at_most_one_name_per_component() {
        let r = Reporters::new(2);
        assert!(r.admit("a"));
        assert!(r.admit("b"));
        assert!(r.admit("a"), "known names stay admitted");
        assert!(!r.admit("made-up"), "a third name in a two-component chain");
    }

    #[test]
    fn names_that_would_bloat_metrics_are_ignored() {
        let long = "a".repeat(65);
        assert_eq!(parse_entry(&format!("{long};dur=1")), None);
        assert_eq!(parse_entry("a{b};dur=1"), None);
        assert_eq!(parse_entry("ok;dur=NaN"), None);
    }
}
