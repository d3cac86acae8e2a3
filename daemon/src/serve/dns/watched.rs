//! A file re-read only when it changed: how the per-namespace files of the `ip netns`
//! convention (`ETC/NAME/resolv.conf`, `ETC/NAME/hosts`) are followed.
//!
//! Why a stamp check instead of inotify: an edit must be seen by the very next query, so the
//! check runs once per batch of received queries (one `stat` per file; a batch shares one
//! clock read), before any answer of the batch is given. An idle namespace costs no CPU and
//! no inotify watch, and a file created after the namespace is still noticed. Only the stat
//! runs there: small files are then read at once, big hosts files off the event loop (see
//! `sources`).

use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest file read (a `hosts` file of ~300,000 lines): anything larger is refused rather than
/// held in memory for one namespace.
pub(super) const MAX_FILE_BYTES: u64 = 16 << 20;

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    mtime: i64,
    mtime_ns: i64,
    len: u64,
    ino: u64,
}

impl Stamp {
    /// The file's size (small files are read in the query path, big ones elsewhere).
    pub(super) fn len(&self) -> u64 {
        self.len
    }
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

    /// `Some(new stamp)` when the file changed since the content in use was recorded (the
    /// inner `None`: it is absent); `None` when unchanged. One `stat`, no read.
    pub(super) fn poll(&self) -> Option<Option<Stamp>> {
        let stamp = std::fs::metadata(&self.path).ok().map(|m| stamp_of(&m));
        (!self.checked || stamp != self.stamp).then_some(stamp)
    }

    /// Records the version whose content is now in use (`None`: absent or unreadable, so any
    /// file appearing there is a change).
    pub(super) fn record(&mut self, stamp: Option<Stamp>) {
        self.checked = true;
        self.stamp = stamp;
    }

    /// `Some(content)` when the file changed since the last call (`Some(None)`: it went away
    /// or cannot be read); `None` when unchanged. Reads at most `max` bytes (a larger file
    /// counts as unreadable).
    pub(super) fn changed(&mut self, max: u64) -> Option<Option<String>> {
        self.poll()?;
        let (text, stamp) = load(&self.path, max);
        self.record(stamp);
        Some(text)
    }
}

/// The stamp of a file's metadata.
fn stamp_of(m: &std::fs::Metadata) -> Stamp {
    Stamp {
        mtime: m.mtime(),
        mtime_ns: m.mtime_nsec(),
        len: m.len(),
        ino: m.ino(),
    }
}

/// Reads `path` (at most `max` bytes, see [`read_regular`]) with the stamp of the very
/// version read; `(None, None)` when it is absent or cannot be read (logged unless absent).
pub(super) fn load(path: &Path, max: u64) -> (Option<String>, Option<Stamp>) {
    match read_regular(path, max) {
        Ok((text, meta)) => (Some(text), Some(stamp_of(&meta))),
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot read");
            }
            (None, None)
        }
    }
}

/// Reads `path` only if it is a regular file of at most `max` bytes. Opened with
/// `O_NONBLOCK` and checked again after opening, so a FIFO or device planted under
/// `/etc/netns/NAME/` cannot hang the daemon's thread (symlinks are followed: the `ip netns`
/// convention allows them, and only root writes there).
fn read_regular(path: &Path, max: u64) -> io::Result<(String, std::fs::Metadata)> {
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
    if meta.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    // A file that reads longer than its size (procfs and sysfs say 0: `/proc/self/pagemap`
    // behind a symlink) is not a configuration file: stop one byte past the size and refuse,
    // so the bytes read never exceed what `stat` promised (small files are read on the loop).
    let mut text = String::new();
    file.by_ref()
        .take(meta.len().saturating_add(1))
        .read_to_string(&mut text)?;
    if text.len() as u64 > meta.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "reads longer than its size (a procfs or sysfs file?)",
        ));
    }
    Ok((text, meta))
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
        assert_eq!(w.changed(MAX_FILE_BYTES), Some(None));
        let file = dir.path().join("hosts");
        std::fs::write(&file, "10.0.0.1 a\n").expect("write");
        let mut w = Watched::new(file);
        assert_eq!(
            w.changed(MAX_FILE_BYTES),
            Some(Some("10.0.0.1 a\n".to_owned()))
        );
        assert_eq!(w.changed(MAX_FILE_BYTES), None);
        assert_eq!(w.changed(4), None, "unchanged: not read again");
        // procfs says 0 bytes and reads more: refused after one byte.
        let mut w = Watched::new("/proc/self/status".into());
        assert_eq!(w.changed(MAX_FILE_BYTES), Some(None));
    }
}
