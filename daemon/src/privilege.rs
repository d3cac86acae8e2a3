//! Least privilege: which capabilities `nsauxd` keeps after start, and why each one. Dropped
//! in `daemon_main` right after the fd limit is raised and before any thread exists (Linux
//! capabilities are per thread; the runtime's and the namespace thread inherit the result).

/// `CAP_NET_BIND_SERVICE`: ports 53, 111 and 123.
const CAP_NET_BIND_SERVICE: u32 = 10;
/// `CAP_NET_ADMIN`: `ioctl(SIOCGSKNS)`, which yields a namespace's fd from one of our sockets
/// inside it (the daemon holds no namespace file once a listener is up; the kernel asks for
/// `CAP_NET_ADMIN` over the namespace's user namespace).
const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_PTRACE`: opening `/proc/PID/ns/net` of a process of another user (rpc.statd runs
/// as `statd`) when routing a path-socket caller or following `attach --pid`. The kernel
/// checks ptrace access (`PTRACE_MODE_READ_FSCREDS`) there; `CAP_DAC_READ_SEARCH` does not
/// pass that check.
const CAP_SYS_PTRACE: u32 = 19;
/// `CAP_SYS_ADMIN`: `setns` into each network namespace.
const CAP_SYS_ADMIN: u32 = 21;

/// The capabilities kept after start (`CAP_SYS_RESOURCE`, used once to raise the fd limit,
/// is not among them). The systemd unit's `CapabilityBoundingSet` names the same ones plus
/// `CAP_SYS_RESOURCE`; `tests/.../operations.rs` runs the daemon with only these.
pub(crate) const KEPT: [u32; 4] = [
    CAP_NET_BIND_SERVICE,
    CAP_NET_ADMIN,
    CAP_SYS_PTRACE,
    CAP_SYS_ADMIN,
];

/// Drops every capability but [`KEPT`] from all sets of this (still single-threaded)
/// process. A daemon that never had them (a test as an ordinary user) loses nothing it had.
pub(crate) fn drop_to_kept() {
    let keep = KEPT.iter().fold(0u64, |m, &c| m | (1 << c));
    match crate::sys::caps::keep_only(keep) {
        Ok(()) => match crate::sys::caps::current() {
            Ok((eff, _)) => {
                tracing::debug!(effective = format!("{eff:#x}"), "capabilities dropped")
            }
            Err(e) => tracing::debug!(error = %e, "capabilities dropped; cannot read them back"),
        },
        Err(e) => tracing::warn!(error = %e, "cannot drop capabilities; running with those it had"),
    }
}
