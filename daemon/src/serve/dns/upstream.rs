//! Upstream UDP sockets: spares made inside the namespace in batches, one connected
//! socket per attempt (a fresh random source port), sharing past `MAX_UPSTREAM_SOCKETS`,
//! and a small task per socket that reads its replies or reaches its deadline.
//!
//! Why spares: a socket must be created inside the namespace (a trip to its thread), which
//! a cache miss should not wait for; connecting a spare picks the random port instead.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use nsaux_resolver::{Resolver, Transport, UpstreamOutcome, UpstreamTransmit};
use tokio::io::Interest;
use tokio_util::sync::CancellationToken;

use super::{DnsNs, Inner};
use crate::serve::NsInfo;

/// Upstream datagrams handled per wakeup before yielding.
const UPSTREAM_BUDGET: usize = 64;
/// Upstream UDP sockets made per trip into the namespace, at least.
const SPARE_BATCH: usize = 8;
/// At most: a busy namespace makes as many as it has sockets in flight (a trip into the
/// namespace costs tens of µs, so a stream of misses must not pay one per few misses).
const SPARE_BATCH_MAX: usize = 32;
/// When fewer spares than this are left after taking one, the next batch is made (more
/// when many sockets are in flight, so a batch arrives before the spares run out).
const SPARE_LOW: usize = 2;
/// Spare sockets unused this long are closed (an idle namespace holds no upstream socket).
const SPARE_IDLE: Duration = Duration::from_secs(10);
/// Most upstream UDP sockets open at once per namespace; beyond it, attempts share the
/// sockets already talking to the same upstream (bounds fds under a flood of misses).
const MAX_UPSTREAM_SOCKETS: usize = 64;

/// An upstream UDP socket in use: connected to one upstream, with its own random port.
#[derive(Debug)]
pub(super) struct UpSock {
    /// The socket (its task holds another reference).
    sock: Arc<tokio::net::UdpSocket>,
    /// The upstream it is connected to.
    upstream: SocketAddr,
    /// Attempts sent from it and not answered yet: (DNS ID, when the attempt times out).
    ids: Vec<(u16, Instant)>,
}

impl DnsNs {
    /// Sends one UDP attempt from a socket of its own (a spare, connected now: a fresh random
    /// port), or queues it until the driver has made spares. Over `MAX_UPSTREAM_SOCKETS`, it
    /// shares the least busy socket already connected to the same upstream.
    pub(super) fn send_udp(&self, g: &mut Inner, t: UpstreamTransmit, now: Instant) {
        // The core says how long this attempt lives; the socket waits exactly that long.
        let until = t.deadline;
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
        if spares.len() < SPARE_LOW.max(g.socks.len() / 4) {
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
                crate::serve::contain::spawn_logged(
                    &self.ns.name,
                    "dns upstream socket",
                    upstream_socket(self.me.clone(), key, sock, until, self.stop.clone()),
                    || {},
                );
            }
            Err(e) => {
                tracing::debug!(netns = %self.ns.name, upstream = %t.upstream, error = %e, "dns: upstream send failed");
                g.resolver
                    .handle_upstream_error(now, t.upstream, Transport::Udp, t.dns_id);
            }
        }
    }

    /// A batch of upstream sockets was made (or not): keep them as spares and send what
    /// waited for them.
    pub(super) fn spares_made(&self, v6: bool, made: io::Result<Vec<std::net::UdpSocket>>) {
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
            inner.limit_cache();
            let entry = inner.socks.get_mut(&key)?;
            let mut failed = matches!(event, SockEvent::Error | SockEvent::Broken);
            if matches!(event, SockEvent::Readable | SockEvent::Error)
                && read_replies(&self.ns, &mut inner.resolver, entry, sock, &mut buf, now)
            {
                failed = true;
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
            inner.account_cache(&self.ns);
            self.pump(inner, now);
            next
        })
    }
}

/// Feeds up to `UPSTREAM_BUDGET` waiting replies on `sock` to the resolver and retires the
/// attempts they end. True when the kernel reported an error for the socket's upstream
/// (ICMP port or host unreachable): its attempts fail now rather than at the timeout.
fn read_replies(
    ns: &NsInfo,
    resolver: &mut Resolver,
    entry: &mut UpSock,
    sock: &tokio::net::UdpSocket,
    buf: &mut [u8],
    now: Instant,
) -> bool {
    for _ in 0..UPSTREAM_BUDGET {
        match sock.try_recv_from(buf) {
            Ok((n, from)) => {
                let data = &buf[..n];
                let outcome = resolver.handle_upstream(now, from, Transport::Udp, data);
                if matches!(outcome, UpstreamOutcome::Accepted | UpstreamOutcome::Late)
                    && let Some(id) = nsaux_resolver::message_id(data)
                {
                    entry.ids.retain(|(i, _)| *i != id);
                    if entry.ids.is_empty() {
                        // Its last attempt is answered and the socket closes: no read
                        // that would only say "nothing more" (a syscall per miss).
                        break;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                tracing::debug!(netns = %ns.name, upstream = %entry.upstream, error = %e, "dns: upstream unreachable");
                return true;
            }
        }
    }
    false
}

impl Inner {
    /// Asks the driver for a batch of spare sockets of this family.
    pub(super) fn want(&mut self, v6: bool) {
        if v6 {
            self.want6 = true;
        } else {
            self.want4 = true;
        }
    }

    /// How many sockets of this family the driver should make now (0: none wanted).
    pub(super) fn take_want(&mut self, v6: bool) -> usize {
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
        let batch = (self.socks.len()).clamp(SPARE_BATCH, SPARE_BATCH_MAX);
        (queued + batch).min(MAX_UPSTREAM_SOCKETS)
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
pub(super) fn upstream_batch(v6: bool, n: usize) -> io::Result<Vec<std::net::UdpSocket>> {
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

/// Sends one upstream datagram now on a socket connected to `t.upstream`. A direct `send`
/// rather than tokio's `try_send`, which reports WouldBlock until the reactor has seen the
/// new socket writable; and no destination address, so the kernel uses the route cached at
/// connect instead of looking it up again per datagram.
fn send_upstream(s: &impl std::os::fd::AsFd, t: &UpstreamTransmit) -> io::Result<()> {
    socket2::SockRef::from(s).send(&t.payload).map(|_| ())
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
        if event == SockEvent::Readable {
            // An upstream answer is its namespace's work as much as a query is: it is charged
            // to the same per-round share as the namespace's listeners (`serve/share.rs`), so
            // under a flood of cache misses the listeners read fewer new queries per round.
            // It never waits for the share: answers already asked for must not be starved by
            // the namespace's own listeners (they would time out and mark the upstream down),
            // and there are at most as many as queries read in earlier rounds.
            this.ns.share.charge(1);
        }
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
