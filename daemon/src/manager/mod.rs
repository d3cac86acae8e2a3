//! The manager: one task that owns every namespace's state and applies all changes to it.
//!
//! Everything that changes the set of namespaces, services or listeners arrives as a
//! [`ManagerMsg`], a tracker event or a control [`Call`], and is applied one at a time by this
//! single task, so there are no locks around namespace state and no races between a namespace
//! leaving and its sockets being created.
//!
//! This file holds the loop, configuration reloads and the dispatch of control requests
//! (including service actions); the rest of the task's work is split by job:
//! - `sources.rs` — namespaces coming and going: tracker events, attach/detach, pid watches;
//! - `listeners.rs` — each namespace's services and sockets: apply, bind, retry with backoff;
//! - `reports.rs` — what `status` and `ns list` show;
//! - `supervise.rs` — listener tasks that end and services that panic: restart, rebuild, backoff.

mod arrivals;
mod attachments;
mod dual;
mod listeners;
mod reports;
mod small_map;
mod sources;
mod supervise;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control::{Call, Request, Response};
use crate::netns::factory::SocketFactory;
use crate::netns::tracker::NetnsTracker;
use crate::netns::{NetnsId, Source};
use crate::serve::{ListenerSpec, ServiceKind};

use self::listeners::TaskGuard;
use self::sources::NsEntry;

/// Everything the manager reacts to.
#[derive(Debug)]
pub(crate) enum ManagerMsg {
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
    /// Time to read a found namespace's cookie again.
    CookieRetry(sources::CookieRetry),
    /// A listener task ended on its own (returned, or its service panicked).
    ListenerEnded {
        /// Namespace.
        id: NetnsId,
        /// Service.
        service: &'static str,
        /// Listener.
        spec: ListenerSpec,
        /// The task's token (a stale report is ignored).
        token: u64,
        /// How it ended.
        exit: crate::serve::contain::ListenerExit,
    },
    /// Time to instantiate a service again after it panicked.
    Rebuild {
        /// Namespace.
        id: NetnsId,
        /// Service.
        service: &'static str,
    },
}

/// How to (re)load the configuration: the file plus command-line overrides that win over it.
#[derive(Debug, Clone)]
pub(crate) struct ConfigSource {
    /// The file.
    pub(crate) path: PathBuf,
    /// A missing file means built-in defaults (true for the default path only).
    pub(crate) missing_ok: bool,
    /// `--netns-dir` flags (replace the file's list when non-empty).
    pub(crate) netns_dirs: Vec<PathBuf>,
    /// `--no-host-netns`.
    pub(crate) no_host_netns: bool,
}

impl ConfigSource {
    /// Loads and validates the file, then applies the command-line overrides.
    pub(crate) fn load(&self) -> anyhow::Result<Config> {
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

/// The manager's state.
#[derive(Debug)]
pub(crate) struct Manager {
    config: Arc<Config>,
    config_source: ConfigSource,
    kinds: Vec<Arc<dyn ServiceKind>>,
    factory: SocketFactory,
    namespaces: BTreeMap<NetnsId, NsEntry>,
    sources: HashMap<Source, NetnsId>,
    tx: mpsc::UnboundedSender<ManagerMsg>,
    tracker: Option<NetnsTracker>,
    pid_watchers: HashMap<Source, TaskGuard>,
    /// Sources waiting for a cookie retry, with the token of the retry that counts.
    cookie_retries: HashMap<Source, u64>,
    /// The last cookie-retry token handed out.
    next_cookie_token: u64,
    started: Instant,
    runtime_dir: PathBuf,
    /// Attached sources with what is remembered of them across restarts.
    attached: HashMap<Source, sources::AttachMeta>,
    /// Where attachments are remembered (`None`: the state directory is unusable).
    store: Option<attachments::AttachStore>,
    /// Every served namespace's label (labels are unique), so an arrival's label check does
    /// not walk all namespaces.
    labels: HashSet<String>,
    /// While a burst of arrivals is being started (`arrivals.rs`): the listeners `apply`
    /// wants bound, collected to be created in a few trips instead of one per namespace.
    bind_later: Option<Vec<(NetnsId, listeners::Wanted)>>,
}

impl Manager {
    /// Creates the manager; call [`Manager::run`] to start tracking.
    pub(crate) fn new(
        config: Config,
        config_source: ConfigSource,
        kinds: Vec<Arc<dyn ServiceKind>>,
        tx: mpsc::UnboundedSender<ManagerMsg>,
        runtime_dir: PathBuf,
    ) -> io::Result<Self> {
        Ok(Self {
            config: {
                crate::budget::set_ceiling(config.limits.memory_max_bytes);
                crate::metrics::configure(&config.observe);
                Arc::new(config)
            },
            config_source,
            kinds,
            factory: SocketFactory::start()?,
            namespaces: BTreeMap::new(),
            sources: HashMap::new(),
            tx,
            tracker: None,
            pid_watchers: HashMap::new(),
            cookie_retries: HashMap::new(),
            next_cookie_token: 0,
            started: Instant::now(),
            runtime_dir,
            attached: HashMap::new(),
            store: None,
            labels: HashSet::new(),
            bind_later: None,
        })
    }

    /// Remembers attachments in `state_dir` and re-attaches those of an earlier run at start.
    pub(crate) fn remember_attachments_in(&mut self, state_dir: &std::path::Path) {
        match attachments::AttachStore::open(state_dir) {
            Ok(s) => self.store = Some(s),
            Err(e) => tracing::error!(state_dir = %state_dir.display(), error = %e,
                "cannot remember attachments; attached namespaces will not survive a restart"),
        }
    }

    /// Starts tracking and processes messages and control calls until `shutdown` fires; then
    /// drops every namespace (closing all sockets).
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<ManagerMsg>,
        mut calls: mpsc::UnboundedReceiver<Call>,
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
        self.restore_attachments().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(ev) = ev_rx.recv() => {
                    // Whatever else the tracker already reported goes with it, bounded: a
                    // start-up scan's thousands of namespaces are started in bursts.
                    let mut batch = vec![ev];
                    while batch.len() < arrivals::BURST_MAX
                        && let Ok(ev) = ev_rx.try_recv()
                    {
                        batch.push(ev);
                    }
                    self.on_tracker_batch(batch).await;
                }
                Some(call) = calls.recv() => {
                    let resp = self.on_control(call.request).await;
                    let _ = call.reply.send(resp);
                }
                msg = rx.recv() => match msg {
                    Some(msg) => self.on_msg(msg).await,
                    None => break,
                },
            }
        }
        let n = self.namespaces.len();
        self.pid_watchers.clear();
        self.labels.clear();
        for (_, entry) in std::mem::take(&mut self.namespaces) {
            entry.close().await;
        }
        tracing::info!(namespaces = n, "released every namespace");
        Ok(())
    }

    async fn on_msg(&mut self, msg: ManagerMsg) {
        match msg {
            ManagerMsg::Retry { id, service, spec } => self.retry(id, service, spec).await,
            ManagerMsg::PidExited { source } => {
                tracing::info!(netns = source.name(), %source, "attached process exited; detaching");
                self.pid_watchers.remove(&source);
                self.remove_source(&source).await;
            }
            ManagerMsg::CookieRetry(retry) => self.cookie_retry(retry).await,
            ManagerMsg::ListenerEnded {
                id,
                service,
                spec,
                token,
                exit,
            } => self.listener_ended(id, service, spec, token, exit).await,
            ManagerMsg::Rebuild { id, service } => self.rebuild(id, service).await,
            ManagerMsg::Reload => {
                if let Err(e) = self.reload().await {
                    tracing::error!(error = %e, "reload failed; keeping the running configuration");
                }
            }
        }
    }

    async fn reload(&mut self) -> anyhow::Result<()> {
        let config = self.config_source.load()?;
        self.install_config(config).await;
        Ok(())
    }

    async fn install_config(&mut self, mut config: Config) {
        keep_start_only_keys(&self.config, &mut config);
        let old_dirs = self.config.netns_dirs.clone();
        let old_host = self.config.host_netns;
        crate::budget::set_ceiling(config.limits.memory_max_bytes);
        crate::metrics::configure(&config.observe);
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
        for (i, id) in ids.into_iter().enumerate() {
            // Bounded per turn of the loop, like the reports' walks.
            reports::pace(i).await;
            self.apply(id).await;
        }
        tracing::info!(path = ?self.config.path, "configuration applied");
    }

    async fn on_control(&mut self, req: Request) -> Response {
        match req {
            Request::Status => Response::ok(self.status().await),
            Request::NsList => Response::ok(self.ns_list().await),
            Request::NsCounts => Response::ok(self.ns_counts().await),
            Request::Reload => match self.reload().await {
                Ok(()) => Response::ok(json!({ "reloaded": true })),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "nsauxctl reload failed; keeping the running configuration");
                    Response::err(format!("reload failed, old configuration kept: {e:#}"))
                }
            },
            Request::Attach {
                name,
                pid,
                path,
                key,
                origin,
            } => {
                let how = sources::AttachHow {
                    key,
                    origin: origin.unwrap_or_else(|| "ctl".into()),
                    expect: None,
                };
                self.attach(name, pid, path, how).await
            }
            Request::Detach {
                name,
                key: Some(key),
            } if name.is_empty() => self.detach_key(&key).await,
            Request::Detach { name, .. } => self.detach(&name).await,
            Request::Service {
                service,
                action,
                ns,
                args,
            } => {
                self.service_control(&service, &action, ns.as_deref(), &args)
                    .await
            }
        }
    }

    /// Runs a service action on each namespace where the service runs (or only on `ns`). A
    /// panic in the action is caught: that namespace's service is rebuilt, the caller gets an
    /// error, and no other namespace is touched.
    async fn service_control(
        &mut self,
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
        let mut panicked = None;
        for (i, (id, e)) in self
            .namespaces
            .iter()
            .filter(|(_, e)| ns.is_none_or(|n| e.info.name == n))
            .enumerate()
        {
            // Bounded per turn of the loop, like `status` and `ns list`.
            reports::pace(i).await;
            let Some(Ok(inst)) = e.services.get(service).map(|s| &s.instance) else {
                if ns.is_some() {
                    return Response::err(format!(
                        "{service} does not run in namespace {:?}",
                        e.info.name
                    ));
                }
                continue;
            };
            let result = crate::serve::contain::call(|| {
                #[cfg(feature = "fault-injection")]
                if action == crate::serve::fault::PANIC_ACTION {
                    panic!("fault injection: panic requested by a control action");
                }
                inst.control(action, args)
            });
            match result {
                Ok(Ok(v)) => {
                    out.insert(e.info.name.clone(), v);
                }
                Ok(Err(reason)) => return Response::err(format!("{}: {reason}", e.info.name)),
                Err(msg) => {
                    tracing::error!(netns = %e.info.name, service, action, panic = %msg,
                        "control action panicked; rebuilding the service in this namespace");
                    panicked = Some((*id, e.info.name.clone(), msg));
                    break;
                }
            }
        }
        if let Some((id, name, msg)) = panicked {
            let Some(kind) = self.kinds.iter().find(|k| k.name() == service) else {
                return Response::err(format!("{name}: {service} {action} failed"));
            };
            let service = kind.name();
            self.service_panicked(id, service, &msg).await;
            return Response::err(format!(
                "{name}: {service} {action} failed (internal error; the service is being rebuilt in this namespace)"
            ));
        }
        Response::ok(Value::Object(out))
    }
}

/// Keys read at start only (the runtime's workers, its park hooks, the quiet lane's thread):
/// a reload that changes one says so in the log, and the configuration in force keeps the
/// running value (an operator reading the log knows a restart is needed; nothing pretends the
/// new value took effect).
fn keep_start_only_keys(running: &Config, new: &mut Config) {
    keep_running(
        "worker_threads",
        running.worker_threads,
        &mut new.worker_threads,
    );
    keep_running(
        "receive_coalesce_us",
        running.receive_coalesce_us,
        &mut new.receive_coalesce_us,
    );
    keep_running(
        "quiet_lane_cpu_percent",
        running.quiet_lane_cpu_percent,
        &mut new.quiet_lane_cpu_percent,
    );
}

/// Logs and undoes a reload's change of one start-only key.
fn keep_running<T: PartialEq + Copy + std::fmt::Display>(key: &str, running: T, new: &mut T) {
    if *new != running {
        tracing::warn!(
            key,
            running = %running,
            in_file = %*new,
            "read at start only: the running value stays until the daemon restarts"
        );
        *new = running;
    }
}
