//! Namespaces coming and going: the sources that make them known (watched directories, the
//! host, attach by pid or path), aliases of one namespace, and detaching when an attached process
//! exits (watched through its pidfd).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::listeners::{ServiceSlot, TaskGuard};
use super::{Manager, ManagerMsg};
use crate::control::Response;
use crate::netns::tracker::FileId;
use crate::netns::{NetnsId, Source};
use crate::serve::NsInfo;
use crate::sys;

/// Everything held for one namespace identity, however many sources name it: dropping or
/// closing it releases every fd and socket, so the kernel can free the namespace.
#[derive(Debug)]
pub(super) struct NsEntry {
    /// What services see of the namespace.
    pub(super) info: Arc<NsInfo>,
    /// The namespace file, kept open for creating sockets inside it.
    pub(super) fd: Arc<OwnedFd>,
    /// Every way we know this namespace; the first names it.
    pub(super) sources: Vec<(Source, Option<FileId>)>,
    /// When it appeared.
    pub(super) since: SystemTime,
    /// Its services by name.
    pub(super) services: BTreeMap<&'static str, ServiceSlot>,
}

impl Drop for NsEntry {
    fn drop(&mut self) {
        // Ends connection tasks; listener tasks end through their guards.
        self.info.cancel.cancel();
    }
}

impl NsEntry {
    /// Closes every socket held for the namespace and waits until they are closed.
    pub(super) async fn close(mut self) {
        self.info.cancel.cancel();
        for (_, slot) in std::mem::take(&mut self.services) {
            slot.close().await;
        }
    }
}

impl Manager {
    /// Serves the daemon's own namespace (`host_netns`).
    pub(super) async fn add_host(&mut self) {
        match File::open("/proc/self/ns/net") {
            Ok(f) => {
                self.add_source(Source::Host, f.into(), None).await;
            }
            Err(e) => tracing::error!(error = %e, "cannot open the daemon's own namespace"),
        }
    }

    /// Adds a way of knowing a namespace; a new identity gets its services started.
    pub(super) async fn add_source(
        &mut self,
        source: Source,
        fd: OwnedFd,
        file_id: Option<FileId>,
    ) -> Option<NetnsId> {
        if self.sources.contains_key(&source) {
            self.remove_source(&source).await;
        }
        let fd = Arc::new(fd);
        let cookie = match self
            .factory
            .run_in(Arc::clone(&fd), sys::netns::current_netns_cookie)
            .await
        {
            Ok(c) => NetnsId(c),
            Err(e) => {
                tracing::warn!(netns = source.name(), %source, error = %e, "not a usable network namespace; ignoring");
                return None;
            }
        };
        self.sources.insert(source.clone(), cookie);
        if let Some(entry) = self.namespaces.get_mut(&cookie) {
            tracing::info!(netns = %entry.info.name, alias = source.name(), %source, "namespace already served; recorded alias");
            entry.sources.push((source, file_id));
            return Some(cookie);
        }
        let info = Arc::new(NsInfo {
            id: cookie,
            name: source.name().to_owned(),
            nsfs: nix::sys::stat::fstat(fd.as_fd())
                .ok()
                .map(|st| (st.st_dev, st.st_ino)),
            cancel: CancellationToken::new(),
            fd: Arc::clone(&fd),
            factory: self.factory.clone(),
        });
        tracing::info!(netns = %info.name, id = %cookie, %source, "namespace appeared");
        self.namespaces.insert(
            cookie,
            NsEntry {
                info,
                fd,
                sources: vec![(source, file_id)],
                since: SystemTime::now(),
                services: BTreeMap::new(),
            },
        );
        self.apply(cookie).await;
        Some(cookie)
    }

    /// Forgets a way of knowing a namespace; when none is left, every socket and fd held for it
    /// is closed at once so the kernel can free it.
    pub(super) async fn remove_source(&mut self, source: &Source) {
        let Some(id) = self.sources.remove(source) else {
            return;
        };
        let Some(entry) = self.namespaces.get_mut(&id) else {
            return;
        };
        entry.sources.retain(|(s, _)| s != source);
        if entry.sources.is_empty() {
            if let Some(entry) = self.namespaces.remove(&id) {
                let name = entry.info.name.clone();
                for slot in entry.services.values() {
                    if let Ok(inst) = &slot.instance {
                        inst.namespace_gone();
                    }
                }
                entry.close().await;
                tracing::info!(netns = %name, id = %id, %source, "namespace gone; released");
            }
        } else {
            tracing::info!(netns = %entry.info.name, alias = source.name(), "alias removed; namespace still served");
        }
    }

    fn name_in_use(&self, name: &str) -> bool {
        self.sources.keys().any(|s| s.name() == name)
    }

    /// Tracks a namespace named on request (`nsauxctl attach`): by pid, watched until the
    /// process exits, or by namespace file.
    pub(super) async fn attach(
        &mut self,
        name: String,
        pid: Option<u32>,
        path: Option<PathBuf>,
    ) -> Response {
        if name.is_empty() || name.contains('/') {
            return Response::err(format!("invalid namespace name {name:?}"));
        }
        if self.name_in_use(&name) {
            return Response::err(format!("a namespace named {name:?} is already tracked"));
        }
        let (source, ns_path, pidfd) = match (pid, path) {
            (Some(pid), None) => {
                // The pidfd first: if the pid is reused after this, the pidfd still refers to the
                // process we checked, and it reports that process's exit.
                let pidfd = match sys::pidfd::open(pid) {
                    Ok(fd) => fd,
                    Err(e) => return Response::err(format!("no process {pid}: {e}")),
                };
                (
                    Source::Pid { name, pid },
                    PathBuf::from(format!("/proc/{pid}/ns/net")),
                    Some(pidfd),
                )
            }
            (None, Some(path)) => (
                Source::Path {
                    name,
                    path: path.clone(),
                },
                path,
                None,
            ),
            _ => return Response::err("attach needs exactly one of --pid or --path"),
        };
        let file = match File::open(&ns_path) {
            Ok(f) => f,
            Err(e) => return Response::err(format!("cannot open {}: {e}", ns_path.display())),
        };
        if !sys::netns::is_nsfs(file.as_fd()).unwrap_or(false) {
            return Response::err(format!("{} is not a namespace file", ns_path.display()));
        }
        let Some(id) = self.add_source(source.clone(), file.into(), None).await else {
            return Response::err(format!("{} is not a network namespace", ns_path.display()));
        };
        if let Some(pidfd) = pidfd {
            match watch_pid(pidfd, source.clone(), self.tx.clone()) {
                Ok(guard) => {
                    self.pid_watchers.insert(source.clone(), guard);
                }
                Err(e) => {
                    self.remove_source(&source).await;
                    return Response::err(format!("cannot watch process: {e}"));
                }
            }
        }
        Response::ok(json!({ "name": source.name(), "id": id, "source": source.to_string() }))
    }

    /// Stops tracking an attached namespace; directory and host namespaces are refused, since
    /// their own source would bring them back.
    pub(super) async fn detach(&mut self, name: &str) -> Response {
        let found: Vec<Source> = self
            .sources
            .keys()
            .filter(|s| s.name() == name)
            .cloned()
            .collect();
        let Some(source) = found.into_iter().next() else {
            return Response::err(format!("unknown namespace {name:?}"));
        };
        if !source.is_attached() {
            return Response::err(format!(
                "namespace {name:?} comes from {source}, not from attach; remove it there (e.g. ip netns del)"
            ));
        }
        self.pid_watchers.remove(&source);
        self.remove_source(&source).await;
        Response::ok(json!({ "detached": name }))
    }
}

fn watch_pid(
    pidfd: OwnedFd,
    source: Source,
    tx: mpsc::UnboundedSender<ManagerMsg>,
) -> io::Result<TaskGuard> {
    let afd = sys::asyncfd::owned(pidfd)?;
    let handle = tokio::spawn(async move {
        // A pidfd becomes readable when its process exits.
        let _ = afd.readable().await;
        let _ = tx.send(ManagerMsg::PidExited { source });
    });
    Ok(TaskGuard::new(handle))
}
