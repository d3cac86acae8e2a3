//! A file re-read only when it changed: how the per-namespace files of the `ip netns`
//! convention (`ETC/NAME/resolv.conf`, `ETC/NAME/hosts`) are followed.
//!
//! Why a stamp check instead of inotify: the check runs only on queries that need an upstream
//! (at most once a second) or when no upstream is known, so an idle namespace costs no CPU
//! and no inotify watch, and a file created after the namespace is still noticed.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime: i64,
    mtime_ns: i64,
    len: u64,
    ino: u64,
}

/// A file whose content is re-read when its stamp changes.
#[derive(Debug)]
pub(super) struct Watched {
    /// The file.
    pub(super) path: PathBuf,
    /// The stamp last read (`None`: absent or unreadable).
    stamp: Option<Stamp>,
    /// Whether it was ever checked.
    checked: bool,
}

impl Watched {
    /// A file not yet read.
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            stamp: None,
            checked: false,
        }
    }

    /// `Some(content)` when the file changed since the last call (`Some(None)`: it went away
    /// or cannot be read); `None` when unchanged.
    pub(super) fn changed(&mut self) -> Option<Option<String>> {
        let stamp = std::fs::metadata(&self.path).ok().map(|m| Stamp {
            mtime: m.mtime(),
            mtime_ns: m.mtime_nsec(),
            len: m.len(),
            ino: m.ino(),
        });
        if self.checked && stamp == self.stamp {
            return None;
        }
        self.checked = true;
        self.stamp = stamp;
        if stamp.is_none() {
            return Some(None);
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Some(Some(text)),
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot read");
                }
                self.stamp = None;
                Some(None)
            }
        }
    }
}
