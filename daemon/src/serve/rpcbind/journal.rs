//! The portmapper's registration journal: what survives a restart of the daemon.
//!
//! # Where and under which key
//! `STATE_DIR/rpcbind/BOOT_ID/COOKIE.journal`: one append-only file per network namespace, keyed
//! by the kernel boot id (`/proc/sys/kernel/random/boot_id`) and the namespace cookie. A cookie
//! is never reused within a boot, so a journal can only ever be restored into the very namespace
//! that wrote it; a namespace re-created under the same name has a new cookie and starts empty.
//! Directories of other boots are deleted at start (after a reboot every namespace and every
//! registered service is new). A namespace's file is deleted when the namespace goes, and the
//! files of namespaces that went while the daemon was down by [`JournalDir::sweep`], which the
//! portmapper runs `journal_sweep_delay_secs` after start.
//!
//! # Format
//! One line per change: a JSON array `["S"|"U", prog, vers, netid, uaddr, owner]`, a TAB, and
//! the FNV-1a 64-bit hash of the JSON in hex. Replay applies the lines in order; a line that is
//! truncated, fails its hash or does not parse is logged and skipped, and every good line is
//! kept. Replay is linear in the file (a hash index of the live entries). When the file has
//! grown well past the live table it is rewritten (temp file + rename); that compaction runs off
//! the loop (`compact.rs`), and the lines appended while it runs are copied after the snapshot
//! before the rename, under the namespace's state lock, so none is lost or applied twice.
//!
//! # Durability policy (fsync)
//! A change is `write(2)`n to the file before the reply is sent, so `kill -9` (or any crash of
//! the daemon) loses no acknowledged registration: the data is in the kernel's page cache. We do
//! **not** fsync: the only events that lose the page cache (power loss, kernel crash) also
//! change the boot id, and a journal of another boot is never restored, because every service
//! that had registered is gone as well. Skipping fsync keeps SET latency in microseconds.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use nsaux_rpcbind::Entry;

use crate::netns::NetnsId;

/// One journaled change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// A registration was added.
    Set(Entry),
    /// A registration was removed.
    Unset(Entry),
}

/// The per-boot journal directory of one service.
#[derive(Debug)]
pub(crate) struct JournalDir {
    /// Shared with every namespace's [`Journal`], which names its file from it on use.
    dir: std::sync::Arc<Path>,
}

/// What a replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Replay {
    /// The table the journal describes, in registration order.
    pub(crate) entries: Vec<Entry>,
    /// Lines read.
    pub(crate) lines: usize,
    /// Lines skipped (truncated, bad hash, unparsable).
    pub(crate) bad_lines: usize,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The current boot id (a UUID string).
pub(crate) fn boot_id() -> io::Result<String> {
    let s = fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
    let s = s.trim();
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected boot id {s:?}"),
        ));
    }
    Ok(s.to_owned())
}

impl JournalDir {
    /// Opens (creating) `STATE_DIR/SERVICE/BOOT_ID`, deleting directories of other boots.
    pub(crate) fn open(state_dir: &Path, service: &str) -> io::Result<Self> {
        let boot = boot_id()?;
        let base = state_dir.join(service);
        fs::create_dir_all(&base)?;
        if let Ok(rd) = fs::read_dir(&base) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy() != boot.as_str() {
                    tracing::info!(path = %e.path().display(), "removing journals of another boot");
                    let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
                }
            }
        }
        let dir = base.join(&boot);
        fs::create_dir_all(&dir)?;
        Ok(Self { dir: dir.into() })
    }

    /// The journal of one namespace (the file is created on the first change).
    pub(crate) fn journal(&self, id: NetnsId) -> Journal {
        Journal {
            dir: std::sync::Arc::clone(&self.dir),
            id,
        }
    }

    /// Deletes the journals of namespaces that are not in `live` (they went while the daemon was
    /// down). Call once the namespaces present at start have been found.
    pub(crate) fn sweep(&self, live: &HashSet<u64>) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // A compaction's temporary file of a live namespace may be in use right now.
            let cookie = name
                .strip_suffix(".journal")
                .or_else(|| name.strip_suffix(COMPACT_SUFFIX))
                .and_then(|c| c.parse::<u64>().ok());
            match cookie {
                Some(c) if live.contains(&c) => {}
                _ => {
                    tracing::info!(path = %e.path().display(), "removing the journal of a namespace that is gone");
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

/// How a journal's compaction temporary file ends (`COOKIE.journal.compact`): not the
/// `journal.tmp` of `Journal::rewrite` (tests), so the two never write one file. Compactions
/// and whole rewrites share it: one runs at a time.
const COMPACT_SUFFIX: &str = ".journal.compact";

/// Replays journal bytes: the table they describe and how many lines were bad. Linear: a SET
/// of an entry already live is a no-op, an UNSET frees its slot, and the live slots keep their
/// order (registration order, which lookups depend on).
pub(crate) fn parse(data: &[u8]) -> Replay {
    let mut r = Replay::default();
    let mut slots: Vec<Option<Entry>> = Vec::new();
    let mut index: HashMap<Entry, usize> = HashMap::new();
    for line in data.split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        r.lines += 1;
        match decode(line) {
            Some(Change::Set(e)) => {
                if !index.contains_key(&e) {
                    index.insert(e.clone(), slots.len());
                    slots.push(Some(e));
                }
            }
            Some(Change::Unset(e)) => {
                if let Some(i) = index.remove(&e)
                    && let Some(slot) = slots.get_mut(i)
                {
                    *slot = None;
                }
            }
            None => r.bad_lines += 1,
        }
    }
    r.entries = slots.into_iter().flatten().collect();
    r
}

/// The journal lines of a compacted file: one SET per live entry, in order.
pub(crate) fn encode_entries(entries: &[Entry]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(100 * entries.len());
    for e in entries {
        encode(&Change::Set(e.clone()), &mut buf);
    }
    buf
}

/// One namespace's journal file, named from the shared directory and the namespace's cookie
/// when used (an append, a replay): a path held per namespace cost about 130 bytes in every
/// namespace, most of which never writes a journal (issue 16: bytes per namespace).
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    dir: std::sync::Arc<Path>,
    id: NetnsId,
}

fn encode(change: &Change, out: &mut Vec<u8>) {
    let (tag, e) = match change {
        Change::Set(e) => ("S", e),
        Change::Unset(e) => ("U", e),
    };
    let json = serde_json::json!([
        tag,
        e.prog,
        e.vers,
        e.netid.as_str(),
        e.uaddr.as_str(),
        e.owner.as_str()
    ])
    .to_string();
    let _ = writeln!(out, "{json}\t{:016x}", fnv1a(json.as_bytes()));
}

fn decode(line: &[u8]) -> Option<Change> {
    let line = std::str::from_utf8(line).ok()?;
    let (json, hash) = line.rsplit_once('\t')?;
    if u64::from_str_radix(hash, 16).ok()? != fnv1a(json.as_bytes()) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let a = v.as_array()?;
    if a.len() != 6 {
        return None;
    }
    let entry = Entry {
        prog: u32::try_from(a[1].as_u64()?).ok()?,
        vers: u32::try_from(a[2].as_u64()?).ok()?,
        netid: a[3].as_str()?.into(),
        uaddr: a[4].as_str()?.into(),
        owner: a[5].as_str()?.into(),
    };
    match a[0].as_str()? {
        "S" => Some(Change::Set(entry)),
        "U" => Some(Change::Unset(entry)),
        _ => None,
    }
}

/// The bytes `change` takes in the file (a SET and an UNSET line of one entry are equally long).
pub(crate) fn line_len(change: &Change) -> usize {
    let mut buf = Vec::new();
    encode(change, &mut buf);
    buf.len()
}

impl Journal {
    /// Its file.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.journal", self.id))
    }

    /// Reads and replays the file. A missing file is an empty table; bad lines are counted and
    /// skipped (the caller logs them).
    pub(crate) fn replay(&self) -> io::Result<Replay> {
        match fs::read(self.path()) {
            Ok(d) => Ok(parse(&d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Replay::default()),
            Err(e) => Err(e),
        }
    }

    /// The file's bytes from `offset` to its end (the lines appended since a compaction's
    /// snapshot). A missing file reads as empty.
    pub(crate) fn read_from(&self, offset: u64) -> io::Result<Vec<u8>> {
        let mut f = match fs::File::open(self.path()) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        f.seek(SeekFrom::Start(offset))?;
        let mut out = Vec::new();
        f.read_to_end(&mut out)?;
        Ok(out)
    }

    /// Starts a compaction's replacement file (see `compact.rs`).
    pub(crate) fn begin_compaction(&self) -> io::Result<crate::state_file::Replacement> {
        crate::state_file::Replacement::create(&self.path(), &COMPACT_SUFFIX[1..])
    }

    /// Appends changes with one `write(2)` (see the module docs for why there is no fsync).
    ///
    /// On failure the file is cut back to its old length: a short write (e.g. a full disk) would
    /// otherwise leave whole lines of a change the caller is about to take back, which a replay
    /// would apply, or a torn line that the next append would be glued to (losing that next,
    /// acknowledged, line). If even that fails, the file may hold such a tail; the caller then
    /// rewrites the whole file before its next append.
    ///
    /// Returns the bytes appended.
    pub(crate) fn append(&self, changes: &[Change]) -> io::Result<usize> {
        if changes.is_empty() {
            return Ok(0);
        }
        let mut buf = Vec::with_capacity(128 * changes.len());
        for c in changes {
            encode(c, &mut buf);
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path())
            .inspect_err(|_| crate::metrics::journal_failed())?;
        let len = f
            .metadata()
            .inspect_err(|_| crate::metrics::journal_failed())?
            .len();
        let written = f.write_all(&buf).inspect_err(|_| {
            let _ = f.set_len(len);
        });
        crate::metrics::journal(&written);
        written.map(|()| buf.len())
    }

    /// Replaces the file with one line per live entry (temp file + rename, so a crash leaves
    /// either the old or the new file). An empty table removes the file. Returns the new size.
    /// Tests only: the daemon rewrites off the loop, in steps (`compact.rs`).
    #[cfg(test)]
    pub(crate) fn rewrite(&self, entries: &[Entry]) -> io::Result<usize> {
        if entries.is_empty() {
            return self.remove().map(|()| 0);
        }
        let buf = encode_entries(entries);
        let written = crate::state_file::replace(&self.path(), "journal.tmp", &buf);
        crate::metrics::journal(&written);
        written.map(|()| buf.len())
    }

    /// The file's size now (0 when it does not exist), read once at start.
    pub(crate) fn size(&self) -> u64 {
        fs::metadata(self.path()).map_or(0, |m| m.len())
    }

    /// Deletes the file (the namespace is gone).
    pub(crate) fn remove(&self) -> io::Result<()> {
        let path = self.path();
        let _ = fs::remove_file(path.with_extension(&COMPACT_SUFFIX[1..]));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(prog: u32, netid: &str, owner: &str) -> Entry {
        Entry {
            prog,
            vers: 1,
            netid: netid.into(),
            uaddr: "0.0.0.0.3.232".into(),
            owner: owner.into(),
        }
    }

    #[test]
    fn replay_applies_in_order_and_keeps_the_good_part() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let j = Journal {
            dir: dir.path().into(),
            id: NetnsId(1),
        };
        assert_eq!(j.replay()?, Replay::default());
        j.append(&[
            Change::Set(e(1, "udp", "superuser")),
            Change::Set(e(2, "tcp", "0")),
        ])?;
        j.append(&[Change::Set(e(3, "odd \"netid\"\t\n", "1000"))])?;
        j.append(&[Change::Unset(e(2, "tcp", "0"))])?;
        let r = j.replay()?;
        assert_eq!(
            r.entries,
            vec![e(1, "udp", "superuser"), e(3, "odd \"netid\"\t\n", "1000")]
        );
        assert_eq!((r.lines, r.bad_lines), (4, 0));
        // Corrupt one byte in the middle, and cut the file mid-line.
        let mut data = fs::read(j.path())?;
        let pos = data.iter().position(|b| *b == b'\n').map_or(0, |p| p + 3);
        data[pos] ^= 0x20;
        data.extend_from_slice(b"[\"S\",7,1,\"udp\"");
        fs::write(j.path(), &data)?;
        let r = j.replay()?;
        assert_eq!(r.bad_lines, 2);
        assert_eq!(
            r.entries,
            vec![e(1, "udp", "superuser"), e(3, "odd \"netid\"\t\n", "1000")]
        );
        j.rewrite(&r.entries)?;
        let r2 = j.replay()?;
        assert_eq!((&r2.entries, r2.lines, r2.bad_lines), (&r.entries, 2, 0));
        let n = j.rewrite(&r.entries)?;
        assert_eq!(n as u64, j.size());
        assert_eq!(
            n,
            r.entries
                .iter()
                .map(|e| line_len(&Change::Set(e.clone())))
                .sum::<usize>()
        );
        j.rewrite(&[])?;
        assert!(!j.path().exists());
        assert_eq!(j.size(), 0);
        Ok(())
    }

    #[test]
    fn replay_keeps_registration_order_through_unset_and_set_again() {
        let mut data = Vec::new();
        for c in [
            Change::Set(e(1, "udp", "0")),
            Change::Set(e(2, "udp", "0")),
            Change::Set(e(1, "udp", "0")),
            Change::Unset(e(1, "udp", "0")),
            Change::Unset(e(9, "udp", "0")),
            Change::Set(e(3, "udp", "0")),
            Change::Set(e(1, "udp", "0")),
        ] {
            encode(&c, &mut data);
        }
        let r = parse(&data);
        assert_eq!(
            r.entries,
            vec![e(2, "udp", "0"), e(3, "udp", "0"), e(1, "udp", "0")]
        );
        assert_eq!((r.lines, r.bad_lines), (7, 0));
        // A compacted file replays to the same table.
        assert_eq!(parse(&encode_entries(&r.entries)).entries, r.entries);
    }

    #[test]
    fn failed_writes_leave_the_file_as_it_was() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let j = Journal {
            dir: dir.path().into(),
            id: NetnsId(1),
        };
        // A directory in the file's place: append and rewrite both fail, and a failed rewrite
        // leaves no temp file behind.
        fs::create_dir(j.path())?;
        assert!(j.append(&[Change::Set(e(1, "udp", "0"))]).is_err());
        assert!(j.rewrite(&[e(1, "udp", "0")]).is_err());
        assert_eq!(fs::read_dir(dir.path())?.count(), 1);
        fs::remove_dir(j.path())?;
        j.append(&[Change::Set(e(1, "udp", "0"))])?;
        assert_eq!(j.replay()?.entries, vec![e(1, "udp", "0")]);
        Ok(())
    }

    #[test]
    fn sweep_keeps_live_namespaces_only() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        fs::create_dir_all(dir.path().join("rpcbind/some-old-boot"))?;
        let jd = JournalDir::open(dir.path(), "rpcbind")?;
        assert!(!dir.path().join("rpcbind/some-old-boot").exists());
        jd.journal(NetnsId(5))
            .append(&[Change::Set(e(1, "udp", "0"))])?;
        jd.journal(NetnsId(6))
            .append(&[Change::Set(e(1, "udp", "0"))])?;
        jd.sweep(&HashSet::from([5]));
        assert!(jd.journal(NetnsId(5)).path().exists());
        assert!(!jd.journal(NetnsId(6)).path().exists());
        Ok(())
    }
}
