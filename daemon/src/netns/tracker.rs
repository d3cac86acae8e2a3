//! Following namespace directories live (`/run/netns` and friends).
//!
//! `ip netns add` creates `DIR/NAME` and *then* bind-mounts the namespace on it; the mount makes
//! no inotify event. So after `IN_CREATE` we open the file and check that it is on nsfs, retrying
//! briefly until it is, and beyond that on every change of the mount table (`/proc/self/mountinfo`
//! signals `POLLPRI`): a bind mount that lands after the retries (a loaded machine, a slow
//! `unshare`) is still seen, at once. `ip netns del` unmounts and unlinks (`IN_DELETE`). On start and on queue
//! overflow we rescan. There is no netlink event for namespace creation, so this is the way.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::sys::asyncfd::InotifyFd;
use tokio::io::Interest;
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::sync::mpsc;

use super::Source;
use crate::sys;

/// A namespace file's identity on disk: `(st_dev, st_ino)`. Only good for recognising the same
/// file twice; inode numbers are recycled once a namespace is freed.
pub(crate) type FileId = (u64, u64);

/// What the tracker tells the manager.
#[derive(Debug)]
pub(crate) enum TrackerEvent {
    /// A namespace file is ready (mounted); `fd` keeps the namespace alive until dropped.
    Appeared {
        /// Where it was found.
        source: Source,
        /// An open handle on the namespace.
        fd: OwnedFd,
        /// The file's identity, to notice a replacement under the same name.
        file_id: FileId,
    },
    /// A namespace file went away.
    Vanished {
        /// Where it was.
        source: Source,
    },
}

/// Requests to a running tracker.
#[derive(Debug)]
enum Command {
    SetDirs(Vec<PathBuf>),
    Recheck {
        dir: PathBuf,
        name: String,
        attempt: u32,
    },
    Rewatch {
        dir: PathBuf,
        attempt: u32,
    },
}

/// Handle to the tracker task.
#[derive(Debug, Clone)]
pub(crate) struct NetnsTracker {
    cmd: mpsc::UnboundedSender<Command>,
}

/// How many times to look again (after the fast phase) before giving up: about 2.5 s.
const MOUNT_RETRIES: u32 = 10;

/// The mount normally lands well under a millisecond after the file's creation. tokio timers
/// tick in whole milliseconds, so the first 20 ms of waiting are a 100 µs poll on a blocking
/// thread (only while a name is pending), then timers back off from 4 ms.
const FAST_POLL: Duration = Duration::from_micros(100);
const FAST_POLL_FOR: Duration = Duration::from_millis(20);

fn mount_retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(4u64 << attempt.min(9)).min(Duration::from_millis(1024))
}

fn is_mounted(path: &Path) -> bool {
    open_candidate(path).is_ok_and(|f| sys::netns::is_nsfs(f.as_fd()).unwrap_or(false))
}

/// Opens a file of a watched directory the way a hostile directory requires: never following
/// a symlink (`O_NOFOLLOW`: a planted link must not redirect the daemon to another file or
/// namespace), never blocking (`O_NONBLOCK`: a planted FIFO must not hang the tracker), and
/// only if it is a regular file (what both `ip netns add`'s placeholder and a mounted nsfs
/// inode are), checked before opening (no device is ever opened) and after (no swap between).
fn open_candidate(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let not_regular = || io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
    if !std::fs::symlink_metadata(path)?.file_type().is_file() {
        return Err(not_regular());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// Whether an open error means "never a namespace file" (a symlink, FIFO, socket or device),
/// so the name is ignored at once instead of retried.
fn never_a_namespace(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidInput
        || matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENXIO))
}

fn rewatch_delay(attempt: u32) -> Duration {
    Duration::from_secs((1u64 << attempt.min(6)).min(60))
}

struct State {
    inotify: AsyncFd<InotifyFd>,
    watches: HashMap<WatchDescriptor, PathBuf>,
    dirs: Vec<PathBuf>,
    /// Names reported as appeared, with their file identity.
    reported: HashMap<(PathBuf, String), FileId>,
    /// Names waiting for their mount to show up.
    pending: HashSet<(PathBuf, String)>,
    /// The mount table, readable with priority when it changed (`None`: cannot be watched,
    /// then names are given up after the timed retries).
    mounts: Option<AsyncFd<File>>,
    events: mpsc::UnboundedSender<TrackerEvent>,
    cmd: mpsc::UnboundedSender<Command>,
}

impl NetnsTracker {
    /// Starts watching `dirs` (creating them if missing, as `ip netns` does) and reports every
    /// namespace already there, then every change.
    pub(crate) fn spawn(
        dirs: Vec<PathBuf>,
        events: mpsc::UnboundedSender<TrackerEvent>,
    ) -> io::Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let mut state = State {
            inotify: sys::asyncfd::inotify(inotify)?,
            watches: HashMap::new(),
            dirs: Vec::new(),
            reported: HashMap::new(),
            pending: HashSet::new(),
            mounts: None,
            events,
            cmd: cmd_tx.clone(),
        };
        state.set_dirs(dirs);
        tokio::spawn(state.run(cmd_rx));
        Ok(Self { cmd: cmd_tx })
    }

    /// Replaces the watched directories (on reload).
    pub(crate) fn set_dirs(&self, dirs: Vec<PathBuf>) {
        let _ = self.cmd.send(Command::SetDirs(dirs));
    }
}

/// Resolves when the mount table changed (never without a watch).
async fn mounts_changed(m: Option<&AsyncFd<File>>) -> io::Result<AsyncFdReadyGuard<'_, File>> {
    match m {
        Some(m) => m.ready(Interest::PRIORITY).await,
        None => std::future::pending().await,
    }
}

impl State {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Command>) {
        match sys::asyncfd::mount_table() {
            Ok(m) => self.mounts = Some(m),
            Err(e) => tracing::warn!(error = %e,
                "cannot watch the mount table; a namespace mounted more than ~3 s after its file was created will be missed"),
        }
        loop {
            tokio::select! {
                ready = mounts_changed(self.mounts.as_ref()) => match ready {
                    Ok(mut guard) => {
                        guard.clear_ready();
                        self.on_mounts_changed();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "watching the mount table failed; falling back to timed retries");
                        self.mounts = None;
                    }
                },
                cmd = cmds.recv() => match cmd {
                    Some(Command::SetDirs(dirs)) => self.set_dirs(dirs),
                    Some(Command::Recheck { dir, name, attempt }) => {
                        if self.pending.contains(&(dir.clone(), name.clone())) {
                            self.try_open(&dir, &name, attempt);
                        }
                    }
                    Some(Command::Rewatch { dir, attempt }) => {
                        if self.dirs.contains(&dir) && !self.watches.values().any(|d| d == &dir) {
                            self.watch(&dir, attempt);
                        }
                    }
                    None => return,
                },
                ready = self.inotify.readable() => {
                    let mut guard = match ready {
                        Ok(g) => g,
                        Err(e) => {
                            tracing::error!(error = %e, "inotify failed; namespace tracking stopped");
                            return;
                        }
                    };
                    match guard.get_inner().0.read_events() {
                        Ok(events) => {
                            for ev in events {
                                self.on_event(ev.wd, ev.mask, ev.name.as_deref());
                            }
                        }
                        Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                        Err(e) => tracing::warn!(error = %e, "reading inotify events"),
                    }
                }
            }
        }
    }

    fn set_dirs(&mut self, dirs: Vec<PathBuf>) {
        let old: Vec<PathBuf> = self.dirs.clone();
        self.dirs = dirs.clone();
        for dir in old.iter().filter(|d| !dirs.contains(d)) {
            self.unwatch(dir);
        }
        for dir in dirs.iter().filter(|d| !old.contains(d)) {
            self.watch(dir, 0);
        }
    }

    fn watch(&mut self, dir: &Path, attempt: u32) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot create namespace directory");
        }
        let flags = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR;
        match self.inotify.get_ref().0.add_watch(dir, flags) {
            Ok(wd) => {
                tracing::info!(dir = %dir.display(), "watching namespace directory");
                self.watches.insert(wd, dir.to_path_buf());
                self.rescan(dir);
            }
            Err(e) => {
                let delay = rewatch_delay(attempt);
                tracing::warn!(dir = %dir.display(), error = %e, retry_in = ?delay,
                    "cannot watch namespace directory");
                self.schedule(
                    delay,
                    Command::Rewatch {
                        dir: dir.to_path_buf(),
                        attempt: attempt + 1,
                    },
                );
            }
        }
    }

    fn unwatch(&mut self, dir: &Path) {
        let wds: Vec<WatchDescriptor> = self
            .watches
            .iter()
            .filter(|(_, d)| d.as_path() == dir)
            .map(|(wd, _)| *wd)
            .collect();
        for wd in wds {
            let _ = self.inotify.get_ref().0.rm_watch(wd);
            self.watches.remove(&wd);
        }
        self.forget_dir(dir);
    }

    /// Reports every namespace of `dir` as gone (directory unwatched or removed).
    fn forget_dir(&mut self, dir: &Path) {
        let gone: Vec<(PathBuf, String)> = self
            .reported
            .keys()
            .filter(|(d, _)| d.as_path() == dir)
            .cloned()
            .collect();
        for key in gone {
            self.vanish(&key.0, &key.1);
        }
        self.pending.retain(|(d, _)| d.as_path() != dir);
    }

    fn on_event(&mut self, wd: WatchDescriptor, mask: AddWatchFlags, name: Option<&OsStr>) {
        if mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            tracing::warn!("inotify queue overflowed; rescanning namespace directories");
            for dir in self.dirs.clone() {
                self.rescan(&dir);
            }
            return;
        }
        let Some(dir) = self.watches.get(&wd).cloned() else {
            return;
        };
        if mask.intersects(
            AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF | AddWatchFlags::IN_IGNORED,
        ) {
            tracing::warn!(dir = %dir.display(), "namespace directory went away");
            self.watches.remove(&wd);
            let _ = self.inotify.get_ref().0.rm_watch(wd);
            self.forget_dir(&dir);
            self.schedule(rewatch_delay(0), Command::Rewatch { dir, attempt: 1 });
            return;
        }
        let Some(name) = name.and_then(OsStr::to_str) else {
            return;
        };
        if mask.intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM) {
            self.pending.remove(&(dir.clone(), name.to_owned()));
            self.vanish(&dir, name);
        }
        if mask.intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO) {
            // A new file under a reported name means the old namespace is gone.
            self.vanish(&dir, name);
            self.try_open(&dir, name, 0);
        }
    }

    /// The mount table changed: names still waiting for their mount are looked at again.
    fn on_mounts_changed(&mut self) {
        let waiting: Vec<(PathBuf, String)> = self.pending.iter().cloned().collect();
        for (dir, name) in waiting {
            if is_mounted(&dir.join(&name)) {
                self.try_open(&dir, &name, MOUNT_RETRIES);
            }
        }
    }

    fn rescan(&mut self, dir: &Path) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot scan namespace directory");
                return;
            }
        };
        let mut present = HashSet::new();
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let key = (dir.to_path_buf(), name.clone());
            let current = std::fs::symlink_metadata(entry.path())
                .ok()
                .map(|m| (m.dev(), m.ino()));
            match (self.reported.get(&key), current) {
                (Some(known), Some(now)) if *known == now => {}
                (Some(_), _) => {
                    self.vanish(dir, &name);
                    self.try_open(dir, &name, 0);
                }
                (None, _) if !self.pending.contains(&key) => self.try_open(dir, &name, 0),
                (None, _) => {}
            }
            present.insert(name);
        }
        let gone: Vec<String> = self
            .reported
            .keys()
            .filter(|(d, n)| d.as_path() == dir && !present.contains(n))
            .map(|(_, n)| n.clone())
            .collect();
        for name in gone {
            self.vanish(dir, &name);
        }
    }

    fn vanish(&mut self, dir: &Path, name: &str) {
        if self
            .reported
            .remove(&(dir.to_path_buf(), name.to_owned()))
            .is_some()
        {
            let source = Source::Dir {
                dir: dir.to_path_buf(),
                name: name.to_owned(),
            };
            let _ = self.events.send(TrackerEvent::Vanished { source });
        }
    }

    fn try_open(&mut self, dir: &Path, name: &str, attempt: u32) {
        let key = (dir.to_path_buf(), name.to_owned());
        let path = dir.join(name);
        let file = match open_candidate(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.pending.remove(&key);
                return;
            }
            Err(e) if never_a_namespace(&e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "not a namespace file (symlink, FIFO, socket or device); ignoring");
                self.pending.remove(&key);
                return;
            }
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot open namespace file");
                self.retry_open(key, attempt);
                return;
            }
        };
        match sys::netns::is_nsfs(file.as_fd()) {
            Ok(true) => {}
            _ => {
                self.retry_open(key, attempt);
                return;
            }
        }
        let file_id = match file.metadata() {
            Ok(m) => (m.dev(), m.ino()),
            Err(_) => return,
        };
        self.pending.remove(&key);
        self.reported.insert(key, file_id);
        let source = Source::Dir {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
        };
        let _ = self.events.send(TrackerEvent::Appeared {
            source,
            fd: file.into(),
            file_id,
        });
    }

    fn retry_open(&mut self, key: (PathBuf, String), attempt: u32) {
        if attempt == 0 {
            // Fast phase: poll with fine sleeps off the runtime, then hand back.
            self.pending.insert(key.clone());
            let tx = self.cmd.clone();
            let path = key.0.join(&key.1);
            tokio::task::spawn_blocking(move || {
                let start = std::time::Instant::now();
                while start.elapsed() < FAST_POLL_FOR && !is_mounted(&path) {
                    std::thread::sleep(FAST_POLL);
                }
                let _ = tx.send(Command::Recheck {
                    dir: key.0,
                    name: key.1,
                    attempt: 1,
                });
            });
            return;
        }
        if attempt >= MOUNT_RETRIES {
            if self.mounts.is_some() {
                // No more timers: the next mount-table change looks again.
                tracing::debug!(path = %key.0.join(&key.1).display(), "not mounted yet; waiting for a mount");
                self.pending.insert(key);
            } else {
                tracing::debug!(path = %key.0.join(&key.1).display(), "not a namespace file; ignoring");
                self.pending.remove(&key);
            }
            return;
        }
        let delay = mount_retry_delay(attempt);
        self.pending.insert(key.clone());
        self.schedule(
            delay,
            Command::Recheck {
                dir: key.0,
                name: key.1,
                attempt: attempt + 1,
            },
        );
    }

    fn schedule(&self, delay: Duration, cmd: Command) {
        let tx = self.cmd.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(cmd);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_symlinks_and_sockets_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"").unwrap_or_else(|e| panic!("{e}"));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&plain, &link).unwrap_or_else(|e| panic!("{e}"));
        let sock = dir.path().join("sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap_or_else(|e| panic!("{e}"));
        for p in [&fifo, &link, &sock] {
            let e = open_candidate(p)
                .err()
                .unwrap_or_else(|| panic!("{} opened", p.display()));
            assert!(never_a_namespace(&e), "{}: {e}", p.display());
        }
        // A regular file (the placeholder before the mount) opens, and is not nsfs.
        assert!(open_candidate(&plain).is_ok());
        assert!(!is_mounted(&plain));
    }
}
