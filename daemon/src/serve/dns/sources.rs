//! Where a namespace's DNS data comes from: upstreams (the config, or the files of
//! `upstream_files`), its hosts file, and its own subnets (the default allow list).
//!
//! Why checked per batch: an edit of a file must be seen by the very next query, so the files
//! are `stat`ed once per batch of received queries, before any of them is answered (an idle
//! namespace costs nothing). What changed is read at once when small; a hosts file larger
//! than [`HOSTS_INLINE_BYTES`] is read, parsed and indexed on a blocking thread and swapped in
//! whole when ready, the old table answering meanwhile, so a 100,000-line file never stalls
//! the event loop (or any other namespace). The subnets are re-read only when a client is
//! refused.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nsaux_resolver::{Cidr, Error, HostsTable};

use super::settings::allow_list;
use super::upstream_files::UpstreamFiles;
use super::watched::{MAX_FILE_BYTES, Watched, load};
use super::{DnsNs, Inner};
use crate::config::DnsConfig;
use crate::serve::NsInfo;

/// Hosts files up to this size are read, parsed and installed in the query path (about
/// 2,000 lines: well under a millisecond); larger ones on a blocking thread.
const HOSTS_INLINE_BYTES: u64 = 64 << 10;
/// A replaced hosts table with more records than this is freed on a blocking thread.
const FREE_OFF_LOOP_RECORDS: usize = 10_000;
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
        // The namespace's own token, not the instance's (`DnsNs::stop`, made on first use):
        // every instance reads its subnets once at start, and an instance dropped meanwhile
        // is seen below (`weak`) once the short read is over.
        let (weak, ns) = (self.me.clone(), Arc::clone(&self.ns));
        tokio::spawn(async move {
            let read = tokio::select! {
                () = ns.cancel.cancelled() => return,
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
    /// Sets up where upstreams and hosts come from (construction and reconfiguration); the
    /// files are read by the next [`DnsNs::check_sources`].
    pub(super) fn set_sources(&mut self, ns: &NsInfo, c: &DnsConfig) {
        let dir = c.netns_etc_dir.join(&ns.name);
        // "The files looked for" is made from the files in use: fixed now, as it was shown
        // until this setup is read (the next check then compares and logs as for any source).
        if self.upstream_source.is_none() {
            self.upstream_source = Some(self.upstream_source());
        }
        self.files = UpstreamFiles::new(ns, c);
        let had_hosts = self.hosts.is_some();
        self.hosts = c.hosts_file.then(|| Watched::new(dir.join("hosts")));
        // A load in flight belongs to the old setup: its result is dropped.
        self.hosts_gen = self.hosts_gen.wrapping_add(1);
        self.hosts_loading = false;
        if had_hosts && self.hosts.is_none() {
            free(self.resolver.install_hosts(HostsTable::default()));
        }
        if !c.upstreams.is_empty() {
            let list: Vec<SocketAddr> = c.upstreams.iter().map(|u| u.0).collect();
            self.apply_upstreams(ns, list, Some("config".into()));
        } else if self.files.is_none() {
            self.apply_upstreams(ns, Vec::new(), Some("none".into()));
        }
        self.last_file_check = None;
    }

    /// Installs a new upstream list (from the config, a file, or none) and says so.
    fn apply_upstreams(&mut self, ns: &NsInfo, list: Vec<SocketAddr>, source: Option<String>) {
        if list == self.upstreams && source == self.upstream_source {
            return;
        }
        self.upstream_source = source;
        let source = self.upstream_source();
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
    }

    /// Where the upstreams in use came from, for status and logs.
    pub(super) fn upstream_source(&self) -> String {
        match (&self.upstream_source, &self.files) {
            (Some(s), _) => s.clone(),
            (None, Some(files)) => files.looked_for(),
            (None, None) => String::new(),
        }
    }
}

impl DnsNs {
    /// Sees file edits before a batch of queries is answered: called with the batch's
    /// receive time, it checks once per distinct `now` (all datagrams of a batch share one).
    pub(super) fn check_sources(&self, g: &mut Inner, now: Instant) {
        if g.last_file_check == Some(now) {
            return;
        }
        g.last_file_check = Some(now);
        self.check_upstream_files(g);
        self.check_hosts(g);
    }

    /// Re-reads the upstream files that changed and installs what they now say; warns when
    /// the only nameserver named is nsaux itself.
    fn check_upstream_files(&self, g: &mut Inner) {
        let Some(files) = &mut g.files else {
            return;
        };
        if !files.poll() {
            return;
        }
        let cfg = self.cfg();
        let choice = files.choose(&self.ns, &cfg);
        if choice.only_self {
            let own = files
                .own_path()
                .unwrap_or_else(|| "dns.upstreams".to_owned());
            let file = choice.source.clone().unwrap_or_else(|| files.looked_for());
            tracing::warn!(netns = %self.ns.name, file = %file, upstreams_file = %own,
                "dns: the namespace's resolv.conf names only nsaux itself, so nsaux has no upstream to forward to; \
                 write the real servers to the upstreams file (one address per line) or set dns.upstreams");
        }
        g.apply_upstreams(&self.ns, choice.list, choice.source);
    }

    /// Re-reads the hosts file if it changed: at once when small, else on a blocking thread
    /// (one load at a time; a change during it is seen by the first check after it).
    fn check_hosts(&self, g: &mut Inner) {
        if g.hosts_loading {
            return;
        }
        let Some(w) = &mut g.hosts else {
            return;
        };
        let Some(stamp) = w.poll() else {
            return;
        };
        let builder = g.resolver.hosts_builder();
        let big = stamp.is_some_and(|s| s.len() > HOSTS_INLINE_BYTES);
        let runtime = tokio::runtime::Handle::try_current();
        let (true, Ok(rt)) = (big, runtime) else {
            let (text, stamp) = load(&w.path, MAX_FILE_BYTES);
            w.record(stamp);
            let (table, errors) = builder.build(text.as_deref().unwrap_or(""));
            log_skipped(&self.ns.name, &errors);
            free(g.resolver.install_hosts(table));
            return;
        };
        g.hosts_loading = true;
        let (generation, path, weak) = (g.hosts_gen, w.path.clone(), self.me.clone());
        rt.spawn_blocking(move || {
            let (text, stamp) = load(&path, MAX_FILE_BYTES);
            let (table, errors) = builder.build(text.as_deref().unwrap_or(""));
            let Some(me) = weak.upgrade() else {
                return;
            };
            log_skipped(&me.ns.name, &errors);
            let records = table.records();
            let old = {
                let mut g = me.lock();
                if g.hosts_gen != generation {
                    return;
                }
                g.hosts_loading = false;
                if let Some(w) = &mut g.hosts {
                    w.record(stamp);
                }
                g.resolver.install_hosts(table)
            };
            drop(old);
            tracing::debug!(netns = %me.ns.name, records, "dns: hosts file loaded off the event loop");
        });
    }
}

/// Logs the hosts lines and names that were skipped.
fn log_skipped(ns: &str, errors: &[Error]) {
    for e in errors.iter().take(20) {
        tracing::debug!(netns = %ns, error = %e, "dns: hosts entry skipped");
    }
}

/// Frees a replaced hosts table, on a blocking thread when it is big.
fn free(old: HostsTable) {
    if old.records() > FREE_OFF_LOOP_RECORDS
        && let Ok(rt) = tokio::runtime::Handle::try_current()
    {
        rt.spawn_blocking(move || drop(old));
    }
}
