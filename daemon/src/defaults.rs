//! Default paths, shared by `nsauxd` and `nsauxctl` so that both find the same files without
//! flags.

/// Default configuration file; its absence means built-in defaults.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/nsaux/nsaux.toml";
/// Default runtime directory (lock, control socket).
pub(crate) const DEFAULT_RUNTIME_DIR: &str = "/run/nsaux";
/// Default state directory (durable journals).
pub(crate) const DEFAULT_STATE_DIR: &str = "/var/lib/nsaux";
