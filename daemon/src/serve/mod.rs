//! Per-namespace service plumbing.
//!
//! A [`ServiceKind`] (ident, rpcbind, dns, ntp) turns a namespace's effective configuration into
//! an [`NsService`] instance holding that namespace's state (tables, caches). The manager opens the
//! instance's listeners inside the namespace, the loops feed it datagrams and connections with
//! their context, and drops everything when the namespace goes. Services never open listeners
//! themselves, so they cannot end up in the wrong namespace.

pub(crate) mod coalesce;
pub(crate) mod contain;
pub(crate) mod dns;
#[cfg(feature = "fault-injection")]
pub(crate) mod fault;
pub(crate) mod ident;
pub(crate) mod ntp;
pub(crate) mod pace;
pub(crate) mod quiet;
pub(crate) mod rpcbind;
pub(crate) mod share;
pub(crate) mod shared_cfg;
pub(crate) mod slots;
pub(crate) mod stream;
pub(crate) mod udp;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::config::ServicesConfig;
use crate::netns::NetnsId;
use crate::netns::factory::SocketFactory;
use crate::netns::handle::NsHandle;

/// Where a service listens inside a namespace. Also the key for keeping a socket across reloads:
/// a listener whose spec did not change is never closed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ListenerSpec {
    /// A UDP socket (pktinfo always on).
    Udp {
        /// Bind address.
        addr: SocketAddr,
        /// Ask for kernel receive timestamps.
        rx_timestamps: bool,
        /// One `[::]` socket serving IPv4 too (`IPV6_V6ONLY` off), standing for a `0.0.0.0`
        /// and a `[::]` listener: one fd instead of two (see `manager::dual`).
        dual_stack: bool,
    },
    /// A TCP listener.
    Tcp {
        /// Bind address.
        addr: SocketAddr,
        /// As for [`ListenerSpec::Udp`].
        dual_stack: bool,
    },
    /// An abstract AF_LOCAL listener (`"\0name"`), scoped to the namespace.
    UnixAbstract {
        /// The name without the leading NUL.
        name: String,
    },
}

impl ListenerSpec {
    /// UDP and/or TCP listeners on `port` at each of `addresses`: the usual shape of a service
    /// that answers on both transports.
    pub(crate) fn ip_pairs(addresses: &[IpAddr], port: u16, udp: bool, tcp: bool) -> Vec<Self> {
        let mut v = Vec::new();
        for ip in addresses {
            let addr = SocketAddr::new(*ip, port);
            if udp {
                v.push(Self::Udp {
                    addr,
                    rx_timestamps: false,
                    dual_stack: false,
                });
            }
            if tcp {
                v.push(Self::Tcp {
                    addr,
                    dual_stack: false,
                });
            }
        }
        v
    }
}

impl fmt::Display for ListenerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Udp {
                addr, dual_stack, ..
            } => write!(f, "udp:{addr}{}", if *dual_stack { "+v4" } else { "" }),
            Self::Tcp { addr, dual_stack } => {
                write!(f, "tcp:{addr}{}", if *dual_stack { "+v4" } else { "" })
            }
            Self::UnixAbstract { name } => write!(f, "local:@{name}"),
        }
    }
}

/// The namespace a service instance serves, shared by all its tasks.
#[derive(Debug)]
pub(crate) struct NsInfo {
    /// Kernel identity.
    pub(crate) id: NetnsId,
    /// Label (file name, attach name, or "host").
    pub(crate) name: String,
    /// `(st_dev, st_ino)` of the namespace file the manager holds open: what
    /// `stat("/proc/PID/ns/net")` gives for a process inside it. Valid only while the namespace
    /// is tracked (inode numbers are recycled after it is freed); `None` if fstat failed.
    pub(crate) nsfs: Option<(u64, u64)>,
    /// Cancelled when the namespace goes: every task holding a socket in it must end then, or
    /// the namespace lives on as a zombie.
    pub(crate) cancel: CancellationToken,
    /// The namespace, held by its file or by one of our sockets inside it, so services can
    /// create sockets inside the namespace later (e.g. DNS upstream queries).
    pub(crate) handle: NsHandle,
    /// Creates sockets inside a namespace on the daemon's namespace thread.
    pub(crate) factory: SocketFactory,
    /// The daemon's own namespace (`host_netns`): its DNS upstreams come from the host's
    /// resolver configuration, not from `NETNS_ETC_DIR/NAME/`.
    pub(crate) is_host: bool,
    /// Its share of the event loop, drawn on by all its UDP sockets (see [`share`]).
    pub(crate) share: share::NsShare,
    /// This namespace's counters for the metrics: here, not in a service, so they survive
    /// reloads and service rebuilds (see `crate::metrics`).
    pub(crate) metrics: Arc<crate::metrics::NsMetrics>,
}

impl NsInfo {
    /// Runs `f` inside this namespace (on the namespace thread) and returns its result: the
    /// way for a service to create sockets that use the namespace's routes and addresses.
    pub(crate) async fn run_in<R, F>(&self, f: F) -> io::Result<R>
    where
        R: Send + 'static,
        F: FnOnce() -> io::Result<R> + Send + 'static,
    {
        let fd = self.handle.open()?;
        self.factory.run_in(fd, f).await
    }
}

/// A received datagram and what the kernel said about it.
#[derive(Debug)]
pub(crate) struct Datagram<'a> {
    /// Payload (borrowed from a per-thread buffer: copy what you keep).
    pub(crate) data: &'a [u8],
    /// Sender.
    pub(crate) peer: SocketAddr,
    /// The local address it was sent to (pktinfo), with the socket's port.
    pub(crate) local: SocketAddr,
    /// Arrival interface.
    pub(crate) ifindex: u32,
    /// Kernel receive time, if the listener asked for timestamps.
    pub(crate) rx_time: Option<SystemTime>,
    /// Monotonic time its batch was taken off the socket: one clock read per batch serves
    /// every rate limit and cache age in it (a batch is handled within microseconds).
    pub(crate) received: Instant,
    /// Wall-clock time its batch was taken off the socket, for the cores that need calendar
    /// time (the portmapper's GETTIME and forward ages): read once per batch beside `received`,
    /// so no core reads a clock of its own.
    pub(crate) wall: SystemTime,
    /// Longer than the receive buffer; `data` is cut.
    pub(crate) truncated: bool,
}

/// Where one reply goes: the datagram's peer, and the local address it leaves from (so a
/// wildcard socket answers from the address that was queried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplyTo {
    /// Destination.
    pub(crate) dst: SocketAddr,
    /// Source address (pktinfo on send).
    pub(crate) src: IpAddr,
    /// Interface to leave by (0: let routing choose).
    pub(crate) ifindex: u32,
}

impl ReplyTo {
    /// Back to the sender of `d`, from the address `d` arrived at.
    pub(crate) fn sender(d: &Datagram<'_>) -> Self {
        Self {
            dst: d.peer,
            src: d.local.ip(),
            ifindex: d.ifindex,
        }
    }
}

/// The replies of one received batch: the one send path for immediate answers. A service
/// writes each answer into [`Replies::buf`] and queues it with [`Replies::commit`]; the loop
/// sends every queued reply of the batch in one `sendmmsg` once the batch is handled. The
/// buffers are reused batch after batch, so answering allocates nothing in steady state.
#[derive(Debug, Default)]
pub(crate) struct Replies {
    /// Reply buffers; the first `heads.len()` are queued, the next one is being written.
    bufs: Vec<Vec<u8>>,
    /// Where each queued reply goes.
    heads: Vec<ReplyTo>,
}

impl Replies {
    /// The buffer for the next reply, empty. Nothing is sent unless [`Replies::commit`] follows.
    pub(crate) fn buf(&mut self) -> &mut Vec<u8> {
        let n = self.heads.len();
        if self.bufs.len() <= n {
            self.bufs.push(Vec::with_capacity(4096));
        }
        let b = &mut self.bufs[n];
        b.clear();
        b
    }

    /// Queues what was written into [`Replies::buf`] for `to`.
    pub(crate) fn commit(&mut self, to: ReplyTo) {
        let n = self.heads.len();
        if self.bufs.len() <= n {
            // commit without buf: an empty reply is never sent.
            return;
        }
        self.heads.push(to);
    }

    /// Queued replies and where they go, in order.
    pub(crate) fn queued(&self) -> impl Iterator<Item = (&[u8], ReplyTo)> {
        self.bufs
            .iter()
            .zip(self.heads.iter())
            .map(|(b, h)| (b.as_slice(), *h))
    }

    /// Number of queued replies.
    pub(crate) fn len(&self) -> usize {
        self.heads.len()
    }

    /// Forgets the queued replies (their buffers are kept for the next batch).
    pub(crate) fn clear(&mut self) {
        self.heads.clear();
    }
}

/// A UDP socket in some namespace that a service may answer through, now or later.
#[derive(Debug)]
pub(crate) struct UdpEndpoint {
    pub(crate) sock: tokio::net::UdpSocket,
    /// The address it is bound to.
    pub(crate) bound: SocketAddr,
    /// A `[::]` socket that serves IPv4 too (`IPV6_V6ONLY` off).
    pub(crate) dual_stack: bool,
    /// Its datagrams carry control messages (pktinfo, timestamps); without, they are read
    /// with the cheaper plain receive.
    pub(crate) control: bool,
    /// The namespace it lives in.
    pub(crate) ns: Arc<NsInfo>,
}

impl AsFd for UdpEndpoint {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl UdpEndpoint {
    /// Sends `payload` to `peer` from local address `local` (so a wildcard socket answers from
    /// the address that was queried). Never blocks: a full socket buffer drops the datagram,
    /// which is what UDP would do anyway.
    pub(crate) fn send_from(
        &self,
        payload: &[u8],
        peer: SocketAddr,
        local: IpAddr,
        ifindex: u32,
    ) -> io::Result<()> {
        crate::sys::udp::send(self.sock.as_fd(), payload, peer, Some(local), ifindex).map(|_| ())
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    /// An IP peer.
    Ip(SocketAddr),
    /// An AF_LOCAL peer with kernel-verified credentials.
    Local {
        /// Effective uid.
        uid: u32,
        /// Effective gid.
        gid: u32,
        /// Process id, if known.
        pid: Option<i32>,
    },
}

/// A connected stream of either kind.
#[derive(Debug)]
pub(crate) enum Stream {
    /// TCP.
    Tcp(tokio::net::TcpStream),
    /// AF_LOCAL.
    Unix(tokio::net::UnixStream),
}

/// An accepted connection and its context.
#[derive(Debug)]
pub(crate) struct Connection {
    /// The stream.
    pub(crate) stream: Stream,
    /// The peer.
    pub(crate) peer: Peer,
    /// Local address (TCP only).
    pub(crate) local: Option<SocketAddr>,
    /// Its place in the service's slot table: the handler marks each complete record on it,
    /// and dropping it frees the place.
    pub(crate) slot: slots::Slot,
}

/// A boxed future for a connection handler.
pub(crate) type ConnFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One kind of service. Holds whatever is shared across namespaces (e.g. a journal writer).
pub(crate) trait ServiceKind: Send + Sync + fmt::Debug + 'static {
    /// Short name used in config, logs and `ns list`.
    fn name(&self) -> &'static str;

    /// Starts daemon-wide parts (e.g. the portmapper's path socket in the daemon's own mount
    /// namespace) once, when the daemon starts, whether or not any namespace runs the service.
    fn start(&self) {}

    /// Whether the service should run in a namespace with this configuration.
    fn enabled(&self, cfg: &ServicesConfig) -> bool;

    /// Creates the instance for one namespace (its own tables/caches).
    fn instantiate(
        &self,
        ns: Arc<NsInfo>,
        cfg: &ServicesConfig,
    ) -> anyhow::Result<Arc<dyn NsService>>;
}

/// A service's state for one namespace.
pub(crate) trait NsService: Send + Sync + fmt::Debug + 'static {
    /// The listeners it wants now (after construction or the last `reconfigure`).
    fn listeners(&self) -> Vec<ListenerSpec>;

    /// Applies a new effective configuration in place (state is kept).
    fn reconfigure(&self, cfg: &ServicesConfig) -> anyhow::Result<()>;

    /// Handles one datagram. Immediate answers (any number, each with its own destination and
    /// source) go into `out` and leave with the rest of the batch; to answer later, keep `ep`
    /// and send through [`UdpEndpoint::send_from`].
    fn on_datagram(&self, ep: &Arc<UdpEndpoint>, d: &Datagram<'_>, out: &mut Replies);

    /// Serves one accepted connection to completion. The daemon cancels it when the namespace
    /// goes, so it need not watch for that itself.
    fn on_connection(self: Arc<Self>, conn: Connection) -> ConnFuture;

    /// The slot table its listeners share in this namespace and the budget that applies now;
    /// `None` gives each listener a table of its own with the default budget.
    fn slots(&self) -> Option<(Arc<slots::SlotTable>, slots::SlotBudget)> {
        None
    }

    /// Whether a `0.0.0.0` and a `[::]` listener on one port may be served by one dual-stack
    /// socket: the service reads a v4-mapped peer as the IPv4 peer it is (the receive paths
    /// unmap addresses), and answers from the address queried either way.
    fn dual_stack(&self) -> bool {
        false
    }

    /// The namespace is gone for good (not a daemon shutdown): drop durable state kept for it.
    /// Called before its listeners close.
    fn namespace_gone(&self) {}

    /// Brings counters kept by the core up to date in the namespace's metrics, before a
    /// scrape reads them (a scrape no longer asks every service for its status).
    fn sync_metrics(&self) {}

    /// Service-specific status for `nsauxctl ns list --json`.
    fn status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// A service-specific control action for this namespace (`nsauxctl SERVICE ACTION`, e.g.
    /// `dns flush`, `rpc list`, `ntp stats`). Returns JSON data or a one-line reason.
    fn control(&self, action: &str, args: &serde_json::Value) -> Result<serde_json::Value, String> {
        let _ = args;
        Err(format!("unknown action {action:?}"))
    }
}
