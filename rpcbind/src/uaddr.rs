//! Universal addresses (RFC 1833 §2.2, libtirpc `rpc_generic.c`): parse, format, merge with the
//! local address, and convert to/from raw `struct sockaddr` bytes (taddr) for UADDR2TADDR and
//! TADDR2UADDR.
//!
//! Why its own module: address text is attacker-supplied and every conversion must be total.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Linux `AF_LOCAL`.
const AF_LOCAL: u16 = 1;
/// Linux `AF_INET`.
const AF_INET: u16 = 2;
/// Linux `AF_INET6`.
const AF_INET6: u16 = 10;
/// `sizeof(struct sockaddr_in)`.
const SIN_LEN: usize = 16;
/// `sizeof(struct sockaddr_in6)`.
const SIN6_LEN: usize = 28;
/// `sizeof(sun_path)`.
const SUN_PATH_MAX: usize = 108;

/// Formats an IP socket address as a universal address: `h1.h2.h3.h4.p1.p2` or `v6addr.p1.p2`.
pub fn format_uaddr(addr: SocketAddr) -> String {
    let p = addr.port();
    format!("{}.{}.{}", addr.ip(), p >> 8, p & 0xff)
}

/// Parses an IP universal address; `None` for anything else (local paths, junk).
pub fn parse_uaddr(uaddr: &str) -> Option<SocketAddr> {
    let (rest, lo) = uaddr.rsplit_once('.')?;
    let (host, hi) = rest.rsplit_once('.')?;
    let lo: u8 = parse_octet(lo)?;
    let hi: u8 = parse_octet(hi)?;
    let ip: IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(ip, u16::from(hi) << 8 | u16::from(lo)))
}

/// A wildcard service address becomes the loopback address of its family. Why: a service
/// registered as `0.0.0.0.p.p` listens on every address of the namespace, and the portmapper
/// reaches it (forwarded calls, liveness probes) over loopback, as rpcbind does.
pub(crate) fn loopback_if_wildcard(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), a.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), a.port())
        }
        _ => a,
    }
}

/// Parses a decimal 0..=255 without sign or whitespace.
fn parse_octet(s: &str) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The port of a universal address, as rpcbind's `uaddr2port` reads it (last two fields).
pub(crate) fn uaddr_port(uaddr: &str) -> Option<u16> {
    let (rest, lo) = uaddr.rsplit_once('.')?;
    let (_, hi) = rest.rsplit_once('.')?;
    Some(u16::from(parse_octet(hi)?) << 8 | u16::from(parse_octet(lo)?))
}

/// The address to tell a caller for a registration: a wildcard registration ("0.0.0.0.p1.p2",
/// "::.p1.p2") gets the local address the request arrived on, with the registered port; anything
/// else is returned as registered.
///
/// rpcbind's `addrmerge` picks the interface on the caller's network; inside a namespace the local
/// address the request hit is that interface's address, and it is the one the caller can reach.
pub(crate) fn merge(registered: &str, local: Option<SocketAddr>) -> String {
    let (Some(reg), Some(local)) = (parse_uaddr(registered), local) else {
        return registered.to_owned();
    };
    if !reg.ip().is_unspecified() || local.ip().is_unspecified() {
        return registered.to_owned();
    }
    let ip = match (reg.ip(), local.ip()) {
        (IpAddr::V4(_), IpAddr::V4(l)) => IpAddr::V4(l),
        (IpAddr::V6(_), IpAddr::V6(l)) => IpAddr::V6(l),
        (IpAddr::V4(_), IpAddr::V6(l)) => match l.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => return registered.to_owned(),
        },
        (IpAddr::V6(_), IpAddr::V4(l)) => IpAddr::V6(l.to_ipv6_mapped()),
    };
    format_uaddr(SocketAddr::new(ip, reg.port()))
}

/// Address family of a transport, from its netconfig entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// "inet".
    Inet,
    /// "inet6".
    Inet6,
    /// "loopback" (AF_LOCAL).
    Loopback,
}

/// The netconfig facts rpcbind reports for a netid: (semantics, protofmly, proto).
pub(crate) fn netconfig(netid: &str) -> Option<(u32, Family, &'static str)> {
    const CLTS: u32 = 1;
    const COTS_ORD: u32 = 3;
    match netid.to_ascii_lowercase().as_str() {
        "udp" => Some((CLTS, Family::Inet, "udp")),
        "tcp" => Some((COTS_ORD, Family::Inet, "tcp")),
        "udp6" => Some((CLTS, Family::Inet6, "udp")),
        "tcp6" => Some((COTS_ORD, Family::Inet6, "tcp")),
        "local" | "unix" => Some((COTS_ORD, Family::Loopback, "-")),
        _ => None,
    }
}

impl Family {
    /// The netconfig `nc_protofmly` string.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Inet => "inet",
            Self::Inet6 => "inet6",
            Self::Loopback => "loopback",
        }
    }
}

/// UADDR2TADDR: universal address to `struct sockaddr` bytes for the transport's family, as
/// libtirpc `__rpc_uaddr2taddr_af` builds them (family in host order, little-endian on the
/// platforms we target; port and address in network order). `None` → the empty netbuf reply.
pub(crate) fn uaddr_to_taddr(family: Family, uaddr: &str) -> Option<Vec<u8>> {
    match family {
        Family::Inet => {
            let SocketAddr::V4(a) = parse_uaddr(uaddr)? else {
                return None;
            };
            let mut b = vec![0u8; SIN_LEN];
            b[0..2].copy_from_slice(&AF_INET.to_le_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.ip().octets());
            Some(b)
        }
        Family::Inet6 => {
            let SocketAddr::V6(a) = parse_uaddr(uaddr)? else {
                return None;
            };
            let mut b = vec![0u8; SIN6_LEN];
            b[0..2].copy_from_slice(&AF_INET6.to_le_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[8..24].copy_from_slice(&a.ip().octets());
            Some(b)
        }
        Family::Loopback => {
            if !uaddr.starts_with('/') || uaddr.len() >= SUN_PATH_MAX {
                return None;
            }
            let mut b = AF_LOCAL.to_le_bytes().to_vec();
            b.extend_from_slice(uaddr.as_bytes());
            Some(b)
        }
    }
}

/// TADDR2UADDR: `struct sockaddr` bytes to a universal address for the transport's family, as
/// libtirpc `__rpc_taddr2uaddr_af` reads them (the family field is not checked, only the length).
/// `None` → the empty string reply.
pub(crate) fn taddr_to_uaddr(family: Family, taddr: &[u8]) -> Option<String> {
    match family {
        Family::Inet => {
            let b = taddr.get(..SIN_LEN)?;
            let port = u16::from_be_bytes([b[2], b[3]]);
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Some(format_uaddr(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        Family::Inet6 => {
            let b = taddr.get(..SIN6_LEN)?;
            let port = u16::from_be_bytes([b[2], b[3]]);
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[8..24]);
            Some(format_uaddr(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(o)),
                port,
            )))
        }
        Family::Loopback => {
            if taddr.is_empty() {
                return None;
            }
            let path = taddr.get(2..)?;
            let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
            Some(String::from_utf8_lossy(&path[..end]).into_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("test addr")
    }

    #[test]
    fn formats() {
        assert_eq!(format_uaddr(sa("10.0.0.5:2049")), "10.0.0.5.8.1");
        assert_eq!(format_uaddr(sa("[::1]:111")), "::1.0.111");
        assert_eq!(parse_uaddr("0.0.0.0.8.1"), Some(sa("0.0.0.0:2049")));
        assert_eq!(parse_uaddr("::.0.111"), Some(sa("[::]:111")));
        assert_eq!(parse_uaddr("/run/rpcbind.sock"), None);
        assert_eq!(parse_uaddr("1.2.3.4.256.1"), None);
        assert_eq!(parse_uaddr("1.2.3.4.+1.1"), None);
        assert_eq!(uaddr_port("0.0.0.0.3.235"), Some(1003));
    }

    #[test]
    fn merges_wildcards_only() {
        let l4 = Some(sa("10.0.0.5:111"));
        assert_eq!(merge("0.0.0.0.8.1", l4), "10.0.0.5.8.1");
        assert_eq!(merge("127.0.0.1.8.1", l4), "127.0.0.1.8.1");
        assert_eq!(merge("0.0.0.0.8.1", None), "0.0.0.0.8.1");
        assert_eq!(merge("::.8.1", Some(sa("[fd00::5]:111"))), "fd00::5.8.1");
        assert_eq!(
            merge("0.0.0.0.8.1", Some(sa("[::ffff:10.0.0.5]:111"))),
            "10.0.0.5.8.1"
        );
        assert_eq!(merge("0.0.0.0.8.1", Some(sa("0.0.0.0:111"))), "0.0.0.0.8.1");
        assert_eq!(merge("/run/x", l4), "/run/x");
    }

    #[test]
    fn taddr_known_bytes() {
        let t = uaddr_to_taddr(Family::Inet, "127.0.0.1.0.111").expect("v4");
        assert_eq!(t, [2, 0, 0, 111, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(uaddr_to_taddr(Family::Inet, "::1.0.111"), None);
        assert_eq!(taddr_to_uaddr(Family::Inet, &t[..15]), None);
        let l = uaddr_to_taddr(Family::Loopback, "/run/rpcbind.sock").expect("local");
        assert_eq!(
            taddr_to_uaddr(Family::Loopback, &l).as_deref(),
            Some("/run/rpcbind.sock")
        );
    }

    proptest! {
        #[test]
        fn uaddr_roundtrip(ip: IpAddr, port: u16) {
            let a = SocketAddr::new(ip, port);
            prop_assert_eq!(parse_uaddr(&format_uaddr(a)), Some(a));
        }

        #[test]
        fn taddr_roundtrip_v4(ip: Ipv4Addr, port: u16) {
            let u = format_uaddr(SocketAddr::new(IpAddr::V4(ip), port));
            let t = uaddr_to_taddr(Family::Inet, &u);
            prop_assert!(t.is_some());
            prop_assert_eq!(taddr_to_uaddr(Family::Inet, &t.unwrap_or_default()), Some(u));
        }

        #[test]
        fn taddr_roundtrip_v6(ip: Ipv6Addr, port: u16) {
            let u = format_uaddr(SocketAddr::new(IpAddr::V6(ip), port));
            let t = uaddr_to_taddr(Family::Inet6, &u);
            prop_assert!(t.is_some());
            prop_assert_eq!(taddr_to_uaddr(Family::Inet6, &t.unwrap_or_default()), Some(u));
        }

        #[test]
        fn junk_never_panics(s in ".{0,40}", b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_uaddr(&s);
            let _ = uaddr_port(&s);
            let _ = merge(&s, Some(SocketAddr::from(([10, 0, 0, 1], 111))));
            for f in [Family::Inet, Family::Inet6, Family::Loopback] {
                let _ = uaddr_to_taddr(f, &s);
                let _ = taddr_to_uaddr(f, &b);
            }
        }
    }
}
