//! Per-namespace access control: which client networks may get time.
//!
//! Rule (chrony's `allow`/`deny` model, simplified): the most specific
//! matching network wins; if an allow and a deny entry are equally specific,
//! deny wins. An address matching no entry is allowed when the allow list is
//! empty and denied otherwise, so `allow = ["10.0.0.0/8"]` alone means "only
//! 10/8" and `deny = ["10.1.0.0/16"]` alone means "everyone except 10.1/16".
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, seen on dual-stack sockets)
//! are matched as the IPv4 address they carry.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::vec::Vec;
use core::fmt;
use core::net::IpAddr;
use core::str::FromStr;

use crate::error::ParseNetError;

/// An IP network in CIDR form, e.g. `10.0.0.0/8` or `::1/128`.
///
/// Host bits are cleared on construction so that equal networks compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Builds a network, clearing host bits.
    ///
    /// # Errors
    /// [`ParseNetError::PrefixTooLong`] when `prefix` exceeds the address width.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, ParseNetError> {
        if prefix > width(addr) {
            return Err(ParseNetError::PrefixTooLong {
                input: format!("{addr}/{prefix}"),
                prefix,
            });
        }
        Ok(Self {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// The network address (host bits zero).
    #[must_use]
    pub const fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    #[must_use]
    pub const fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this network. IPv4 networks match IPv4-mapped
    /// IPv6 addresses too.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = ParseNetError;

    /// Parses `ADDR/PREFIX`, or a bare address meaning a single host.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| ParseNetError::Address(s.to_owned()))?;
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .map_err(|_| ParseNetError::Prefix(s.to_owned()))?,
            None => width(addr),
        };
        if prefix > width(addr) {
            return Err(ParseNetError::PrefixTooLong {
                input: s.to_owned(),
                prefix,
            });
        }
        Self::new(addr, prefix)
    }
}

/// Maps `::ffff:a.b.c.d` to `a.b.c.d`; other addresses are unchanged.
///
/// Used wherever client addresses are compared or keyed, so a dual-stack
/// socket sees the same rules and rate-limit buckets as an IPv4 one.
#[must_use]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

const fn width(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Clears all but the first `prefix` bits (callers ensure prefix ≤ width).
pub(crate) fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// The allow and deny lists of one namespace, evaluated as described in the
/// module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl AccessList {
    /// Builds the lists; empty lists allow everyone.
    #[must_use]
    pub const fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        Self { allow, deny }
    }

    /// Whether `ip` may be served.
    #[must_use]
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        let best = |list: &[IpNet]| {
            list.iter()
                .filter(|n| n.contains(ip))
                .map(|n| n.prefix)
                .max()
        };
        let allow = best(&self.allow);
        match (allow, best(&self.deny)) {
            (_, Some(d)) if allow.is_none_or(|a| d >= a) => false,
            (Some(_), _) => true,
            (None, _) => self.allow.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse() {
        assert_eq!(net("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("::1/128").to_string(), "::1/128");
        assert_eq!(net("192.0.2.7").prefix(), 32);
        assert_eq!(net("2001:db8::/32").prefix(), 32);
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert!(matches!(
            "10.0.0.0/33".parse::<IpNet>(),
            Err(ParseNetError::PrefixTooLong { .. })
        ));
        assert!(matches!(
            "::/129".parse::<IpNet>(),
            Err(ParseNetError::PrefixTooLong { .. })
        ));
        assert!(matches!(
            "10.0.0/8".parse::<IpNet>(),
            Err(ParseNetError::Address(_))
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<IpNet>(),
            Err(ParseNetError::Prefix(_))
        ));
        assert!(matches!(
            "".parse::<IpNet>(),
            Err(ParseNetError::Address(_))
        ));
    }

    #[test]
    fn contains() {
        assert!(net("10.0.0.0/8").contains(ip("10.255.0.1")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("10.0.0.0/8").contains(ip("::ffff:10.0.0.1")));
        assert!(!net("::/0").contains(ip("10.0.0.1")));
        assert!(net("0.0.0.0/0").contains(ip("1.2.3.4")));
        assert!(net("fd00::/8").contains(ip("fd12::1")));
    }

    #[test]
    fn empty_allows_all() {
        assert!(AccessList::default().is_allowed(ip("203.0.113.9")));
    }

    #[test]
    fn allow_list_restricts() {
        let acl = AccessList::new(vec![net("10.0.0.0/8")], vec![]);
        assert!(acl.is_allowed(ip("10.0.0.1")));
        assert!(!acl.is_allowed(ip("192.168.0.1")));
    }

    #[test]
    fn deny_only() {
        let acl = AccessList::new(vec![], vec![net("10.1.0.0/16")]);
        assert!(!acl.is_allowed(ip("10.1.0.1")));
        assert!(acl.is_allowed(ip("10.2.0.1")));
    }

    #[test]
    fn most_specific_wins_and_ties_deny() {
        let acl = AccessList::new(
            vec![net("10.0.0.0/8"), net("10.1.2.0/24"), net("192.0.2.0/24")],
            vec![net("10.1.0.0/16"), net("192.0.2.0/24")],
        );
        assert!(acl.is_allowed(ip("10.2.0.1")));
        assert!(!acl.is_allowed(ip("10.1.0.1")));
        assert!(acl.is_allowed(ip("10.1.2.3")));
        assert!(!acl.is_allowed(ip("192.0.2.1")));
        assert!(!acl.is_allowed(ip("172.16.0.1")));
    }
}
