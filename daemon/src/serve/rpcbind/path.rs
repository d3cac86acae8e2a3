//! The path socket (default `/run/rpcbind.sock`) in the daemon's own mount namespace: binding it
//! without taking it from another portmapper, accepting, and routing each caller to the
//! portmapper of the caller's own network namespace (`SO_PEERPIDFD` → `/proc/PID/ns/net`, see
//! `netns::caller`); callers from namespaces nsaux does not serve get an RPC refusal
//! (`refuse.rs`).

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use tokio::sync::Semaphore;

use super::{Shared, refuse};
use crate::lock::lock;
use crate::netns::caller::{self, CallerError};
use crate::netns::tracker::FileId;
use crate::serve::{Connection, Peer, Stream};

/// The running path-socket task. Dropping it stops the task and removes the socket file, if
/// the file there is still the one it bound (never another portmapper's).
#[derive(Debug)]
pub(super) struct PathTask {
    /// Where the socket is.
    path: PathBuf,
    /// The accept loop.
    task: JoinHandle<()>,
    /// Holds the bound socket's inode.
    shared: Arc<Shared>,
}

impl PathTask {
    /// Spawns the task that binds `path` and serves it.
    pub(super) fn start(path: PathBuf, shared: Arc<Shared>) -> Self {
        let task = tokio::spawn(path_socket_task(path.clone(), Arc::clone(&shared)));
        Self { path, task, shared }
    }
}

impl Drop for PathTask {
    fn drop(&mut self) {
        self.task.abort();
        let ours = *lock(&self.shared.path_ino);
        let now = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if ours.is_some() && ours == now {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The process holding the path socket and its network namespace, for the log line that says
/// who answers old-libtirpc callers instead of nsauxd.
fn describe_holder(conn: &std::os::unix::net::UnixStream) -> String {
    let pid = nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .map(|c| c.pid());
    let ns = caller::netns_of_peer(conn, pid);
    match (pid, ns) {
        (Some(pid), Ok((_, ino))) => format!("pid {pid} in netns net:[{ino}]"),
        (Some(pid), Err(e)) => format!("pid {pid}: {e}"),
        (None, _) => "unknown process".into(),
    }
}

/// Binds the path socket unless another portmapper answers on it.
fn bind_path(path: &Path) -> Result<tokio::net::UnixListener, String> {
    let shown = path.display();
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{shown} exists and is not a socket; not touching it"
            ));
        }
        if let Ok(holder) = std::os::unix::net::UnixStream::connect(path) {
            return Err(format!(
                "{shown} is held by another portmapper ({}; it accepts connections); not taking it over. \
                 Until it goes, callers with libtirpc < 1.3.5 in every namespace sharing this mount \
                 namespace reach that portmapper instead of nsauxd",
                describe_holder(&holder)
            ));
        }
        std::fs::remove_file(path).map_err(|e| format!("{shown}: removing stale socket: {e}"))?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let l = std::os::unix::net::UnixListener::bind(path).map_err(|e| format!("{shown}: {e}"))?;
    // Like rpcbind: anyone may connect; what they may do is decided by their credentials.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666));
    l.set_nonblocking(true)
        .map_err(|e| format!("{shown}: {e}"))?;
    tokio::net::UnixListener::from_std(l).map_err(|e| format!("{shown}: {e}"))
}

/// Binds the path socket (retrying with backoff while another portmapper holds it) and routes
/// each connection to the caller's namespace.
async fn path_socket_task(path: PathBuf, shared: Arc<Shared>) {
    let mut delay = Duration::from_secs(1);
    let mut attempts = 0u32;
    let listener = loop {
        match bind_path(&path) {
            Ok(l) => break l,
            Err(e) => {
                if attempts == 0 {
                    tracing::error!(path = %path.display(), error = %e, "cannot serve the rpcbind path socket; retrying");
                } else {
                    tracing::debug!(path = %path.display(), error = %e, "path socket still unavailable");
                }
                *lock(&shared.path_status) = e;
                attempts += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    };
    *lock(&shared.path_ino) = std::fs::symlink_metadata(&path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    *lock(&shared.path_status) = format!("{}: listening", path.display());
    tracing::info!(path = %path.display(), "rpcbind path socket listening; callers are served by their own namespace");
    let refusing = Arc::new(Semaphore::new(refuse::MAX_REFUSING));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "path socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(cred) = stream.peer_cred() else {
            continue;
        };
        let key = caller::netns_of_peer(&stream, cred.pid());
        let inst = key
            .as_ref()
            .ok()
            .and_then(|k| lock(&shared.routes).get(k).and_then(Weak::upgrade));
        let Some(inst) = inst else {
            log_refusal(&shared, &path, &cred, &key);
            refuse::spawn(stream, &refusing);
            continue;
        };
        let peer = Peer::Local {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        };
        // Path callers count in their namespace's local budget, like its abstract socket.
        let (slot, adm) = inst.slots.table().admit(&peer, inst.slot_budget());
        if adm.evicted > 0 {
            tracing::debug!(netns = %inst.ns.name, ?peer, evicted = adm.evicted,
                "connection budget reached; closed the longest-idle connection to admit a new one");
        }
        let cancel = inst.ns.cancel.clone();
        let evicted = slot.evicted();
        tracing::trace!(netns = %inst.ns.name, ?peer, "path socket connection routed");
        let conn = Connection {
            stream: Stream::Unix(stream),
            peer,
            local: None,
            slot,
        };
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = evicted.cancelled() => {}
                () = inst.serve_conn(conn) => {}
            }
        });
    }
}

/// Logs a refused path-socket caller (at most once a second), naming its namespace the way
/// `lsns` and `/proc/PID/ns/net` do (`net:[INODE]`), since nsaux has no label for it.
fn log_refusal(
    shared: &Shared,
    path: &Path,
    cred: &tokio::net::unix::UCred,
    key: &Result<FileId, CallerError>,
) {
    let mut last = lock(&shared.last_refusal_log);
    if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
        return;
    }
    *last = Some(Instant::now());
    match key {
        Ok((_, ino)) => {
            let netns = format!("net:[{ino}]");
            tracing::warn!(netns = %netns, path = %path.display(), pid = ?cred.pid(), uid = cred.uid(),
                "path socket caller is in a network namespace nsauxd does not serve; refused with an RPC AUTH_ERROR reply");
        }
        Err(CallerError::Gone) => {
            tracing::warn!(path = %path.display(), pid = ?cred.pid(), uid = cred.uid(),
                "path socket caller's process is gone (its pid may already name another process); refused with an RPC AUTH_ERROR reply");
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), pid = ?cred.pid(), uid = cred.uid(), error = %e,
                "path socket caller's network namespace cannot be told, so nsauxd does not serve it; refused with an RPC AUTH_ERROR reply");
        }
    }
}
