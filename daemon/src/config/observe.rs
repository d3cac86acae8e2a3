//! `[observe]`: the observation socket (metrics for an unprivileged exporter) and the
//! operator logs that are opt-in per namespace. Daemon-wide: not overridable per namespace.
//!
//! ```toml
//! [observe]
//! socket = "/run/nsaux/observe.sock"   # default RUNTIME_DIR/observe.sock; "none" disables
//! mode = "0660"                        # octal permission bits of the socket
//! group = "nsaux"                      # group owning the socket (must exist)
//! per_namespace = ["tenant-*"]         # namespaces (name globs) with their own series
//! query_log = ["tenant-*"]             # namespaces whose DNS queries are logged
//! ```

use std::path::PathBuf;

use serde::Deserialize;

/// The `[observe]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ObserveFile {
    socket: Option<PathBuf>,
    mode: Option<String>,
    group: Option<String>,
    per_namespace: Vec<String>,
    query_log: Vec<String>,
}

/// Where and how the observation socket is bound (read at start only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObserveSocket {
    /// Its path.
    pub(crate) path: PathBuf,
    /// Permission bits.
    pub(crate) mode: u32,
    /// Group to give it (`None`: the daemon's own).
    pub(crate) gid: Option<u32>,
}

/// `[observe]` validated: why a separate type, so a bad mode or missing group is reported by
/// `validate` and reload, not found when the socket is bound.
#[derive(Debug, Clone, Default)]
pub(crate) struct ObserveConfig {
    /// The socket path; `None`: `RUNTIME_DIR/observe.sock`; `Some("")` never (see `disabled`).
    pub(crate) socket: Option<PathBuf>,
    /// `socket = "none"`.
    pub(crate) disabled: bool,
    /// Permission bits (default 0660).
    pub(crate) mode: u32,
    /// Group id for the socket.
    pub(crate) gid: Option<u32>,
    /// Namespaces that get per-namespace series.
    pub(crate) per_namespace: Vec<glob::Pattern>,
    /// Namespaces whose DNS queries are logged.
    pub(crate) query_log: Vec<glob::Pattern>,
}

impl ObserveConfig {
    /// The socket to bind, given the daemon's runtime directory (`None`: disabled).
    pub(crate) fn socket(&self, runtime_dir: &std::path::Path) -> Option<ObserveSocket> {
        (!self.disabled).then(|| ObserveSocket {
            path: self
                .socket
                .clone()
                .unwrap_or_else(|| runtime_dir.join("observe.sock")),
            mode: self.mode,
            gid: self.gid,
        })
    }
}

fn globs(key: &str, list: &[String]) -> Result<Vec<glob::Pattern>, String> {
    list.iter()
        .map(|p| glob::Pattern::new(p).map_err(|e| format!("observe.{key}: bad glob {p:?}: {e}")))
        .collect()
}

/// Checks and resolves the table (group names are looked up now).
pub(super) fn resolve(f: ObserveFile) -> Result<ObserveConfig, String> {
    let mode = match f.mode.as_deref() {
        None => 0o660,
        Some(m) => match u32::from_str_radix(m.trim_start_matches("0o"), 8) {
            Ok(v) if v <= 0o777 && v & 0o600 == 0o600 => v,
            _ => {
                return Err(format!(
                    "observe.mode: {m:?} is not an octal mode from \"0600\" to \"0777\" with owner read and write"
                ));
            }
        },
    };
    let gid = match f.group.as_deref() {
        None => None,
        Some(g) => match nix::unistd::Group::from_name(g) {
            Ok(Some(gr)) => Some(gr.gid.as_raw()),
            Ok(None) => {
                return Err(format!(
                    "observe.group: no group named {g:?} (create it, e.g. `groupadd --system {g}`, or remove the key)"
                ));
            }
            Err(e) => return Err(format!("observe.group: cannot look up {g:?}: {e}")),
        },
    };
    let disabled = f.socket.as_ref().is_some_and(|p| p.as_os_str() == "none");
    if let Some(p) = &f.socket
        && !disabled
        && !p.is_absolute()
    {
        return Err(format!(
            "observe.socket: {:?} must be an absolute path (or \"none\")",
            p.display().to_string()
        ));
    }
    Ok(ObserveConfig {
        socket: f.socket.filter(|_| !disabled),
        disabled,
        mode,
        gid,
        per_namespace: globs("per_namespace", &f.per_namespace)?,
        query_log: globs("query_log", &f.query_log)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<ObserveConfig, String> {
        let f: ObserveFile = toml::from_str(t).map_err(|e| e.to_string())?;
        resolve(f)
    }

    #[test]
    fn defaults_and_bad_values() {
        let c = parse("").expect("defaults");
        assert_eq!(c.mode, 0o660);
        assert!(c.gid.is_none() && !c.disabled);
        assert!(parse("mode = \"0640\"").is_ok());
        assert!(parse("mode = \"0999\"").is_err());
        assert!(parse("mode = \"0060\"").is_err());
        let e = parse("group = \"no-such-group-xyz\"").expect_err("missing group");
        assert!(e.contains("no group named"), "{e}");
        assert_eq!(parse("group = \"root\"").expect("root").gid, Some(0));
        assert!(parse("socket = \"relative.sock\"").is_err());
        assert!(parse("socket = \"none\"").expect("none").disabled);
        assert!(parse("per_namespace = [\"[\"]").is_err());
        assert!(parse("bogus = 1").is_err());
    }
}
