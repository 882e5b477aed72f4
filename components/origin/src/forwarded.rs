//! What the origin learns about the client when the app runs on Spin:
//! Spin's own request headers (`spin-*`) never reach the origin, and
//! `X-Forwarded-For`, `-Proto` and `-Host` are set from what Spin reports
//! (`spin-client-addr`, `spin-full-url`), as Tollgate's host does on its
//! own routes. Values a client sent are kept only when the connection
//! comes from a configured trusted proxy (`trusted_proxies`).

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use tollgate_sdk::http::Uri;
use tollgate_sdk::{HeaderMap, HeaderValue};

const XFF: &str = "x-forwarded-for";
const XFP: &str = "x-forwarded-proto";
const XFH: &str = "x-forwarded-host";
/// Tollgate's internal client-address header: never for the origin.
const CLIENT_IP: &str = "x-tollgate-client-ip";

/// Parses `trusted_proxies`: addresses or CIDR networks, comma-separated.
pub fn parse_trusted(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("variable `trusted_proxies`: `{s}` is not an address or CIDR network")
                })
        })
        .collect()
}

/// Rewrites `headers` for the origin: strips every `spin-*` header and
/// Tollgate's internal one, and sets the forwarding headers. Without
/// `spin-client-addr` nobody vouches for the client, so client-sent
/// forwarding headers are dropped and none are set.
pub fn apply(headers: &mut HeaderMap, trusted: &[IpNet]) {
    let peer = text(headers, "spin-client-addr").and_then(|a| {
        a.parse::<SocketAddr>()
            .map(|s| s.ip())
            .ok()
            .or_else(|| a.parse().ok())
    });
    let url = text(headers, "spin-full-url").and_then(|u| u.parse::<Uri>().ok());
    let spin: Vec<_> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("spin-"))
        .cloned()
        .collect();
    for n in spin {
        headers.remove(n);
    }
    headers.remove(CLIENT_IP);
    let Some(peer) = peer else {
        for n in [XFF, XFP, XFH] {
            headers.remove(n);
        }
        return;
    };
    let from_proxy = trusted.iter().any(|n| n.contains(&peer));
    let prior: Vec<String> = if from_proxy {
        headers
            .get_all(XFF)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    let xff = match prior.is_empty() {
        true => peer.to_string(),
        false => format!("{}, {peer}", prior.join(", ")),
    };
    let claimed = |name| from_proxy.then(|| single_token(headers, name)).flatten();
    let proto = claimed(XFP).unwrap_or_else(|| {
        url.as_ref()
            .and_then(|u| u.scheme_str())
            .unwrap_or("http")
            .to_owned()
    });
    let host = claimed(XFH).or_else(|| {
        url.as_ref()
            .and_then(|u| u.authority())
            .map(|a| a.as_str().to_owned())
            .or_else(|| text(headers, "host").map(str::to_owned))
    });
    for (name, value) in [(XFF, Some(xff)), (XFP, Some(proto)), (XFH, host)] {
        headers.remove(name);
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(name, v);
        }
    }
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

/// A header that is present once, as one token.
fn single_token(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut all = headers.get_all(name).iter();
    let (Some(v), None) = (all.next(), all.next()) else {
        return None;
    };
    let v = v.to_str().ok()?.trim();
    (!v.is_empty() && !v.contains([',', ' '])).then(|| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin_request(extra: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("spin-client-addr", "192.0.2.7:50000"),
            ("spin-full-url", "https://shop.example/api/x?y=1"),
            ("spin-path-info", "/x"),
            ("spin-matched-route", "/api/..."),
            ("spin-base-path", "/"),
            ("spin-component-route", "/api"),
            ("spin-raw-component-route", "/api/..."),
            ("x-tollgate-client-ip", "6.6.6.6"),
            ("accept", "*/*"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            h.append(
                tollgate_sdk::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn spin_headers_go_and_forwarding_headers_come_from_spin() {
        let mut h = spin_request(&[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-host", "evil")]);
        apply(&mut h, &[]);
        assert!(h.keys().all(|n| !n.as_str().starts_with("spin-")), "{h:?}");
        assert!(!h.contains_key("x-tollgate-client-ip"));
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(h["accept"], "*/*");
    }

    #[test]
    fn a_trusted_proxys_claims_are_kept() {
        let trusted = parse_trusted(&["192.0.2.0/24".into()]).unwrap();
        let mut h = spin_request(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "public.example"),
        ]);
        apply(&mut h, &trusted);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 192.0.2.7");
        assert_eq!(h["x-forwarded-host"], "public.example");
        // Not from a trusted proxy: replaced.
        let other = parse_trusted(&["10.0.0.1".into()]).unwrap();
        let mut h = spin_request(&[("x-forwarded-for", "203.0.113.9")]);
        apply(&mut h, &other);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
    }

    #[test]
    fn without_spins_address_nothing_is_vouched_for() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("spin-path-info", HeaderValue::from_static("/x"));
        apply(&mut h, &[]);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn bad_trusted_proxies_name_the_variable() {
        let e = parse_trusted(&["10.0.0.0/33".into()]).unwrap_err();
        assert!(e.starts_with("variable `trusted_proxies`"), "{e}");
    }
}
