//! The `dns` service: a caching forwarder in every namespace, driving the sans-IO
//! `nsaux_resolver::Resolver` (one per namespace, so caches are never shared).
//!
//! # How a query flows
//! * Client UDP/TCP queries reach [`NsService::on_datagram`] / [`NsService::on_connection`] on
//!   the listeners the manager bound. Cache hits, local records and errors are answered at once.
//! * A miss leaves a [`Route`] under the client token (UDP: endpoint + peer + local address;
//!   TCP: the connection's answer channel) and the resolver queues upstream transmits.
//! * Every UDP attempt goes out of its own socket, connected to its upstream, so each one has
//!   a fresh kernel-chosen random source port on top of the resolver's random ID (what
//!   unbound and dnsmasq do against cache poisoning); the connection also makes the kernel
//!   drop datagrams from elsewhere and report ICMP errors (an unreachable upstream fails at
//!   once). At most `MAX_UPSTREAM_SOCKETS` are open at once; beyond that, attempts share the
//!   least busy socket already talking to the same upstream.
//! * Sockets must be created *inside* the namespace (one trip to the namespace thread, tens
//!   of µs), so they are made in batches and pooled (`pool.rs`): a socket whose attempt ended
//!   is disconnected, which gives its port back, and its next connect draws a new random
//!   port, so a stream of misses makes no trip and no socket at all. Free sockets unused for
//!   `SPARE_IDLE` are closed, so an idle namespace holds none. TCP retries get a fresh
//!   connection each, also created inside the namespace.
//! * One reader task per namespace takes the replies of every pooled socket from one inner
//!   epoll (each socket added once for its life) after a single wakeup. One driver task per
//!   namespace, started on the first miss, makes the sockets, starts TCP attempts and arms a
//!   timer only while the resolver has deadlines (or free sockets to close); the timer frees
//!   the sockets of timed-out attempts. All of them end (closing every upstream socket) when
//!   the namespace's `cancel` fires. An idle namespace costs no CPU.
//!
//! # Files
//!
//! | file | job |
//! | --- | --- |
//! | `pump` | client queries in, answers delivered to UDP/TCP waiters, transmits handed on |
//! | `upstream` | upstream UDP attempts: send, the reader task, receive |
//! | `pool` | upstream UDP sockets: batches, reuse with a fresh port, idle close |
//! | `driver` | the per-namespace task: timer, socket batches, TCP attempts |
//! | `tcp` | DNS over TCP: client connections and upstream TCP exchanges |
//! | `sources` | resolv.conf, hosts and own subnets |
//! | `upstream_files` | which file gives a namespace's upstreams (own list, resolv.conf, host's) |
//! | `watched` | a file re-read only when it changed |
//! | `budget` | the cache under the daemon's memory ceiling |
//! | `settings` | config → resolver config, and reloads |
//! | `control` | status and `nsauxctl dns` verbs |
//! | `observe` | metrics from the core's counters, upstream transitions, query log |

mod budget;
mod control;
mod driver;
mod observe;
mod persist;
mod pool;
mod pump;
mod query_log;
mod settings;
mod sources;
mod tcp;
mod upstream;
mod upstream_files;
mod watched;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};
use std::time::Instant;

use nsaux_resolver::{Cidr, Resolver, Transport, UpstreamTransmit};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::pump::{Held, Route, Verdict};
use self::settings::resolver_config;
use self::upstream_files::UpstreamFiles;
use self::watched::Watched;
use super::{
    ConnFuture, Connection, Datagram, ListenerSpec, NsInfo, NsService, Replies, ReplyTo,
    ServiceKind, UdpEndpoint,
};
use crate::config::{DnsConfig, ServicesConfig};

/// The DNS service kind.
#[derive(Debug, Default)]
pub(crate) struct Dns {
    /// Where run-time records are saved (`None`: they do not survive a restart).
    records: Option<Arc<persist::RecordDir>>,
}

impl Dns {
    /// A DNS kind saving run-time records under `state_dir` (see `persist.rs`).
    pub(crate) fn persistent(
        state_dir: &std::path::Path,
        sweep_delay: std::time::Duration,
    ) -> Self {
        Self {
            records: persist::RecordDir::open(state_dir, sweep_delay),
        }
    }
}

impl ServiceKind for Dns {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn enabled(&self, cfg: &ServicesConfig) -> bool {
        cfg.dns.enabled
    }

    fn start(&self) {
        if let Some(r) = &self.records {
            r.start_sweep();
        }
    }

    fn instantiate(
        &self,
        ns: Arc<NsInfo>,
        cfg: &ServicesConfig,
    ) -> anyhow::Result<Arc<dyn NsService>> {
        let records = self.records.as_ref().map(|r| r.file(ns.id));
        let svc = DnsNs::new(ns, &cfg.dns, records)?;
        svc.restore_records();
        svc.refresh_subnets();
        svc.check_sources(&mut svc.lock(), Instant::now());
        Ok(svc)
    }
}

/// Mutable state of one namespace's resolver, behind one short-held lock.
#[derive(Debug)]
struct Inner {
    /// The sans-IO core.
    resolver: Resolver,
    /// Deferred answers' destinations by client token.
    routes: HashMap<u64, Route>,
    /// Next client token.
    next_client: u64,
    /// Upstream UDP sockets: free and in use, the epoll watching them, transmits waiting
    /// (made at the first upstream query).
    pool: pool::LazyPool,
    /// TCP transmits for the driver to start.
    tcp_jobs: Vec<UpstreamTransmit>,
    /// The driver task runs.
    driver: bool,
    /// The files upstreams come from, when the config names none.
    files: Option<UpstreamFiles>,
    /// The latest time the driver last said it would wake by (`None`: no timer). A miss
    /// whose deadlines all come later needs no wakeup of the driver: under a stream of
    /// misses, waking it per miss (a task switch and a timer re-armed) cost more than the
    /// miss's own socket work.
    armed: Option<Instant>,
    /// `ETC/NAME/hosts`.
    hosts: Option<Watched>,
    /// A big hosts file is being loaded on a blocking thread.
    hosts_loading: bool,
    /// Bumped when the sources are set up again: a load started before is dropped.
    hosts_gen: u64,
    /// The receive time of the batch whose queries last checked the files.
    last_file_check: Option<Instant>,
    /// The upstreams in use and where they came from.
    upstreams: Vec<SocketAddr>,
    /// `None`: no file found, see [`Inner::upstream_source`].
    upstream_source: Option<String>,
    /// "No upstreams" was logged (reset when some appear).
    warned_no_upstreams: bool,
    /// The namespace's own subnets (allowed clients).
    subnets: Vec<Cidr>,
    /// A subnet refresh is running / earliest next one.
    refreshing: bool,
    next_subnet_refresh: Instant,
    /// Queries waiting for the refresh.
    held: Vec<Held>,
    /// Records added through `nsauxctl dns add` (kept across a resolver rebuild).
    runtime_records: Vec<(String, IpAddr)>,
    /// The cache's share of the daemon's memory ceiling.
    cache_budget: budget::CacheBudget,
    /// What was last copied into the namespace's metrics.
    seen: observe::Seen,
}

/// The DNS service in one namespace.
#[derive(Debug)]
pub(crate) struct DnsNs {
    /// The namespace served (name for logs, `run_in` for sockets made inside it).
    ns: Arc<NsInfo>,
    /// Ourselves, for spawning tasks from `&self` callbacks.
    me: Weak<Self>,
    /// The current `[services.dns]` settings (replaced on reload).
    cfg: RwLock<Arc<DnsConfig>>,
    /// Everything a query, reply or timer changes.
    inner: Mutex<Inner>,
    /// Wakes the driver (new transmits, new deadlines).
    /// Made with the driver's first start (most namespaces never start one).
    wake: OnceLock<Arc<Notify>>,
    /// Cancelled when this instance goes (namespace gone, or the service disabled by a
    /// reload): ends the driver and every task spawned for it. Made with the first such
    /// task (see [`DnsNs::stop`]): a child token is about 150 bytes, and most namespaces never
    /// start one (issue 16: bytes per namespace).
    stop: OnceLock<CancellationToken>,
    /// Client TCP connections of every listener of this namespace (budgets per class and peer;
    /// the table made at the first connection).
    slots: crate::serve::slots::LazySlots,
    /// Where this namespace's run-time records are saved.
    records: Option<persist::RecordFile>,
    /// The query log's per-namespace rate limit (a flood must not decide the log volume).
    query_log: query_log::QueryLogLimit,
}

impl Drop for DnsNs {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.get() {
            stop.cancel();
        }
    }
}

impl DnsNs {
    /// A fresh instance: empty cache, sources set up, no task and no socket until needed.
    fn new(
        ns: Arc<NsInfo>,
        c: &DnsConfig,
        records: Option<persist::RecordFile>,
    ) -> anyhow::Result<Arc<Self>> {
        let now = Instant::now();
        let resolver = settings::new_resolver(resolver_config(c, &[], &[]))
            .map_err(|e| anyhow::anyhow!("dns settings: {e}"))?;
        let mut inner = Inner {
            resolver,
            routes: HashMap::new(),
            next_client: 0,
            pool: pool::LazyPool::default(),
            tcp_jobs: Vec::new(),
            driver: false,
            files: None,
            armed: None,
            hosts: None,
            hosts_loading: false,
            hosts_gen: 0,
            last_file_check: None,
            upstreams: Vec::new(),
            upstream_source: Some(String::new()),
            warned_no_upstreams: false,
            subnets: Vec::new(),
            refreshing: false,
            next_subnet_refresh: now,
            held: Vec::new(),
            runtime_records: Vec::new(),
            cache_budget: budget::CacheBudget::default(),
            seen: observe::Seen::default(),
        };
        inner.set_sources(&ns, c);
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            cfg: RwLock::new(settings::SETTINGS.get(c)),
            stop: OnceLock::new(),
            ns,
            inner: Mutex::new(inner),
            wake: OnceLock::new(),
            slots: crate::serve::slots::LazySlots::default(),
            records,
            query_log: query_log::QueryLogLimit::new(now),
        }))
    }

    /// A snapshot of the settings (not held across a reload).
    fn cfg(&self) -> Arc<DnsConfig> {
        Arc::clone(&crate::lock::read(&self.cfg))
    }

    /// The token that ends this instance's tasks (made on first use, cancelled already if
    /// the namespace is gone).
    fn stop(&self) -> &CancellationToken {
        self.stop.get_or_init(|| self.ns.cancel.child_token())
    }

    /// The state lock (poison-tolerant: a panicked task must not take DNS down).
    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::lock::lock(&self.inner)
    }
}

impl NsService for DnsNs {
    fn listeners(&self) -> Vec<ListenerSpec> {
        let c = self.cfg();
        // A kernel without IPv6 cannot make the socket at all: serve IPv4 only rather than
        // show the service as failing forever (an IPv6 address configured on such a host
        // could never work either).
        let addresses: Vec<IpAddr> = if crate::netns::factory::ipv6_supported() {
            c.addresses.clone()
        } else {
            c.addresses
                .iter()
                .copied()
                .filter(IpAddr::is_ipv4)
                .collect()
        };
        ListenerSpec::ip_pairs(&addresses, c.port, c.udp, c.tcp)
    }

    fn reconfigure(&self, cfg: &ServicesConfig) -> anyhow::Result<()> {
        self.reconfigure_dns(cfg)
    }

    fn namespace_gone(&self) {
        if let Some(r) = &self.records {
            r.gone();
        }
    }

    fn on_datagram(&self, ep: &Arc<UdpEndpoint>, d: &Datagram<'_>, out: &mut Replies) {
        if d.truncated {
            return;
        }
        let reply = out.buf();
        let verdict = self.query(d.peer, Transport::Udp, d.data, reply, d.received, |since| {
            Route::Udp {
                ep: Arc::clone(ep),
                peer: d.peer,
                local: d.local.ip(),
                ifindex: d.ifindex,
                since,
            }
        });
        if verdict == Verdict::Reply {
            out.commit(ReplyTo::sender(d));
        }
    }

    fn on_connection(self: Arc<Self>, conn: Connection) -> ConnFuture {
        Box::pin(tcp::serve_client(self, conn))
    }

    fn slots(
        &self,
    ) -> Option<(
        Arc<crate::serve::slots::SlotTable>,
        crate::serve::slots::SlotBudget,
    )> {
        let c = self.cfg();
        let budget = crate::serve::slots::SlotBudget {
            local: c.tcp_max_local_connections,
            remote: c.tcp_max_connections,
            per_peer: c.tcp_max_connections_per_peer,
        };
        Some((Arc::clone(self.slots.table()), budget))
    }

    fn sync_metrics(&self) {
        self.sync_now();
    }

    fn status(&self) -> Value {
        self.sync_now();
        self.status_json()
    }

    fn control(&self, action: &str, args: &Value) -> Result<Value, String> {
        self.control_verb(action, args)
    }
}
