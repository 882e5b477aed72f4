//! `X-Forwarded-For`, `-Proto` and `-Host`: what the origin learns about
//! the client. Values a client sent are kept only when the connection comes
//! from a configured trusted proxy; otherwise they are replaced, so a client
//! cannot spoof its address.
//!
//! Also derives the client IP that components key on: the right-most
//! untrusted address in the chain of proxies.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::config::is_trusted;

/// The header through which components learn the client IP. Any value a
/// client sends is replaced.
pub const CLIENT_IP: HeaderName = HeaderName::from_static("x-tollgate-client-ip");
/// Spin's equivalent; a client-sent one is removed.
pub const SPIN_CLIENT_ADDR: HeaderName = HeaderName::from_static("spin-client-addr");

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Rewrites the forwarding headers for a request that arrived from `peer`
/// over `scheme` (`http` or `https`), addressed to `host`, sets
/// [`CLIENT_IP`] to the client's address ([`client_ip`] of the rewritten
/// headers), and returns that address.
pub fn apply(
    headers: &mut HeaderMap,
    peer: IpAddr,
    scheme: &str,
    host: &str,
    trusted: &[IpNet],
) -> IpAddr {
    let from_proxy = is_trusted(trusted, peer);
    let prior = if from_proxy {
        joined(headers, &XFF)
    } else {
        None
    };
    let xff = match prior {
        Some(p) => format!("{p}, {peer}"),
        None => peer.to_string(),
    };
    let proto = from_proxy.then(|| single_token(headers, &XFP)).flatten();
    let fwd_host = from_proxy.then(|| single_token(headers, &XFH)).flatten();
    set(headers, XFF, &xff);
    set(headers, XFP, proto.as_deref().unwrap_or(scheme));
    set(headers, XFH, fwd_host.as_deref().unwrap_or(host));
    if from_proxy {
        let client = client_ip(headers, trusted).unwrap_or(peer);
        set(headers, CLIENT_IP, &client.to_string());
        client
    } else {
        // From an untrusted peer the list is the peer alone.
        set(headers, CLIENT_IP, &xff);
        peer
    }
}

/// Replaces every field of `name` with `value`, or removes them all if
/// `value` cannot be a header value.
fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => headers.insert(name, v),
        Err(_) => headers.remove(name),
    };
}

/// The client's address: walking `X-Forwarded-For` from the right, the first
/// address that is not a trusted proxy. `headers` must already be rewritten
/// by [`apply`].
pub fn client_ip(headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let list = headers.get(&XFF)?.to_str().ok()?;
    let mut last = None;
    for part in list.rsplit(',') {
        let ip: IpAddr = part.trim().parse().ok()?;
        last = Some(ip);
        if !is_trusted(trusted, ip) {
            return Some(ip);
        }
    }
    last
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        return None;
    }
    let all = parts.join(", ");
    // Keep only a list of valid addresses; anything else is discarded.
    all.split(',')
        .all(|p| p.trim().parse::<IpAddr>().is_ok())
        .then_some(all)
}

fn single_token(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    (!v.is_empty() && v.len() <= 255 && !v.contains([',', ' '])).then(|| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peers_cannot_spoof() {
        let mut h = HeaderMap::new();
        h.insert(XFF, "1.2.3.4".parse().unwrap());
        h.insert(XFP, "https".parse().unwrap());
        h.insert(XFH, "evil.example".parse().unwrap());
        let client = apply(
            &mut h,
            "203.0.113.9".parse().unwrap(),
            "http",
            "api.example",
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(h[XFF], "203.0.113.9");
        assert_eq!(h[XFP], "http");
        assert_eq!(h[XFH], "api.example");
        assert_eq!(
            client_ip(&h, &nets(&["10.0.0.0/8"])),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(client, "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(h[CLIENT_IP], "203.0.113.9");
    }

    #[test]
    fn trusted_proxies_extend_the_chain() {
        let mut h = HeaderMap::new();
        h.insert(XFF, "198.51.100.7, 10.0.0.2".parse().unwrap());
        h.insert(XFP, "https".parse().unwrap());
        h.insert(XFH, "shop.example".parse().unwrap());
        let trusted = nets(&["10.0.0.0/8"]);
        let client = apply(
            &mut h,
            "10.0.0.1".parse().unwrap(),
            "http",
            "internal",
            &trusted,
        );
        assert_eq!(h[XFF], "198.51.100.7, 10.0.0.2, 10.0.0.1");
        assert_eq!(h[XFP], "https");
        assert_eq!(h[XFH], "shop.example");
        assert_eq!(
            client_ip(&h, &trusted),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(client, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(h[CLIENT_IP], "198.51.100.7");
    }

    #[test]
    fn junk_from_a_trusted_proxy_is_dropped() {
        let mut h = HeaderMap::new();
        h.insert(XFF, "not-an-ip".parse().unwrap());
        let client = apply(
            &mut h,
            "10.0.0.1".parse().unwrap(),
            "http",
            "h",
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(h[XFF], "10.0.0.1");
        // Only trusted addresses in the list: the left-most is the client.
        assert_eq!(client, "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_connection_scheme_is_the_proto_unless_a_trusted_proxy_said() {
        let mut h = HeaderMap::new();
        h.insert(XFP, "http".parse().unwrap());
        apply(&mut h, "203.0.113.9".parse().unwrap(), "https", "a", &[]);
        assert_eq!(h[XFP], "https");
    }
}
