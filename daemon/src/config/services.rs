//! Per-service sections. Each is overridable per namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

/// All service sections, as seen by one namespace.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServicesConfig {
    /// The built-in diagnostic responder.
    pub ident: IdentConfig,
    /// The per-namespace DNS resolver endpoint.
    pub dns: super::dns::DnsConfig,
}

/// The `ident` service answers every UDP datagram or TCP connection with one line naming the
/// namespace that answered. It exists to prove the plumbing (and for operators to check which
/// namespace a given address reaches); it is off by default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentConfig {
    /// Serve it at all.
    pub enabled: bool,
    /// Port for UDP and TCP.
    pub port: u16,
    /// Addresses to bind in each namespace (wildcards answer from the address queried).
    pub addresses: Vec<IpAddr>,
    /// Listen on UDP.
    pub udp: bool,
    /// Listen on TCP.
    pub tcp: bool,
}

impl Default for IdentConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            port: 7867,
            addresses: vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ],
            udp: true,
            tcp: true,
        }
    }
}
