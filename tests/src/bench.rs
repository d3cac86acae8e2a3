//! Measurement helpers shared by the benchmarks (`cargo bench -p nsaux-tests`).

use std::path::PathBuf;
use std::time::Duration;

use crate::daemon::Daemon;

/// The environment variable naming another nsauxd binary (`NSAUX_BENCH_BASELINE=path`) that
/// every benchmark then measures too, in the same run: an A/B comparison of two builds where
/// drift in the load of a shared machine hits both alike, which separate runs cannot give.
pub const BASELINE_ENV: &str = "NSAUX_BENCH_BASELINE";

/// The row label of the build named by [`BASELINE_ENV`], so every bench prints it alike.
pub const BASELINE_LABEL: &str = "nsauxd (baseline)";

/// One nsauxd build a benchmark measures: benches loop over [`builds`] instead of starting
/// "the" daemon, so the A/B switch works the same way in each of them.
#[derive(Debug, Clone)]
pub struct Build {
    /// Its row label: `nsauxd` or [`BASELINE_LABEL`].
    pub label: &'static str,
    /// Its binary; `None` for the workspace's own build.
    pub binary: Option<PathBuf>,
}

impl Build {
    /// Starts this build with `config` (see [`Daemon::start_binary`]).
    pub fn start(&self, config: &str) -> anyhow::Result<Daemon> {
        Daemon::start_binary(self.binary.as_deref(), config)
    }
}

/// The builds to measure: the workspace's, then the one [`BASELINE_ENV`] names (if set; an
/// error if it is not a file, so a typo never silently drops the comparison).
pub fn builds() -> anyhow::Result<Vec<Build>> {
    let mut v = vec![Build {
        label: "nsauxd",
        binary: None,
    }];
    if let Some(path) = std::env::var_os(BASELINE_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "{BASELINE_ENV}={} is not a file",
            path.display()
        );
        eprintln!(
            "A/B: also measuring {} as `{BASELINE_LABEL}`",
            path.display()
        );
        v.push(Build {
            label: BASELINE_LABEL,
            binary: Some(path),
        });
    }
    Ok(v)
}

/// The line an A/B run prints to compare the two builds directly: `nsauxd`'s CPU per answer
/// over the baseline's, in total and as the median and range of the per-round ratios (the
/// range is the run's own noise, against which the total must be judged).
pub fn ab_summary(what: &str, total: f64, per_round: &[f64]) -> String {
    let (lo, hi) = range(per_round);
    format!(
        "A/B {what}: nsauxd / {BASELINE_LABEL} CPU per answer {total:.2}× (median of rounds {:.2}×, rounds {lo:.2}–{hi:.2}×)",
        median(per_round)
    )
}

/// The smallest and largest finite sample (NaN, NaN when none): the round-to-round spread
/// printed beside a median, so an A/B difference can be judged against it.
pub fn range(samples: &[f64]) -> (f64, f64) {
    let v = samples.iter().copied().filter(|x| x.is_finite());
    let lo = v.clone().fold(f64::INFINITY, f64::min);
    let hi = v.fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() {
        (lo, hi)
    } else {
        (f64::NAN, f64::NAN)
    }
}

/// Resident set size of a process, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux almost everywhere).
pub fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// utime + stime of a process, in clock ticks (`/proc/PID/stat` fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    use anyhow::Context as _;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name (which may contain spaces).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("bad /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).context("utime")?.parse()?;
    let stime: u64 = f.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

/// On-CPU time of all threads of a process in nanoseconds (`/proc/PID/task/*/schedstat`):
/// exact, unlike the tick-sampled `utime + stime`, which matters for runs of a few seconds.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

/// On-CPU time of each thread of a process now, by thread id (`/proc/PID/task/*/schedstat`),
/// for [`cpu_ns_since`].
pub fn task_cpu_ns(pid: u32) -> std::collections::HashMap<u32, u64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return std::collections::HashMap::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse().ok()?;
            let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            Some((tid, s.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// On-CPU time of a process since `before` ([`task_cpu_ns`]), thread by thread: a sum over
/// the threads alive at each read ([`cpu_ns`] twice) falls when a thread exits in between
/// (tokio's idle blocking threads exit after 10 s), which made a 10 s idle window read as 0.
/// Threads born since count whole; those that exited since lose their time in the window.
pub fn cpu_ns_since(pid: u32, before: &std::collections::HashMap<u32, u64>) -> u64 {
    task_cpu_ns(pid)
        .into_iter()
        .map(|(tid, now)| now.saturating_sub(before.get(&tid).copied().unwrap_or(0)))
        .sum()
}

/// A process's CPU counters at one moment ([`cpu_mark`]), for [`CpuMark::spent_ns`]: a bench
/// window must count the threads that exit in it (tokio's idle blocking threads exit after
/// 10 s), which neither a sum over live threads read twice nor [`cpu_ns_since`] alone does.
#[derive(Debug, Clone)]
pub struct CpuMark {
    pid: u32,
    /// On-CPU ns of each live thread ([`task_cpu_ns`]): exact.
    tasks: std::collections::HashMap<u32, u64>,
    /// utime + stime of the whole process in ticks ([`cpu_ticks`]): whole ticks, but it keeps
    /// the time of the threads that exited.
    ticks: u64,
    /// ns per tick.
    tick_ns: u64,
}

/// Marks the CPU process `pid` has used so far (see [`CpuMark`]).
pub fn cpu_mark(pid: u32) -> CpuMark {
    CpuMark {
        pid,
        tasks: task_cpu_ns(pid),
        ticks: cpu_ticks(pid).unwrap_or(0),
        tick_ns: 1_000_000_000 / clk_tck(),
    }
}

impl CpuMark {
    /// CPU the process used since the mark, in ns: the exact per-thread figure
    /// ([`cpu_ns_since`]), unless the process's own utime + stime (which hold the threads that
    /// exited meanwhile) passed it by more than their rounding (under two ticks at each read),
    /// when a thread left with its time and the tick figure is the better one.
    pub fn spent_ns(&self) -> u64 {
        let exact = cpu_ns_since(self.pid, &self.tasks);
        let ticks = self.ticks_since();
        ticks_or_exact(exact, ticks * self.tick_ns, self.tick_ns)
    }

    /// utime + stime since the mark, in ticks (exited threads included).
    pub fn ticks_since(&self) -> u64 {
        cpu_ticks(self.pid)
            .unwrap_or(self.ticks)
            .saturating_sub(self.ticks)
    }
}

/// The per-thread figure `exact`, or `by_ticks` when it passed `exact` by more than the ticks'
/// rounding (two ticks of `tick_ns`): then threads that exited took CPU time with them.
fn ticks_or_exact(exact: u64, by_ticks: u64, tick_ns: u64) -> u64 {
    if by_ticks > exact + 2 * tick_ns {
        by_ticks
    } else {
        exact
    }
}

/// The median of samples (NaN when empty): per-round ratios of two servers measured in turn
/// on a shared machine have outliers in both directions, which the median ignores.
pub fn median(samples: &[f64]) -> f64 {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// CPU time (user + system) a process has used so far (zero if it cannot be read).
pub fn cpu_time(pid: u32) -> Duration {
    let ticks = cpu_ticks(pid).unwrap_or(0);
    Duration::from_micros(ticks * 1_000_000 / clk_tck())
}

/// Builds the release daemon the benchmarks run (they find it next to themselves in
/// target/release), so a bench never measures a stale binary.
pub fn build_release_daemon() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = std::process::Command::new(cargo)
        .args(["build", "--release", "-p", "nsauxd", "--bins"])
        .status()?;
    anyhow::ensure!(st.success(), "building nsauxd failed");
    Ok(())
}

/// The `p`-th percentile (0..=100) of unsorted samples.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[idx.min(v.len() - 1)]
}

/// Prints a table with a header row, columns padded to fit.
pub fn print_table(head: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.len());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&w)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        println!("| {} |", parts.join(" | "));
    };
    line(head.iter().map(|s| (*s).to_owned()).collect());
    println!(
        "|{}|",
        w.iter()
            .map(|w| format!("{}:", "-".repeat(w + 1)))
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        line(r.clone());
    }
}

/// Where a benchmark round puts the load generator and the server: the targets must
/// hold both when the scheduler places them freely (often on one CPU, where a wakeup is a
/// cheap context switch) and when they sit on different CPUs (each wakeup is a cross-CPU
/// wakeup, and the server sees fewer requests per wakeup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuMode {
    /// No pinning: every CPU the bench may use, for both.
    Unpinned,
    /// The load generator on CPU `load`, every thread of the server on CPU `server`.
    Cross {
        /// The load generator's CPU.
        load: usize,
        /// The server's CPU.
        server: usize,
    },
}

impl CpuMode {
    /// The modes a bench runs: unpinned, and cross-CPU when at least two CPUs are allowed
    /// (`NSAUX_BENCH_CPU_MODE=unpinned|cross` keeps one).
    pub fn all() -> Vec<Self> {
        let allowed = allowed_cpus();
        let mut v = vec![Self::Unpinned];
        if let [load, server, ..] = allowed[..] {
            v.push(Self::Cross { load, server });
        }
        let only = std::env::var("NSAUX_BENCH_CPU_MODE").unwrap_or_default();
        v.retain(|m| only.is_empty() || m.label().starts_with(&only));
        v
    }

    /// Its label in tables.
    pub fn label(&self) -> String {
        match self {
            Self::Unpinned => "unpinned".to_owned(),
            Self::Cross { load, server } => {
                format!("cross-CPU (load on {load}, server on {server})")
            }
        }
    }

    /// Pins every thread of the server process `pid` for this mode (unpinned: all allowed CPUs).
    pub fn pin_server(&self, pid: u32) -> anyhow::Result<()> {
        match self {
            Self::Unpinned => pin_process(pid, &allowed_cpus()),
            Self::Cross { server, .. } => pin_process(pid, &[*server]),
        }
    }

    /// Pins the calling thread (the load generator) for this mode.
    pub fn pin_load_thread(&self) -> anyhow::Result<()> {
        let cpus = match self {
            Self::Unpinned => allowed_cpus(),
            Self::Cross { load, .. } => vec![*load],
        };
        pin_thread(0, &cpus)
    }

    /// `taskset` arguments that run a load-generating program for this mode (empty: none).
    pub fn taskset_args(&self) -> Vec<String> {
        match self {
            Self::Unpinned => Vec::new(),
            Self::Cross { load, .. } => vec!["-c".to_owned(), load.to_string()],
        }
    }
}

/// The CPUs this process may run on (read once, before any pinning).
fn allowed_cpus() -> Vec<usize> {
    static ALLOWED: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
    ALLOWED
        .get_or_init(|| {
            let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok();
            (0..nix::sched::CpuSet::count())
                .filter(|&c| set.as_ref().is_some_and(|s| s.is_set(c).unwrap_or(false)))
                .collect()
        })
        .clone()
}

fn pin_thread(tid: i32, cpus: &[usize]) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    for &c in cpus {
        set.set(c)?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set)?;
    Ok(())
}

/// Pins every thread of process `pid` to `cpus` (threads born later inherit their parent's).
fn pin_process(pid: u32, cpus: &[usize]) -> anyhow::Result<()> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) {
            // A thread that ended meanwhile is no error.
            let _ = pin_thread(tid, cpus);
        }
    }
    Ok(())
}

pub use crate::chrony::Chronyd;

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_ns_counts_this_process() {
        let pid = std::process::id();
        let before = super::cpu_ns(pid);
        let tasks = super::task_cpu_ns(pid);
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let spent = super::cpu_ns(pid).saturating_sub(before);
        assert!(
            spent >= 5_000_000,
            "{spent} ns counted for 20 ms of spinning"
        );
        let since = super::cpu_ns_since(pid, &tasks);
        assert!(
            since >= 5_000_000,
            "{since} ns counted for 20 ms of spinning"
        );
    }

    #[test]
    fn a_mark_counts_a_thread_that_exited_in_the_window() {
        let pid = std::process::id();
        let mark = super::cpu_mark(pid);
        // Spins until it used 200 ms of CPU (not of wall time: the machine may be loaded).
        let used = std::thread::spawn(|| {
            use nix::sys::resource::{UsageWho, getrusage};
            let cpu = || {
                getrusage(UsageWho::RUSAGE_THREAD).map_or(0, |u| {
                    let us = |t: nix::sys::time::TimeVal| t.tv_sec() * 1_000_000 + t.tv_usec();
                    us(u.user_time()) + us(u.system_time())
                })
            };
            let t = std::time::Instant::now();
            let mut x = 0u64;
            while cpu() < 200_000 && t.elapsed() < std::time::Duration::from_secs(20) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            cpu()
        })
        .join()
        .expect("spinner");
        assert!(
            used >= 200_000,
            "the spinner got only {used} µs of CPU in 20 s"
        );
        // The spinner is gone: only the process's utime + stime still hold its time.
        let spent = mark.spent_ns();
        assert!(
            spent >= 150_000_000,
            "{spent} ns counted for a thread that used 200 ms of CPU and exited"
        );
    }

    #[test]
    fn the_tick_figure_wins_only_past_its_rounding() {
        let tick = 10_000_000;
        assert_eq!(
            super::ticks_or_exact(5_000_000, 20_000_000, tick),
            5_000_000
        );
        assert_eq!(
            super::ticks_or_exact(5_000_000, 30_000_000, tick),
            30_000_000
        );
        assert_eq!(
            super::ticks_or_exact(90_000_000, 80_000_000, tick),
            90_000_000
        );
    }
}
