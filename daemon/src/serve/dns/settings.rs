//! Settings: how the daemon's `[services.dns]` config becomes the core's
//! [`nsaux_resolver::Config`], and what a reload changes.
//!
//! Why separate: which settings need a new resolver (losing the cache) and which are applied
//! in place is a policy of its own, easiest to check in one short file.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use nsaux_resolver::{Cidr, Resolver, SharedLocal};

use super::DnsNs;
use crate::config::{DnsConfig, ServicesConfig};
use crate::serve::shared_cfg::SharedCfg;

/// A millisecond setting as a `Duration`, clamped to what the core accepts (1 ms to 1 h).
fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms.clamp(1, 3_600_000))
}

/// The resolver settings for `c` with these upstreams and own subnets.
pub(super) fn resolver_config(
    c: &DnsConfig,
    upstreams: &[SocketAddr],
    subnets: &[Cidr],
) -> nsaux_resolver::Config {
    nsaux_resolver::Config {
        upstreams: upstreams.to_vec(),
        allow: allow_list(c, subnets),
        cache_max_entries: c.cache_size,
        cache_max_bytes: c.cache_max_bytes,
        max_ttl: c.max_ttl,
        max_negative_ttl: c.max_negative_ttl,
        serve_stale: c.serve_stale.then(|| nsaux_resolver::ServeStale {
            max_stale_age: Duration::from_secs(c.stale_max_age.min(30 * 86_400)),
            ..nsaux_resolver::ServeStale::default()
        }),
        local_ttl: c.local_ttl,
        local_records: c.records.iter().map(|r| (r.name.clone(), r.addr)).collect(),
        local_domains: c.local_domains.clone(),
        attempt_timeout: millis(c.attempt_timeout_ms),
        query_timeout: millis(c.query_timeout_ms),
        max_outstanding: c.max_outstanding,
        rate_limit: c.rate_limit.map(|r| nsaux_resolver::RateLimitConfig {
            per_second: r.per_second,
            burst: r.burst,
            slip: r.slip,
            max_clients: r.max_clients,
        }),
        ..nsaux_resolver::Config::default()
    }
}

/// The `[services.dns]` section every namespace's instance shares (see
/// [`crate::serve::shared_cfg`]).
pub(super) static SETTINGS: SharedCfg<DnsConfig> = SharedCfg::new();

/// The configured local records last parsed, and the other resolver settings. Why: every
/// namespace's resolver made from the same records and settings shares this one copy of them
/// (issue 16: about 1 KiB per namespace for the records, 250 bytes for the settings); a reload
/// that changes them (or a per-namespace override) builds and keeps a new one, and resolvers
/// made before keep the copy they share.
static SHARED_LOCAL: Mutex<Option<SharedLocal>> = Mutex::new(None);

/// A new resolver for `cfg` with a fresh random seed, its configured local records shared
/// with the other namespaces' resolvers (see [`SHARED_LOCAL`]).
pub(super) fn new_resolver(cfg: nsaux_resolver::Config) -> Result<Resolver, nsaux_resolver::Error> {
    let seed = crate::seed::random_bytes();
    let mut cached = crate::lock::lock(&SHARED_LOCAL);
    if !cached.as_ref().is_some_and(|s| s.fits(&cfg)) {
        match SharedLocal::new(&cfg) {
            Ok(s) => *cached = Some(s),
            // The plain constructor reports the error as it always did.
            Err(_) => return Resolver::new(cfg, seed),
        }
    }
    match cached.as_ref() {
        Some(shared) => Resolver::with_shared_local(cfg, seed, shared),
        None => Resolver::new(cfg, seed),
    }
}

/// Who may ask: loopback, the configured `allow` list, and (if enabled) the namespace's
/// own subnets.
pub(super) fn allow_list(c: &DnsConfig, subnets: &[Cidr]) -> Vec<Cidr> {
    let mut v = Cidr::loopback();
    v.extend(c.allow.iter().map(|a| a.0));
    if c.allow_own_subnets {
        v.extend_from_slice(subnets);
    }
    v
}

/// The settings that need a new `Resolver` when they change (everything but listeners,
/// upstream sources and the allow list, which are applied in place).
fn core_settings(c: &DnsConfig) -> DnsConfig {
    DnsConfig {
        enabled: true,
        addresses: Vec::new(),
        port: 0,
        udp: true,
        tcp: true,
        upstreams: Vec::new(),
        netns_etc_dir: std::path::PathBuf::new(),
        resolv_conf: true,
        upstreams_file: String::new(),
        host_resolv_conf: std::path::PathBuf::new(),
        host_resolved_conf: std::path::PathBuf::new(),
        hosts_file: true,
        allow: Vec::new(),
        allow_own_subnets: true,
        tcp_idle_timeout: 0,
        tcp_max_connections: 0,
        tcp_max_local_connections: 0,
        tcp_max_connections_per_peer: 0,
        tcp_record_timeout: 0,
        ..c.clone()
    }
}

impl DnsNs {
    /// Applies a reloaded configuration: a new resolver (empty cache) when a core setting
    /// changed, otherwise the allow list in place; then the upstream and hosts sources.
    pub(super) fn reconfigure_dns(&self, cfg: &ServicesConfig) -> anyhow::Result<()> {
        let new = SETTINGS.get(&cfg.dns);
        let old = self.cfg();
        if *old == *new {
            return Ok(());
        }
        {
            let mut g = self.lock();
            if core_settings(&old) != core_settings(&new) {
                let upstreams = g.upstreams.clone();
                let mut r = new_resolver(resolver_config(&new, &upstreams, &g.subnets))
                    .map_err(|e| anyhow::anyhow!("dns settings: {e}"))?;
                for (name, addr) in &g.runtime_records {
                    let _ = r.add_record(name, *addr);
                }
                g.resolver = r;
                g.routes.clear();
                g.held.clear();
                g.hosts = None;
                tracing::info!(netns = %self.ns.name, "dns: settings changed; resolver restarted with an empty cache");
            } else {
                let allow = allow_list(&new, &g.subnets);
                g.resolver.set_allow(allow);
            }
            g.set_sources(&self.ns, &new);
        }
        *crate::lock::write(&self.cfg) = new;
        self.check_sources(&mut self.lock(), std::time::Instant::now());
        Ok(())
    }
}
