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
}
