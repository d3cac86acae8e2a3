//! A thread's nice value: the quiet lane asks the scheduler to prefer it over the loop.
//!
//! Linux keeps the nice value per thread, and `setpriority(PRIO_PROCESS, tid)` sets one
//! thread's (nix only offers the process-wide call). Lowering it below 0 needs
//! `CAP_SYS_NICE` or an `RLIMIT_NICE` that allows it, which start-up uses while it still has
//! them (`ops::drop_privileges_and_start_lane`).

use std::io;

/// Sets the calling thread's nice value to `nice`.
pub(crate) fn set_own_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };
    let who =
        libc::id_t::try_from(tid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain system call on integer arguments; the result is checked.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, who, nice) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's nice value.
pub(crate) fn own_nice() -> io::Result<i32> {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };
    let who =
        libc::id_t::try_from(tid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // getpriority may return -1 legitimately: errno tells.
    // SAFETY: errno is thread-local; writing it before the call is the documented protocol.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: plain system call on integer arguments.
    let r = unsafe { libc::getpriority(libc::PRIO_PROCESS, who) };
    let e = io::Error::last_os_error();
    if r == -1 && e.raw_os_error().is_some_and(|c| c != 0) {
        return Err(e);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_may_raise_its_own_nice_value_and_others_keep_theirs() -> io::Result<()> {
        let before = own_nice()?;
        let inner = std::thread::spawn(|| -> io::Result<i32> {
            let n = own_nice()?;
            set_own_nice((n + 1).min(19))?;
            own_nice()
        })
        .join()
        .map_err(|_| io::Error::other("thread panicked"))??;
        assert_eq!(inner, (before + 1).min(19));
        assert_eq!(own_nice()?, before);
        Ok(())
    }
}
