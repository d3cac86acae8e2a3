//! Each namespace's services and their listening sockets: bringing them in line with the
//! configuration, creating sockets inside the namespace, retrying failed ones with backoff.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::small_map::SmallMap;
use super::{Manager, ManagerMsg};
use crate::netns::NetnsId;
use crate::netns::factory::{self, UdpOptions};
use crate::serve::contain::{self, ListenerExit};
use crate::serve::{self, ListenerSpec, NsInfo, NsService, UdpEndpoint};

/// A listener task (owning its socket). Dropping it aborts the task; [`TaskGuard::close`] also
/// waits until the task, and so its socket, is gone.
#[derive(Debug)]
pub(super) struct TaskGuard(Option<JoinHandle<()>>);

impl TaskGuard {
    /// Takes charge of a spawned task, so that it ends when its owner lets go of it.
    pub(super) fn new(handle: JoinHandle<()>) -> Self {
        Self(Some(handle))
    }

    async fn close(mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
            let _ = h.await;
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// One wanted listener: its socket's task while up, or why binding failed (or the task ended)
/// and how often, so the retry backoff grows and `ns list` can say why.
#[derive(Debug)]
pub(super) enum ListenerState {
    Up {
        _task: TaskGuard,
        /// Names this task in its end report, so a stale report is ignored.
        token: u64,
        /// Failures before this start (bind failures and unexpected ends), for the backoff.
        restarts: u32,
        /// When it came up: a listener that ran long enough starts its backoff afresh.
        since: Instant,
    },
    Failed {
        error: String,
        attempts: u32,
        /// It was up and its task ended: shown as `restarting` rather than `failed`.
        ended: bool,
    },
}

/// One service in one namespace: its instance (or why it failed to start) and the listeners
/// the instance asked for, kept together so the service's sockets go when it goes.
#[derive(Debug)]
pub(super) struct ServiceSlot {
    /// The running instance, or the reason it could not start.
    pub(super) instance: Result<Arc<dyn NsService>, String>,
    /// Every listener the instance wants, by spec.
    pub(super) listeners: SmallMap<ListenerSpec, ListenerState>,
    /// Panics of this service in this namespace lately, and when the last was: the rebuild
    /// backoff grows with them.
    pub(super) panics: u32,
    /// When the service last panicked here.
    pub(super) last_panic: Option<Instant>,
    /// Dropped after a panic and waiting for its rebuild (`ns list` says `restarting`).
    pub(super) rebuild_pending: bool,
    /// Dual-stack specs whose socket failed to bind: this instance listens on their two
    /// halves instead (see `manager::dual`).
    pub(super) split: BTreeSet<ListenerSpec>,
}

impl ServiceSlot {
    /// A service that has not been started yet.
    pub(super) fn new() -> Self {
        Self {
            instance: Err("not started".into()),
            listeners: SmallMap::new(),
            panics: 0,
            last_panic: None,
            rebuild_pending: false,
            split: BTreeSet::new(),
        }
    }
}

impl ListenerState {
    pub(super) async fn close(self) {
        if let Self::Up { _task, .. } = self {
            _task.close().await;
        }
    }
}

impl ServiceSlot {
    /// Closes the service's sockets and waits until they are closed, so a namespace's fds are
    /// all gone once its entry is.
    pub(super) async fn close(mut self) {
        for (_, l) in std::mem::take(&mut self.listeners) {
            l.close().await;
        }
    }
}

/// A socket created inside a namespace, not yet handed to the runtime.
#[derive(Debug)]
pub(super) enum RawListener {
    Udp(std::net::UdpSocket),
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// Creates the sockets for `specs`, in order. Call inside the target namespace.
pub(super) fn create_listeners(specs: &[ListenerSpec]) -> Vec<io::Result<RawListener>> {
    specs.iter().map(create_listener).collect()
}

fn create_listener(spec: &ListenerSpec) -> io::Result<RawListener> {
    Ok(match spec {
        ListenerSpec::Udp {
            addr,
            rx_timestamps,
            dual_stack,
        } => RawListener::Udp(factory::bind_udp(
            *addr,
            UdpOptions {
                rx_timestamps: *rx_timestamps,
                dual_stack: *dual_stack,
            },
        )?),
        ListenerSpec::Tcp { addr, dual_stack } => {
            RawListener::Tcp(factory::bind_tcp(*addr, *dual_stack)?)
        }
        ListenerSpec::UnixAbstract { name } => {
            RawListener::Unix(factory::bind_unix_abstract(name)?)
        }
    })
}

/// Listeners to bind in one namespace, by service.
pub(super) type Wanted = Vec<(&'static str, ListenerSpec)>;

/// The backoff after `attempts` failures in a row: 1 s, doubling, at most 60 s.
pub(super) fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs((1u64 << attempts.min(6)).min(60))
}

impl Manager {
    /// Brings the namespace's services and listeners in line with the configuration.
    pub(super) async fn apply(&mut self, id: NetnsId) {
        let Some(entry) = self.namespaces.get_mut(&id) else {
            return;
        };
        let cfg = self.config.for_namespace(&entry.info.name);
        let mut to_bind = Vec::new();
        let mut to_close = Vec::new();
        let mut panicked = Vec::new();
        for kind in &self.kinds {
            let name = kind.name();
            if !kind.enabled(&cfg) {
                if let Some(slot) = entry.services.remove(name) {
                    tracing::info!(netns = %entry.info.name, service = name, "service disabled");
                    to_close.extend(slot.listeners.into_values());
                }
                continue;
            }
            let slot = entry.services.get_or_insert_with(name, ServiceSlot::new);
            // A panic in the service's own start or reconfigure code is contained like one on
            // its traffic: that service in this namespace is dropped and rebuilt later.
            match &slot.instance {
                Ok(inst) => match contain::call(|| inst.reconfigure(&cfg)) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(netns = %entry.info.name, service = name, error = %e, "reconfigure failed");
                    }
                    Err(msg) => {
                        tracing::error!(netns = %entry.info.name, service = name, panic = %msg, "service panicked while reconfiguring");
                        panicked.push((name, msg));
                        continue;
                    }
                },
                Err(_) => {
                    slot.instance = match contain::call(|| {
                        kind.instantiate(Arc::clone(&entry.info), &cfg)
                    }) {
                        Ok(r) => r.map_err(|e| {
                            tracing::error!(netns = %entry.info.name, service = name, error = %e, "service failed to start");
                            format!("{e:#}")
                        }),
                        Err(msg) => {
                            tracing::error!(netns = %entry.info.name, service = name, panic = %msg, "service panicked while starting");
                            panicked.push((name, msg.clone()));
                            Err(format!("panicked while starting: {msg}"))
                        }
                    };
                }
            }
            let Ok(inst) = &slot.instance else {
                to_close.extend(std::mem::take(&mut slot.listeners).into_values());
                continue;
            };
            let mut wanted = inst.listeners();
            if inst.dual_stack() {
                wanted = super::dual::merge(wanted, &slot.split);
            }
            let desired: BTreeSet<ListenerSpec> = wanted.into_iter().collect();
            let stale: Vec<ListenerSpec> = slot
                .listeners
                .keys()
                .filter(|k| !desired.contains(*k))
                .cloned()
                .collect();
            for spec in stale {
                to_close.extend(slot.listeners.remove(&spec));
            }
            for spec in desired {
                match slot.listeners.get(&spec) {
                    Some(ListenerState::Up { .. }) => {}
                    _ => to_bind.push((name, spec)),
                }
            }
        }
        if !to_close.is_empty() {
            hold_file(entry);
        }
        for l in to_close {
            l.close().await;
        }
        if !to_bind.is_empty() {
            match &mut self.bind_later {
                // A start-up burst binds many namespaces' listeners in one trip (`arrivals`).
                Some(later) => later.push((id, to_bind)),
                None => self.bind(id, to_bind).await,
            }
        }
        for (service, msg) in panicked {
            self.service_panicked(id, service, &msg).await;
        }
    }

    /// Creates listeners inside the namespace in one trip to the namespace thread, and one
    /// more for the halves of dual-stack sockets that could not be bound.
    pub(super) async fn bind(&mut self, id: NetnsId, wanted: Vec<(&'static str, ListenerSpec)>) {
        let mut wanted = wanted;
        while !wanted.is_empty() {
            wanted = self.bind_once(id, wanted).await;
        }
    }

    /// One trip of [`Manager::bind`]; returns the halves of the dual-stack specs that failed.
    async fn bind_once(
        &mut self,
        id: NetnsId,
        wanted: Vec<(&'static str, ListenerSpec)>,
    ) -> Vec<(&'static str, ListenerSpec)> {
        let Some(entry) = self.namespaces.get(&id) else {
            return Vec::new();
        };
        let specs: Vec<ListenerSpec> = wanted.iter().map(|(_, s)| s.clone()).collect();
        let created = match entry.info.handle.open() {
            Ok(fd) => {
                self.factory
                    .run_in(fd, move || Ok(create_listeners(&specs)))
                    .await
            }
            Err(e) => Err(e),
        };
        self.finish_bind(id, wanted, created)
    }

    /// Hands the sockets created for `wanted` (or the error of the trip) to their services:
    /// starts each listener, or records its failure and schedules its retry. Returns the
    /// halves of the dual-stack specs that failed, to be bound next.
    pub(super) fn finish_bind(
        &mut self,
        id: NetnsId,
        wanted: Vec<(&'static str, ListenerSpec)>,
        created: io::Result<Vec<io::Result<RawListener>>>,
    ) -> Vec<(&'static str, ListenerSpec)> {
        let mut again = Vec::new();
        let results: Vec<io::Result<RawListener>> = match created {
            Ok(r) => r,
            Err(e) => {
                let msg = e.to_string();
                wanted
                    .iter()
                    .map(|_| Err(io::Error::other(msg.clone())))
                    .collect()
            }
        };
        let Some(entry) = self.namespaces.get_mut(&id) else {
            return again;
        };
        for ((service, spec), result) in wanted.into_iter().zip(results) {
            let Some(slot) = entry.services.get_mut(service) else {
                continue;
            };
            let Ok(inst) = &slot.instance else { continue };
            if let (Err(e), Some(halves)) = (&result, super::dual::halves(&spec)) {
                tracing::debug!(netns = %entry.info.name, service, listener = %spec, error = %e,
                    "dual-stack socket failed; listening on each family apart");
                slot.listeners.remove(&spec);
                slot.split.insert(spec);
                again.extend(halves.into_iter().map(|h| (service, h)));
                continue;
            }
            let restarts = match slot.listeners.get(&spec) {
                Some(ListenerState::Failed { attempts, .. }) => attempts + 1,
                _ => 0,
            };
            let token = super::supervise::next_token();
            let watch = super::supervise::Watch {
                tx: self.tx.clone(),
                id,
                ns: Arc::clone(&entry.info),
                service,
                spec: spec.clone(),
                token,
            };
            let state = match result
                .and_then(|raw| start_listener(raw, &spec, &entry.info, inst, watch))
            {
                Ok((task, sock)) => {
                    if let Some(sock) = sock {
                        entry.info.handle.hold_socket(sock);
                    }
                    tracing::debug!(netns = %entry.info.name, service, listener = %spec, "listening");
                    ListenerState::Up {
                        _task: task,
                        token,
                        restarts,
                        since: Instant::now(),
                    }
                }
                Err(e) => {
                    let attempts = match slot.listeners.get(&spec) {
                        Some(ListenerState::Failed { attempts, .. }) => attempts + 1,
                        _ => 0,
                    };
                    let delay = retry_delay(attempts);
                    tracing::warn!(netns = %entry.info.name, service, listener = %spec, error = %e,
                        retry_in = ?delay, "cannot listen");
                    let tx = self.tx.clone();
                    let spec2 = spec.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(ManagerMsg::Retry {
                            id,
                            service,
                            spec: spec2,
                        });
                    });
                    ListenerState::Failed {
                        error: describe_bind_error(&e, &spec, &entry.info.name),
                        attempts,
                        ended: false,
                    }
                }
            };
            slot.listeners.insert(spec, state);
        }
        again
    }

    /// Binds a listener again after its backoff, unless it came up or went away meanwhile.
    pub(super) async fn retry(&mut self, id: NetnsId, service: &'static str, spec: ListenerSpec) {
        let still_failed = self
            .namespaces
            .get(&id)
            .and_then(|e| e.services.get(service))
            .and_then(|s| s.listeners.get(&spec))
            .is_some_and(|l| matches!(l, ListenerState::Failed { .. }));
        if still_failed {
            self.bind(id, vec![(service, spec)]).await;
        }
    }
}

fn describe_bind_error(e: &io::Error, spec: &ListenerSpec, ns: &str) -> String {
    if e.kind() == io::ErrorKind::AddrInUse {
        format!("{spec} in namespace {ns:?}: address in use (another program holds it)")
    } else {
        format!("{spec} in namespace {ns:?}: {e}")
    }
}

/// Lets the namespace handle hold the namespace by a file rather than a socket, before
/// listeners close: a closed listener's socket (and port) must not stay alive in the handle.
pub(super) fn hold_file(entry: &super::sources::NsEntry) {
    if let Err(e) = entry.info.handle.hold_file() {
        tracing::warn!(netns = %entry.info.name, error = %e,
            "cannot open the namespace from its socket; the socket stays open meanwhile");
    }
}

/// A socket shared with a listener task, which can hold its namespace (see `netns::handle`).
type SharedSocket = Arc<dyn std::os::fd::AsFd + Send + Sync>;

/// Hands a created socket to the runtime and starts its task; a UDP endpoint is also
/// returned, to hold the namespace by.
fn start_listener(
    raw: RawListener,
    spec: &ListenerSpec,
    ns: &Arc<NsInfo>,
    inst: &Arc<dyn NsService>,
    watch: super::supervise::Watch,
) -> io::Result<(TaskGuard, Option<SharedSocket>)> {
    let ns = Arc::clone(ns);
    let inst = Arc::clone(inst);
    let mut shared: Option<SharedSocket> = None;
    let guard = match raw {
        RawListener::Udp(s) => {
            let bound = s.local_addr().unwrap_or_else(|_| match spec {
                ListenerSpec::Udp { addr, .. } => *addr,
                _ => SocketAddr::from(([0, 0, 0, 0], 0)),
            });
            let (control, dual_stack) = match spec {
                ListenerSpec::Udp {
                    addr,
                    rx_timestamps,
                    dual_stack,
                } => (
                    factory::udp_has_control(
                        *addr,
                        UdpOptions {
                            rx_timestamps: *rx_timestamps,
                            dual_stack: *dual_stack,
                        },
                    ),
                    *dual_stack,
                ),
                _ => (true, false),
            };
            let ep = Arc::new(UdpEndpoint {
                sock: tokio::net::UdpSocket::from_std(s)?,
                bound,
                dual_stack,
                control,
                ns,
            });
            shared = Some(Arc::clone(&ep) as SharedSocket);
            watch.spawn(serve::udp::run(ep, inst))
        }
        RawListener::Tcp(l) => {
            let l = tokio::net::TcpListener::from_std(l)?;
            watch.spawn(async move {
                serve::stream::run_tcp(l, ns, inst).await;
                ListenerExit::Ended("accept loop returned".into())
            })
        }
        RawListener::Unix(l) => {
            let l = tokio::net::UnixListener::from_std(l)?;
            watch.spawn(async move {
                serve::stream::run_unix(l, ns, inst).await;
                ListenerExit::Ended("accept loop returned".into())
            })
        }
    };
    Ok((guard, shared))
}
