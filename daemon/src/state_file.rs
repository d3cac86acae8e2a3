//! Replacing a file of the state directory whole, the one way: write a temporary file beside
//! it, then rename over it. A crash leaves either the old or the new file, never half of one,
//! which is what every remembered table (portmapper journals, attachments, DNS records) needs.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Writes `bytes` to `path` through `path` with extension `tmp_ext` (mode 0600: the state
/// directory is root's). On failure the old file is untouched and the half-made copy removed.
pub(crate) fn replace(path: &Path, tmp_ext: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(tmp_ext);
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// A replacement of a state file built in steps (a journal compacted off the loop: the snapshot
/// first, then the lines appended meanwhile, then the rename). Dropped before
/// [`Replacement::commit`], it removes its temporary file and leaves the old file untouched.
#[derive(Debug)]
pub(crate) struct Replacement {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    file: Option<fs::File>,
}

impl Replacement {
    /// Starts replacing `path`, through `path` with extension `tmp_ext` (mode 0600, truncated).
    pub(crate) fn create(path: &Path, tmp_ext: &str) -> io::Result<Self> {
        let tmp = path.with_extension(tmp_ext);
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
        })
    }

    /// Adds `bytes` to the new content.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(bytes),
            None => Err(io::Error::other("replacement already committed")),
        }
    }

    /// Renames the new content over the old file: a crash leaves one or the other, whole.
    pub(crate) fn commit(mut self) -> io::Result<()> {
        drop(self.file.take());
        let r = fs::rename(&self.tmp, &self.path);
        if r.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        r
    }
}

impl Drop for Replacement {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.json");
        replace(&path, "json.tmp", b"old").expect("first");
        replace(&path, "json.tmp", b"new").expect("second");
        assert_eq!(fs::read(&path).expect("read"), b"new");
        assert!(!dir.path().join("t.json.tmp").exists());
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("t.json");
        assert!(replace(&path, "json.tmp", b"x").is_err());
        assert!(!path.exists());
    }

    #[test]
    fn a_replacement_in_steps_is_all_or_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        replace(&path, "tmp", b"old").expect("first");
        let mut r = Replacement::create(&path, "compact").expect("create");
        r.write(b"ne").expect("write");
        drop(r);
        assert_eq!(fs::read(&path).expect("read"), b"old");
        assert!(!dir.path().join("j.compact").exists());
        let mut r = Replacement::create(&path, "compact").expect("create");
        r.write(b"ne").expect("write");
        r.write(b"w").expect("write");
        r.commit().expect("commit");
        assert_eq!(fs::read(&path).expect("read"), b"new");
        assert!(!dir.path().join("j.compact").exists());
    }
}
