//! Receiving a batch of datagrams into reused slots: `recvmmsg` with control messages, or a
//! `recvfrom` loop for sockets that asked for none.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd};

use super::cmsg::{CmsgBuf, parse_cmsgs};
use super::{BATCH, MsgArrays, RecvMeta, sockaddr_to_std};

/// Bytes per receive slot: the largest UDP payload, so a batch never truncates a datagram that
/// a single receive would have delivered whole. The slots are one zero-initialised allocation,
/// which the allocator maps lazily: only pages the kernel actually writes cost memory.
const SLOT: usize = 65_536;

/// Distance between slot starts: one cache line more than a slot, so the starts of the 32 slots
/// (where small datagrams land) fall in different cache sets. At exactly 64 KiB apart they all
/// shared one set of the L1 and L2 caches and missed on every datagram, in the kernel's copy
/// and again in the handler.
const STRIDE: usize = SLOT + 64;

/// Reusable state for [`RecvBatch::recv`]: buffers, addresses and control buffers of
/// [`BATCH`] datagrams. Owned by one thread (it holds raw pointers and is rebuilt per call).
pub(crate) struct RecvBatch {
    data: Vec<u8>,
    msgs: MsgArrays,
    metas: Vec<Option<RecvMeta>>,
    /// How many headers need their lengths reset before the next call.
    dirty: usize,
    /// The headers point at their buffers (done on the first call).
    ready: bool,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// Empty batch state, made once per runtime thread and reused for every receive: the
    /// slots cost memory only where the kernel writes.
    pub(crate) fn new() -> Self {
        Self {
            data: vec![0; BATCH * STRIDE],
            msgs: MsgArrays::new(),
            metas: vec![None; BATCH],
            dirty: BATCH,
            ready: false,
        }
    }

    /// Receives up to `max` (at most [`BATCH`]) datagrams without blocking; returns how many.
    /// `WouldBlock` when none is queued. `max` is the namespace's share left this round (see
    /// `serve/share.rs`): what is not read stays queued, or is dropped by the kernel.
    pub(crate) fn recv(&mut self, fd: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        let max = max.clamp(1, BATCH);
        if !self.ready {
            self.ready = true;
            // First call: point every header at its slot. The vectors are never resized, so
            // these pointers stay valid for the life of the batch.
            for (i, chunk) in self.data.chunks_exact_mut(STRIDE).enumerate().take(BATCH) {
                self.msgs.iovs[i] = libc::iovec {
                    iov_base: chunk.as_mut_ptr().cast(),
                    iov_len: SLOT,
                };
            }
            for i in 0..BATCH {
                // SAFETY: plain old data, zero is valid.
                let mut h: libc::msghdr = unsafe { zeroed() };
                h.msg_name = (&raw mut self.msgs.names[i]).cast();
                h.msg_iov = &raw mut self.msgs.iovs[i];
                h.msg_iovlen = 1;
                h.msg_control = (&raw mut self.msgs.cmsgs[i]).cast();
                self.msgs.hdrs[i] = libc::mmsghdr {
                    msg_hdr: h,
                    msg_len: 0,
                };
            }
        }
        // Only the headers the last call could have written (its datagrams plus the one that
        // ended it) need their in/out lengths restored.
        for h in &mut self.msgs.hdrs[..self.dirty] {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_controllen = size_of::<CmsgBuf>();
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        self.dirty = BATCH;
        // SAFETY: every header points into this struct's vectors (names, iovs -> data, cmsgs),
        // which live, and are not otherwise touched, for the duration of the call; the lengths
        // given are those of the pointed-to buffers.
        let n = unsafe {
            super::raw::recvmmsg(
                fd.as_raw_fd(),
                self.msgs.hdrs.as_mut_ptr(),
                max as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = usize::try_from(n).unwrap_or(0).min(max);
        self.dirty = (n + 1).min(BATCH);
        for i in 0..n {
            let h = &self.msgs.hdrs[i];
            self.metas[i] = sockaddr_to_std(&self.msgs.names[i]).map(|peer| {
                let mut meta = RecvMeta {
                    len: (h.msg_len as usize).min(SLOT),
                    truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                    peer,
                    local: None,
                    ifindex: 0,
                    rx_time: None,
                };
                // SAFETY: recvmmsg filled in header i (i < n) and its control buffer.
                unsafe { parse_cmsgs(&h.msg_hdr, &mut meta) };
                meta
            });
        }
        Ok(n)
    }

    /// Receives up to `max` (at most [`BATCH`]) datagrams without blocking, one `recvfrom`
    /// each, for a socket that asked for no control messages (no pktinfo, no timestamps);
    /// returns how many. `WouldBlock` when none is queued.
    ///
    /// Why not `recvmmsg`: it copies in and checks a whole `msghdr` and iovec per datagram,
    /// which measured here ~0.83 µs per 40-byte datagram against ~0.59 µs for `recvfrom`, the
    /// system call itself included. With control messages both go through a `msghdr` and the
    /// batch call wins.
    pub(crate) fn recv_plain(&mut self, fd: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        let max = max.clamp(1, BATCH);
        let mut n = 0;
        while n < max {
            let start = n * STRIDE;
            let Some(slot) = self.data.get_mut(start..start + SLOT) else {
                break;
            };
            let name = &mut self.msgs.names[n];
            let mut namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: `slot` is a live, writable buffer of SLOT bytes and `name` a live
            // sockaddr_storage whose size is passed in `namelen`.
            let r = unsafe {
                super::raw::recvfrom(
                    fd.as_raw_fd(),
                    slot.as_mut_ptr().cast(),
                    SLOT,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    (name as *mut libc::sockaddr_storage).cast(),
                    &raw mut namelen,
                )
            };
            if r < 0 {
                if n > 0 {
                    // Queue empty (or a pending ICMP error, which concerns one earlier peer
                    // only): hand over what was read.
                    break;
                }
                return Err(io::Error::last_os_error());
            }
            // With MSG_TRUNC the result is the datagram's real length.
            let real = usize::try_from(r).unwrap_or(0);
            self.metas[n] = sockaddr_to_std(name).map(|peer| RecvMeta {
                len: real.min(SLOT),
                truncated: real > SLOT,
                peer,
                local: None,
                ifindex: 0,
                rx_time: None,
            });
            n += 1;
        }
        Ok(n)
    }

    /// Datagram `i` of the last receive: its metadata and payload. `None` for an index past
    /// the batch or a sender of an unknown address family.
    pub(crate) fn get(&self, i: usize) -> Option<(RecvMeta, &[u8])> {
        let meta = (*self.metas.get(i)?)?;
        let start = i * STRIDE;
        Some((meta, self.data.get(start..start + meta.len)?))
    }
}
