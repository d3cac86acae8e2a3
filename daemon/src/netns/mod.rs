//! Network namespaces: who they are, where they come from, and how sockets get into them.
//!
//! * [`NetnsId`] — the kernel's namespace cookie, the only identity nsaux trusts.
//! * [`Source`] — how nsaux learned of a namespace (directory, attach, host).
//! * [`factory::SocketFactory`] — creates sockets *inside* a namespace on a dedicated thread.
//! * [`tracker::NetnsTracker`] — watches namespace directories and reports arrivals/departures.

pub(crate) mod caller;
pub(crate) mod factory;
pub(crate) mod handle;
pub(crate) mod tracker;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// Identity of a network namespace: its kernel cookie (`SO_NETNS_COOKIE`).
///
/// Unlike nsfs inode numbers, a cookie is never reused within a boot, so state keyed by it can
/// never leak into a later namespace that happens to reuse a name or an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub(crate) struct NetnsId(pub u64);

impl fmt::Display for NetnsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How nsaux learned of a namespace; also the key that a departure is matched against.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Source {
    /// The daemon's own namespace.
    Host,
    /// A bind-mounted namespace file in a watched directory (`/run/netns/NAME`).
    Dir {
        /// The watched directory.
        dir: PathBuf,
        /// The file name in it, which is also the namespace's label.
        name: String,
    },
    /// Attached through the control socket by process id; leaves when the process exits.
    Pid {
        /// The label given at attach time.
        name: String,
        /// The process whose namespace it is.
        pid: u32,
    },
    /// Attached through the control socket by namespace file path; leaves on detach only.
    Path {
        /// The label given at attach time.
        name: String,
        /// The namespace file.
        path: PathBuf,
    },
}

impl Source {
    /// The label this source gives the namespace (used for config matching and display).
    pub(crate) fn name(&self) -> &str {
        match self {
            Self::Host => "host",
            Self::Dir { name, .. } | Self::Pid { name, .. } | Self::Path { name, .. } => name,
        }
    }

    /// Whether this source was added through `nsauxctl attach`.
    pub(crate) fn is_attached(&self) -> bool {
        matches!(self, Self::Pid { .. } | Self::Path { .. })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host => f.write_str("host"),
            Self::Dir { dir, .. } => write!(f, "dir:{}", dir.display()),
            Self::Pid { pid, .. } => write!(f, "pid:{pid}"),
            Self::Path { path, .. } => write!(f, "path:{}", path.display()),
        }
    }
}
