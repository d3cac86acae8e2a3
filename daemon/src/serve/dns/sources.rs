//! Where a namespace's DNS data comes from: upstreams (the config, or the namespace's
//! resolv.conf), its hosts file, and its own subnets (the default allow list).
//!
//! Why checked lazily: the files are looked at only on queries that need an upstream (at
//! most once a second) or when no upstream is known, and the subnets only when a client is
//! refused, so an idle namespace costs nothing.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nsaux_resolver::Cidr;

use super::settings::allow_list;
use super::watched::Watched;
use super::{DnsNs, Inner};
use crate::config::DnsConfig;
use crate::serve::NsInfo;

/// How often, at most, the namespace's resolv.conf and hosts are checked for changes (only on
/// queries that need an upstream).
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often, at most, a refused client makes us re-read the namespace's own subnets.
pub(super) const SUBNET_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

impl DnsNs {
    /// Re-reads the namespace's own subnets inside it, then answers held queries.
    pub(super) fn refresh_subnets(&self) {
        {
            let mut g = self.lock();
            if g.refreshing || !self.cfg().allow_own_subnets {
                return;
            }
            g.refreshing = true;
        }
        let (weak, ns, stop) = (self.me.clone(), Arc::clone(&self.ns), self.stop.clone());
        tokio::spawn(async move {
            let read = tokio::select! {
                () = stop.cancelled() => return,
                r = ns.run_in(own_subnets) => r,
            };
            let Some(me) = weak.upgrade() else { return };
            let now = Instant::now();
            let cfg = me.cfg();
            let mut g = me.lock();
            g.refreshing = false;
            match read {
                Ok(subnets) => {
                    g.subnets = subnets;
                    let allow = allow_list(&cfg, &g.subnets);
                    g.resolver.set_allow(allow);
                }
                Err(e) => {
                    tracing::warn!(netns = %me.ns.name, error = %e, "dns: cannot read the namespace's addresses");
                }
            }
            me.answer_held(&mut g, now);
        });
    }
}

/// The namespace's own subnets, read inside it (`getifaddrs`).
fn own_subnets() -> io::Result<Vec<Cidr>> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    let mut v = Vec::new();
    for a in addrs {
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else {
            continue;
        };
        let (ip, len) = if let (Some(ad), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in())
        {
            (IpAddr::V4(ad.ip()), m.ip().to_bits().count_ones())
        } else if let (Some(ad), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            (IpAddr::V6(ad.ip()), m.ip().to_bits().count_ones())
        } else {
            continue;
        };
        if ip.is_loopback() {
            continue;
        }
        if let Ok(c) = Cidr::new(ip, u8::try_from(len).unwrap_or(0)) {
            v.push(c);
        }
    }
    Ok(v)
}

impl Inner {
    /// Sets up where upstreams and hosts come from (construction and reconfiguration).
    pub(super) fn set_sources(&mut self, ns: &NsInfo, c: &DnsConfig) {
        let dir = c.netns_etc_dir.join(&ns.name);
        self.resolv = (c.upstreams.is_empty() && c.resolv_conf)
            .then(|| Watched::new(dir.join("resolv.conf")));
        let had_hosts = self.hosts.is_some();
        self.hosts = c.hosts_file.then(|| Watched::new(dir.join("hosts")));
        if had_hosts && self.hosts.is_none() {
            let _ = self.resolver.set_hosts("");
        }
        if !c.upstreams.is_empty() {
            let list: Vec<SocketAddr> = c.upstreams.iter().map(|u| u.0).collect();
            self.apply_upstreams(ns, list, "config".into());
        } else if self.resolv.is_none() {
            self.apply_upstreams(ns, Vec::new(), "none".into());
        }
        self.check_files(ns, c, Instant::now(), true);
    }

    /// Installs a new upstream list (from the config, resolv.conf, or none) and says so.
    fn apply_upstreams(&mut self, ns: &NsInfo, list: Vec<SocketAddr>, source: String) {
        if list == self.upstreams && source == self.upstream_source {
            return;
        }
        tracing::info!(netns = %ns.name, upstreams = ?list, %source, "dns: upstream servers");
        if !self.upstreams.is_empty() && list != self.upstreams {
            // Different servers may give a different view: never serve the old one's data.
            self.resolver.flush();
        }
        if !list.is_empty() {
            self.warned_no_upstreams = false;
        }
        self.resolver.set_upstreams(list.clone());
        self.upstreams = list;
        self.upstream_source = source;
    }

    /// Re-reads resolv.conf and hosts if they changed (at most once per
    /// `FILE_CHECK_INTERVAL` unless `force`); true when upstreams changed.
    pub(super) fn check_files(
        &mut self,
        ns: &NsInfo,
        c: &DnsConfig,
        now: Instant,
        force: bool,
    ) -> bool {
        if !force && now < self.next_file_check {
            return false;
        }
        self.next_file_check = now + FILE_CHECK_INTERVAL;
        let mut changed = false;
        if let Some(w) = &mut self.resolv
            && let Some(text) = w.changed()
        {
            let path = w.path.display().to_string();
            let list = resolv_conf_upstreams(ns, c, text.as_deref().unwrap_or(""));
            let source = if text.is_some() {
                path
            } else {
                format!("{path} (absent)")
            };
            changed = list != self.upstreams;
            self.apply_upstreams(ns, list, source);
        }
        if let Some(w) = &mut self.hosts
            && let Some(text) = w.changed()
        {
            for e in self.resolver.set_hosts(text.as_deref().unwrap_or("")) {
                tracing::debug!(netns = %ns.name, error = %e, "dns: hosts entry skipped");
            }
        }
        changed
    }
}

/// The upstreams a resolv.conf names, minus entries that are this endpoint. Skipped lines
/// are logged, not fatal.
fn resolv_conf_upstreams(ns: &NsInfo, c: &DnsConfig, text: &str) -> Vec<SocketAddr> {
    let (conf, skipped) = nsaux_resolver::parse_resolv_conf(text);
    for e in skipped {
        tracing::debug!(netns = %ns.name, error = %e, "dns: resolv.conf line skipped");
    }
    conf.nameservers
        .into_iter()
        .map(|ip| SocketAddr::new(ip, 53))
        .filter(|up| {
            let me = is_self(*up, &c.addresses, c.port);
            if me {
                tracing::debug!(netns = %ns.name, upstream = %up, "dns: skipping resolv.conf entry that is this endpoint");
            }
            !me
        })
        .collect()
}

/// Whether an upstream `up` is this endpoint itself (a resolv.conf written for clients of the
/// namespace usually names it): forwarding to ourselves would loop.
fn is_self(up: SocketAddr, listen: &[IpAddr], port: u16) -> bool {
    if up.port() != port {
        return false;
    }
    listen.iter().any(|l| {
        *l == up.ip()
            || (l.is_unspecified() && l.is_ipv4() == up.is_ipv4() && up.ip().is_loopback())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_entries_are_recognised() {
        let listen: Vec<IpAddr> = vec![[127, 0, 0, 53].into()];
        assert!(is_self("127.0.0.53:53".parse().expect("addr"), &listen, 53));
        assert!(!is_self("127.0.0.1:53".parse().expect("addr"), &listen, 53));
        assert!(!is_self(
            "127.0.0.53:5353".parse().expect("addr"),
            &listen,
            53
        ));
        let any: Vec<IpAddr> = vec![[0, 0, 0, 0].into()];
        assert!(is_self("127.0.0.1:53".parse().expect("addr"), &any, 53));
        assert!(!is_self("10.0.0.1:53".parse().expect("addr"), &any, 53));
    }
}
