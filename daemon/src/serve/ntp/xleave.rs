//! Interleaved mode's plumbing: the kernel's transmit timestamps of the NTP replies, read
//! back from each NTP socket's error queue and handed to the namespace's [`Server`], which
//! keeps them for the client's next (interleaved) request (see `nsaux_ntpshim::interleave`).
//!
//! Why here and not in the UDP loop: only NTP sockets ask for transmit stamps (the listener
//! factory turns them on with receive stamps), and the stamps of one batch's replies are
//! exactly what the next batch's interleaved requests need. So the first datagram of each
//! batch drains what the previous batches' replies left, at most [`MAX_PER_BATCH`] with one
//! or two `recvmmsg`: the queue cannot grow past a batch or two of replies (each batch sends
//! at most [`BATCH`] replies and the next drains up to twice that), which keeps it from eating
//! the socket's receive buffer. It is drained whether or not `interleaved` is on, since the
//! socket stamps every reply either way.

use std::cell::RefCell;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Instant;

use nsaux_ntpshim::{NtpTimestamp, Server};

use crate::serve::UdpEndpoint;
use crate::sys::udp::{BATCH, TxStamps};

/// Stamps read at most per batch of received datagrams.
const MAX_PER_BATCH: usize = 2 * BATCH;

thread_local! {
    /// Error-queue buffers per runtime thread (like the receive batches): idle namespaces cost
    /// nothing.
    static STAMPS: RefCell<Option<Box<TxStamps>>> = const { RefCell::new(None) };
}

/// Which socket's batch drained last, so a batch reads the error queue once.
#[derive(Debug, Default)]
pub(super) struct Drained {
    last: Option<(usize, Instant)>,
}

/// Reads the transmit stamps waiting on `ep`'s error queue into `server`, once per batch
/// (`received` is the batch's clock read, the same for all its datagrams).
pub(super) fn collect(
    ep: &Arc<UdpEndpoint>,
    received: Instant,
    drained: &mut Drained,
    server: &mut Server,
) {
    let key = (Arc::as_ptr(ep) as usize, received);
    if drained.last == Some(key) {
        return;
    }
    drained.last = Some(key);
    STAMPS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let stamps = slot.get_or_insert_with(|| Box::new(TxStamps::new()));
        stamps.drain(ep.as_fd(), MAX_PER_BATCH, |payload, (secs, nanos)| {
            server.kernel_transmit(payload, NtpTimestamp::from_unix(secs, nanos));
        });
    });
}
