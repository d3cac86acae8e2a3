//! `nsauxctl`: the command line that turns subcommands into control requests and prints the
//! daemon's answers (as tables, or JSON with `--json`). The binary only calls [`ctl_main`].

mod metrics;
mod oci_hook;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use self::table::{plain, print_ns_table, print_per_namespace, print_rpc_table};
use crate::config::Config;
use crate::control::{self, Request};
use crate::defaults::{DEFAULT_CONFIG, DEFAULT_RUNTIME_DIR};

/// nsauxctl — control a running nsauxd.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
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
        /// The file.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
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
            let c = Config::load(config, false)?;
            println!(
                "{}: ok ({} namespace dirs, host namespace {})",
                config.display(),
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
