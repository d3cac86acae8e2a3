//! Read-only views of the host clock for the NTP service.
//!
//! * [`read_kernel_timex`]: `adjtimex(2)` with `modes = 0`, which changes nothing and needs no
//!   privilege; it reports the kernel's discipline state (leap flags, `maxerror`, `esterror`)
//!   that an NTP daemon on the host keeps up to date.
//! * [`realtime_resolution_ns`]: `clock_getres(CLOCK_REALTIME)`, the lower bound of the
//!   precision we advertise.
//! * [`thread_cpu_ns`]: `CLOCK_THREAD_CPUTIME_ID`, the CPU the calling thread has used, by
//!   which the quiet lane bounds its own share of the machine (`serve/pace.rs`).

use std::io;
use std::mem::zeroed;

/// The `adjtimex` numbers the NTP core needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timex {
    /// `STA_*` flags.
    pub(crate) status: i32,
    /// Maximum error, microseconds.
    pub(crate) maxerror: i64,
    /// Estimated error, microseconds.
    pub(crate) esterror: i64,
}

/// Reads the kernel clock state without changing it (`modes = 0`).
pub(crate) fn read_kernel_timex() -> io::Result<Timex> {
    // SAFETY: `timex` is plain old data; all-zero is a valid value and means `modes = 0`,
    // i.e. read only.
    let mut tx: libc::timex = unsafe { zeroed() };
    // SAFETY: `tx` is a live, writable `struct timex`; with modes 0 the kernel only writes it.
    let rc = unsafe { libc::adjtimex(&raw mut tx) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::useless_conversion)] // `c_long` is 32 bits on some targets
    Ok(Timex {
        status: tx.status,
        maxerror: i64::from(tx.maxerror),
        esterror: i64::from(tx.esterror),
    })
}

/// A non-negative `timespec` in nanoseconds (saturating; a negative field counts as 0).
fn timespec_ns(ts: &libc::timespec) -> u64 {
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// The resolution of `CLOCK_REALTIME` in nanoseconds (1 with high-resolution timers).
pub(crate) fn realtime_resolution_ns() -> io::Result<u64> {
    // SAFETY: plain old data, zero is valid.
    let mut ts: libc::timespec = unsafe { zeroed() };
    // SAFETY: `ts` is a live, writable timespec.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_REALTIME, &raw mut ts) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(timespec_ns(&ts))
}

/// CPU time the calling thread has used so far, in nanoseconds (a system call: the vDSO does
/// not serve per-thread clocks, so callers read it sparingly).
pub(crate) fn thread_cpu_ns() -> io::Result<u64> {
    // SAFETY: plain old data, zero is valid.
    let mut ts: libc::timespec = unsafe { zeroed() };
    // SAFETY: `ts` is a live, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(timespec_ns(&ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_without_privilege_or_change() {
        let a = read_kernel_timex().expect("adjtimex modes 0");
        assert!(a.maxerror >= 0);
        assert!(realtime_resolution_ns().expect("clock_getres") >= 1);
    }

    #[test]
    fn a_threads_cpu_clock_advances_with_its_work() {
        let before = thread_cpu_ns().expect("thread CPU clock");
        let mut x = 0u64;
        while thread_cpu_ns().expect("thread CPU clock") == before {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(thread_cpu_ns().expect("thread CPU clock") > before);
    }
}
