//! Issue 11, the quiet lane's priority: the thread that serves quiet namespaces while another
//! is busy runs at a lower nice value and a shorter time slice than the loop (the scheduler
//! then wakes it sooner), and
//! a tenant cannot turn that into a way of starving the loop: flooding many namespaces just
//! gently enough that each stays "quiet" (so the lane serves them all) still leaves a busy
//! namespace on the loop its share, and the lane within its CPU budget (three quarters of a CPU
//! by default; a budget of a tenth binds and is counted; 0 runs no lane). Played from a remote
//! host behind a veth per namespace, bounded in time and count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nsaux_tests::closed_loop::{ClosedLoop, ntp_request, wait_ntp_answers};
use nsaux_tests::daemon::Daemon;
use nsaux_tests::env::{kernel_at_least, require_root};
use nsaux_tests::netns::{TestNetns, in_netns_file, veth};

const CONFIG: &str = "[ntp]\nstratum = 10\nlocal_stratum = 10\nrate_limit = { enabled = false }\n\
    [dns]\nenabled = false\n[rpcbind]\nenabled = false\n";
/// Namespaces the attacker floods gently (each served by the lane).
const GENTLE: u8 = 8;
/// Requests in flight per gentle flood: few enough that every turn drains the queue.
const GENTLE_WINDOW: u64 = 4;
/// Requests in flight of the busy namespace's flood: it stays backlogged, served by turns.
const BUSY_WINDOW: u64 = 256;
const FLOOD_TIME: Duration = Duration::from_secs(4);
const FLOOD_MAX: u64 = 2_000_000;

/// A closed-loop NTP flood to `to` with `window` requests in flight; returns the answers.
fn flood(to: SocketAddr, window: u64, stop: &AtomicBool) -> anyhow::Result<u64> {
    let flood = ClosedLoop {
        to,
        window,
        time: FLOOD_TIME,
        max_requests: FLOOD_MAX,
        stop,
        slot: None,
    };
    Ok(flood.run(ntp_request)?.answers)
}

/// `/proc/PID/task/TID/stat` field 19, the thread's nice value.
fn nice_of(pid: u32, tid: &str) -> anyhow::Result<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("bad stat {stat:?}"))?;
    let nice = rest
        .split_whitespace()
        .nth(16)
        .ok_or_else(|| anyhow::anyhow!("no nice field in {stat:?}"))?;
    Ok(nice.parse()?)
}

/// `se.slice` of thread `tid` of `pid` (ns), when the kernel shows it (`/proc/.../sched`).
fn slice_of(pid: u32, tid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/sched")).ok()?;
    let line = s.lines().find(|l| l.starts_with("se.slice"))?;
    line.split(':').nth(1)?.trim().parse().ok()
}

/// The thread of `pid` named `comm`.
fn thread_named(pid: u32, comm: &str) -> anyhow::Result<String> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let t = t?;
        if std::fs::read_to_string(t.path().join("comm"))?.trim() == comm {
            return Ok(t.file_name().to_string_lossy().into_owned());
        }
    }
    anyhow::bail!("no thread {comm} in {pid}")
}

/// CPU time of thread `tid` of `pid` so far (ns), from `/proc/PID/task/TID/schedstat`.
fn thread_cpu_ns(pid: u32, tid: &str) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))?;
    let ns = s
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow::anyhow!("bad schedstat {s:?}"))?;
    Ok(ns.parse()?)
}

#[test]
fn the_quiet_lane_runs_at_a_lower_nice_value_and_shorter_slice_than_the_loop() -> anyhow::Result<()>
{
    if !require_root("the_quiet_lane_runs_at_a_lower_nice_value_and_shorter_slice_than_the_loop") {
        return Ok(());
    }
    let d = Daemon::start(CONFIG)?;
    let pid = d.pid();
    let lane = thread_named(pid, "nsaux-quiet")?;
    // The daemon starts at this test's nice value (a run under `nice` raises both).
    let ours = nice_of(std::process::id(), &std::process::id().to_string())?;
    let want = (ours - 5).max(-20);
    assert_eq!(nice_of(pid, &lane)?, want, "the quiet lane's nice value");
    // The loop (the main thread) keeps the daemon's.
    assert_eq!(
        nice_of(pid, &pid.to_string())?,
        ours,
        "the loop's nice value"
    );
    // And the lane asks for the shortest time slice (so it preempts the loop on waking);
    // the loop keeps the kernel's default.
    // Linux 6.12 or later: normal tasks may ask for their own time slice.
    if kernel_at_least(6, 12) {
        let lane_slice = slice_of(pid, &lane);
        let loop_slice = slice_of(pid, &pid.to_string());
        if let (Some(lane_slice), Some(loop_slice)) = (lane_slice, loop_slice) {
            assert_eq!(lane_slice, 100_000, "the quiet lane's time slice");
            assert!(
                loop_slice > lane_slice,
                "the loop's time slice {loop_slice}"
            );
        }
    }
    Ok(())
}

/// What [`gentle_floods`] saw.
struct Outcome {
    /// Answers of the busy namespace's flood.
    busy: u64,
    /// Answers of each gentle flood.
    gentle: Vec<u64>,
    /// The gentle namespaces' datagrams the lane served.
    between: u64,
    /// The lane's CPU over the floods, in CPUs (`None`: no lane thread).
    lane_share: Option<f64>,
    /// `nsaux_quiet_lane_pauses_total` over the floods.
    pauses: u64,
}

/// Floods [`GENTLE`] namespaces gently and one hard, each from its own veth in a far
/// namespace, on a daemon started with `config`.
fn gentle_floods(config: &str) -> anyhow::Result<Outcome> {
    let d = Daemon::start(config)?;
    let far_dir = tempfile::tempdir()?;
    let far = TestNetns::create(far_dir.path(), "ln-far")?;
    // Namespace k (0..GENTLE gentle ones, GENTLE the busy one) is 10.61.k.1, the far end
    // 10.61.k.2.
    let mut spaces = Vec::new();
    for k in 0..=GENTLE {
        let ns = d.netns(&format!("ln-{k}"))?;
        veth(
            &ns,
            &format!("ln{k}"),
            &format!("10.61.{k}.1/24"),
            &far,
            &format!("lf{k}"),
            &format!("10.61.{k}.2/24"),
        )?;
        spaces.push(ns);
    }
    let target = |k: u8| SocketAddr::from(([10, 61, k, 1], 123));
    // Every namespace answers before the floods start.
    for k in 0..=GENTLE {
        wait_ntp_answers(&far.path, target(k), "ntp answers")?;
    }

    let lane = thread_named(d.pid(), "nsaux-quiet").ok();
    let lane_cpu0 = lane
        .as_ref()
        .map(|l| thread_cpu_ns(d.pid(), l))
        .transpose()?;
    let pauses0 = d.counter("nsaux_quiet_lane_pauses_total")?;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = (0..=GENTLE)
        .map(|k| {
            let stop = Arc::clone(&stop);
            let far = far.path.clone();
            let window = if k == GENTLE {
                BUSY_WINDOW
            } else {
                GENTLE_WINDOW
            };
            std::thread::spawn(move || {
                in_netns_file(&far, move || flood(target(k), window, &stop))?
            })
        })
        .collect();
    let mut got = Vec::new();
    for f in floods {
        got.push(f.join().map_err(|_| anyhow::anyhow!("flood panicked"))??);
    }
    stop.store(true, Ordering::Relaxed);
    let wall = started.elapsed();
    let lane_share = match (&lane, lane_cpu0) {
        (Some(l), Some(c0)) => {
            Some(thread_cpu_ns(d.pid(), l)?.saturating_sub(c0) as f64 / wall.as_secs_f64() / 1e9)
        }
        _ => None,
    };
    let pauses = d
        .counter("nsaux_quiet_lane_pauses_total")?
        .saturating_sub(pauses0);
    let mut between = 0;
    for k in 0..GENTLE {
        let ns = d
            .ns(&format!("ln-{k}"))?
            .ok_or_else(|| anyhow::anyhow!("ln-{k} not listed"))?;
        between += ns["udp"]["served_between"].as_u64().unwrap_or(0);
    }
    let busy = got[usize::from(GENTLE)];
    got.truncate(usize::from(GENTLE));
    eprintln!(
        "busy namespace: {busy} answers; gentle ones: {got:?}, {between} served by the lane, \
         which used {:?} CPUs and paused {pauses} times",
        lane_share
    );
    Ok(Outcome {
        busy,
        gentle: got,
        between,
        lane_share,
        pauses,
    })
}

/// On the loop every namespace here (one NTP socket each) reads at most a batch per round, so
/// the busy one gets a ninth or more of the loop's answers; the lane, which serves only gentle
/// ones, has at most three times the loop's CPU on a shared core (on 2 CPUs they mostly run
/// apart): the busy namespace keeps about 1/36 of all answers or more in the worst case, and
/// in practice several times that (a sixth to a third in the runs so far). Asserted: 1 / 36 =
/// 2.8 %.
fn assert_busy_keeps_its_share(o: &Outcome) {
    let total = o.busy + o.gentle.iter().sum::<u64>();
    assert!(
        o.busy * 4 * (u64::from(GENTLE) + 1) >= total,
        "busy namespace got {} of {total} answers (gentle ones: {:?}, {} served by the lane)",
        o.busy,
        o.gentle,
        o.between
    );
    assert!(o.busy > 1000, "the busy flood got only {} answers", o.busy);
    assert!(
        o.gentle.iter().all(|&g| g > 100),
        "a gentle flood starved: {:?}",
        o.gentle
    );
}

#[test]
fn many_gently_flooded_namespaces_served_by_the_lane_leave_a_busy_one_its_share()
-> anyhow::Result<()> {
    if !require_root("many_gently_flooded_namespaces_served_by_the_lane_leave_a_busy_one_its_share")
    {
        return Ok(());
    }
    let o = gentle_floods(CONFIG)?;
    // The lane served the gentle namespaces (otherwise this tested nothing).
    assert!(
        o.between > 0,
        "the lane served none of the gentle floods' {:?} answers",
        o.gentle
    );
    // The lane keeps to its CPU budget (`serve/pace.rs`: three quarters of a CPU, a 2 ms
    // burst, read every 0.25 ms), so the loop keeps at least a quarter of any core they
    // share, however many namespaces the attacker floods. Asserted with margin: 85 %.
    let lane_share = o
        .lane_share
        .ok_or_else(|| anyhow::anyhow!("no lane thread"))?;
    assert!(
        lane_share <= 0.85,
        "the quiet lane used {:.0} % of a CPU",
        lane_share * 100.0
    );
    assert_busy_keeps_its_share(&o);
    Ok(())
}

/// `quiet_lane_cpu_percent = 10`: the same attack makes the lane use its whole budget, so it
/// pauses (counted) and the loop serves the gentle namespaces meanwhile; all are still
/// answered and the lane stays near a tenth of a CPU.
#[test]
fn a_small_lane_budget_binds_and_the_loop_serves_the_rest() -> anyhow::Result<()> {
    if !require_root("a_small_lane_budget_binds_and_the_loop_serves_the_rest") {
        return Ok(());
    }
    let o = gentle_floods(&format!("quiet_lane_cpu_percent = 10\n{CONFIG}"))?;
    assert!(o.between > 0, "the lane served nothing: {:?}", o.gentle);
    assert!(
        o.pauses > 0,
        "the lane never paused at a tenth of a CPU (it used {:?})",
        o.lane_share
    );
    // 10 % plus a 2 ms burst and one 0.25 ms check interval per pause; asserted: 25 %.
    let lane_share = o
        .lane_share
        .ok_or_else(|| anyhow::anyhow!("no lane thread"))?;
    assert!(
        lane_share <= 0.25,
        "the quiet lane used {:.0} % of a CPU with a 10 % budget",
        lane_share * 100.0
    );
    assert_busy_keeps_its_share(&o);
    Ok(())
}

/// `quiet_lane_cpu_percent = 0`: no lane thread at all; the loop's fair share alone serves
/// everyone.
#[test]
fn no_lane_at_zero_percent_and_everyone_still_answered() -> anyhow::Result<()> {
    if !require_root("no_lane_at_zero_percent_and_everyone_still_answered") {
        return Ok(());
    }
    let o = gentle_floods(&format!("quiet_lane_cpu_percent = 0\n{CONFIG}"))?;
    assert!(o.lane_share.is_none(), "a lane thread exists");
    assert_eq!(o.between, 0, "something served between turns");
    assert_eq!(o.pauses, 0);
    assert_busy_keeps_its_share(&o);
    Ok(())
}
