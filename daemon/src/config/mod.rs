//! Configuration: one TOML file, every field defaulted, so the daemon runs with no file at all.
//!
//! Layout of the file:
//! ```toml
//! host_netns = true              # also serve the daemon's own namespace, labelled "host"
//! netns_dirs = ["/run/netns"]    # directories of namespace files to follow
//!
//! [ident]                        # built-in diagnostic responder (off by default)
//! enabled = false
//!
//! [ntp]                          # NTP server in every namespace (on by default)
//! local_stratum = 10             # serve the host clock even when the kernel is unsynchronised
//!
//! [[netns]]                      # per-namespace overrides, matched by name glob, in order
//! match = "vs-*"
//! ident = { enabled = true }
//! ```
//! Service sections (`[ident]`, …) may be overridden per namespace; the daemon-wide keys may not.
//! The effective service configuration of a namespace is the base sections with every matching
//! override deep-merged on top, in file order.

mod dns;
mod explain;
mod hooks;
mod limits;
mod observe;
mod services;
mod slots;

pub(crate) use dns::{DnsConfig, UpstreamAddr};
pub(crate) use hooks::{HooksConfig, OnDaemonDown};
pub(crate) use observe::{ObserveConfig, ObserveSocket};
pub(crate) use services::{IdentConfig, NtpConfig, RpcbindConfig, ServicesConfig};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

/// Why a configuration was rejected. Every variant names the file and, where it can, the field.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or a field has a wrong name, type or value.
    #[error("{path}: {message}")]
    Invalid {
        /// The file (or `<inline>`).
        path: String,
        /// What is wrong, naming the field.
        message: String,
    },
}

/// The daemon-wide keys, plus the raw pieces needed to build per-namespace views.
/// Unknown top-level keys land in `_services` and are rejected there by `ServicesConfig`.
#[derive(Debug, Deserialize)]
struct FileConfig {
    #[serde(default = "default_host_netns")]
    host_netns: bool,
    #[serde(default = "default_netns_dirs")]
    netns_dirs: Vec<PathBuf>,
    #[serde(default = "default_worker_threads")]
    worker_threads: usize,
    #[serde(default = "default_receive_coalesce_us")]
    receive_coalesce_us: u64,
    #[serde(default = "default_quiet_lane_cpu_percent")]
    quiet_lane_cpu_percent: u64,
    #[serde(default)]
    netns: Vec<toml::Table>,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    observe: observe::ObserveFile,
    #[serde(default)]
    hooks: HooksConfig,
    #[serde(flatten)]
    _services: toml::Table,
}

fn default_host_netns() -> bool {
    true
}

/// One worker: every answer is a few µs of work, and a second worker mostly adds a cross-thread
/// wake-up per datagram (measured: ~1 µs more CPU per answer). Raise it for heavy load. With
/// one, the daemon runs tokio's current-thread scheduler, which skips the multi-thread
/// scheduler's per-wakeup bookkeeping (idle transitions, poll-time statistics with a `powf`
/// and clock reads; ~1 % of the CPU per DNS answer in a profile, below the benchmark's noise).
fn default_worker_threads() -> usize {
    1
}

/// See [`crate::serve::coalesce::DEFAULT_COALESCE_US`].
fn default_receive_coalesce_us() -> u64 {
    crate::serve::coalesce::DEFAULT_COALESCE_US
}

/// See [`crate::serve::pace::DEFAULT_LANE_CPU_PERCENT`].
fn default_quiet_lane_cpu_percent() -> u64 {
    crate::serve::pace::DEFAULT_LANE_CPU_PERCENT
}

fn default_netns_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from("/run/netns")]
}

/// Keys of the file that are daemon-wide (everything else is a service section).
const DAEMON_KEYS: [&str; 9] = [
    "host_netns",
    "netns_dirs",
    "worker_threads",
    "receive_coalesce_us",
    "quiet_lane_cpu_percent",
    "netns",
    "limits",
    "observe",
    "hooks",
];

/// `[limits]`: budgets of the daemon as a whole (per-namespace budgets live in each service's
/// section, overridable per namespace). Daemon-wide: not overridable per namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsConfig {
    /// Ceiling on the bytes all namespaces' tables may hold together (registrations, ...);
    /// 0 = none. At the ceiling growth is refused the way each protocol refuses (see
    /// `crate::budget`), never by stopping.
    pub(crate) memory_max_bytes: u64,
}

#[derive(Debug)]
struct Override {
    pattern: glob::Pattern,
    table: toml::Table,
}

/// A loaded, validated configuration.
#[derive(Debug)]
pub(crate) struct Config {
    /// Serve the daemon's own namespace too.
    pub(crate) host_netns: bool,
    /// Namespace directories to follow.
    pub(crate) netns_dirs: Vec<PathBuf>,
    /// tokio worker threads (read at start only; a reload does not change it).
    pub(crate) worker_threads: usize,
    /// Most a worker under sustained load delays its next wait for datagrams, µs (0: never;
    /// read at start only). See `serve::coalesce`.
    pub(crate) receive_coalesce_us: u64,
    /// The quiet lane's CPU budget, percent of one CPU (0: no lane; read at start only). See
    /// `serve::pace`.
    pub(crate) quiet_lane_cpu_percent: u64,
    /// Daemon-wide budgets.
    pub(crate) limits: LimitsConfig,
    /// The observation socket and opt-in per-namespace series and logs.
    pub(crate) observe: ObserveConfig,
    /// How runtime hooks behave (read by the hooks, not the daemon).
    pub(crate) hooks: HooksConfig,
    /// Where it was read from (`None`: built-in defaults).
    pub(crate) path: Option<PathBuf>,
    base: toml::Table,
    overrides: Vec<Override>,
    /// Effective service configs memoised by the set of overrides that match, so thousands of
    /// namespaces with the same view share one allocation.
    memo: Mutex<HashMap<Vec<usize>, Arc<ServicesConfig>>>,
}

fn deep_merge(base: &mut toml::Table, top: &toml::Table) {
    for (k, v) in top {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => deep_merge(b, t),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

fn try_services(table: &toml::Table) -> Result<ServicesConfig, String> {
    toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| explain::explain(e.message(), false))
}

/// The service sections a file may hold besides [`DAEMON_KEYS`].
const SERVICE_SECTIONS: [&str; 4] = ["ident", "rpcbind", "ntp", "dns"];

/// Most tokio worker threads accepted: beyond it threads only add contention.
const MAX_WORKER_THREADS: usize = 64;

/// Deserializes the service sections; on error, names the failing field by its path
/// (`ident.port: ...`). Every field has a default, so a table holding only the culprit still
/// fails while every other one-key table passes: that is how the culprit is found.
fn services_from(table: &toml::Table) -> Result<ServicesConfig, String> {
    let err = match try_services(table) {
        Ok(c) => return limits::check(&c).map(|()| c),
        Err(e) => e,
    };
    for (section, value) in table {
        if !SERVICE_SECTIONS.contains(&section.as_str()) {
            return Err(explain::explain(
                &format!("unknown field `{section}`"),
                true,
            ));
        }
        let only = |v: toml::Value| toml::Table::from_iter([(section.clone(), v)]);
        let Err(msg) = try_services(&only(value.clone())) else {
            continue;
        };
        if let toml::Value::Table(fields) = value {
            for (k, v) in fields {
                let one = toml::Table::from_iter([(k.clone(), v.clone())]);
                if let Err(m) = try_services(&only(toml::Value::Table(one))) {
                    return Err(format!("{section}.{k}: {m}"));
                }
            }
        }
        return Err(format!("{section}: {msg}"));
    }
    Err(err)
}

impl Config {
    /// The built-in defaults (what runs with no file).
    pub(crate) fn builtin() -> Self {
        // The empty document is valid by construction; map the impossible error to defaults.
        Self::from_toml("", None).unwrap_or_else(|_| Self {
            host_netns: true,
            worker_threads: default_worker_threads(),
            receive_coalesce_us: default_receive_coalesce_us(),
            quiet_lane_cpu_percent: default_quiet_lane_cpu_percent(),
            netns_dirs: default_netns_dirs(),
            limits: LimitsConfig::default(),
            observe: ObserveConfig::default(),
            hooks: HooksConfig::default(),
            path: None,
            base: toml::Table::new(),
            overrides: Vec::new(),
            memo: Mutex::default(),
        })
    }

    /// Reads `path`; a missing file gives the defaults when `missing_ok`.
    pub(crate) fn load(path: &Path, missing_ok: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_toml(&text, Some(path)),
            Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => {
                let mut c = Self::builtin();
                c.path = None;
                Ok(c)
            }
            Err(source) => Err(ConfigError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses and validates a document: every override is checked against the base, so a bad
    /// field is reported at load time, not when some namespace happens to match.
    pub(crate) fn from_toml(text: &str, path: Option<&Path>) -> Result<Self, ConfigError> {
        let shown = path.map_or_else(|| "<inline>".to_owned(), |p| p.display().to_string());
        let invalid = |message: String| ConfigError::Invalid {
            path: shown.clone(),
            message,
        };
        let file: FileConfig =
            toml::from_str(text).map_err(|e| invalid(explain::explain(&e.to_string(), false)))?;
        if !(1..=MAX_WORKER_THREADS).contains(&file.worker_threads) {
            return Err(invalid(format!(
                "worker_threads: {} out of range 1..={MAX_WORKER_THREADS}",
                file.worker_threads
            )));
        }
        let max_coalesce = crate::serve::coalesce::MAX_COALESCE_US;
        if file.receive_coalesce_us > max_coalesce {
            return Err(invalid(format!(
                "receive_coalesce_us: {} out of range 0..={max_coalesce}",
                file.receive_coalesce_us
            )));
        }
        if file.quiet_lane_cpu_percent > 100 {
            return Err(invalid(format!(
                "quiet_lane_cpu_percent: {} out of range 0..=100",
                file.quiet_lane_cpu_percent
            )));
        }
        let mut base: toml::Table = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        for k in DAEMON_KEYS {
            base.remove(k);
        }
        services_from(&base).map_err(invalid)?;
        let observe = observe::resolve(file.observe).map_err(invalid)?;
        let mut overrides = Vec::new();
        for (i, mut table) in file.netns.into_iter().enumerate() {
            let at = format!("[[netns]] #{}", i + 1);
            let pattern = match table.remove("match") {
                Some(toml::Value::String(p)) => glob::Pattern::new(&p)
                    .map_err(|e| invalid(format!("{at}: bad `match` glob {p:?}: {e}")))?,
                Some(_) => return Err(invalid(format!("{at}: `match` must be a string"))),
                None => return Err(invalid(format!("{at}: missing `match` (a name glob)"))),
            };
            let mut merged = base.clone();
            deep_merge(&mut merged, &table);
            services_from(&merged)
                .map_err(|m| invalid(format!("{at} (match = {:?}): {m}", pattern.as_str())))?;
            overrides.push(Override { pattern, table });
        }
        Ok(Self {
            host_netns: file.host_netns,
            worker_threads: file.worker_threads,
            receive_coalesce_us: file.receive_coalesce_us,
            quiet_lane_cpu_percent: file.quiet_lane_cpu_percent,
            netns_dirs: file.netns_dirs,
            limits: file.limits,
            observe,
            hooks: file.hooks,
            path: path.map(Path::to_path_buf),
            base,
            overrides,
            memo: Mutex::default(),
        })
    }

    /// The service sections without any `[[netns]]` override: where daemon-wide service
    /// settings (such as `rpcbind.local_path`) are read.
    pub(crate) fn base_services(&self) -> ServicesConfig {
        services_from(&self.base).unwrap_or_default()
    }

    /// The effective service configuration for the namespace labelled `name`.
    pub(crate) fn for_namespace(&self, name: &str) -> Arc<ServicesConfig> {
        let matched: Vec<usize> = self
            .overrides
            .iter()
            .enumerate()
            .filter(|(_, o)| o.pattern.matches(name))
            .map(|(i, _)| i)
            .collect();
        let mut memo = crate::lock::lock(&self.memo);
        if let Some(c) = memo.get(&matched) {
            return Arc::clone(c);
        }
        let mut merged = self.base.clone();
        for &i in &matched {
            deep_merge(&mut merged, &self.overrides[i].table);
        }
        let cfg = services_from(&merged).unwrap_or_else(|m| {
            tracing::error!(netns = name, error = %m, "combined overrides invalid; using base config");
            services_from(&self.base).unwrap_or_default()
        });
        let cfg = Arc::new(cfg);
        memo.insert(matched, Arc::clone(&cfg));
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_gives_defaults() {
        let c = Config::from_toml("", None).expect("valid");
        assert!(c.host_netns);
        assert_eq!(c.netns_dirs, vec![PathBuf::from("/run/netns")]);
        assert!(!c.for_namespace("x").ident.enabled);
    }

    #[test]
    fn overrides_apply_by_glob_in_order() {
        let c = Config::from_toml(
            "[ident]\nport = 9000\n\n[[netns]]\nmatch = \"vs-*\"\nident = { enabled = true }\n\n\
             [[netns]]\nmatch = \"vs-2\"\nident = { port = 9002 }\n",
            None,
        )
        .expect("valid");
        let a = c.for_namespace("vs-1");
        assert!(a.ident.enabled);
        assert_eq!(a.ident.port, 9000);
        let b = c.for_namespace("vs-2");
        assert!(b.ident.enabled);
        assert_eq!(b.ident.port, 9002);
        let other = c.for_namespace("other");
        assert!(!other.ident.enabled);
        assert!(Arc::ptr_eq(
            &c.for_namespace("vs-1"),
            &c.for_namespace("vs-3")
        ));
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = Config::from_toml("[ident]\nprot = 1\n", None).expect_err("must fail");
        assert!(e.to_string().contains("prot"), "{e}");
        let e = Config::from_toml("bogus = 1\n", None).expect_err("must fail");
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = Config::from_toml("[[netns]]\nmatch = \"a\"\nident = { port = \"x\" }\n", None)
            .expect_err("must fail");
        assert!(e.to_string().contains("[[netns]] #1"), "{e}");
        assert!(e.to_string().contains("ident.port"), "{e}");
        let e = Config::from_toml("[ident]\nport = \"eighty\"\n", None).expect_err("must fail");
        assert!(e.to_string().contains("ident.port: invalid type"), "{e}");
        let e = Config::from_toml("[[netns]]\nident = {}\n", None).expect_err("must fail");
        assert!(e.to_string().contains("match"), "{e}");
    }
}
