//! Protocol settings of one resolver instance. The daemon owns the TOML and converts it into
//! this plain struct (I/O-only settings such as listen addresses never come here).
//!
//! Why defaults here: they are protocol choices (EDNS size, TTL caps, timeouts) and are
//! documented next to the value.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::acl::Cidr;
use crate::ratelimit::RateLimitConfig;

/// What to do when `max_outstanding` upstream queries are already in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overload {
    /// Answer SERVFAIL (the client learns at once and may try another server).
    #[default]
    ServFail,
    /// Drop the query (cheapest under a flood).
    Drop,
}

/// Serve-stale settings (RFC 8767).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeStale {
    /// How long after expiry data may still be served (RFC 8767 suggests 1–3 days).
    pub max_stale_age: Duration,
    /// TTL put on stale records (RFC 8767 recommends 30 s).
    pub stale_ttl: u32,
}

impl Default for ServeStale {
    fn default() -> Self {
        Self {
            max_stale_age: Duration::from_secs(86_400),
            stale_ttl: 30,
        }
    }
}

/// Settings of one resolver instance (one network namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Upstream servers, in preference order until RTTs are measured.
    pub upstreams: Vec<SocketAddr>,
    /// Clients allowed to query; others get REFUSED. Default: loopback only. The daemon adds
    /// the namespace's own networks.
    pub allow: Vec<Cidr>,
    /// EDNS UDP payload size advertised upstream and to clients (1232: DNS flag day 2020,
    /// avoids IP fragmentation).
    pub edns_udp_size: u16,
    /// Largest UDP answer sent to a client, whatever it advertises (the client's own size,
    /// floored at 512, is honoured below this).
    pub max_udp_response: u16,
    /// Cache bound in entries.
    pub cache_max_entries: usize,
    /// Cache bound in (approximate) bytes.
    pub cache_max_bytes: usize,
    /// Longest a positive answer is cached, seconds.
    pub max_ttl: u32,
    /// Longest a negative answer is cached, seconds (RFC 2308 §5 suggests 1–3 hours).
    pub max_negative_ttl: u32,
    /// Serve expired data when upstreams fail; `None` disables.
    pub serve_stale: Option<ServeStale>,
    /// TTL of local (authoritative) answers, seconds; short so edits propagate.
    pub local_ttl: u32,
    /// Static local records (name, address) from configuration.
    pub local_records: Vec<(String, IpAddr)>,
    /// Domains answered only locally (NXDOMAIN for unknown names, never forwarded), like
    /// dnsmasq's `local=/lan/`.
    pub local_domains: Vec<String>,
    /// How long to wait for one upstream attempt (TCP gets twice this).
    pub attempt_timeout: Duration,
    /// How long a client query may take in total before SERVFAIL (or stale data).
    pub query_timeout: Duration,
    /// Attempts per query across all upstreams (TCP retries and probes not counted).
    pub max_attempts: u32,
    /// Consecutive failures after which an upstream is considered down.
    pub down_after: u32,
    /// First delay before a down upstream is probed again (doubles per failure).
    pub probe_interval: Duration,
    /// Longest delay between probes of a down upstream.
    pub max_probe_interval: Duration,
    /// Most distinct queries waiting on upstreams at once (at most 16384, which keeps the
    /// 16-bit ID space sparse enough for random IDs).
    pub max_outstanding: usize,
    /// Most clients coalesced onto one upstream query.
    pub max_waiters: usize,
    /// Behaviour when `max_outstanding` is reached.
    pub overload: Overload,
    /// Per-client UDP response rate limit; `None` disables.
    pub rate_limit: Option<RateLimitConfig>,
}

impl Config {
    /// Whether `other` has the same settings, leaving out the per-instance lists (upstreams,
    /// allow list) and the local records and domains (compared apart by
    /// [`crate::SharedLocal::fits`]). Every field is named, so a new one must be decided here.
    pub(crate) fn same_settings(&self, other: &Self) -> bool {
        let Self {
            upstreams: _,
            allow: _,
            edns_udp_size,
            max_udp_response,
            cache_max_entries,
            cache_max_bytes,
            max_ttl,
            max_negative_ttl,
            serve_stale,
            local_ttl,
            local_records: _,
            local_domains: _,
            attempt_timeout,
            query_timeout,
            max_attempts,
            down_after,
            probe_interval,
            max_probe_interval,
            max_outstanding,
            max_waiters,
            overload,
            rate_limit,
        } = self;
        *edns_udp_size == other.edns_udp_size
            && *max_udp_response == other.max_udp_response
            && *cache_max_entries == other.cache_max_entries
            && *cache_max_bytes == other.cache_max_bytes
            && *max_ttl == other.max_ttl
            && *max_negative_ttl == other.max_negative_ttl
            && *serve_stale == other.serve_stale
            && *local_ttl == other.local_ttl
            && *attempt_timeout == other.attempt_timeout
            && *query_timeout == other.query_timeout
            && *max_attempts == other.max_attempts
            && *down_after == other.down_after
            && *probe_interval == other.probe_interval
            && *max_probe_interval == other.max_probe_interval
            && *max_outstanding == other.max_outstanding
            && *max_waiters == other.max_waiters
            && *overload == other.overload
            && *rate_limit == other.rate_limit
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            allow: Cidr::loopback(),
            edns_udp_size: 1232,
            max_udp_response: 1232,
            cache_max_entries: 10_000,
            cache_max_bytes: 8 << 20,
            max_ttl: 86_400,
            max_negative_ttl: 3_600,
            serve_stale: None,
            local_ttl: 10,
            local_records: Vec::new(),
            local_domains: Vec::new(),
            attempt_timeout: Duration::from_millis(1_500),
            query_timeout: Duration::from_secs(5),
            max_attempts: 4,
            down_after: 3,
            probe_interval: Duration::from_secs(5),
            max_probe_interval: Duration::from_secs(60),
            max_outstanding: 512,
            max_waiters: 64,
            overload: Overload::ServFail,
            rate_limit: None,
        }
    }
}
