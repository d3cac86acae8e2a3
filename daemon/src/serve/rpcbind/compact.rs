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
//! replaced or removed meanwhile (a reconfiguration that dropped registrations, the namespace
//! going: `State::journal_gen` changed) or an append left a tail it could not cut back
//! (`journal_stale`); a rewrite whole is then started at once (unless the namespace went).
//!
//! # Rewriting whole
//! A *stale* file (an append failed and may have left a tail, a start-up read failed, a
//! reconfiguration dropped registrations) is not compacted but replaced by the table alone,
//! the same way off the loop (`State::rewriting_whole`): no line of it is copied, so nothing is
//! appended meanwhile. Calls that change the table wait for it (`busy.rs`). A change that
//! would take the file past `journal_max_bytes` also waits, for a compaction started at once.
//! The rewrite of a stale file is started only after the change that asked for it was taken
//! back (`State::compaction_due`): the file written is the acknowledged table, never one holding
//! the waiting change (which a restart would otherwise replay, even if the call was never
//! answered, and in the wrong place once it is handled again). The compaction at the cap is
//! started with the waiting change still applied, as its room needs (see `write_journal`); the
//! call's `HeldChange` (`busy.rs`) has the file rewritten whole once the call is handled again
//! or given up.
//! Nothing rewrites the whole file on the loop.

use std::io;
use std::sync::{Arc, Weak};

use nsaux_rpcbind::Entry;

use super::journal::{Journal, encode_entries};
use super::service::{COMPACT_SLACK, RpcbindNs, State};
use super::user_entries_of;
use crate::config::RpcbindConfig;
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
    /// The configuration then (which entries are the portmapper's own, not journaled).
    cfg: Arc<RpcbindConfig>,
    /// The file is stale: it is replaced by `keep` alone, no line of it copied.
    whole: bool,
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
    /// Starts a compaction (a rewrite whole if the file is stale) on a blocking thread unless
    /// one runs, or a failed one is not due for a retry yet and `now` is false (a change is
    /// waiting for it). Called with the state locked. Without a tokio runtime (unit tests) it
    /// does nothing.
    pub(super) fn start_compaction(&self, st: &mut State, now: bool) {
        if st.compacting || st.gone || (!now && st.journal_bytes < st.compact_retry_at) {
            return;
        }
        let Some(journal) = self.journal.clone() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        st.compacting = true;
        st.rewriting_whole = st.journal_stale;
        // The table is shared, not copied, here on the loop (`Registry::snapshot`); the copy of
        // its user entries is made on the blocking thread.
        let table = st.pm.registry_snapshot();
        let snap = Snapshot {
            generation: st.journal_gen,
            base: st.journal_bytes as u64,
            cfg: Arc::clone(&st.cfg),
            live: st.journal_live,
            whole: st.journal_stale,
        };
        let me = self.me.clone();
        rt.spawn_blocking(move || run(&me, &journal, table, snap));
    }

    /// Starts the rewrite a change that met a stale file asked for (`State::compaction_due`).
    /// Called with the state locked, after that change was taken back: the file written is
    /// then the acknowledged table.
    pub(super) fn start_due_compaction(&self, st: &mut State) {
        if std::mem::take(&mut st.compaction_due) {
            self.start_compaction(st, true);
        }
    }
}

/// The blocking thread's work: prepare off the lock, finish under it, record the outcome.
fn run(me: &Weak<RpcbindNs>, journal: &Journal, table: Arc<Vec<Entry>>, snap: Snapshot) {
    let prepared = prepare(journal, table, &snap);
    let Some(ns) = me.upgrade() else {
        return; // the namespace is gone; `prepared` is dropped with its temporary file
    };
    let mut st = ns.state();
    st.compacting = false;
    st.rewriting_whole = false;
    let outcome = prepared.and_then(|p| finish(journal, &snap, p, &mut st));
    // Calls waiting for this end are handled again, or given up if it failed (`busy.rs`).
    let ok = outcome.is_ok();
    ns.signals.end_turn(ok);
    match outcome {
        Ok(true) if snap.whole => {
            st.compact_retry_at = 0;
            tracing::debug!(netns = %ns.ns.name, bytes = st.journal_bytes, "journal rewritten");
            if let Some(was) = st.journal_error.take() {
                tracing::info!(netns = %ns.ns.name, previous_error = %was, "journal writable again; journaling resumed");
            }
        }
        Ok(true) => {
            st.compactions += 1;
            st.compact_retry_at = 0;
            tracing::debug!(netns = %ns.ns.name, bytes = st.journal_bytes, "journal compacted");
        }
        Ok(false) => {
            tracing::debug!(netns = %ns.ns.name, "journal replaced meanwhile; compaction dropped");
            if st.journal_stale {
                // The file to replace changed (a reconfiguration) or went stale meanwhile.
                ns.start_compaction(&mut st, true);
            }
        }
        Err(e) if snap.whole => {
            // Still stale: the next change starts another attempt (one at a time).
            if ns.journal_log.allow() {
                tracing::error!(netns = %ns.ns.name, error = %e, "cannot rewrite the journal");
            }
            st.journal_error = Some(e.to_string());
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
fn prepare(journal: &Journal, table: Arc<Vec<Entry>>, snap: &Snapshot) -> io::Result<Prepared> {
    let keep = user_entries_of(&table, &snap.cfg);
    // Released at once: a change on the loop while it is held copies the table.
    drop(table);
    let lines = encode_entries(&keep);
    drop(keep);
    let mut file = journal.begin_compaction()?;
    file.write(&lines)?;
    #[cfg(feature = "fault-injection")]
    crate::serve::fault::compaction_pause();
    let mut copied = snap.base;
    // A stale file's lines are not copied (nothing is appended to it meanwhile).
    let rounds = if snap.whole { 0 } else { CATCH_UP_ROUNDS };
    for _ in 0..rounds {
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
    if snap.whole {
        if st.journal_gen != snap.generation {
            return Ok(false);
        }
        let committed = p.file.commit();
        crate::metrics::journal(&committed);
        committed?;
        st.journal_bytes = p.snapshot_len;
        st.journal_live = p.snapshot_len;
        st.journal_stale = false;
        return Ok(true);
    }
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
