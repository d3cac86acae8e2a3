//! Portmapper benchmark (not a timed test): nsauxd vs stock rpcbind, side by side in one run.
//!
//! `cargo bench -p nsaux-tests --bench rpcbind` (as root). Measures, with the same UDP load
//! generator on loopback inside a private network namespace:
//! - UDP GETPORT answers per second and server CPU µs per answer (utime+stime from
//!   /proc/PID/stat), summed over rounds in which the servers take turns, with the median and
//!   range of the per-round CPU ratios;
//! - memory: nsauxd RSS growth per namespace at 1,000 namespaces with the portmapper on, vs the
//!   RSS of one stock rpcbind (× N for one per namespace).
//!
//! `NSAUX_BENCH_BASELINE=path` (see `nsaux_tests::bench::builds`) measures another nsauxd
//! build too, in the same run, as column `nsauxd (baseline)` with its own ratio to stock
//! rpcbind. Each build's daemon runs its throughput load, then (after stock rpcbind's) its
//! memory measurement.
//!
//! Stock rpcbind only ever runs inside its own network namespace and a private mount namespace
//! with a tmpfs on /run (so /run/rpcbind.sock, /run/rpcbind.lock and its state stay private),
//! in the foreground and without warm start (-w is not used).

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nsaux_tests::bench::{ab_summary, builds, median, print_table, range};
use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::netns::{TestNetns, in_netns_file};
use nsaux_tests::rpc::{Cred, PMAP, call, lo111, pmap, spawn_stock_rpcbind, wait_portmapper_udp};

/// Most answers per measured run.
const MAX_ANSWERS: u64 = 400_000;
/// Longest measured run.
const MAX_TIME: Duration = Duration::from_secs(4);
/// Calls in flight (override with `NSAUX_BENCH_WINDOW`).
fn window() -> usize {
    std::env::var("NSAUX_BENCH_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}
/// Namespaces for the memory measurement.
const N_NS: usize = 1000;

/// Only the portmapper: the other services have their own benchmarks.
const CONFIG: &str = "[rpcbind]\nenabled = true\n[ntp]\nenabled = false\n[dns]\nenabled = false\n";

/// `NSAUX_BENCH_SKIP_MEMORY=1` measures throughput only.
fn skip_memory() -> bool {
    std::env::var("NSAUX_BENCH_SKIP_MEMORY").is_ok_and(|v| v == "1")
}

/// Throughput rounds (override with `NSAUX_RPCBIND_BENCH_ROUNDS`): the servers take turns in
/// each round, so drift in the load of a shared machine hits all alike, and the spread of the
/// per-round ratios shows how far one figure can be trusted.
fn rounds() -> usize {
    std::env::var("NSAUX_RPCBIND_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .clamp(1, 20)
}

#[derive(Debug, Clone, Copy, Default)]
struct Load {
    answers: u64,
    secs: f64,
    cpu_us: f64,
}

impl Load {
    fn rate(&self) -> f64 {
        self.answers as f64 / self.secs
    }
    fn cpu_us_per_answer(&self) -> f64 {
        self.cpu_us / self.answers.max(1) as f64
    }
    /// All rounds of one server as one run.
    fn sum(runs: &[Self]) -> Self {
        runs.iter().fold(Self::default(), |a, r| Self {
            answers: a.answers + r.answers,
            secs: a.secs + r.secs,
            cpu_us: a.cpu_us + r.cpu_us,
        })
    }
}

/// The load generator: one UDP socket, `WINDOW` GETPORT(100000, 2, udp) calls in flight, until
/// `MAX_ANSWERS` or `MAX_TIME`. Runs inside the namespace file `ns`.
fn load(ns: &Path, server_pid: u32) -> anyhow::Result<Load> {
    let tck = nsaux_tests::bench::clk_tck() as f64;
    in_netns_file(ns, move || -> anyhow::Result<Load> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.connect(lo111())?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let args = pmap(PMAP, 2, 17, 0);
        let mut xid = 1u32;
        let mut msg = call(xid, PMAP, 2, 3, Cred::None, &args);
        let mut buf = [0u8; 512];
        let mut send = |sock: &UdpSocket, xid: &mut u32| -> std::io::Result<()> {
            *xid = xid.wrapping_add(1);
            msg[..4].copy_from_slice(&xid.to_be_bytes());
            sock.send(&msg).map(|_| ())
        };
        // Warm-up.
        for _ in 0..2000 {
            send(&sock, &mut xid)?;
            let _ = sock.recv(&mut buf);
        }
        let cpu0 = nsaux_tests::bench::cpu_ticks(server_pid)?;
        let t0 = Instant::now();
        for _ in 0..window() {
            send(&sock, &mut xid)?;
        }
        let mut answers = 0u64;
        while answers < MAX_ANSWERS && t0.elapsed() < MAX_TIME {
            match sock.recv(&mut buf) {
                Ok(n) if n >= 28 => {
                    answers += 1;
                    send(&sock, &mut xid)?;
                }
                Ok(_) => {}
                Err(_) => {
                    // Lost datagrams: refill the window.
                    for _ in 0..window() {
                        send(&sock, &mut xid)?;
                    }
                }
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let cpu1 = nsaux_tests::bench::cpu_ticks(server_pid)?;
        let cpu_us = (cpu1.saturating_sub(cpu0)) as f64 * 1e6 / tck;
        Ok(Load {
            answers,
            secs,
            cpu_us,
        })
    })?
}

/// One build's memory measurement: RSS before and with the namespaces, and the fds then.
struct Memory {
    rss_base: u64,
    rss_full: u64,
    fds: usize,
    n: usize,
    created: Duration,
}

impl Memory {
    fn growth_kib(&self) -> u64 {
        self.rss_full.saturating_sub(self.rss_base)
    }
    fn per_ns_kib(&self) -> f64 {
        self.growth_kib() as f64 / self.n.max(1) as f64
    }
}

/// RSS growth of daemon `d` (after its throughput run) with the portmapper on in `n`
/// namespaces.
fn memory(d: &Daemon, n: usize) -> anyhow::Result<Memory> {
    let rss_base = nsaux_tests::bench::rss_kib(d.pid());
    let mut all: Vec<TestNetns> = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        all.push(d.netns(&format!("m{i}"))?);
    }
    let created = t0.elapsed();
    // Poll the small `status` answer (5 listeners per namespace), not `ns list`, whose
    // megabyte of JSON would stay in the allocator and count as growth.
    wait_for("every namespace served", Duration::from_secs(120), || {
        std::thread::sleep(Duration::from_millis(200));
        let st = d.ctl_json(&["status"]).ok()?;
        (st["listeners_up"].as_u64()? == 5 * n as u64 && st["namespaces"].as_u64()? == n as u64)
            .then_some(())
    })?;
    // Let allocator caches settle.
    std::thread::sleep(Duration::from_millis(500));
    let rss_full = nsaux_tests::bench::rss_kib(d.pid());
    let fds = d.fd_count();
    drop(all);
    Ok(Memory {
        rss_base,
        rss_full,
        fds,
        n,
        created,
    })
}

/// Stock rpcbind in namespace `ns` and a private mount namespace; killed by pid on drop.
struct Stock(Child);

impl Stock {
    fn start(ns: &TestNetns) -> anyhow::Result<Self> {
        let s = Self(spawn_stock_rpcbind(ns).context("starting stock rpcbind")?);
        wait_portmapper_udp(ns, "stock rpcbind")?;
        Ok(s)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Stock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED rpcbind bench: needs root");
        return Ok(());
    }
    for tool in ["rpcbind", "unshare", "nsenter", "ip"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            bail!("the rpcbind bench needs `{tool}`");
        }
    }
    nsaux_tests::bench::build_release_daemon()?;
    let builds = builds()?;

    // Throughput and CPU: each nsauxd build, then stock rpcbind, in turn in every round.
    let mut daemons = Vec::new();
    let mut bench_ns = Vec::new();
    for b in &builds {
        let d = b.start(CONFIG)?;
        let ns = d.netns("bench")?;
        wait_portmapper_udp(&ns, "nsauxd portmapper")?;
        daemons.push(d);
        bench_ns.push(ns);
    }
    let stock_dir = tempfile::tempdir()?;
    let stock_ns = TestNetns::create(stock_dir.path(), "stock")?;
    let stock = Stock::start(&stock_ns)?;
    let mut servers: Vec<(&str, &Path, u32)> = builds
        .iter()
        .zip(&daemons)
        .zip(&bench_ns)
        .map(|((b, d), ns)| (b.label, ns.path.as_path(), d.pid()))
        .collect();
    servers.push(("stock rpcbind", &stock_ns.path, stock.pid()));
    let stock_i = servers.len() - 1;
    let mut runs: Vec<Vec<Load>> = vec![Vec::new(); servers.len()];
    for round in 0..rounds() {
        for ((name, ns, pid), runs) in servers.iter().zip(&mut runs) {
            let l = load(ns, *pid)?;
            eprintln!(
                "  round {round} {name:<17} answers {:>7}  {:>7.0}/s  {:>5.2} µs/answer",
                l.answers,
                l.rate(),
                l.cpu_us_per_answer()
            );
            runs.push(l);
        }
    }
    let stock_rss = nsaux_tests::bench::rss_kib(stock.pid());
    drop(stock);
    drop(bench_ns);
    let theirs = Load::sum(&runs[stock_i]);
    let ours: Vec<Load> = runs[..stock_i].iter().map(|r| Load::sum(r)).collect();

    // Memory: RSS growth of each build per namespace with the portmapper on.
    let n_ns = if skip_memory() { 0 } else { N_NS };
    let mut memories = Vec::new();
    for d in &daemons {
        memories.push(memory(d, n_ns)?);
    }

    let theirs_rate = theirs.rate();
    println!();
    println!(
        "portmapper benchmark: UDP GETPORT on loopback inside a namespace, one load generator"
    );
    println!(
        "(window {}, at most {MAX_ANSWERS} answers or {} s per server and round, {} rounds, summed; {} namespaces created in {})",
        window(),
        MAX_TIME.as_secs(),
        rounds(),
        n_ns,
        memories
            .iter()
            .map(|m| format!("{:.1} s", m.created.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    println!();
    // One column per nsauxd build, then stock rpcbind, then each build's ratio to it.
    let mut head = vec!["metric".to_owned()];
    head.extend(builds.iter().map(|b| b.label.to_owned()));
    head.push("stock rpcbind".to_owned());
    head.extend(builds.iter().map(|b| format!("ratio {}", b.label)));
    head.push("target".to_owned());
    let row =
        |metric: &str, ours: Vec<String>, stock: String, ratios: Vec<String>, target: &str| {
            let mut r = vec![metric.to_owned()];
            r.extend(ours);
            r.push(stock);
            r.extend(ratios);
            r.push(target.to_owned());
            r
        };
    let rate = Load::rate;
    let each = |f: &dyn Fn(usize) -> String| (0..builds.len()).map(f).collect::<Vec<_>>();
    let rows = vec![
        row(
            "GETPORT answers/s",
            each(&|i| format!("{:.0}", rate(&ours[i]))),
            format!("{theirs_rate:.0}"),
            each(&|i| format!("{:.2}×", rate(&ours[i]) / theirs_rate)),
            "",
        ),
        row(
            "server CPU µs per answer",
            each(&|i| format!("{:.2}", ours[i].cpu_us_per_answer())),
            format!("{:.2}", theirs.cpu_us_per_answer()),
            each(&|i| {
                format!(
                    "{:.2}×",
                    ours[i].cpu_us_per_answer() / theirs.cpu_us_per_answer()
                )
            }),
            "≤ 0.25×",
        ),
        row(
            "answers measured",
            each(&|i| ours[i].answers.to_string()),
            theirs.answers.to_string(),
            each(&|_| String::new()),
            "",
        ),
        row(
            "memory per namespace (KiB)",
            each(&|i| format!("{:.1}", memories[i].per_ns_kib())),
            stock_rss.to_string(),
            each(&|i| format!("{:.3}×", memories[i].per_ns_kib() / stock_rss as f64)),
            "≤ 16",
        ),
        row(
            &format!("memory for {N_NS} namespaces (MiB)"),
            each(&|i| format!("{:.1}", memories[i].growth_kib() as f64 / 1024.0)),
            format!("{:.1}", (stock_rss * N_NS as u64) as f64 / 1024.0),
            each(&|_| String::new()),
            "",
        ),
    ];
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    print_table(&head, &rows);
    println!();
    for (b, r) in builds.iter().zip(&runs) {
        let ratios: Vec<f64> = r
            .iter()
            .zip(&runs[stock_i])
            .map(|(a, s)| a.cpu_us_per_answer() / s.cpu_us_per_answer())
            .collect();
        let (lo, hi) = range(&ratios);
        println!(
            "{} / stock rpcbind CPU per answer: median of rounds {:.2}×, rounds {lo:.2}–{hi:.2}×",
            b.label,
            median(&ratios)
        );
    }
    for (b, m) in builds.iter().zip(&memories) {
        println!(
            "{} RSS: {} KiB before, {} KiB with {n_ns} namespaces ({} fds).",
            b.label, m.rss_base, m.rss_full, m.fds
        );
    }
    println!("stock rpcbind RSS: {stock_rss} KiB per instance (one per namespace).");
    // With a baseline: the two builds compared directly.
    if stock_i == 2 {
        let per_round: Vec<f64> = runs[0]
            .iter()
            .zip(&runs[1])
            .map(|(a, b)| a.cpu_us_per_answer() / b.cpu_us_per_answer())
            .collect();
        let total = ours[0].cpu_us_per_answer() / ours[1].cpu_us_per_answer();
        println!("{}", ab_summary("GETPORT", total, &per_round));
    }
    Ok(())
}
