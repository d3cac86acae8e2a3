//! UDP receive/send with the ancillary data nsaux relies on.
//!
//! * `IP_PKTINFO` / `IPV6_RECVPKTINFO` tell which local address a datagram hit, so a socket
//!   bound to a wildcard can answer *from that address* (multi-homed virtual servers).
//! * `SO_TIMESTAMPNS` gives the kernel's receive time, which NTP needs as its receive stamp.
//!
//! Neither call allocates: control buffers live on the stack.

use std::io;
use std::mem::{MaybeUninit, size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

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

/// Control-message buffer, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 256]);

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
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
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

/// Receives one datagram without blocking (`MSG_DONTWAIT`), with its ancillary data.
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<RecvMeta> {
    // SAFETY: plain old data, zero is valid.
    let mut peer: libc::sockaddr_storage = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cmsg = MaybeUninit::<CmsgBuf>::uninit();
    // SAFETY: msghdr is plain old data, zero is valid; we fill the fields we use below.
    let mut hdr: libc::msghdr = unsafe { zeroed() };
    hdr.msg_name = (&raw mut peer).cast();
    hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    hdr.msg_iov = &raw mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = cmsg.as_mut_ptr().cast();
    hdr.msg_controllen = size_of::<CmsgBuf>();
    // SAFETY: every pointer in hdr refers to a live local or to `buf`, with matching lengths.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut hdr, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let peer = sockaddr_to_std(&peer).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "datagram from unknown family")
    })?;
    let mut meta = RecvMeta {
        len: usize::try_from(n).unwrap_or(0),
        truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
        peer,
        local: None,
        ifindex: 0,
        rx_time: None,
    };
    // SAFETY: hdr was filled in by a successful recvmsg; the CMSG_* macros walk only within
    // msg_control/msg_controllen, and we read each payload with read_unaligned after checking
    // its level/type, which fixes its layout.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&raw const hdr);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                    meta.local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        info.ipi_addr.s_addr,
                    ))));
                    meta.ifindex = u32::try_from(info.ipi_ifindex).unwrap_or(0);
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    meta.local = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                    meta.ifindex = info.ipi6_ifindex;
                }
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                    let ts = std::ptr::read_unaligned(data.cast::<libc::timespec>());
                    meta.rx_time = Some((ts.tv_sec, u32::try_from(ts.tv_nsec).unwrap_or(0)));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&raw const hdr, c);
        }
    }
    Ok(meta)
}

/// Sends one datagram to `dst` from local address `src` (if given) without blocking.
///
/// `ifindex` pins the outgoing interface; it is only applied for IPv6 link-local peers, where the
/// address alone is ambiguous.
pub(crate) fn send(
    fd: BorrowedFd<'_>,
    payload: &[u8],
    dst: SocketAddr,
    src: Option<IpAddr>,
    ifindex: u32,
) -> io::Result<usize> {
    let (mut name, namelen) = std_to_sockaddr(dst);
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: CmsgBuf is plain bytes; zeroed is valid and clears padding.
    let mut cmsg: CmsgBuf = unsafe { zeroed() };
    // SAFETY: msghdr is plain old data, zero is valid.
    let mut hdr: libc::msghdr = unsafe { zeroed() };
    hdr.msg_name = (&raw mut name).cast();
    hdr.msg_namelen = namelen;
    hdr.msg_iov = &raw mut iov;
    hdr.msg_iovlen = 1;
    match (src, dst) {
        (Some(IpAddr::V4(src)), SocketAddr::V4(_)) if !src.is_unspecified() => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(src).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            // SAFETY: CMSG_SPACE/LEN are pure arithmetic; the buffer is 256 bytes, far more
            // than one in_pktinfo needs; we write the header and payload inside it.
            unsafe {
                hdr.msg_control = cmsg.0.as_mut_ptr().cast();
                hdr.msg_controllen =
                    libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize;
                let c = libc::CMSG_FIRSTHDR(&raw const hdr);
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
            }
        }
        (Some(IpAddr::V6(src)), SocketAddr::V6(d)) if !src.is_unspecified() => {
            let link_local = (d.ip().segments()[0] & 0xffc0) == 0xfe80;
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: src.octets(),
                },
                ipi6_ifindex: if link_local { ifindex } else { 0 },
            };
            // SAFETY: as above, for one in6_pktinfo.
            unsafe {
                hdr.msg_control = cmsg.0.as_mut_ptr().cast();
                hdr.msg_controllen =
                    libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize;
                let c = libc::CMSG_FIRSTHDR(&raw const hdr);
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = libc::IPV6_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
            }
        }
        _ => {}
    }
    // SAFETY: all pointers in hdr refer to live locals or `payload` with matching lengths.
    let n = unsafe {
        libc::sendmsg(
            fd.as_raw_fd(),
            &raw const hdr,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}
