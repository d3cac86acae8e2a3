//! Journal replay off the loop: a namespace's portmapper is created at once, with only its self
//! registrations, and its journal (up to `journal_max_bytes`) is read and parsed on a blocking
//! thread.
//!
//! # What a namespace answers meanwhile
//! Nothing that depends on the table: answering from a half-restored table would tell a client
//! that a registered program is not there, and a SET could collide with an entry the replay
//! brings back. So until the replay is done a UDP call gets no reply (the client retries, as
//! after a lost datagram; in practice the replay is over before the manager has bound the
//! namespace's sockets), a TCP or AF_LOCAL connection waits for it before its first record, an
//! operator `rpc unset` is refused, and nothing is journaled. `rpc list` and the status show the
//! table as it is, with `"replaying": true`.

use std::sync::{Arc, Weak};

use super::journal::{self, Change, Journal};
use super::service::RpcbindNs;
use super::user_entries;

impl RpcbindNs {
    /// Starts the replay on a blocking thread; without a tokio runtime (unit tests) it runs here.
    pub(super) fn start_replay(self: &Arc<Self>) {
        let Some(j) = self.journal.clone() else {
            self.replay_done();
            return;
        };
        let me = Arc::downgrade(self);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || replay(&me, &j))),
            Err(_) => replay(&me, &j),
        }
    }

    /// Marks the table complete and wakes the connections waiting for it.
    fn replay_done(&self) {
        self.state().replaying = false;
        self.signals.set_replayed();
    }

    /// Waits until the replay is done (connections call this before their first record).
    pub(super) async fn wait_replayed(&self) {
        self.signals.replayed().await;
    }
}

/// The blocking thread's work: read and parse off the lock, restore under it.
fn replay(me: &Weak<RpcbindNs>, j: &Journal) {
    let read = j.replay();
    let size = usize::try_from(j.size()).unwrap_or(usize::MAX);
    let Some(ns) = me.upgrade() else {
        return;
    };
    let name = &ns.ns.name;
    let mut st = ns.state();
    st.journal_bytes = size;
    match read {
        Ok(r) => {
            if r.bad_lines > 0 {
                tracing::warn!(netns = %name, path = %j.path().display(), bad_lines = r.bad_lines,
                    kept = r.entries.len(), "journal damaged: skipped the bad lines, kept the rest");
            }
            let wanted = r.entries.len();
            let n = st.pm.restore(r.entries);
            if n > 0 {
                tracing::info!(netns = %name, restored = n, "registrations restored from the journal");
            }
            ns.account.set(st.pm.registration_bytes());
            let keep = user_entries(&st.pm, &st.cfg);
            st.journal_live = keep
                .into_iter()
                .map(|e| journal::line_len(&Change::Set(e)))
                .sum();
            if r.bad_lines > 0 || n != wanted {
                // The file still holds what was skipped or did not fit: compact it (off the
                // loop). Until then a replay skips it the same way.
                st.replaying = false;
                ns.start_compaction(&mut st, false);
            }
        }
        Err(e) => {
            tracing::error!(netns = %name, path = %j.path().display(), error = %e,
                "cannot read the journal; starting with an empty table");
            // Appending to it would let a later restart bring back registrations this table
            // does not have: the first write replaces it instead.
            st.journal_stale = true;
        }
    }
    drop(st);
    ns.replay_done();
}
