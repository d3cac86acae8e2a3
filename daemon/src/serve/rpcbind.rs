//! The portmapper service: one [`nsaux_rpcbind::Portmapper`] per network namespace.
//!
//! # Transports
//! - In every namespace: UDP and TCP port 111 on `0.0.0.0` and `::`, and the abstract AF_LOCAL
//!   socket `"\0/run/rpcbind.sock"` (kernel ≥ 6.5, libtirpc ≥ 1.3.5), all opened by the core.
//! - In the daemon's own mount namespace: the path socket (default `/run/rpcbind.sock`). A
//!   connection on it is served by **the caller's** network namespace: `SO_PEERCRED` pid →
//!   `stat("/proc/PID/ns/net")` → `(st_dev, st_ino)` → the tracked namespace with the same nsfs
//!   identity ([`NsInfo::nsfs`]). Callers from untracked namespaces are refused and logged. This
//!   is what stock rpcbind gets wrong: every namespace sharing `/run` lands in one table.
//!
//! # Durability
//! Every SET/UNSET is appended to the namespace's journal ([`crate::state`]) *before* the reply
//! is sent; if the write fails the change is taken back (an UNSET's entries return to their old
//! places) and no reply is sent, so the client retries, as after a lost datagram. The table in
//! memory therefore always equals what was acknowledged and what a replay rebuilds. The daemon's
//! own removals keep that rule too: an operator `rpc unset` whose write fails is refused with
//! the error, and a liveness removal whose write fails is taken back and retried next round.
//! After a failed write the next write rewrites the whole file (see `State::journal_stale`).
//! Journals are restored only into the namespace (boot id + cookie) that wrote them, and deleted
//! when the namespace goes; those of namespaces that went while the daemon was down are swept
//! `journal_sweep_delay_secs` after start.
//!
//! # Limits
//! Strings/opaques are capped at 9000 bytes and records at 64 KiB (in the core); registrations
//! per namespace (`max_registrations`); TCP + AF_LOCAL connections per namespace
//! (`max_connections`) with an idle timeout (`idle_timeout_secs`, CVE-2021-46828); UDP DUMP only
//! for loopback callers.
//!
//! # Remote calls and liveness
//! CALLIT/BCAST/INDIRECT are refused unless `remote_calls = true`; then they are forwarded from
//! the namespace's own port-111 UDP socket (so only inside that namespace), matched back with the
//! core's [`ForwardTable`]. With `prune = true` each namespace probes its UDP and TCP
//! registrations with an RPC NULL call every `prune_interval_secs` (doubling up to 8× while a
//! service is silent) and removes one after `prune_after_misses` silent rounds; with
//! `prune = false` no task exists. UDP probes leave from the namespace's port-111 socket; TCP
//! probes connect from sockets created inside the namespace, a few at a time, each bounded by
//! the round. A TCP-only service would otherwise never be pruned.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nsaux_rpcbind::uaddr::{format_uaddr, parse_uaddr};
use nsaux_rpcbind::{
    CallContext, Caller, Config as PmConfig, DEFAULT_FORWARD_MAX_AGE, DEFAULT_FORWARD_SLOTS,
    DEFAULT_MAX_RECORD, Effect, Entry, Forward, ForwardTable, PMAP_PROG, Portmapper, RecordDecoder,
    SUPERUSER, Transport, frame_record,
};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::task::JoinHandle;

use super::{
    ConnFuture, Connection, Datagram, ListenerSpec, NsInfo, NsService, Peer, Replies, ReplyTo,
    ServiceKind, Stream, UdpEndpoint,
};
use crate::config::{RpcbindConfig, ServicesConfig};
use crate::lock::lock;
use crate::state::{Change, Journal, JournalDir};

/// Read buffer per connection (records larger than this arrive in several reads).
const READ_BUF: usize = 4096;

/// Most TCP liveness probes of one namespace in flight at once: each holds a socket (an fd)
/// until it is answered, refused or timed out, and a namespace may hold
/// `max_registrations` (1024) registrations.
const TCP_PROBES_IN_FLIGHT: usize = 16;

/// The portmapper service kind: journals, the path socket and the routing table for it.
#[derive(Debug)]
pub struct Rpcbind {
    /// Per-boot journal directory; `None` if the state directory is unusable (then
    /// registrations do not survive a restart, and that was logged).
    journals: Option<Arc<JournalDir>>,
    /// The path socket, if enabled.
    local_path: Option<PathBuf>,
    /// How long after start the journals of namespaces that did not come back (they went while
    /// the daemon was down) are deleted: long enough for the namespaces present at start to be
    /// found (`journal_sweep_delay_secs`).
    sweep_delay: Duration,
    shared: Arc<Shared>,
    /// Started on the first instance (needs the runtime).
    started: AtomicBool,
    path_task: Mutex<Option<PathTask>>,
}

/// State shared between the kind, its instances and the path-socket task.
#[derive(Debug, Default)]
struct Shared {
    /// nsfs identity → instance, for routing path-socket callers.
    routes: Mutex<HashMap<(u64, u64), Weak<RpcbindNs>>>,
    /// Cookies of namespaces with an instance (journal sweep).
    live: Mutex<HashSet<u64>>,
    /// One line on the path socket's state, for `status`.
    path_status: Mutex<String>,
    /// The path socket's inode once bound (only that file is unlinked at exit).
    path_ino: Mutex<Option<(u64, u64)>>,
    /// Last time a refusal on the path socket was logged (rate limit).
    last_refusal_log: Mutex<Option<Instant>>,
}

#[derive(Debug)]
struct PathTask {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for Rpcbind {
    fn drop(&mut self) {
        if let Some(t) = lock(&self.path_task).take() {
            t.task.abort();
            let ours = *lock(&self.shared.path_ino);
            let now = std::fs::symlink_metadata(&t.path)
                .ok()
                .map(|m| (m.dev(), m.ino()));
            if ours.is_some() && ours == now {
                let _ = std::fs::remove_file(&t.path);
            }
        }
    }
}

impl Rpcbind {
    /// A portmapper kind keeping journals under `state_dir`, deleting those of vanished
    /// namespaces `sweep_delay` after start (at least a second), and serving the path socket
    /// `local_path` (`None`: no path socket).
    pub fn new(state_dir: &Path, local_path: Option<PathBuf>, sweep_delay: Duration) -> Self {
        let journals = match JournalDir::open(state_dir, "rpcbind") {
            Ok(j) => Some(Arc::new(j)),
            Err(e) => {
                tracing::error!(state_dir = %state_dir.display(), error = %e,
                    "cannot use the state directory; portmapper registrations will not survive a restart");
                None
            }
        };
        let shared = Arc::new(Shared::default());
        *lock(&shared.path_status) = match &local_path {
            Some(p) => format!("{}: not started", p.display()),
            None => "disabled".into(),
        };
        Self {
            journals,
            local_path,
            sweep_delay: sweep_delay.max(Duration::from_secs(1)),
            shared,
            started: AtomicBool::new(false),
            path_task: Mutex::new(None),
        }
    }

    /// Starts the path socket and the journal sweep, once, from inside the runtime.
    fn start_once(&self) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(path) = &self.local_path {
            let task = tokio::spawn(path_socket_task(path.clone(), Arc::clone(&self.shared)));
            *lock(&self.path_task) = Some(PathTask {
                path: path.clone(),
                task,
            });
        }
        if let Some(j) = &self.journals {
            let j = Arc::clone(j);
            let shared = Arc::clone(&self.shared);
            let delay = self.sweep_delay;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let live = lock(&shared.live).clone();
                j.sweep(&live);
            });
        }
    }
}

impl ServiceKind for Rpcbind {
    fn name(&self) -> &'static str {
        "rpcbind"
    }

    fn start(&self) {
        self.start_once();
    }

    fn enabled(&self, cfg: &ServicesConfig) -> bool {
        cfg.rpcbind.enabled
    }

    fn instantiate(
        &self,
        ns: Arc<NsInfo>,
        cfg: &ServicesConfig,
    ) -> anyhow::Result<Arc<dyn NsService>> {
        self.start_once();
        let cfg = cfg.rpcbind.clone();
        let journal = self.journals.as_ref().map(|j| j.journal(ns.id));
        let mut pm = new_portmapper(&cfg);
        let mut lines = 0;
        let mut stale = false;
        if let Some(j) = &journal {
            match j.replay() {
                Ok(r) => {
                    if r.bad_lines > 0 {
                        tracing::warn!(netns = %ns.name, path = %j.path().display(), bad_lines = r.bad_lines,
                            kept = r.entries.len(), "journal damaged: skipped the bad lines, kept the rest");
                    }
                    let wanted = r.entries.len();
                    let n = pm.restore(r.entries);
                    lines = r.lines;
                    if n > 0 {
                        tracing::info!(netns = %ns.name, restored = n, "registrations restored from the journal");
                    }
                    if r.bad_lines > 0 || n != wanted {
                        let keep = user_entries(&pm, &cfg);
                        // If this fails the file still holds what was skipped; a replay skips
                        // it the same way, and the next change rewrites the file.
                        if let Err(e) = j.rewrite(&keep) {
                            tracing::error!(netns = %ns.name, error = %e, "cannot rewrite the journal");
                            stale = true;
                        }
                        lines = keep.len();
                    }
                }
                Err(e) => {
                    tracing::error!(netns = %ns.name, path = %j.path().display(), error = %e,
                        "cannot read the journal; starting with an empty table");
                    // Appending to it would let a later restart bring back registrations this
                    // table does not have: the first write replaces it instead.
                    stale = true;
                }
            }
        }
        let inst = Arc::new_cyclic(|me| RpcbindNs {
            me: me.clone(),
            ns: Arc::clone(&ns),
            state: Mutex::new(State {
                cfg,
                pm,
                journal_lines: lines,
                journal_stale: stale,
                forwards: None,
            }),
            journal,
            conns: AtomicUsize::new(0),
            shared: Arc::clone(&self.shared),
            prune: Mutex::new(None),
            prune_on: AtomicBool::new(false),
            prune_ep: Mutex::new(None),
        });
        if let Some(key) = ns.nsfs {
            lock(&self.shared.routes).insert(key, Arc::downgrade(&inst));
        }
        lock(&self.shared.live).insert(ns.id.0);
        inst.update_prune();
        Ok(inst)
    }
}

/// Protocol settings from the daemon's section.
fn pm_config(cfg: &RpcbindConfig) -> PmConfig {
    PmConfig {
        remote_calls: cfg.remote_calls,
        max_registrations: cfg.max_registrations,
        udp_dump_loopback_only: cfg.udp_dump_loopback_only,
        loopback_may_register: cfg.loopback_may_register,
        ..PmConfig::default()
    }
}

/// The (netid, uaddr) pairs we listen on, in rpcbind's netconfig order (udp, tcp, udp6, tcp6,
/// local): the self registrations.
fn self_endpoints(cfg: &RpcbindConfig) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for six in [false, true] {
        for (on, proto) in [(cfg.udp, "udp"), (cfg.tcp, "tcp")] {
            if !on {
                continue;
            }
            for ip in cfg.addresses.iter().filter(|a| a.is_ipv6() == six) {
                let netid = if six {
                    format!("{proto}6")
                } else {
                    proto.into()
                };
                v.push((netid, format_uaddr(SocketAddr::new(*ip, cfg.port))));
            }
        }
    }
    if !cfg.local_abstract.is_empty() {
        v.push(("local".into(), cfg.local_abstract.clone()));
    } else if !cfg.local_path.is_empty() {
        v.push(("local".into(), cfg.local_path.clone()));
    }
    v
}

fn new_portmapper(cfg: &RpcbindConfig) -> Portmapper {
    Portmapper::new(pm_config(cfg), &self_endpoints(cfg))
}

/// The registrations clients made (what the journal holds).
/// Self registrations are recognised from the configuration rather than kept in a copy: a copy
/// would cost about 2 KiB per namespace and is only needed on rare journal rewrites.
fn user_entries(pm: &Portmapper, cfg: &RpcbindConfig) -> Vec<Entry> {
    let endpoints = self_endpoints(cfg);
    let is_self = |e: &Entry| {
        e.prog == PMAP_PROG
            && e.owner == SUPERUSER
            && (2..=4).contains(&e.vers)
            && endpoints
                .iter()
                .any(|(n, u)| *n == e.netid && *u == e.uaddr)
    };
    pm.entries()
        .iter()
        .filter(|e| !is_self(e))
        .cloned()
        .collect()
}

/// The journal lines for table changes (`Registered`/`Unregistered` effects), in order.
fn journal_changes(applied: &[Effect]) -> Vec<Change> {
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

/// Takes back table changes that could not be journaled, latest first, so the table is again
/// exactly what it was (removed entries return to their old places; lookups depend on order).
fn undo(pm: &mut Portmapper, applied: Vec<Effect>) {
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

fn now_unix() -> u64 {
    unix_secs(SystemTime::now())
}

/// Seconds since the epoch of a wall-clock reading (0 before it).
fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The portmapper of one namespace.
#[derive(Debug)]
pub(crate) struct RpcbindNs {
    /// Itself, for tasks started from `&self` methods (the liveness task on reconfigure).
    me: Weak<Self>,
    ns: Arc<NsInfo>,
    state: Mutex<State>,
    journal: Option<Journal>,
    /// TCP + AF_LOCAL connections open now (all listeners and the path socket).
    conns: AtomicUsize,
    shared: Arc<Shared>,
    /// The liveness task, only while `prune` is on.
    prune: Mutex<Option<JoinHandle<()>>>,
    /// `cfg.prune`, readable without the state lock on the datagram path.
    prune_on: AtomicBool,
    /// A port-111 UDP endpoint of this namespace to send liveness probes from, remembered from
    /// traffic while pruning is on (weak: it never keeps a socket alive).
    prune_ep: Mutex<Option<Weak<UdpEndpoint>>>,
}

#[derive(Debug)]
struct State {
    cfg: RpcbindConfig,
    pm: Portmapper,
    /// Lines in the journal file (for compaction).
    journal_lines: usize,
    /// The journal file may not match the table: an append failed (it may have left a tail it
    /// could not cut back, or the file was replaced or removed under us), or a start-up or
    /// reconfiguration rewrite failed. The next write then rewrites the whole file (temp file +
    /// rename) from the table instead of appending to a file of unknown content.
    journal_stale: bool,
    /// Remote-call bookkeeping, created on the first forward.
    forwards: Option<Box<Forwards>>,
}

#[derive(Debug)]
struct Forwards {
    table: ForwardTable,
    /// forward xid → (local address the call arrived on, interface), to answer from it.
    origin: Vec<(u32, IpAddr, u32)>,
    /// Liveness probes outstanding: xid → registration probed.
    probes: HashMap<u32, Entry>,
    /// Missed liveness probes in a row, per registration.
    misses: HashMap<Entry, u32>,
}

impl Forwards {
    fn new() -> Box<Self> {
        Box::new(Self {
            table: ForwardTable::new(
                DEFAULT_FORWARD_SLOTS,
                DEFAULT_FORWARD_MAX_AGE,
                crate::seed::random_u32(),
            ),
            origin: Vec::new(),
            probes: HashMap::new(),
            misses: HashMap::new(),
        })
    }
}

impl Drop for RpcbindNs {
    fn drop(&mut self) {
        lock(&self.shared.routes).retain(|_, w| w.strong_count() > 0);
        if let Some(t) = lock(&self.prune).take() {
            t.abort();
        }
    }
}

/// Counts a connection for the per-namespace cap while it lives.
struct ConnSlot(Arc<RpcbindNs>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.conns.fetch_sub(1, Ordering::SeqCst);
    }
}

fn is_rpc_reply(d: &[u8]) -> bool {
    d.get(4..8) == Some(&[0, 0, 0, 1][..])
}

impl RpcbindNs {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Takes a connection slot, or `None` when the namespace is at its cap.
    fn conn_slot(self: &Arc<Self>) -> Option<ConnSlot> {
        let max = self.state().cfg.max_connections;
        let prev = self.conns.fetch_add(1, Ordering::SeqCst);
        let slot = ConnSlot(Arc::clone(self));
        (prev < max).then_some(slot)
    }

    /// Journals `changes` (already applied to the table), compacting the file when it has grown
    /// well past the table. On error the caller must take the changes back: the file then holds
    /// the table as it was before them.
    fn journal(&self, st: &mut State, changes: &[Change]) -> io::Result<()> {
        let Some(j) = &self.journal else {
            return Ok(());
        };
        let live = st.pm.entries().len();
        let compact = st.journal_lines + changes.len() > 256 && st.journal_lines > 4 * live;
        if compact || st.journal_stale {
            // A failed rewrite leaves the old file in place (rename is atomic), so staleness
            // is unchanged by it.
            let keep = user_entries(&st.pm, &st.cfg);
            j.rewrite(&keep)?;
            st.journal_lines = keep.len();
            st.journal_stale = false;
            return Ok(());
        }
        // `append` cuts the file back on failure; should that fail too, rewrite next time.
        j.append(changes).inspect_err(|_| st.journal_stale = true)?;
        st.journal_lines += changes.len();
        Ok(())
    }

    /// Handles one call and carries out its effects. Returns whether `out` must be sent to the
    /// caller. `udp` is the endpoint and datagram for UDP calls (needed to forward).
    fn handle_call(
        &self,
        ctx: &CallContext,
        request: &[u8],
        out: &mut Vec<u8>,
        udp: Option<(&Arc<UdpEndpoint>, &Datagram<'_>)>,
    ) -> bool {
        let mut st = self.state();
        let outcome = st.pm.handle(ctx, request, out);
        let mut send = outcome.should_reply();
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
            if let Err(e) = self.journal(&mut st, &changes) {
                // SET and UNSET alike: acknowledging a change the journal does not hold would
                // let a restart contradict the reply (an UNSET answered TRUE would come back).
                // Without a reply the client retries, as after a lost datagram.
                tracing::error!(netns = %self.ns.name, error = %e, changes = changes.len(),
                    "cannot journal a registration change; not acknowledging it");
                undo(&mut st.pm, applied);
                out.clear();
                return false;
            }
        }
        for f in forwards {
            send |= self.forward(&mut st, &f, udp, out);
        }
        send
    }

    /// Forwards a remote call from the namespace's own UDP socket. Returns true when `out` now
    /// holds an immediate failure reply for the caller.
    fn forward(
        &self,
        st: &mut State,
        f: &Forward,
        udp: Option<(&Arc<UdpEndpoint>, &Datagram<'_>)>,
        out: &mut Vec<u8>,
    ) -> bool {
        let Some((ep, d)) = udp else {
            return f.pending.build_failure(out);
        };
        // Only to a service of this namespace's own host: loopback or the address the call
        // arrived on (rpcbind also sends to its local address). Never out to another host.
        if !(f.target.ip().is_loopback() || f.target.ip() == d.local.ip()) {
            tracing::debug!(netns = %self.ns.name, target = %f.target, "remote call to a non-local registration refused");
            return f.pending.build_failure(out);
        }
        let fw = st.forwards.get_or_insert_with(Forwards::new);
        let Some(xid) = fw.table.start(f, d.peer, now_unix()) else {
            return false; // a retransmission of a call already forwarded
        };
        fw.origin.retain(|(x, _, _)| *x != xid);
        if fw.origin.len() >= 2 * DEFAULT_FORWARD_SLOTS {
            fw.origin.remove(0);
        }
        fw.origin.push((xid, d.local.ip(), d.ifindex));
        let mut call = Vec::with_capacity(64 + f.args.len());
        f.encode_call(xid, &mut call);
        let src = if f.target.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        };
        if let Err(e) = ep.send_from(&call, f.target, src, 0) {
            tracing::debug!(netns = %self.ns.name, target = %f.target, error = %e, "forward failed");
            let _ = fw.table.finish(&xid.to_be_bytes());
            return f.pending.build_failure(out);
        }
        false
    }

    /// A reply arrived on port 111: the answer to a forwarded call or a liveness probe.
    fn on_reply(&self, ep: &Arc<UdpEndpoint>, d: &Datagram<'_>, out: &mut Replies) {
        let mut st = self.state();
        let Some(fw) = st.forwards.as_mut() else {
            return;
        };
        let Some(xid) = d
            .data
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
        else {
            return;
        };
        if let Some(e) = fw.probes.remove(&xid) {
            fw.misses.remove(&e);
            return;
        }
        let Some((caller, pending)) = fw.table.finish(d.data) else {
            return;
        };
        let (local, ifindex) = fw
            .origin
            .iter()
            .position(|(x, _, _)| *x == xid)
            .map(|i| {
                let (_, l, ifx) = fw.origin.remove(i);
                (l, ifx)
            })
            .unwrap_or((ep.bound.ip(), 0));
        drop(st);
        if pending.build_reply(d.data, out.buf()) {
            out.commit(ReplyTo {
                dst: caller,
                src: local,
                ifindex,
            });
        }
    }

    fn list(&self) -> Value {
        let st = self.state();
        Value::Array(
            st.pm
                .entries()
                .iter()
                .map(|e| {
                    json!({
                        "prog": e.prog,
                        "vers": e.vers,
                        "netid": e.netid,
                        "address": e.uaddr,
                        "owner": e.owner,
                    })
                })
                .collect(),
        )
    }

    fn stats(&self) -> Value {
        let st = self.state();
        let s = st.pm.stats();
        let by_vers: Vec<Value> = s
            .by_vers
            .iter()
            .enumerate()
            .map(|(i, v)| {
                json!({
                    "version": i + 2,
                    "calls_by_proc": v.info.to_vec(),
                    "set": v.setinfo,
                    "unset": v.unsetinfo,
                    "lookups": v.addrinfo.iter().map(|a| json!({
                        "prog": a.prog, "vers": a.vers, "netid": a.netid,
                        "success": a.success, "failure": a.failure,
                    })).collect::<Vec<_>>(),
                    "remote_calls": v.rmtinfo.iter().map(|r| json!({
                        "prog": r.prog, "vers": r.vers, "proc": r.proc_, "netid": r.netid,
                        "success": r.success, "failure": r.failure, "indirect": r.indirect,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "registrations": st.pm.entries().len(), "by_version": by_vers })
    }

    fn admin_unset(&self, args: &Value) -> Result<Value, String> {
        let num = |k: &str| {
            args.get(k)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| format!("missing or bad {k}"))
        };
        let (prog, vers) = (num("prog")?, num("vers")?);
        let netid = args.get("netid").and_then(Value::as_str).unwrap_or("");
        let mut st = self.state();
        let removed = st.pm.unset_admin(prog, vers, netid);
        let n = removed.len();
        if n > 0 {
            let changes: Vec<Change> = removed
                .entries()
                .iter()
                .cloned()
                .map(Change::Unset)
                .collect();
            // Like a client's UNSET: not journaled, not done, so a restart cannot bring back
            // what the operator was told is gone. The operator sees the error and may retry.
            if let Err(e) = self.journal(&mut st, &changes) {
                st.pm.undo_unset(removed);
                tracing::error!(netns = %self.ns.name, prog, vers, netid, error = %e,
                    "cannot journal an operator unset; nothing removed");
                return Err(format!("cannot write the journal ({e}); nothing removed"));
            }
            tracing::info!(netns = %self.ns.name, prog, vers, netid, removed = n, "operator unset");
        }
        Ok(json!({ "removed": n }))
    }

    /// Serves one TCP or AF_LOCAL connection: record marking, idle timeout.
    async fn serve_stream<S>(
        self: Arc<Self>,
        mut s: S,
        transport: Transport,
        caller: Caller,
        local: Option<SocketAddr>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let idle = Duration::from_secs(self.state().cfg.idle_timeout_secs.max(1));
        let mut dec = RecordDecoder::new(DEFAULT_MAX_RECORD);
        let mut buf = vec![0u8; READ_BUF];
        let mut out = Vec::new();
        let mut wire = Vec::new();
        loop {
            let n = match tokio::time::timeout(idle, s.read(&mut buf)).await {
                Err(_) => {
                    tracing::debug!(netns = %self.ns.name, ?caller, "idle connection closed");
                    return;
                }
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(n)) => n,
            };
            let records = match dec.feed(&buf[..n]) {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(netns = %self.ns.name, ?caller, error = %e, "bad record marking; closing");
                    return;
                }
            };
            for rec in records {
                let ctx = CallContext {
                    transport,
                    caller,
                    local_addr: local,
                    now_unix: now_unix(),
                };
                if !self.handle_call(&ctx, &rec, &mut out, None) {
                    continue;
                }
                wire.clear();
                frame_record(&out, &mut wire);
                match tokio::time::timeout(idle, s.write_all(&wire)).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
            }
        }
    }

    /// Serves a connection after taking a slot; refused (closed) at the cap.
    async fn serve_conn(self: Arc<Self>, stream: Stream, peer: Peer, local: Option<SocketAddr>) {
        let Some(slot) = self.conn_slot() else {
            tracing::debug!(netns = %self.ns.name, ?peer, "connection limit of the namespace reached; closing");
            return;
        };
        let caller = match peer {
            Peer::Ip(a) => Caller::Ip(a),
            Peer::Local { uid, pid, .. } => Caller::Local {
                uid,
                pid: pid.and_then(|p| u32::try_from(p).ok()),
            },
        };
        let this = Arc::clone(&slot.0);
        match stream {
            Stream::Tcp(s) => this.serve_stream(s, Transport::Tcp, caller, local).await,
            Stream::Unix(s) => this.serve_stream(s, Transport::Local, caller, None).await,
        }
        drop(slot);
    }

    /// Starts or stops the liveness task to match the configuration.
    fn update_prune(self: &Arc<Self>) {
        let on = self.state().cfg.prune;
        self.prune_on.store(on, Ordering::Relaxed);
        let mut task = lock(&self.prune);
        match (on, task.is_some()) {
            (true, false) => {
                let weak = Arc::downgrade(self);
                let cancel = self.ns.cancel.clone();
                *task = Some(tokio::spawn(async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = prune_loop(weak) => {}
                    }
                }));
            }
            (false, true) => {
                if let Some(t) = task.take() {
                    t.abort();
                }
            }
            _ => {}
        }
    }
}

/// Runs liveness rounds until the instance is gone. The TCP probes one round starts run while
/// the loop waits for the next round, and end before it.
async fn prune_loop(weak: Weak<RpcbindNs>) {
    let mut round: u32 = 0;
    let mut tcp = Vec::new();
    loop {
        let Some(this) = weak.upgrade() else { return };
        let (interval, max_misses) = {
            let st = this.state();
            (
                Duration::from_secs(st.cfg.prune_interval_secs.max(1)),
                st.cfg.prune_after_misses.max(1),
            )
        };
        let ns = Arc::clone(&this.ns);
        drop(this);
        // Three quarters of the interval: every TCP probe has ended when the next round counts
        // the outstanding ones, so none is judged while its answer may still be on the way.
        let budget = interval * 3 / 4;
        tokio::join!(
            tokio::time::sleep(interval),
            run_tcp_probes(&weak, &ns, std::mem::take(&mut tcp), budget),
        );
        round = round.wrapping_add(1);
        let Some(this) = weak.upgrade() else { return };
        tcp = this.prune_round(round, max_misses);
    }
}

/// The address a liveness probe of `e` goes to: the registered one, with a wildcard replaced by
/// loopback (a service registered as `0.0.0.0.p.p` listens on every address of the namespace).
fn probe_target(e: &Entry) -> Option<SocketAddr> {
    let mut target = parse_uaddr(&e.uaddr)?;
    if target.ip().is_unspecified() {
        target.set_ip(if target.is_ipv4() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        });
    }
    Some(target)
}

/// A liveness probe of a TCP registration, started by [`RpcbindNs::prune_round`] and carried out
/// by [`run_tcp_probes`].
#[derive(Debug)]
struct TcpProbe {
    /// The call's xid, outstanding in [`Forwards::probes`] until the answer comes.
    xid: u32,
    target: SocketAddr,
    /// The RPC NULL call (the same bytes a UDP probe sends), without record marking.
    call: Vec<u8>,
}

/// Runs one round's TCP probes, at most [`TCP_PROBES_IN_FLIGHT`] at a time, each from a socket
/// created inside the namespace (its routes and addresses, like the UDP probes sent from its
/// port-111 socket), all ending by `budget`.
///
/// A probe answered with an RPC reply carrying its xid marks the service alive. One refused,
/// reset or timed out stays outstanding, so the next round counts it as a miss, exactly as an
/// unanswered UDP probe. Probes that could not be made (no socket, deadline passed before their
/// turn) are withdrawn without a miss: failing to ask is no evidence against the service, as
/// with a UDP probe whose send failed.
async fn run_tcp_probes(
    weak: &Weak<RpcbindNs>,
    ns: &Arc<NsInfo>,
    probes: Vec<TcpProbe>,
    budget: Duration,
) {
    let deadline = tokio::time::Instant::now() + budget;
    let mut rest = probes.into_iter();
    loop {
        let batch: Vec<TcpProbe> = rest.by_ref().take(TCP_PROBES_IN_FLIGHT).collect();
        if batch.is_empty() {
            return;
        }
        let withdraw = |batch: &[TcpProbe]| {
            if let Some(this) = weak.upgrade() {
                this.withdraw_probes(batch.iter().map(|p| p.xid));
            }
        };
        if tokio::time::Instant::now() >= deadline {
            withdraw(&batch);
            withdraw(&rest.collect::<Vec<_>>());
            return;
        }
        // One trip to the namespace thread for the whole batch.
        let v6: Vec<bool> = batch.iter().map(|p| p.target.is_ipv6()).collect();
        let socks = ns
            .run_in(move || Ok(v6.into_iter().map(new_tcp_socket).collect::<Vec<_>>()))
            .await;
        let socks = match socks {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(netns = %ns.name, error = %e, "cannot create liveness probe sockets");
                withdraw(&batch);
                continue;
            }
        };
        let mut running = tokio::task::JoinSet::new();
        for (p, sock) in batch.into_iter().zip(socks) {
            match sock {
                Ok(sock) => {
                    running.spawn(async move {
                        let answered =
                            tokio::time::timeout_at(deadline, tcp_probe(sock, p.target, &p.call))
                                .await;
                        (p.xid, p.target, answered)
                    });
                }
                Err(e) => {
                    tracing::debug!(netns = %ns.name, target = %p.target, error = %e, "cannot create a liveness probe socket");
                    withdraw(std::slice::from_ref(&p));
                }
            }
        }
        while let Some(done) = running.join_next().await {
            let Ok((xid, target, answered)) = done else {
                continue;
            };
            match answered {
                Ok(Ok(true)) => {
                    if let Some(this) = weak.upgrade() {
                        this.probe_answered(xid);
                    }
                }
                Ok(Ok(false)) => {
                    tracing::debug!(netns = %ns.name, %target, "liveness probe got a stray answer");
                }
                Ok(Err(e)) => {
                    tracing::debug!(netns = %ns.name, %target, error = %e, "liveness probe failed");
                }
                Err(_) => {
                    tracing::debug!(netns = %ns.name, %target, "liveness probe timed out");
                }
            }
        }
    }
}

/// A non-blocking TCP socket of the given family, not yet connected. Call inside the target
/// namespace.
fn new_tcp_socket(v6: bool) -> io::Result<std::net::TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// One TCP liveness probe: connect, send `call` as one record, read the head of the answer.
/// True when it is an RPC reply with the call's xid (any reply: a service that answers, even
/// with an error, is alive).
async fn tcp_probe(sock: std::net::TcpStream, target: SocketAddr, call: &[u8]) -> io::Result<bool> {
    let mut s = tokio::net::TcpSocket::from_std_stream(sock)
        .connect(target)
        .await?;
    let mut wire = Vec::with_capacity(call.len() + 4);
    frame_record(call, &mut wire);
    s.write_all(&wire).await?;
    // Record mark, xid, message type.
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await?;
    Ok(head.get(4..8) == call.get(..4) && is_rpc_reply(&head[4..]))
}

impl RpcbindNs {
    /// One liveness round: count a miss for every probe still unanswered, remove registrations
    /// past the limit, and probe again (with backoff: a registration with k misses is probed
    /// every 2^k rounds, at most every 8th). UDP registrations are probed from the namespace's
    /// port-111 socket here; the TCP probes are returned for [`run_tcp_probes`].
    fn prune_round(&self, round: u32, max_misses: u32) -> Vec<TcpProbe> {
        let ep = lock(&self.prune_ep).as_ref().and_then(Weak::upgrade);
        let mut st = self.state();
        let targets: Vec<Entry> = user_entries(&st.pm, &st.cfg)
            .into_iter()
            .filter(|e| match e.netid.as_str() {
                "udp" => ep.as_ref().is_some_and(|ep| ep.bound.is_ipv4()),
                "udp6" => ep.as_ref().is_some_and(|ep| ep.bound.is_ipv6()),
                "tcp" | "tcp6" => true,
                _ => false,
            })
            .collect();
        let fw = st.forwards.get_or_insert_with(Forwards::new);
        for (_, e) in fw.probes.drain() {
            *fw.misses.entry(e).or_insert(0) += 1;
        }
        fw.misses.retain(|e, _| targets.contains(e));
        let mut dead = Vec::new();
        let mut tcp = Vec::new();
        let mut seed = crate::seed::random_u32();
        for e in targets {
            let m = fw.misses.get(&e).copied().unwrap_or(0);
            if m >= max_misses {
                dead.push(e);
                continue;
            }
            let every = 1u32 << m.min(3);
            if !round.is_multiple_of(every) {
                continue;
            }
            let Some(target) = probe_target(&e) else {
                continue;
            };
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let xid = seed | 1;
            let mut call = Vec::with_capacity(40);
            for w in [xid, 0, 2, e.prog, e.vers, 0, 0, 0, 0, 0] {
                call.extend_from_slice(&w.to_be_bytes());
            }
            if e.netid.starts_with("tcp") {
                fw.probes.insert(xid, e);
                tcp.push(TcpProbe { xid, target, call });
                continue;
            }
            let Some(ep) = &ep else { continue };
            let src = if target.is_ipv4() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            };
            if ep.send_from(&call, target, src, 0).is_ok() {
                fw.probes.insert(xid, e);
            }
        }
        if dead.is_empty() {
            return tcp;
        }
        let removals: Vec<Effect> = dead
            .iter()
            .map(|e| Effect::Unregistered(st.pm.unset_admin(e.prog, e.vers, &e.netid)))
            .collect();
        let changes = journal_changes(&removals);
        if let Err(err) = self.journal(&mut st, &changes) {
            // Kept rather than removed in memory only, which a restart would undo. Their misses
            // stay past the limit, so the next round tries again (and they are not probed).
            undo(&mut st.pm, removals);
            tracing::error!(netns = %self.ns.name, error = %err, kept = dead.len(),
                "cannot journal the removal of silent registrations; kept, retrying next round");
            return tcp;
        }
        if let Some(fw) = st.forwards.as_mut() {
            for e in &dead {
                fw.misses.remove(e);
            }
        }
        for e in &dead {
            tracing::info!(netns = %self.ns.name, prog = e.prog, vers = e.vers, netid = %e.netid, uaddr = %e.uaddr,
                "registered service stopped answering; registration removed");
        }
        tcp
    }

    /// A liveness probe was answered: the service is alive, its misses are forgotten.
    fn probe_answered(&self, xid: u32) {
        let mut st = self.state();
        if let Some(fw) = st.forwards.as_mut()
            && let Some(e) = fw.probes.remove(&xid)
        {
            fw.misses.remove(&e);
        }
    }

    /// Forgets probes that were never made, so the next round does not count them as misses.
    fn withdraw_probes(&self, xids: impl IntoIterator<Item = u32>) {
        let mut st = self.state();
        if let Some(fw) = st.forwards.as_mut() {
            for xid in xids {
                fw.probes.remove(&xid);
            }
        }
    }
}

impl NsService for RpcbindNs {
    fn listeners(&self) -> Vec<ListenerSpec> {
        let cfg = self.state().cfg.clone();
        let mut v = ListenerSpec::ip_pairs(&cfg.addresses, cfg.port, cfg.udp, cfg.tcp);
        if !cfg.local_abstract.is_empty() {
            v.push(ListenerSpec::UnixAbstract {
                name: cfg.local_abstract,
            });
        }
        v
    }

    fn reconfigure(&self, cfg: &ServicesConfig) -> anyhow::Result<()> {
        let new = cfg.rpcbind.clone();
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
        }
        st.cfg = new;
        if dropped > 0 {
            // A lower `max_registrations`, or a self endpoint now at a registered address, left
            // no room for some registrations. The journal must lose them too, or a restart under
            // a later, roomier configuration would bring them back. If the rewrite fails, the
            // next write retries it.
            tracing::warn!(netns = %self.ns.name, dropped,
                "the new configuration leaves no room for some registrations; removed");
            st.journal_stale = true;
            if let Err(e) = self.journal(&mut st, &[]) {
                tracing::error!(netns = %self.ns.name, error = %e, "cannot rewrite the journal");
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
            self.on_reply(ep, d, out);
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
        if self.handle_call(&ctx, d.data, out.buf(), Some((ep, d))) {
            out.commit(ReplyTo::sender(d));
        }
    }

    fn on_connection(self: Arc<Self>, conn: Connection) -> ConnFuture {
        Box::pin(self.serve_conn(conn.stream, conn.peer, conn.local))
    }

    fn max_connections(&self) -> usize {
        self.state().cfg.max_connections.max(1)
    }

    fn namespace_gone(&self) {
        lock(&self.shared.live).remove(&self.ns.id.0);
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
        json!({
            "registrations": self.state().pm.entries().len(),
            "connections": self.conns.load(Ordering::SeqCst),
            "local_path": lock(&self.shared.path_status).clone(),
        })
    }

    fn control(&self, action: &str, args: &Value) -> Result<Value, String> {
        match action {
            "list" => Ok(self.list()),
            "unset" => self.admin_unset(args),
            "stats" => Ok(self.stats()),
            other => Err(format!("unknown action {other:?} (list, unset, stats)")),
        }
    }
}

/// nsfs identity of the network namespace process `pid` is in.
fn netns_of_pid(pid: i32) -> io::Result<(u64, u64)> {
    let m = std::fs::metadata(format!("/proc/{pid}/ns/net"))?;
    Ok((m.dev(), m.ino()))
}

/// Binds the path socket unless another portmapper answers on it.
fn bind_path(path: &Path) -> Result<tokio::net::UnixListener, String> {
    let shown = path.display();
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{shown} exists and is not a socket; not touching it"
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{shown} is held by another portmapper (it accepts connections); not taking it over"
            ));
        }
        std::fs::remove_file(path).map_err(|e| format!("{shown}: removing stale socket: {e}"))?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let l = std::os::unix::net::UnixListener::bind(path).map_err(|e| format!("{shown}: {e}"))?;
    // Like rpcbind: anyone may connect; what they may do is decided by their credentials.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666));
    l.set_nonblocking(true)
        .map_err(|e| format!("{shown}: {e}"))?;
    tokio::net::UnixListener::from_std(l).map_err(|e| format!("{shown}: {e}"))
}

/// Binds the path socket (retrying with backoff while another portmapper holds it) and routes
/// each connection to the caller's namespace.
async fn path_socket_task(path: PathBuf, shared: Arc<Shared>) {
    let mut delay = Duration::from_secs(1);
    let mut attempts = 0u32;
    let listener = loop {
        match bind_path(&path) {
            Ok(l) => break l,
            Err(e) => {
                if attempts == 0 {
                    tracing::error!(path = %path.display(), error = %e, "cannot serve the rpcbind path socket; retrying");
                } else {
                    tracing::debug!(path = %path.display(), error = %e, "path socket still unavailable");
                }
                *lock(&shared.path_status) = e;
                attempts += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    };
    *lock(&shared.path_ino) = std::fs::symlink_metadata(&path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    *lock(&shared.path_status) = format!("{}: listening", path.display());
    tracing::info!(path = %path.display(), "rpcbind path socket listening; callers are served by their own namespace");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "path socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(cred) = stream.peer_cred() else {
            continue;
        };
        let key = cred.pid().and_then(|p| netns_of_pid(p).ok());
        let inst = key.and_then(|k| lock(&shared.routes).get(&k).and_then(Weak::upgrade));
        let Some(inst) = inst else {
            let mut last = lock(&shared.last_refusal_log);
            if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                *last = Some(Instant::now());
                tracing::warn!(path = %path.display(), pid = ?cred.pid(), uid = cred.uid(), nsfs = ?key,
                    "path socket caller is in a network namespace nsauxd does not serve; refused");
            }
            continue;
        };
        let peer = Peer::Local {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        };
        let cancel = inst.ns.cancel.clone();
        tracing::trace!(netns = %inst.ns.name, ?peer, "path socket connection routed");
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = inst.serve_conn(Stream::Unix(stream), peer, None) => {}
            }
        });
    }
}
