//! The manager: one task that owns every namespace's state and applies all changes to it.
//!
//! Everything that changes the set of namespaces, services or listeners arrives as a
//! [`ManagerMsg`] and is applied in order by this single task, so there are no locks around
//! namespace state and no races between a namespace leaving and its sockets being created.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control::{Request, Response};
use crate::netns::factory::{self, SocketFactory, UdpOptions};
use crate::netns::tracker::{FileId, NetnsTracker, TrackerEvent};
use crate::netns::{NetnsId, Source};
use crate::serve::{self, ListenerSpec, NsInfo, NsService, ServiceKind, UdpEndpoint};
use crate::sys;

/// Everything the manager reacts to.
#[derive(Debug)]
pub enum ManagerMsg {
    /// From the directory tracker.
    Tracker(TrackerEvent),
    /// A control request and where to send its answer.
    Control(Request, oneshot::Sender<Response>),
    /// Time to retry a failed listener.
    Retry {
        /// Namespace.
        id: NetnsId,
        /// Service.
        service: &'static str,
        /// Listener.
        spec: ListenerSpec,
    },
    /// An attached-by-pid process exited.
    PidExited {
        /// Its attach source.
        source: Source,
    },
    /// SIGHUP: reload the configuration file.
    Reload,
}

/// How to (re)load the configuration: the file plus command-line overrides that win over it.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The file.
    pub path: PathBuf,
    /// A missing file means built-in defaults (true for the default path only).
    pub missing_ok: bool,
    /// `--netns-dir` flags (replace the file's list when non-empty).
    pub netns_dirs: Vec<PathBuf>,
    /// `--no-host-netns`.
    pub no_host_netns: bool,
}

impl ConfigSource {
    /// Loads and validates the file, then applies the command-line overrides.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut c = Config::load(&self.path, self.missing_ok)?;
        if !self.netns_dirs.is_empty() {
            c.netns_dirs.clone_from(&self.netns_dirs);
        }
        if self.no_host_netns {
            c.host_netns = false;
        }
        Ok(c)
    }
}

/// A listener task (owning its socket). Dropping it aborts the task; [`TaskGuard::close`] also
/// waits until the task, and so its socket, is gone.
#[derive(Debug)]
struct TaskGuard(Option<JoinHandle<()>>);

impl TaskGuard {
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

#[derive(Debug)]
enum ListenerState {
    Up { _task: TaskGuard },
    Failed { error: String, attempts: u32 },
}

#[derive(Debug)]
struct ServiceSlot {
    instance: Result<Arc<dyn NsService>, String>,
    listeners: BTreeMap<ListenerSpec, ListenerState>,
}

#[derive(Debug)]
struct NsEntry {
    info: Arc<NsInfo>,
    fd: Arc<OwnedFd>,
    /// Every way we know this namespace; the first names it.
    sources: Vec<(Source, Option<FileId>)>,
    since: SystemTime,
    services: BTreeMap<&'static str, ServiceSlot>,
}

impl Drop for NsEntry {
    fn drop(&mut self) {
        // Ends connection tasks; listener tasks end through their guards.
        self.info.cancel.cancel();
    }
}

impl ListenerState {
    async fn close(self) {
        if let Self::Up { _task } = self {
            _task.close().await;
        }
    }
}

impl ServiceSlot {
    async fn close(mut self) {
        for (_, l) in std::mem::take(&mut self.listeners) {
            l.close().await;
        }
    }
}

impl NsEntry {
    /// Closes every socket held for the namespace and waits until they are closed.
    async fn close(mut self) {
        self.info.cancel.cancel();
        for (_, slot) in std::mem::take(&mut self.services) {
            slot.close().await;
        }
    }
}

/// A socket created inside a namespace, not yet handed to the runtime.
#[derive(Debug)]
enum RawListener {
    Udp(std::net::UdpSocket),
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

fn create_listener(spec: &ListenerSpec) -> io::Result<RawListener> {
    Ok(match spec {
        ListenerSpec::Udp {
            addr,
            rx_timestamps,
        } => RawListener::Udp(factory::bind_udp(
            *addr,
            UdpOptions {
                rx_timestamps: *rx_timestamps,
            },
        )?),
        ListenerSpec::Tcp { addr } => RawListener::Tcp(factory::bind_tcp(*addr)?),
        ListenerSpec::UnixAbstract { name } => {
            RawListener::Unix(factory::bind_unix_abstract(name)?)
        }
    })
}

fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs((1u64 << attempts.min(6)).min(60))
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The manager's state.
#[derive(Debug)]
pub struct Manager {
    config: Arc<Config>,
    config_source: ConfigSource,
    kinds: Vec<Arc<dyn ServiceKind>>,
    factory: SocketFactory,
    namespaces: BTreeMap<NetnsId, NsEntry>,
    sources: HashMap<Source, NetnsId>,
    tx: mpsc::UnboundedSender<ManagerMsg>,
    tracker: Option<NetnsTracker>,
    pid_watchers: HashMap<Source, TaskGuard>,
    started: Instant,
    runtime_dir: PathBuf,
}

impl Manager {
    /// Creates the manager; call [`Manager::run`] to start tracking.
    pub fn new(
        config: Config,
        config_source: ConfigSource,
        kinds: Vec<Arc<dyn ServiceKind>>,
        tx: mpsc::UnboundedSender<ManagerMsg>,
        runtime_dir: PathBuf,
    ) -> io::Result<Self> {
        Ok(Self {
            config: Arc::new(config),
            config_source,
            kinds,
            factory: SocketFactory::start()?,
            namespaces: BTreeMap::new(),
            sources: HashMap::new(),
            tx,
            tracker: None,
            pid_watchers: HashMap::new(),
            started: Instant::now(),
            runtime_dir,
        })
    }

    /// Starts tracking and processes messages until `shutdown` fires; then drops every
    /// namespace (closing all sockets).
    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<ManagerMsg>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        for kind in &self.kinds {
            kind.start();
        }
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        self.tracker = Some(NetnsTracker::spawn(self.config.netns_dirs.clone(), ev_tx)?);
        if self.config.host_netns {
            self.add_host().await;
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(ev) = ev_rx.recv() => self.on_tracker(ev).await,
                msg = rx.recv() => match msg {
                    Some(msg) => self.on_msg(msg).await,
                    None => break,
                },
            }
        }
        let n = self.namespaces.len();
        self.pid_watchers.clear();
        for (_, entry) in std::mem::take(&mut self.namespaces) {
            entry.close().await;
        }
        tracing::info!(namespaces = n, "released every namespace");
        Ok(())
    }

    async fn on_msg(&mut self, msg: ManagerMsg) {
        match msg {
            ManagerMsg::Tracker(ev) => self.on_tracker(ev).await,
            ManagerMsg::Control(req, reply) => {
                let resp = self.on_control(req).await;
                let _ = reply.send(resp);
            }
            ManagerMsg::Retry { id, service, spec } => self.retry(id, service, spec).await,
            ManagerMsg::PidExited { source } => {
                tracing::info!(netns = source.name(), %source, "attached process exited; detaching");
                self.pid_watchers.remove(&source);
                self.remove_source(&source).await;
            }
            ManagerMsg::Reload => {
                if let Err(e) = self.reload().await {
                    tracing::error!(error = %e, "reload failed; keeping the running configuration");
                }
            }
        }
    }

    async fn on_tracker(&mut self, ev: TrackerEvent) {
        match ev {
            TrackerEvent::Appeared {
                source,
                fd,
                file_id,
            } => {
                self.add_source(source, fd, Some(file_id)).await;
            }
            TrackerEvent::Vanished { source } => self.remove_source(&source).await,
        }
    }

    async fn add_host(&mut self) {
        match File::open("/proc/self/ns/net") {
            Ok(f) => {
                self.add_source(Source::Host, f.into(), None).await;
            }
            Err(e) => tracing::error!(error = %e, "cannot open the daemon's own namespace"),
        }
    }

    /// Adds a way of knowing a namespace; a new identity gets its services started.
    async fn add_source(
        &mut self,
        source: Source,
        fd: OwnedFd,
        file_id: Option<FileId>,
    ) -> Option<NetnsId> {
        if self.sources.contains_key(&source) {
            self.remove_source(&source).await;
        }
        let fd = Arc::new(fd);
        let cookie = match self
            .factory
            .run_in(Arc::clone(&fd), sys::netns::current_netns_cookie)
            .await
        {
            Ok(c) => NetnsId(c),
            Err(e) => {
                tracing::warn!(netns = source.name(), %source, error = %e, "not a usable network namespace; ignoring");
                return None;
            }
        };
        self.sources.insert(source.clone(), cookie);
        if let Some(entry) = self.namespaces.get_mut(&cookie) {
            tracing::info!(netns = %entry.info.name, alias = source.name(), %source, "namespace already served; recorded alias");
            entry.sources.push((source, file_id));
            return Some(cookie);
        }
        let info = Arc::new(NsInfo {
            id: cookie,
            name: source.name().to_owned(),
            nsfs: nix::sys::stat::fstat(fd.as_fd())
                .ok()
                .map(|st| (st.st_dev, st.st_ino)),
            cancel: CancellationToken::new(),
            fd: Arc::clone(&fd),
            factory: self.factory.clone(),
        });
        tracing::info!(netns = %info.name, id = %cookie, %source, "namespace appeared");
        self.namespaces.insert(
            cookie,
            NsEntry {
                info,
                fd,
                sources: vec![(source, file_id)],
                since: SystemTime::now(),
                services: BTreeMap::new(),
            },
        );
        self.apply(cookie).await;
        Some(cookie)
    }

    /// Forgets a way of knowing a namespace; when none is left, every socket and fd held for it
    /// is closed at once so the kernel can free it.
    async fn remove_source(&mut self, source: &Source) {
        let Some(id) = self.sources.remove(source) else {
            return;
        };
        let Some(entry) = self.namespaces.get_mut(&id) else {
            return;
        };
        entry.sources.retain(|(s, _)| s != source);
        if entry.sources.is_empty() {
            if let Some(entry) = self.namespaces.remove(&id) {
                let name = entry.info.name.clone();
                for slot in entry.services.values() {
                    if let Ok(inst) = &slot.instance {
                        inst.namespace_gone();
                    }
                }
                entry.close().await;
                tracing::info!(netns = %name, id = %id, %source, "namespace gone; released");
            }
        } else {
            tracing::info!(netns = %entry.info.name, alias = source.name(), "alias removed; namespace still served");
        }
    }

    /// Brings the namespace's services and listeners in line with the configuration.
    async fn apply(&mut self, id: NetnsId) {
        let Some(entry) = self.namespaces.get_mut(&id) else {
            return;
        };
        let cfg = self.config.for_namespace(&entry.info.name);
        let mut to_bind = Vec::new();
        let mut to_close = Vec::new();
        for kind in &self.kinds {
            let name = kind.name();
            if !kind.enabled(&cfg) {
                if let Some(slot) = entry.services.remove(name) {
                    tracing::info!(netns = %entry.info.name, service = name, "service disabled");
                    to_close.extend(slot.listeners.into_values());
                }
                continue;
            }
            let slot = entry.services.entry(name).or_insert_with(|| ServiceSlot {
                instance: Err("not started".into()),
                listeners: BTreeMap::new(),
            });
            match &slot.instance {
                Ok(inst) => {
                    if let Err(e) = inst.reconfigure(&cfg) {
                        tracing::error!(netns = %entry.info.name, service = name, error = %e, "reconfigure failed");
                    }
                }
                Err(_) => {
                    slot.instance = kind.instantiate(Arc::clone(&entry.info), &cfg).map_err(|e| {
                        tracing::error!(netns = %entry.info.name, service = name, error = %e, "service failed to start");
                        format!("{e:#}")
                    });
                }
            }
            let Ok(inst) = &slot.instance else {
                to_close.extend(std::mem::take(&mut slot.listeners).into_values());
                continue;
            };
            let desired: BTreeSet<ListenerSpec> = inst.listeners().into_iter().collect();
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
        for l in to_close {
            l.close().await;
        }
        if !to_bind.is_empty() {
            self.bind(id, to_bind).await;
        }
    }

    /// Creates listeners inside the namespace in one trip to the namespace thread.
    async fn bind(&mut self, id: NetnsId, wanted: Vec<(&'static str, ListenerSpec)>) {
        let Some(entry) = self.namespaces.get(&id) else {
            return;
        };
        let specs: Vec<ListenerSpec> = wanted.iter().map(|(_, s)| s.clone()).collect();
        let created = self
            .factory
            .run_in(Arc::clone(&entry.fd), move || {
                Ok(specs.iter().map(create_listener).collect::<Vec<_>>())
            })
            .await;
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
            return;
        };
        for ((service, spec), result) in wanted.into_iter().zip(results) {
            let Some(slot) = entry.services.get_mut(service) else {
                continue;
            };
            let Ok(inst) = &slot.instance else { continue };
            let state = match result.and_then(|raw| start_listener(raw, &spec, &entry.info, inst)) {
                Ok(task) => {
                    tracing::debug!(netns = %entry.info.name, service, listener = %spec, "listening");
                    ListenerState::Up { _task: task }
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
                    }
                }
            };
            slot.listeners.insert(spec, state);
        }
    }

    async fn retry(&mut self, id: NetnsId, service: &'static str, spec: ListenerSpec) {
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

    async fn reload(&mut self) -> anyhow::Result<()> {
        let config = self.config_source.load()?;
        self.install_config(config).await;
        Ok(())
    }

    async fn install_config(&mut self, config: Config) {
        let old_dirs = self.config.netns_dirs.clone();
        let old_host = self.config.host_netns;
        self.config = Arc::new(config);
        if self.config.netns_dirs != old_dirs
            && let Some(t) = &self.tracker
        {
            t.set_dirs(self.config.netns_dirs.clone());
        }
        match (old_host, self.config.host_netns) {
            (false, true) => self.add_host().await,
            (true, false) => self.remove_source(&Source::Host).await,
            _ => {}
        }
        let ids: Vec<NetnsId> = self.namespaces.keys().copied().collect();
        for id in ids {
            self.apply(id).await;
        }
        tracing::info!(path = ?self.config.path, "configuration applied");
    }

    async fn on_control(&mut self, req: Request) -> Response {
        match req {
            Request::Status => Response::ok(self.status()),
            Request::NsList => Response::ok(self.ns_list()),
            Request::Reload => match self.reload().await {
                Ok(()) => Response::ok(json!({ "reloaded": true })),
                Err(e) => Response::err(format!("reload failed, old configuration kept: {e:#}")),
            },
            Request::Attach { name, pid, path } => self.attach(name, pid, path).await,
            Request::Detach { name } => self.detach(&name).await,
            Request::Service {
                service,
                action,
                ns,
                args,
            } => self.service_control(&service, &action, ns.as_deref(), &args),
        }
    }

    /// Runs a service action on each namespace where the service runs (or only on `ns`).
    fn service_control(
        &self,
        service: &str,
        action: &str,
        ns: Option<&str>,
        args: &Value,
    ) -> Response {
        if !self.kinds.iter().any(|k| k.name() == service) {
            return Response::err(format!("unknown service {service:?}"));
        }
        if let Some(name) = ns
            && !self.namespaces.values().any(|e| e.info.name == name)
        {
            return Response::err(format!("unknown namespace {name:?}"));
        }
        let mut out = serde_json::Map::new();
        for e in self
            .namespaces
            .values()
            .filter(|e| ns.is_none_or(|n| e.info.name == n))
        {
            let Some(Ok(inst)) = e.services.get(service).map(|s| &s.instance) else {
                if ns.is_some() {
                    return Response::err(format!(
                        "{service} does not run in namespace {:?}",
                        e.info.name
                    ));
                }
                continue;
            };
            match inst.control(action, args) {
                Ok(v) => {
                    out.insert(e.info.name.clone(), v);
                }
                Err(reason) => return Response::err(format!("{}: {reason}", e.info.name)),
            }
        }
        Response::ok(Value::Object(out))
    }

    fn status(&self) -> Value {
        let (mut up, mut failed) = (0usize, 0usize);
        for e in self.namespaces.values() {
            for s in e.services.values() {
                for l in s.listeners.values() {
                    match l {
                        ListenerState::Up { .. } => up += 1,
                        ListenerState::Failed { .. } => failed += 1,
                    }
                }
            }
        }
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_secs": self.started.elapsed().as_secs(),
            "config": self.config.path.as_ref().map(|p| p.display().to_string()),
            "runtime_dir": self.runtime_dir.display().to_string(),
            "netns_dirs": self.config.netns_dirs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "host_netns": self.config.host_netns,
            "namespaces": self.namespaces.len(),
            "listeners_up": up,
            "listeners_failed": failed,
        })
    }

    fn ns_list(&self) -> Value {
        let list: Vec<Value> = self
            .namespaces
            .values()
            .map(|e| {
                let services: serde_json::Map<String, Value> = e
                    .services
                    .iter()
                    .map(|(name, slot)| ((*name).to_owned(), service_json(slot)))
                    .collect();
                json!({
                    "name": e.info.name,
                    "id": e.info.id,
                    "source": e.sources.first().map(|(s, _)| s.to_string()),
                    "aliases": e.sources.iter().skip(1).map(|(s, _)| format!("{} ({s})", s.name())).collect::<Vec<_>>(),
                    "since": unix_secs(e.since),
                    "services": services,
                })
            })
            .collect();
        Value::Array(list)
    }

    fn name_in_use(&self, name: &str) -> bool {
        self.sources.keys().any(|s| s.name() == name)
    }

    async fn attach(&mut self, name: String, pid: Option<u32>, path: Option<PathBuf>) -> Response {
        if name.is_empty() || name.contains('/') {
            return Response::err(format!("invalid namespace name {name:?}"));
        }
        if self.name_in_use(&name) {
            return Response::err(format!("a namespace named {name:?} is already tracked"));
        }
        let (source, ns_path, pidfd) = match (pid, path) {
            (Some(pid), None) => {
                // The pidfd first: if the pid is reused after this, the pidfd still refers to the
                // process we checked, and it reports that process's exit.
                let pidfd = match sys::pidfd::open(pid) {
                    Ok(fd) => fd,
                    Err(e) => return Response::err(format!("no process {pid}: {e}")),
                };
                (
                    Source::Pid { name, pid },
                    PathBuf::from(format!("/proc/{pid}/ns/net")),
                    Some(pidfd),
                )
            }
            (None, Some(path)) => (
                Source::Path {
                    name,
                    path: path.clone(),
                },
                path,
                None,
            ),
            _ => return Response::err("attach needs exactly one of --pid or --path"),
        };
        let file = match File::open(&ns_path) {
            Ok(f) => f,
            Err(e) => return Response::err(format!("cannot open {}: {e}", ns_path.display())),
        };
        if !sys::netns::is_nsfs(file.as_fd()).unwrap_or(false) {
            return Response::err(format!("{} is not a namespace file", ns_path.display()));
        }
        let Some(id) = self.add_source(source.clone(), file.into(), None).await else {
            return Response::err(format!("{} is not a network namespace", ns_path.display()));
        };
        if let Some(pidfd) = pidfd {
            match watch_pid(pidfd, source.clone(), self.tx.clone()) {
                Ok(guard) => {
                    self.pid_watchers.insert(source.clone(), guard);
                }
                Err(e) => {
                    self.remove_source(&source).await;
                    return Response::err(format!("cannot watch process: {e}"));
                }
            }
        }
        Response::ok(json!({ "name": source.name(), "id": id, "source": source.to_string() }))
    }

    async fn detach(&mut self, name: &str) -> Response {
        let found: Vec<Source> = self
            .sources
            .keys()
            .filter(|s| s.name() == name)
            .cloned()
            .collect();
        let Some(source) = found.into_iter().next() else {
            return Response::err(format!("unknown namespace {name:?}"));
        };
        if !source.is_attached() {
            return Response::err(format!(
                "namespace {name:?} comes from {source}, not from attach; remove it there (e.g. ip netns del)"
            ));
        }
        self.pid_watchers.remove(&source);
        self.remove_source(&source).await;
        Response::ok(json!({ "detached": name }))
    }
}

fn describe_bind_error(e: &io::Error, spec: &ListenerSpec, ns: &str) -> String {
    if e.kind() == io::ErrorKind::AddrInUse {
        format!("{spec} in namespace {ns:?}: address in use (another program holds it)")
    } else {
        format!("{spec} in namespace {ns:?}: {e}")
    }
}

fn service_json(slot: &ServiceSlot) -> Value {
    let listeners: Vec<Value> = slot
        .listeners
        .iter()
        .map(|(spec, st)| match st {
            ListenerState::Up { .. } => json!({ "listener": spec.to_string(), "state": "up" }),
            ListenerState::Failed { error, attempts } => {
                json!({ "listener": spec.to_string(), "state": "failed", "error": error, "attempts": attempts + 1 })
            }
        })
        .collect();
    let n_up = slot
        .listeners
        .values()
        .filter(|l| matches!(l, ListenerState::Up { .. }))
        .count();
    let (state, error) = match &slot.instance {
        Err(e) => ("failed", Some(e.clone())),
        Ok(_) if n_up == slot.listeners.len() => ("up", None),
        Ok(_) if n_up == 0 => ("failed", None),
        Ok(_) => ("partial", None),
    };
    let mut v = json!({ "state": state, "listeners": listeners });
    if let Some(e) = error {
        v["error"] = json!(e);
    }
    if let Ok(inst) = &slot.instance {
        let st = inst.status();
        if !st.is_null() {
            v["status"] = st;
        }
    }
    v
}

fn start_listener(
    raw: RawListener,
    spec: &ListenerSpec,
    ns: &Arc<NsInfo>,
    inst: &Arc<dyn NsService>,
) -> io::Result<TaskGuard> {
    let ns = Arc::clone(ns);
    let inst = Arc::clone(inst);
    let handle = match raw {
        RawListener::Udp(s) => {
            let bound = s.local_addr().unwrap_or_else(|_| match spec {
                ListenerSpec::Udp { addr, .. } => *addr,
                _ => SocketAddr::from(([0, 0, 0, 0], 0)),
            });
            let control = match spec {
                ListenerSpec::Udp {
                    addr,
                    rx_timestamps,
                } => factory::udp_has_control(
                    *addr,
                    UdpOptions {
                        rx_timestamps: *rx_timestamps,
                    },
                ),
                _ => true,
            };
            let ep = Arc::new(UdpEndpoint {
                sock: tokio::net::UdpSocket::from_std(s)?,
                bound,
                control,
                ns,
            });
            tokio::spawn(serve::udp::run(ep, inst))
        }
        RawListener::Tcp(l) => {
            let l = tokio::net::TcpListener::from_std(l)?;
            tokio::spawn(serve::stream::run_tcp(l, ns, inst))
        }
        RawListener::Unix(l) => {
            let l = tokio::net::UnixListener::from_std(l)?;
            tokio::spawn(serve::stream::run_unix(l, ns, inst))
        }
    };
    Ok(TaskGuard(Some(handle)))
}

fn watch_pid(
    pidfd: OwnedFd,
    source: Source,
    tx: mpsc::UnboundedSender<ManagerMsg>,
) -> io::Result<TaskGuard> {
    let afd = sys::asyncfd::owned(pidfd)?;
    let handle = tokio::spawn(async move {
        // A pidfd becomes readable when its process exits.
        let _ = afd.readable().await;
        let _ = tx.send(ManagerMsg::PidExited { source });
    });
    Ok(TaskGuard(Some(handle)))
}
