//! Per-service sections. Each is overridable per namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

/// All service sections, as seen by one namespace.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServicesConfig {
    /// The built-in diagnostic responder.
    pub ident: IdentConfig,
    /// The portmapper (rpcbind replacement).
    pub rpcbind: RpcbindConfig,
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

/// The portmapper: program 100000 v2/v3/v4 on UDP/TCP port 111 and the abstract AF_LOCAL socket
/// in every namespace, plus the path socket in the daemon's own mount namespace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpcbindConfig {
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
    /// Abstract AF_LOCAL name created inside each namespace (what the kernel ≥ 6.5 and
    /// libtirpc ≥ 1.3.5 try first); "" disables it.
    pub local_abstract: String,
    /// Path socket in the daemon's own mount namespace; each connection is served by the
    /// caller's network namespace. Daemon-wide: only the base `[rpcbind]` value counts (a
    /// per-namespace override is ignored). "" disables it; `nsauxd --rpcbind-socket` wins.
    pub local_path: String,
    /// Forward CALLIT/BCAST/INDIRECT inside the same namespace (off, as in rpcbind ≥ 1.2.5).
    pub remote_calls: bool,
    /// Most registrations in one namespace (self registrations included).
    pub max_registrations: usize,
    /// Most TCP + AF_LOCAL connections open at once in one namespace.
    pub max_connections: usize,
    /// Seconds a TCP/AF_LOCAL connection may stay idle before it is closed (CVE-2021-46828).
    pub idle_timeout_secs: u64,
    /// Refuse DUMP over UDP from non-loopback callers (reflection amplifier).
    pub udp_dump_loopback_only: bool,
    /// Accept SET/UNSET from 127.0.0.1/::1 (the kernel and older libtirpc register that way).
    pub loopback_may_register: bool,
    /// Probe registered UDP services with an RPC NULL call and drop those that stop answering.
    pub prune: bool,
    /// Seconds between liveness rounds when `prune` is on.
    pub prune_interval_secs: u64,
    /// Missed probes in a row after which a registration is removed.
    pub prune_after_misses: u32,
}

impl Default for RpcbindConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            port: 111,
            addresses: vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ],
            udp: true,
            tcp: true,
            local_abstract: "/run/rpcbind.sock".into(),
            local_path: "/run/rpcbind.sock".into(),
            remote_calls: false,
            max_registrations: 1024,
            max_connections: 64,
            idle_timeout_secs: 30,
            udp_dump_loopback_only: true,
            loopback_may_register: true,
            prune: false,
            prune_interval_secs: 60,
            prune_after_misses: 3,
        }
    }
}
