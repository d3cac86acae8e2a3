//! The observation socket: read-only, separate from the control socket, so an unprivileged
//! exporter (`nsauxctl metrics --listen`, in a group given access) can read the counters
//! without being able to change anything. A client connects and reads the exposition text
//! until EOF; whatever it writes is ignored, and the socket accepts no requests at all.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::config::ObserveSocket;
use crate::control::{Call, Request};

/// Clients written to at once; a newcomer beyond them closes the oldest (a client that
/// never reads must not keep a real scraper out).
const MAX_WRITERS: usize = 64;
/// Time a client has to take its exposition.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Clients answered from one snapshot: those already waiting when a scrape starts share it.
const MAX_BATCH: usize = 1024;

/// Binds the observation socket with the configured mode and group. The caller holds the
/// runtime-dir lock, so a stale socket file left by a crash can be removed safely. A std
/// listener, bound before the runtime exists: giving the socket to a group root is not in
/// needs `CAP_CHOWN`, which the daemon drops before any thread starts (see `privilege`).
pub(crate) fn bind(cfg: &ObserveSocket) -> anyhow::Result<std::os::unix::net::UnixListener> {
    let path = &cfg.path;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Private until the group and mode are set.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener =
        listener.with_context(|| format!("binding observation socket {}", path.display()))?;
    if let Some(gid) = cfg.gid {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .with_context(|| format!("chgrp {} {}", gid, path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.mode))
        .with_context(|| format!("chmod {:o} {}", cfg.mode, path.display()))?;
    listener
        .set_nonblocking(true)
        .context("observation socket: non-blocking")?;
    Ok(listener)
}

/// Serves scrapes until the task is dropped. `manager` answers the one read-only question
/// the exposition needs from the daemon's state (the namespace list).
pub(crate) async fn serve(
    listener: std::os::unix::net::UnixListener,
    manager: mpsc::UnboundedSender<Call>,
) {
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "observation socket: cannot register with the runtime");
            return;
        }
    };
    let mut writers: VecDeque<AbortHandle> = VecDeque::new();
    loop {
        let Ok((first, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // Everyone already waiting shares one snapshot: a local user connecting in a loop
        // costs one namespace walk per batch, not one per connection.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout(Duration::ZERO, listener.accept()).await {
                Ok(Ok((s, _))) => batch.push(s),
                _ => break,
            }
        }
        let text: Arc<str> = scrape(&manager).await.into();
        for stream in batch {
            // Most clients (and every peer that already left) are done with one non-blocking
            // write: the text fits in the socket buffer. Only the rest get a writer task.
            let Some((stream, sent)) = write_now(stream, &text) else {
                continue;
            };
            writers.retain(|w| !w.is_finished());
            if writers.len() >= MAX_WRITERS
                && let Some(oldest) = writers.pop_front()
            {
                oldest.abort();
            }
            let text = Arc::clone(&text);
            let task = tokio::spawn(async move {
                let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
                    let mut stream = stream;
                    let _ = stream.write_all(&text.as_bytes()[sent..]).await;
                    let _ = stream.shutdown().await;
                })
                .await;
            });
            writers.push_back(task.abort_handle());
        }
    }
}

/// Writes what the socket takes of `text` at once; `None` when that was all of it (or the
/// peer is gone), else the stream and the bytes already sent.
fn write_now(stream: UnixStream, text: &str) -> Option<(UnixStream, usize)> {
    use std::io::Write as _;
    let mut std_stream = stream.into_std().ok()?;
    let mut sent = 0;
    while sent < text.len() {
        match std_stream.write(&text.as_bytes()[sent..]) {
            Ok(0) => return None,
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return UnixStream::from_std(std_stream).ok().map(|s| (s, sent));
            }
            Err(_) => return None,
        }
    }
    None
}

/// One exposition: the counters plus namespaces by source and state.
pub(crate) async fn scrape(manager: &mpsc::UnboundedSender<Call>) -> String {
    let (reply, rx) = oneshot::channel();
    let list = if manager
        .send(Call {
            request: Request::NsCounts,
            reply,
        })
        .is_ok()
    {
        rx.await.ok().map(|r| r.data).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    // The counters of every namespace, summed and encoded: off the loop (megabytes of text at
    // thousands of namespaces). The list itself was built by the manager in bounded turns.
    tokio::task::spawn_blocking(move || {
        super::encode::text(super::snapshot(), namespace_counts(&list))
    })
    .await
    .unwrap_or_default()
}

/// The manager's `[[kind, state, count], ...]` as gauges, every kind and state present (0 when
/// none), so a series does not vanish when its last namespace goes.
fn namespace_counts(list: &Value) -> super::encode::NsCounts {
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    for kind in ["host", "dir", "pid", "path"] {
        for state in ["serving", "partial"] {
            counts.insert((kind.into(), state.into()), 0);
        }
    }
    for row in list.as_array().into_iter().flatten() {
        let (Some(kind), Some(state), Some(n)) =
            (row[0].as_str(), row[1].as_str(), row[2].as_u64())
        else {
            continue;
        };
        *counts
            .entry((kind.to_owned(), state.to_owned()))
            .or_default() += n;
    }
    counts.into_iter().collect()
}

/// Reads one exposition from the socket at `path` (what `nsauxctl metrics` does).
pub(crate) fn read(path: &Path) -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("connecting to the observation socket {}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(out)
}
