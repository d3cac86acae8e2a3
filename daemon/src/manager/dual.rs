//! One dual-stack socket for a `0.0.0.0` and a `[::]` listener.
//!
//! A service listening on both wildcards of one port (the portmapper's and NTP's default) needs
//! two sockets per transport when each family has its own, one when a `[::]` socket with
//! `IPV6_V6ONLY` off serves IPv4 too: the fd per namespace that decides how many namespaces
//! one daemon can hold under its fd limit. Services that allow it ([`NsService::dual_stack`])
//! get the pair merged into one spec here. If the merged socket cannot be bound (the port is
//! taken in one family, IPv6 is off in the kernel), the pair is split back into the two
//! listeners of old for that service instance, so partial service and its error reports stay
//! what they were.
//!
//! [`NsService::dual_stack`]: crate::serve::NsService::dual_stack

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::serve::ListenerSpec;

/// The `0.0.0.0` and the `[::]` spec a dual-stack spec stands for; `None` for any other spec.
pub(super) fn halves(spec: &ListenerSpec) -> Option<[ListenerSpec; 2]> {
    let v4 = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let v6 = |port| SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    match spec {
        ListenerSpec::Udp {
            addr,
            rx_timestamps,
            dual_stack: true,
        } => Some(
            [v4(addr.port()), v6(addr.port())].map(|addr| ListenerSpec::Udp {
                addr,
                rx_timestamps: *rx_timestamps,
                dual_stack: false,
            }),
        ),
        ListenerSpec::Tcp {
            addr,
            dual_stack: true,
        } => Some(
            [v4(addr.port()), v6(addr.port())].map(|addr| ListenerSpec::Tcp {
                addr,
                dual_stack: false,
            }),
        ),
        _ => None,
    }
}

/// The dual-stack spec that would stand for `spec` and its other-family twin, when `spec` is
/// a wildcard UDP or TCP listener.
fn merged(spec: &ListenerSpec) -> Option<ListenerSpec> {
    let v6 = |port| SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    match spec {
        ListenerSpec::Udp {
            addr,
            rx_timestamps,
            dual_stack: false,
        } if addr.ip().is_unspecified() => Some(ListenerSpec::Udp {
            addr: v6(addr.port()),
            rx_timestamps: *rx_timestamps,
            dual_stack: true,
        }),
        ListenerSpec::Tcp {
            addr,
            dual_stack: false,
        } if addr.ip().is_unspecified() => Some(ListenerSpec::Tcp {
            addr: v6(addr.port()),
            dual_stack: true,
        }),
        _ => None,
    }
}

/// `specs` with every `0.0.0.0` + `[::]` pair of one transport, port and options replaced by
/// one dual-stack spec, except pairs in `split` (their dual socket failed to bind before).
pub(super) fn merge(specs: Vec<ListenerSpec>, split: &BTreeSet<ListenerSpec>) -> Vec<ListenerSpec> {
    let set: BTreeSet<&ListenerSpec> = specs.iter().collect();
    let mut out = Vec::with_capacity(specs.len());
    for spec in &specs {
        let dual = merged(spec).filter(|d| {
            !split.contains(d)
                && halves(d).is_some_and(|[a, b]| set.contains(&a) && set.contains(&b))
        });
        match dual {
            Some(d) => {
                if !out.contains(&d) {
                    out.push(d);
                }
            }
            None => out.push(spec.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(a: &str) -> ListenerSpec {
        ListenerSpec::Udp {
            addr: a.parse().expect("addr"),
            rx_timestamps: false,
            dual_stack: false,
        }
    }

    fn tcp(a: &str) -> ListenerSpec {
        ListenerSpec::Tcp {
            addr: a.parse().expect("addr"),
            dual_stack: false,
        }
    }

    #[test]
    fn wildcard_pairs_merge_per_transport_and_the_rest_stays() {
        let local = ListenerSpec::UnixAbstract { name: "x".into() };
        let specs = vec![
            udp("0.0.0.0:111"),
            tcp("0.0.0.0:111"),
            udp("[::]:111"),
            tcp("[::]:111"),
            local.clone(),
            udp("127.0.0.53:53"),
        ];
        let out = merge(specs, &BTreeSet::new());
        assert_eq!(out.len(), 4, "{out:?}");
        let dual_udp = merged(&udp("0.0.0.0:111")).expect("dual");
        let dual_tcp = merged(&tcp("0.0.0.0:111")).expect("dual");
        assert!(out.contains(&dual_udp) && out.contains(&dual_tcp));
        assert!(out.contains(&local) && out.contains(&udp("127.0.0.53:53")));
        assert_eq!(dual_udp.to_string(), "udp:[::]:111+v4");
        assert_eq!(
            halves(&dual_udp),
            Some([udp("0.0.0.0:111"), udp("[::]:111")])
        );
    }

    #[test]
    fn a_lone_wildcard_or_a_split_pair_is_not_merged() {
        let only_v4 = vec![udp("0.0.0.0:123")];
        assert_eq!(merge(only_v4.clone(), &BTreeSet::new()), only_v4);
        let other_ports = vec![udp("0.0.0.0:123"), udp("[::]:124")];
        assert_eq!(merge(other_ports.clone(), &BTreeSet::new()), other_ports);
        let pair = vec![udp("0.0.0.0:123"), udp("[::]:123")];
        let split: BTreeSet<_> = merged(&pair[0]).into_iter().collect();
        assert_eq!(merge(pair.clone(), &split), pair);
    }
}
