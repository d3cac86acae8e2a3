//! `[hooks]`: how the runtime hooks (`nsauxctl oci-hook`, `nsaux-cni`) behave. Read by those
//! hooks from the same file as the daemon, because the case they configure is the daemon being
//! down. Daemon-wide: not overridable per namespace.

use serde::Deserialize;

/// `[hooks]` section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HooksConfig {
    /// What a hook does when it cannot reach the daemon at container start.
    pub(crate) on_daemon_down: OnDaemonDown,
}

/// Whether a container starts without nsaux when the daemon is down: an operator choosing
/// availability says `warn`, one whose containers need the portmapper says `fail`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnDaemonDown {
    /// The hook exits non-zero: the runtime refuses to start the container.
    #[default]
    Fail,
    /// The hook prints one line on stderr and exits 0: the container starts unserved.
    Warn,
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    use super::OnDaemonDown;

    #[test]
    fn on_daemon_down_takes_fail_or_warn_only() {
        let c = Config::from_toml("[hooks]\non_daemon_down = \"warn\"\n", None);
        assert_eq!(
            c.map(|c| c.hooks.on_daemon_down).ok(),
            Some(OnDaemonDown::Warn)
        );
        assert!(Config::from_toml("[hooks]\non_daemon_down = \"ignore\"\n", None).is_err());
        assert!(Config::from_toml("[hooks]\nnope = 1\n", None).is_err());
        assert_eq!(Config::builtin().hooks.on_daemon_down, OnDaemonDown::Fail);
    }
}
