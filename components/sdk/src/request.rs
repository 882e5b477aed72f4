//! Facts about the request that the host establishes: the client IP (from
//! the host's trusted-proxy logic, never from client-sent headers) and the
//! request id, plus small header helpers.

use std::net::IpAddr;

use http::header::AsHeaderName;

use crate::header_name::Name;
use crate::{HeaderMap, HeaderName, HeaderValue};

/// Tollgate's header carrying the client IP. The host replaces any value a
/// client sends.
pub const CLIENT_IP: &str = "x-tollgate-client-ip";
/// Spin's equivalent (`ip:port`), set by Spin's HTTP trigger.
pub const SPIN_CLIENT_ADDR: &str = "spin-client-addr";
/// The headers [`client_ip`] reads: a filter that calls it lists these in
/// its `request_headers`.
pub const CLIENT_IP_HEADERS: [&str; 2] = [CLIENT_IP, SPIN_CLIENT_ADDR];
/// The request id header.
pub const REQUEST_ID: &str = "x-request-id";
/// The same names, checked once (see [`crate::header_name`]).
pub static CLIENT_IP_NAME: HeaderName = HeaderName::from_static(CLIENT_IP);
pub static SPIN_CLIENT_ADDR_NAME: HeaderName = HeaderName::from_static(SPIN_CLIENT_ADDR);
pub static REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID);

/// The client's IP address as the host established it: Spin's
/// `spin-client-addr` where the host is Spin (or Tollgate running a Spin
/// app), which always sets it, so a client-sent `x-tollgate-client-ip`
/// is never believed there; else Tollgate's header (Tollgate's host
/// removes a client-sent `spin-client-addr` on its own routes).
pub fn client_ip(headers: &HeaderMap) -> Option<IpAddr> {
    if let Some(addr) = header_str(headers, &SPIN_CLIENT_ADDR_NAME) {
        return addr
            .parse::<std::net::SocketAddr>()
            .map(|s| s.ip())
            .ok()
            .or_else(|| addr.parse().ok());
    }
    header_str(headers, &CLIENT_IP_NAME).and_then(|v| v.parse().ok())
}

/// The request id, if the request carries a valid one.
pub fn request_id(headers: &HeaderMap) -> Option<&str> {
    header_str(headers, &REQUEST_ID_NAME).filter(|v| valid_request_id(v))
}

/// Whether `v` is acceptable as a request id: 1 to 128 characters of
/// letters, digits and `-_.:`.
pub fn valid_request_id(v: &str) -> bool {
    (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A header's value as text, if present and visible ASCII. `name` is text
/// or, cheaper, a [`HeaderName`].
pub fn header_str<'a>(headers: &'a HeaderMap, name: impl AsHeaderName) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

/// Sets a header, ignoring values that are not valid header text.
pub fn set_header(headers: &mut HeaderMap, name: impl Name, value: &str) {
    if let (Some(n), Ok(v)) = (name.header_name(), HeaderValue::from_str(value)) {
        headers.insert(n, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ip_comes_from_the_header_the_host_sets() {
        let mut h = HeaderMap::new();
        h.insert(CLIENT_IP, "203.0.113.5".parse().unwrap());
        assert_eq!(client_ip(&h), Some("203.0.113.5".parse().unwrap()));
        // On Spin the trigger's address wins over a client-sent header.
        h.insert(SPIN_CLIENT_ADDR, "198.51.100.1:4000".parse().unwrap());
        assert_eq!(client_ip(&h), Some("198.51.100.1".parse().unwrap()));
        h.insert(SPIN_CLIENT_ADDR, "not an address".parse().unwrap());
        assert_eq!(client_ip(&h), None);
    }
}
