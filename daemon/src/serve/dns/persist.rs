//! Records added at run time (`nsauxctl dns add`) survive a restart of the daemon.
//!
//! `STATE_DIR/dns/BOOT_ID/COOKIE.journal` holds one namespace's run-time records as a JSON
//! array of `[name, address]`, rewritten whole (temp file + rename) on every add or remove: the
//! list is small and changes rarely, so a snapshot is simpler than a log. The directory is the
//! portmapper's per-boot, per-cookie layout ([`JournalDir`]): files of other boots are deleted at
//! start, a namespace's file when the namespace goes, and files of namespaces that did not come
//! back after a restart by the sweep `journal_sweep_delay_secs` after start. A cookie is never
//! reused within a boot, so records are only ever restored into the namespace they were added to.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::lock::lock;
use crate::netns::NetnsId;
use crate::serve::rpcbind::journal::JournalDir;

/// The per-boot directory of record files, and the namespaces that have one open.
#[derive(Debug)]
pub(crate) struct RecordDir {
    dir: JournalDir,
    live: Arc<Mutex<HashSet<u64>>>,
    sweep_delay: Duration,
}

impl RecordDir {
    /// Opens `STATE_DIR/dns/BOOT_ID` (a failure is logged: records then do not survive).
    pub(crate) fn open(state_dir: &Path, sweep_delay: Duration) -> Option<Arc<Self>> {
        match JournalDir::open(state_dir, "dns") {
            Ok(dir) => Some(Arc::new(Self {
                dir,
                live: Arc::default(),
                sweep_delay: sweep_delay.max(Duration::from_secs(1)),
            })),
            Err(e) => {
                tracing::error!(state_dir = %state_dir.display(), error = %e,
                    "cannot use the state directory; run-time DNS records will not survive a restart");
                None
            }
        }
    }

    /// Deletes, after the sweep delay, the files of namespaces that did not come back.
    pub(crate) fn start_sweep(self: &Arc<Self>) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(me.sweep_delay).await;
            let live = lock(&me.live).clone();
            me.dir.sweep(&live);
        });
    }

    /// The record file of namespace `id`.
    pub(crate) fn file(&self, id: NetnsId) -> RecordFile {
        lock(&self.live).insert(id.0);
        RecordFile {
            file: self.dir.journal(id),
            id: id.0,
            live: Arc::clone(&self.live),
        }
    }
}

/// One namespace's record file, named when used (as a portmapper journal is: no path held per
/// namespace, issue 16).
#[derive(Debug)]
pub(crate) struct RecordFile {
    file: crate::serve::rpcbind::journal::Journal,
    id: u64,
    live: Arc<Mutex<HashSet<u64>>>,
}

impl RecordFile {
    /// The records saved for this namespace (none when there is no file; a damaged file is
    /// logged and ignored).
    pub(crate) fn load(&self) -> Vec<(String, IpAddr)> {
        let path = self.file.path();
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "dns: saved records unreadable; ignored");
                Vec::new()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "dns: cannot read saved records");
                Vec::new()
            }
        }
    }

    /// Replaces the saved records (temp file + rename; an empty list removes the file).
    pub(crate) fn save(&self, records: &[(String, IpAddr)]) -> io::Result<()> {
        let path = self.file.path();
        if records.is_empty() {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let bytes = serde_json::to_vec(records).map_err(io::Error::other)?;
        crate::state_file::replace(&path, "tmp", &bytes)
    }

    /// The namespace went: its records go with it.
    pub(crate) fn gone(&self) {
        lock(&self.live).remove(&self.id);
        let path = self.file.path();
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "dns: cannot delete saved records");
        }
    }
}

impl super::DnsNs {
    /// Puts the saved run-time records back into a fresh instance.
    pub(super) fn restore_records(&self) {
        let Some(file) = &self.records else {
            return;
        };
        let saved = file.load();
        if saved.is_empty() {
            return;
        }
        let mut g = self.lock();
        let mut n = 0usize;
        for (name, addr) in saved {
            match g.resolver.add_record(&name, addr) {
                Ok(()) => {
                    n += 1;
                    if !g.runtime_records.contains(&(name.clone(), addr)) {
                        g.runtime_records.push((name, addr));
                    }
                }
                Err(e) => {
                    tracing::warn!(netns = %self.ns.name, %name, %addr, error = %e, "dns: saved record refused")
                }
            }
        }
        tracing::info!(netns = %self.ns.name, restored = n, "dns: run-time records restored");
    }

    /// Saves the run-time records after a change (a failure is logged: they then do not
    /// survive a restart, but are served meanwhile).
    pub(super) fn save_records(&self, records: &[(String, IpAddr)]) {
        if let Some(file) = &self.records
            && let Err(e) = file.save(records)
        {
            tracing::error!(netns = %self.ns.name, error = %e, "dns: cannot save run-time records");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_go_with_the_namespace() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let Some(rd) = RecordDir::open(dir.path(), Duration::from_secs(1)) else {
            return Err(io::Error::other("open"));
        };
        let f = rd.file(NetnsId(9));
        assert!(f.load().is_empty());
        let recs = vec![("a.lan".to_owned(), IpAddr::from([10, 0, 0, 1]))];
        f.save(&recs)?;
        assert_eq!(rd.file(NetnsId(9)).load(), recs);
        f.gone();
        assert!(f.load().is_empty());
        assert!(!lock(&rd.live).contains(&9));
        Ok(())
    }
}
