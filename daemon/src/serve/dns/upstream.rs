//! Upstream UDP attempts: each one leaves from a pooled socket of its own (`pool.rs`),
//! connected to its upstream just before the send (a fresh random source port), or shares a
//! busy socket to the same upstream past `MAX_UPSTREAM_SOCKETS`; one reader task per
//! namespace takes every reply from the pool's epoll after a single wakeup.
//!
//! Why one reader: a task, a timer and a reactor registration per attempt cost more than
//! the attempt's DNS work; deadlines are the resolver's (the driver's one timer frees the
//! sockets of timed-out attempts).

use std::io;
use std::sync::{Arc, Weak};
use std::time::Instant;

use nsaux_resolver::{Resolver, Transport, UpstreamOutcome, UpstreamTransmit};
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

use super::pool::UpSock;
use super::{DnsNs, Inner};
use crate::serve::NsInfo;
use crate::sys::epoll::{Epoll, Event, MAX_EVENTS};

/// Upstream datagrams read from one socket per wakeup before the others get their turn.
const UPSTREAM_BUDGET: usize = 64;

impl DnsNs {
    /// Sends one UDP attempt from a free pooled socket, connected now (a fresh random port);
    /// with none free, shares the least busy socket connected to the same upstream once the
    /// pool is full, or queues it until the driver has made more.
    pub(super) fn send_udp(&self, g: &mut Inner, t: UpstreamTransmit, now: Instant) {
        // The core says how long this attempt lives; the socket is busy exactly that long.
        let until = t.deadline;
        let v6 = t.upstream.is_ipv6();
        let Some(key) = g.pool.take(v6, now) else {
            if let Some(s) = g.pool.shared(t.upstream) {
                match send_upstream(&s.sock, &t) {
                    Ok(()) => s.ids.push((t.dns_id, until)),
                    Err(e) => {
                        tracing::debug!(netns = %self.ns.name, upstream = %t.upstream, error = %e, "dns: upstream send failed");
                        g.resolver
                            .handle_upstream_error(now, t.upstream, Transport::Udp, t.dns_id);
                    }
                }
                return;
            }
            g.pool.backlog.push(t);
            if g.pool.socks.len() < super::pool::MAX_UPSTREAM_SOCKETS {
                g.pool.want(v6);
            }
            return;
        };
        let Some(s) = g.pool.socks.get_mut(&key) else {
            return;
        };
        // connect() draws a random ephemeral port (the socket holds none while free) and
        // makes the kernel drop datagrams from anywhere else and report ICMP errors.
        let sent = s
            .sock
            .connect(t.upstream)
            .and_then(|()| send_upstream(&s.sock, &t));
        s.upstream = Some(t.upstream);
        match sent {
            Ok(()) => s.ids.push((t.dns_id, until)),
            Err(e) => {
                tracing::debug!(netns = %self.ns.name, upstream = %t.upstream, error = %e, "dns: upstream send failed");
                g.pool.close(key);
                g.resolver
                    .handle_upstream_error(now, t.upstream, Transport::Udp, t.dns_id);
            }
        }
    }

    /// Sends the transmits that waited for a socket, as far as sockets are free now.
    pub(super) fn send_backlog(&self, g: &mut Inner, now: Instant) {
        if g.pool.backlog.is_empty() {
            return;
        }
        for t in std::mem::take(&mut g.pool.backlog) {
            self.send_udp(g, t, now);
        }
    }

    /// A batch of upstream sockets was made (or not): add them to the pool (starting its
    /// reader when it had no socket) and send what waited for them.
    pub(super) fn spares_made(&self, v6: bool, made: io::Result<Vec<std::net::UdpSocket>>) {
        let now = Instant::now();
        let mut g = self.lock();
        let added = made.and_then(|socks| g.pool.add(v6, socks, now, self.stop()));
        match added {
            Ok(started) => {
                if let Some((epoll, stop)) = started {
                    let weak = self.me.clone();
                    crate::serve::contain::spawn_logged(
                        &self.ns.name,
                        "dns upstream reader",
                        reader(self.me.clone(), epoll, stop),
                        move || {
                            // A panicked reader must not leave sockets nobody reads: drop
                            // the pool (its attempts time out) and let the next miss make one.
                            if let Some(this) = weak.upgrade() {
                                this.lock().pool.clear();
                            }
                        },
                    );
                }
                self.send_backlog(&mut g, now);
            }
            Err(e) => {
                tracing::warn!(netns = %self.ns.name, error = %e, v6, "dns: cannot create upstream socket");
                let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut g.pool.backlog)
                    .into_iter()
                    .partition(|t| t.upstream.is_ipv6() == v6);
                g.pool.backlog = rest;
                for t in &mine {
                    g.resolver
                        .handle_upstream_error(now, t.upstream, Transport::Udp, t.dns_id);
                }
            }
        }
        self.pump(&mut g, now);
    }

    /// Events from the pool's epoll: feeds each ready socket's replies to the resolver,
    /// frees the sockets whose attempts all ended, and pumps once for the whole batch.
    /// Returns the keys cut short by `UPSTREAM_BUDGET` (read again before waiting).
    fn on_upstream_events(&self, events: &[Event]) -> Vec<Event> {
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 65_536]);
        }
        BUF.with(|b| {
            let mut buf = b.borrow_mut();
            let now = Instant::now();
            let mut g = self.lock();
            let inner = &mut *g;
            inner.limit_cache();
            let mut carry = Vec::new();
            for ev in events {
                let Some(s) = inner.pool.socks.get_mut(&ev.key) else {
                    continue;
                };
                let read = read_replies(&self.ns, &mut inner.resolver, s, &mut buf, now);
                if read.more {
                    carry.push(*ev);
                }
                let Some(up) = s.upstream else { continue };
                if read.failed || ev.error {
                    // ICMP unreachable: its attempts fail now rather than at their timeout,
                    // and the socket (its error reported or not) is not reused.
                    for (id, _) in s.ids.drain(..) {
                        inner
                            .resolver
                            .handle_upstream_error(now, up, Transport::Udp, id);
                    }
                    inner.pool.close(ev.key);
                } else if s.ids.is_empty() {
                    inner.pool.release(ev.key);
                }
            }
            self.send_backlog(inner, now);
            inner.account_cache(&self.ns);
            self.pump(inner, now);
            carry
        })
    }
}

/// What reading one socket found.
#[derive(Debug, Clone, Copy, Default)]
struct Read {
    /// The kernel reported an error for its upstream (ICMP port or host unreachable).
    failed: bool,
    /// `UPSTREAM_BUDGET` datagrams were read and more may wait.
    more: bool,
}

/// The per-namespace reader: waits for the pool's epoll and hands each batch of events to
/// [`DnsNs::on_upstream_events`]; ends when the pool closes or the namespace goes.
async fn reader(weak: Weak<DnsNs>, epoll: Arc<AsyncFd<Epoll>>, stop: CancellationToken) {
    let mut events = Vec::with_capacity(MAX_EVENTS);
    let mut carry: Vec<Event> = Vec::new();
    loop {
        events.clear();
        if carry.is_empty() {
            let mut guard = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                r = epoll.readable() => match r {
                    Ok(g) => g,
                    Err(_) => break,
                },
            };
            let Ok(n) = epoll.get_ref().ready(&mut events) else {
                break;
            };
            // Entries are edge-triggered and these events are taken: what arrives from now
            // on wakes the reactor again. A full batch may leave more queued: look again.
            if n < MAX_EVENTS {
                guard.clear_ready();
            }
            if n == 0 {
                continue;
            }
        } else {
            tokio::task::yield_now().await;
            if stop.is_cancelled() {
                break;
            }
            events.append(&mut carry);
        }
        let Some(this) = weak.upgrade() else { break };
        // Upstream answers are their namespace's work as much as queries are: charged to
        // the same per-round share as its listeners (`serve/share.rs`), so under a flood of
        // misses the listeners read fewer new queries per round. They never wait for the
        // share: answers already asked for must not be starved by the namespace's own
        // listeners (they would time out and mark the upstream down).
        this.ns.share.charge(events.len());
        carry = this.on_upstream_events(&events);
        drop(this);
        if events.len() >= MAX_EVENTS {
            tokio::task::yield_now().await;
        }
    }
}

/// Feeds up to `UPSTREAM_BUDGET` waiting replies on pooled socket `s` to the resolver and
/// retires the attempts they end. Stops once its last attempt is answered: the socket is
/// freed then, and a read that would only say "nothing more" is a system call per miss.
/// A free socket's datagrams (late copies to a port it no longer holds) are dropped.
fn read_replies(
    ns: &NsInfo,
    resolver: &mut Resolver,
    s: &mut UpSock,
    buf: &mut [u8],
    now: Instant,
) -> Read {
    let mut read = Read::default();
    for _ in 0..UPSTREAM_BUDGET {
        // A connected socket receives only from its upstream: no source address to read.
        match s.sock.recv(buf) {
            Ok(n) => {
                let Some(from) = s.upstream else { continue };
                let data = &buf[..n];
                let outcome = resolver.handle_upstream(now, from, Transport::Udp, data);
                if matches!(outcome, UpstreamOutcome::Accepted | UpstreamOutcome::Late)
                    && let Some(id) = nsaux_resolver::message_id(data)
                {
                    s.ids.retain(|(i, _)| *i != id);
                    if s.ids.is_empty() {
                        return read;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return read,
            Err(e) => {
                tracing::debug!(netns = %ns.name, upstream = ?s.upstream, error = %e, "dns: upstream unreachable");
                read.failed = s.upstream.is_some();
                return read;
            }
        }
    }
    read.more = true;
    read
}

/// Creates an unbound, non-blocking UDP socket for upstream queries. Call inside the
/// namespace.
fn upstream_udp(v6: bool) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    // Non-blocking and close-on-exec from the start: no fcntl calls.
    let s = Socket::new(
        domain,
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    if v6 {
        s.set_only_v6(true)?;
    }
    // No bind: connect() picks a random ephemeral port each time the socket is used, so a
    // free socket holds no port.
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

/// Sends one upstream datagram now on a socket connected to `t.upstream` (no destination
/// address: the kernel uses the route cached at connect).
fn send_upstream(s: &std::net::UdpSocket, t: &UpstreamTransmit) -> io::Result<()> {
    s.send(&t.payload).map(|_| ())
}
