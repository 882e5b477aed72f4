//! Properties of the SSRF check and URL extraction
//! (`components/url-guard`): the check agrees with an independent reading
//! of the same URL (`url::Url` plus `std::net` and the IANA
//! special-purpose registries, written out here with `ipnet`) on whether
//! the destination is internal, every non-canonical spelling is refused in
//! strict mode, the query, header and JSON extractors find a refused URL
//! wherever it is put, and nothing panics or holds more than the bound.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use tollgate_properties::{Counting, DEFAULT_CASES, config, untrusted, within_bound};
use tollgate_sdk::config::Vars;
use tollgate_url_guard::policy::{BodyVerdict, Config, check_headers, check_json, check_query};
use tollgate_url_guard::ssrf::{Policy, Resolve};
use url::{Host, Url};

#[global_allocator]
static ALLOC: Counting = Counting;

/// IPv4 networks that are not globally reachable (IANA IPv4
/// special-purpose registry, "Globally Reachable" false), multicast, the
/// deprecated 6to4 relay anycast, and the metadata and platform addresses
/// that sit in public space. Written as text, independent of url-guard's
/// masks.
const INTERNAL_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "168.63.129.16/32",
];

/// IPv6 networks that are not globally reachable or lead inside, judged by
/// value (the IPv4-carrying forms are handled apart): IANA's IPv6
/// special-purpose registry, with benchmarking `2001:2::/48`, ORCHID
/// `2001:10::/28`, documentation `3fff::/20` (RFC 9637) and SRv6 SIDs
/// `5f00::/16` (RFC 9602), plus deprecated site-local `fec0::/10`.
const INTERNAL_V6: &[&str] = &[
    "::/128",
    "::1/128",
    "100::/64",
    "2001:2::/48",
    "2001:10::/28",
    "2001:db8::/32",
    "3fff::/20",
    "5f00::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

fn v4_internal(ip: Ipv4Addr) -> bool {
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || ip.is_unspecified()
        || INTERNAL_V4
            .iter()
            .any(|n| n.parse::<Ipv4Net>().unwrap().contains(&ip))
}

/// The IPv4 address an IPv6 address carries, by the standard layouts:
/// mapped and compatible `::/96`-style, translated `::ffff:0:0:0/96`,
/// NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`.
fn carried_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let within = |net: &str| net.parse::<Ipv6Net>().unwrap().contains(&ip);
    if ip.to_ipv4().is_some() || within("::ffff:0:0:0/96") || within("64:ff9b::/96") {
        return Some(tail);
    }
    if within("64:ff9b:1::/48") {
        return Some(tail);
    }
    if within("2002::/16") {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// Teredo `2001::/32`: the client address inside is obfuscated, so the
/// form is refused whatever it carries.
fn teredo(ip: Ipv6Addr) -> bool {
    "2001::/32".parse::<Ipv6Net>().unwrap().contains(&ip)
}

/// The independent verdict for an address, in strict mode or not.
fn internal(ip: IpAddr, strict: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_internal(v4),
        IpAddr::V6(v6) => {
            if teredo(v6) || (strict && carried_v4(v6).is_some()) {
                return true;
            }
            if let Some(v4) = carried_v4(v6) {
                return v4_internal(v4);
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                || INTERNAL_V6
                    .iter()
                    .any(|n| n.parse::<Ipv6Net>().unwrap().contains(&v6))
        }
    }
}

fn policy(strict: bool) -> Policy {
    Policy {
        schemes: vec!["http".into(), "https".into()],
        allowed_hosts: Vec::new(),
        strict_ip_literals: strict,
    }
}

/// Addresses near the edges of every range, and anywhere at all.
fn v4() -> impl Strategy<Value = Ipv4Addr> {
    let near = (
        proptest::sample::select(INTERNAL_V4),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(|(net, bits, outside)| {
            let net: Ipv4Net = net.parse().unwrap();
            let host = bits & !u32::from(net.netmask());
            let ip = u32::from(net.network()) | host;
            // Just outside: the address after the broadcast address.
            Ipv4Addr::from(if outside {
                u32::from(net.broadcast()).wrapping_add(1)
            } else {
                ip
            })
        });
    prop_oneof![any::<u32>().prop_map(Ipv4Addr::from), near]
}

fn v6() -> impl Strategy<Value = Ipv6Addr> {
    // The IPv4-carrying forms, Teredo and global unicast, besides the
    // internal networks.
    const MORE: &[&str] = &[
        "::/96",
        "::ffff:0:0/96",
        "::ffff:0:0:0/96",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "2002::/16",
        "2001::/32",
        "2000::/3",
    ];
    let prefixes: Vec<&str> = INTERNAL_V6.iter().chain(MORE).copied().collect();
    let near = (proptest::sample::select(prefixes), any::<u128>()).prop_map(|(net, bits)| {
        let net: Ipv6Net = net.parse().unwrap();
        Ipv6Addr::from(u128::from(net.network()) | (bits & !u128::from(net.netmask())))
    });
    prop_oneof![any::<u128>().prop_map(Ipv6Addr::from), near]
}

/// Ways other than four dotted decimal parts of writing an IPv4 host that
/// WHATWG parsers read as the address.
#[derive(Debug, Clone, Copy)]
enum Spelling {
    Integer,
    Hex,
    Octal,
    ZeroPadded,
    ShortForm,
    TrailingDot,
    MixedHexParts,
}

fn spell(ip: Ipv4Addr, how: Spelling) -> String {
    let [a, b, c, d] = ip.octets();
    let n = u32::from(ip);
    match how {
        Spelling::Integer => n.to_string(),
        Spelling::Hex => format!("0x{n:x}"),
        Spelling::Octal => format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
        Spelling::ZeroPadded => format!("{a:04o}.{b:04o}.{c:04o}.{d:04o}"),
        Spelling::ShortForm => format!("{a}.{}", n & 0x00ff_ffff),
        Spelling::TrailingDot => format!("{ip}."),
        Spelling::MixedHexParts => format!("0x{a:x}.{b}.0x{c:02x}.{d}"),
    }
}

fn spelling() -> impl Strategy<Value = Spelling> {
    prop_oneof![
        Just(Spelling::Integer),
        Just(Spelling::Hex),
        Just(Spelling::Octal),
        Just(Spelling::ZeroPadded),
        Just(Spelling::ShortForm),
        Just(Spelling::TrailingDot),
        Just(Spelling::MixedHexParts),
    ]
}

/// A URL around `host`: scheme, optional port, path and query.
fn url_around(host: String) -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("http"), Just("https"), Just("HTTP"), Just("hTTps")],
        proptest::option::of(1u16..),
        "(/[a-z0-9._~-]{0,8}){0,3}",
        proptest::option::of("[a-z0-9=&]{0,12}"),
    )
        .prop_map(move |(scheme, port, path, query)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            format!("{scheme}://{host}{port}{path}{query}")
        })
}

/// Addresses inside the internal ranges only, of both families.
fn internal_ip() -> impl Strategy<Value = IpAddr> {
    let v4 = (proptest::sample::select(INTERNAL_V4), any::<u32>()).prop_map(|(net, bits)| {
        let net: Ipv4Net = net.parse().unwrap();
        IpAddr::V4(Ipv4Addr::from(
            u32::from(net.network()) | (bits & !u32::from(net.netmask())),
        ))
    });
    let v6 = (proptest::sample::select(INTERNAL_V6), any::<u128>()).prop_map(|(net, bits)| {
        let net: Ipv6Net = net.parse().unwrap();
        IpAddr::V6(Ipv6Addr::from(
            u128::from(net.network()) | (bits & !u128::from(net.netmask())),
        ))
    });
    prop_oneof![v4, v6]
}

fn literal_url() -> impl Strategy<Value = (String, IpAddr)> {
    prop_oneof![
        v4().prop_flat_map(|ip| url_around(ip.to_string()).prop_map(move |u| (u, IpAddr::V4(ip)))),
        v6().prop_flat_map(
            |ip| url_around(format!("[{ip}]")).prop_map(move |u| (u, IpAddr::V6(ip)))
        ),
    ]
}

/// What the independent reading says `raw` names: its address, if a
/// literal (WHATWG parsing by `url::Url`).
fn independent_address(raw: &str) -> Option<IpAddr> {
    match Url::parse(raw).ok()?.host()? {
        Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        Host::Domain(_) => None,
    }
}

const NO_DNS: Resolve = &|_, _| None;

fn guard(vars: &[(&str, &str)]) -> Config {
    Config::parse(&Vars::from_pairs(vars.iter().copied())).unwrap()
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES * 4))]

    /// Canonical literals: refused exactly when the independent reading
    /// says the destination is internal, in both modes.
    #[test]
    fn the_check_agrees_with_an_independent_reading((raw, ip) in literal_url(), strict in any::<bool>()) {
        prop_assert_eq!(independent_address(&raw), Some(ip));
        let refused = policy(strict).check(&raw).is_err();
        prop_assert_eq!(refused, internal(ip, strict), "{} ({}), strict {}", raw, ip, strict);
    }

    /// Any spelling but four dotted decimal parts is refused in strict
    /// mode, public or not; with strict off, the address decides.
    #[test]
    fn every_other_ipv4_spelling_is_refused_in_strict_mode(ip in v4(), how in spelling(), tail in "(/[a-z]{0,6})?") {
        let raw = format!("http://{}{tail}", spell(ip, how));
        prop_assert_eq!(independent_address(&raw), Some(IpAddr::V4(ip)), "{}", raw);
        prop_assert!(policy(true).check(&raw).is_err(), "strict allowed {}", raw);
        prop_assert_eq!(policy(false).check(&raw).is_err(), v4_internal(ip), "{}", raw);
    }

    /// In DNS mode a host name is refused exactly when one of its
    /// addresses is internal.
    #[test]
    fn a_name_is_judged_by_every_address_it_resolves_to(
        name in "[a-z]{1,10}\\.(com|net|example)",
        addrs in proptest::collection::vec(prop_oneof![v4().prop_map(IpAddr::V4), v6().prop_map(IpAddr::V6)], 1..4),
    ) {
        let c = guard(&[("query_params", "url"), ("dns_check", "true"), ("allowed_schemes", "http,https")]);
        let resolve = |host: &str, _port: u16| (host == name).then(|| addrs.clone());
        let raw = format!("https://{name}/x");
        // Resolved addresses are judged by value, as connections use them.
        let expected = addrs.iter().any(|ip| internal(*ip, false));
        prop_assert_eq!(!c.allows(&raw, &resolve), expected, "{} -> {:?}", raw, addrs);
    }

    /// An internal URL is found wherever it is put: a query parameter
    /// (percent-encoded), a header, a JSON field or array element.
    #[test]
    fn a_refused_url_is_found_in_every_place_it_can_hide(
        (raw, ip) in internal_ip().prop_flat_map(|ip| {
            let host = match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            };
            url_around(host).prop_map(move |u| (u, ip))
        }),
        noise in "[a-z]{1,6}=[a-z0-9]{0,6}",
        nested in any::<bool>(),
    ) {
        prop_assert!(internal(ip, true), "{}", ip);
        let c = guard(&[("query_params", "url"), ("headers", "x-hook"), ("json_pointers", "/hook/url, /images"), ("allowed_schemes", "http,https")]);
        let encoded: String = url::form_urlencoded::byte_serialize(raw.as_bytes()).collect();
        let query = format!("{noise}&url={encoded}");
        prop_assert!(check_query(&c, Some(&query), NO_DNS).is_some(), "{}", query);
        let h = [("x-hook", raw.as_bytes())];
        prop_assert!(check_headers(&c, h.into_iter(), NO_DNS).is_some());
        let body = if nested {
            serde_json::json!({"images": ["https://example.com/a.png", raw]})
        } else {
            serde_json::json!({"hook": {"url": raw}})
        };
        let verdict = check_json(&c, body.to_string().as_bytes(), NO_DNS);
        prop_assert!(matches!(verdict, BodyVerdict::Refused(_)), "{:?}", verdict);
    }

    /// Arbitrary text as a URL, a query string, a header value and a JSON
    /// body: no panic, bounded memory.
    #[test]
    fn extraction_never_panics(
        raw in untrusted(&["http://", "https://", "[", "]", "::", ":", "@", "%", "%2e", "0x", "0", "1", ".", "/", "\\", "?", "#", "&", "=", "url=", "{", "}", "\"url\"", "\"images\"", "[\"", "\"]", ",", "\u{ff0e}", "xn--"]),
    ) {
        let c = guard(&[("query_params", "url"), ("headers", "x-hook"), ("json_pointers", "/url, /images")]);
        within_bound(&raw, || c.allows(&raw, NO_DNS));
        within_bound(&raw, || check_query(&c, Some(&raw), NO_DNS));
        let h = [("x-hook", raw.as_bytes())];
        within_bound(&raw, || check_headers(&c, h.into_iter(), NO_DNS));
        within_bound(&raw, || check_json(&c, raw.as_bytes(), NO_DNS));
    }
}
