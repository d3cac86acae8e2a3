//! What the runtime hooks (`nsauxctl oci-hook`, `nsaux-cni`) share: asking the daemon to attach
//! or detach under a runtime's key, telling "the daemon is down" apart from "the daemon said
//! no", the `[hooks]` policy for the former, and names made from container ids.

use std::io::Read as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::{Config, OnDaemonDown};
use crate::control::{self, Request};

/// Longest hook input read (an OCI state or a CNI config with its `prevResult`).
pub(crate) const MAX_INPUT: u64 = 1 << 20;

/// Why a hook's request did not succeed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HookError {
    /// Nobody listens on the control socket: the `[hooks] on_daemon_down` case.
    #[error("nsauxd is not running (no control socket at {0})")]
    DaemonDown(PathBuf),
    /// The daemon answered with a refusal, or the exchange broke.
    #[error("{0}")]
    Refused(String),
}

/// Sends `req`; `Ok` carries the reply's data.
pub(crate) fn call(runtime_dir: &Path, req: &Request) -> Result<Value, HookError> {
    let sock = runtime_dir.join(control::SOCKET_NAME);
    // Probe first: a refused or missing socket is "down", anything later is a real failure.
    if UnixStream::connect(&sock).is_err() {
        return Err(HookError::DaemonDown(sock));
    }
    let resp = control::client::call(runtime_dir, req)
        .map_err(|e| HookError::Refused(format!("{e:#}")))?;
    if resp.ok {
        Ok(resp.data)
    } else {
        Err(HookError::Refused(
            resp.error.unwrap_or_else(|| "failed".into()),
        ))
    }
}

/// The attach request a runtime hook sends.
pub(crate) fn attach_request(
    name: String,
    pid: Option<u32>,
    path: Option<PathBuf>,
    key: String,
    origin: &str,
) -> Request {
    Request::Attach {
        name,
        pid,
        path,
        key: Some(key),
        origin: Some(origin.into()),
    }
}

/// The detach request a runtime hook sends (an unknown key is success).
pub(crate) fn detach_request(key: String) -> Request {
    Request::Detach {
        name: String::new(),
        key: Some(key),
    }
}

/// The `[hooks] on_daemon_down` policy of the configuration file at `path` (a missing file
/// means the default, `fail`).
pub(crate) fn policy(path: &Path) -> anyhow::Result<OnDaemonDown> {
    Ok(Config::load(path, true)?.hooks.on_daemon_down)
}

/// A label from a container id: ids are usually 64 hex digits, so the first 12 (what `docker
/// ps` shows); `/` and control characters, which a label cannot hold, become `_`. The daemon
/// makes it unique.
pub(crate) fn short_name(id: &str) -> String {
    id.chars()
        .take(12)
        .map(|c| if c == '/' || c.is_control() { '_' } else { c })
        .collect()
}

/// Reads a hook's stdin, at most [`MAX_INPUT`] bytes.
pub(crate) fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin().take(MAX_INPUT + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_INPUT {
        anyhow::bail!("input longer than {MAX_INPUT} bytes");
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_ids_are_short_and_hold_no_slash() {
        assert_eq!(short_name(&"ab".repeat(32)), "abababababab");
        assert_eq!(short_name("a/b"), "a_b");
        assert_eq!(short_name("c1"), "c1");
    }
}
