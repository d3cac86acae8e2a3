//! Namespace entry and identity.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};

/// `SO_NETNS_COOKIE` from `<asm-generic/socket.h>` (Linux ≥ 5.14); libc does not export it yet.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// Moves the calling thread into the network namespace `fd` refers to.
///
/// Only the calling OS thread changes namespace; callers must return it home before the thread
/// does anything else (see `netns::factory`).
pub(crate) fn enter(fd: BorrowedFd<'_>) -> io::Result<()> {
    setns(fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Opens the calling thread's own network namespace, so a thread can find its way back.
pub(crate) fn open_current() -> io::Result<File> {
    File::open("/proc/thread-self/ns/net")
}

/// Whether an open file is a namespace file (nsfs), i.e. `ip netns add` has finished mounting.
///
/// `ip netns add` creates the file first and bind-mounts the namespace on it afterwards; until
/// then the file is a plain empty file on tmpfs.
pub(crate) fn is_nsfs(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(fstatfs(fd).map_err(io::Error::from)?.filesystem_type() == NSFS_MAGIC)
}

/// The kernel's cookie of the network namespace a socket lives in: unique within a boot.
pub(crate) fn socket_netns_cookie(sock: &impl AsFd) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: we pass a valid fd, a pointer to a live u64 and its exact length; the kernel
    // writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// The cookie of the namespace the calling thread is in, read through a throwaway socket.
pub(crate) fn current_netns_cookie() -> io::Result<u64> {
    let probe = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::DGRAM, None)?;
    socket_netns_cookie(&probe)
}

/// `SIOCGSKNS` from `<linux/sockios.h>` (Linux ≥ 4.9); libc does not export it.
const SIOCGSKNS: libc::c_ulong = 0x894C;

/// The network namespace a socket lives in, as a new (close-on-exec) namespace fd.
///
/// Lets the daemon hold no namespace file for a namespace it has a socket in: the fd is made
/// when a namespace must be entered and closed right after (see `netns::handle`).
pub(crate) fn socket_netns(sock: BorrowedFd<'_>) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: SIOCGSKNS reads no argument and returns a new fd or -1; a valid fd is passed.
    let fd = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGSKNS as _) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just opened this fd for us; nobody else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}
