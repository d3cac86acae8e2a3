//! The UDP loop: receive in batches with pktinfo, hand each datagram to the service, answer
//! from the address queried.
//!
//! Why batches: one `recvmmsg` takes every datagram queued (up to 32) and one `sendmmsg` sends
//! their replies, so under load the system-call and wake-up cost is shared by many answers.
//! Replies to datagrams with a kernel receive timestamp (NTP) are sent at once instead, so the
//! transmit time written into them stays close to the real send.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::Interest;

use super::{Datagram, NsService, UdpEndpoint};
use crate::sys;
use crate::sys::udp::Batch;

/// Datagrams handled per wakeup before yielding, so one busy namespace cannot starve others.
const BUDGET: usize = 256;

thread_local! {
    /// Receive slots and the reply queue, one set per runtime thread rather than per socket:
    /// thousands of idle namespaces then cost no buffer memory at all (the slots are zero pages
    /// until the kernel writes into them).
    static BUFFERS: RefCell<(Box<Batch>, Vec<u8>)> =
        RefCell::new((Box::new(Batch::new()), Vec::with_capacity(4096)));
}

/// Serves one UDP socket until the task is dropped.
pub(crate) async fn run(ep: Arc<UdpEndpoint>, service: Arc<dyn NsService>) {
    loop {
        if let Err(e) = ep.sock.readable().await {
            tracing::error!(netns = %ep.ns.name, addr = %ep.bound, error = %e, "udp socket failed");
            return;
        }
        let mut handled = 0;
        while handled < BUDGET {
            match ep
                .sock
                .try_io(Interest::READABLE, || handle_batch(&ep, service.as_ref()))
            {
                Ok(n) => handled += n.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors from earlier sends surface here (ECONNREFUSED); they concern
                    // one peer, not the socket.
                    tracing::trace!(netns = %ep.ns.name, addr = %ep.bound, error = %e, "udp receive error");
                    handled += 1;
                }
            }
        }
        if handled >= BUDGET {
            tokio::task::yield_now().await;
        }
    }
}

/// Receives one batch, lets the service answer each datagram and sends the replies.
fn handle_batch(ep: &Arc<UdpEndpoint>, service: &dyn NsService) -> io::Result<usize> {
    BUFFERS.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (batch, reply) = &mut *bufs;
        let n = batch.recv(ep.sock.as_fd())?;
        for k in 0..batch.metas.len() {
            let (slot, meta) = batch.metas[k];
            let local_ip = meta.local.unwrap_or_else(|| ep.bound.ip());
            let d = Datagram {
                data: batch.payload(slot, &meta),
                peer: meta.peer,
                local: SocketAddr::new(local_ip, ep.bound.port()),
                ifindex: meta.ifindex,
                rx_time: meta.rx_time.and_then(|(s, ns)| {
                    u64::try_from(s)
                        .ok()
                        .map(|s| UNIX_EPOCH + Duration::new(s, ns))
                }),
                truncated: meta.truncated,
            };
            reply.clear();
            if !service.on_datagram(ep, &d, reply) {
                continue;
            }
            if d.rx_time.is_some() {
                if let Err(e) =
                    sys::udp::send(ep.sock.as_fd(), reply, d.peer, Some(local_ip), d.ifindex)
                {
                    tracing::debug!(netns = %ep.ns.name, peer = %d.peer, error = %e, "udp send failed");
                }
            } else {
                batch.queue(reply, d.peer, Some(local_ip), d.ifindex);
            }
        }
        if let Err(e) = batch.flush(ep.sock.as_fd()) {
            tracing::debug!(netns = %ep.ns.name, error = %e, "udp send failed");
        }
        if n < sys::udp::BATCH {
            // A short batch drained the queue: report WouldBlock so tokio clears readiness now
            // instead of after one more empty recvmmsg. Safe with edge-triggered epoll: a
            // datagram that arrives meanwhile is a newer readiness event, which the clear keeps.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    })
}
