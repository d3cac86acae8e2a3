//! The portmapper service: one [`nsaux_rpcbind::Portmapper`] per network namespace.
//!
//! # Transports
//! - In every namespace: UDP and TCP port 111 on `0.0.0.0` and `::`, and the abstract AF_LOCAL
//!   socket `"\0/run/rpcbind.sock"` (kernel ≥ 6.5, libtirpc ≥ 1.3.5), all opened by the manager.
//! - In the daemon's own mount namespace: the path socket (default `/run/rpcbind.sock`). A
//!   connection on it is served by **the caller's** network namespace: `SO_PEERCRED` pid →
//!   `stat("/proc/PID/ns/net")` → `(st_dev, st_ino)` → the tracked namespace with the same nsfs
//!   identity ([`NsInfo::nsfs`]). Callers from untracked namespaces are refused and logged. This
//!   is what stock rpcbind gets wrong: every namespace sharing `/run` lands in one table.
//!
//! # Durability
//! Every SET/UNSET is appended to the namespace's journal ([`journal`]) *before* the reply
//! is sent; if the write fails the change is taken back (an UNSET's entries return to their old
//! places) and no reply is sent, so the client retries, as after a lost datagram. The table in
//! memory therefore always equals what was acknowledged and what a replay rebuilds. The daemon's
//! own removals keep that rule too: an operator `rpc unset` whose write fails is refused with
//! the error, and a liveness removal whose write fails is taken back and retried next round.
//! After a failed write the next write starts a rewrite of the whole file off the loop and
//! waits for it (see `State::journal_stale`, `compact.rs`, `busy.rs`).
//! Journals are restored only into the namespace (boot id + cookie) that wrote them, and deleted
//! when the namespace goes; those of namespaces that went while the daemon was down are swept
//! `journal_sweep_delay_secs` after start.
//!
//! # Limits
//! Strings/opaques are capped at 9000 bytes and records at 64 KiB (in the core); registrations
//! per namespace (`max_registrations`); TCP + AF_LOCAL connections per namespace in the slot
//! table of `serve/slots.rs` (remote `max_connections`, local `max_local_connections`, per peer
//! `max_connections_per_peer`; the longest-idle is closed to admit a newcomer), an idle timeout
//! from the last complete record (`idle_timeout_secs`, CVE-2021-46828) and a deadline per record
//! (`record_timeout_secs`); UDP DUMP only for loopback callers.
//!
//! # Remote calls and liveness
//! CALLIT/BCAST/INDIRECT are refused unless `remote_calls = true`; then they are forwarded from
//! the namespace's own port-111 UDP socket (so only inside that namespace), matched back with the
//! core's [`nsaux_rpcbind::ForwardTable`]. With `prune = true` each namespace probes its UDP and
//! TCP registrations with an RPC NULL call every `prune_interval_secs` (doubling up to 8× while a
//! service is silent) and removes one after `prune_after_misses` silent rounds, as the core's
//! [`nsaux_rpcbind::Liveness`] decides; with `prune = false` no task exists. UDP probes leave
//! from the namespace's port-111 socket; TCP probes connect from sockets created inside the
//! namespace, a few at a time, each bounded by the round. A TCP-only service would otherwise
//! never be pruned.
//!
//! # Layout
//! - this file: the service kind ([`Rpcbind`]): journals, start-up, instances, self endpoints.
//! - `service`: one namespace's portmapper: call handling, journal writes and undo.
//! - `forward`: remote calls sent on and their answers sent back.
//! - `liveness`: the probing task (sends and receives what the core's `Liveness` decides).
//! - `path`: the path socket: bind, accept, routing a caller to its namespace.
//! - `stream`: TCP and AF_LOCAL connections.
//! - `control`: the `list`, `stats` and `unset` control verbs.
//! - [`journal`]: the durable registration journal.
//! - `compact`: the journal rewritten on a blocking thread while calls keep appending.
//! - `busy`: calls answered once such a rewrite is over (UDP replies sent later).
//! - `dump`: DUMP over a stream, encoded from a snapshot off the loop.
//! - `replay`: the journal read back on a blocking thread when a namespace appears.
//! - `signals`: replay done and rewrite ends, as waiters see them.

mod busy;
mod compact;
mod control;
#[cfg(test)]
mod costs;
mod dump;
mod forward;
pub(crate) mod journal;
mod liveness;
mod path;
mod refuse;
mod replay;
mod service;
mod signals;
mod stream;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nsaux_rpcbind::uaddr::format_uaddr;
use nsaux_rpcbind::{
    Config as PmConfig, Entry, PMAP_PROG, Portmapper, SUPERUSER, SelfTable, SharedStr,
};

use self::journal::JournalDir;
use self::path::PathTask;
use self::service::{RpcbindNs, State};
use super::{NsInfo, NsService, ServiceKind};
use crate::config::{RpcbindConfig, ServicesConfig};
use crate::lock::lock;

/// The portmapper service kind: journals, the path socket and the routing table for it.
#[derive(Debug)]
pub(crate) struct Rpcbind {
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
    /// The path socket's task; dropping it stops the task and removes the socket file.
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

impl Rpcbind {
    /// A portmapper kind keeping journals under `state_dir`, deleting those of vanished
    /// namespaces `sweep_delay` after start (at least a second), and serving the path socket
    /// `local_path` (`None`: no path socket).
    pub(crate) fn new(
        state_dir: &Path,
        local_path: Option<PathBuf>,
        sweep_delay: Duration,
    ) -> Self {
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
            *lock(&self.path_task) = Some(PathTask::start(path.clone(), Arc::clone(&self.shared)));
        }
        if let Some(j) = &self.journals {
            let j = Arc::clone(j);
            let shared = Arc::clone(&self.shared);
            let delay = self.sweep_delay;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let live = lock(&shared.live).clone();
                // A directory listing of one file per namespace: off the loop.
                let _ = tokio::task::spawn_blocking(move || j.sweep(&live)).await;
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
        let cfg = SETTINGS.get(&cfg.rpcbind);
        let journal = self.journals.as_ref().map(|j| j.journal(ns.id));
        let pm = new_portmapper(&cfg);
        // The journal is replayed off the loop (`replay.rs`); the table is complete once
        // `replaying` is false.
        let account = crate::budget::Account::default();
        account.set(pm.registration_bytes());
        ns.metrics.set_registrations(pm.entries().len());
        let inst = Arc::new_cyclic(|me| RpcbindNs {
            me: me.clone(),
            ns: Arc::clone(&ns),
            state: Mutex::new(State {
                cfg,
                pm,
                journal_bytes: 0,
                journal_live: 0,
                journal_error: None,
                journal_refused: 0,
                journal_stale: false,
                replaying: true,
                compacting: false,
                rewriting_whole: false,
                compact_retry_at: 0,
                compaction_due: false,
                cap_held: false,
                journal_gen: 0,
                compactions: 0,
                gone: false,
                forwards: None,
                liveness: None,
            }),
            journal,
            signals: signals::Signals::default(),
            slots: crate::serve::slots::LazySlots::default(),
            shared: Arc::clone(&self.shared),
            prune: Mutex::new(None),
            prune_on: AtomicBool::new(false),
            prune_ep: Mutex::new(None),
            account,
            refusal_log: crate::budget::LogLimit::default(),
            journal_log: crate::budget::LogLimit::default(),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            dump_gate: tokio::sync::Semaphore::new(1),
        });
        if let Some(key) = ns.nsfs {
            lock(&self.shared.routes).insert(key, Arc::downgrade(&inst));
        }
        lock(&self.shared.live).insert(ns.id.0);
        inst.start_replay();
        inst.update_prune();
        Ok(inst)
    }
}

/// The `[rpcbind]` section every namespace's instance shares (see
/// [`crate::serve::shared_cfg`]).
pub(super) static SETTINGS: crate::serve::shared_cfg::SharedCfg<RpcbindConfig> =
    crate::serve::shared_cfg::SharedCfg::new();

/// Protocol settings from the daemon's section.
fn pm_config(cfg: &RpcbindConfig) -> PmConfig {
    PmConfig {
        remote_calls: cfg.remote_calls,
        max_registrations: cfg.max_registrations,
        max_registration_bytes: cfg.max_registration_bytes,
        max_stat_rows: cfg.max_stat_rows,
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

/// The self endpoints last asked for, as shared strings. Why: every namespace's table points
/// at these instead of holding copies (issue 16: bytes per namespace).
static SELF_ENDPOINTS: crate::serve::shared_cfg::SharedCfg<Vec<(SharedStr, SharedStr)>> =
    crate::serve::shared_cfg::SharedCfg::new();

/// The table of self registrations built last, with the endpoints it was built from. Why:
/// every namespace's portmapper shares it until its first registration (copy on write), so
/// an idle namespace holds no table of its own (issue 16: about 0.7 KiB per namespace).
type SelfTableFor = (Arc<Vec<(SharedStr, SharedStr)>>, SelfTable);
static SELF_TABLE: Mutex<Option<SelfTableFor>> = Mutex::new(None);

/// A portmapper for `cfg` holding only its self registrations.
fn new_portmapper(cfg: &RpcbindConfig) -> Portmapper {
    let endpoints: Vec<(SharedStr, SharedStr)> = self_endpoints(cfg)
        .into_iter()
        .map(|(netid, uaddr)| (netid.into(), uaddr.into()))
        .collect();
    let endpoints = SELF_ENDPOINTS.get(&endpoints);
    let mut last = lock(&SELF_TABLE);
    let table = match last.as_ref() {
        Some((built_for, table)) if Arc::ptr_eq(built_for, &endpoints) => table.clone(),
        _ => {
            let table = SelfTable::new(&endpoints);
            *last = Some((endpoints, table.clone()));
            table
        }
    };
    Portmapper::with_self_table(pm_config(cfg), &table)
}

/// The registrations clients made (what the journal holds).
/// Self registrations are recognised from the configuration rather than kept in a copy: a copy
/// would cost about 2 KiB per namespace and is only needed on rare journal rewrites.
fn user_entries(pm: &Portmapper, cfg: &RpcbindConfig) -> Vec<Entry> {
    user_entries_of(pm.entries(), cfg)
}

/// [`user_entries`] of a table snapshot (`Portmapper::registry_snapshot`), so a compaction
/// makes its copy off the loop.
fn user_entries_of(entries: &[Entry], cfg: &RpcbindConfig) -> Vec<Entry> {
    let endpoints = self_endpoints(cfg);
    let is_self = |e: &Entry| {
        e.prog == PMAP_PROG
            && e.owner == SUPERUSER
            && (2..=4).contains(&e.vers)
            && endpoints
                .iter()
                .any(|(n, u)| *n == e.netid && *u == e.uaddr)
    };
    entries.iter().filter(|e| !is_self(e)).cloned().collect()
}

/// Seconds since the epoch of a wall-clock reading (0 before it).
fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The source address for a datagram the portmapper sends on its own (a forwarded call, a
/// liveness probe) to `target`: the unspecified address of its family, so routing picks it.
fn any_source_for(target: SocketAddr) -> IpAddr {
    if target.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    }
}
