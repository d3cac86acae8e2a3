//! The control socket: `RUNTIME_DIR/control.sock`, mode 0600.
//!
//! Protocol: one JSON object per line each way. A request is `{"cmd": NAME, ...args}`; the reply
//! is `{"ok": true, "data": ...}` or `{"ok": false, "error": "one-line reason"}`. Lines are capped
//! at 1 MiB, a connection may stay idle 10 s, and at most 16 are served at once.
//!
//! | cmd       | args                                   | data                                  |
//! |-----------|----------------------------------------|---------------------------------------|
//! | `status`  | —                                      | daemon summary                        |
//! | `ns_list` | —                                      | array of namespaces with services     |
//! | `attach`  | `name`, `pid` or `path`, `key`?, `origin`? | `{name, id, source}`              |
//! | `detach`  | `name` or `key`                        | `{detached}`                          |
//! | `reload`  | —                                      | `{reloaded: true}`                    |
//! | `service` | `service`, `action`, `ns`?, `args`?    | `{NS_NAME: result, ...}`              |

pub(crate) mod client;
pub(crate) mod server;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;

/// Longest request line the daemon accepts (requests come from any local root process).
pub(crate) const MAX_LINE: usize = 1 << 20;

/// Longest reply line `nsauxctl` reads. Replies come from the daemon itself and grow with the
/// namespaces: `ns list` with all services on is about 1 KiB per namespace, so the request
/// cap (1 MiB) failed near 1,000 namespaces; this leaves room for 100,000 and more.
pub(crate) const MAX_REPLY: usize = 1 << 28;

/// The socket's file name inside the runtime directory.
pub(crate) const SOCKET_NAME: &str = "control.sock";

/// A control request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Request {
    /// Daemon summary.
    Status,
    /// Every tracked namespace.
    NsList,
    /// Namespaces counted by source kind and state, for a metrics scrape: far less work per
    /// namespace than [`Request::NsList`], whose JSON a scrape would only count.
    NsCounts,
    /// Track a namespace that has no bind mount (container runtimes).
    Attach {
        /// Label for it.
        name: String,
        /// Follow this process's namespace; detach when it exits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        /// Or open this namespace file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathBuf>,
        /// A runtime's own id for the attachment (`oci:ID`, `cni:...`): attaching the same key
        /// again is a no-op, the name is made unique instead of refused, and `detach` by key
        /// works after the runtime forgot the name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// Who attached (`ctl`, `hook`, `cni`), remembered across restarts for `ns list`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
    },
    /// Stop tracking an attached namespace.
    Detach {
        /// Its label.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        name: String,
        /// Or the key it was attached with; an unknown key is not an error (hooks retry).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// Re-read the configuration file.
    Reload,
    /// A service-specific action, run on every namespace where the service runs (or on `ns`).
    Service {
        /// Service name (`rpcbind`, `dns`, `ntp`, `ident`).
        service: String,
        /// Action name (`list`, `flush`, `stats`, ...).
        action: String,
        /// Only this namespace.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ns: Option<String>,
        /// Action arguments.
        #[serde(default, skip_serializing_if = "Value::is_null")]
        args: Value,
    },
}

/// A request read from the control socket, on its way to whoever owns the daemon's state, with
/// the channel its answer goes back on. The server only hands these over an `mpsc` channel and
/// knows nothing of who answers them, so the control layer depends on nothing above it.
#[derive(Debug)]
pub(crate) struct Call {
    /// What the client asked.
    pub(crate) request: Request,
    /// Where the answer goes; a dropped sender tells the client the daemon is shutting down.
    pub(crate) reply: oneshot::Sender<Response>,
}

/// A control reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Response {
    /// Success.
    pub(crate) ok: bool,
    /// Result data on success.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub(crate) data: Value,
    /// One-line reason on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl Response {
    /// A success carrying `data`.
    pub(crate) fn ok(data: Value) -> Self {
        Self {
            ok: true,
            data,
            error: None,
        }
    }

    /// A failure with a one-line reason.
    pub(crate) fn err(reason: impl Into<String>) -> Self {
        Self {
            ok: false,
            data: Value::Null,
            error: Some(reason.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let r: Request =
            serde_json::from_str(r#"{"cmd":"attach","name":"a","pid":7}"#).expect("parse");
        assert_eq!(
            r,
            Request::Attach {
                name: "a".into(),
                pid: Some(7),
                path: None,
                key: None,
                origin: None,
            }
        );
        assert_eq!(
            serde_json::to_string(&Request::NsList).expect("ser"),
            r#"{"cmd":"ns_list"}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"nope"}"#).is_err());
    }
}
