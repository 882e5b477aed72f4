//! The request as Spin's HTTP trigger hands it to a Spin app: for a route
//! whose chain ends in a primary component (`tollgate up`), the `spin-*`
//! headers Spin sets are set here too, and no forwarding headers are
//! added (Spin adds none; the app's origin component derives them), so a
//! Spin app sees the same request on both hosts. Client-sent `spin-*`
//! headers are removed first: only the host says who the client is.

use std::net::SocketAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The headers Spin 4.1's trigger sets on every request.
pub const NAMES: [&str; 7] = [
    "spin-full-url",
    "spin-path-info",
    "spin-matched-route",
    "spin-base-path",
    "spin-raw-component-route",
    "spin-component-route",
    "spin-client-addr",
];

/// Replaces every `spin-*` header with what Spin would send for a request
/// to `full_url` (scheme, authority, path and query) from `peer`, matched
/// by the route `prefix` (exact, or with Spin's `/...` wildcard).
pub fn apply(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    full_url: &str,
    path: &str,
    prefix: &str,
    exact: bool,
) {
    let client_sent: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("spin-"))
        .cloned()
        .collect();
    for n in client_sent {
        headers.remove(n);
    }
    // The component route is the pattern without its wildcard; the path
    // info is what follows it.
    let component_route = if prefix == "/" { "" } else { prefix };
    let matched = if exact {
        prefix.to_owned()
    } else {
        format!("{component_route}/...")
    };
    let path_info = if exact {
        ""
    } else {
        path.strip_prefix(component_route).unwrap_or(path)
    };
    let peer = peer.to_string();
    let values = [
        full_url,
        path_info,
        &matched,
        "/",
        &matched,
        component_route,
        &peer,
    ];
    for (name, value) in NAMES.iter().zip(values) {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(*name, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_for(path: &str, prefix: &str, exact: bool) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("spin-client-addr", HeaderValue::from_static("6.6.6.6:1"));
        h.insert("spin-forged", HeaderValue::from_static("x"));
        let peer: SocketAddr = "127.0.0.1:52000".parse().unwrap();
        apply(
            &mut h,
            peer,
            &format!("http://gw.test{path}?q=1"),
            path,
            prefix,
            exact,
        );
        h
    }

    #[test]
    fn a_wildcard_route_gets_spins_headers() {
        let h = headers_for("/api/items/7", "/api", false);
        assert_eq!(h["spin-full-url"], "http://gw.test/api/items/7?q=1");
        assert_eq!(h["spin-path-info"], "/items/7");
        assert_eq!(h["spin-matched-route"], "/api/...");
        assert_eq!(h["spin-raw-component-route"], "/api/...");
        assert_eq!(h["spin-component-route"], "/api");
        assert_eq!(h["spin-base-path"], "/");
        assert_eq!(h["spin-client-addr"], "127.0.0.1:52000");
        assert!(
            !h.contains_key("spin-forged"),
            "client-sent spin-* headers go"
        );
    }

    #[test]
    fn root_and_exact_routes() {
        let h = headers_for("/v1/items", "/", false);
        assert_eq!(h["spin-matched-route"], "/...");
        assert_eq!(h["spin-component-route"], "");
        assert_eq!(h["spin-path-info"], "/v1/items");
        let h = headers_for("/hello", "/hello", true);
        assert_eq!(h["spin-matched-route"], "/hello");
        assert_eq!(h["spin-component-route"], "/hello");
        assert_eq!(h["spin-path-info"], "");
    }
}
