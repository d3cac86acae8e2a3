//! The `dns` service: a caching forwarder in every namespace, driving the sans-IO
//! `nsaux_resolver::Resolver` (one per namespace, so caches are never shared).
//!
//! # How a query flows
//! * Client UDP/TCP queries reach [`NsService::on_datagram`] / [`NsService::on_connection`] on
//!   the core's listeners. Cache hits, local records and errors are answered at once.
//! * A miss leaves a [`Route`] under the client token (UDP: endpoint + peer + local address;
//!   TCP: the connection's answer channel) and the resolver queues upstream transmits.
//! * Every UDP attempt goes out of its own socket, connected to its upstream, so each one has
//!   a fresh kernel-chosen random source port on top of the resolver's random ID (what
//!   unbound and dnsmasq do against cache poisoning); the connection also makes the kernel
//!   drop datagrams from elsewhere and report ICMP errors (an unreachable upstream fails at
//!   once). The socket closes when its reply arrives, on an ICMP error, or when the attempt
//!   times out. At most `MAX_UPSTREAM_SOCKETS` are open at once; beyond that, attempts share
//!   the least busy socket already talking to the same upstream.
//! * Sockets must be created *inside* the namespace (one trip to the namespace thread, tens
//!   of µs), so they are made in batches (`SPARE_BATCH`) and kept as spares: a miss takes a
//!   spare (connect + send, no trip) and a new batch is made in the background when few are
//!   left. Spares unused for `SPARE_IDLE` are closed, so an idle namespace holds none. TCP
//!   retries get a fresh connection each, also created inside the namespace.
//! * Each upstream UDP socket has a small task that waits for its replies or its deadline.
//!   One driver task per namespace, started on the first miss, makes the sockets, starts TCP
//!   attempts and arms a timer only while the resolver has deadlines (or spares to close).
//!   All of them end (closing every upstream socket) when the namespace's `cancel` fires. An
//!   idle namespace costs no CPU.

mod files;
mod tcp;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};

use nsaux_resolver::{
    AnswerKind, Cidr, ClientAnswer, ClientInfo, QueryOutcome, Resolver, ServFailReason, Transport,
    UpstreamOutcome, UpstreamTransmit,
};
use serde_json::{Value, json};
use tokio::io::Interest;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use self::files::Watched;
use super::{
    ConnFuture, Connection, Datagram, ListenerSpec, NsInfo, NsService, Replies, ReplyTo,
    ServiceKind, UdpEndpoint,
};
use crate::config::{DnsConfig, ServicesConfig};

/// How often, at most, the namespace's resolv.conf and hosts are checked for changes (only on
/// queries that need an upstream).
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often, at most, a refused client makes us re-read the namespace's own subnets.
const SUBNET_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Queries held while the subnets are re-read (beyond this they get REFUSED at once).
const MAX_HELD: usize = 16;
/// Upstream datagrams handled per wakeup before yielding.
const UPSTREAM_BUDGET: usize = 64;
/// Upstream UDP sockets made per trip into the namespace.
const SPARE_BATCH: usize = 8;
/// When fewer spares than this are left after taking one, the next batch is made.
const SPARE_LOW: usize = 2;
/// Spare sockets unused this long are closed (an idle namespace holds no upstream socket).
const SPARE_IDLE: Duration = Duration::from_secs(10);
/// Most upstream UDP sockets open at once per namespace; beyond it, attempts share the
/// sockets already talking to the same upstream (bounds fds under a flood of misses).
const MAX_UPSTREAM_SOCKETS: usize = 64;

/// The DNS service kind.
#[derive(Debug, Default)]
pub struct Dns;

impl ServiceKind for Dns {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn enabled(&self, cfg: &ServicesConfig) -> bool {
        cfg.dns.enabled
    }

    fn instantiate(
        &self,
        ns: Arc<NsInfo>,
        cfg: &ServicesConfig,
    ) -> anyhow::Result<Arc<dyn NsService>> {
        let svc = DnsNs::new(ns, &cfg.dns)?;
        svc.refresh_subnets();
        Ok(svc)
    }
}

/// Where a deferred answer goes.
#[derive(Debug)]
enum Route {
    /// Back out of the UDP endpoint the query came in on, from the address it was sent to.
    Udp {
        ep: Arc<UdpEndpoint>,
        peer: SocketAddr,
        local: IpAddr,
        ifindex: u32,
        since: Instant,
    },
    /// Into the TCP connection's answer queue.
    Tcp {
        tx: mpsc::Sender<Vec<u8>>,
        since: Instant,
    },
}

impl Route {
    fn since(&self) -> Instant {
        match self {
            Self::Udp { since, .. } | Self::Tcp { since, .. } => *since,
        }
    }
}

/// What to do with a client message after `DnsNs::query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Send `out` now.
    Reply,
    /// The answer comes later through the route.
    Deferred,
    /// Send nothing (malformed, rate-limited, overloaded).
    Drop,
}

/// A query held while the allow list is refreshed (its client was refused).
#[derive(Debug)]
struct Held {
    query: Vec<u8>,
    client: ClientInfo,
    route: Route,
}

/// An upstream UDP socket in use: connected to one upstream, with its own random port.
#[derive(Debug)]
struct UpSock {
    sock: Arc<tokio::net::UdpSocket>,
    upstream: SocketAddr,
    /// Attempts sent from it and not answered yet: (DNS ID, when the attempt times out).
    ids: Vec<(u16, Instant)>,
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
    /// Upstream UDP sockets in use, by key (each has a task waiting for its replies).
    socks: HashMap<u64, UpSock>,
    /// Next socket key.
    next_sock: u64,
    /// Unused sockets made inside the namespace (unbound: the port is picked at connect).
    spare4: Vec<std::net::UdpSocket>,
    spare6: Vec<std::net::UdpSocket>,
    /// When the spares are closed if still unused.
    spares_until: Instant,
    /// A batch of spares is wanted (IPv4, IPv6) for the driver to make.
    want4: bool,
    want6: bool,
    /// UDP transmits waiting for their family's socket.
    backlog: Vec<UpstreamTransmit>,
    /// TCP transmits for the driver to start.
    tcp_jobs: Vec<UpstreamTransmit>,
    /// The driver task runs.
    driver: bool,
    /// `ETC/NAME/resolv.conf`, when upstreams come from it.
    resolv: Option<Watched>,
    /// `ETC/NAME/hosts`.
    hosts: Option<Watched>,
    /// Earliest time the files are checked again.
    next_file_check: Instant,
    /// The upstreams in use and where they came from.
    upstreams: Vec<SocketAddr>,
    upstream_source: String,
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
}

/// The DNS service in one namespace.
#[derive(Debug)]
pub(crate) struct DnsNs {
    ns: Arc<NsInfo>,
    /// Ourselves, for spawning tasks from `&self` callbacks.
    me: Weak<Self>,
    cfg: RwLock<Arc<DnsConfig>>,
    inner: Mutex<Inner>,
    /// Wakes the driver (new transmits, new deadlines).
    wake: Arc<Notify>,
    /// Cancelled when this instance goes (namespace gone, or the service disabled by a
    /// reload): ends the driver and every task spawned for it.
    stop: CancellationToken,
}

impl Drop for DnsNs {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms.clamp(1, 3_600_000))
}

/// The resolver settings for `c` with these upstreams and own subnets.
fn resolver_config(
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

fn allow_list(c: &DnsConfig, subnets: &[Cidr]) -> Vec<Cidr> {
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
        hosts_file: true,
        allow: Vec::new(),
        allow_own_subnets: true,
        tcp_idle_timeout: 0,
        tcp_max_connections: 0,
        ..c.clone()
    }
}

impl DnsNs {
    fn new(ns: Arc<NsInfo>, c: &DnsConfig) -> anyhow::Result<Arc<Self>> {
        let now = Instant::now();
        let resolver = Resolver::new(resolver_config(c, &[], &[]), crate::seed::random_bytes())
            .map_err(|e| anyhow::anyhow!("dns settings: {e}"))?;
        let mut inner = Inner {
            resolver,
            routes: HashMap::new(),
            next_client: 0,
            socks: HashMap::new(),
            next_sock: 0,
            spare4: Vec::new(),
            spare6: Vec::new(),
            spares_until: now,
            want4: false,
            want6: false,
            backlog: Vec::new(),
            tcp_jobs: Vec::new(),
            driver: false,
            resolv: None,
            hosts: None,
            next_file_check: now,
            upstreams: Vec::new(),
            upstream_source: String::new(),
            warned_no_upstreams: false,
            subnets: Vec::new(),
            refreshing: false,
            next_subnet_refresh: now,
            held: Vec::new(),
            runtime_records: Vec::new(),
        };
        inner.set_sources(&ns, c);
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            cfg: RwLock::new(Arc::new(c.clone())),
            stop: ns.cancel.child_token(),
            ns,
            inner: Mutex::new(inner),
            wake: Arc::new(Notify::new()),
        }))
    }

    fn cfg(&self) -> Arc<DnsConfig> {
        Arc::clone(&crate::lock::read(&self.cfg))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::lock::lock(&self.inner)
    }

    /// Handles one client message received at `now`. `route` is only called when the answer
    /// is deferred.
    fn query(
        &self,
        addr: SocketAddr,
        transport: Transport,
        query: &[u8],
        out: &mut Vec<u8>,
        now: Instant,
        route: impl FnOnce(Instant) -> Route,
    ) -> Verdict {
        let mut g = self.lock();
        g.next_client = g.next_client.wrapping_add(1);
        let client = ClientInfo {
            addr,
            transport,
            token: g.next_client,
        };
        let mut outcome = g.resolver.handle_query(now, client, query, out);
        if outcome == QueryOutcome::Answered(AnswerKind::ServFail(ServFailReason::NoUpstreams)) {
            let cfg = self.cfg();
            if g.check_files(&self.ns, &cfg, now, true) && !g.upstreams.is_empty() {
                outcome = g.resolver.handle_query(now, client, query, out);
            } else if !g.warned_no_upstreams {
                g.warned_no_upstreams = true;
                tracing::warn!(netns = %self.ns.name, source = %g.upstream_source,
                    "dns: no upstream servers for this namespace; answering SERVFAIL");
            }
        }
        match outcome {
            QueryOutcome::Answered(AnswerKind::Refused) => {
                let cfg = self.cfg();
                if cfg.allow_own_subnets
                    && (g.refreshing || now >= g.next_subnet_refresh)
                    && g.held.len() < MAX_HELD
                {
                    // Maybe the namespace gained an address since we looked: hold the query,
                    // re-read the subnets and then answer it.
                    g.held.push(Held {
                        query: query.to_vec(),
                        client,
                        route: route(now),
                    });
                    g.next_subnet_refresh = now + SUBNET_REFRESH_INTERVAL;
                    drop(g);
                    self.refresh_subnets();
                    out.clear();
                    return Verdict::Deferred;
                }
                Verdict::Reply
            }
            QueryOutcome::Pending(_) => {
                g.routes.insert(client.token, route(now));
                if now >= g.next_file_check {
                    let cfg = self.cfg();
                    g.check_files(&self.ns, &cfg, now, false);
                }
                self.pump(&mut g, now);
                Verdict::Deferred
            }
            QueryOutcome::Answered(_) => Verdict::Reply,
            QueryOutcome::Dropped(_) => Verdict::Drop,
        }
    }

    /// Delivers ready answers and sends (or queues) ready transmits; wakes the driver when
    /// something was sent (new deadlines, TCP jobs, spares wanted).
    fn pump(&self, g: &mut Inner, now: Instant) {
        let mut sent = false;
        loop {
            let mut progressed = false;
            while let Some(a) = g.resolver.poll_answer() {
                progressed = true;
                self.deliver(g, a);
            }
            while let Some(t) = g.resolver.poll_transmit(now) {
                progressed = true;
                sent = true;
                match t.transport {
                    Transport::Tcp => g.tcp_jobs.push(t),
                    Transport::Udp => self.send_udp(g, t, now),
                }
            }
            if !progressed {
                break;
            }
        }
        if sent {
            self.kick(g);
        }
    }

    /// Sends one UDP attempt from a socket of its own (a spare, connected now: a fresh random
    /// port), or queues it until the driver has made spares. Over `MAX_UPSTREAM_SOCKETS`, it
    /// shares the least busy socket already connected to the same upstream.
    fn send_udp(&self, g: &mut Inner, t: UpstreamTransmit, now: Instant) {
        let until = now + millis(self.cfg().attempt_timeout_ms);
        if g.socks.len() >= MAX_UPSTREAM_SOCKETS
            && let Some(s) = g
                .socks
                .values_mut()
                .filter(|s| s.upstream == t.upstream)
                .min_by_key(|s| s.ids.len())
        {
            match send_upstream(&*s.sock, &t) {
                Ok(()) => s.ids.push((t.dns_id, until)),
                Err(e) => {
                    tracing::debug!(netns = %self.ns.name, upstream = %t.upstream, error = %e, "dns: upstream send failed");
                    g.resolver
                        .handle_upstream_error(now, t.upstream, Transport::Udp, t.dns_id);
                }
            }
            return;
        }
        let v6 = t.upstream.is_ipv6();
        let spares = if v6 { &mut g.spare6 } else { &mut g.spare4 };
        let Some(sock) = spares.pop() else {
            g.backlog.push(t);
            g.want(v6);
            return;
        };
        if spares.len() < SPARE_LOW {
            g.want(v6);
        }
        g.spares_until = now + SPARE_IDLE;
        // connect() binds the socket to a random ephemeral port and the upstream's address.
        let made = sock
            .connect(t.upstream)
            .and_then(|()| send_upstream(&sock, &t))
            .and_then(|()| tokio::net::UdpSocket::from_std(sock));
        match made {
            Ok(sock) => {
                let sock = Arc::new(sock);
                g.next_sock = g.next_sock.wrapping_add(1);
                let key = g.next_sock;
                g.socks.insert(
                    key,
                    UpSock {
                        sock: Arc::clone(&sock),
                        upstream: t.upstream,
                        ids: vec![(t.dns_id, until)],
                    },
                );
                tokio::spawn(upstream_socket(
                    self.me.clone(),
                    key,
                    sock,
                    until,
                    self.stop.clone(),
                ));
            }
            Err(e) => {
                tracing::debug!(netns = %self.ns.name, upstream = %t.upstream, error = %e, "dns: upstream send failed");
                g.resolver
                    .handle_upstream_error(now, t.upstream, Transport::Udp, t.dns_id);
            }
        }
    }

    fn deliver(&self, g: &mut Inner, a: ClientAnswer) {
        let Some(route) = g.routes.remove(&a.client.token) else {
            return;
        };
        match route {
            Route::Udp {
                ep,
                peer,
                local,
                ifindex,
                ..
            } => {
                if let Err(e) = ep.send_from(&a.payload, peer, local, ifindex) {
                    tracing::debug!(netns = %self.ns.name, %peer, error = %e, "dns: answer send failed");
                }
            }
            Route::Tcp { tx, .. } => {
                let _ = tx.try_send(a.payload);
            }
        }
    }

    /// Makes sure the driver runs and sees new work.
    fn kick(&self, g: &mut Inner) {
        if g.driver {
            self.wake.notify_one();
            return;
        }
        if self.stop.is_cancelled() {
            return;
        }
        g.driver = true;
        tokio::spawn(driver(
            self.me.clone(),
            Arc::clone(&self.ns),
            Arc::clone(&self.wake),
            self.stop.clone(),
        ));
    }

    /// Re-reads the namespace's own subnets inside it, then answers held queries.
    fn refresh_subnets(&self) {
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
            let mut out = Vec::new();
            for h in std::mem::take(&mut g.held) {
                match g.resolver.handle_query(now, h.client, &h.query, &mut out) {
                    QueryOutcome::Answered(_) => {
                        let a = ClientAnswer {
                            client: h.client,
                            payload: std::mem::take(&mut out),
                            kind: AnswerKind::Refused,
                            token: nsaux_resolver::QueryToken(0),
                        };
                        g.routes.insert(h.client.token, h.route);
                        me.deliver(&mut g, a);
                    }
                    QueryOutcome::Pending(_) => {
                        g.routes.insert(h.client.token, h.route);
                    }
                    QueryOutcome::Dropped(_) => {}
                }
            }
            me.pump(&mut g, now);
            if !g.routes.is_empty() {
                me.kick(&mut g);
            }
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
    fn set_sources(&mut self, ns: &NsInfo, c: &DnsConfig) {
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
    fn check_files(&mut self, ns: &NsInfo, c: &DnsConfig, now: Instant, force: bool) -> bool {
        if !force && now < self.next_file_check {
            return false;
        }
        self.next_file_check = now + FILE_CHECK_INTERVAL;
        let mut changed = false;
        if let Some(w) = &mut self.resolv
            && let Some(text) = w.changed()
        {
            let path = w.path.display().to_string();
            let list: Vec<SocketAddr> = text
                .as_deref()
                .map(files::parse_resolv_conf)
                .unwrap_or_default()
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 53))
                .filter(|up| {
                    let me = files::is_self(*up, &c.addresses, c.port);
                    if me {
                        tracing::debug!(netns = %ns.name, upstream = %up, "dns: skipping resolv.conf entry that is this endpoint");
                    }
                    !me
                })
                .collect();
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

/// Creates an unbound UDP socket for upstream queries. Call inside the namespace.
fn upstream_udp(v6: bool) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    if v6 {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    // No bind: connect() picks a random ephemeral port when the socket is used, so a
    // spare holds no port.
    Ok(s.into())
}

/// Up to `n` upstream sockets (fewer if creation fails part way). Call inside the namespace.
fn upstream_batch(v6: bool, n: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        match upstream_udp(v6) {
            Ok(s) => v.push(s),
            Err(e) if v.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(v)
}

/// Sends one upstream datagram now. A direct `sendto` rather than tokio's `try_send_to`,
/// which reports WouldBlock until the reactor has seen the new socket writable.
fn send_upstream(s: &impl std::os::fd::AsFd, t: &UpstreamTransmit) -> io::Result<()> {
    crate::sys::udp::send(s.as_fd(), &t.payload, t.upstream, None, 0).map(|_| ())
}

/// Waits on one upstream UDP socket for its replies and its attempts' deadlines; ends (and
/// closes the socket) when no attempt is left on it, or at once when `stop` fires.
async fn upstream_socket(
    weak: Weak<DnsNs>,
    key: u64,
    sock: Arc<tokio::net::UdpSocket>,
    mut until: Instant,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            r = sock.ready(Interest::READABLE | Interest::ERROR) => match r {
                Ok(r) if r.is_error() => SockEvent::Error,
                Ok(_) => SockEvent::Readable,
                Err(_) => SockEvent::Broken,
            },
            () = tokio::time::sleep_until(until.into()) => SockEvent::Deadline,
        };
        let Some(this) = weak.upgrade() else { break };
        match this.on_socket_event(key, &sock, event) {
            Some(next) => until = next,
            None => break,
        }
    }
}

/// What woke an upstream socket's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SockEvent {
    /// Datagrams (or an error) to read.
    Readable,
    /// The kernel reported an error on it (ICMP unreachable): read what came, then its
    /// attempts fail.
    Error,
    /// The earliest attempt deadline on it passed.
    Deadline,
    /// The reactor failed on it: its attempts fail.
    Broken,
}

/// What the driver must do before it can wait.
#[derive(Debug)]
struct DriverWork {
    tcp_jobs: Vec<UpstreamTransmit>,
    /// Spares to make (IPv4, IPv6); 0 for none.
    make4: usize,
    make6: usize,
    deadline: Option<Instant>,
}

/// The per-namespace driver: makes upstream sockets, starts TCP attempts, runs the timers.
/// Holds the instance only weakly while it waits, and ends when `stop` fires (namespace gone
/// or service removed), closing the upstream sockets.
async fn driver(weak: Weak<DnsNs>, ns: Arc<NsInfo>, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        if stop.is_cancelled() {
            break;
        }
        let Some(this) = weak.upgrade() else { break };
        let w = {
            let mut g = this.lock();
            let spares = !g.spare4.is_empty() || !g.spare6.is_empty();
            let deadline = g.resolver.poll_timeout();
            DriverWork {
                tcp_jobs: std::mem::take(&mut g.tcp_jobs),
                make4: g.take_want(false),
                make6: g.take_want(true),
                deadline: match (deadline, spares.then_some(g.spares_until)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
            }
        };
        let limit = Duration::from_millis(this.cfg().attempt_timeout_ms.saturating_mul(2))
            + Duration::from_millis(500);
        drop(this);
        for t in w.tcp_jobs {
            tokio::spawn(tcp::upstream_attempt(
                weak.clone(),
                Arc::clone(&ns),
                stop.clone(),
                limit,
                t,
            ));
        }
        if w.make4 > 0 || w.make6 > 0 {
            for (n, v6) in [(w.make4, false), (w.make6, true)] {
                if n == 0 {
                    continue;
                }
                let made = tokio::select! {
                    () = stop.cancelled() => break,
                    r = ns.run_in(move || upstream_batch(v6, n)) => r,
                };
                let Some(this) = weak.upgrade() else { break };
                this.spares_made(v6, made);
            }
            // Look again: new work may have come in meanwhile.
            continue;
        }
        let sleep = async {
            match w.deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = wake.notified() => {}
            () = sleep => {
                if let Some(this) = weak.upgrade() {
                    this.on_timer();
                }
            }
        }
        if stop.is_cancelled() {
            break;
        }
    }
    if let Some(this) = weak.upgrade() {
        let mut g = this.lock();
        g.socks.clear();
        g.spare4.clear();
        g.spare6.clear();
        g.want4 = false;
        g.want6 = false;
        g.routes.clear();
        g.backlog.clear();
        g.tcp_jobs.clear();
        g.held.clear();
        g.driver = false;
    }
    tracing::debug!(netns = %ns.name, "dns: driver stopped");
}

impl Inner {
    /// Asks the driver for a batch of spare sockets of this family.
    fn want(&mut self, v6: bool) {
        if v6 {
            self.want6 = true;
        } else {
            self.want4 = true;
        }
    }

    /// How many sockets of this family the driver should make now (0: none wanted).
    fn take_want(&mut self, v6: bool) -> usize {
        let wanted = if v6 {
            std::mem::take(&mut self.want6)
        } else {
            std::mem::take(&mut self.want4)
        };
        if !wanted {
            return 0;
        }
        let queued = self
            .backlog
            .iter()
            .filter(|t| t.upstream.is_ipv6() == v6)
            .count();
        (queued + SPARE_BATCH).min(MAX_UPSTREAM_SOCKETS)
    }
}

impl DnsNs {
    /// A batch of upstream sockets was made (or not): keep them as spares and send what
    /// waited for them.
    fn spares_made(&self, v6: bool, made: io::Result<Vec<std::net::UdpSocket>>) {
        let now = Instant::now();
        let mut g = self.lock();
        let backlog: Vec<UpstreamTransmit> = std::mem::take(&mut g.backlog);
        let (mine, rest): (Vec<_>, Vec<_>) = backlog
            .into_iter()
            .partition(|t| t.upstream.is_ipv6() == v6);
        g.backlog = rest;
        match made {
            Ok(socks) => {
                let spares = if v6 { &mut g.spare6 } else { &mut g.spare4 };
                spares.extend(socks);
                g.spares_until = now + SPARE_IDLE;
                for t in mine {
                    self.send_udp(&mut g, t, now);
                }
            }
            Err(e) => {
                tracing::warn!(netns = %self.ns.name, error = %e, v6, "dns: cannot create upstream socket");
                for t in &mine {
                    g.resolver
                        .handle_upstream_error(now, t.upstream, Transport::Udp, t.dns_id);
                }
            }
        }
        self.pump(&mut g, now);
    }

    /// Replies (or the deadline) on upstream socket `key`: feeds the replies to the resolver
    /// and retires the attempts they end. Returns the socket's next deadline, or `None` when
    /// no attempt is left on it (the caller closes it).
    fn on_socket_event(
        &self,
        key: u64,
        sock: &tokio::net::UdpSocket,
        event: SockEvent,
    ) -> Option<Instant> {
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 65_536]);
        }
        BUF.with(|b| {
            let mut buf = b.borrow_mut();
            let now = Instant::now();
            let mut g = self.lock();
            let inner = &mut *g;
            let entry = inner.socks.get_mut(&key)?;
            let mut failed = matches!(event, SockEvent::Error | SockEvent::Broken);
            if matches!(event, SockEvent::Readable | SockEvent::Error) {
                for _ in 0..UPSTREAM_BUDGET {
                    match sock.try_recv_from(&mut buf) {
                        Ok((n, from)) => {
                            let data = &buf[..n];
                            let outcome =
                                inner
                                    .resolver
                                    .handle_upstream(now, from, Transport::Udp, data);
                            if matches!(
                                outcome,
                                UpstreamOutcome::Accepted | UpstreamOutcome::Late
                            ) && let [a, b, ..] = *data
                            {
                                let id = u16::from_be_bytes([a, b]);
                                entry.ids.retain(|(i, _)| *i != id);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // An ICMP error for this socket's upstream (port or host
                            // unreachable): its attempts fail now rather than at the timeout.
                            tracing::debug!(netns = %self.ns.name, upstream = %entry.upstream, error = %e, "dns: upstream unreachable");
                            failed = true;
                            break;
                        }
                    }
                }
            }
            if failed {
                for (id, _) in entry.ids.drain(..) {
                    inner
                        .resolver
                        .handle_upstream_error(now, entry.upstream, Transport::Udp, id);
                }
            }
            entry.ids.retain(|(_, until)| *until > now);
            let next = entry.ids.iter().map(|(_, until)| *until).max();
            if next.is_none() {
                inner.socks.remove(&key);
            }
            self.pump(inner, now);
            next
        })
    }

    /// The resolver's earliest deadline passed.
    fn on_timer(&self) {
        let now = Instant::now();
        let limit = Duration::from_millis(self.cfg().query_timeout_ms) + Duration::from_secs(5);
        let mut g = self.lock();
        g.resolver.handle_timeout(now);
        if now >= g.spares_until {
            g.spare4.clear();
            g.spare6.clear();
        }
        self.pump(&mut g, now);
        // Belt and braces: a route whose query the resolver forgot (it was rebuilt) must not
        // pin an endpoint forever.
        g.routes
            .retain(|_, r| now.saturating_duration_since(r.since()) < limit);
    }
}

impl NsService for DnsNs {
    fn listeners(&self) -> Vec<ListenerSpec> {
        let c = self.cfg();
        ListenerSpec::ip_pairs(&c.addresses, c.port, c.udp, c.tcp)
    }

    fn reconfigure(&self, cfg: &ServicesConfig) -> anyhow::Result<()> {
        let new = Arc::new(cfg.dns.clone());
        let old = self.cfg();
        if *old == *new {
            return Ok(());
        }
        {
            let mut g = self.lock();
            if core_settings(&old) != core_settings(&new) {
                let upstreams = g.upstreams.clone();
                let mut r = Resolver::new(
                    resolver_config(&new, &upstreams, &g.subnets),
                    crate::seed::random_bytes(),
                )
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
        Ok(())
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

    fn max_connections(&self) -> usize {
        self.cfg().tcp_max_connections.max(1)
    }

    fn status(&self) -> Value {
        let g = self.lock();
        json!({
            "upstreams": g.upstreams.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "upstream_source": g.upstream_source,
            "cache_entries": g.resolver.cache_len(),
            "outstanding": g.resolver.outstanding(),
            "upstream_sockets": g.socks.len(),
            "spare_sockets": g.spare4.len() + g.spare6.len(),
        })
    }

    fn control(&self, action: &str, args: &Value) -> Result<Value, String> {
        match action {
            "stats" => Ok(self.stats_json()),
            "flush" => {
                let mut g = self.lock();
                let n = g.resolver.cache_len();
                g.resolver.flush();
                Ok(json!({ "flushed": n }))
            }
            "add" | "remove" => {
                let name = args["name"].as_str().ok_or("missing name")?.to_owned();
                let addr: IpAddr = args["addr"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .ok_or("missing or bad addr")?;
                let mut g = self.lock();
                if action == "add" {
                    g.resolver
                        .add_record(&name, addr)
                        .map_err(|e| e.to_string())?;
                    if !g.runtime_records.contains(&(name.clone(), addr)) {
                        g.runtime_records.push((name.clone(), addr));
                    }
                    tracing::info!(netns = %self.ns.name, %name, %addr, "dns: record added");
                    Ok(json!({ "added": name, "addr": addr.to_string() }))
                } else {
                    let existed = g
                        .resolver
                        .remove_record(&name, addr)
                        .map_err(|e| e.to_string())?;
                    g.runtime_records
                        .retain(|(n, a)| !(n == &name && *a == addr));
                    if !existed {
                        return Err(format!("no run-time record {name} {addr}"));
                    }
                    tracing::info!(netns = %self.ns.name, %name, %addr, "dns: record removed");
                    Ok(json!({ "removed": name, "addr": addr.to_string() }))
                }
            }
            other => Err(format!(
                "unknown dns action {other:?} (stats, flush, add, remove)"
            )),
        }
    }
}

impl DnsNs {
    fn stats_json(&self) -> Value {
        let g = self.lock();
        let s = g.resolver.stats();
        let avg_us = s.latency_sum_us.checked_div(s.latency_count).unwrap_or(0);
        let upstreams: Vec<Value> = g
            .resolver
            .upstream_status()
            .iter()
            .map(|u| {
                json!({
                    "addr": u.addr.to_string(),
                    "srtt_us": u.srtt.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
                    "failures": u.failures,
                    "down": u.down,
                })
            })
            .collect();
        json!({
            "queries": s.queries,
            "cache_hits": s.cache_hits,
            "cache_misses": s.cache_misses,
            "local_answers": s.local_answers,
            "stale_answers": s.stale_answers,
            "upstream_answers": s.upstream_answers,
            "coalesced": s.coalesced,
            "upstream_queries": s.upstream_queries,
            "upstream_responses": s.upstream_responses,
            "upstream_failures": s.upstream_failures,
            "upstream_ignored": s.upstream_ignored,
            "tcp_retries": s.tcp_retries,
            "upstream_latency_avg_us": avg_us,
            "refused": s.refused,
            "formerr": s.formerr,
            "notimp": s.notimp,
            "servfail": s.servfail,
            "dropped": s.dropped,
            "rate_limited": s.rate_limited,
            "cache_entries": g.resolver.cache_len(),
            "outstanding": g.resolver.outstanding(),
            "upstream_source": g.upstream_source,
            "upstreams": upstreams,
        })
    }
}
