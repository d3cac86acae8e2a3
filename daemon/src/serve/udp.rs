//! The UDP loop: receive with pktinfo, hand to the service, answer from the address queried.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::Interest;

use super::{Datagram, NsService, UdpEndpoint};
use crate::sys;

/// Datagrams handled per wakeup before yielding, so one busy namespace cannot starve others.
const BUDGET: usize = 64;

thread_local! {
    /// Receive and reply buffers, one pair per runtime thread rather than per socket: thousands
    /// of idle namespaces then cost no buffer memory at all.
    static BUFFERS: RefCell<(Vec<u8>, Vec<u8>)> = RefCell::new((vec![0; 65_536], Vec::with_capacity(4096)));
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
                .try_io(Interest::READABLE, || handle_one(&ep, service.as_ref()))
            {
                Ok(()) => handled += 1,
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

fn handle_one(ep: &Arc<UdpEndpoint>, service: &dyn NsService) -> io::Result<()> {
    BUFFERS.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (rx, reply) = &mut *bufs;
        let meta = sys::udp::recv(ep.sock.as_fd(), rx)?;
        let local_ip = meta.local.unwrap_or_else(|| ep.bound.ip());
        let d = Datagram {
            data: &rx[..meta.len.min(rx.len())],
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
        if service.on_datagram(ep, &d, reply)
            && let Err(e) =
                sys::udp::send(ep.sock.as_fd(), reply, d.peer, Some(local_ip), d.ifindex)
        {
            tracing::debug!(netns = %ep.ns.name, peer = %d.peer, error = %e, "udp send failed");
        }
        Ok(())
    })
}
