//! Checks on the arguments of SET (v2 SET and v3/v4 RPCBPROC_SET) before anything is stored.
//!
//! Why: a registered uaddr is echoed to every caller of GETADDR, GETVERSADDR, GETADDRLIST and
//! DUMP. Without these checks a local user registers kilobytes of junk once and every remote
//! host gets a large UDP reply for a small request (reflection), and the table grows with
//! strings no client can use. rpcbind itself stores whatever it is given; we refuse (SET answers
//! FALSE) what no real server registers: an unknown netid, a uaddr that does not parse for its
//! netid, or over-long strings.

use std::net::SocketAddr;

use crate::uaddr::parse_uaddr;

/// Longest netid accepted (libtirpc's netids are at most 5 bytes; `NC_NETID` names are short).
pub const MAX_NETID_LEN: usize = 32;
/// Longest uaddr accepted for an IP netid; the longest valid one (IPv6 with an embedded IPv4
/// address and a port) is well under it.
pub const MAX_IP_UADDR_LEN: usize = 128;
/// Longest uaddr accepted for a local netid: `sizeof(sun_path)`.
pub const MAX_LOCAL_UADDR_LEN: usize = 108;
/// Longest owner argument accepted (`LOGIN_NAME_MAX` - 1). The owner argument is not stored
/// (the owner comes from the caller's credentials); the cap only refuses absurd requests.
pub const MAX_OWNER_LEN: usize = 255;

/// Why SET arguments were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidSet {
    /// The netid is not one of udp, tcp, udp6, tcp6, local, unix (or is longer than
    /// [`MAX_NETID_LEN`]).
    UnknownNetid,
    /// The uaddr is longer than its netid allows.
    UaddrTooLong,
    /// The uaddr does not parse for its netid (wrong address family, bad port fields, empty or
    /// control characters in a local path).
    BadUaddr,
    /// The owner argument is longer than [`MAX_OWNER_LEN`].
    OwnerTooLong,
}

/// What kind of address a netid carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `h1.h2.h3.h4.p1.p2`.
    Ipv4,
    /// `x:x::x.p1.p2`.
    Ipv6,
    /// An AF_LOCAL path (or abstract name).
    Local,
}

/// The netids a registration may use: what libtirpc's `/etc/netconfig` lists with an address a
/// client can connect to (`rawip` has no port and is left out). Exact match, as
/// `getnetconfigent` compares.
fn kind(netid: &str) -> Option<Kind> {
    match netid {
        "udp" | "tcp" => Some(Kind::Ipv4),
        "udp6" | "tcp6" => Some(Kind::Ipv6),
        "local" | "unix" => Some(Kind::Local),
        _ => None,
    }
}

/// Checks SET arguments as a careful rpcbind would; `Ok` means they may be stored.
pub fn check_set(netid: &str, uaddr: &str, owner: &str) -> Result<(), InvalidSet> {
    if owner.len() > MAX_OWNER_LEN {
        return Err(InvalidSet::OwnerTooLong);
    }
    if netid.len() > MAX_NETID_LEN {
        return Err(InvalidSet::UnknownNetid);
    }
    let kind = kind(netid).ok_or(InvalidSet::UnknownNetid)?;
    match kind {
        Kind::Ipv4 | Kind::Ipv6 => {
            if uaddr.len() > MAX_IP_UADDR_LEN {
                return Err(InvalidSet::UaddrTooLong);
            }
            match (kind, parse_uaddr(uaddr)) {
                (Kind::Ipv4, Some(SocketAddr::V4(_))) | (Kind::Ipv6, Some(SocketAddr::V6(_))) => {
                    Ok(())
                }
                _ => Err(InvalidSet::BadUaddr),
            }
        }
        Kind::Local => {
            if uaddr.len() > MAX_LOCAL_UADDR_LEN {
                return Err(InvalidSet::UaddrTooLong);
            }
            if uaddr.is_empty() || uaddr.chars().any(char::is_control) {
                return Err(InvalidSet::BadUaddr);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_what_real_servers_register() {
        for (netid, uaddr) in [
            ("udp", "0.0.0.0.8.1"),
            ("tcp", "10.1.2.3.3.235"),
            ("udp6", "::.8.1"),
            ("tcp6", "fe80::1:2.0.111"),
            ("tcp6", "::ffff:10.0.0.1.0.111"),
            (
                "tcp6",
                "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255.255.255",
            ),
            ("local", "/run/rpcbind.sock"),
            ("unix", "/var/run/gssproxy.sock"),
        ] {
            assert_eq!(
                check_set(netid, uaddr, "superuser"),
                Ok(()),
                "{netid} {uaddr}"
            );
        }
        assert_eq!(check_set("local", &"a".repeat(108), "0"), Ok(()));
        assert_eq!(check_set("udp", "1.2.3.4.0.1", &"o".repeat(255)), Ok(()));
    }

    #[test]
    fn refuses_junk() {
        use InvalidSet::*;
        let cases = [
            ("udp7", "0.0.0.0.8.1", UnknownNetid),
            ("UDP", "0.0.0.0.8.1", UnknownNetid),
            ("rawip", "0.0.0.0.8.1", UnknownNetid),
            ("", "0.0.0.0.8.1", UnknownNetid),
            ("udp", "::.8.1", BadUaddr),
            ("udp6", "0.0.0.0.8.1", BadUaddr),
            ("tcp", "1.2.3.4.256.1", BadUaddr),
            ("tcp", "1.2.3.4", BadUaddr),
            ("tcp", "", BadUaddr),
            ("tcp", "fe80::1%eth0.0.111", BadUaddr),
            ("local", "", BadUaddr),
            ("local", "/run/x\n", BadUaddr),
        ];
        for (netid, uaddr, why) in cases {
            assert_eq!(check_set(netid, uaddr, ""), Err(why), "{netid:?} {uaddr:?}");
        }
        assert_eq!(check_set(&"u".repeat(33), "", ""), Err(UnknownNetid));
        let long_ip = format!("{}.0.111", "0".repeat(200));
        assert_eq!(check_set("tcp", &long_ip, ""), Err(UaddrTooLong));
        assert_eq!(check_set("local", &"a".repeat(109), ""), Err(UaddrTooLong));
        assert_eq!(
            check_set("udp", "1.2.3.4.0.1", &"o".repeat(256)),
            Err(OwnerTooLong)
        );
    }

    proptest! {
        #[test]
        fn accepted_strings_are_short(netid in ".{0,40}", uaddr in ".{0,300}") {
            if check_set(&netid, &uaddr, "").is_ok() {
                prop_assert!(netid.len() <= MAX_NETID_LEN);
                prop_assert!(uaddr.len() <= MAX_LOCAL_UADDR_LEN.max(MAX_IP_UADDR_LEN));
            }
        }
    }
}
