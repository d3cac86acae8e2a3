//! Who is at the other end of an AF_LOCAL connection, as a pidfd (`SO_PEERPIDFD`).
//!
//! Why: `SO_PEERCRED` gives a pid, and a pid may be recycled between the connection and the
//! daemon's look at `/proc/PID`; a pidfd names one process for good.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// `SO_PEERPIDFD` from `<asm-generic/socket.h>` (Linux ≥ 6.5; the same on every architecture
/// that uses the generic numbers, x86_64 included).
const SO_PEERPIDFD: libc::c_int = 77;

/// A pidfd for the process that connected `sock`. `ENOPROTOOPT` means the kernel is older
/// than 6.5 (callers fall back to `SO_PEERCRED`); other errors mean the peer is gone.
pub(crate) fn peer_pidfd(sock: &impl AsFd) -> io::Result<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket fd, a pointer to a live c_int and its exact length; the kernel
    // writes at most `len` bytes and, on success, hands us a new fd that nobody else owns.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&raw mut fd).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if fd < 0 {
        return Err(io::Error::other("SO_PEERPIDFD returned no fd"));
    }
    // SAFETY: the kernel just installed this fd for us; we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
