//! The plugin's decision logic, plain Rust: parse CIDR lists and decide
//! whether an address may pass. Unit-tested natively with `cargo test`.

use std::net::IpAddr;

use tollgate_sdk::config::Vars;

/// The variables this plugin reads.
pub const VARIABLES: &[&str] = &["allow", "deny"];

/// An address block, such as `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or(format!("`{s}` has a bad prefix length"))?,
        };
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => same_prefix(&n.octets(), &i.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(i)) => same_prefix(&n.octets(), &i.octets(), self.prefix),
            // An IPv4-mapped IPv6 client is judged as IPv4.
            (IpAddr::V4(_), IpAddr::V6(i)) => i
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(IpAddr::V4(v4))),
            _ => false,
        }
    }
}

fn same_prefix(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = (bits / 8) as usize;
    let rest = bits % 8;
    a[..full] == b[..full] && (rest == 0 || (a[full] ^ b[full]) >> (8 - rest) == 0)
}

/// The plugin's configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

impl Rules {
    pub fn parse(v: &Vars) -> Result<Rules, String> {
        let list = |name: &str| -> Result<Vec<Cidr>, String> {
            v.list(name, "")
                .iter()
                .map(|s| Cidr::parse(s).map_err(|e| format!("variable `{name}`: {e}")))
                .collect()
        };
        Ok(Rules {
            allow: list("allow")?,
            deny: list("deny")?,
        })
    }

    /// Deny entries win; with an allow list, only listed clients pass; an
    /// unknown client address passes only when there is no allow list.
    pub fn admits(&self, ip: Option<IpAddr>) -> bool {
        match ip {
            None => self.allow.is_empty(),
            Some(ip) => {
                !self.deny.iter().any(|c| c.contains(ip))
                    && (self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &str, deny: &str) -> Rules {
        Rules::parse(&Vars::from_pairs([("allow", allow), ("deny", deny)])).unwrap()
    }

    #[test]
    fn cidrs_match_by_prefix() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        let c = Cidr::parse("2001:db8::/33").unwrap();
        assert!(c.contains("2001:db8:7fff::1".parse().unwrap()));
        assert!(!c.contains("2001:db8:8000::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    #[test]
    fn deny_wins_and_allow_lists_are_exclusive() {
        let r = rules("127.0.0.0/8, 10.0.0.0/8", "10.6.6.6");
        assert!(r.admits(Some("127.0.0.1".parse().unwrap())));
        assert!(!r.admits(Some("10.6.6.6".parse().unwrap())));
        assert!(!r.admits(Some("192.0.2.1".parse().unwrap())));
        assert!(!r.admits(None));
        let open = rules("", "192.0.2.0/24");
        assert!(open.admits(None));
        assert!(!open.admits(Some("192.0.2.7".parse().unwrap())));
    }
}
