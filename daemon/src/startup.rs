//! `nsauxd`'s start-up: command line, configuration load, runtime, the manager and control
//! tasks, signals and systemd notification. The binary only calls [`daemon_main`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control;
use crate::defaults::{DEFAULT_CONFIG, DEFAULT_RUNTIME_DIR, DEFAULT_STATE_DIR};
use crate::manager::{ConfigSource, Manager, ManagerMsg};
use crate::serve::{ServiceKind, dns::Dns, ident::Ident, ntp::Ntp, rpcbind::Rpcbind};

/// `sysexits.h` EX_CONFIG: the configuration is wrong.
const EX_CONFIG: u8 = 78;

/// nsauxd — portmapper, DNS and NTP inside every network namespace, from one process.
///
/// Runs in the foreground (systemd style). Flags override the configuration file.
#[derive(Debug, Parser)]
#[command(name = "nsauxd", version, long_version = crate::build_info::LONG_VERSION, about, long_about = None)]
pub(crate) struct DaemonArgs {
    /// Configuration file (TOML). The default path may be absent: built-in defaults apply.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Runtime directory: lock file and control socket (mode 0600).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_RUNTIME_DIR)]
    pub(crate) runtime_dir: PathBuf,
    /// State directory: durable journals (registrations).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub(crate) state_dir: PathBuf,
    /// Directory of namespace files to follow; repeat for several. Replaces the file's
    /// `netns_dirs` (default /run/netns).
    #[arg(long = "netns-dir", value_name = "DIR")]
    pub(crate) netns_dirs: Vec<PathBuf>,
    /// Do not serve the daemon's own (host) namespace.
    #[arg(long)]
    pub(crate) no_host_netns: bool,
    /// The portmapper's path socket in this mount namespace (overrides `[rpcbind] local_path`;
    /// "none" disables it). Tests point it into a private directory.
    #[arg(long, value_name = "PATH")]
    pub(crate) rpcbind_socket: Option<PathBuf>,
}

/// The service kinds this build offers, in start order.
fn service_kinds(args: &DaemonArgs, config: &Config) -> Vec<Arc<dyn ServiceKind>> {
    let rpcbind_path = match &args.rpcbind_socket {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => Some(p.clone()),
        None => Some(config.base_services().rpcbind.local_path)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
    };
    vec![
        Arc::new(Ident),
        Arc::new(Rpcbind::new(
            &args.state_dir,
            rpcbind_path,
            Duration::from_secs(config.base_services().rpcbind.journal_sweep_delay_secs),
        )),
        Arc::new(Ntp::new()),
        Arc::new(Dns::persistent(
            &args.state_dir,
            Duration::from_secs(config.base_services().rpcbind.journal_sweep_delay_secs),
        )),
    ]
}

/// `nsauxd`'s main.
pub fn daemon_main() -> ExitCode {
    let args = DaemonArgs::parse();
    crate::ops::init_logging();
    crate::serve::contain::install_panic_hook();
    crate::ops::raise_fd_limit();
    let source = ConfigSource {
        path: args
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)),
        missing_ok: args.config.is_none(),
        netns_dirs: args.netns_dirs.clone(),
        no_host_netns: args.no_host_netns,
    };
    let config = match source.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nsauxd: {e:#}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    // Directories, the single-instance lock and the observation socket (whose group change
    // needs CAP_CHOWN) before the capabilities go, and before any thread exists.
    let prepared = match Prepared::new(&args, &config) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("nsauxd: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    crate::ops::drop_privileges_and_start_lane(config.quiet_lane_cpu_percent);
    // One worker: the current-thread scheduler (see `default_worker_threads`).
    let mut builder = if config.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.worker_threads);
        b
    };
    // Receive coalescing under sustained load (`serve::coalesce`): decided in the park hook,
    // which runs only when a worker is about to block in `epoll_wait`.
    let coalesce = Duration::from_micros(config.receive_coalesce_us);
    if !coalesce.is_zero() {
        builder
            .on_thread_park(move || crate::serve::coalesce::on_park(coalesce))
            .on_thread_unpark(crate::serve::coalesce::on_unpark);
    }
    let runtime = match builder.thread_name("nsaux-worker").enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nsauxd: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_daemon(args, source, config, prepared)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("nsauxd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What start-up sets up while it still has every capability and one thread.
struct Prepared {
    /// Held for the daemon's life: one daemon per runtime directory.
    _lock: crate::ops::InstanceLock,
    /// Where the observation socket is, to remove it at stop.
    observe_socket: Option<crate::config::ObserveSocket>,
    /// The bound observation socket.
    observe: Option<std::os::unix::net::UnixListener>,
}

impl Prepared {
    fn new(args: &DaemonArgs, config: &Config) -> anyhow::Result<Self> {
        create_dir(&args.runtime_dir, 0o755)?;
        create_dir(&args.state_dir, 0o700)?;
        let lock = crate::ops::InstanceLock::acquire(&args.runtime_dir)?;
        let observe_socket = config.observe.socket(&args.runtime_dir);
        let observe = match &observe_socket {
            Some(cfg) => Some(crate::metrics::observe::bind(cfg)?),
            None => None,
        };
        Ok(Self {
            _lock: lock,
            observe_socket,
            observe,
        })
    }
}

async fn run_daemon(
    args: DaemonArgs,
    source: ConfigSource,
    config: Config,
    prepared: Prepared,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};

    let Prepared {
        _lock,
        observe_socket,
        observe,
    } = prepared;
    let control_path = args.runtime_dir.join(control::SOCKET_NAME);
    let listener = control::server::bind(&control_path)?;

    let (tx, rx) = mpsc::unbounded_channel();
    let (call_tx, call_rx) = mpsc::unbounded_channel();
    let kinds = service_kinds(&args, &config);
    let mut manager = Manager::new(config, source, kinds, tx.clone(), args.runtime_dir.clone())
        .context("starting the namespace thread")?;
    manager.remember_attachments_in(&args.state_dir);
    let shutdown = CancellationToken::new();
    let observe_task =
        observe.map(|l| tokio::spawn(crate::metrics::observe::serve(l, call_tx.clone())));
    let control_task = tokio::spawn(control::server::serve(listener, call_tx));
    let manager_task = tokio::spawn(manager.run(rx, call_rx, shutdown.clone()));

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), runtime_dir = %args.runtime_dir.display(), "nsauxd ready");
    crate::ops::notify(&[sd_notify::NotifyState::Ready]);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading configuration");
                let _ = tx.send(ManagerMsg::Reload);
            }
        }
    }
    tracing::info!("shutting down");
    crate::ops::notify(&[sd_notify::NotifyState::Stopping]);
    control_task.abort();
    if let Some(t) = observe_task {
        t.abort();
    }
    shutdown.cancel();
    manager_task.await.context("manager task")??;
    let _ = std::fs::remove_file(&control_path);
    if let Some(o) = observe_socket {
        let _ = std::fs::remove_file(&o.path);
    }
    Ok(())
}

fn create_dir(dir: &std::path::Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}
