//! A file re-read only when it changed: how the per-namespace files of the `ip netns`
//! convention (`ETC/NAME/resolv.conf`, `ETC/NAME/hosts`) are followed.
//!
//! Why a stamp check instead of inotify: the check runs only on queries that need an upstream
//! (at most once a second) or when no upstream is known, so an idle namespace costs no CPU
//! and no inotify watch, and a file created after the namespace is still noticed.

use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest file read (a `hosts` file of ~300,000 lines): anything larger is refused rather than
/// held in memory for one namespace.
const MAX_FILE_BYTES: u64 = 16 << 20;

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
        match read_regular(&self.path) {
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

/// Reads `path` only if it is a regular file of at most [`MAX_FILE_BYTES`]. Opened with
/// `O_NONBLOCK` and checked again after opening, so a FIFO or device planted under
/// `/etc/netns/NAME/` cannot hang the daemon's thread (symlinks are followed: the `ip netns`
/// convention allows them, and only root writes there).
fn read_regular(path: &Path) -> io::Result<String> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    let mut text = String::new();
    file.by_ref()
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_are_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("resolv.conf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let mut w = Watched::new(fifo);
        // No writer: a blocking open would hang here forever.
        assert_eq!(w.changed(), Some(None));
        let file = dir.path().join("hosts");
        std::fs::write(&file, "10.0.0.1 a\n").expect("write");
        let mut w = Watched::new(file);
        assert_eq!(w.changed(), Some(Some("10.0.0.1 a\n".to_owned())));
        assert_eq!(w.changed(), None);
    }
}
