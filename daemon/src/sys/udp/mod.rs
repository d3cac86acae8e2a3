//! UDP receive/send with the ancillary data nsaux relies on.
//!
//! * `IP_PKTINFO` / `IPV6_RECVPKTINFO` tell which local address a datagram hit, so a socket
//!   bound to a wildcard can answer *from that address* (multi-homed virtual servers).
//! * `SO_TIMESTAMPNS` gives the kernel's receive time, which NTP needs as its receive stamp.
//! * `UDP_SEGMENT` (UDP GSO) sends several replies to one peer as one message.
//!
//! | module | job |
//! |---|---|
//! | this one | socket options, address conversion, the per-message arrays, [`BATCH`] |
//! | [`cmsg`] | control messages: building pktinfo and `UDP_SEGMENT`, parsing pktinfo and timestamps |
//! | [`recv`] | [`RecvBatch`]: `recvmmsg` and the `recvfrom` loop |
//! | [`send`](mod@send) | [`send()`] of one datagram and [`SendBatch`] over `sendmmsg` |
//! | [`raw`] | the datagram system calls without libc's thread-cancellation wrappers |
//! | [`gso`] | which replies of a batch share a GSO send (safe code, tested without a socket) |
//! | [`errqueue`] | kernel transmit timestamps read back from the error queue (NTP interleaved mode) |
//!
//! No call allocates: control buffers live on the stack or in reused batch state.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

mod cmsg;
mod errqueue;
mod gso;
mod raw;
mod recv;
mod send;
#[cfg(test)]
mod tests;

use cmsg::{CmsgBuf, UDP_SEGMENT};
pub(crate) use errqueue::{TxStamps, enable_tx_timestamp_reports, send_stamped};
pub(crate) use recv::RecvBatch;
pub(crate) use send::{Outgoing, SendBatch, send};

/// Datagrams per `recvmmsg`/`sendmmsg` call. Under load one wakeup and two system calls then
/// serve up to this many requests; with a single datagram queued it costs what `recvmsg` does.
pub(crate) const BATCH: usize = 32;

/// What the kernel told us about one received datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecvMeta {
    /// Bytes written into the buffer.
    pub(crate) len: usize,
    /// The datagram was longer than the buffer and was cut.
    pub(crate) truncated: bool,
    /// Sender address.
    pub(crate) peer: SocketAddr,
    /// Local address the datagram was sent to (from pktinfo), if the kernel said.
    pub(crate) local: Option<IpAddr>,
    /// Interface it arrived on (0 if unknown).
    pub(crate) ifindex: u32,
    /// Kernel receive time as (seconds, nanoseconds) since the Unix epoch, if enabled.
    pub(crate) rx_time: Option<(i64, u32)>,
}

fn setsockopt_int(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: valid fd, pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks the kernel to report each datagram's destination address.
pub(crate) fn enable_pktinfo(fd: BorrowedFd<'_>, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO)
    }
}

/// Asks the kernel to stamp each datagram with its receive time (nanoseconds).
pub(crate) fn enable_rx_timestamps(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS)
}

/// Whether this kernel segments UDP sends (`UDP_SEGMENT`, Linux 4.18). Asked once, with
/// `getsockopt` on the first socket that sends a batch: a kernel that does not know the option
/// would silently ignore the control message and send the replies as one datagram.
fn gso_supported(fd: BorrowedFd<'_>) -> bool {
    static GSO: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GSO.get_or_init(|| {
        let mut v: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: valid fd, pointers to a live c_int and its length.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_UDP,
                UDP_SEGMENT,
                (&raw mut v).cast(),
                &raw mut len,
            )
        };
        rc == 0
    })
}

/// `SO_MEMINFO` (Linux 4.6); libc exports the value only for some architectures. 55 on every
/// architecture but mips and sparc, which nsaux does not build for.
const SO_MEMINFO: libc::c_int = 55;

/// How many datagrams the kernel has dropped on this socket since it was opened (receive queue
/// full, or the socket's memory limit): the `SK_MEMINFO_DROPS` counter of `SO_MEMINFO`. This is
/// the cheap end of overload shedding: the loop reads no more than a namespace's share and the
/// kernel drops the rest; this counter is how `ns list` shows it per namespace. Read on demand
/// (a report), never per datagram.
pub(crate) fn drops(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut info = [0u32; 9];
    let mut len = size_of::<[u32; 9]>() as libc::socklen_t;
    // SAFETY: valid fd, pointer to a live array of the length passed in `len`; the kernel
    // writes at most `len` bytes and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let idx = libc::SK_MEMINFO_DROPS as usize;
    if (len as usize) < (idx + 1) * size_of::<u32>() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_MEMINFO without a drop counter",
        ));
    }
    Ok(u64::from(info[idx]))
}

fn sockaddr_to_std(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: ss_family says this storage holds a sockaddr_in, which fits in it.
            let sin: &libc::sockaddr_in = unsafe { &*(std::ptr::from_ref(storage).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: ss_family says this storage holds a sockaddr_in6, which fits in it.
            let sin6: &libc::sockaddr_in6 = unsafe { &*(std::ptr::from_ref(storage).cast()) };
            Some(crate::sys::unmap(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            ))))
        }
        _ => None,
    }
}

fn std_to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin: &mut libc::sockaddr_in =
                unsafe { &mut *(std::ptr::from_mut(&mut storage).cast()) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6: &mut libc::sockaddr_in6 =
                unsafe { &mut *(std::ptr::from_mut(&mut storage).cast()) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// The per-message arrays a `recvmmsg` or `sendmmsg` call points into, [`BATCH`] of each:
/// peer addresses, control buffers, iovecs and the headers tying them together.
struct MsgArrays {
    names: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<CmsgBuf>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl MsgArrays {
    fn new() -> Self {
        Self {
            // SAFETY (all three): plain old data, zero is valid.
            names: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            cmsgs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..BATCH)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            hdrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
        }
    }
}
