//! `nsauxctl`: the command line that turns subcommands into control requests and prints the
//! daemon's answers (as tables, or JSON with `--json`). The binary only calls [`ctl_main`].

mod metrics;
mod oci_hook;
mod render;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use self::table::{print_ns_table, print_rpc_table};
use crate::config::Config;
use crate::control::{self, Request};
use crate::defaults::{DEFAULT_CONFIG, DEFAULT_RUNTIME_DIR};

/// nsauxctl — control a running nsauxd.
///
/// Exit status: 0 on success; 1 when the daemon cannot be reached, refuses the request, or
/// nothing matched (an unknown namespace, a registration or record that is not there); 2 on a
/// usage error. A closed output pipe ends it by SIGPIPE (status 141 in the shell).
#[derive(Debug, Parser)]
#[command(name = "nsauxctl", version, long_version = crate::build_info::LONG_VERSION, about, long_about = None)]
pub(crate) struct CtlArgs {
    /// The daemon's runtime directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_RUNTIME_DIR, global = true)]
    pub(crate) runtime_dir: PathBuf,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: CtlCommand,
}

/// `nsauxctl` commands.
#[derive(Debug, Subcommand)]
pub(crate) enum CtlCommand {
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
    /// Print the Prometheus metrics once (from the observation socket), or serve them over
    /// HTTP with --listen as an unprivileged exporter.
    Metrics(metrics::MetricsArgs),
    /// OCI runtime hook: reads the container state on stdin; attaches at createRuntime,
    /// detaches at poststop (see README, "Containers").
    OciHook(oci_hook::OciHookArgs),
    /// Check a configuration file offline.
    Validate {
        /// The file. Without it, what nsauxd would load: /etc/nsaux/nsaux.toml, or the
        /// built-in defaults when that file does not exist.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// `nsauxctl ns` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum NsCommand {
    /// List tracked namespaces: name, id, source, services, since.
    List,
}

/// Restricts a service command to one namespace.
#[derive(Debug, Args)]
pub(crate) struct NsFilter {
    /// Only this namespace (default: all where the service runs).
    #[arg(long = "ns", value_name = "NAME")]
    pub(crate) ns: Option<String>,
}

/// `nsauxctl rpc` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum RpcCommand {
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
pub(crate) enum DnsCommand {
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
pub(crate) enum NtpCommand {
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
pub(crate) struct AttachArgs {
    /// Name to give it.
    pub(crate) name: String,
    /// Follow this process's namespace; it is detached when the process exits.
    #[arg(long, conflicts_with = "path", required_unless_present = "path")]
    pub(crate) pid: Option<u32>,
    /// Open this namespace file (e.g. a container runtime's).
    #[arg(long)]
    pub(crate) path: Option<PathBuf>,
}

/// `nsauxctl`'s main.
pub fn ctl_main() -> ExitCode {
    crate::sys::caps::default_sigpipe();
    let args = CtlArgs::parse();
    match run_ctl(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The daemon's reasons may quote tenant-chosen names: escaped like the tables.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("nsauxctl: {}", crate::escape::escape(&msg));
            ExitCode::FAILURE
        }
    }
}

fn run_ctl(args: &CtlArgs) -> anyhow::Result<()> {
    let req = match &args.command {
        CtlCommand::Validate { config } => {
            // Like nsauxd: an explicit file must exist; the default path may be absent.
            let path = config
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
            let c = Config::load(&path, config.is_none())?;
            let shown = match &c.path {
                Some(p) => p.display().to_string(),
                None => format!("{} absent, built-in defaults", path.display()),
            };
            println!(
                "{shown}: ok ({} namespace dirs, host namespace {})",
                c.netns_dirs.len(),
                if c.host_netns { "served" } else { "not served" }
            );
            return Ok(());
        }
        CtlCommand::Metrics(m) => return metrics::run(&args.runtime_dir, m),
        CtlCommand::OciHook(a) => return oci_hook::run(&args.runtime_dir, a),
        CtlCommand::Status => Request::Status,
        CtlCommand::Ns(NsCommand::List) => Request::NsList,
        CtlCommand::Attach(a) => Request::Attach {
            name: a.name.clone(),
            pid: a.pid,
            path: a.path.clone(),
            key: None,
            origin: None,
        },
        CtlCommand::Detach { name } => Request::Detach {
            name: name.clone(),
            key: None,
        },
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
        if matches!(args.command, CtlCommand::Rpc(RpcCommand::Unset { .. }))
            && resp
                .data
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
                .all(|v| v["removed"] == 0)
        {
            anyhow::bail!("nothing matched");
        }
        return Ok(());
    }
    print_text(&args.command, &resp.data)
}

/// Prints an answer for a person (see `render`); fails when a verb that selects something
/// matched nothing, so that every such case exits non-zero.
fn print_text(command: &CtlCommand, data: &Value) -> anyhow::Result<()> {
    match command {
        CtlCommand::Ns(NsCommand::List) => print_ns_table(data),
        CtlCommand::Status => render::print_value(data, ""),
        CtlCommand::Attach(_) => println!("{}", render::attached(data)),
        CtlCommand::Detach { .. } => println!("{}", render::detached(data)),
        CtlCommand::Reload => println!("configuration reloaded"),
        CtlCommand::Rpc(RpcCommand::List(_)) => print_rpc_table(data),
        CtlCommand::Rpc(RpcCommand::Stats(_)) => render::print_rpc_stats(data),
        CtlCommand::Rpc(RpcCommand::Unset {
            ns,
            prog,
            vers,
            netid,
        }) => {
            let removed: u64 = data
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
                .filter_map(|v| v["removed"].as_u64())
                .sum();
            let what = match netid {
                Some(n) => format!("{prog}/{vers} {n}"),
                None => format!("{prog}/{vers}"),
            };
            if removed == 0 {
                anyhow::bail!(
                    "nothing matched: no registration {what} in namespace {}",
                    crate::escape::escape(ns)
                );
            }
            println!(
                "removed {removed} registration(s) of {what} in namespace {}",
                crate::escape::escape(ns)
            );
        }
        CtlCommand::Dns(DnsCommand::Stats(_)) => render::print_dns_stats(data),
        _ => render::print_per_namespace(data),
    }
    Ok(())
}
