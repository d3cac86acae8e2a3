//! A private epoll instance watching many sockets, itself registered with the tokio reactor,
//! and the UDP "disconnect" that gives a socket back its port.
//!
//! Why: a namespace's upstream DNS sockets are many and short-busy. Registering each one with
//! tokio and giving it a task costs two `epoll_ctl` calls, a task and a timer per cache miss;
//! one inner epoll per namespace is told about a socket once for its whole life, and one task
//! reads every socket that is ready after a single wakeup (`serve/dns/upstream.rs`).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Most events one [`Epoll::ready`] call returns.
pub(crate) const MAX_EVENTS: usize = 64;

/// An epoll instance of our own (edge-triggered entries, keyed by a caller's `u64`).
#[derive(Debug)]
pub(crate) struct Epoll(OwnedFd);

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// One readiness event: the key the socket was added with, and whether the kernel reported
/// an error (`EPOLLERR`, e.g. an ICMP port unreachable on a connected UDP socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event {
    /// The key given to [`Epoll::add`].
    pub(crate) key: u64,
    /// `EPOLLERR` or `EPOLLHUP` was set.
    pub(crate) error: bool,
}

impl Epoll {
    /// A new, empty instance (close-on-exec).
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: no pointer is passed; the return value is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for input and errors, edge-triggered, reporting `key`. The entry goes
    /// away by itself when the socket is closed (we never duplicate these descriptors).
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, key: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLET) as u32,
            u64: key,
        };
        // SAFETY: both descriptors are open; `ev` is a live epoll_event the kernel only reads.
        let rc = unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &raw mut ev,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The events ready now (never waits), appended to `out`; returns how many.
    pub(crate) fn ready(&self, out: &mut Vec<Event>) -> io::Result<usize> {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        // SAFETY: `evs` is a live array of MAX_EVENTS entries the kernel may fill; timeout 0.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                evs.as_mut_ptr(),
                MAX_EVENTS as libc::c_int,
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = usize::try_from(n).unwrap_or(0).min(MAX_EVENTS);
        let bad = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        out.extend(evs[..n].iter().map(|e| Event {
            key: e.u64,
            error: e.events & bad != 0,
        }));
        Ok(n)
    }

    /// Registers the instance with the tokio reactor (readable when any entry has an event).
    pub(crate) fn into_async(self) -> io::Result<AsyncFd<Self>> {
        // SAFETY: `Epoll` owns its descriptor, which stays open and the same until the
        // AsyncFd drops it.
        unsafe { AsyncFd::register_with_interest(self, Interest::READABLE) }
            .map_err(io::Error::from)
    }
}

/// Dissolves a UDP socket's association (`connect` with `AF_UNSPEC`). A socket whose port the
/// kernel chose (never `bind`ed) also loses that port: its next `connect` draws a fresh random
/// one, as a new socket would, without a trip into its namespace to make one.
pub(crate) fn udp_disconnect(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: sockaddr_storage is plain data; all zeroes is AF_UNSPEC.
    let addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd; pointer to a live sockaddr_storage with its exact size, only read.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Test helper: the local port a socket holds (0: none).
#[cfg(test)]
fn local_port(fd: &impl std::os::fd::AsFd) -> u16 {
    socket2::SockRef::from(fd)
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or(0, |a| a.port())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn disconnect_frees_the_port_and_reconnect_draws_a_new_one() {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .expect("socket");
        let peer: std::net::SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let mut ports = Vec::new();
        for _ in 0..8 {
            sock.connect(&peer.into()).expect("connect");
            ports.push(local_port(&sock));
            udp_disconnect(sock.as_fd()).expect("disconnect");
            assert_eq!(local_port(&sock), 0, "port released");
        }
        ports.sort_unstable();
        ports.dedup();
        assert!(ports.len() >= 7, "fresh ports: {ports:?}");
    }

    #[test]
    fn epoll_reports_a_readable_socket_by_key() {
        let ep = Epoll::new().expect("epoll");
        let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        a.set_nonblocking(true).expect("nb");
        let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        ep.add(a.as_fd(), 42).expect("add");
        let mut out = Vec::new();
        assert_eq!(ep.ready(&mut out).expect("wait"), 0);
        b.send_to(b"x", a.local_addr().expect("addr"))
            .expect("send");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(ep.ready(&mut out).expect("wait"), 1);
        assert_eq!(
            out,
            vec![Event {
                key: 42,
                error: false
            }]
        );
        // Edge-triggered: not reported again until new data comes.
        out.clear();
        assert_eq!(ep.ready(&mut out).expect("wait"), 0);
    }
}
