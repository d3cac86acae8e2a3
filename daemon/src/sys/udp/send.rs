//! Sending: one datagram from a chosen source address, or a batch with `sendmmsg` in which
//! replies to one peer share a UDP GSO send.

use std::io;
use std::mem::zeroed;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};

use super::cmsg::{CmsgBuf, write_gso, write_pktinfo};
use super::{BATCH, MsgArrays, gso_supported, std_to_sockaddr};

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
    let clen = write_pktinfo(&mut cmsg, dst, src, ifindex);
    if clen > 0 {
        hdr.msg_control = cmsg.0.as_mut_ptr().cast();
        hdr.msg_controllen = clen;
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

/// One datagram to send in a batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    /// Payload.
    pub(crate) payload: &'a [u8],
    /// Destination.
    pub(crate) dst: SocketAddr,
    /// Source address (pktinfo), as for [`send`].
    pub(crate) src: Option<IpAddr>,
    /// Arrival interface, for IPv6 link-local peers, as for [`send`].
    pub(crate) ifindex: u32,
}

/// Largest reply sent as a GSO segment. A segment plus headers must fit the route's MTU or the
/// kernel refuses the whole send (`EINVAL`); this fits a 1280-byte IPv6 minimum MTU. Larger
/// replies go one per message, as before, and may be fragmented.
const GSO_MAX_SEGMENT: usize = 1232;

/// Most segments in one GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels).
const GSO_MAX_SEGMENTS: usize = 64;

/// Reusable state for [`SendBatch::send`].
pub(crate) struct SendBatch {
    msgs: MsgArrays,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch").finish_non_exhaustive()
    }
}

/// Replies of one batch that leave in one message: same peer, source and interface, and (when
/// more than one) the same length, sent as one UDP GSO send that the kernel cuts into
/// separate datagrams.
#[derive(Clone, Copy)]
struct Group {
    /// Index of its first item.
    first: usize,
    /// How many items.
    count: usize,
}

impl SendBatch {
    pub(crate) fn new() -> Self {
        Self {
            msgs: MsgArrays::new(),
        }
    }

    /// Sends up to [`BATCH`] datagrams from `items` with as few `sendmmsg` calls as possible,
    /// never blocking. A datagram the kernel refuses is reported to `on_error` (with its index)
    /// and skipped; a full socket buffer drops the rest, as UDP would.
    ///
    /// Replies of equal length to the same peer from the same source go out as one message
    /// with `UDP_SEGMENT` (UDP GSO): the peer still receives separate datagrams, but the stack
    /// routes, builds and delivers them as one packet until the segmentation, which is most of
    /// the per-datagram send cost. Order between different peers may change; order towards one
    /// peer is kept.
    pub(crate) fn send<'a>(
        &mut self,
        fd: BorrowedFd<'_>,
        items: impl IntoIterator<Item = Outgoing<'a>>,
        mut on_error: impl FnMut(usize, &io::Error),
    ) {
        let mut list: [Option<Outgoing<'a>>; BATCH] = [None; BATCH];
        let mut group_of = [0usize; BATCH];
        let mut groups = [Group { first: 0, count: 0 }; BATCH];
        let mut n_items = 0;
        let mut n_groups = 0;
        let mut gso: Option<bool> = None;
        for item in items.into_iter().take(BATCH) {
            let len = item.payload.len();
            let mut joined = None;
            if (1..=GSO_MAX_SEGMENT).contains(&len) {
                joined = groups[..n_groups].iter().position(|g| {
                    let Some(head) = list[g.first] else {
                        return false;
                    };
                    g.count < GSO_MAX_SEGMENTS
                        && head.payload.len() == len
                        && head.dst == item.dst
                        && head.src == item.src
                        && head.ifindex == item.ifindex
                });
                if joined.is_some() && !*gso.get_or_insert_with(|| gso_supported(fd)) {
                    joined = None;
                }
            }
            let g = joined.unwrap_or_else(|| {
                groups[n_groups] = Group {
                    first: n_items,
                    count: 0,
                };
                n_groups += 1;
                n_groups - 1
            });
            groups[g].count += 1;
            group_of[n_items] = g;
            list[n_items] = Some(item);
            n_items += 1;
        }
        // One message per group, its items' payloads as consecutive iovecs.
        let mut iov = 0;
        for (m, g) in groups[..n_groups].iter().enumerate() {
            let Some(head) = list[g.first] else {
                continue;
            };
            let iov_start = iov;
            for (item, _) in list[..n_items]
                .iter()
                .zip(&group_of[..n_items])
                .filter(|(_, gi)| **gi == m)
            {
                if let Some(item) = item {
                    self.msgs.iovs[iov] = libc::iovec {
                        iov_base: item.payload.as_ptr().cast_mut().cast(),
                        iov_len: item.payload.len(),
                    };
                    iov += 1;
                }
            }
            let (name, namelen) = std_to_sockaddr(head.dst);
            self.msgs.names[m] = name;
            let mut clen = write_pktinfo(&mut self.msgs.cmsgs[m], head.dst, head.src, head.ifindex);
            if g.count > 1 {
                let seg = u16::try_from(head.payload.len()).unwrap_or(u16::MAX);
                clen = write_gso(&mut self.msgs.cmsgs[m], clen, seg);
            }
            // SAFETY: plain old data, zero is valid.
            let mut h: libc::msghdr = unsafe { zeroed() };
            h.msg_name = (&raw mut self.msgs.names[m]).cast();
            h.msg_namelen = namelen;
            h.msg_iov = &raw mut self.msgs.iovs[iov_start];
            h.msg_iovlen = iov - iov_start;
            if clen > 0 {
                h.msg_control = (&raw mut self.msgs.cmsgs[m]).cast();
                h.msg_controllen = clen;
            }
            self.msgs.hdrs[m] = libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            };
        }
        let n = n_groups;
        let mut start = 0;
        while start < n {
            // SAFETY: headers start..n point into this struct's vectors and at payloads borrowed
            // from `items` for 'a, all alive for the call; lengths match their buffers.
            let r = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    self.msgs.hdrs[start..n].as_mut_ptr(),
                    (n - start) as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    on_error(groups[start].first, &e);
                    return;
                }
                let g = groups[start];
                if g.count > 1 {
                    // The route refused the segmented send (MTU, no checksum offload, IPsec):
                    // send its datagrams one by one.
                    for (i, item) in list[..n_items].iter().enumerate() {
                        if group_of[i] != start {
                            continue;
                        }
                        if let Some(item) = item
                            && let Err(e) = send(fd, item.payload, item.dst, item.src, item.ifindex)
                        {
                            on_error(i, &e);
                        }
                    }
                } else {
                    on_error(g.first, &e);
                }
                start += 1;
            } else if r == 0 {
                return;
            } else {
                start += usize::try_from(r).unwrap_or(1);
            }
        }
    }
}
