//! IPv4 addresses as a dual-stack socket reports them (`::ffff:a.b.c.d`), turned back into
//! IPv4: every receive path unmaps, so services never see a v4-mapped address and treat an
//! IPv4 peer alike on a `0.0.0.0` socket and on a `[::]` socket serving both families (the
//! portmapper's netids, loopback checks, rate-limit keys and allow lists all depend on it).

use std::net::{IpAddr, SocketAddr};

/// `ip` itself, or the IPv4 address it maps.
pub(crate) fn unmap_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// `addr` itself, or the IPv4 socket address it maps (same port).
pub(crate) fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_become_ipv4_and_others_stay() {
        let sa = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert_eq!(unmap(sa("[::ffff:127.0.0.1]:111")), sa("127.0.0.1:111"));
        assert_eq!(unmap(sa("[::1]:111")), sa("[::1]:111"));
        assert_eq!(unmap(sa("10.0.0.1:5")), sa("10.0.0.1:5"));
        assert_eq!(
            unmap_ip("::ffff:10.1.2.3".parse().expect("ip")),
            "10.1.2.3".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            unmap_ip("fe80::1".parse().expect("ip")),
            "fe80::1".parse::<IpAddr>().expect("ip")
        );
    }
}
