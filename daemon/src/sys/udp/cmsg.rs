//! Control messages: building the ones a send carries (the source address as pktinfo, the
//! `UDP_SEGMENT` size) and reading the ones a receive got (pktinfo, receive timestamp).

use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::RecvMeta;

/// Control-message buffer, aligned for `cmsghdr`. One per message: on the stack for a single
/// send, in the batch arrays otherwise.
#[repr(C, align(8))]
pub(super) struct CmsgBuf(pub(super) [u8; 256]);

/// `UDP_SEGMENT` (linux/udp.h): a control message or socket option giving the segment size of
/// a UDP GSO send. Not in the libc crate.
pub(super) const UDP_SEGMENT: libc::c_int = 103;

/// Reads pktinfo and receive timestamp from the control messages of a received `hdr`.
///
/// # Safety
/// `hdr` must have been filled in by a successful `recvmsg`/`recvmmsg`, with `msg_control`
/// still pointing at its live control buffer.
pub(super) unsafe fn parse_cmsgs(hdr: &libc::msghdr, meta: &mut RecvMeta) {
    // SAFETY: per the contract, the CMSG_* macros walk only within msg_control/msg_controllen,
    // and we read each payload with read_unaligned after checking its level/type, which fixes
    // its layout.
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
                    // A dual-stack socket reports an IPv4 destination v4-mapped.
                    meta.local = Some(crate::sys::unmap_ip(IpAddr::V6(Ipv6Addr::from(
                        info.ipi6_addr.s6_addr,
                    ))));
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

/// Writes one control message carrying `value` at byte `at` of `cmsg` (0, or a length this
/// function returned: both keep cmsg alignment); returns the end of what is written, or `at`
/// unchanged when it would not fit.
pub(super) fn put_cmsg<T: Copy>(
    cmsg: &mut CmsgBuf,
    at: usize,
    level: libc::c_int,
    ty: libc::c_int,
    value: T,
) -> usize {
    let len = size_of::<T>() as u32;
    // SAFETY: pure arithmetic.
    let space = unsafe { libc::CMSG_SPACE(len) } as usize;
    if at + space > size_of::<CmsgBuf>() {
        return at;
    }
    // SAFETY: `at` is cmsg-aligned inside the 8-aligned buffer and `at + space` fits in it, so
    // the header and its payload (CMSG_DATA) lie inside the buffer; write_unaligned copes with
    // the payload's alignment.
    unsafe {
        let c = cmsg.0.as_mut_ptr().add(at).cast::<libc::cmsghdr>();
        (*c).cmsg_level = level;
        (*c).cmsg_type = ty;
        (*c).cmsg_len = libc::CMSG_LEN(len) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), value);
    }
    at + space
}

/// Writes the control message that makes a reply to `dst` leave from `src` (IP_PKTINFO /
/// IPV6_PKTINFO) into `cmsg`; returns its length, 0 when none is needed (no source, a wildcard
/// source, or mismatched families).
pub(super) fn write_pktinfo(
    cmsg: &mut CmsgBuf,
    dst: SocketAddr,
    src: Option<IpAddr>,
    ifindex: u32,
) -> usize {
    match (src, dst) {
        (Some(IpAddr::V4(src)), SocketAddr::V4(_)) if !src.is_unspecified() => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(src).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            put_cmsg(cmsg, 0, libc::IPPROTO_IP, libc::IP_PKTINFO, info)
        }
        (Some(IpAddr::V6(src)), SocketAddr::V6(d)) if !src.is_unspecified() => {
            let link_local = (d.ip().segments()[0] & 0xffc0) == 0xfe80;
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: src.octets(),
                },
                ipi6_ifindex: if link_local { ifindex } else { 0 },
            };
            put_cmsg(cmsg, 0, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info)
        }
        _ => 0,
    }
}

/// Appends a `UDP_SEGMENT` control message at byte `at` of `cmsg` (which must be
/// `CMSG_SPACE`-aligned, i.e. the length [`write_pktinfo`] returned); returns the new length.
pub(super) fn write_gso(cmsg: &mut CmsgBuf, at: usize, segment: u16) -> usize {
    put_cmsg(cmsg, at, libc::SOL_UDP, UDP_SEGMENT, segment)
}
