//! `nsauxctl oci-hook`: the OCI runtime hook (runtime-spec `hooks`, and oci-hooks(5) for podman
//! and CRI-O). The runtime writes the container's `State` on stdin; at `createRuntime`,
//! `prestart` or `poststart` (status `creating`, `created`, `running`) the container's network
//! namespace is attached by pid under the annotation `io.nsaux.name` or the shortened id, keyed
//! `oci:ID`; at `poststop` (status `stopped`, no pid) the key is detached. Both are idempotent,
//! so a runtime that runs a hook twice, or a poststop after the pid watch already detached,
//! succeeds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::config::OnDaemonDown;
use crate::defaults::DEFAULT_CONFIG;
use crate::hooks::{self, HookError};

/// The annotation that names the container's namespace.
pub(crate) const NAME_ANNOTATION: &str = "io.nsaux.name";

/// `nsauxctl oci-hook` arguments.
#[derive(Debug, Args)]
pub(crate) struct OciHookArgs {
    /// The hook stage (default: from the state's `status`: `stopped` detaches, others attach).
    #[arg(long, value_enum)]
    pub(crate) stage: Option<Stage>,
    /// nsaux's configuration file, for `[hooks] on_daemon_down`.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub(crate) config: PathBuf,
}

/// OCI hook stages this hook acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Stage {
    /// Namespaces exist, the container has not started: attach.
    CreateRuntime,
    /// Older name of the same point: attach.
    Prestart,
    /// After start (late but harmless): attach.
    Poststart,
    /// The container is gone: detach.
    Poststop,
}

/// The parts of the runtime-spec `State` the hook reads.
#[derive(Debug, Deserialize)]
struct State {
    id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    pid: Option<i64>,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// Runs the hook; `Ok` means exit 0 (including a daemon that is down under `warn`).
pub(crate) fn run(runtime_dir: &Path, args: &OciHookArgs) -> anyhow::Result<()> {
    let input = hooks::read_stdin()?;
    let state: State = serde_json::from_slice(&input)
        .map_err(|e| anyhow::anyhow!("stdin is not an OCI state: {e}"))?;
    if state.id.is_empty() {
        anyhow::bail!("the OCI state has no container id");
    }
    let stage = args.stage.unwrap_or(if state.status == "stopped" {
        Stage::Poststop
    } else {
        Stage::CreateRuntime
    });
    let key = format!("oci:{}", state.id);
    if stage == Stage::Poststop {
        return match hooks::call(runtime_dir, &hooks::detach_request(key)) {
            // Nothing is attached while the daemon is down, and a remembered attachment of a
            // dead process is dropped at its next start.
            Ok(_) | Err(HookError::DaemonDown(_)) => Ok(()),
            Err(e) => Err(e.into()),
        };
    }
    let pid = state
        .pid
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| anyhow::anyhow!("container {} has no pid in its state", state.id))?;
    let name = state
        .annotations
        .get(NAME_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| hooks::short_name(&state.id));
    let req = hooks::attach_request(name, Some(pid), None, key, "hook");
    match hooks::call(runtime_dir, &req) {
        Ok(_) => Ok(()),
        Err(HookError::DaemonDown(sock)) => match hooks::policy(&args.config)? {
            OnDaemonDown::Fail => Err(HookError::DaemonDown(sock).into()),
            OnDaemonDown::Warn => {
                eprintln!(
                    "nsauxctl: warning: {}; container {} starts without nsaux",
                    HookError::DaemonDown(sock),
                    crate::escape::escape(&state.id)
                );
                Ok(())
            }
        },
        Err(e) => Err(e.into()),
    }
}
