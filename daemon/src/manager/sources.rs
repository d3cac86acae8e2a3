//! Namespaces coming and going: the sources that make them known (watched directories, the
//! host, attach by pid or path), aliases of one namespace, and detaching when an attached process
//! exits (watched through its pidfd).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::listeners::{ServiceSlot, TaskGuard};
use super::small_map::SmallMap;
use super::{Manager, ManagerMsg};
use crate::control::Response;
use crate::netns::handle::NsHandle;
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
    /// Every way we know this namespace; the first names it.
    pub(super) sources: Vec<(Source, Option<FileId>)>,
    /// When it appeared.
    pub(super) since: SystemTime,
    /// Its services by name.
    pub(super) services: SmallMap<&'static str, ServiceSlot>,
}

impl Drop for NsEntry {
    fn drop(&mut self) {
        // Ends connection tasks; listener tasks end through their guards.
        self.info.cancel.cancel();
        // The handle may hold a listener's endpoint, which points back at the info.
        self.info.handle.release();
    }
}

impl NsEntry {
    /// Closes every socket held for the namespace and waits until they are closed.
    pub(super) async fn close(mut self) {
        self.info.cancel.cancel();
        self.info.handle.release();
        for (_, slot) in std::mem::take(&mut self.services) {
            slot.close().await;
        }
    }
}

/// How many times a failed cookie read of a found namespace is retried (about 25 s in all).
pub(super) const COOKIE_RETRIES: u32 = 8;

/// The wait before cookie retry `attempt` (1-based): 100 ms doubling, at most 10 s.
fn cookie_retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(7)).min(Duration::from_secs(10))
}

/// A namespace source whose cookie read failed, waiting for its next try.
#[derive(Debug)]
pub(crate) struct CookieRetry {
    /// The source.
    source: Source,
    /// Its namespace, kept open meanwhile.
    fd: Arc<OwnedFd>,
    /// Its file identity, when found in a directory.
    file_id: Option<FileId>,
    /// The attempt this is.
    attempt: u32,
    /// Matches `Manager::cookie_retries` unless the source left or came again meanwhile.
    token: u64,
}

impl Manager {
    /// Serves the daemon's own namespace (`host_netns`).
    pub(super) async fn add_host(&mut self) {
        match File::open("/proc/self/ns/net") {
            Ok(f) => {
                self.add_found_source(Source::Host, f.into(), None, 0).await;
            }
            Err(e) => tracing::error!(error = %e, "cannot open the daemon's own namespace"),
        }
    }

    /// Adds a way of knowing a namespace; a new identity gets its services started. A failed
    /// cookie read is not retried here (attach reports it to its caller).
    pub(super) async fn add_source(
        &mut self,
        source: Source,
        fd: OwnedFd,
        file_id: Option<FileId>,
    ) -> Option<NetnsId> {
        self.add_source_try(source, Arc::new(fd), file_id, None)
            .await
    }

    /// Adds a source found by a tracker or the host; a failed cookie read (e.g. out of fds or
    /// memory for the probe socket) is retried with backoff, [`COOKIE_RETRIES`] times, rather
    /// than the namespace being forgotten until its file changes.
    pub(super) async fn add_found_source(
        &mut self,
        source: Source,
        fd: OwnedFd,
        file_id: Option<FileId>,
        attempt: u32,
    ) -> Option<NetnsId> {
        self.add_source_try(source, Arc::new(fd), file_id, Some(attempt))
            .await
    }

    /// A cookie retry came due: runs it unless the source left (or came again) meanwhile.
    pub(super) async fn cookie_retry(&mut self, retry: CookieRetry) {
        if self.cookie_retries.get(&retry.source) != Some(&retry.token) {
            return;
        }
        self.cookie_retries.remove(&retry.source);
        self.add_source_try(retry.source, retry.fd, retry.file_id, Some(retry.attempt))
            .await;
    }

    async fn add_source_try(
        &mut self,
        source: Source,
        fd: Arc<OwnedFd>,
        file_id: Option<FileId>,
        attempt: Option<u32>,
    ) -> Option<NetnsId> {
        if self.sources.contains_key(&source) {
            self.remove_source(&source).await;
        }
        self.cookie_retries.remove(&source);
        let cookie = self
            .factory
            .run_in(Arc::clone(&fd), sys::netns::current_netns_cookie)
            .await;
        self.add_with_cookie(source, fd, file_id, attempt, cookie)
            .await
    }

    /// The rest of [`Manager::add_source_try`] once the cookie was read (or not): the
    /// start-up burst (`arrivals.rs`) reads many cookies in one trip and comes in here.
    pub(super) async fn add_with_cookie(
        &mut self,
        source: Source,
        fd: Arc<OwnedFd>,
        file_id: Option<FileId>,
        attempt: Option<u32>,
        cookie: io::Result<u64>,
    ) -> Option<NetnsId> {
        let cookie = match cookie {
            Ok(c) => NetnsId(c),
            Err(e) => {
                match attempt {
                    Some(n) if n < COOKIE_RETRIES => {
                        let delay = cookie_retry_delay(n);
                        tracing::warn!(netns = source.name(), %source, error = %e, retry_in = ?delay,
                            "cannot read the namespace's cookie; retrying");
                        self.schedule_cookie_retry(source, fd, file_id, n + 1, delay);
                    }
                    _ => {
                        tracing::warn!(netns = source.name(), %source, error = %e, "not a usable network namespace; ignoring");
                    }
                }
                return None;
            }
        };
        self.sources.insert(source.clone(), cookie);
        if let Some(entry) = self.namespaces.get_mut(&cookie) {
            tracing::info!(netns = %entry.info.name, alias = source.name(), %source,
                "namespace already served; recorded alias (the first label stays; the alias gets no /etc/netns files of its own)");
            entry.sources.push((source, file_id));
            return Some(cookie);
        }
        let name = self.unique_label(source.name(), cookie);
        if name != source.name() {
            tracing::warn!(netns = %name, wanted = source.name(), %source,
                "another namespace already has this label; this one is labelled with its cookie and reads no /etc/netns files of the other");
        }
        self.start_entry(cookie, name, fd, vec![(source, file_id)], SystemTime::now())
            .await;
        Some(cookie)
    }

    /// A label no served namespace has: `wanted` when free, else `wanted@COOKIE` (cookies are
    /// never reused within a boot, so this is unique unless someone named a file so; then a
    /// counter is appended).
    fn unique_label(&self, wanted: &str, cookie: NetnsId) -> String {
        // The label index, not a walk of every namespace: at start-up with 2,000 namespaces
        // present the walk made arrivals quadratic.
        let taken = |l: &str| self.labels.contains(l);
        if !taken(wanted) {
            return wanted.to_owned();
        }
        let base = format!("{wanted}@{cookie}");
        let mut label = base.clone();
        let mut n = 2u32;
        while taken(&label) {
            label = format!("{base}.{n}");
            n = n.saturating_add(1);
        }
        label
    }

    /// Registers a namespace entry under `name` and starts its services.
    async fn start_entry(
        &mut self,
        cookie: NetnsId,
        name: String,
        fd: Arc<OwnedFd>,
        sources: Vec<(Source, Option<FileId>)>,
        since: SystemTime,
    ) {
        let cancel = CancellationToken::new();
        let info = Arc::new(NsInfo {
            id: cookie,
            metrics: crate::metrics::register(&name, &cancel),
            name,
            nsfs: nix::sys::stat::fstat(fd.as_fd())
                .ok()
                .map(|st| (st.st_dev, st.st_ino)),
            cancel,
            handle: NsHandle::new(fd),
            factory: self.factory.clone(),
            is_host: sources.iter().any(|(s, _)| matches!(s, Source::Host)),
            share: crate::serve::share::NsShare::default(),
        });
        if let Some((source, _)) = sources.first() {
            tracing::info!(netns = %info.name, id = %cookie, %source, "namespace appeared");
        }
        self.labels.insert(info.name.clone());
        self.namespaces.insert(
            cookie,
            NsEntry {
                info,
                sources,
                since,
                services: SmallMap::new(),
            },
        );
        self.apply(cookie).await;
    }

    fn schedule_cookie_retry(
        &mut self,
        source: Source,
        fd: Arc<OwnedFd>,
        file_id: Option<FileId>,
        attempt: u32,
        delay: Duration,
    ) {
        self.next_cookie_token += 1;
        let token = self.next_cookie_token;
        self.cookie_retries.insert(source.clone(), token);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(ManagerMsg::CookieRetry(CookieRetry {
                source,
                fd,
                file_id,
                attempt,
                token,
            }));
        });
    }

    /// Forgets a way of knowing a namespace; when none is left, every socket and fd held for it
    /// is closed at once so the kernel can free it.
    pub(super) async fn remove_source(&mut self, source: &Source) {
        self.cookie_retries.remove(source);
        if self.attached.remove(source).is_some() {
            self.persist_attachments();
        }
        let Some(id) = self.sources.remove(source) else {
            return;
        };
        let Some(entry) = self.namespaces.get_mut(&id) else {
            return;
        };
        let label_gone = entry.sources.first().is_some_and(|(s, _)| s == source);
        entry.sources.retain(|(s, _)| s != source);
        if entry.sources.is_empty() {
            if let Some(entry) = self.namespaces.remove(&id) {
                self.labels.remove(&entry.info.name);
                let name = entry.info.name.clone();
                for slot in entry.services.values() {
                    if let Ok(inst) = &slot.instance {
                        inst.namespace_gone();
                    }
                }
                entry.close().await;
                tracing::info!(netns = %name, id = %id, %source, "namespace gone; released");
            }
        } else if label_gone {
            self.relabel(id).await;
        } else {
            tracing::info!(netns = %entry.info.name, alias = source.name(), "alias removed; namespace still served");
        }
    }

    /// The source that gave a namespace its label went while aliases remain: the label is
    /// freed (a namespace re-created under it must get it, and its `/etc/netns/NAME/` files),
    /// and the namespace is restarted under its oldest remaining alias's label. Its services
    /// restart (durable state is keyed by cookie, not label, and is restored).
    async fn relabel(&mut self, id: NetnsId) {
        let Some(mut old) = self.namespaces.remove(&id) else {
            return;
        };
        self.labels.remove(&old.info.name);
        let sources = std::mem::take(&mut old.sources);
        let fd = match old.info.handle.open() {
            Ok(fd) => fd,
            Err(e) => {
                // Out of fds: the namespace cannot be kept. Its sources are forgotten, so a
                // directory rescan or a new attach brings it back.
                tracing::error!(netns = %old.info.name, id = %id, error = %e,
                    "cannot relabel the namespace (no handle on it); released");
                for (s, _) in &sources {
                    self.sources.remove(s);
                }
                old.close().await;
                return;
            }
        };
        let since = old.since;
        let old_name = old.info.name.clone();
        old.close().await;
        let wanted = sources.first().map_or("?", |(s, _)| s.name()).to_owned();
        let name = self.unique_label(&wanted, id);
        tracing::info!(netns = %name, was = %old_name, id = %id,
            "the namespace's labelling source went; relabelled after its oldest remaining alias");
        self.start_entry(id, name, fd, sources, since).await;
    }

    fn name_in_use(&self, name: &str) -> bool {
        self.sources.keys().any(|s| s.name() == name)
    }

    /// Tracks a namespace named on request (`nsauxctl attach`, a hook, the CNI plugin): by pid,
    /// watched until the process exits, or by namespace file.
    pub(super) async fn attach(
        &mut self,
        name: String,
        pid: Option<u32>,
        path: Option<PathBuf>,
        how: AttachHow,
    ) -> Response {
        if name.is_empty() || name.contains('/') || name.len() > MAX_NAME {
            return Response::err(format!("invalid namespace name {name:?}"));
        }
        if let Some(key) = &how.key
            && let Some((source, meta)) = self
                .attached
                .iter()
                .find(|(_, m)| m.key.as_ref() == Some(key))
        {
            return Response::ok(json!({ "name": source.name(), "id": meta.cookie,
                "source": source.to_string(), "already": true }));
        }
        let name = if how.key.is_some() {
            self.free_name(name)
        } else if self.name_in_use(&name) {
            return Response::err(format!("a namespace named {name:?} is already tracked"));
        } else {
            name
        };
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
        // The pidfd was opened before the namespace: if its process is still alive now, the pid
        // was not recycled in between, so the namespace opened is that process's.
        if let Some(pidfd) = &pidfd {
            match sys::pidfd::is_alive(pidfd.as_fd()) {
                Ok(true) => {}
                Ok(false) => {
                    return Response::err(format!(
                        "process {} exited while attaching; not attached",
                        pid.unwrap_or_default()
                    ));
                }
                Err(e) => return Response::err(format!("cannot check the process: {e}")),
            }
        }
        let Some(id) = self.add_source(source.clone(), file.into(), None).await else {
            return Response::err(format!("{} is not a network namespace", ns_path.display()));
        };
        if let Some(expect) = how.expect
            && expect != id
        {
            self.remove_source(&source).await;
            return Response::err(format!(
                "{} is now another namespace (cookie {id}, was {expect})",
                ns_path.display()
            ));
        }
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
        self.attached.insert(
            source.clone(),
            AttachMeta {
                key: how.key,
                origin: how.origin,
                cookie: id,
            },
        );
        self.persist_attachments();
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

/// Longest label an attach may give (a container id is 64 characters).
const MAX_NAME: usize = 128;

/// How an attach came and what it must match.
#[derive(Debug)]
pub(super) struct AttachHow {
    /// The runtime's key for it (idempotent attach, detach by key).
    pub(super) key: Option<String>,
    /// Who attached (`ctl`, `hook`, `cni`).
    pub(super) origin: String,
    /// At a re-attach after restart: the cookie the namespace must still have.
    pub(super) expect: Option<NetnsId>,
}

/// What is remembered of an attached source (see `attachments.rs`).
#[derive(Debug, Clone)]
pub(super) struct AttachMeta {
    /// The runtime's key.
    pub(super) key: Option<String>,
    /// Who attached.
    pub(super) origin: String,
    /// The namespace's cookie.
    pub(super) cookie: NetnsId,
}

impl Manager {
    /// `wanted` when no source uses it, else `wanted-2`, `wanted-3`, ... (runtimes pick names
    /// from ids and annotations and cannot know what is taken).
    fn free_name(&self, wanted: String) -> String {
        if !self.name_in_use(&wanted) {
            return wanted;
        }
        (2u32..)
            .map(|n| format!("{wanted}-{n}"))
            .find(|n| !self.name_in_use(n))
            .unwrap_or(wanted)
    }

    /// Detaches what was attached with `key`; an unknown key is success (a hook runs again, or
    /// the process already exited and took its namespace with it).
    pub(super) async fn detach_key(&mut self, key: &str) -> Response {
        let found = self
            .attached
            .iter()
            .find(|(_, m)| m.key.as_deref() == Some(key))
            .map(|(s, _)| s.clone());
        let Some(source) = found else {
            return Response::ok(json!({ "detached": null }));
        };
        self.pid_watchers.remove(&source);
        self.remove_source(&source).await;
        Response::ok(json!({ "detached": source.name() }))
    }

    /// Who attached a namespace's sources and under which key, for `ns list` (the CNI plugin's
    /// CHECK reads it).
    pub(super) fn attach_info(&self, e: &NsEntry) -> Vec<serde_json::Value> {
        e.sources
            .iter()
            .filter_map(|(s, _)| self.attached.get(s).map(|m| (s, m)))
            .map(|(s, m)| json!({ "name": s.name(), "origin": m.origin, "key": m.key }))
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_retries_back_off_within_bounds() {
        let delays: Vec<Duration> = (1..=COOKIE_RETRIES).map(cookie_retry_delay).collect();
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(delays[0], Duration::from_millis(200));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)));
        let total: Duration = delays.iter().sum();
        assert!(total < Duration::from_secs(60), "{total:?}");
    }
}
