//! The namespace's upstream UDP sockets: made inside the namespace in batches, each one used
//! for one attempt at a time and reused for the next with a fresh random port, all watched
//! by one inner epoll; closed after `SPARE_IDLE` without use.
//!
//! Why reuse: a socket must be created inside its namespace (a trip to the namespace thread),
//! and making, registering and closing one per cache miss cost more CPU than the miss's own
//! DNS work. A UDP socket whose port the kernel chose gives that port back when it is
//! disconnected (`connect(AF_UNSPEC)`), and its next `connect` draws a new random one: the
//! same protection as a new socket per query (random port and random ID), for two system
//! calls and no trip.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nsaux_resolver::UpstreamTransmit;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

use crate::sys::epoll::{Epoll, udp_disconnect};

/// Upstream UDP sockets made per trip into the namespace, at least.
const SPARE_BATCH: usize = 8;
/// At most: a busy namespace makes as many as it has sockets (a trip into the namespace
/// costs tens of µs, so a growing stream of misses must not pay one per few misses).
const SPARE_BATCH_MAX: usize = 32;
/// When fewer free sockets than this are left after taking one, the next batch is made
/// (more when many are busy, so a batch arrives before the free ones run out).
const SPARE_LOW: usize = 2;
/// Free sockets unused this long are closed (an idle namespace holds no upstream socket).
pub(super) const SPARE_IDLE: Duration = Duration::from_secs(10);
/// Most upstream UDP sockets open at once per namespace; beyond it, attempts share the
/// sockets already talking to the same upstream (bounds fds under a flood of misses).
pub(super) const MAX_UPSTREAM_SOCKETS: usize = 64;

/// One upstream UDP socket of the pool.
#[derive(Debug)]
pub(super) struct UpSock {
    /// The socket (non-blocking, never bound: its port is drawn at each connect).
    pub(super) sock: std::net::UdpSocket,
    /// An IPv6 socket.
    v6: bool,
    /// The upstream it is connected to while busy; `None` while free (disconnected).
    pub(super) upstream: Option<SocketAddr>,
    /// Attempts sent from it and not answered yet: (DNS ID, when the attempt times out).
    pub(super) ids: Vec<(u16, Instant)>,
}

/// The inner epoll all sockets of the pool are watched by, and its reader task's stop.
#[derive(Debug)]
pub(super) struct Watch {
    /// The epoll instance, registered with the reactor.
    pub(super) epoll: Arc<AsyncFd<Epoll>>,
    /// Ends the reader task when the pool closes.
    pub(super) stop: CancellationToken,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The pool of one namespace, made at its first upstream query and dropped when its driver
/// stops. Why: most namespaces never forward a query, and an empty [`UpPool`] is 168 bytes
/// (issue 16: bytes per namespace). Reads of an absent pool see an empty one; the first
/// change makes it.
#[derive(Debug, Default)]
pub(super) struct LazyPool(Option<Box<UpPool>>);

/// What an absent pool reads as.
static EMPTY: std::sync::LazyLock<UpPool> = std::sync::LazyLock::new(UpPool::default);

impl LazyPool {
    /// Drops the pool (the driver stopped): every socket, waiting transmit and wish, and the
    /// memory until the next query needs it again.
    pub(super) fn clear(&mut self) {
        self.0 = None;
    }

    /// Whether the pool exists (a test looks at the lazy path).
    #[cfg(test)]
    pub(super) fn made(&self) -> bool {
        self.0.is_some()
    }
}

impl std::ops::Deref for LazyPool {
    type Target = UpPool;
    fn deref(&self) -> &UpPool {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl std::ops::DerefMut for LazyPool {
    fn deref_mut(&mut self) -> &mut UpPool {
        self.0.get_or_insert_with(Box::default)
    }
}

/// All upstream UDP sockets of one namespace.
#[derive(Debug, Default)]
pub(super) struct UpPool {
    /// Present while the pool holds any socket.
    watch: Option<Watch>,
    /// Every socket, by the key its epoll entry reports.
    pub(super) socks: HashMap<u64, UpSock>,
    /// Keys of free sockets, per family.
    free4: Vec<u64>,
    free6: Vec<u64>,
    /// Next socket key.
    next_key: u64,
    /// When free sockets are closed if still unused.
    pub(super) idle_until: Option<Instant>,
    /// A batch of sockets is wanted (IPv4, IPv6) for the driver to make.
    want4: bool,
    want6: bool,
    /// UDP transmits waiting for a socket of their family.
    pub(super) backlog: Vec<UpstreamTransmit>,
}

impl UpPool {
    /// Sockets in use (connected to an upstream).
    pub(super) fn busy(&self) -> usize {
        self.socks.len() - self.free4.len() - self.free6.len()
    }

    /// Free sockets (no port held).
    pub(super) fn free(&self) -> usize {
        self.free4.len() + self.free6.len()
    }

    /// Takes a free socket of this family (and asks for more when few are left).
    pub(super) fn take(&mut self, v6: bool, now: Instant) -> Option<u64> {
        let free = if v6 { &mut self.free6 } else { &mut self.free4 };
        let key = free.pop();
        let left = free.len();
        if left < SPARE_LOW.max(self.busy() / 4) && self.socks.len() < MAX_UPSTREAM_SOCKETS {
            self.want(v6);
        }
        if key.is_some() {
            self.idle_until = Some(now + SPARE_IDLE);
        }
        key
    }

    /// The least busy socket connected to `upstream` (to share, once the pool is full).
    pub(super) fn shared(&mut self, upstream: SocketAddr) -> Option<&mut UpSock> {
        if self.socks.len() < MAX_UPSTREAM_SOCKETS {
            return None;
        }
        self.socks
            .values_mut()
            .filter(|s| s.upstream == Some(upstream))
            .min_by_key(|s| s.ids.len())
    }

    /// Socket `key` has no attempt left: it gives its port back and becomes free (closed
    /// instead if that fails).
    pub(super) fn release(&mut self, key: u64) {
        let Some(s) = self.socks.get_mut(&key) else {
            return;
        };
        s.ids.clear();
        if s.upstream.take().is_none() {
            return;
        }
        if udp_disconnect(s.sock.as_fd()).is_ok() {
            if s.v6 {
                self.free6.push(key);
            } else {
                self.free4.push(key);
            }
        } else {
            self.close(key);
        }
    }

    /// Closes socket `key` (its epoll entry goes with it).
    pub(super) fn close(&mut self, key: u64) {
        if let Some(s) = self.socks.remove(&key)
            && s.upstream.is_none()
        {
            let free = if s.v6 {
                &mut self.free6
            } else {
                &mut self.free4
            };
            free.retain(|k| *k != key);
        }
        if self.socks.is_empty() {
            self.watch = None;
        }
    }

    /// Adds sockets made in the namespace as free ones. Returns the new watch's epoll and
    /// stop token when the pool had none (the caller starts its reader).
    pub(super) fn add(
        &mut self,
        v6: bool,
        made: Vec<std::net::UdpSocket>,
        now: Instant,
        parent: &CancellationToken,
    ) -> io::Result<Option<(Arc<AsyncFd<Epoll>>, CancellationToken)>> {
        let mut started = None;
        if self.watch.is_none() {
            let epoll = Arc::new(Epoll::new()?.into_async()?);
            let stop = parent.child_token();
            started = Some((Arc::clone(&epoll), stop.clone()));
            self.watch = Some(Watch { epoll, stop });
        }
        let Some(watch) = &self.watch else {
            return Ok(None);
        };
        for sock in made {
            self.next_key = self.next_key.wrapping_add(1);
            let key = self.next_key;
            if watch.epoll.get_ref().add(sock.as_fd(), key).is_err() {
                continue;
            }
            self.socks.insert(
                key,
                UpSock {
                    sock,
                    v6,
                    upstream: None,
                    ids: Vec::new(),
                },
            );
            if v6 {
                self.free6.push(key);
            } else {
                self.free4.push(key);
            }
        }
        self.idle_until = Some(now + SPARE_IDLE);
        if self.socks.is_empty() {
            self.watch = None;
            return Ok(None);
        }
        Ok(started)
    }

    /// Retires attempts whose deadline passed (the resolver has timed them out) and frees
    /// the sockets left without any; closes every free socket once the pool was idle for
    /// `SPARE_IDLE`.
    pub(super) fn sweep(&mut self, now: Instant) {
        let done: Vec<u64> = self
            .socks
            .iter_mut()
            .filter(|(_, s)| s.upstream.is_some())
            .filter_map(|(k, s)| {
                s.ids.retain(|(_, until)| *until > now);
                s.ids.is_empty().then_some(*k)
            })
            .collect();
        for key in done {
            self.release(key);
        }
        if self.idle_until.is_some_and(|t| now >= t) {
            for key in std::mem::take(&mut self.free4)
                .into_iter()
                .chain(std::mem::take(&mut self.free6))
            {
                self.socks.remove(&key);
            }
            if self.socks.is_empty() {
                self.watch = None;
                self.idle_until = None;
            } else {
                // Busy ones are left: they are closed at the next idle point once free.
                self.idle_until = Some(now + SPARE_IDLE);
            }
        }
    }

    /// Asks the driver for a batch of sockets of this family.
    pub(super) fn want(&mut self, v6: bool) {
        if v6 {
            self.want6 = true;
        } else {
            self.want4 = true;
        }
    }

    /// Whether a batch is wanted.
    pub(super) fn wanted(&self) -> bool {
        self.want4 || self.want6
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
        let batch = self.socks.len().clamp(SPARE_BATCH, SPARE_BATCH_MAX);
        (queued + batch).min(MAX_UPSTREAM_SOCKETS.saturating_sub(self.socks.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(n: usize) -> Vec<std::net::UdpSocket> {
        super::super::upstream::upstream_batch(false, n).expect("sockets")
    }

    fn port(s: &std::net::UdpSocket) -> u16 {
        s.local_addr().map_or(0, |a| a.port())
    }

    #[tokio::test]
    async fn a_reused_socket_gets_a_fresh_port_and_an_idle_pool_closes_everything() {
        let stop = CancellationToken::new();
        let now = Instant::now();
        let mut pool = UpPool::default();
        let started = pool.add(false, made(2), now, &stop).expect("add");
        let (_, reader_stop) = started.expect("a new pool starts its reader");
        assert_eq!((pool.busy(), pool.free()), (0, 2));
        let upstream: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let mut ports = Vec::new();
        for _ in 0..8 {
            let key = pool.take(false, now).expect("a free socket");
            let s = pool.socks.get_mut(&key).expect("socket");
            s.sock.connect(upstream).expect("connect");
            s.upstream = Some(upstream);
            s.ids.push((1, now + Duration::from_secs(1)));
            ports.push(port(&s.sock));
            assert_eq!(pool.busy(), 1);
            pool.release(key);
            assert_eq!(
                port(&pool.socks[&key].sock),
                0,
                "a free socket holds no port"
            );
        }
        ports.sort_unstable();
        ports.dedup();
        assert!(ports.len() >= 7, "a fresh random port per use: {ports:?}");
        // A timed-out attempt frees its socket at the sweep.
        let key = pool.take(false, now).expect("free");
        if let Some(s) = pool.socks.get_mut(&key) {
            s.sock.connect(upstream).expect("connect");
            s.upstream = Some(upstream);
            s.ids.push((2, now + Duration::from_millis(5)));
        }
        pool.sweep(now + Duration::from_millis(10));
        assert_eq!((pool.busy(), pool.free()), (0, 2));
        // Idle: every socket and the epoll go, and the reader is told to stop.
        pool.sweep(now + SPARE_IDLE + Duration::from_secs(1));
        assert!(pool.socks.is_empty());
        assert!(reader_stop.is_cancelled());
        assert_eq!(pool.idle_until, None);
    }

    #[tokio::test]
    async fn a_lazy_pool_is_made_by_its_first_use_and_dropped_when_cleared() {
        let stop = CancellationToken::new();
        let now = Instant::now();
        let mut pool = LazyPool::default();
        // Reads of an absent pool see an empty one and make nothing.
        assert_eq!((pool.busy(), pool.free(), pool.wanted()), (0, 0, false));
        assert!(!pool.made());
        // The first miss: a socket is taken (none yet), a batch wanted, then added.
        assert_eq!(pool.take(false, now), None);
        assert!(pool.made());
        pool.want(false);
        assert!(pool.wanted());
        let started = pool.add(false, made(1), now, &stop).expect("add");
        let (_, reader_stop) = started.expect("a new pool starts its reader");
        assert_eq!((pool.busy(), pool.free()), (0, 1));
        assert!(pool.take(false, now).is_some());
        assert_eq!(pool.busy(), 1);
        // The driver stopped: sockets, reader and memory go; reads see an empty pool again.
        pool.clear();
        assert!(!pool.made());
        assert!(reader_stop.is_cancelled());
        assert_eq!((pool.busy(), pool.free(), pool.wanted()), (0, 0, false));
    }

    #[test]
    fn batches_never_exceed_the_socket_cap() {
        let mut pool = UpPool::default();
        pool.want(false);
        assert_eq!(pool.take_want(false), SPARE_BATCH);
        assert_eq!(pool.take_want(false), 0, "asked once");
        assert!(!pool.wanted());
    }
}
