//! UDP receive/send with the ancillary data nsaux relies on.
//!
//! * `IP_PKTINFO` / `IPV6_RECVPKTINFO` tell which local address a datagram hit, so a socket
//!   bound to a wildcard can answer *from that address* (multi-homed virtual servers).
//! * `SO_TIMESTAMPNS` gives the kernel's receive time, which NTP needs as its receive stamp.
//!
//! Single sends keep their control buffer on the stack; batched receive and send use one
//! [`Batch`] per runtime thread (`recvmmsg`/`sendmmsg`).

use std::io;
use std::mem::{size_of, zeroed};
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
    set_pktinfo(&mut hdr, &mut cmsg, src, dst, ifindex);
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

/// Most datagrams moved by one `recvmmsg`/`sendmmsg`.
pub(crate) const BATCH: usize = 32;
/// Receive slot per datagram (the largest UDP payload).
const SLOT: usize = 65_536;

/// Buffers for batched receive and send: one per runtime thread. The pointers the kernel needs
/// are rebuilt before each call, so the struct never points into itself between calls.
pub(crate) struct Batch {
    /// `BATCH` receive slots of `SLOT` bytes (zero pages until the kernel writes into them).
    data: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<CmsgBuf>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// The datagrams of the last receive: (slot, metadata).
    pub(crate) metas: Vec<(usize, RecvMeta)>,
    /// Replies queued for one `sendmmsg`: (range in `out`, destination, source, ifindex).
    queued: Vec<(std::ops::Range<usize>, SocketAddr, Option<IpAddr>, u32)>,
    /// Reply bytes, back to back.
    out: Vec<u8>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("metas", &self.metas.len())
            .field("queued", &self.queued.len())
            .finish()
    }
}

impl Batch {
    /// Empty buffers.
    pub(crate) fn new() -> Self {
        Self {
            data: vec![0; BATCH * SLOT],
            // SAFETY: sockaddr_storage, CmsgBuf, iovec and mmsghdr are plain old data; all-zero
            // is a valid value of each.
            names: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            // SAFETY: as above.
            cmsgs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            // SAFETY: as above.
            iovs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            // SAFETY: as above.
            hdrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            metas: Vec::with_capacity(BATCH),
            queued: Vec::with_capacity(BATCH),
            out: Vec::with_capacity(4096),
        }
    }

    /// The payload of a received datagram (cut to the slot if it was truncated).
    pub(crate) fn payload(&self, slot: usize, meta: &RecvMeta) -> &[u8] {
        let start = slot * SLOT;
        self.data
            .get(start..start + meta.len.min(SLOT))
            .unwrap_or(&[])
    }

    /// Receives up to `BATCH` datagrams without blocking; fills `metas`. Returns how many the
    /// kernel delivered (datagrams from an unknown address family are left out of `metas`).
    pub(crate) fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.metas.clear();
        let base = self.data.as_mut_ptr();
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                // SAFETY: i * SLOT + SLOT <= data.len(), so the slot lies inside `data`.
                iov_base: unsafe { base.add(i * SLOT) }.cast(),
                iov_len: SLOT,
            };
            // SAFETY: msghdr is plain old data; zero is valid; we set every field we use.
            let mut h: libc::msghdr = unsafe { zeroed() };
            h.msg_name = (&raw mut self.names[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &raw mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = (&raw mut self.cmsgs[i]).cast();
            h.msg_controllen = size_of::<CmsgBuf>();
            self.hdrs[i] = libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            };
        }
        // SAFETY: `hdrs` holds BATCH headers whose pointers refer to live elements of `names`,
        // `iovs`, `cmsgs` and `data` with matching lengths; nothing moves them during the call.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = usize::try_from(n).unwrap_or(0).min(BATCH);
        for i in 0..n {
            let h = &self.hdrs[i];
            let Some(peer) = sockaddr_to_std(&self.names[i]) else {
                continue;
            };
            let mut meta = RecvMeta {
                len: h.msg_len as usize,
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                peer,
                local: None,
                ifindex: 0,
                rx_time: None,
            };
            parse_cmsgs(&h.msg_hdr, &mut meta);
            self.metas.push((i, meta));
        }
        Ok(n)
    }

    /// Queues a reply for the next [`Batch::flush`].
    pub(crate) fn queue(
        &mut self,
        payload: &[u8],
        dst: SocketAddr,
        src: Option<IpAddr>,
        ifindex: u32,
    ) {
        let start = self.out.len();
        self.out.extend_from_slice(payload);
        self.queued.push((start..self.out.len(), dst, src, ifindex));
    }

    /// Sends every queued reply with one `sendmmsg` (per `BATCH`) and empties the queue.
    /// Datagrams the socket cannot take now are dropped, as UDP would.
    pub(crate) fn flush(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let mut first_err = None;
        let mut done = 0;
        while done < self.queued.len() {
            let n = (self.queued.len() - done).min(BATCH);
            for i in 0..n {
                let (range, dst, src, ifindex) = self.queued[done + i].clone();
                let (name, namelen) = std_to_sockaddr(dst);
                self.names[i] = name;
                self.iovs[i] = libc::iovec {
                    // SAFETY: `range` lies inside `out` (queue built it from out's length).
                    iov_base: unsafe { self.out.as_mut_ptr().add(range.start) }.cast(),
                    iov_len: range.len(),
                };
                // SAFETY: msghdr is plain old data; zero is valid.
                let mut h: libc::msghdr = unsafe { zeroed() };
                h.msg_name = (&raw mut self.names[i]).cast();
                h.msg_namelen = namelen;
                h.msg_iov = &raw mut self.iovs[i];
                h.msg_iovlen = 1;
                set_pktinfo(&mut h, &mut self.cmsgs[i], src, dst, ifindex);
                self.hdrs[i] = libc::mmsghdr {
                    msg_hdr: h,
                    msg_len: 0,
                };
            }
            // SAFETY: the first n headers point into live `names`, `iovs`, `cmsgs` and `out`
            // with matching lengths; nothing moves them during the call.
            let sent = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if sent <= 0 {
                // Skip the datagram that failed (e.g. unreachable peer) and go on.
                if first_err.is_none() {
                    first_err = Some(io::Error::last_os_error());
                }
                done += 1;
            } else {
                done += usize::try_from(sent).unwrap_or(n);
            }
        }
        self.queued.clear();
        self.out.clear();
        first_err.map_or(Ok(()), Err)
    }
}

/// Reads pktinfo and timestamp control messages of a received message into `meta`.
fn parse_cmsgs(hdr: &libc::msghdr, meta: &mut RecvMeta) {
    // SAFETY: hdr was filled in by a successful receive; the CMSG_* macros walk only within
    // msg_control/msg_controllen, and we read each payload with read_unaligned after checking
    // its level/type, which fixes its layout.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
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
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
}

/// Adds the source-address control message to an outgoing message (nothing for `None` or an
/// unspecified source: the kernel picks).
fn set_pktinfo(
    hdr: &mut libc::msghdr,
    cmsg: &mut CmsgBuf,
    src: Option<IpAddr>,
    dst: SocketAddr,
    ifindex: u32,
) {
    hdr.msg_control = std::ptr::null_mut();
    hdr.msg_controllen = 0;
    match (src, dst) {
        (Some(IpAddr::V4(src)), SocketAddr::V4(_)) if !src.is_unspecified() => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(src).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            // SAFETY: the buffer is 256 aligned bytes, far more than one in_pktinfo needs; we
            // write the header and payload inside it.
            unsafe {
                hdr.msg_control = cmsg.0.as_mut_ptr().cast();
                hdr.msg_controllen =
                    libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize;
                let c = libc::CMSG_FIRSTHDR(hdr);
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
                let c = libc::CMSG_FIRSTHDR(hdr);
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = libc::IPV6_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
            }
        }
        _ => {}
    }
}
