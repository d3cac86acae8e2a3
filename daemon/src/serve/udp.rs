//! The UDP loop: receive with pktinfo, hand to the service, answer from the address queried.
//!
//! Datagrams are received and answered in batches (up to [`BATCH`] at a time): under load one
//! wakeup serves a whole batch and its replies leave in one `sendmmsg`, which is where the
//! per-answer CPU drops below the one-datagram-per-syscall floor. Sockets whose datagrams carry
//! control messages (pktinfo, timestamps) are read with `recvmmsg`; sockets without (one IPv4
//! address, no timestamps) with a `recvfrom` loop, which is cheaper per datagram than any
//! `msghdr` receive (see [`RecvBatch::recv_plain`]). Each datagram still carries its
//! own peer, local address (pktinfo), interface and kernel receive time, and each reply leaves
//! from the address its request hit. Replies of a batch are sent together after the batch is
//! handled, so a reply waits at most for the handling of the rest of its batch (microseconds).
//! Consecutive replies of equal length (the last may be shorter) to one peer from one source
//! address leave as one UDP GSO send (see [`SendBatch::send`]): the peer gets separate
//! datagrams, the stack routes and delivers them as one packet up to the peer's socket, which
//! roughly halves the CPU per answer when a client keeps several requests in flight.
//!
//! A turn reads no more than the namespace's share of the round grants (a quantum per namespace
//! per round, split between its busy sockets, one batch per turn at most; see
//! [`super::share`]), and a socket with datagrams left gives the loop up until the next round.
//! While some socket is backlogged, quiet sockets are also served at once by the quiet lane, a
//! thread of its own ([`super::quiet`]), so they wait neither for a turn nor for this busy
//! thread to be scheduled.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread::LocalKey;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::Interest;

use super::contain::{self, ListenerExit};
use super::quiet::QuietSocket;
use super::{Datagram, NsService, Replies, UdpEndpoint};
use crate::sys::udp::{BATCH, Outgoing, RecvBatch, SendBatch};

/// Per-thread batch state: receive slots, reply buffers and the send batch.
#[derive(Debug)]
struct Batches {
    rx: RecvBatch,
    tx: SendBatch,
    /// The replies the services queued for this batch.
    replies: Replies,
}

thread_local! {
    /// One set of batch buffers per runtime thread rather than per socket: thousands of idle
    /// namespaces then cost no buffer memory at all. Created on first use.
    static BATCHES: RefCell<Option<Box<Batches>>> = const { RefCell::new(None) };
}

/// Serves one UDP socket until the task is dropped, the socket fails, or the service panics
/// (caught per datagram; the manager then rebuilds the service for this namespace).
///
/// Each turn reads at most what the namespace's share grants (see [`super::share`]): one
/// batch or less, then the task yields the loop for a round if datagrams are left queued.
pub(crate) async fn run(ep: Arc<UdpEndpoint>, service: Arc<dyn NsService>) -> ListenerExit {
    let share = &ep.ns.share;
    share.register(&ep);
    let lane = QuietSocket::register(&ep, &service);
    let quiet = lane.as_deref();
    if let Some(q) = quiet {
        q.join();
    }
    let mut backlogged = false;
    let exit = serve(&ep, service.as_ref(), quiet, &mut backlogged).await;
    if backlogged {
        share.set_backlogged(false);
    }
    drop(lane);
    share.unregister(&ep);
    exit
}

async fn serve(
    ep: &Arc<UdpEndpoint>,
    service: &dyn NsService,
    quiet: Option<&QuietSocket>,
    backlogged: &mut bool,
) -> ListenerExit {
    let share = &ep.ns.share;
    loop {
        // A backlogged socket still has its readiness set (it was never cleared).
        // `poll_recv_ready` rather than `readable()`: the latter's future holds a readiness
        // waiter node and tokio's nested async state in every idle socket's task; polling keeps
        // the waker in the socket's registration, with the same wakeups (issue 16: bytes per
        // namespace). One task polls each socket, as that single waker slot requires.
        if !*backlogged && let Err(e) = std::future::poll_fn(|cx| ep.sock.poll_recv_ready(cx)).await
        {
            tracing::error!(netns = %ep.ns.name, addr = %ep.bound, error = %e, "udp socket failed");
            return ListenerExit::Ended(format!("socket failed: {e}"));
        }
        // Served on the quiet lane, the service panicked or a test ended the listener.
        if let Some(exit) = quiet.and_then(QuietSocket::take_exit) {
            return exit;
        }
        let grant = share.grant().min(BATCH);
        if grant == 0 {
            quiet.inspect(|q| q.turn_ended(false, 0));
            // The namespace has had its share of this round: the rest waits in the socket's
            // queue (or is dropped there by the kernel) while others are served. Counted as
            // backlogged, so next round the share is split with this socket too and a sibling
            // that is polled first cannot take it all, round after round.
            if !*backlogged {
                *backlogged = true;
                share.set_backlogged(true);
            }
            super::share::yield_round().await;
            continue;
        }
        // The turn itself is a plain function: its locals (the exit slot, counts, errors)
        // then take no room in the task across its awaits (issue 16: bytes per socket).
        match turn(ep, service, quiet, grant, backlogged) {
            Err(exit) => return exit,
            Ok(true) => {}
            Ok(false) => super::share::yield_round().await,
        }
    }
}

/// One turn of a socket that may read `grant` datagrams: reads and answers them, charges the
/// namespace's share and updates the socket's backlog state. `Ok(drained)`: whether the queue
/// was emptied; `Err` when the listener must end (a service panic, a test's end request).
fn turn(
    ep: &Arc<UdpEndpoint>,
    service: &dyn NsService,
    quiet: Option<&QuietSocket>,
    grant: usize,
    backlogged: &mut bool,
) -> Result<bool, ListenerExit> {
    let share = &ep.ns.share;
    let mut exit = None;
    let mut got = 0;
    // A short batch means the queue is empty: report WouldBlock so `try_io` clears the
    // readiness now instead of after one more (empty) `recvmmsg`. That is race-free:
    // tokio clears only the readiness it saw before the call, so a datagram that
    // arrived meanwhile keeps the socket readable.
    let r = ep.sock.try_io(Interest::READABLE, || {
        got = handle_batch(&BATCHES, ep, service, grant, &mut exit)?;
        if got < grant {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    });
    let drained = match r {
        Ok(()) => false,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
        Err(e) => {
            // ICMP errors from earlier sends surface here (ECONNREFUSED); they concern
            // one peer, not the socket.
            tracing::trace!(netns = %ep.ns.name, addr = %ep.bound, error = %e, "udp receive error");
            got += 1;
            false
        }
    };
    share.charge(got);
    if let Some(exit) = exit {
        return Err(exit);
    }
    if *backlogged == drained {
        *backlogged = !drained;
        share.set_backlogged(*backlogged);
    }
    quiet.inspect(|q| q.turn_ended(drained, got));
    Ok(drained)
}

/// Serves up to `max` datagrams of a quiet socket on the quiet lane (see [`super::quiet`]),
/// with that thread's buffers. Reads the
/// socket directly: its task's readiness is left as tokio set it (the task then finds the
/// queue empty and clears it). `WouldBlock` when nothing was queued.
pub(crate) fn serve_between(
    ep: &Arc<UdpEndpoint>,
    service: &dyn NsService,
    max: usize,
    exit: &mut Option<ListenerExit>,
) -> io::Result<usize> {
    handle_batch(&BATCHES, ep, service, max, exit)
}

/// Receives up to `max` datagrams (one batch at most), hands each to the service and sends the
/// replies in one go.
/// A panic in the service stops the batch (its replies so far still leave) and sets `exit`.
fn handle_batch(
    buffers: &'static LocalKey<RefCell<Option<Box<Batches>>>>,
    ep: &Arc<UdpEndpoint>,
    service: &dyn NsService,
    max: usize,
    exit: &mut Option<ListenerExit>,
) -> io::Result<usize> {
    buffers.with(|cell| {
        let mut slot = cell.borrow_mut();
        let b = slot.get_or_insert_with(|| {
            Box::new(Batches {
                rx: RecvBatch::new(),
                tx: SendBatch::new(),
                replies: Replies::default(),
            })
        });
        let Batches { rx, tx, replies } = &mut **b;
        let n = if ep.control {
            rx.recv(ep.sock.as_fd(), max)?
        } else {
            rx.recv_plain(ep.sock.as_fd(), max)?
        };
        super::coalesce::served(n);
        let received = Instant::now();
        let wall = SystemTime::now();
        replies.clear();
        for i in 0..n {
            let Some((meta, data)) = rx.get(i) else {
                continue;
            };
            let local_ip = meta.local.unwrap_or_else(|| ep.bound.ip());
            let d = Datagram {
                data,
                peer: meta.peer,
                local: SocketAddr::new(local_ip, ep.bound.port()),
                ifindex: meta.ifindex,
                rx_time: meta.rx_time.and_then(|(s, ns)| {
                    u64::try_from(s)
                        .ok()
                        .map(|s| UNIX_EPOCH + Duration::new(s, ns))
                }),
                received,
                wall,
                truncated: meta.truncated,
            };
            #[cfg(feature = "fault-injection")]
            if data == super::fault::END_LISTENER {
                *exit = Some(ListenerExit::Ended("fault injection: end requested".into()));
                break;
            }
            let handled = contain::call(|| {
                #[cfg(feature = "fault-injection")]
                super::fault::before_datagram(data);
                service.on_datagram(ep, &d, replies);
            });
            if let Err(msg) = handled {
                tracing::error!(netns = %ep.ns.name, addr = %ep.bound, peer = %meta.peer,
                    panic = %msg, "service panicked on a datagram; rebuilding it for this namespace");
                *exit = Some(ListenerExit::ServicePanicked(msg));
                break;
            }
        }
        // One sendmmsg per BATCH replies (a service may queue more than one per datagram).
        for start in (0..replies.len()).step_by(BATCH) {
            let items = replies
                .queued()
                .skip(start)
                .take(BATCH)
                .map(|(payload, to)| Outgoing {
                    payload,
                    dst: to.dst,
                    src: Some(to.src),
                    ifindex: to.ifindex,
                });
            tx.send(ep.sock.as_fd(), items, |k, e| {
                let peer = replies.queued().nth(start + k).map(|(_, to)| to.dst);
                tracing::debug!(netns = %ep.ns.name, ?peer, error = %e, "udp send failed");
            });
        }
        Ok(n)
    })
}
