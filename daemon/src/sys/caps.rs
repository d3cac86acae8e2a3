//! Process capabilities (`capget`/`capset`, `PR_CAPBSET_DROP`, ambient set) for the daemon's
//! least-privilege drop (`crate::privilege`), and SIGPIPE restored for `nsauxctl` so a closed
//! pipe ends it quietly. libc has the calls but not the capability structures.

use std::io;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets in two 32-bit words.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's (effective, permitted) sets as 64-bit masks.
pub(crate) fn current() -> io::Result<(u64, u64)> {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: hdr and data are valid, writable and shaped as the kernel's v3 ABI expects
    // (a header and two data words).
    let rc = unsafe { libc::syscall(libc::SYS_capget, &raw mut hdr, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
    ))
}

/// Highest capability number the running kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Keeps only the capabilities in `keep` (a mask of capability numbers): the ambient and
/// inheritable sets are cleared, every other capability leaves the bounding set (where
/// CAP_SETPCAP allows it) and the permitted and effective sets. Call while the process has one
/// thread: capabilities are per thread, and threads made later inherit the result.
pub(crate) fn keep_only(keep: u64) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only; EINVAL on kernels without ambient sets.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    for cap in 0..=last_cap().min(63) {
        if keep & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments only; EPERM without CAP_SETPCAP is fine
            // (the permitted set below is what the process can still use).
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        }
    }
    let (effective, permitted) = current()?;
    let split = |m: u64| {
        // Two 32-bit words of the v3 ABI; truncation is the point.
        #[allow(clippy::cast_possible_truncation)]
        (m as u32, (m >> 32) as u32)
    };
    let (e_lo, e_hi) = split(effective & keep);
    let (p_lo, p_hi) = split(permitted & keep);
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: e_lo,
            permitted: p_lo,
            inheritable: 0,
        },
        CapData {
            effective: e_hi,
            permitted: p_hi,
            inheritable: 0,
        },
    ];
    // SAFETY: hdr and data are valid and shaped as the kernel's v3 ABI expects; the kernel
    // only reads data.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut hdr, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Restores SIGPIPE's default action (Rust ignores it, so a write to a closed pipe returns
/// EPIPE and `println!` panics): `nsauxctl … | head -1` then ends by the signal, status 141
/// in the shell, as every other Unix filter does.
pub(crate) fn default_sigpipe() {
    // SAFETY: installs the default disposition for one signal; no handler code runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}
