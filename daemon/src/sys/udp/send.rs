//! Sending: one datagram from a chosen source address, or a batch with `sendmmsg` in which
//! replies to one peer share a UDP GSO send as [`gso`](super::gso) plans them.

use std::io;
use std::mem::zeroed;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};

use super::cmsg::{CmsgBuf, put_cmsg, write_gso, write_pktinfo};
use super::gso::{Route, SendPlan};
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
    send_with(fd, payload, dst, src, ifindex, None)
}

/// [`send`], plus an `SO_TIMESTAMPING` control message with `stamp_flags` when given (the
/// one-message transmit stamp of [`super::errqueue::send_stamped`]): one `sendmsg` path.
pub(super) fn send_with(
    fd: BorrowedFd<'_>,
    payload: &[u8],
    dst: SocketAddr,
    src: Option<IpAddr>,
    ifindex: u32,
    stamp_flags: Option<u32>,
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
    let mut clen = write_pktinfo(&mut cmsg, dst, src, ifindex);
    if let Some(flags) = stamp_flags {
        clen = put_cmsg(
            &mut cmsg,
            clen,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPING,
            flags,
        );
    }
    if clen > 0 {
        hdr.msg_control = cmsg.0.as_mut_ptr().cast();
        hdr.msg_controllen = clen;
    }
    // SAFETY: all pointers in hdr refer to live locals or `payload` with matching lengths.
    let n = unsafe {
        super::raw::sendmsg(
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

/// Reusable state for [`SendBatch::send`].
pub(crate) struct SendBatch {
    msgs: MsgArrays,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch").finish_non_exhaustive()
    }
}

impl SendBatch {
    /// Empty batch state, made once per runtime thread and reused for every batch send.
    pub(crate) fn new() -> Self {
        Self {
            msgs: MsgArrays::new(),
        }
    }

    /// Sends up to [`BATCH`] datagrams from `items` with as few `sendmmsg` calls as possible,
    /// never blocking. A datagram the kernel refuses is reported to `on_error` (with its index)
    /// and skipped; a full socket buffer drops the rest, as UDP would.
    ///
    /// Consecutive replies to the same peer from the same source, of one length (the last may
    /// be shorter), go out as one message with `UDP_SEGMENT` (UDP GSO), as [`SendPlan`]
    /// decides: the peer still receives separate datagrams, but the stack routes, builds and
    /// delivers them as one packet until the segmentation, which is most of the per-datagram
    /// send cost. Order between different peers may change; order towards one peer is kept.
    pub(crate) fn send<'a>(
        &mut self,
        fd: BorrowedFd<'_>,
        items: impl IntoIterator<Item = Outgoing<'a>>,
        mut on_error: impl FnMut(usize, &io::Error),
    ) {
        let mut list: [Option<Outgoing<'a>>; BATCH] = [None; BATCH];
        let mut n_items = 0;
        for (slot, item) in list.iter_mut().zip(items) {
            *slot = Some(item);
            n_items += 1;
        }
        if n_items == 0 {
            return;
        }
        if n_items == 1 {
            // One reply (a paced client, a quiet namespace, a wakeup across CPUs that found one
            // request): `sendmsg` straight from the stack, without planning groups or filling
            // the batch's headers. What the kernel does with it is the same.
            if let Some(o) = list[0]
                && let Err(e) = send(fd, o.payload, o.dst, o.src, o.ifindex)
            {
                on_error(0, &e);
            }
            return;
        }
        let plan = SendPlan::<BATCH>::new(
            list[..n_items].iter().flatten().map(|o| {
                let route = Route {
                    dst: o.dst,
                    src: o.src,
                    ifindex: o.ifindex,
                };
                (o.payload.len(), route)
            }),
            gso_supported(fd),
        );
        let groups = plan.groups();
        // One message per group, its items' payloads as consecutive iovecs.
        let mut iov = 0;
        for (m, g) in groups.iter().enumerate() {
            let members = plan.items(g);
            let Some(head) = members.first().and_then(|&i| list[i]) else {
                continue;
            };
            let iov_start = iov;
            for item in members.iter().filter_map(|&i| list[i]) {
                self.msgs.iovs[iov] = libc::iovec {
                    iov_base: item.payload.as_ptr().cast_mut().cast(),
                    iov_len: item.payload.len(),
                };
                iov += 1;
            }
            let (name, namelen) = std_to_sockaddr(head.dst);
            self.msgs.names[m] = name;
            let mut clen = write_pktinfo(&mut self.msgs.cmsgs[m], head.dst, head.src, head.ifindex);
            if let Some(segment) = g.segment() {
                clen = write_gso(&mut self.msgs.cmsgs[m], clen, segment);
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
        let n = groups.len();
        let mut start = 0;
        while start < n {
            // SAFETY: headers start..n point into this struct's vectors and at payloads borrowed
            // from `items` for 'a, all alive for the call; lengths match their buffers.
            let r = unsafe {
                super::raw::sendmmsg(
                    fd.as_raw_fd(),
                    self.msgs.hdrs[start..n].as_mut_ptr(),
                    (n - start) as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                let members = plan.items(&groups[start]);
                if e.kind() == io::ErrorKind::WouldBlock {
                    on_error(members.first().copied().unwrap_or(0), &e);
                    return;
                }
                if members.len() > 1 {
                    // The route refused the segmented send (MTU, no checksum offload, IPsec):
                    // send its datagrams one by one.
                    for &i in members {
                        if let Some(item) = list[i]
                            && let Err(e) = send(fd, item.payload, item.dst, item.src, item.ifindex)
                        {
                            on_error(i, &e);
                        }
                    }
                } else if let Some(&i) = members.first() {
                    on_error(i, &e);
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
