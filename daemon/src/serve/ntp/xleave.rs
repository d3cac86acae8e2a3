//! Interleaved mode's plumbing: replies saved as earlier exchanges leave with a request for
//! their kernel transmit timestamp, and those stamps are read back from the socket's error
//! queue and handed to the namespace's [`Server`], which keeps them for the client's next
//! (interleaved) request (see `nsaux_ntpshim::interleave`).
//!
//! Why this shape:
//! * Only replies to clients that ask for interleaved mode are stamped ([`send`] sends them at
//!   once with a per-message `SO_TIMESTAMPING`, outside the batch's `sendmmsg`): replies to
//!   basic clients, and every reply with `interleaved = false`, cost nothing extra.
//! * A socket's error queue is read ([`collect`]) only while it owes stamps, when its next
//!   datagram is handled: that is when the client's next request needs them, and it keeps
//!   the queue (which counts against the receive buffer) from growing: each stamped send is
//!   read back by a later datagram on its socket, at most [`MAX_PER_CALL`] per datagram.

use std::cell::RefCell;
use std::os::fd::AsFd;
use std::sync::Arc;

use nsaux_ntpshim::{NtpTimestamp, Server};

use crate::serve::{ReplyTo, UdpEndpoint};
use crate::sys::udp::{BATCH, TxStamps, send_stamped};

/// Stamps read at most per datagram handled.
const MAX_PER_CALL: usize = 2 * BATCH;

/// Sockets remembered as owing stamps; an older entry (a socket since closed) is dropped.
const MAX_SOCKETS: usize = 8;

thread_local! {
    /// Error-queue buffers per runtime thread (like the receive batches): idle namespaces cost
    /// nothing.
    static STAMPS: RefCell<Option<Box<TxStamps>>> = const { RefCell::new(None) };
}

/// Which of a namespace's NTP sockets owe transmit stamps, and how many.
#[derive(Debug, Default)]
pub(super) struct Pending {
    sockets: Vec<(usize, usize)>,
}

fn key(ep: &Arc<UdpEndpoint>) -> usize {
    Arc::as_ptr(ep) as usize
}

/// Sends `reply` to `to` from `ep` asking for its kernel transmit timestamp; `false` when the
/// send failed (the caller may queue it the ordinary way).
pub(super) fn send(
    ep: &Arc<UdpEndpoint>,
    reply: &[u8],
    to: ReplyTo,
    pending: &mut Pending,
) -> bool {
    if send_stamped(ep.as_fd(), reply, to.dst, Some(to.src), to.ifindex).is_err() {
        return false;
    }
    let k = key(ep);
    if let Some(p) = pending.sockets.iter_mut().find(|p| p.0 == k) {
        p.1 += 1;
    } else {
        if pending.sockets.len() >= MAX_SOCKETS {
            pending.sockets.remove(0);
        }
        pending.sockets.push((k, 1));
    }
    true
}

/// Reads the transmit stamps waiting on `ep`'s error queue into `server`, if it owes any.
/// A read that finds none forgets the debt (a stamp the kernel never made must not cost a
/// system call per datagram forever; a later stamped send reads any straggler).
pub(super) fn collect(ep: &Arc<UdpEndpoint>, pending: &mut Pending, server: &mut Server) {
    let k = key(ep);
    let Some(at) = pending.sockets.iter().position(|p| p.0 == k) else {
        return;
    };
    let read = STAMPS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let stamps = slot.get_or_insert_with(|| Box::new(TxStamps::new()));
        stamps.drain(ep.as_fd(), MAX_PER_CALL, |payload, (secs, nanos)| {
            server.kernel_transmit(payload, NtpTimestamp::from_unix(secs, nanos));
        })
    });
    let owed = pending.sockets[at].1.saturating_sub(read);
    if read == 0 || owed == 0 {
        pending.sockets.remove(at);
    } else {
        pending.sockets[at].1 = owed;
    }
}
