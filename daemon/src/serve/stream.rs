//! Accept loops for TCP and AF_LOCAL listeners. Every connection is admitted into the service's
//! slot table (`serve/slots.rs`): nobody is refused at a cap, the longest-idle connection of the
//! caller's class or peer is closed instead.

use std::sync::Arc;
use std::time::Duration;

use super::slots::{Slot, SlotBudget, SlotTable};
use super::{Connection, NsInfo, NsService, Peer, Stream};

/// Pause after an accept error (EMFILE and friends) so we do not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The pause after an accept error, boxed: an accept loop is a task per listener, and a timer
/// held inline (112 bytes) would be carried by every idle listener of every namespace for an
/// error that almost never happens (issue 16: bytes per namespace).
async fn accept_backoff() {
    Box::pin(tokio::time::sleep(ACCEPT_BACKOFF)).await;
}

/// Admits `peer` into the service's shared table, or into this listener's own table when the
/// service has none.
/// `own` is made at the first connection that needs it: services with a shared table never
/// use it, and an idle listener should cost no table (issue 16: bytes per namespace).
fn admit(
    ns: &NsInfo,
    service: &Arc<dyn NsService>,
    own: &mut Option<Arc<SlotTable>>,
    peer: &Peer,
) -> Slot {
    let (table, budget) = service.slots().unwrap_or_else(|| {
        let own = own.get_or_insert_with(SlotTable::new);
        (Arc::clone(own), SlotBudget::default())
    });
    let (slot, adm) = table.admit(peer, budget);
    if adm.evicted > 0 {
        tracing::debug!(netns = %ns.name, ?peer, local = adm.local, evicted = adm.evicted,
            "connection budget reached; closed the longest-idle connection to admit a new one");
    }
    slot
}

/// Runs `conn` until it ends, its namespace goes, or its slot is evicted.
fn spawn_conn(ns: &Arc<NsInfo>, service: &Arc<dyn NsService>, conn: Connection) {
    let evicted = conn.slot.evicted();
    let fut = Arc::clone(service).on_connection(conn);
    let cancel = ns.cancel.clone();
    let ns = Arc::clone(ns);
    tokio::spawn(async move {
        // A panic ends only this connection's task; say so with the namespace (tokio itself
        // would drop it silently into the JoinHandle nobody awaits).
        tokio::select! {
            () = cancel.cancelled() => {}
            () = evicted.cancelled() => {}
            r = super::contain::contained(fut) => if let Err(msg) = r {
                tracing::error!(netns = %ns.name, panic = %msg, "connection handler panicked; connection closed");
            }
        }
    });
}

/// Serves a TCP listener until dropped.
pub(crate) async fn run_tcp(
    listener: tokio::net::TcpListener,
    ns: Arc<NsInfo>,
    service: Arc<dyn NsService>,
) {
    let mut own = None;
    loop {
        // `poll_accept` rather than `accept()`: the latter's future holds a readiness waiter
        // node and the nested async state of tokio's I/O path (about 300 bytes in every idle
        // listener's task); polling keeps the waker in the socket's registration instead, with
        // the same wakeups (issue 16: bytes per namespace).
        let accepted = std::future::poll_fn(|cx| listener.poll_accept(cx)).await;
        // Matched without an await inside: a match that awaited the backoff in its error arm
        // would keep room for the accepted stream in the task across that await.
        let Some((stream, peer)) = accepted
            .inspect_err(|e| tracing::warn!(netns = %ns.name, error = %e, "tcp accept failed"))
            .ok()
        else {
            accept_backoff().await;
            continue;
        };
        // A dual-stack listener gives IPv4 peers v4-mapped: services see them as IPv4.
        let peer = Peer::Ip(crate::sys::unmap(peer));
        let slot = admit(&ns, &service, &mut own, &peer);
        let local = stream.local_addr().ok().map(crate::sys::unmap);
        let conn = Connection {
            stream: Stream::Tcp(stream),
            peer,
            local,
            slot,
        };
        spawn_conn(&ns, &service, conn);
    }
}

/// Serves an AF_LOCAL listener until dropped; peers carry kernel-verified credentials.
pub(crate) async fn run_unix(
    listener: tokio::net::UnixListener,
    ns: Arc<NsInfo>,
    service: Arc<dyn NsService>,
) {
    let mut own = None;
    loop {
        // `poll_accept` and no await inside a match on its result, as in `run_tcp`.
        let accepted = std::future::poll_fn(|cx| listener.poll_accept(cx)).await;
        let Some((stream, _)) = accepted
            .inspect_err(|e| tracing::warn!(netns = %ns.name, error = %e, "local accept failed"))
            .ok()
        else {
            accept_backoff().await;
            continue;
        };
        let Ok(cred) = stream.peer_cred() else {
            continue;
        };
        let peer = Peer::Local {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        };
        let slot = admit(&ns, &service, &mut own, &peer);
        let conn = Connection {
            stream: Stream::Unix(stream),
            peer,
            local: None,
            slot,
        };
        spawn_conn(&ns, &service, conn);
    }
}
