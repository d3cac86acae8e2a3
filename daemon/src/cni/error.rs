//! The CNI error result (`{cniVersion, code, msg, details}` on stdout, non-zero exit), with
//! the spec's well-known codes, so a runtime can tell a retryable failure from a broken config.

use serde_json::json;

/// A CNI error: printed as the spec's error JSON.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub(crate) struct CniError {
    /// The spec's code (1–99 well-known, 100+ this plugin's).
    pub(crate) code: u32,
    /// One line for the user.
    pub(crate) msg: String,
    /// More context.
    pub(crate) details: String,
}

/// Incompatible CNI version.
pub(crate) const INCOMPATIBLE_VERSION: u32 = 1;
/// Invalid necessary environment variables.
pub(crate) const INVALID_ENV: u32 = 4;
/// Failed to decode content.
pub(crate) const DECODE: u32 = 6;
/// Invalid network config.
pub(crate) const INVALID_CONFIG: u32 = 7;
/// Try again later (the daemon is down).
pub(crate) const TRY_AGAIN: u32 = 11;
/// This plugin's: the daemon refused the request.
pub(crate) const REFUSED: u32 = 100;
/// This plugin's: CHECK found the namespace not served.
pub(crate) const NOT_SERVED: u32 = 101;

impl CniError {
    /// An error with `code` and a one-line message.
    pub(crate) fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// The same with details.
    pub(crate) fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The spec's error JSON for `version` (the config's, else 1.0.0).
    pub(crate) fn to_json(&self, version: &str) -> serde_json::Value {
        let mut v = json!({ "cniVersion": version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}
