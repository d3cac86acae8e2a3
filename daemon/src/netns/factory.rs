//! Creating sockets inside a network namespace.
//!
//! A socket belongs to the namespace it was created in for its whole life, whatever thread uses
//! it later. So we enter the namespace with `setns` on a dedicated OS thread (never a tokio
//! worker, which could be left in the wrong namespace), create and bind the sockets, go home,
//! and hand the sockets to the tokio runtime.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};
use std::sync::{Arc, Mutex, mpsc};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::oneshot;

use crate::sys;

/// A job runs inside a namespace; it returns `false` when the thread could not get home and
/// must retire.
type Job = Box<dyn FnOnce(&File) -> bool + Send>;

/// Runs closures inside a given network namespace on a dedicated thread.
///
/// One round trip costs about 20 µs of thread work plus a channel hop; callers batch all the
/// sockets a namespace needs into one closure, and many namespaces into one trip when they come
/// in bursts ([`SocketFactory::run_in_each`]).
#[derive(Debug, Clone)]
pub(crate) struct SocketFactory {
    tx: Arc<Mutex<mpsc::Sender<Job>>>,
}

fn spawn_thread() -> io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    // Threads inherit the creator's namespace; the creator is always in the home namespace.
    let home = sys::netns::open_current()?;
    std::thread::Builder::new()
        .name("nsaux-netns".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                if !job(&home) {
                    // Dropping `rx` makes the next submit spawn a fresh thread at home.
                    break;
                }
            }
        })?;
    Ok(tx)
}

impl SocketFactory {
    /// Starts the namespace thread.
    pub(crate) fn start() -> io::Result<Self> {
        Ok(Self {
            tx: Arc::new(Mutex::new(spawn_thread()?)),
        })
    }

    /// Runs `f` with the calling thread inside namespace `ns`, then returns home.
    ///
    /// If the thread cannot return home it stops (its jobs fail) and a fresh thread, born in the
    /// home namespace, takes over: a thread stuck elsewhere must never create another socket.
    pub(crate) async fn run_in<R, F>(&self, ns: Arc<OwnedFd>, f: F) -> io::Result<R>
    where
        R: Send + 'static,
        F: FnOnce() -> io::Result<R> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel();
        let job: Job = Box::new(move |home: &File| {
            if let Err(e) = sys::netns::enter(ns.as_fd()) {
                let _ = done_tx.send(Err(e));
                return true;
            }
            let result = f();
            if let Err(e) = sys::netns::enter(home.as_fd()) {
                tracing::error!(error = %e, "cannot return namespace thread home; retiring it");
                drop(result);
                let _ = done_tx.send(Err(io::Error::other(format!("setns home failed: {e}"))));
                return false;
            }
            let _ = done_tx.send(result);
            true
        });
        self.submit(job)?;
        done_rx
            .await
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread stopped")))
    }

    /// Runs `f` once per item, each inside its item's namespace, in order and in ONE trip of
    /// the thread (start-up bursts: one wake-up and one reply for many namespaces instead of
    /// one each). The job is queued at once, before the returned future is polled, so a caller
    /// can queue several and work on the first answers while the thread does the rest.
    ///
    /// The thread goes from namespace to namespace and home at the end; `f` runs only right
    /// after entering its own item's namespace (a failed entry gives that item the error and
    /// runs nothing). If the thread cannot get home, every result is dropped and turned into
    /// an error, and the thread retires, as in [`SocketFactory::run_in`].
    pub(crate) fn run_in_each<T, R, F>(
        &self,
        items: Vec<(Arc<OwnedFd>, T)>,
        f: F,
    ) -> impl Future<Output = Vec<io::Result<R>>> + use<T, R, F>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(T) -> io::Result<R> + Send + 'static,
    {
        let n = items.len();
        let (done_tx, done_rx) = oneshot::channel::<Vec<io::Result<R>>>();
        let job: Job = Box::new(move |home: &File| {
            let mut out = Vec::with_capacity(n);
            let mut away = false;
            for (ns, item) in items {
                match sys::netns::enter(ns.as_fd()) {
                    Ok(()) => {
                        away = true;
                        out.push(f(item));
                    }
                    Err(e) => out.push(Err(e)),
                }
            }
            if away && let Err(e) = sys::netns::enter(home.as_fd()) {
                tracing::error!(error = %e, "cannot return namespace thread home; retiring it");
                let msg = format!("setns home failed: {e}");
                drop(out);
                let _ = done_tx.send((0..n).map(|_| Err(io::Error::other(msg.clone()))).collect());
                return false;
            }
            let _ = done_tx.send(out);
            true
        });
        let submitted = self.submit(job);
        async move {
            let failed = |msg: String| (0..n).map(|_| Err(io::Error::other(msg.clone()))).collect();
            match submitted {
                Err(e) => failed(e.to_string()),
                Ok(()) => match done_rx.await {
                    Ok(out) => out,
                    Err(_) => failed("namespace thread stopped".into()),
                },
            }
        }
    }

    fn submit(&self, job: Job) -> io::Result<()> {
        let mut tx = self
            .tx
            .lock()
            .map_err(|_| io::Error::other("factory lock poisoned"))?;
        match tx.send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::SendError(job)) => {
                *tx = spawn_thread()?;
                tx.send(job)
                    .map_err(|_| io::Error::other("namespace thread stopped"))
            }
        }
    }
}

/// Whether the kernel offers IPv6 at all (not booted with `ipv6.disable=1`): without it no
/// AF_INET6 socket can be made in any namespace. Checked once.
pub(crate) fn ipv6_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| std::path::Path::new("/proc/sys/net/ipv6").exists())
}

/// Options for a UDP listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct UdpOptions {
    /// Kernel receive timestamps, and transmit timestamps reported on the error queue (NTP).
    pub(crate) rx_timestamps: bool,
    /// An IPv6 socket that serves IPv4 too (`IPV6_V6ONLY` off).
    pub(crate) dual_stack: bool,
}

fn new_ip_socket(
    addr: SocketAddr,
    ty: Type,
    proto: Protocol,
    dual_stack: bool,
) -> io::Result<Socket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(domain, ty.cloexec(), Some(proto))?;
    if addr.is_ipv6() {
        // Separate v4 and v6 sockets unless asked for one serving both: IPv4 then arrives
        // v4-mapped (the receive paths unmap it) and replies leave from the address queried
        // all the same (pktinfo works for mapped addresses).
        sock.set_only_v6(!dual_stack)?;
        sock.set_freebind_v6(true)?;
    } else {
        sock.set_freebind_v4(true)?;
    }
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Creates a UDP socket bound to `addr`. Call inside the target namespace.
///
/// Receive pktinfo (the address and interface each datagram arrived on) is asked for only
/// where the socket cannot know them itself: wildcard sockets, and IPv6 sockets, whose
/// link-local peers need the arrival interface. A socket bound to one IPv4 address knows its
/// local address and skips that control message on every datagram. Replies still carry the
/// source address explicitly (see `serve::udp`): a socket bound with `IP_FREEBIND` before its
/// address was up (lo still down in a fresh namespace) has no fixed source, and the kernel
/// would otherwise pick one by route (127.0.0.1 for a socket on 127.0.0.53).
pub(crate) fn bind_udp(addr: SocketAddr, opts: UdpOptions) -> io::Result<std::net::UdpSocket> {
    let sock = new_ip_socket(addr, Type::DGRAM, Protocol::UDP, opts.dual_stack)?;
    if udp_wants_pktinfo(addr) {
        sys::udp::enable_pktinfo(sock.as_fd(), addr.is_ipv6())?;
    }
    if opts.rx_timestamps {
        sys::udp::enable_rx_timestamps(sock.as_fd())?;
        // How kernel transmit stamps are reported, for the replies NTP's interleaved mode
        // asks them for (`serve::ntp::xleave`). Best effort: without them interleaved replies
        // carry the daemon's transmit time.
        let _ = sys::udp::enable_tx_timestamp_reports(sock.as_fd());
    }
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Whether [`bind_udp`] asks for receive pktinfo on a socket bound to `addr`.
fn udp_wants_pktinfo(addr: SocketAddr) -> bool {
    addr.ip().is_unspecified() || addr.is_ipv6()
}

/// Whether datagrams on a socket made by [`bind_udp`] carry control messages (pktinfo or
/// timestamps). Without them the serving loop reads with plain `recvfrom`, which costs less
/// per datagram than a `msghdr`-based receive.
pub(crate) fn udp_has_control(addr: SocketAddr, opts: UdpOptions) -> bool {
    udp_wants_pktinfo(addr) || opts.rx_timestamps
}

/// Creates a listening TCP socket bound to `addr`. Call inside the target namespace.
pub(crate) fn bind_tcp(addr: SocketAddr, dual_stack: bool) -> io::Result<std::net::TcpListener> {
    let sock = new_ip_socket(addr, Type::STREAM, Protocol::TCP, dual_stack)?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(128)?;
    Ok(sock.into())
}

/// Creates a listening abstract AF_LOCAL socket (`"\0name"`), which is scoped to the network
/// namespace it is created in. Call inside the target namespace.
pub(crate) fn bind_unix_abstract(name: &str) -> io::Result<UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let addr = UnixAddr::from_abstract_name(name.as_bytes())?;
    let listener = UnixListener::bind_addr(&addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}
