//! A thread's nice value and time slice: the quiet lane asks the scheduler to prefer it over
//! the loop.
//!
//! Linux keeps the nice value per thread, and `setpriority(PRIO_PROCESS, tid)` sets one
//! thread's (nix only offers the process-wide call). Lowering it below 0 needs
//! `CAP_SYS_NICE` or an `RLIMIT_NICE` that allows it, which start-up uses while it still has
//! them (`ops::drop_privileges_and_start_lane`).

use std::io;
use std::mem::size_of;

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

/// The kernel's `struct sched_attr` (first version, 56 bytes): libc does not define it.
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// Asks the scheduler for a shorter time slice for the calling thread, keeping its nice
/// value and its policy. Since Linux 6.12 a normal task's `sched_runtime` is its slice
/// (0.1-100 ms); a task with a shorter slice gets an earlier virtual deadline, so on waking
/// it preempts a running task of a longer slice instead of waiting for that task's slice to
/// run out. Older kernels ignore it. Only for `SCHED_OTHER` and `SCHED_BATCH` (an operator's
/// `CPUSchedulingPolicy=batch` is kept); under any other policy the thread is left as it is
/// and `Ok(false)` returned.
pub(crate) fn set_own_slice(slice_ns: u64) -> io::Result<bool> {
    // SAFETY: plain system call on the calling thread (pid 0); the result is checked.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy < 0 {
        return Err(io::Error::last_os_error());
    }
    if policy != libc::SCHED_OTHER && policy != libc::SCHED_BATCH {
        return Ok(false);
    }
    let attr = SchedAttr {
        size: size_of::<SchedAttr>() as u32,
        policy: policy as u32,
        flags: 0,
        nice: own_nice()?,
        priority: 0,
        runtime: slice_ns,
        deadline: 0,
        period: 0,
        util_min: 0,
        util_max: 0,
    };
    // SAFETY: `attr` is a live, initialised sched_attr whose `size` field gives its length;
    // pid 0 is the calling thread; the result is checked.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
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

    /// `se.slice` of the calling thread in ns, when the kernel shows it.
    fn own_slice() -> Option<u64> {
        let s = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = s.lines().find(|l| l.starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    /// Linux 6.12 or later (custom slices for normal tasks).
    fn custom_slices_supported() -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (major, minor) >= (6, 12)
    }

    #[test]
    fn a_thread_may_shorten_its_own_slice_and_keeps_its_nice_value() -> io::Result<()> {
        let (nice_before, nice_after, slice) = std::thread::spawn(|| -> io::Result<_> {
            let n = (own_nice()? + 1).min(19);
            set_own_nice(n)?;
            assert!(set_own_slice(100_000)?, "a normal thread takes a slice");
            Ok((n, own_nice()?, own_slice()))
        })
        .join()
        .map_err(|_| io::Error::other("thread panicked"))??;
        assert_eq!(
            nice_after, nice_before,
            "the slice call must keep the nice value"
        );
        if custom_slices_supported()
            && let Some(slice) = slice
        {
            assert_eq!(slice, 100_000, "se.slice after set_own_slice");
        }
        // Other threads keep the default.
        if custom_slices_supported()
            && let Some(ours) = own_slice()
        {
            assert_ne!(ours, 100_000);
        }
        Ok(())
    }

    #[test]
    fn a_batch_thread_stays_batch_and_an_idle_one_is_left_alone() -> io::Result<()> {
        let (batch, idle) = std::thread::spawn(|| -> io::Result<_> {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: plain system call on the calling thread with a live sched_param.
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &raw const param) } < 0 {
                return Err(io::Error::last_os_error());
            }
            let took = set_own_slice(100_000)?;
            // SAFETY: as above.
            let batch = (took, unsafe { libc::sched_getscheduler(0) });
            // SAFETY: as above (going to SCHED_IDLE needs no privilege).
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &raw const param) } < 0 {
                return Err(io::Error::last_os_error());
            }
            let took = set_own_slice(100_000)?;
            // SAFETY: as above.
            Ok((batch, (took, unsafe { libc::sched_getscheduler(0) })))
        })
        .join()
        .map_err(|_| io::Error::other("thread panicked"))??;
        assert_eq!(batch, (true, libc::SCHED_BATCH));
        assert_eq!(idle, (false, libc::SCHED_IDLE));
        Ok(())
    }
}
