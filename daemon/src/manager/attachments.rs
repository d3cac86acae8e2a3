//! Attachments that survive a restart of the daemon.
//!
//! A namespace attached by pid, path, OCI hook or CNI plugin has no file in a watched directory,
//! so after a restart nothing would bring it back, and the portmapper would sweep its journal.
//! Every attachment is therefore written to `STATE_DIR/attachments.json` (temp file + rename, so
//! a crash leaves the old or the new list, never half of one) with the boot id and the
//! namespace cookie. At start each one is re-attached through its pid (pidfd opened first) or
//! its path, and kept only if the namespace found there still has the remembered cookie: a
//! recycled pid or a re-created file never brings a different namespace in under the old name.
//! A list of another boot is ignored (every namespace of it is gone).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::netns::{NetnsId, Source};

/// The file's name inside the state directory.
const FILE_NAME: &str = "attachments.json";

/// One remembered attachment: everything needed to attach it again and check it is the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Remembered {
    /// Its label.
    pub(crate) name: String,
    /// The namespace cookie it had; a re-attach finding another cookie is dropped.
    pub(crate) cookie: u64,
    /// Attached by this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pid: Option<u32>,
    /// Or by this namespace file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<PathBuf>,
    /// The runtime's key (`oci:ID`, `cni:...`), so its detach still works after the restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    /// Who attached it (`ctl`, `hook`, `cni`).
    pub(crate) origin: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileForm {
    boot_id: String,
    attachments: Vec<Remembered>,
}

/// The attachment list of this boot in the state directory.
#[derive(Debug)]
pub(crate) struct AttachStore {
    path: PathBuf,
    boot: String,
}

impl AttachStore {
    /// The store under `state_dir` for the running boot.
    pub(crate) fn open(state_dir: &Path) -> io::Result<Self> {
        Ok(Self {
            path: state_dir.join(FILE_NAME),
            boot: crate::serve::rpcbind::journal::boot_id()?,
        })
    }

    /// The attachments remembered in this boot; none when the file is missing, of another boot,
    /// or unreadable (logged: a damaged list must not stop the daemon).
    pub(crate) fn load(&self) -> Vec<Remembered> {
        let text = match fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read remembered attachments");
                return Vec::new();
            }
        };
        match serde_json::from_slice::<FileForm>(&text) {
            Ok(f) if f.boot_id == self.boot => f.attachments,
            Ok(_) => {
                tracing::info!(path = %self.path.display(), "remembered attachments are of another boot; ignored");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "remembered attachments unreadable; ignored");
                Vec::new()
            }
        }
    }

    /// Replaces the list atomically (temp file + rename).
    pub(crate) fn save(&self, list: &[Remembered]) -> io::Result<()> {
        let form = FileForm {
            boot_id: self.boot.clone(),
            attachments: list.to_vec(),
        };
        let bytes = serde_json::to_vec_pretty(&form).map_err(io::Error::other)?;
        crate::state_file::replace(&self.path, "json.tmp", &bytes)
    }
}

impl super::Manager {
    /// Writes the attachment list (a failure is logged: attachments then do not survive a
    /// restart, but serving goes on).
    pub(super) fn persist_attachments(&self) {
        let Some(store) = &self.store else {
            return;
        };
        let list: Vec<Remembered> = self
            .attached
            .iter()
            .map(|(source, meta)| Remembered {
                name: source.name().to_owned(),
                cookie: meta.cookie.0,
                pid: match source {
                    Source::Pid { pid, .. } => Some(*pid),
                    _ => None,
                },
                path: match source {
                    Source::Path { path, .. } => Some(path.clone()),
                    _ => None,
                },
                key: meta.key.clone(),
                origin: meta.origin.clone(),
            })
            .collect();
        if let Err(e) = store.save(&list) {
            tracing::error!(error = %e, "cannot remember attachments; they will not survive a restart");
        }
    }

    /// Re-attaches what an earlier run remembered, keeping only namespaces that still have
    /// their cookie. Runs before the first control call, so the portmapper's journals of these
    /// namespaces are replayed (and not swept).
    pub(super) async fn restore_attachments(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        let list = store.load();
        for r in list {
            let how = super::sources::AttachHow {
                key: r.key,
                origin: r.origin,
                expect: Some(NetnsId(r.cookie)),
            };
            let resp = self.attach(r.name.clone(), r.pid, r.path, how).await;
            if resp.ok {
                tracing::info!(netns = %r.name, id = r.cookie, "re-attached after restart");
            } else {
                tracing::info!(netns = %r.name, id = r.cookie, reason = resp.error.as_deref().unwrap_or(""),
                    "remembered attachment is gone; forgotten");
            }
        }
        self.persist_attachments();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_list_loads_back_and_another_boot_is_ignored() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = AttachStore::open(dir.path())?;
        assert!(store.load().is_empty());
        let r = Remembered {
            name: "c1".into(),
            cookie: 42,
            pid: Some(7),
            path: None,
            key: Some("oci:abc".into()),
            origin: "hook".into(),
        };
        store.save(std::slice::from_ref(&r))?;
        assert_eq!(store.load(), vec![r]);
        let other = AttachStore {
            path: store.path.clone(),
            boot: "another".into(),
        };
        assert!(other.load().is_empty());
        fs::write(&store.path, b"{half")?;
        assert!(store.load().is_empty());
        Ok(())
    }
}
