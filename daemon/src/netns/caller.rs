//! Which network namespace a local (AF_LOCAL) caller is in, without trusting a pid that may have
//! been recycled since the caller connected.
//!
//! With `SO_PEERPIDFD` (Linux ≥ 6.5): the pid is read from the pidfd's fdinfo, `/proc/PID/ns/net`
//! is opened, and only then is the pidfd checked to be alive: a live process keeps its pid, so
//! the namespace opened is the caller's. Without it: the `SO_PEERCRED` pid, with the process's
//! start time (`/proc/PID/stat` field 22) read before and after the open; equal times mean the
//! same process was looked at throughout (weaker: a pid recycled before the first read is not
//! seen, which is why the pidfd path is preferred).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt as _;

use super::tracker::FileId;
use crate::sys;

/// Why a caller's namespace could not be told.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallerError {
    /// The process that connected has exited (or its pid now names another process).
    #[error("the connecting process is gone")]
    Gone,
    /// The kernel gave no usable identity (no pid, or a pid outside our pid namespace).
    #[error("the connecting process cannot be identified: {0}")]
    Unknown(String),
}

/// The nsfs identity `(st_dev, st_ino)` of the network namespace of the process at the other
/// end of `sock`; `cred_pid` is its `SO_PEERCRED` pid, used only when `SO_PEERPIDFD` is
/// unavailable.
pub(crate) fn netns_of_peer(
    sock: &impl AsFd,
    cred_pid: Option<i32>,
) -> Result<FileId, CallerError> {
    match sys::peer::peer_pidfd(sock) {
        Ok(pidfd) => by_pidfd(&pidfd),
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => by_start_time(cred_pid),
        // ESRCH/EINVAL/ENODATA: the peer task is gone (or never had a pid).
        Err(_) => Err(CallerError::Gone),
    }
}

fn by_pidfd(pidfd: &impl AsFd) -> Result<FileId, CallerError> {
    let raw = pidfd.as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}"))
        .map_err(|e| CallerError::Unknown(format!("pidfd fdinfo: {e}")))?;
    let pid = match fdinfo_pid(&info) {
        Some(p) if p > 0 => {
            i32::try_from(p).map_err(|_| CallerError::Unknown(format!("pid {p} out of range")))?
        }
        // -1: exited; 0: not visible in our pid namespace.
        Some(-1) => return Err(CallerError::Gone),
        Some(_) => return Err(CallerError::Unknown("pid not in our pid namespace".into())),
        None => return Err(CallerError::Unknown("pidfd fdinfo has no Pid: line".into())),
    };
    let id = open_netns(pid)?;
    match sys::pidfd::is_alive(pidfd.as_fd()) {
        Ok(true) => Ok(id),
        Ok(false) => Err(CallerError::Gone),
        Err(e) => Err(CallerError::Unknown(format!("pidfd liveness: {e}"))),
    }
}

fn by_start_time(pid: Option<i32>) -> Result<FileId, CallerError> {
    let pid = pid
        .filter(|p| *p > 0)
        .ok_or_else(|| CallerError::Unknown("no peer pid".into()))?;
    let before = start_time(pid)?;
    let id = open_netns(pid)?;
    if start_time(pid)? != before {
        return Err(CallerError::Gone);
    }
    Ok(id)
}

/// Opens `/proc/PID/ns/net` and returns the namespace's nsfs identity.
fn open_netns(pid: i32) -> Result<FileId, CallerError> {
    let file = File::open(format!("/proc/{pid}/ns/net")).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            CallerError::Gone
        } else {
            CallerError::Unknown(format!("/proc/{pid}/ns/net: {e}"))
        }
    })?;
    let m = file
        .metadata()
        .map_err(|e| CallerError::Unknown(format!("/proc/{pid}/ns/net: {e}")))?;
    Ok((m.dev(), m.ino()))
}

fn start_time(pid: i32) -> Result<u64, CallerError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            CallerError::Gone
        } else {
            CallerError::Unknown(format!("/proc/{pid}/stat: {e}"))
        }
    })?;
    stat_start_time(&stat)
        .ok_or_else(|| CallerError::Unknown(format!("/proc/{pid}/stat unparsable")))
}

/// The `Pid:` value of a pidfd's fdinfo (`-1` once the process has exited).
pub(crate) fn fdinfo_pid(fdinfo: &str) -> Option<i64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Field 22 (`starttime`) of `/proc/PID/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after the last `)`.
pub(crate) fn stat_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")" come field 3 (state) onwards: field 22 is the 20th of them.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_pid_is_read_from_its_line() {
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nPid:\t4242\nNSpid:\t4242\n";
        assert_eq!(fdinfo_pid(info), Some(4242));
        assert_eq!(fdinfo_pid("Pid:\t-1\nNSpid:\t-1\n"), Some(-1));
        assert_eq!(fdinfo_pid("pos:\t0\n"), None);
        assert_eq!(fdinfo_pid("Pid:\tx\n"), None);
        // NSpid must not be taken for Pid.
        assert_eq!(fdinfo_pid("NSpid:\t7\n"), None);
    }

    #[test]
    fn start_time_survives_hostile_command_names() {
        let tail = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        assert_eq!(
            stat_start_time(&format!("12 (sleep) {tail}")),
            Some(987_654)
        );
        assert_eq!(stat_start_time(&format!("12 (a) b) {tail}")), Some(987_654));
        assert_eq!(stat_start_time("12 (x) S 1 2"), None);
        assert_eq!(stat_start_time("no paren"), None);
    }

    #[test]
    fn own_process_is_found_through_its_stat() {
        let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let t = start_time(me).ok();
        assert!(t.is_some());
        assert_eq!(start_time(me).ok(), t);
        assert!(open_netns(me).is_ok());
    }
}
