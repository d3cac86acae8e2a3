//! Journal compaction off the loop: the file is rewritten on a blocking thread while calls keep
//! appending to it.
//!
//! # Why nothing is lost or applied twice
//! Appends happen under the namespace's state lock, each whole (or cut back) before the lock is
//! released. A compaction takes, under that lock, a snapshot of the live table and the file's
//! length `base` at that moment: replaying the snapshot gives exactly what replaying the first
//! `base` bytes gives. Off the lock it writes the snapshot to `COOKIE.journal.compact`, then
//! copies what was appended after `base` (a few rounds, to catch up with a busy namespace).
//! The last few bytes are copied, and the file renamed over the journal, under the state lock
//! again, so no append can fall between the copy and the rename: the new file is the snapshot
//! followed by every line appended since, in order, and replays to the table as it is now.
//!
//! `kill -9` at any moment leaves the old journal (before the rename; the temporary file is
//! truncated by the next compaction, deleted by the sweep or with the namespace) or the new one
//! (after it), each holding every acknowledged change: no fsync is needed for that, the page
//! cache survives the process (see `journal.rs`, durability policy).
//!
//! The compaction gives up, leaving the old file (which holds everything), when the file was
//! replaced or removed meanwhile (a synchronous rewrite at the cap or after a failed write, the
//! namespace going: `State::journal_gen` changed) or an append left a tail it could not cut
//! back (`journal_stale`).

use std::io;
use std::sync::Weak;

use nsaux_rpcbind::Entry;

use super::journal::{Journal, encode_entries};
use super::service::{COMPACT_SLACK, RpcbindNs, State};
use super::user_entries;
use crate::state_file::Replacement;

/// Catch-up rounds off the lock before the final copy under it.
const CATCH_UP_ROUNDS: usize = 8;
/// A catch-up round that copied less than this ends the catch-up: the rest is copied under the
/// lock (at most a few appends' worth in practice).
const CATCH_UP_DONE: usize = 4096;

/// What the compaction saw under the lock when it started.
struct Snapshot {
    /// `State::journal_gen` then: which file `base` is an offset into.
    generation: u64,
    /// The file's length then (`State::journal_bytes`).
    base: u64,
    /// The live (user) registrations then.
    keep: Vec<Entry>,
    /// `State::journal_live` then, to carry the live size forward exactly.
    live: usize,
}

/// The replacement file, written off the lock up to `copied`.
struct Prepared {
    file: Replacement,
    /// Bytes of the snapshot lines.
    snapshot_len: usize,
    /// Offset in the old file copied so far.
    copied: u64,
}

impl RpcbindNs {
    /// Starts a compaction on a blocking thread unless one runs or a failed one is not due for a
    /// retry yet. Called with the state locked. Without a tokio runtime (unit tests) it does
    /// nothing: the synchronous rewrite at the cap still bounds the file.
    pub(super) fn start_compaction(&self, st: &mut State) {
        if st.compacting || st.journal_bytes < st.compact_retry_at {
            return;
        }
        let Some(journal) = self.journal.clone() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        st.compacting = true;
        let snap = Snapshot {
            generation: st.journal_gen,
            base: st.journal_bytes as u64,
            keep: user_entries(&st.pm, &st.cfg),
            live: st.journal_live,
        };
        let me = self.me.clone();
        rt.spawn_blocking(move || run(&me, &journal, snap));
    }
}

/// The blocking thread's work: prepare off the lock, finish under it, record the outcome.
fn run(me: &Weak<RpcbindNs>, journal: &Journal, snap: Snapshot) {
    let prepared = prepare(journal, &snap);
    let Some(ns) = me.upgrade() else {
        return; // the namespace is gone; `prepared` is dropped with its temporary file
    };
    let mut st = ns.state();
    st.compacting = false;
    match prepared.and_then(|p| finish(journal, &snap, p, &mut st)) {
        Ok(true) => {
            st.compactions += 1;
            st.compact_retry_at = 0;
            tracing::debug!(netns = %ns.ns.name, bytes = st.journal_bytes, "journal compacted");
        }
        Ok(false) => {
            tracing::debug!(netns = %ns.ns.name, "journal replaced meanwhile; compaction dropped");
        }
        Err(e) => {
            // The old file is intact and holds everything; retry once it grew some more.
            st.compact_retry_at = st.journal_bytes + COMPACT_SLACK;
            if ns.journal_log.allow() {
                tracing::warn!(netns = %ns.ns.name, error = %e,
                    "cannot compact the journal; appending to the old file");
            }
        }
    }
}

/// Writes the snapshot and catches up with the appends made meanwhile, off the lock.
fn prepare(journal: &Journal, snap: &Snapshot) -> io::Result<Prepared> {
    let lines = encode_entries(&snap.keep);
    let mut file = journal.begin_compaction()?;
    file.write(&lines)?;
    #[cfg(feature = "fault-injection")]
    crate::serve::fault::compaction_pause();
    let mut copied = snap.base;
    for _ in 0..CATCH_UP_ROUNDS {
        let tail = journal.read_from(copied)?;
        file.write(&tail)?;
        copied += tail.len() as u64;
        if tail.len() < CATCH_UP_DONE {
            break;
        }
    }
    Ok(Prepared {
        file,
        snapshot_len: lines.len(),
        copied,
    })
}

/// Under the state lock: copies the last appends and renames. `Ok(false)`: the file changed
/// under the compaction (see the module docs), which is dropped.
fn finish(journal: &Journal, snap: &Snapshot, mut p: Prepared, st: &mut State) -> io::Result<bool> {
    if st.journal_gen != snap.generation || st.journal_stale {
        return Ok(false);
    }
    let tail = journal.read_from(p.copied)?;
    p.file.write(&tail)?;
    let appended = p.copied + tail.len() as u64 - snap.base;
    let committed = p.file.commit();
    crate::metrics::journal(&committed);
    committed?;
    st.journal_bytes = p.snapshot_len + usize::try_from(appended).unwrap_or(usize::MAX);
    // The live size changed since the snapshot by what the appends added and removed.
    st.journal_live = (p.snapshot_len + st.journal_live).saturating_sub(snap.live);
    Ok(true)
}
