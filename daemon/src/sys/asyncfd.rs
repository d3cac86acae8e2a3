//! Registering raw fds with the tokio reactor.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sys::inotify::Inotify;
use tokio::io::unix::AsyncFd;

/// An inotify instance that the reactor can poll.
#[derive(Debug)]
pub(crate) struct InotifyFd(pub(crate) Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Registers an owned fd (a pidfd, say) for readiness.
pub(crate) fn owned(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: OwnedFd owns its descriptor: it stays open and unchanged until the AsyncFd drops it.
    unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
}

/// Registers the mount table (`/proc/self/mountinfo`) for priority readiness: the kernel
/// signals `POLLPRI` on it whenever a mount is added or removed, which is how the namespace
/// tracker sees a bind mount that no inotify event announces.
pub(crate) fn mount_table() -> io::Result<AsyncFd<std::fs::File>> {
    let file = std::fs::File::open("/proc/self/mountinfo")?;
    // SAFETY: the File owns its descriptor (closed on drop only), so it stays valid and the
    // same for as long as the AsyncFd holds it.
    unsafe { AsyncFd::register_with_interest(file, tokio::io::Interest::PRIORITY) }
        .map_err(io::Error::from)
}

/// Registers an inotify instance for readiness.
pub(crate) fn inotify(i: Inotify) -> io::Result<AsyncFd<InotifyFd>> {
    // SAFETY: Inotify owns its descriptor (closed on drop only), so it stays valid and the same
    // for as long as the AsyncFd holds it.
    unsafe { AsyncFd::register(InotifyFd(i)) }.map_err(io::Error::from)
}
