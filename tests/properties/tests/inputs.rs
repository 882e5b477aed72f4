//! Properties of the small parsers of untrusted input: rate-limit
//! policies, API-key entries and presented keys, `Authorization` values,
//! request ids (the host's and the SDK's copies must agree), the host's
//! `X-Forwarded-For` handling and the SDK's client address, and origin
//! `Set-Cookie` values. Each one either round-trips what it accepts or is
//! checked against an independent reading, and none panics or holds more
//! than the allocation bound on any input up to 64 KiB.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use tollgate_properties::{Counting, DEFAULT_CASES, config, untrusted, within_bound};
use tollgate_sdk::config::Vars;

#[global_allocator]
static ALLOC: Counting = Counting;

fn vars(pairs: &[(&str, &str)]) -> Vars {
    Vars::from_pairs(pairs.iter().copied())
}

// --- rate-limit policies ----------------------------------------------------

/// One generated policy, and the text it is written as.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    rate: u64,
    period: (u64, &'static str),
    burst: Option<u64>,
    cost: Option<u64>,
}

impl Spec {
    fn text(&self) -> String {
        let mut s = format!(
            "{} ip+header:X-Tenant {}/{}{}",
            self.name, self.rate, self.period.0, self.period.1
        );
        if let Some(b) = self.burst {
            s += &format!(" burst={b}");
        }
        if let Some(c) = self.cost {
            s += &format!(" cost={c}");
        }
        s
    }

    /// The period in microseconds, if it is representable.
    fn period_micros(&self) -> Option<u64> {
        let unit = match self.period.1 {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => 86_400,
        };
        self.period.0.checked_mul(unit)?.checked_mul(1_000_000)
    }
}

/// Numbers across the whole range, edges included.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..1000,
        any::<u64>(),
        Just(u64::MAX),
        (1u64..64).prop_map(|b| 1u64 << b),
        (1u64..64).prop_map(|b| (1u64 << b) - 1),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        "[a-z][a-z0-9_-]{0,12}",
        number(),
        (
            number(),
            prop_oneof![Just(""), Just("s"), Just("m"), Just("h"), Just("d")],
        ),
        proptest::option::of(number()),
        proptest::option::of(number()),
    )
        .prop_map(|(name, rate, period, burst, cost)| Spec {
            name,
            rate,
            period,
            burst,
            cost,
        })
}

// --- API keys -----------------------------------------------------------------

fn hex_digest(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Edits to a valid hash: characters a lenient hex reader accepts or
/// skips, and a shorter or longer hash.
const HASH_EDITS: &[&str] = &[
    "+", "-", " ", "g", "G", "\u{e9}", "0x", "drop", "add", "f", "0",
];

/// The independent reading of the hash part: exactly 64 hex digits.
fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

// --- X-Forwarded-For ----------------------------------------------------------

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

fn trusted() -> Vec<IpNet> {
    vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]
}

fn in_trusted(ip: IpAddr) -> bool {
    trusted().iter().any(|n| n.contains(&ip))
}

fn proxy() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 3]>().prop_map(|[a, b, c]| IpAddr::from([10, a, b, c])),
        any::<[u8; 15]>().prop_map(|t| {
            let mut o = [0xfd; 16];
            o[1..].copy_from_slice(&t);
            IpAddr::from(o)
        }),
    ]
}

const XFF_WORDS: &[&str] = &[
    "1.2.3.4",
    "10.0.0.1",
    "::1",
    "fd00::1",
    ",",
    ", ",
    " ",
    "unknown",
    "[::1]:80",
    "1.2.3.4:5",
    "\t",
    "2001:db8::",
    "999.1.1.1",
    ";",
    "for=",
    "\"",
];

proptest! {
    #![proptest_config(config(DEFAULT_CASES * 2))]

    /// A policy is accepted exactly when its numbers make sense (rate,
    /// burst and cost at least 1, a period from 1 s that fits in
    /// microseconds), and what is accepted is what was written.
    #[test]
    fn rate_limit_policies_round_trip(s in spec()) {
        let text = s.text();
        let parsed = tollgate_rate_limit::policy::Config::parse(&vars(&[("policies", &text)]));
        let burst = s.burst.unwrap_or(s.rate);
        let cost = s.cost.unwrap_or(1);
        let period = s.period_micros().filter(|p| *p > 0);
        let valid = s.rate >= 1 && burst >= 1 && cost >= 1 && period.is_some();
        match parsed {
            Ok(c) => {
                prop_assert!(valid, "accepted {}", text);
                let p = &c.policies[0];
                prop_assert_eq!(&p.name, &s.name);
                prop_assert_eq!(p.quota.rate, s.rate);
                prop_assert_eq!(p.quota.burst, burst);
                prop_assert_eq!(p.cost, cost);
                prop_assert_eq!(Some(p.quota.period), period, "{}", text);
            }
            Err(e) => {
                prop_assert!(!valid, "refused {}: {}", text, e);
                prop_assert!(e.starts_with("variable `policies`"), "{}", e);
            }
        }
    }

    /// Arbitrary policy text: no panic, bounded memory.
    #[test]
    fn rate_limit_policy_text_never_panics(
        raw in untrusted(&["per-ip", " ", "ip", "route", "identity", "global", "header:", "+", "10", "/", "60s", "1m", "h", "d", "burst=", "cost=", "=", ";", "0", "18446744073709551615", "99999999999999999999"]),
        algorithm in prop_oneof![Just("token-bucket"), Just("sliding-window"), Just("x")],
    ) {
        within_bound(&raw, || {
            drop(tollgate_rate_limit::policy::Config::parse(&vars(&[("policies", &raw), ("algorithm", algorithm)])))
        });
    }

    /// An `api_keys` entry is accepted exactly when its identity is
    /// visible ASCII and its hash is 64 hex digits; an accepted key
    /// matches its own key and nothing else.
    #[test]
    fn api_key_entries_are_read_as_written(
        identity in prop_oneof!["[a-z0-9._-]{1,12}", ".{0,6}"],
        key in "[ -~]{1,40}",
        other in "[ -~]{1,40}",
        edit in proptest::option::of((any::<usize>(), proptest::sample::select(HASH_EDITS))),
        upper in any::<bool>(),
        scopes in "( [a-z:]{1,8}){0,3}",
    ) {
        // The key's own digest, or that digest with one edit: a character
        // replaced by one a hex reader might let through, one dropped, one
        // added.
        let mut hash = hex_digest(&key);
        if upper {
            hash = hash.to_ascii_uppercase();
        }
        if let Some((at, with)) = edit {
            let at = at % hash.len();
            match with {
                "drop" => { hash.remove(at); }
                "add" => hash.insert(at, 'a'),
                c => hash.replace_range(at..at + 1, c),
            }
        }
        let entry = format!("{identity}:{hash}:{scopes}");
        let parsed = tollgate_auth::policy::Config::parse(&vars(&[("api_keys", &entry)]));
        let id = identity.trim();
        let valid = !id.is_empty()
            && !id.contains([',', ':'])
            && id.bytes().all(|b| b.is_ascii_graphic())
            && is_sha256_hex(hash.trim());
        prop_assume!(!identity.contains(',')); // a comma starts another entry
        match parsed {
            Ok(c) => {
                prop_assert!(valid, "accepted {:?}", entry);
                let own = hash.eq_ignore_ascii_case(&hex_digest(&key));
                prop_assert_eq!(c.check_api_key(&key).is_some(), own);
                if other != key {
                    prop_assert_eq!(c.check_api_key(&other).is_some(), hash.eq_ignore_ascii_case(&hex_digest(&other)));
                }
                if own {
                    prop_assert_eq!(&c.check_api_key(&key).unwrap().identity, id);
                }
            }
            Err(e) => {
                prop_assert!(!valid, "refused {:?}: {}", entry, e);
                prop_assert!(e.starts_with("variable `api_keys`"), "{}", e);
                prop_assert!(!e.contains(hash.trim()), "the error echoes the hash: {}", e);
            }
        }
    }

    /// Presented keys and Authorization values of any shape: no panic,
    /// bounded memory, and never a match for a key that is not it.
    #[test]
    fn presented_credentials_never_panic(
        raw in untrusted(&["Bearer", "bearer", " ", "ApiKey", "\t", "eyJ", ".", "key", ":", "\u{0}"]),
    ) {
        let c = tollgate_auth::policy::Config::parse(&vars(&[("api_keys", &format!("svc:{}", hex_digest("the-key")))])).unwrap();
        let found = within_bound(&raw, || c.check_api_key(&raw).is_some());
        prop_assert_eq!(found, raw == "the-key");
        within_bound(&raw, || tollgate_auth::policy::bearer(&raw).map(str::len));
    }

    /// The host's and the SDK's request-id rules are the same rule:
    /// 1 to 128 of `[A-Za-z0-9._:-]`.
    #[test]
    fn request_id_rules_agree(raw in prop_oneof![
        "[A-Za-z0-9._:-]{0,130}",
        untrusted(&["a", "-", ".", "_", ":", " ", "\n", "/", "\u{e9}", "0123456789abcdef"]),
    ]) {
        let expected = (1..=128).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        prop_assert_eq!(within_bound(&raw, || tollgate::ingress::valid_request_id(&raw)), expected);
        prop_assert_eq!(tollgate_sdk::request::valid_request_id(&raw), expected);
    }

    /// A client that is not a trusted proxy cannot choose the address the
    /// gates see: whatever X-Forwarded-For it sends, the client address is
    /// its own. Behind trusted proxies, the address is the rightmost one
    /// that is not a trusted proxy.
    #[test]
    fn x_forwarded_for_cannot_be_spoofed(
        claimed in proptest::collection::vec(ip(), 0..5),
        proxies in proptest::collection::vec(proxy(), 0..3),
        client in ip(),
        peer_is_proxy in any::<bool>(),
        peer in proxy(),
    ) {
        let mut h = HeaderMap::new();
        let mut chain: Vec<String> = claimed.iter().map(IpAddr::to_string).collect();
        let peer = if peer_is_proxy {
            chain.push(client.to_string());
            chain.extend(proxies.iter().map(IpAddr::to_string));
            peer
        } else {
            client
        };
        if !chain.is_empty() {
            h.insert("x-forwarded-for", HeaderValue::from_str(&chain.join(", ")).unwrap());
        }
        let returned = tollgate::ingress::forwarded::apply(&mut h, peer, "http", "gw.test", &trusted());
        let seen = tollgate::ingress::forwarded::client_ip(&h, &trusted());
        prop_assert_eq!(Some(returned), seen);
        prop_assert_eq!(
            h.get(tollgate::ingress::forwarded::CLIENT_IP).and_then(|v| v.to_str().ok()),
            Some(&*returned.to_string())
        );
        // The independent reading: a peer that is not a trusted proxy is
        // the client; behind one, walk the chain plus the peer from the
        // right to the first address that is not a trusted proxy (or, when
        // all are, the leftmost).
        let mut all: Vec<IpAddr> = Vec::new();
        if in_trusted(peer) {
            all.extend(chain.iter().map(|a| a.parse::<IpAddr>().unwrap()));
        }
        all.push(peer);
        let expected = all.iter().rev().find(|a| !in_trusted(**a)).or(all.first()).copied();
        prop_assert_eq!(seen, expected, "{:?}", h);
        if !in_trusted(peer) {
            prop_assert_eq!(seen, Some(peer));
        } else if peer_is_proxy && !in_trusted(client) {
            prop_assert_eq!(seen, Some(client));
        }
    }

    /// X-Forwarded-* of any shape from a trusted proxy: no panic, bounded
    /// memory, and a client address that was in the header or is the peer.
    #[test]
    fn forwarding_headers_of_any_shape_never_panic(
        xff in untrusted(XFF_WORDS),
        proto in untrusted(&["https", "http", ",", " ", "\u{7f}"]),
        peer in proxy(),
        spin in untrusted(XFF_WORDS),
    ) {
        let mut h = HeaderMap::new();
        for (name, value) in [("x-forwarded-for", &xff), ("x-forwarded-proto", &proto), ("x-forwarded-host", &proto)] {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.append(name, v);
            }
        }
        let seen = within_bound(&xff, || {
            tollgate::ingress::forwarded::apply(&mut h, peer, "http", "gw.test", &trusted());
            tollgate::ingress::forwarded::client_ip(&h, &trusted())
        });
        if let Some(ip) = seen {
            let listed = xff.split(',').any(|p| p.trim().parse::<IpAddr>() == Ok(ip));
            prop_assert!(ip == peer || listed, "{} from {:?}", ip, xff);
        }
        let mut s = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&spin) {
            s.insert("spin-client-addr", v);
        }
        within_bound(&spin, || tollgate_sdk::request::client_ip(&s));
    }

    /// Origin Set-Cookie values of any shape: no panic, bounded memory,
    /// and a rewritten cookie keeps its name and value.
    #[test]
    fn set_cookie_hardening_never_panics(
        raw in untrusted(&["sid", "=", "abc", ";", " ", "Secure", "HttpOnly", "SameSite", "=None", "=Strict", "=Lax", "Path=/", "Domain=", "\"", ","]),
    ) {
        let policy = tollgate_headers::cookies::CookiePolicy::parse(&vars(&[])).unwrap().unwrap();
        if let Some(out) = within_bound(&raw, || policy.harden(&raw)) {
            let head = |s: &str| s.split(';').next().unwrap_or("").trim().to_owned();
            prop_assert_eq!(head(&out), head(&raw));
        }
    }
}
