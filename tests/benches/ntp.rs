//! NTP server benchmark: nsauxd vs chronyd, side by side, one load generator.
//!
//! `cargo bench -p nsaux-tests --bench ntp` (root; needs `chronyd`). Not a timed test: it prints
//! a table and fails only if something does not answer at all.
//!
//! * Each server runs in its own private namespace and is loaded over that namespace's
//!   loopback only: nsauxd (release build, `stratum = 10` and `local_stratum = 10`, so it
//!   answers at stratum 10 whether or not the host's kernel reports the clock synchronised;
//!   no rate limiting) and `chronyd -x` (never touches the clock and has no sources, so its
//!   `local stratum 10` always serves; `allow`, no `ratelimit`, its own temporary config, pid,
//!   drift and dump files, no command socket). Both thus answer every request with the same
//!   stratum-10 packet, which is what the load generator counts.
//! * The load generator is the same Rust client for both: one UDP socket in the server's
//!   namespace keeping up to `WINDOW` requests in flight, bounded by `REQUESTS` and `MAX_TIME`.
//! * Server CPU is `utime + stime` of the server process from `/proc/PID/stat` (all threads),
//!   read before and after each run; per answer = CPU / answers.
//! * Servers alternate for `ROUNDS` rounds so drift in machine load hits both alike; the
//!   aggregate ratio is printed with the median and range of the per-round ratios.
//! * `NSAUX_BENCH_BASELINE=path` (see `nsaux_tests::bench::builds`) adds another nsauxd build
//!   in its own namespace, as row `nsauxd (baseline)`, loaded in turn with the others in every
//!   round and compared with chronyd the same way.
//! * Every scenario runs in each `CpuMode` (issue 16): unpinned, then with the load generator
//!   and every thread of the server on different CPUs; a table each.
//! * Two *floor* rows (`nsaux_tests::floor`, issue 16): a minimal server with nsauxd's socket
//!   (dual-stack `[::]:123`, pktinfo, `SO_TIMESTAMPNS`) and one with a plain IPv4 `0.0.0.0:123`
//!   socket, each a blocking `recvmmsg` and one GSO `sendmmsg` per batch with a fixed answer:
//!   the kernel's cost per answer with the best batching. floor / chronyd is printed next to
//!   nsauxd / chronyd. `NSAUX_FLOOR_COALESCE_US=10,25,...` adds a `floor +D µs` row per delay:
//!   the same floor sleeping D µs after every batch that was not full (receive coalescing).
//! * The paced scenario also runs a probe client (one request at a time every 1 ms on its own
//!   socket) and prints its round-trip p50/p99 per server: what a light client sees next to
//!   the load (receive coalescing must not delay it).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use nsaux_tests::bench::{Chronyd, CpuMode, builds, cpu_mark};
use nsaux_tests::daemon::wait_for;
use nsaux_tests::env::{require_root, require_tool};
use nsaux_tests::floor::{Floor, FloorSpec};
use nsaux_tests::netns::{TestNetns, in_netns_file, udp_exchange};

const REQUESTS: u64 = 400_000;
const MAX_TIME: Duration = Duration::from_secs(6);
const WINDOW: u64 = 64;
const ROUNDS: usize = 5;
/// Open-loop load: requests per second, spread over `PACED_CLIENTS` client sockets.
const PACED_RATE: u64 = 40_000;
const PACED_CLIENTS: usize = 16;
const PACED_TIME: Duration = Duration::from_secs(4);
const SERVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 123);

fn request(tx: u64) -> [u8; 48] {
    let mut p = [0u8; 48];
    p[0] = 0x23; // v4, mode 3
    p[40..48].copy_from_slice(&tx.to_be_bytes());
    p
}

fn ntp_now() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    ((d.as_secs() + 2_208_988_800) << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

/// Result of one load run.
#[derive(Debug, Clone)]
struct Run {
    sent: u64,
    answers: u64,
    elapsed: Duration,
    /// Round trips of the paced run's probe client (one request at a time, every
    /// `PROBE_GAP`, on a socket of its own): what a light client sees next to the load.
    probe: Vec<Duration>,
}

/// Time between two requests of the paced run's probe client.
const PROBE_GAP: Duration = Duration::from_millis(1);

/// The probe client: one request at a time on its own socket until `stop`, round trips.
fn probe(stop: &std::sync::atomic::AtomicBool) -> anyhow::Result<Vec<Duration>> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.connect(SERVER)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = [0u8; 512];
    let mut rtts = Vec::new();
    let mut i = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let t = Instant::now();
        s.send(&request(i))?;
        i += 1;
        // A lost probe (timeout) is left out; a late answer to an earlier one is skipped.
        while let Ok(n) = s.recv(&mut buf) {
            if n == 48 && buf[24..32] == (i - 1).to_be_bytes() {
                rtts.push(t.elapsed());
                break;
            }
        }
        std::thread::sleep(PROBE_GAP);
    }
    Ok(rtts)
}

/// The load generator (runs inside the server's namespace): keeps up to `WINDOW` requests in
/// flight on one socket; a reply must be a 48-byte mode-4 stratum-10 packet to count.
fn load() -> anyhow::Result<Run> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.connect(SERVER)?;
    s.set_read_timeout(Some(Duration::from_millis(20)))?;
    let start = Instant::now();
    let (mut sent, mut answers, mut in_flight) = (0u64, 0u64, 0u64);
    let mut buf = [0u8; 512];
    let base = ntp_now();
    while sent < REQUESTS && start.elapsed() < MAX_TIME {
        while in_flight < WINDOW && sent < REQUESTS {
            match s.send(&request(base.wrapping_add(sent))) {
                Ok(_) => {
                    sent += 1;
                    in_flight += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => break,
                Err(e) => return Err(e.into()),
            }
        }
        match s.recv(&mut buf) {
            Ok(n) => {
                in_flight = in_flight.saturating_sub(1);
                if n == 48 && buf[0] & 7 == 4 && buf[1] == 10 {
                    answers += 1;
                }
            }
            // Lost somewhere (queue overflow): start a fresh window.
            Err(_) => in_flight = 0,
        }
    }
    // Drain what is still on its way so it is counted (its CPU is already spent).
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    while in_flight > 0 {
        match s.recv(&mut buf) {
            Ok(n) => {
                in_flight -= 1;
                if n == 48 && buf[0] & 7 == 4 && buf[1] == 10 {
                    answers += 1;
                }
            }
            Err(_) => break,
        }
    }
    Ok(Run {
        sent,
        answers,
        elapsed: start.elapsed(),
        probe: Vec::new(),
    })
}

/// The open-loop load generator: `PACED_RATE` requests per second for `PACED_TIME`, round
/// robin over `PACED_CLIENTS` sockets (distinct client ports), whatever the server answers.
/// Arrivals then come a few at a time, as from many independent clients, so the per-wakeup
/// cost of each server counts, not only its cost at saturation.
fn paced_load() -> anyhow::Result<Run> {
    let socks = (0..PACED_CLIENTS)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.connect(SERVER)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    // The probe thread inherits this thread's namespace and CPU affinity.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || probe(&stop))
    };
    let start = Instant::now();
    let (mut sent, mut answers) = (0u64, 0u64);
    let mut buf = [0u8; 512];
    let base = ntp_now();
    let mut drain = |answers: &mut u64| {
        for s in &socks {
            while let Ok(n) = s.recv(&mut buf) {
                if n == 48 && buf[0] & 7 == 4 && buf[1] == 10 {
                    *answers += 1;
                }
            }
        }
    };
    loop {
        let elapsed = start.elapsed();
        if elapsed >= PACED_TIME {
            break;
        }
        let due = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX) * PACED_RATE / 1_000_000;
        while sent < due {
            let s = &socks[(sent % PACED_CLIENTS as u64) as usize];
            let _ = s.send(&request(base.wrapping_add(sent)));
            sent += 1;
        }
        drain(&mut answers);
        std::thread::sleep(Duration::from_micros(100));
    }
    std::thread::sleep(Duration::from_millis(50));
    drain(&mut answers);
    let elapsed = start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let probe = prober
        .join()
        .map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
    Ok(Run {
        sent,
        answers,
        elapsed,
        probe,
    })
}

/// Percentile `p` of `rtts`, µs (NaN when empty).
fn pct_us(rtts: &[Duration], p: f64) -> f64 {
    if rtts.is_empty() {
        return f64::NAN;
    }
    nsaux_tests::bench::percentile(rtts, p).as_secs_f64() * 1e6
}

/// One measured run against the server with process `pid` in namespace file `ns`.
fn measure(
    ns: &std::path::Path,
    pid: u32,
    paced: bool,
    mode: CpuMode,
) -> anyhow::Result<(Run, u64, u64)> {
    mode.pin_server(pid)?;
    // Per-thread schedstat since this mark, with the process's utime + stime as the figure
    // for threads that exit in the window (`CpuMark::spent_ns`).
    let mark = cpu_mark(pid);
    let run = in_netns_file(ns, move || {
        mode.pin_load_thread()?;
        if paced { paced_load() } else { load() }
    })??;
    Ok((run, mark.ticks_since(), mark.spent_ns()))
}

fn main() -> anyhow::Result<()> {
    // Started again as a floor server: serves until killed.
    nsaux_tests::floor::child_main()?;
    if !require_root("bench ntp") || !require_tool("bench ntp", "chronyd") {
        return Ok(());
    }
    nsaux_tests::bench::build_release_daemon()?;
    let config = "[ntp]\nstratum = 10\nlocal_stratum = 10\nrate_limit = { enabled = false }\n[rpcbind]\nenabled = false\n[dns]\nenabled = false\n";
    // Every nsauxd build (`NSAUX_BENCH_BASELINE` adds one), each in its own namespace.
    let mut nsauxds = Vec::new();
    for b in builds()? {
        let d = b.start(config)?;
        let ns = d.netns("bench-nsaux")?;
        nsauxds.push((b.label, d, ns));
    }
    // chronyd's namespace lives outside the daemon's watched directory: nsauxd never sees it.
    let other = tempfile::tempdir()?;
    let chrony_ns = TestNetns::create(other.path(), "bench-chrony")?;
    let chrony = Chronyd::start(&chrony_ns)?;
    // The floor servers, each in a namespace of its own (outside the daemon's directory too).
    let mut floors = Vec::new();
    let mut specs = vec![
        ("floor".to_owned(), FloorSpec::ntp_dual_stack()),
        ("floor (AF_INET)".to_owned(), FloorSpec::ntp_v4()),
    ];
    // Floors with a receive coalescing delay (`NSAUX_FLOOR_COALESCE_US`).
    for d in nsaux_tests::floor::coalesce_delays()? {
        let spec = FloorSpec {
            coalesce_us: d,
            ..FloorSpec::ntp_dual_stack()
        };
        specs.push((format!("floor +{d} µs"), spec));
    }
    for (i, (label, spec)) in specs.into_iter().enumerate() {
        let label: &'static str = Box::leak(label.into_boxed_str());
        let ns = TestNetns::create(other.path(), &format!("bench-floor{i}"))?;
        let floor = Floor::start(&ns, spec)?;
        floors.push((label, floor, ns));
    }
    let probe = request(ntp_now());
    let all_ns = nsauxds
        .iter()
        .map(|(_, _, ns)| ns)
        .chain(floors.iter().map(|(_, _, ns)| ns))
        .chain([&chrony_ns]);
    for ns in all_ns {
        wait_for("server answers", Duration::from_secs(10), || {
            let p = probe;
            in_netns_file(&ns.path, move || {
                udp_exchange(SERVER, &p, Duration::from_millis(200))
            })
            .ok()
            .and_then(Result::ok)
            .flatten()
        })?;
    }
    // The nsauxd builds first, then the floors, chronyd last (the reference of every ratio).
    let mut servers: Vec<(&str, &std::path::Path, u32)> = nsauxds
        .iter()
        .map(|(label, d, ns)| (*label, ns.path.as_path(), d.pid()))
        .collect();
    for (label, floor, ns) in &floors {
        servers.push((label, ns.path.as_path(), floor.pid()));
    }
    servers.push(("chronyd", &chrony_ns.path, chrony.child.id()));
    let chrony_i = servers.len() - 1;
    let tck = nsaux_tests::bench::clk_tck();
    let mut tables = Vec::new();
    for mode in CpuMode::all() {
        for (paced, label) in [
            (
                false,
                format!(
                    "saturating: one client, {WINDOW} requests in flight, up to {REQUESTS} requests or {MAX_TIME:?}"
                ),
            ),
            (
                true,
                format!(
                    "paced: {PACED_RATE} requests/s from {PACED_CLIENTS} client sockets for {PACED_TIME:?}"
                ),
            ),
        ] {
            // NTP_BENCH=saturating|paced runs one scenario only (for profiling).
            let only = std::env::var("NTP_BENCH").unwrap_or_default();
            if !only.is_empty() && !label.starts_with(&only) {
                continue;
            }
            let label = format!("{label}, {}", mode.label());
            println!("ntp bench, {label}, {ROUNDS} rounds");
            let mut totals = vec![(0u64, 0u64, Duration::ZERO, 0u64, 0u64); servers.len()];
            // The probe client's round trips, per server, all rounds.
            let mut probes: Vec<Vec<Duration>> = vec![Vec::new(); servers.len()];
            // Each server / chronyd in each round (exact CPU), for the median.
            let mut round_ratios = vec![Vec::with_capacity(ROUNDS); servers.len()];
            for round in 0..ROUNDS {
                let mut per_answer_ns = vec![0f64; servers.len()];
                for (i, (name, ns, pid)) in servers.iter().enumerate() {
                    let (run, ticks, ns) = measure(ns, *pid, paced, mode)?;
                    let us = ticks as f64 * 1e6 / tck as f64;
                    println!(
                        "  round {round} {name:<17} sent {:>7}  answers {:>7}  {:>8.0}/s  cpu {:>7.0} ms  {:>5.2} µs/answer  (schedstat {:>5.2})",
                        run.sent,
                        run.answers,
                        run.answers as f64 / run.elapsed.as_secs_f64(),
                        us / 1000.0,
                        us / run.answers.max(1) as f64,
                        ns as f64 / 1000.0 / run.answers.max(1) as f64
                    );
                    if run.answers == 0 {
                        bail!("{name} did not answer");
                    }
                    per_answer_ns[i] = ns as f64 / run.answers.max(1) as f64;
                    if !run.probe.is_empty() {
                        println!(
                            "  round {round} {name:<17} probe round trip p50 {:>6.0} µs  p99 {:>6.0} µs  ({} probes)",
                            pct_us(&run.probe, 50.0),
                            pct_us(&run.probe, 99.0),
                            run.probe.len()
                        );
                    }
                    probes[i].extend_from_slice(&run.probe);
                    let t = &mut totals[i];
                    t.0 += run.sent;
                    t.1 += run.answers;
                    t.2 += run.elapsed;
                    t.3 += ticks;
                    t.4 += ns;
                }
                for (ratios, ns) in round_ratios.iter_mut().zip(&per_answer_ns) {
                    ratios.push(ns / per_answer_ns[chrony_i]);
                }
            }
            tables.push((label, totals, round_ratios, probes));
        }
    }
    type Total = (u64, u64, Duration, u64, u64);
    let per_answer = |t: &Total| t.3 as f64 * 1e6 / tck as f64 / t.1.max(1) as f64;
    let per_answer_exact = |t: &Total| t.4 as f64 / 1000.0 / t.1.max(1) as f64;
    for (label, totals, round_ratios, probes) in &tables {
        println!();
        println!("{label}");
        println!(
            "| server            | answers/s | server CPU µs/answer (utime+stime) | (schedstat) | answered/sent |"
        );
        println!(
            "|-------------------|----------:|-----------------------------------:|------------:|--------------:|"
        );
        for ((name, _, _), t) in servers.iter().zip(totals) {
            println!(
                "| {name:<17} | {:>9.0} | {:>34.2} | {:>11.2} | {:>12.1}% |",
                t.1 as f64 / t.2.as_secs_f64(),
                per_answer(t),
                per_answer_exact(t),
                100.0 * t.1 as f64 / t.0.max(1) as f64
            );
        }
        if probes.iter().any(|p| !p.is_empty()) {
            println!(
                "probe client (one request at a time every {PROBE_GAP:?} next to the paced load), round trip µs:"
            );
            for ((name, _, _), p) in servers.iter().zip(probes) {
                println!(
                    "  {name:<17} p50 {:>6.0}  p99 {:>6.0}  ({} probes)",
                    pct_us(p, 50.0),
                    pct_us(p, 99.0),
                    p.len()
                );
            }
        }
        // The target is for load that batching can serve; the paced load (a few
        // requests per wakeup) measures the per-datagram floor both servers share.
        let target = if label.starts_with("saturating") {
            "target ≤ 0.70×"
        } else {
            "no target: a few requests per wakeup leave nothing to batch"
        };
        let chrony = &totals[chrony_i];
        for (i, (name, _, _)) in servers.iter().enumerate().take(chrony_i) {
            let ratio = per_answer(&totals[i]) / per_answer(chrony);
            let exact = per_answer_exact(&totals[i]) / per_answer_exact(chrony);
            let median = nsaux_tests::bench::median(&round_ratios[i]);
            let (lo, hi) = nsaux_tests::bench::range(&round_ratios[i]);
            println!(
                "{name} / chronyd CPU per answer: {ratio:.2}× (schedstat {exact:.2}×; median of rounds {median:.2}×, rounds {lo:.2}–{hi:.2}×; {target})"
            );
        }
        // nsauxd over the floor: what nsauxd costs beyond the kernel's share.
        if let Some(floor_i) = servers.iter().position(|(name, _, _)| *name == "floor") {
            let over = per_answer_exact(&totals[0]) / per_answer_exact(&totals[floor_i]);
            let floor_ratio = per_answer_exact(&totals[floor_i]) / per_answer_exact(chrony);
            let verdict = if !label.starts_with("saturating") {
                ""
            } else if floor_ratio > 0.70 {
                "; the floor is above the 0.70× target: only fewer wakeups per answer (receive coalescing, the `floor +D µs` rows) go below it"
            } else {
                "; the floor is below the 0.70× target"
            };
            println!(
                "nsauxd / floor CPU per answer: {over:.2}× (schedstat; floor / chronyd {floor_ratio:.2}×{verdict})"
            );
        }
        // With a baseline (index 1): the two builds compared directly, exact CPU.
        if servers
            .get(1)
            .is_some_and(|(name, _, _)| *name == nsaux_tests::bench::BASELINE_LABEL)
        {
            let per_round: Vec<f64> = round_ratios[0]
                .iter()
                .zip(&round_ratios[1])
                .map(|(a, b)| a / b)
                .collect();
            let total = per_answer_exact(&totals[0]) / per_answer_exact(&totals[1]);
            let what = label.split(':').next().unwrap_or_default();
            println!(
                "{}",
                nsaux_tests::bench::ab_summary(&format!("{what} (schedstat)"), total, &per_round)
            );
        }
    }
    Ok(())
}
