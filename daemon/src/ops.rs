//! Operations: single-instance lock, logging, systemd notification.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{Context as _, bail};
use nix::fcntl::{Flock, FlockArg};

/// Holds the runtime directory's lock for the daemon's lifetime: one daemon per directory.
#[derive(Debug)]
pub(crate) struct InstanceLock {
    _lock: Flock<File>,
}

impl InstanceLock {
    /// Takes `DIR/nsauxd.lock` (non-blocking) and writes our pid into it.
    pub(crate) fn acquire(runtime_dir: &Path) -> anyhow::Result<Self> {
        let path = runtime_dir.join("nsauxd.lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, _)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                bail!(
                    "another nsauxd (pid {}) is running with runtime directory {}",
                    pid.trim(),
                    runtime_dir.display()
                );
            }
        };
        lock.set_len(0)?;
        lock.rewind()?;
        writeln!(lock, "{}", std::process::id())?;
        Ok(Self { _lock: lock })
    }
}

/// Logs go to stderr (the journal under systemd); `NSAUX_LOG` sets the filter (default `info`).
/// Every field is escaped (`escape::log_fields`): names come from tenants.
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NSAUX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(crate::escape::log_fields())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Tells systemd (if it started us with `Type=notify`) where we are.
pub(crate) fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(state)
    {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Starts the quiet lane (`serve/quiet.rs`) at a nice value [`crate::serve::quiet::LANE_NICE`]
/// below the daemon's, while no other thread has been spawned: this thread lowers its own
/// value while it still may (`CAP_SYS_NICE`, or an `RLIMIT_NICE` raised with
/// `CAP_SYS_RESOURCE`; neither is kept after start), drops the capabilities
/// (`privilege::drop_to_kept`), spawns the lane (which inherits the value) and takes its
/// own value back. Without either capability the lane runs at the daemon's value.
pub(crate) fn drop_privileges_and_start_lane(lane_cpu_percent: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let own = crate::sys::nice::own_nice().unwrap_or(0);
    let lane = (own + crate::serve::quiet::LANE_NICE).max(-20);
    // RLIMIT_NICE allows nice values down to `20 - limit`.
    let want = u64::try_from(20 - lane).unwrap_or(40);
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NICE)
        && soft < want
    {
        let _ = setrlimit(Resource::RLIMIT_NICE, want, hard.max(want));
    }
    let lowered = crate::sys::nice::set_own_nice(lane);
    if let Err(e) = &lowered {
        tracing::debug!(error = %e, nice = lane, "cannot lower the nice value; the quiet lane keeps the daemon's");
    }
    crate::privilege::drop_to_kept();
    // The lane's epoll and thread exist before the first namespace (fd counts are stable
    // from "ready" on).
    crate::serve::quiet::start(lane_cpu_percent);
    if lowered.is_ok()
        && let Err(e) = crate::sys::nice::set_own_nice(own)
    {
        tracing::warn!(error = %e, nice = own, "cannot restore the nice value");
    }
}

/// Raises the open-file limit as far as allowed: every namespace costs one fd plus one per
/// listening socket, so 10,000 namespaces need far more than the usual 1,024 (or 20,000).
/// As root the hard limit is raised too (up to `fs.nr_open`).
pub(crate) fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let target = nr_open.max(hard);
    if setrlimit(Resource::RLIMIT_NOFILE, target, target).is_err() {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    if let Ok((s, h)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if s != soft {
            tracing::debug!(from = soft, to = s, hard = h, "raised open-file limit");
        }
        // Grow the fd table now, single-threaded, so no namespace later pays the kernel's RCU
        // wait for growing a shared table (several ms at 256, 512, … fds). 64 Ki slots cost
        // 512 KiB of kernel memory and cover ~12,000 namespaces with five sockets each.
        let slots = u32::try_from(s.min(65_536)).unwrap_or(65_536);
        if let Err(e) = crate::sys::fdtable::reserve(slots) {
            tracing::debug!(error = %e, "could not pre-size the fd table");
        }
    }
}
