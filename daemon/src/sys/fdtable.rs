//! Growing the fd table once, up front.
//!
//! The kernel grows a process's fd table by doubling, and when the table is shared by several
//! threads (always, once tokio runs) it waits for an RCU grace period while doing so: several
//! milliseconds, paid by whichever namespace happens to cross 256, 512, 1024 … fds. Growing it
//! once at start, while the process is single-threaded, costs no wait and only kernel memory
//! (8 bytes per slot); the table never shrinks.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Makes the fd table at least `slots` entries big (bounded by the open-file limit).
pub(crate) fn reserve(slots: u32) -> io::Result<()> {
    let Some(top) = slots.checked_sub(1) else {
        return Ok(());
    };
    let target = libc::c_int::try_from(top).unwrap_or(libc::c_int::MAX);
    // Any open fd will do as the source (stdin may be closed under a supervisor).
    let source = std::fs::File::open("/dev/null")?;
    // SAFETY: F_DUPFD_CLOEXEC duplicates a valid fd onto the lowest free number ≥ target; it
    // touches no memory of ours.
    let fd = unsafe { libc::fcntl(source.as_raw_fd(), libc::F_DUPFD_CLOEXEC, target) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd; nobody else owns it. Dropping closes it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}
