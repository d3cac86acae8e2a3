//! Command lines of `nsauxd` and `nsauxctl`. The binaries only call these.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control::{self, Request};
use crate::manager::{ConfigSource, Manager, ManagerMsg};
use crate::serve::{ServiceKind, dns::Dns, ident::Ident, ntp::Ntp, rpcbind::Rpcbind};

/// Default configuration file; its absence means built-in defaults.
pub const DEFAULT_CONFIG: &str = "/etc/nsaux/nsaux.toml";
/// Default runtime directory (lock, control socket).
pub const DEFAULT_RUNTIME_DIR: &str = "/run/nsaux";
/// Default state directory (durable journals).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/nsaux";

/// `sysexits.h` EX_CONFIG: the configuration is wrong.
const EX_CONFIG: u8 = 78;

/// nsauxd — portmapper, DNS and NTP inside every network namespace, from one process.
///
/// Runs in the foreground (systemd style). Flags override the configuration file.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct DaemonArgs {
    /// Configuration file (TOML). The default path may be absent: built-in defaults apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Runtime directory: lock file and control socket (mode 0600).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_RUNTIME_DIR)]
    pub runtime_dir: PathBuf,
    /// State directory: durable journals (registrations).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Directory of namespace files to follow; repeat for several. Replaces the file's
    /// `netns_dirs` (default /run/netns).
    #[arg(long = "netns-dir", value_name = "DIR")]
    pub netns_dirs: Vec<PathBuf>,
    /// Do not serve the daemon's own (host) namespace.
    #[arg(long)]
    pub no_host_netns: bool,
    /// The portmapper's path socket in this mount namespace (overrides `[rpcbind] local_path`;
    /// "none" disables it). Tests point it into a private directory.
    #[arg(long, value_name = "PATH")]
    pub rpcbind_socket: Option<PathBuf>,
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
        Arc::new(Dns),
    ]
}

/// `nsauxd`'s main.
pub fn daemon_main() -> ExitCode {
    let args = DaemonArgs::parse();
    crate::ops::init_logging();
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
    // One worker: the current-thread scheduler (see `default_worker_threads`).
    let mut builder = if config.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.worker_threads);
        b
    };
    let runtime = match builder.thread_name("nsaux-worker").enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nsauxd: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_daemon(args, source, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("nsauxd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_daemon(args: DaemonArgs, source: ConfigSource, config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};

    create_dir(&args.runtime_dir, 0o755)?;
    create_dir(&args.state_dir, 0o700)?;
    let _lock = crate::ops::InstanceLock::acquire(&args.runtime_dir)?;
    let control_path = args.runtime_dir.join(control::SOCKET_NAME);
    let listener = control::server::bind(&control_path)?;

    let (tx, rx) = mpsc::unbounded_channel();
    let (call_tx, call_rx) = mpsc::unbounded_channel();
    let kinds = service_kinds(&args, &config);
    let manager = Manager::new(config, source, kinds, tx.clone(), args.runtime_dir.clone())
        .context("starting the namespace thread")?;
    let shutdown = CancellationToken::new();
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
    shutdown.cancel();
    manager_task.await.context("manager task")??;
    let _ = std::fs::remove_file(&control_path);
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

/// nsauxctl — control a running nsauxd.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct CtlArgs {
    /// The daemon's runtime directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_RUNTIME_DIR, global = true)]
    pub runtime_dir: PathBuf,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `nsauxctl` commands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Daemon summary.
    Status,
    /// Namespaces.
    #[command(subcommand)]
    Ns(NsCommand),
    /// Track a namespace that has no file in a watched directory.
    Attach(AttachArgs),
    /// Stop tracking an attached namespace.
    Detach {
        /// Its name.
        name: String,
    },
    /// Re-read the daemon's configuration (like SIGHUP, but reports errors).
    Reload,
    /// Portmapper tables.
    #[command(subcommand)]
    Rpc(RpcCommand),
    /// DNS resolver endpoints.
    #[command(subcommand)]
    Dns(DnsCommand),
    /// NTP service.
    #[command(subcommand)]
    Ntp(NtpCommand),
    /// Check a configuration file offline.
    Validate {
        /// The file.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// `nsauxctl ns` subcommands.
#[derive(Debug, Subcommand)]
pub enum NsCommand {
    /// List tracked namespaces: name, id, source, services, since.
    List,
}

/// Restricts a service command to one namespace.
#[derive(Debug, Args)]
pub struct NsFilter {
    /// Only this namespace (default: all where the service runs).
    #[arg(long = "ns", value_name = "NAME")]
    pub ns: Option<String>,
}

/// `nsauxctl rpc` subcommands.
#[derive(Debug, Subcommand)]
pub enum RpcCommand {
    /// Registration tables: NS, prog/vers, netid, address, owner.
    List(NsFilter),
    /// Per-namespace statistics (what `rpcinfo -m` shows: calls per procedure, SET/UNSET,
    /// lookups, remote calls).
    Stats(NsFilter),
    /// Remove registrations (operator override of owner checks).
    Unset {
        /// Namespace.
        #[arg(long = "ns", value_name = "NAME")]
        ns: String,
        /// Program number.
        prog: u32,
        /// Version.
        vers: u32,
        /// Only this netid (default: all).
        netid: Option<String>,
    },
}

/// `nsauxctl dns` subcommands.
#[derive(Debug, Subcommand)]
pub enum DnsCommand {
    /// Per-namespace statistics.
    Stats(NsFilter),
    /// Empty the cache.
    Flush(NsFilter),
    /// Add a local record (answered authoritatively, forward and reverse).
    Add {
        /// Namespace.
        #[arg(long = "ns", value_name = "NAME")]
        ns: String,
        /// Host name.
        name: String,
        /// Address.
        addr: std::net::IpAddr,
    },
    /// Remove a local record added at run time.
    Remove {
        /// Namespace.
        #[arg(long = "ns", value_name = "NAME")]
        ns: String,
        /// Host name.
        name: String,
        /// Address.
        addr: std::net::IpAddr,
    },
}

/// `nsauxctl ntp` subcommands.
#[derive(Debug, Subcommand)]
pub enum NtpCommand {
    /// Clock status served and where stratum/refid come from.
    Status(NsFilter),
    /// Per-namespace statistics.
    Stats(NsFilter),
}

fn service_request(service: &str, action: &str, ns: Option<String>, args: Value) -> Request {
    Request::Service {
        service: service.into(),
        action: action.into(),
        ns,
        args,
    }
}

/// `nsauxctl attach` arguments.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Name to give it.
    pub name: String,
    /// Follow this process's namespace; it is detached when the process exits.
    #[arg(long, conflicts_with = "path", required_unless_present = "path")]
    pub pid: Option<u32>,
    /// Open this namespace file (e.g. a container runtime's).
    #[arg(long)]
    pub path: Option<PathBuf>,
}

/// `nsauxctl`'s main.
pub fn ctl_main() -> ExitCode {
    let args = CtlArgs::parse();
    match run_ctl(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("nsauxctl: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run_ctl(args: &CtlArgs) -> anyhow::Result<()> {
    let req = match &args.command {
        CtlCommand::Validate { config } => {
            let c = Config::load(config, false)?;
            println!(
                "{}: ok ({} namespace dirs, host namespace {})",
                config.display(),
                c.netns_dirs.len(),
                if c.host_netns { "served" } else { "not served" }
            );
            return Ok(());
        }
        CtlCommand::Status => Request::Status,
        CtlCommand::Ns(NsCommand::List) => Request::NsList,
        CtlCommand::Attach(a) => Request::Attach {
            name: a.name.clone(),
            pid: a.pid,
            path: a.path.clone(),
        },
        CtlCommand::Detach { name } => Request::Detach { name: name.clone() },
        CtlCommand::Reload => Request::Reload,
        CtlCommand::Rpc(RpcCommand::List(f)) => {
            service_request("rpcbind", "list", f.ns.clone(), Value::Null)
        }
        CtlCommand::Rpc(RpcCommand::Stats(f)) => {
            service_request("rpcbind", "stats", f.ns.clone(), Value::Null)
        }
        CtlCommand::Rpc(RpcCommand::Unset {
            ns,
            prog,
            vers,
            netid,
        }) => service_request(
            "rpcbind",
            "unset",
            Some(ns.clone()),
            serde_json::json!({ "prog": prog, "vers": vers, "netid": netid }),
        ),
        CtlCommand::Dns(DnsCommand::Stats(f)) => {
            service_request("dns", "stats", f.ns.clone(), Value::Null)
        }
        CtlCommand::Dns(DnsCommand::Flush(f)) => {
            service_request("dns", "flush", f.ns.clone(), Value::Null)
        }
        CtlCommand::Dns(DnsCommand::Add { ns, name, addr }) => service_request(
            "dns",
            "add",
            Some(ns.clone()),
            serde_json::json!({ "name": name, "addr": addr }),
        ),
        CtlCommand::Dns(DnsCommand::Remove { ns, name, addr }) => service_request(
            "dns",
            "remove",
            Some(ns.clone()),
            serde_json::json!({ "name": name, "addr": addr }),
        ),
        CtlCommand::Ntp(NtpCommand::Status(f)) => {
            service_request("ntp", "status", f.ns.clone(), Value::Null)
        }
        CtlCommand::Ntp(NtpCommand::Stats(f)) => {
            service_request("ntp", "stats", f.ns.clone(), Value::Null)
        }
    };
    let resp = control::client::call(&args.runtime_dir, &req)?;
    if !resp.ok {
        anyhow::bail!("{}", resp.error.unwrap_or_else(|| "failed".into()));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&resp.data)?);
        return Ok(());
    }
    match &args.command {
        CtlCommand::Ns(NsCommand::List) => print_ns_table(&resp.data),
        CtlCommand::Status => {
            if let Value::Object(m) = &resp.data {
                for (k, v) in m {
                    println!("{k:<18} {}", plain(v));
                }
            }
        }
        CtlCommand::Rpc(RpcCommand::List(_)) => print_rpc_table(&resp.data),
        CtlCommand::Rpc(_) | CtlCommand::Dns(_) | CtlCommand::Ntp(_) => {
            print_per_namespace(&resp.data)
        }
        _ => println!("{}", plain(&resp.data)),
    }
    Ok(())
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_ns_table(data: &Value) {
    let rows: Vec<[String; 5]> = data
        .as_array()
        .map(|a| {
            a.iter()
                .map(|ns| {
                    let services = ns["services"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k}:{}", v["state"].as_str().unwrap_or("?")))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "-".into());
                    [
                        plain(&ns["name"]),
                        plain(&ns["id"]),
                        plain(&ns["source"]),
                        services,
                        since(&ns["since"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let head = ["NAME", "ID", "SOURCE", "SERVICES", "SINCE"].map(String::from);
    print_columns(&head, &rows);
}

/// Prints a header and rows as left-aligned columns two spaces apart.
fn print_columns<const N: usize>(head: &[String; N], rows: &[[String; N]]) {
    let mut w = [0usize; N];
    for r in std::iter::once(head).chain(rows) {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    for r in std::iter::once(head).chain(rows) {
        let cells: Vec<String> = r.iter().zip(w).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

/// Prints `rpc list` as one table: NS, PROG/VERS, NETID, ADDRESS, OWNER.
fn print_rpc_table(data: &Value) {
    let mut rows: Vec<[String; 5]> = Vec::new();
    for (ns, entries) in data.as_object().into_iter().flatten() {
        for e in entries.as_array().into_iter().flatten() {
            rows.push([
                ns.clone(),
                format!("{}/{}", plain(&e["prog"]), plain(&e["vers"])),
                plain(&e["netid"]),
                plain(&e["address"]),
                plain(&e["owner"]),
            ]);
        }
    }
    let head = ["NS", "PROG/VERS", "NETID", "ADDRESS", "OWNER"].map(String::from);
    print_columns(&head, &rows);
}

/// Prints `{ns: data}` as one block per namespace; tables (arrays of objects) as columns.
fn print_per_namespace(data: &Value) {
    let Some(map) = data.as_object() else {
        println!("{}", plain(data));
        return;
    };
    for (ns, v) in map {
        println!("[{ns}]");
        match v {
            Value::Array(rows) => {
                let cols: Vec<String> = rows
                    .first()
                    .and_then(Value::as_object)
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                if cols.is_empty() {
                    for r in rows {
                        println!("  {}", plain(r));
                    }
                    continue;
                }
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| cols.iter().map(|c| plain(&r[c.as_str()])).collect())
                    .collect();
                let widths: Vec<usize> = cols
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        cells
                            .iter()
                            .map(|r| r[i].len())
                            .chain([c.len()])
                            .max()
                            .unwrap_or(0)
                    })
                    .collect();
                let line = |r: &[String]| {
                    let parts: Vec<String> = r
                        .iter()
                        .zip(&widths)
                        .map(|(c, w)| format!("{c:<w$}"))
                        .collect();
                    println!("  {}", parts.join("  ").trim_end());
                };
                line(&cols.iter().map(|c| c.to_uppercase()).collect::<Vec<_>>());
                for r in &cells {
                    line(r);
                }
            }
            Value::Object(o) => {
                for (k, v) in o {
                    println!("  {k:<24} {}", plain(v));
                }
            }
            other => println!("  {}", plain(other)),
        }
    }
}

fn since(v: &Value) -> String {
    let Some(secs) = v.as_u64() else {
        return "-".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let age = now.saturating_sub(secs);
    match age {
        0..60 => format!("{age}s ago"),
        60..3600 => format!("{}m ago", age / 60),
        3600..86400 => format!("{}h ago", age / 3600),
        _ => format!("{}d ago", age / 86400),
    }
}
