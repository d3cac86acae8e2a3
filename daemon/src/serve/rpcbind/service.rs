//! One namespace's portmapper: its table, its journal, and the handling of each call, with the
//! journal written before a change is acknowledged and the change taken back when it cannot be.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use nsaux_rpcbind::{
    CallContext, Caller, Effect, ForwardTable, Liveness, Portmapper, Transport, is_rpc_reply,
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::journal::{Change, Journal, line_len};
use super::{Shared, new_portmapper, pm_config, self_endpoints, unix_secs, user_entries};
use crate::budget::{Account, LogLimit};
use crate::config::{RpcbindConfig, ServicesConfig};
use crate::lock::lock;
use crate::serve::slots::{LazySlots, SlotBudget, SlotTable};
use crate::serve::{
    ConnFuture, Connection, Datagram, ListenerSpec, NsInfo, NsService, Replies, ReplyTo,
    UdpEndpoint,
};

/// The portmapper of one namespace.
#[derive(Debug)]
pub(crate) struct RpcbindNs {
    /// Itself, for tasks started from `&self` methods (the liveness task on reconfigure).
    pub(super) me: Weak<Self>,
    /// The namespace served.
    pub(super) ns: Arc<NsInfo>,
    /// Everything calls change, behind one lock.
    pub(super) state: Mutex<State>,
    /// Where changes are journaled; `None` when the state directory is unusable.
    pub(super) journal: Option<Journal>,
    /// The journal is replayed (`replay.rs`; connections wait for it), and the ends of
    /// journal compactions and rewrites off the loop (`compact.rs`) with whether the last one
    /// succeeded, so a call that met one running (`Answer::Wait`) is answered once it is over,
    /// or given up if it failed (`busy.rs`).
    pub(super) signals: super::signals::Signals,
    /// TCP + AF_LOCAL connections open now (all listeners and the path socket), with their
    /// budgets per class and per peer (the table made at the first connection).
    pub(super) slots: LazySlots,
    /// Routing and status shared with the kind and the path socket.
    pub(super) shared: Arc<Shared>,
    /// The liveness task, only while `prune` is on.
    pub(super) prune: Mutex<Option<JoinHandle<()>>>,
    /// `cfg.prune`, readable without the state lock on the datagram path.
    pub(super) prune_on: AtomicBool,
    /// A port-111 UDP endpoint of this namespace to send liveness probes from, remembered from
    /// traffic while pruning is on (weak: it never keeps a socket alive).
    pub(super) prune_ep: Mutex<Option<Weak<UdpEndpoint>>>,
    /// The table's share of the daemon's memory ceiling.
    pub(super) account: Account,
    /// Rate limit of the "registration refused" log lines (byte cap, ceiling, journal cap).
    pub(super) refusal_log: LogLimit,
    /// Rate limit of the "cannot journal" log lines (a full disk under a flood of SETs).
    pub(super) journal_log: LogLimit,
    /// UDP calls waiting for such an end now (bounded by `busy::MAX_WAITING`).
    pub(super) waiting: AtomicUsize,
    /// One DUMP encoded off the loop at a time in this namespace (`dump.rs`).
    pub(super) dump_gate: tokio::sync::Semaphore,
}

/// What became of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// The reply is in `out`: send it.
    Reply,
    /// Nothing to send (dropped, not acknowledged, or forwarded).
    Silent,
    /// The change could not be journaled yet because the journal file is being rewritten off
    /// the loop (after a failed write, a reconfiguration, or at `journal_max_bytes`); nothing
    /// was changed. Handle the call again once `signals.turns()` passed this value. `held`: the
    /// compaction started for room at `journal_max_bytes` holds this call's change although
    /// the table does not (see `write_journal`); the caller keeps a [`HeldChange`] until the
    /// call is handled again or given up.
    ///
    /// [`HeldChange`]: super::busy::HeldChange
    Wait { seen: u64, held: bool },
}

/// Slack past twice the live size before the journal is compacted, so a table that churns
/// (SET/UNSET pairs) is rewritten once per this many bytes, not on every change.
pub(super) const COMPACT_SLACK: usize = 64 << 10;

/// What one namespace's calls read and change.
#[derive(Debug)]
pub(super) struct State {
    /// This namespace's section of the configuration (shared with the other namespaces
    /// running the same one).
    pub(super) cfg: Arc<RpcbindConfig>,
    /// The table and the protocol.
    pub(super) pm: Portmapper,
    /// Bytes in the journal file (for compaction and the size cap).
    pub(super) journal_bytes: usize,
    /// Bytes the live (user) registrations take as journal lines: what a compacted file holds.
    /// Kept up to date per change, made exact again by every rewrite.
    pub(super) journal_live: usize,
    /// Why the last journal write failed (a full disk, ...); `None` once one succeeds. Shown in
    /// the namespace's status so an operator sees which namespace stopped journaling.
    pub(super) journal_error: Option<String>,
    /// SETs refused because the journal was at `journal_max_bytes` even after compaction.
    pub(super) journal_refused: u64,
    /// The journal file may not match the table: an append failed (it may have left a tail it
    /// could not cut back, or the file was replaced or removed under us), or a start-up or
    /// reconfiguration rewrite failed. The next write then rewrites the whole file (temp file +
    /// rename) from the table instead of appending to a file of unknown content.
    pub(super) journal_stale: bool,
    /// The journal is being replayed off the loop: calls are not answered and nothing is
    /// journaled until it is done (see `replay.rs`).
    pub(super) replaying: bool,
    /// A compaction runs on a blocking thread (`compact.rs`); no second one starts.
    pub(super) compacting: bool,
    /// The running compaction replaces a stale file by the table (no lines copied from the old
    /// file): changes wait for it instead of appending.
    pub(super) rewriting_whole: bool,
    /// After a failed compaction, the next starts only once the file reached this size.
    pub(super) compact_retry_at: usize,
    /// A change met a stale file and must wait for it to be rewritten whole. The rewrite is
    /// started by [`RpcbindNs::start_due_compaction`] once that change has been taken back, so
    /// the file written never holds a change that was not acknowledged.
    pub(super) compaction_due: bool,
    /// The compaction just started at `journal_max_bytes` holds the change that met the cap,
    /// which the caller then takes back: taken by that call's [`Answer::Wait`] (`held`).
    pub(super) cap_held: bool,
    /// Bumped whenever the file a running compaction works from stops being the one to
    /// replace (a reconfiguration that dropped registrations, the namespace going): that
    /// compaction gives up.
    pub(super) journal_gen: u64,
    /// Compactions done off the loop (shown in the status).
    pub(super) compactions: u64,
    /// The namespace went: no rewrite may bring its journal back.
    pub(super) gone: bool,
    /// Remote calls forwarded and not answered yet, created on the first forward.
    pub(super) forwards: Option<Box<ForwardTable>>,
    /// Liveness probes and misses, created on the first liveness round.
    pub(super) liveness: Option<Box<Liveness>>,
}

impl Drop for RpcbindNs {
    fn drop(&mut self) {
        lock(&self.shared.routes).retain(|_, w| w.strong_count() > 0);
        if let Some(t) = lock(&self.prune).take() {
            t.abort();
        }
    }
}

/// The journal lines for table changes (`Registered`/`Unregistered` effects), in order.
pub(super) fn journal_changes(applied: &[Effect]) -> Vec<Change> {
    let mut v = Vec::new();
    for eff in applied {
        match eff {
            Effect::Registered(e) => v.push(Change::Set(e.clone())),
            Effect::Unregistered(r) => v.extend(r.entries().iter().cloned().map(Change::Unset)),
            Effect::Forward(_) => {}
        }
    }
    v
}

/// Whether the journal should be compacted (off the loop) after an append: it passed twice the
/// live size plus slack, or three quarters of its cap while compaction would win back an
/// eighth of the cap or half of the room the live table leaves under it, whichever is less.
/// The other half of that room takes the appends made while the compaction runs, so a change
/// rarely finds the file at its cap (it then waits for the compaction: [`Answer::Wait`]).
fn wants_compaction(st: &State) -> bool {
    let (bytes, live, cap) = (st.journal_bytes, st.journal_live, st.cfg.journal_max_bytes);
    let win = (cap / 8).min(cap.saturating_sub(live) / 2);
    bytes > 2 * live + COMPACT_SLACK || (bytes > cap - cap / 4 && bytes > live + win)
}

/// The error of a change that must wait for a rewrite of the journal off the loop.
fn busy() -> io::Error {
    io::Error::new(
        io::ErrorKind::WouldBlock,
        "the journal is being rewritten; retry once it is done",
    )
}

/// [`RpcbindNs::journal`] without the bookkeeping of failures. Nothing here rewrites the
/// whole file on the loop: a stale file (once the caller took its changes back), and a change
/// that would take the file past its cap, start a rewrite off the loop (`compact.rs`) and get
/// [`busy`].
fn write_journal(
    ns: &RpcbindNs,
    j: &Journal,
    st: &mut State,
    changes: &[Change],
) -> io::Result<()> {
    if st.compacting && st.rewriting_whole {
        // The file is being replaced by the table as it was: nothing may be appended to it.
        return Err(busy());
    }
    if st.journal_stale {
        // Appending to a file of unknown content could lose or resurrect lines: it is
        // replaced whole (temp file + rename) off the loop first, started once the caller
        // took these changes back (`compaction_due`).
        st.compaction_due = true;
        return Err(busy());
    }
    let (mut added, mut removed) = (0, 0);
    for c in changes {
        match c {
            Change::Set(_) => added += line_len(c),
            Change::Unset(_) => removed += line_len(c),
        }
    }
    let live = (st.journal_live + added).saturating_sub(removed);
    let grown = st.journal_bytes + added + removed;
    let cap = st.cfg.journal_max_bytes;
    if grown > cap {
        if live > cap && added > 0 {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("the journal would pass journal_max_bytes ({cap}) even compacted"),
            ));
        }
        // Compacted, the file has room for it: compact off the loop (the changes that fit
        // keep appending meanwhile), and this one waits for it. Started now, with these
        // changes in the snapshot: that is what makes room for an UNSET at the cap (its line
        // adds bytes; a snapshot of the table without it would compact to the same size). The
        // file then holds a change the table does not (and, once the call is handled again,
        // holds it twice, at the snapshot's place): the call keeps a `HeldChange` (`busy.rs`),
        // which has the file rewritten whole from the table once the call is handled again or
        // given up, so a restart never replays a change that was not acknowledged. Not so for
        // a stale file (above).
        let started = !st.compacting;
        ns.start_compaction(st, true);
        st.cap_held = started && st.compacting;
        return Err(busy());
    }
    // `append` cuts the file back on failure; should that fail too, rewrite next time.
    st.journal_bytes += j.append(changes).inspect_err(|_| st.journal_stale = true)?;
    st.journal_live = live;
    Ok(())
}

/// Takes back table changes that could not be journaled, latest first, so the table is again
/// exactly what it was (removed entries return to their old places; lookups depend on order).
pub(super) fn undo(pm: &mut Portmapper, applied: Vec<Effect>) {
    for eff in applied.into_iter().rev() {
        match eff {
            // SET appended it, and no other entry has its (prog, vers, netid): this removes
            // exactly that entry, from the end.
            Effect::Registered(e) => drop(pm.unset_admin(e.prog, e.vers, &e.netid)),
            Effect::Unregistered(r) => pm.undo_unset(r),
            Effect::Forward(_) => {}
        }
    }
}

impl RpcbindNs {
    /// Tells the memory budget and the registrations gauge the table's size after a change to
    /// it (or its undoing), so neither drifts from the table.
    pub(super) fn table_changed(&self, pm: &Portmapper) {
        self.account.set(pm.registration_bytes());
        self.ns.metrics.set_registrations(pm.entries().len());
    }

    /// The state, locked.
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Journals `changes` (already applied to the table), compacting the file off the loop
    /// when it has grown past twice the live size plus [`COMPACT_SLACK`] or nears
    /// `journal_max_bytes`. On error the caller must take the changes back: the file then holds
    /// the table as it was before them. An error of kind `FileTooLarge` means the changes add
    /// registrations that do not fit under `journal_max_bytes` even compacted; of kind
    /// `WouldBlock`, that the file is being rewritten off the loop (retry once
    /// `signals.turns()` moves). Nothing was written in either case.
    ///
    /// A write that fails (a full disk) is remembered in `journal_error` for the status; the
    /// next change starts a rewrite of the whole file off the loop, so journaling resumes by
    /// itself once there is room. After an error the caller takes its changes back, then calls
    /// [`Self::start_due_compaction`]: a rewrite of a stale file started before that would
    /// write a table holding changes that are not acknowledged (and may never be).
    pub(super) fn journal(&self, st: &mut State, changes: &[Change]) -> io::Result<()> {
        let Some(j) = &self.journal else {
            return Ok(());
        };
        if st.replaying {
            // The file's size and content are not known yet; nothing may be written before.
            return Err(io::Error::other("the journal is still being replayed"));
        }
        let r = write_journal(self, j, st, changes);
        match &r {
            Ok(()) => {
                if wants_compaction(st) {
                    self.start_compaction(st, false);
                }
                if let Some(was) = st.journal_error.take() {
                    tracing::info!(netns = %self.ns.name, previous_error = %was, "journal writable again; journaling resumed");
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::FileTooLarge | io::ErrorKind::WouldBlock
                ) => {}
            Err(e) => st.journal_error = Some(e.to_string()),
        }
        r
    }

    /// Handles one call and carries out its effects: whether `out` must be sent to the caller,
    /// or the call must be handled again later. `udp` is the endpoint and datagram for UDP
    /// calls (needed to forward).
    pub(super) fn handle_call(
        &self,
        ctx: &CallContext,
        request: &[u8],
        out: &mut Vec<u8>,
        udp: Option<(&Arc<UdpEndpoint>, &Datagram<'_>)>,
    ) -> Answer {
        let mut st = self.state();
        if st.replaying {
            // Not answered from a half-restored table; the client retries (see `replay.rs`).
            out.clear();
            return Answer::Silent;
        }
        // The daemon's memory ceiling: this table may grow by what the others leave.
        let allowed = self.account.allowed();
        st.pm.limit_registration_bytes(allowed);
        let refused_before = st.pm.registrations_refused_for_bytes();
        let outcome = st.pm.handle(ctx, request, out);
        if st.pm.registrations_refused_for_bytes() > refused_before && self.refusal_log.allow() {
            let cause = if allowed < st.cfg.max_registration_bytes {
                "the daemon's memory ceiling (limits.memory_max_bytes) is reached"
            } else {
                "the namespace's max_registration_bytes is reached"
            };
            tracing::warn!(netns = %self.ns.name, bytes = st.pm.registration_bytes(),
                "registration refused (FALSE): {cause}");
        }
        let mut send = outcome.should_reply();
        self.ns.metrics.rpc_call(request, send);
        // Table changes already made, in order, kept to journal them or take them back.
        let mut applied = Vec::new();
        let mut forwards = Vec::new();
        for eff in outcome.effects {
            match eff {
                Effect::Forward(f) => forwards.push(f),
                change => applied.push(change),
            }
        }
        if !applied.is_empty() {
            let changes = journal_changes(&applied);
            for c in &changes {
                let (what, e) = match c {
                    Change::Set(e) => ("registered", e),
                    Change::Unset(e) => ("unregistered", e),
                };
                tracing::debug!(netns = %self.ns.name, prog = e.prog, vers = e.vers, netid = %e.netid,
                    uaddr = %e.uaddr, owner = %e.owner, "{what}");
            }
            let journaled = self.journal(&mut st, &changes);
            if let Err(e) = &journaled
                && e.kind() == io::ErrorKind::FileTooLarge
            {
                // The journal cap: refuse the SET as a full table would (FALSE).
                undo(&mut st.pm, applied);
                self.table_changed(&st.pm);
                if nsaux_rpcbind::refuse_set_reply(out) {
                    st.journal_refused += 1;
                    if self.refusal_log.allow() {
                        tracing::warn!(netns = %self.ns.name, error = %e,
                            "registration refused (FALSE): journal at its size cap");
                    }
                    return if send { Answer::Reply } else { Answer::Silent };
                }
                out.clear();
                return Answer::Silent;
            }
            if let Err(e) = &journaled
                && e.kind() == io::ErrorKind::WouldBlock
            {
                // Taken back for now; the caller handles the call again after the rewrite
                // (read under the lock, so its end cannot be missed).
                undo(&mut st.pm, applied);
                self.table_changed(&st.pm);
                self.start_due_compaction(&mut st);
                out.clear();
                return Answer::Wait {
                    seen: self.signals.turns(),
                    held: std::mem::take(&mut st.cap_held),
                };
            }
            if let Err(e) = journaled {
                // SET and UNSET alike: acknowledging a change the journal does not hold would
                // let a restart contradict the reply (an UNSET answered TRUE would come back).
                // Without a reply the client retries, as after a lost datagram.
                if self.journal_log.allow() {
                    tracing::error!(netns = %self.ns.name, error = %e, changes = changes.len(),
                        "cannot journal a registration change; not acknowledging it");
                }
                undo(&mut st.pm, applied);
                self.table_changed(&st.pm);
                out.clear();
                return Answer::Silent;
            }
        }
        self.table_changed(&st.pm);
        for f in forwards {
            send |= self.forward(&mut st, &f, udp, out);
        }
        if send { Answer::Reply } else { Answer::Silent }
    }
}

impl NsService for RpcbindNs {
    fn listeners(&self) -> Vec<ListenerSpec> {
        let cfg = Arc::clone(&self.state().cfg);
        let mut v = ListenerSpec::ip_pairs(&cfg.addresses, cfg.port, cfg.udp, cfg.tcp);
        if !cfg.local_abstract.is_empty() {
            v.push(ListenerSpec::UnixAbstract {
                name: cfg.local_abstract.clone(),
            });
        }
        v
    }

    fn reconfigure(&self, cfg: &ServicesConfig) -> anyhow::Result<()> {
        let new = super::SETTINGS.get(&cfg.rpcbind);
        let mut st = self.state();
        if st.cfg == new {
            return Ok(());
        }
        let mut dropped = 0;
        if pm_config(&st.cfg) != pm_config(&new) || self_endpoints(&st.cfg) != self_endpoints(&new)
        {
            let keep = user_entries(&st.pm, &st.cfg);
            let wanted = keep.len();
            let mut pm = new_portmapper(&new);
            dropped = wanted.saturating_sub(pm.restore(keep));
            st.pm = pm;
            self.table_changed(&st.pm);
        }
        st.cfg = new;
        if dropped > 0 {
            // A lower `max_registrations`, or a self endpoint now at a registered address, left
            // no room for some registrations. The journal must lose them too, or a restart under
            // a later, roomier configuration would bring them back. If the rewrite fails, the
            // next write retries it.
            tracing::warn!(netns = %self.ns.name, dropped,
                "the new configuration leaves no room for some registrations; removed");
            // Rewritten whole off the loop; a compaction or rewrite of the old table running
            // now gives up (and a rewrite is started again when it ends). Changes wait meanwhile.
            st.journal_stale = true;
            st.journal_gen += 1;
            if self.journal.is_some() && !st.replaying {
                self.start_compaction(&mut st, true);
            }
        }
        drop(st);
        if let Some(me) = self.me.upgrade() {
            me.update_prune();
        }
        Ok(())
    }

    fn on_datagram(&self, ep: &Arc<UdpEndpoint>, d: &Datagram<'_>, out: &mut Replies) {
        if d.truncated {
            return;
        }
        if is_rpc_reply(d.data) {
            self.on_reply(d, out);
            return;
        }
        if self.prune_on.load(Ordering::Relaxed) {
            let mut known = lock(&self.prune_ep);
            if known.as_ref().is_none_or(|w| w.strong_count() == 0) {
                *known = Some(Arc::downgrade(ep));
            }
        }
        let ctx = CallContext {
            transport: Transport::Udp,
            caller: Caller::Ip(d.peer),
            local_addr: Some(d.local),
            now_unix: unix_secs(d.wall),
        };
        match self.handle_call(&ctx, d.data, out.buf(), Some((ep, d))) {
            Answer::Reply => out.commit(ReplyTo::sender(d)),
            Answer::Silent => {}
            Answer::Wait { seen, held } => {
                let held = held.then(|| self.held_change());
                self.answer_later(ep, d, seen, held);
            }
        }
    }

    fn on_connection(self: Arc<Self>, conn: Connection) -> ConnFuture {
        Box::pin(self.serve_conn(conn))
    }

    fn dual_stack(&self) -> bool {
        // The netid comes from the local address, which the receive paths unmap: a call over
        // IPv4 on a `[::]` socket is a udp/tcp call, answered with IPv4 universal addresses.
        true
    }

    fn slots(&self) -> Option<(Arc<SlotTable>, SlotBudget)> {
        Some((Arc::clone(self.slots.table()), self.slot_budget()))
    }

    fn namespace_gone(&self) {
        lock(&self.shared.live).remove(&self.ns.id.0);
        // A compaction still running must not bring the file back by its rename.
        {
            let mut st = self.state();
            st.journal_gen += 1;
            st.gone = true;
        }
        // The table goes with the namespace whatever happens here. A journal that cannot be
        // deleted is harmless: it is keyed by this namespace's cookie, which no later namespace
        // gets, so it is never restored, and the sweep after the next start deletes it.
        if let Some(j) = &self.journal
            && let Err(e) = j.remove()
        {
            tracing::warn!(netns = %self.ns.name, error = %e, "cannot delete the journal");
        }
    }

    fn status(&self) -> Value {
        let local_path = lock(&self.shared.path_status).clone();
        let st = self.state();
        let journal = match (&self.journal, &st.journal_error) {
            (None, _) => json!({ "state": "off" }),
            (Some(_), err) => json!({
                "state": if err.is_some() { "failing" } else { "ok" },
                "error": err,
                "bytes": st.journal_bytes,
                "max_bytes": st.cfg.journal_max_bytes,
                "refused_at_cap": st.journal_refused,
                "compacting": st.compacting,
                "replaying": st.replaying,
                "compactions": st.compactions,
            }),
        };
        json!({
            "registrations": st.pm.entries().len(),
            "registration_bytes": st.pm.registration_bytes(),
            "max_registration_bytes": st.cfg.max_registration_bytes,
            "udp_reflection_refused": st.pm.reflection_refusals(),
            "journal": journal,
            "connections": self.slots.len(),
            "local_path": local_path,
        })
    }

    fn control(&self, action: &str, args: &Value) -> Result<Value, String> {
        self.control_verb(action, args)
    }
}
