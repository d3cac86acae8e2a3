//! The `[dns]` section: the per-namespace caching forwarder (see `serve::dns`).
//!
//! Every key is defaulted, so `[dns]` may be absent: each namespace then gets a resolver on
//! `127.0.0.53:53` (UDP and TCP) that forwards to the servers in
//! `/etc/netns/NAME/resolv.conf`. Per-namespace `[[netns]]` overrides (e.g. a `dns.upstreams`
//! list for `vs-*`) merge over this section like any other.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use nsaux_resolver::Cidr;
use serde::Deserialize;

/// An upstream server written as `IP` (port 53) or `IP:PORT` / `[IPv6]:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct UpstreamAddr(pub SocketAddr);

impl TryFrom<String> for UpstreamAddr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Self(sa));
        }
        s.parse::<IpAddr>()
            .map(|ip| Self(SocketAddr::new(ip, 53)))
            .map_err(|_| format!("{s:?} is not an address (IP, IP:PORT or [IPv6]:PORT)"))
    }
}

/// A client prefix such as `10.0.0.0/8`; a bare address is one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct CidrValue(pub Cidr);

impl TryFrom<String> for CidrValue {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Cidr::from_str(&s).map(Self).map_err(|e| e.to_string())
    }
}

impl fmt::Display for CidrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A static local record, answered authoritatively (forward and PTR).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StaticRecord {
    /// Host name.
    pub(crate) name: String,
    /// Its address (A or AAAA by family).
    pub(crate) addr: IpAddr,
}

/// Per-client response rate limiting (UDP only; over-budget queries are dropped, every
/// `slip`-th answered with TC=1 so a real client can retry over TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DnsRateLimit {
    /// Sustained answers per second per client IP.
    pub(crate) per_second: u32,
    /// Answers allowed at once after idling.
    pub(crate) burst: u32,
    /// Every `slip`-th limited query gets TC=1 (0: drop them all).
    pub(crate) slip: u32,
    /// Client buckets tracked per namespace.
    pub(crate) max_clients: usize,
}

impl Default for DnsRateLimit {
    fn default() -> Self {
        let d = nsaux_resolver::RateLimitConfig::default();
        Self {
            per_second: d.per_second,
            burst: d.burst,
            slip: d.slip,
            max_clients: d.max_clients,
        }
    }
}

/// The DNS resolver endpoint of each namespace.
///
/// Upstream servers come from `upstreams` when it is non-empty (use a `[[netns]]` override for
/// per-namespace lists), else from `NETNS_ETC_DIR/NAME/resolv.conf` (the `ip netns exec`
/// convention), else there are none and every query that needs one gets SERVFAIL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DnsConfig {
    /// Serve it at all.
    pub(crate) enabled: bool,
    /// Addresses to listen on in each namespace (IP_FREEBIND: they need not exist yet).
    pub(crate) addresses: Vec<IpAddr>,
    /// Port for UDP and TCP.
    pub(crate) port: u16,
    /// Listen on UDP.
    pub(crate) udp: bool,
    /// Listen on TCP (needed for truncated answers, so on by default).
    pub(crate) tcp: bool,
    /// Upstream servers; empty means "from resolv.conf".
    pub(crate) upstreams: Vec<UpstreamAddr>,
    /// Where per-namespace `NAME/resolv.conf` and `NAME/hosts` live. A key of its own so
    /// tests (and unusual layouts) can point elsewhere than the host's `/etc/netns`.
    pub(crate) netns_etc_dir: PathBuf,
    /// Read upstreams from `NETNS_ETC_DIR/NAME/resolv.conf` when `upstreams` is empty.
    pub(crate) resolv_conf: bool,
    /// File name, inside `NETNS_ETC_DIR/NAME/`, of nsaux's own upstream list (one address
    /// per line): where upstreams come from once programs' resolv.conf names nsaux itself.
    /// Empty: not looked for.
    #[serde(deserialize_with = "de_file_name")]
    pub(crate) upstreams_file: String,
    /// The host namespace's resolver configuration (the host has no `NETNS_ETC_DIR/host/`).
    #[serde(deserialize_with = "de_absolute")]
    pub(crate) host_resolv_conf: PathBuf,
    /// systemd-resolved's list of real upstreams, used for the host namespace when
    /// `host_resolv_conf` names only resolved's stub (127.0.0.53).
    #[serde(deserialize_with = "de_absolute")]
    pub(crate) host_resolved_conf: PathBuf,
    /// Answer names from `NETNS_ETC_DIR/NAME/hosts` locally.
    pub(crate) hosts_file: bool,
    /// Clients allowed besides loopback (and the namespace's own subnets, see
    /// `allow_own_subnets`); others get REFUSED.
    pub(crate) allow: Vec<CidrValue>,
    /// Also allow clients on the subnets of the namespace's own addresses.
    pub(crate) allow_own_subnets: bool,
    /// Cache bound in entries.
    pub(crate) cache_size: usize,
    /// Cache bound in bytes (approximate).
    pub(crate) cache_max_bytes: usize,
    /// Longest a positive answer is cached, seconds.
    pub(crate) max_ttl: u32,
    /// Longest a negative answer is cached, seconds (the SOA minimum below this is used).
    pub(crate) max_negative_ttl: u32,
    /// Serve expired answers when every upstream fails (RFC 8767).
    pub(crate) serve_stale: bool,
    /// How long after expiry data may be served stale, seconds.
    pub(crate) stale_max_age: u64,
    /// TTL of local answers (hosts, records), seconds; short so edits propagate.
    pub(crate) local_ttl: u32,
    /// Static local records.
    pub(crate) records: Vec<StaticRecord>,
    /// Domains answered only locally (never forwarded), like dnsmasq's `local=/lan/`.
    pub(crate) local_domains: Vec<String>,
    /// Per-client rate limit; absent means none.
    pub(crate) rate_limit: Option<DnsRateLimit>,
    /// Most distinct queries waiting on upstreams at once (at most 16384).
    pub(crate) max_outstanding: usize,
    /// Total time a query may take before SERVFAIL (or stale data), milliseconds.
    pub(crate) query_timeout_ms: u64,
    /// Time one upstream attempt may take before failover, milliseconds.
    pub(crate) attempt_timeout_ms: u64,
    /// Close a client TCP connection that completed no query for this long, seconds.
    #[serde(deserialize_with = "super::slots::de_idle_secs")]
    pub(crate) tcp_idle_timeout: u64,
    /// Most client TCP connections from remote (non-loopback) callers at once, all listeners
    /// of the namespace together; the longest-idle one is closed to admit a new one.
    #[serde(deserialize_with = "super::slots::de_budget")]
    pub(crate) tcp_max_connections: usize,
    /// Most client TCP connections from loopback callers at once (their own budget).
    #[serde(deserialize_with = "super::slots::de_budget")]
    pub(crate) tcp_max_local_connections: usize,
    /// Most client TCP connections from one source IP at once.
    #[serde(deserialize_with = "super::slots::de_budget")]
    pub(crate) tcp_max_connections_per_peer: usize,
    /// Seconds a framed query may take from its first byte to its last.
    #[serde(deserialize_with = "super::slots::de_record_secs")]
    pub(crate) tcp_record_timeout: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        let r = nsaux_resolver::Config::default();
        Self {
            enabled: true,
            // ::1 too, as systemd-resolved's stub does not but glibc tries `nameserver ::1`
            // and IPv6-only clients need it; skipped where the kernel has no IPv6 at all
            // (`serve::dns` listeners), bound with IPV6_FREEBIND where ::1 is not up yet.
            addresses: vec![
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53)),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
            port: 53,
            udp: true,
            tcp: true,
            upstreams: Vec::new(),
            netns_etc_dir: PathBuf::from("/etc/netns"),
            resolv_conf: true,
            upstreams_file: "nsaux-upstreams".to_owned(),
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
            host_resolved_conf: PathBuf::from("/run/systemd/resolve/resolv.conf"),
            hosts_file: true,
            allow: Vec::new(),
            allow_own_subnets: true,
            cache_size: r.cache_max_entries,
            cache_max_bytes: r.cache_max_bytes,
            max_ttl: r.max_ttl,
            max_negative_ttl: r.max_negative_ttl,
            serve_stale: false,
            stale_max_age: 86_400,
            local_ttl: r.local_ttl,
            records: Vec::new(),
            local_domains: Vec::new(),
            rate_limit: None,
            max_outstanding: r.max_outstanding,
            query_timeout_ms: 5_000,
            attempt_timeout_ms: 1_500,
            tcp_idle_timeout: 10,
            tcp_max_connections: 64,
            tcp_max_local_connections: 64,
            tcp_max_connections_per_peer: 16,
            tcp_record_timeout: 10,
        }
    }
}

/// `upstreams_file`: empty, or one plain file name (it lives in each namespace's directory).
fn de_file_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() || (!s.contains('/') && s != "." && s != ".." && !s.contains('\0')) {
        Ok(s)
    } else {
        Err(serde::de::Error::custom(format!(
            "{s:?} is not a file name (no '/', not '.' or '..')"
        )))
    }
}

/// A path the daemon reads whatever its working directory: absolute only.
fn de_absolute<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let p = PathBuf::deserialize(d)?;
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(serde::de::Error::custom(format!(
            "{} is not an absolute path",
            p.display()
        )))
    }
}

#[cfg(test)]
mod wiring_tests {
    use crate::config::Config;

    #[test]
    fn upstream_file_keys_are_validated() {
        for bad in [
            "[dns]\nupstreams_file = \"../x\"\n",
            "[dns]\nupstreams_file = \"..\"\n",
            "[dns]\nhost_resolv_conf = \"resolv.conf\"\n",
            "[dns]\nhost_resolved_conf = \"\"\n",
        ] {
            assert!(Config::from_toml(bad, None).is_err(), "{bad}");
        }
        for good in [
            "[dns]\nupstreams_file = \"\"\n",
            "[dns]\nupstreams_file = \"upstreams\"\nhost_resolv_conf = \"/tmp/r\"\n",
        ] {
            assert!(Config::from_toml(good, None).is_ok(), "{good}");
        }
    }
}
