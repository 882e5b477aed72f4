//! The SSRF policy: whether a URL may be fetched. URLs are parsed with the
//! WHATWG parser (`url` crate), which is what browsers and most HTTP clients
//! do, so decimal, octal, hex and short IPv4 forms, case tricks and IDNA
//! spellings are normalised before anything is checked.
//!
//! With `strict_ip_literals` (the default) an address is also refused by
//! its *spelling*: an IPv4 host written other than as four dotted decimal
//! parts (`0x7f.1`, `010.010.010.010`, `2130706433`, `1.2.3.4.`), and any
//! IPv6 form that carries an IPv4 address (mapped, compatible, NAT64, 6to4,
//! Teredo). Parsers disagree on such forms, so the service that finally
//! fetches the URL may not go where this check looked. The spelling is
//! the URL's authority as written, compared against the WHATWG parser's
//! canonical serialisation of the address it found there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Why a URL was refused. Kept internal: clients only learn *which* input
/// was refused, never why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Unparseable,
    Scheme,
    Credentials,
    NoHost,
    BlockedAddress,
    /// An address spelled in a form other parsers read differently.
    AmbiguousAddress,
    BlockedHost,
    NotAllowlisted,
    Unresolvable,
}

/// Resolves a host name and port to addresses; `None` when it cannot.
pub type Resolve<'a> = &'a dyn Fn(&str, u16) -> Option<Vec<IpAddr>>;

/// DNS mode: a URL whose host name resolves to any blocked address (or to
/// nothing) is refused, so a public-looking name cannot point inside.
pub fn check_resolved(url: &Url, resolve: Resolve) -> Result<(), Reason> {
    let Some(Host::Domain(name)) = url.host() else {
        return Ok(()); // literal addresses were checked already
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs = resolve(name.trim_end_matches('.'), port).ok_or(Reason::Unresolvable)?;
    if addrs.is_empty() {
        return Err(Reason::Unresolvable);
    }
    addrs.into_iter().try_for_each(check_ip)
}

/// What may be fetched.
#[derive(Debug, Clone)]
pub struct Policy {
    pub schemes: Vec<String>,
    /// Exact hosts, or `.suffix` entries from `*.suffix` patterns.
    pub allowed_hosts: Vec<String>,
    /// Refuse addresses by spelling as well as by value (module docs).
    pub strict_ip_literals: bool,
}

/// Host names that lead to cloud metadata services or the local machine.
const BLOCKED_NAMES: &[&str] = &[
    "localhost",
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.internal",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.tencentyun.com",
    "metadata.packet.net",
    "metadata.platformequinix.com",
    "metadata.oraclecloud.com",
    "api.metadata.cloud.ibm.com",
    "metadata.azure.com",
    "kubernetes.default",
    "kubernetes.default.svc",
];

/// Suffixes of names that only resolve inside private networks.
const BLOCKED_SUFFIXES: &[&str] = &[
    ".localhost",
    ".local",
    ".localdomain",
    ".internal",
    ".intranet",
    ".lan",
    ".home.arpa",
    ".svc.cluster.local",
];

impl Policy {
    /// Checks `raw`; `Ok` carries the parsed URL.
    pub fn check(&self, raw: &str) -> Result<Url, Reason> {
        let url = Url::parse(raw.trim()).map_err(|_| Reason::Unparseable)?;
        if !self.schemes.iter().any(|s| s == url.scheme()) {
            return Err(Reason::Scheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Reason::Credentials);
        }
        match url.host().ok_or(Reason::NoHost)? {
            Host::Ipv4(ip) => {
                if self.strict_ip_literals && raw_host(raw.trim()) != Some(&ip.to_string()) {
                    return Err(Reason::AmbiguousAddress);
                }
                check_ip(IpAddr::V4(ip))?
            }
            Host::Ipv6(ip) => {
                if self.strict_ip_literals && embeds_v4(ip) {
                    return Err(Reason::AmbiguousAddress);
                }
                check_ip(IpAddr::V6(ip))?
            }
            Host::Domain(name) => {
                let name = name.trim_end_matches('.');
                if name.is_empty() {
                    return Err(Reason::NoHost);
                }
                // A name that still spells an address (e.g. after a trailing dot).
                if let Ok(ip) = name.parse::<IpAddr>() {
                    check_ip(ip)?;
                }
                if BLOCKED_NAMES.contains(&name)
                    || BLOCKED_SUFFIXES.iter().any(|s| name.ends_with(s))
                {
                    return Err(Reason::BlockedHost);
                }
            }
        }
        if !self.allowed_hosts.is_empty() {
            let host = url.host_str().unwrap_or("").trim_end_matches('.');
            let ok = self.allowed_hosts.iter().any(|a| {
                if a.starts_with('.') {
                    host.ends_with(a.as_str()) && host.len() > a.len()
                } else {
                    host == a
                }
            });
            if !ok {
                return Err(Reason::NotAllowlisted);
            }
        }
        Ok(url)
    }
}

/// The host as written in `input`: the authority after the scheme, without
/// userinfo and port. Only compared with the parser's canonical spelling
/// of an IPv4 host (which never holds `:`, `@`, `[` or a path character),
/// so any input this cannot read as the parser did ends up refused.
fn raw_host(input: &str) -> Option<&str> {
    let (_, rest) = input.split_once(':')?;
    let rest = rest.trim_start_matches(['/', '\\']);
    let authority = &rest[..rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(host_port.rsplit_once(':').map_or(host_port, |(h, _)| h))
}

/// Addresses in public space that reach a cloud platform's own services
/// from inside its VMs (everything else providers document sits in the
/// link-local, CGNAT, IETF or unique-local ranges refused below).
const PLATFORM_V4: &[[u8; 4]] = &[
    [168, 63, 129, 16], // Azure WireServer (platform DNS, health probes, agent)
];

/// Refuses every address that is not plainly public.
pub fn check_ip(ip: IpAddr) -> Result<(), Reason> {
    let blocked = match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    };
    if blocked {
        Err(Reason::BlockedAddress)
    } else {
        Ok(())
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn blocked_v4(ip: Ipv4Addr) -> bool {
    const NETS: &[([u8; 4], u32)] = &[
        ([0, 0, 0, 0], 8),       // "this network", unspecified
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // CGNAT (Alibaba metadata 100.100.100.200)
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local (AWS, GCP, Azure, DO metadata)
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments (Oracle 192.0.0.192)
        ([192, 0, 2, 0], 24),    // documentation
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation
        ([203, 0, 113, 0], 24),  // documentation
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, broadcast
    ];
    NETS.iter().any(|(n, p)| in_v4(ip, *n, *p)) || PLATFORM_V4.contains(&ip.octets())
}

fn blocked_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if ip.is_unspecified() || ip.is_loopback() {
        return true;
    }
    // Addresses that embed an IPv4 address are judged by it.
    if let Some(v4) = embedded_v4(ip) {
        return blocked_v4(v4);
    }
    let first = s[0];
    (first & 0xfe00) == 0xfc00          // unique local fc00::/7 (AWS fd00:ec2::254)
        || (first & 0xffc0) == 0xfe80   // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0   // site-local fec0::/10 (deprecated)
        || (first & 0xff00) == 0xff00   // multicast ff00::/8
        || (first == 0x2001 && s[1] == 0x0db8) // documentation
        || (first == 0x3fff && (s[1] & 0xf000) == 0) // documentation 3fff::/20 (RFC 9637)
        || (first == 0x2001 && s[1] == 0x0000) // Teredo: hides the real peer
        || (first == 0x2001 && s[1] == 0x0002 && s[2] == 0) // benchmarking 2001:2::/48
        || (first == 0x2001 && (s[1] & 0xfff0) == 0x0010) // ORCHID 2001:10::/28
        || first == 0x5f00                // SRv6 SIDs 5f00::/16 (RFC 9602)
        || (first == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard-only
}

/// Whether `ip` is one of the forms that carry an IPv4 address: those
/// [`embedded_v4`] reads, and Teredo `2001::/32` (whose client address is
/// stored obfuscated).
fn embeds_v4(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    embedded_v4(ip).is_some() || (s[0] == 0x2001 && s[1] == 0)
}

/// The IPv4 address inside IPv4-mapped, IPv4-compatible, NAT64 and 6to4
/// IPv6 addresses.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated)
    if s[..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || s[5] == 0) {
        return Some(tail);
    }
    // ::ffff:0:a.b.c.d (IPv4-translated)
    if s[..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0 {
        return Some(tail);
    }
    // NAT64 well-known prefix 64:ff9b::/96 and local-use 64:ff9b:1::/48
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0, 0, 0, 0] || s[2] == 1) {
        return Some(tail);
    }
    // 6to4 2002:AABB:CCDD::/48
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Judges addresses by value only, as `strict_ip_literals = false` does.
    fn policy() -> Policy {
        Policy {
            schemes: vec!["https".into()],
            allowed_hosts: vec![],
            strict_ip_literals: false,
        }
    }

    fn strict() -> Policy {
        Policy {
            strict_ip_literals: true,
            ..policy()
        }
    }

    fn refused(url: &str) -> Reason {
        policy().check(url).expect_err(url)
    }

    #[test]
    fn strict_mode_refuses_every_non_canonical_ipv4_spelling_even_of_public_addresses() {
        for u in [
            // one integer, hex, octal
            "https://134744072/",  // 8.8.8.8
            "https://0x08080808/", // 8.8.8.8
            "https://01002004010/",
            "https://2130706433/",
            "https://0x7f000001/",
            // hex, octal or zero-padded parts
            "https://0x8.0x8.0x8.0x8/",
            "https://010.010.010.010/", // 8.8.8.8 here, 10.10.10.10 elsewhere
            "https://0010.0.0.1/",      // zero-padded octal: 8.0.0.1
            "https://8.8.8.010/",
            "https://93.184.216.034/",
            // two- and three-part short forms
            "https://8.526344/",
            "https://8.8.2056/",
            "https://127.1/",
            "https://93.12097570/",
            "https://1.2.3/",
            // spellings only the WHATWG parser normalises
            "https://8.8.8.8./",
            "https://%38.8.8.8/",
            "https://\u{ff18}.8.8.8/", // fullwidth digit
            "https://8.8.8\t.8/",
        ] {
            assert_eq!(
                strict().check(u).unwrap_err(),
                Reason::AmbiguousAddress,
                "{u}"
            );
        }
    }

    #[test]
    fn strict_mode_refuses_ipv6_forms_that_carry_ipv4_whatever_the_address() {
        for u in [
            "https://[::ffff:8.8.8.8]/",                       // mapped
            "https://[::ffff:808:808]/",                       // mapped, hex
            "https://[::8.8.8.8]/",                            // compatible
            "https://[::ffff:0:8.8.8.8]/",                     // translated
            "https://[64:ff9b::8.8.8.8]/",                     // NAT64
            "https://[64:ff9b::808:808]/",                     // NAT64, hex
            "https://[64:ff9b:1::808:808]/",                   // NAT64 local-use
            "https://[2002:808:808::]/",                       // 6to4
            "https://[2002:5db8:d822::1]/",                    // 6to4 of 93.184.216.34
            "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", // Teredo
            "https://[2001::1]/",                              // Teredo
        ] {
            assert_eq!(
                strict().check(u).unwrap_err(),
                Reason::AmbiguousAddress,
                "{u}"
            );
        }
    }

    #[test]
    fn strict_mode_passes_canonical_public_addresses_and_names() {
        for ok in [
            "https://8.8.8.8/",
            "https://8.8.8.8:8443/x?y=1#z",
            "https://93.184.216.34",
            "https://[2606:4700:4700::1111]/",
            "https://example.com/",
            "https://api.github.com/repos",
            "https://1.example/",
        ] {
            assert!(strict().check(ok).is_ok(), "{ok} should pass");
        }
        // Internal canonical addresses are still refused by value.
        assert_eq!(
            strict().check("https://10.0.0.1/").unwrap_err(),
            Reason::BlockedAddress
        );
    }

    #[test]
    fn platform_addresses_in_public_space_are_refused() {
        for u in [
            "https://168.63.129.16/",
            "https://168.63.129.16:32526/vmSettings",
            "https://[::ffff:168.63.129.16]/",
        ] {
            assert_eq!(refused(u), Reason::BlockedAddress, "{u}");
        }
        assert!(policy().check("https://168.63.129.17/").is_ok());
    }

    #[test]
    fn public_urls_pass() {
        for ok in [
            "https://example.com/",
            "https://api.github.com/repos?x=1",
            "https://93.184.216.34/",
            "https://[2606:4700:4700::1111]/",
            "https://sub.example.co.uk:8443/path",
            "https://xn--bcher-kva.example/",
            "HTTPS://EXAMPLE.COM/",
            "https://8.8.8.8",
        ] {
            assert!(policy().check(ok).is_ok(), "{ok} should pass");
        }
    }

    #[test]
    fn schemes_and_credentials() {
        for u in [
            "http://example.com/",
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://example.com",
            "javascript:alert(1)",
            "data:text/plain,hi",
        ] {
            assert_eq!(refused(u), Reason::Scheme, "{u}");
        }
        assert_eq!(refused("https://user:pw@example.com/"), Reason::Credentials);
        assert_eq!(refused("https://user@example.com/"), Reason::Credentials);
        assert_eq!(refused("not a url"), Reason::Unparseable);
    }

    #[test]
    fn loopback_in_every_spelling() {
        for u in [
            "https://127.0.0.1/",
            "https://127.1/",
            "https://2130706433/",   // decimal
            "https://0x7f000001/",   // hex
            "https://0x7f.0.0.1/",   // hex octet
            "https://0177.0.0.1/",   // octal
            "https://017700000001/", // octal whole
            "https://127.000.000.001/",
            "https://[::1]/",
            "https://[0:0:0:0:0:0:0:1]/",
            "https://[::ffff:127.0.0.1]/",   // IPv4-mapped
            "https://[::ffff:7f00:1]/",      // mapped, hex
            "https://[::127.0.0.1]/",        // IPv4-compatible
            "https://[64:ff9b::127.0.0.1]/", // NAT64
            "https://[64:ff9b:1::7f00:1]/",  // NAT64 local-use
            "https://[2002:7f00:1::]/",      // 6to4
        ] {
            assert_eq!(refused(u), Reason::BlockedAddress, "{u}");
        }
    }

    #[test]
    fn private_and_special_ranges() {
        for u in [
            "https://10.0.0.1/",
            "https://172.16.5.4/",
            "https://172.31.255.255/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data/", // AWS/GCP/Azure/DO metadata
            "https://100.100.100.200/",                  // Alibaba metadata
            "https://192.0.0.192/",                      // Oracle metadata
            "https://100.64.0.1/",                       // CGNAT
            "https://0.0.0.0/",
            "https://0/",
            "https://224.0.0.1/",
            "https://255.255.255.255/",
            "https://[fd00:ec2::254]/", // AWS IPv6 metadata
            "https://[fc00::1]/",
            "https://[fe80::1]/",
            "https://[ff02::1]/",
            "https://[::]/",
            "https://[::ffff:a9fe:a9fe]/", // mapped 169.254.169.254
            "https://[::ffff:10.1.2.3]/",
            // Found by the SSRF property (tests/properties/tests/ssrf.rs):
            "https://[2001:2::1]/",   // benchmarking 2001:2::/48
            "https://[2001:1f::1]/",  // ORCHID 2001:10::/28
            "https://[3fff:fff::1]/", // documentation 3fff::/20
            "https://[5f00:1::1]/",   // SRv6 SIDs 5f00::/16
        ] {
            assert_eq!(refused(u), Reason::BlockedAddress, "{u}");
        }
    }

    #[test]
    fn metadata_and_internal_names() {
        for u in [
            "https://localhost/",
            "https://LOCALHOST/",
            "https://localhost./",
            "https://LocalHost.:443/",
            "https://metadata.google.internal/computeMetadata/v1/",
            "https://METADATA.GOOGLE.INTERNAL./",
            "https://metadata/",
            "https://instance-data.ec2.internal/",
            "https://foo.localhost/",
            "https://printer.local/",
            "https://db.svc.cluster.local/",
            "https://\u{24db}ocalhost/", // ⓛocalhost: IDNA maps it to localhost
        ] {
            assert_eq!(refused(u), Reason::BlockedHost, "{u}");
        }
    }

    #[test]
    fn dns_mode_refuses_names_that_resolve_inside() {
        let resolve = |host: &str, _port: u16| -> Option<Vec<IpAddr>> {
            match host {
                "rebind.example" => Some(vec![
                    "93.184.216.34".parse().unwrap(),
                    "10.0.0.1".parse().unwrap(),
                ]),
                "public.example" => Some(vec!["93.184.216.34".parse().unwrap()]),
                "v6.example" => Some(vec!["::ffff:127.0.0.1".parse().unwrap()]),
                _ => None,
            }
        };
        let ok = |u: &str| check_resolved(&policy().check(u).unwrap(), &resolve);
        assert_eq!(ok("https://public.example/"), Ok(()));
        assert_eq!(ok("https://rebind.example/"), Err(Reason::BlockedAddress));
        assert_eq!(ok("https://v6.example./"), Err(Reason::BlockedAddress));
        assert_eq!(ok("https://nxdomain.example/"), Err(Reason::Unresolvable));
        assert_eq!(ok("https://8.8.8.8/"), Ok(()));
    }

    #[test]
    fn trailing_dots_do_not_hide_addresses() {
        assert_eq!(refused("https://127.0.0.1./"), Reason::BlockedAddress);
    }

    #[test]
    fn allowlist_is_exact_or_subdomain() {
        let p = Policy {
            schemes: vec!["https".into()],
            allowed_hosts: vec!["api.partner.com".into(), ".cdn.example".into()],
            strict_ip_literals: true,
        };
        assert!(p.check("https://api.partner.com/x").is_ok());
        assert!(p.check("https://API.partner.com./x").is_ok());
        assert!(p.check("https://img.cdn.example/x").is_ok());
        assert_eq!(
            p.check("https://cdn.example/").unwrap_err(),
            Reason::NotAllowlisted
        );
        assert_eq!(
            p.check("https://api.partner.com.evil.net/").unwrap_err(),
            Reason::NotAllowlisted
        );
    }
}
