//! The floor server's socket and batch loop, on raw `libc` calls (no allocation per batch).

use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{BATCH, FloorSpec, SLOT, answer};

/// `UDP_SEGMENT` (linux/udp.h), not in the libc crate.
const UDP_SEGMENT: libc::c_int = 103;

#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Cmsg([u8; 128]);

fn check(rc: libc::c_int, what: &str) -> std::io::Result<()> {
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

fn set_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: a live fd, a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const v).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(rc, "setsockopt")
}

fn socket(spec: FloorSpec) -> std::io::Result<OwnedFd> {
    let v6 = spec.addr.is_ipv6();
    let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain system call; the fd is owned at once.
    let raw = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(raw, "socket")?;
    // SAFETY: `raw` is a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if v6 {
        set_int(
            &fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            i32::from(!spec.dual_stack),
        )?;
    }
    if spec.pktinfo {
        if v6 {
            set_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        } else {
            set_int(&fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
        }
    }
    if spec.timestamps {
        set_int(&fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
        // nsauxd's transmit-stamp report flags (software, OPT_RX_FILTER): no receive stamp
        // of their own, so no second control message per datagram.
        let flags = (libc::SOF_TIMESTAMPING_SOFTWARE | (1 << 17)) as libc::c_int;
        let _ = set_int(&fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPING, flags);
    }
    let (name, len) = to_sockaddr(spec.addr);
    // SAFETY: a live fd and a sockaddr of the length given.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const name).cast(), len) };
    check(rc, "bind")?;
    Ok(fd)
}

fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: plain old data; zero is valid.
    let mut s: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin: &mut libc::sockaddr_in = unsafe { &mut *(&raw mut s).cast() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6: &mut libc::sockaddr_in6 = unsafe { &mut *(&raw mut s).cast() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (s, len as libc::socklen_t)
}

/// A pktinfo control message to send: level, type, payload bytes and their length.
type Pktinfo = (libc::c_int, libc::c_int, [u8; 20], usize);

/// What the receive control messages said: the pktinfo cmsg to send back (level, type,
/// payload bytes) and the receive stamp.
struct RxInfo {
    pktinfo: Option<Pktinfo>,
    stamp: (i64, u32),
}

/// # Safety
/// `hdr` was filled in by a successful `recvmmsg`, its control buffer still live.
unsafe fn parse(hdr: &libc::msghdr) -> RxInfo {
    let mut info = RxInfo {
        pktinfo: None,
        stamp: (0, 0),
    };
    // SAFETY: the CMSG macros stay within msg_control/msg_controllen; payloads are read
    // unaligned after their level and type fixed their layout.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let mut p = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                    // Reply from the address queried.
                    p.ipi_spec_dst = p.ipi_addr;
                    p.ipi_ifindex = 0;
                    let mut b = [0u8; 20];
                    std::ptr::copy_nonoverlapping(
                        (&raw const p).cast::<u8>(),
                        b.as_mut_ptr(),
                        size_of::<libc::in_pktinfo>(),
                    );
                    info.pktinfo = Some((
                        libc::IPPROTO_IP,
                        libc::IP_PKTINFO,
                        b,
                        size_of::<libc::in_pktinfo>(),
                    ));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let mut p = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    p.ipi6_ifindex = 0;
                    let mut b = [0u8; 20];
                    std::ptr::copy_nonoverlapping(
                        (&raw const p).cast::<u8>(),
                        b.as_mut_ptr(),
                        size_of::<libc::in6_pktinfo>(),
                    );
                    info.pktinfo = Some((
                        libc::IPPROTO_IPV6,
                        libc::IPV6_PKTINFO,
                        b,
                        size_of::<libc::in6_pktinfo>(),
                    ));
                }
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                    let ts = std::ptr::read_unaligned(data.cast::<libc::timespec>());
                    info.stamp = (ts.tv_sec, u32::try_from(ts.tv_nsec).unwrap_or(0));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    info
}

/// Appends one control message to `buf` at `at`; returns the new length.
fn put(buf: &mut Cmsg, at: usize, level: libc::c_int, ty: libc::c_int, data: &[u8]) -> usize {
    let len = data.len() as u32;
    // SAFETY: arithmetic only.
    let space = unsafe { libc::CMSG_SPACE(len) } as usize;
    if at + space > buf.0.len() {
        return at;
    }
    // SAFETY: `at` is cmsg-aligned in the 8-aligned buffer and the header and payload fit.
    unsafe {
        let c = buf.0.as_mut_ptr().add(at).cast::<libc::cmsghdr>();
        (*c).cmsg_level = level;
        (*c).cmsg_type = ty;
        (*c).cmsg_len = libc::CMSG_LEN(len) as usize;
        std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(c), data.len());
    }
    at + space
}

/// Serves until an error; returns it.
pub(super) fn serve(spec: FloorSpec) -> std::io::Error {
    match run(spec) {
        Ok(()) => std::io::Error::other("stopped"),
        Err(e) => e,
    }
}

fn run(spec: FloorSpec) -> std::io::Result<()> {
    let fd = socket(spec)?;
    let coalesce = std::time::Duration::from_micros(u64::from(spec.coalesce_us));
    if spec.coalesce_us > 0 {
        // The default 50 µs timer slack would stretch every short sleep by up to that much.
        // SAFETY: plain prctl on the calling thread.
        let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        check(rc, "prctl(PR_SET_TIMERSLACK)")?;
    }
    let bound_src = match spec.addr.ip() {
        // A socket bound to one IPv4 address still names it as the source, as nsauxd does.
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() => {
            let p = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(ip).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let mut b = [0u8; 20];
            // SAFETY: copies the bytes of a live in_pktinfo into a larger buffer.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (&raw const p).cast::<u8>(),
                    b.as_mut_ptr(),
                    size_of::<libc::in_pktinfo>(),
                );
            }
            Some((
                libc::IPPROTO_IP,
                libc::IP_PKTINFO,
                b,
                size_of::<libc::in_pktinfo>(),
            ))
        }
        _ => None,
    };
    let mut rx_data = vec![[0u8; SLOT]; BATCH];
    let mut tx_data = vec![[0u8; SLOT]; BATCH];
    // SAFETY (all): plain old data, zero is valid.
    let mut names: Vec<libc::sockaddr_storage> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
    let mut rx_cmsg: Vec<Cmsg> = vec![Cmsg([0; 128]); BATCH];
    let mut tx_cmsg: Vec<Cmsg> = vec![Cmsg([0; 128]); BATCH];
    let mut rx_iov: Vec<libc::iovec> = rx_data
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: SLOT,
        })
        .collect();
    let mut rx_hdrs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
    let mut tx_iov: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        })
        .collect();
    let mut tx_hdrs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
    // Per reply: its length and pktinfo; which group (message) it joined.
    let mut lens = [0usize; BATCH];
    let mut infos: Vec<Option<Pktinfo>> = vec![None; BATCH];
    let mut order = [0usize; BATCH];
    loop {
        for i in 0..BATCH {
            let h = &mut rx_hdrs[i].msg_hdr;
            h.msg_name = (&raw mut names[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &raw mut rx_iov[i];
            h.msg_iovlen = 1;
            h.msg_control = (&raw mut rx_cmsg[i]).cast();
            h.msg_controllen = size_of::<Cmsg>();
            h.msg_flags = 0;
        }
        // SAFETY: every header points at live buffers of the lengths given.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                rx_hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let n = usize::try_from(n).unwrap_or(0);
        // Answer each request.
        let mut m = 0;
        for i in 0..n {
            let h = &rx_hdrs[i];
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                continue;
            }
            // SAFETY: recvmmsg filled header i.
            let info = unsafe { parse(&h.msg_hdr) };
            let req = &rx_data[i][..(h.msg_len as usize).min(SLOT)];
            if let Some(len) = answer(spec.answer, req, info.stamp, &mut tx_data[i]) {
                lens[i] = len;
                infos[i] = info.pktinfo.or(bound_src);
                order[m] = i;
                m += 1;
            }
        }
        // Group: replies to one peer (same address, same source) of one length share a
        // GSO message, in arrival order.
        let mut used = [false; BATCH];
        let mut msgs = 0;
        let mut iov = 0;
        for a in 0..m {
            let i = order[a];
            if used[i] {
                continue;
            }
            let start = iov;
            let mut segs = 0;
            for &j in &order[a..m] {
                if used[j]
                    || lens[j] != lens[i]
                    || rx_hdrs[j].msg_hdr.msg_namelen != rx_hdrs[i].msg_hdr.msg_namelen
                    || !same_addr(&names[i], &names[j])
                    || infos[j].map(|p| p.2) != infos[i].map(|p| p.2)
                {
                    continue;
                }
                used[j] = true;
                tx_iov[iov] = libc::iovec {
                    iov_base: tx_data[j].as_mut_ptr().cast(),
                    iov_len: lens[j],
                };
                iov += 1;
                segs += 1;
            }
            let mut clen = 0;
            if let Some((level, ty, bytes, len)) = infos[i] {
                clen = put(&mut tx_cmsg[msgs], clen, level, ty, &bytes[..len]);
            }
            if segs > 1 {
                let seg = u16::try_from(lens[i]).unwrap_or(0);
                clen = put(
                    &mut tx_cmsg[msgs],
                    clen,
                    libc::SOL_UDP,
                    UDP_SEGMENT,
                    &seg.to_ne_bytes(),
                );
            }
            let h = &mut tx_hdrs[msgs].msg_hdr;
            h.msg_name = (&raw mut names[i]).cast();
            h.msg_namelen = rx_hdrs[i].msg_hdr.msg_namelen;
            h.msg_iov = &raw mut tx_iov[start];
            h.msg_iovlen = iov - start;
            h.msg_control = if clen > 0 {
                (&raw mut tx_cmsg[msgs]).cast()
            } else {
                std::ptr::null_mut()
            };
            h.msg_controllen = clen;
            msgs += 1;
        }
        if msgs > 0 {
            // SAFETY: headers 0..msgs point at live names, iovecs, payloads and control
            // buffers of the lengths given. A failed send drops the batch, as UDP may.
            unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    tx_hdrs.as_mut_ptr(),
                    msgs as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                );
            }
        }
        // A batch that was not full: let more requests queue before the next receive.
        if n < BATCH && !coalesce.is_zero() {
            std::thread::sleep(coalesce);
        }
    }
}

fn same_addr(a: &libc::sockaddr_storage, b: &libc::sockaddr_storage) -> bool {
    // The families the socket receives keep the port and address in the first 24 bytes.
    // SAFETY: both are live sockaddr_storage values, at least 24 bytes long.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts((a as *const libc::sockaddr_storage).cast::<u8>(), 24),
            std::slice::from_raw_parts((b as *const libc::sockaddr_storage).cast::<u8>(), 24),
        )
    };
    a == b
}
