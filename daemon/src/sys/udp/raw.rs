//! The four datagram system calls of the serving path, made with `syscall(2)` directly.
//!
//! glibc's `recvfrom`, `recvmmsg`, `sendmsg` and `sendmmsg` are thread-cancellation points:
//! in a multi-threaded process each call is wrapped in `__pthread_enable_asynccancel` /
//! `__pthread_disable_asynccancel` (two atomic read-modify-writes). nsauxd never cancels a
//! thread, and in a DNS cache-hit profile across CPUs those wrappers were ~2 % of its CPU, about
//! a tenth of what its own code costs there. The kernel interface, arguments and results are
//! exactly those of the libc functions; errors are in `errno` as with them.

use std::os::fd::RawFd;

/// `recvfrom(2)`; same arguments and result.
///
/// # Safety
/// As for `libc::recvfrom`: `buf` writable for `len` bytes, `addr` writable for `*addrlen`.
pub(super) unsafe fn recvfrom(
    fd: RawFd,
    buf: *mut libc::c_void,
    len: usize,
    flags: libc::c_int,
    addr: *mut libc::sockaddr,
    addrlen: *mut libc::socklen_t,
) -> isize {
    // SAFETY: the caller upholds recvfrom's contract; syscall passes the arguments unchanged.
    let r = unsafe { libc::syscall(libc::SYS_recvfrom, fd, buf, len, flags, addr, addrlen) };
    r as isize
}

/// `recvmmsg(2)` without a timeout; same arguments and result.
///
/// # Safety
/// As for `libc::recvmmsg`: `msgs` points at `vlen` headers whose buffers are all writable.
pub(super) unsafe fn recvmmsg(
    fd: RawFd,
    msgs: *mut libc::mmsghdr,
    vlen: libc::c_uint,
    flags: libc::c_int,
) -> libc::c_int {
    // SAFETY: the caller upholds recvmmsg's contract; a null timeout is allowed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_recvmmsg,
            fd,
            msgs,
            vlen,
            flags,
            std::ptr::null_mut::<libc::timespec>(),
        )
    };
    r as libc::c_int
}

/// `sendmsg(2)`; same arguments and result.
///
/// # Safety
/// As for `libc::sendmsg`: every pointer in `msg` valid for the lengths it gives.
pub(super) unsafe fn sendmsg(fd: RawFd, msg: *const libc::msghdr, flags: libc::c_int) -> isize {
    // SAFETY: the caller upholds sendmsg's contract.
    let r = unsafe { libc::syscall(libc::SYS_sendmsg, fd, msg, flags) };
    r as isize
}

/// `sendmmsg(2)`; same arguments and result.
///
/// # Safety
/// As for `libc::sendmmsg`: `msgs` points at `vlen` headers, every pointer in them valid.
pub(super) unsafe fn sendmmsg(
    fd: RawFd,
    msgs: *mut libc::mmsghdr,
    vlen: libc::c_uint,
    flags: libc::c_int,
) -> libc::c_int {
    // SAFETY: the caller upholds sendmmsg's contract.
    let r = unsafe { libc::syscall(libc::SYS_sendmmsg, fd, msgs, vlen, flags) };
    r as libc::c_int
}
