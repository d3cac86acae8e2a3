//! Accept loops for TCP and AF_LOCAL listeners, with a per-listener connection cap.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{Connection, NsInfo, NsService, Peer, Stream};

/// Pause after an accept error (EMFILE and friends) so we do not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

fn spawn_conn(
    ns: &Arc<NsInfo>,
    service: &Arc<dyn NsService>,
    conn: Connection,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let fut = Arc::clone(service).on_connection(conn);
    let cancel = ns.cancel.clone();
    let ns = Arc::clone(ns);
    tokio::spawn(async move {
        // A panic ends only this connection's task; say so with the namespace (tokio itself
        // would drop it silently into the JoinHandle nobody awaits).
        tokio::select! {
            () = cancel.cancelled() => {}
            r = super::contain::contained(fut) => if let Err(msg) = r {
                tracing::error!(netns = %ns.name, panic = %msg, "connection handler panicked; connection closed");
            }
        }
        drop(permit);
    });
}

/// Serves a TCP listener until dropped.
pub(crate) async fn run_tcp(
    listener: tokio::net::TcpListener,
    ns: Arc<NsInfo>,
    service: Arc<dyn NsService>,
) {
    let limit = Arc::new(Semaphore::new(service.max_connections()));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                    tracing::debug!(netns = %ns.name, %peer, "connection limit reached; closing");
                    continue;
                };
                let local = stream.local_addr().ok();
                let conn = Connection {
                    stream: Stream::Tcp(stream),
                    peer: Peer::Ip(peer),
                    local,
                };
                spawn_conn(&ns, &service, conn, permit);
            }
            Err(e) => {
                tracing::warn!(netns = %ns.name, error = %e, "tcp accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Serves an AF_LOCAL listener until dropped; peers carry kernel-verified credentials.
pub(crate) async fn run_unix(
    listener: tokio::net::UnixListener,
    ns: Arc<NsInfo>,
    service: Arc<dyn NsService>,
) {
    let limit = Arc::new(Semaphore::new(service.max_connections()));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                    tracing::debug!(netns = %ns.name, "local connection limit reached; closing");
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
                let conn = Connection {
                    stream: Stream::Unix(stream),
                    peer,
                    local: None,
                };
                spawn_conn(&ns, &service, conn, permit);
            }
            Err(e) => {
                tracing::warn!(netns = %ns.name, error = %e, "local accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
