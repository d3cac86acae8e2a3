//! Core benchmark (issue 2): namespaces are created in-process (unshare + bind mount, as
//! `ip netns add` does), and for N = 100, 1,000 and 10,000 we print:
//! daemon RSS growth per namespace, namespace-created → serving latency (p50/p99), delete →
//! fds released latency (p50/p99), and the daemon's CPU time while idle for 10 s.
//!
//! Run: `cargo bench -p nsaux-tests --bench core` (root). `NSAUX_BENCH_SIZES=100,1000` picks
//! the sizes. The `ident` service is on (4 listeners per namespace: UDP and TCP on v4 and v6),
//! so the per-namespace figure covers the core plus one small service's sockets and tasks.
//!
//! A second table gives what a namespace costs with the product services all on (portmapper,
//! DNS, NTP; `ident` is a diagnostic and stays off), over each of `NSAUX_BENCH_ALL_SIZES`
//! namespaces (default 1,000 and 2,000, capped to the fd limit): RSS growth and fds per
//! namespace, created -> all three answering (p50/p99), idle CPU, a restarted daemon's time
//! from start to every listener of every namespace bound (the last change of its fd count) and
//! the CPU it used for that, and, restarted again, to all namespaces found answering on all
//! three (every namespace asked at once as soon as the fd count is whole: an upper bound by
//! the polling), and deleted -> fds released (p50/p99, also from the unlink's return).
//!
//! `NSAUX_BENCH_BASELINE=path` (see `nsaux_tests::bench::builds`) measures another nsauxd
//! build too, in the same run, as row `nsauxd (baseline)` after `nsauxd` at every size and in
//! the second table (each measurement with a fresh daemon, as for `nsauxd`).

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::mount::{MntFlags, umount2};
use nix::sched::{CloneFlags, setns};
use nsaux_tests::bench::{
    Build, builds, cpu_ns_since, cpu_time, percentile, print_table, rss_kib, task_cpu_ns,
};
use nsaux_tests::daemon::wait_for;
use nsaux_tests::service_probe::{ProbeSet, probe_all};

/// Only the core and ident: the services have their own benchmarks.
const CONFIG: &str = "[ident]\nenabled = true\n\n[dns]\nenabled = false\n\n[ntp]\nenabled = false\n\n[rpcbind]\nenabled = false\n";
/// The product services all on, with the DNS resolver reading no host files.
/// `NSAUX_CORE_DNS_V4_ONLY=1` serves DNS on 127.0.0.53 alone (issue 16 counts the default `::1`
/// endpoint separately).
fn all_services_config(etc: &Path) -> String {
    let v4_only = std::env::var("NSAUX_CORE_DNS_V4_ONLY").is_ok_and(|v| v == "1");
    format!(
        "[ident]\nenabled = false\n\n[rpcbind]\nenabled = true\n\n[ntp]\nenabled = true\n\n\
         [dns]\nenabled = true\nnetns_etc_dir = \"{}\"\nlocal_domains = [\"lan\"]\n\
         records = [{{ name = \"c.lan\", addr = \"10.0.0.9\" }}]\n{}",
        etc.display(),
        if v4_only {
            "addresses = [\"127.0.0.53\"]\n"
        } else {
            ""
        }
    )
}
const IDENT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    7867,
));
/// Sockets the daemon holds per namespace with `ident` on (the namespace itself is held by
/// one of them, not by its file).
const FDS_PER_NS: usize = 4;
/// Deletions timed per size (timing needs an fd count per poll, which grows with N).
const DELETE_SAMPLES: usize = 100;

/// Polls the ident service from the calling thread's namespace until it answers. Non-blocking
/// with 50 µs sleeps: `SO_RCVTIMEO` is rounded up to whole jiffies (4 ms at HZ=250), which would
/// swamp what we measure.
fn probe(sock: &UdpSocket, deadline: Instant) -> anyhow::Result<()> {
    let mut buf = [0u8; 512];
    loop {
        sock.send_to(b"?", IDENT)?;
        for _ in 0..4 {
            std::thread::sleep(Duration::from_micros(50));
            match sock.recv_from(&mut buf) {
                Ok(_) => return Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::ConnectionRefused
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "namespace not served within 5 s");
    }
}

struct Row {
    n: usize,
    rss_per_ns_kib: f64,
    up_p50: Duration,
    up_p99: Duration,
    del_p50: Duration,
    del_p99: Duration,
    idle_cpu: Duration,
    /// The same from schedstat: exact, where `utime + stime` counts in 10 ms units.
    idle_cpu_exact: Duration,
}

fn run(build: &Build, n: usize) -> anyhow::Result<Row> {
    let d = build.start(CONFIG)?;
    let pid = d.pid();
    let dir = d.netns_dir();
    std::thread::sleep(Duration::from_millis(200));
    let rss0 = rss_kib(pid);
    let fds0 = d.fd_count();

    // Create all namespaces on one thread that returns home after each.
    let dir2 = dir.clone();
    let up: Vec<Duration> = std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
        let home = File::open("/proc/thread-self/ns/net")?;
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            nsaux_tests::netns::create_on_this_thread(&dir2, &format!("b{i}"))?;
            let t0 = Instant::now();
            let sock = UdpSocket::bind("127.0.0.1:0")?;
            sock.set_nonblocking(true)?;
            probe(&sock, t0 + Duration::from_secs(5)).with_context(|| format!("namespace b{i}"))?;
            lat.push(t0.elapsed());
            drop(sock);
            setns(home.as_fd(), CloneFlags::CLONE_NEWNET).context("setns home")?;
        }
        Ok(lat)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("creator thread panicked"))?
    .map_err(|e| {
        let log = d.log();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        anyhow::anyhow!(
            "{e:#}; daemon log tail (newest first):\n{}",
            tail.join("\n")
        )
    })?;

    let mut slowest: Vec<(usize, Duration)> = up.iter().copied().enumerate().collect();
    slowest.sort_by_key(|&(_, d)| std::cmp::Reverse(d));
    let top: Vec<String> = slowest
        .iter()
        .take(3)
        .map(|(i, d)| format!("b{i} {}", ms(*d)))
        .collect();
    eprintln!(
        "  {} {n} namespaces: slowest to serve: {}",
        build.label,
        top.join(", ")
    );

    wait_for("all fds open", Duration::from_secs(60), || {
        (d.fd_count() >= fds0 + n * FDS_PER_NS).then_some(())
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let rss_n = rss_kib(pid);

    let cpu0 = cpu_time(pid);
    let exact0 = task_cpu_ns(pid);
    std::thread::sleep(Duration::from_secs(10));
    let idle_cpu = cpu_time(pid).saturating_sub(cpu0);
    let idle_cpu_exact = Duration::from_nanos(cpu_ns_since(pid, &exact0));

    // Delete: time a sample one by one, then the rest in bulk.
    let mut del = Vec::new();
    for i in 0..n {
        let path = dir.join(format!("b{i}"));
        let before = d.fd_count();
        let t0 = Instant::now();
        umount2(&path, MntFlags::MNT_DETACH)?;
        std::fs::remove_file(&path)?;
        if i < DELETE_SAMPLES {
            wait_for("fds released", Duration::from_secs(10), || {
                (d.fd_count() + FDS_PER_NS <= before).then_some(())
            })?;
            del.push(t0.elapsed());
        }
    }
    wait_for("all released", Duration::from_secs(120), || {
        (d.fd_count() <= fds0).then_some(())
    })?;
    Ok(Row {
        n,
        rss_per_ns_kib: (rss_n.saturating_sub(rss0)) as f64 / n as f64,
        up_p50: percentile(&up, 50.0),
        up_p99: percentile(&up, 99.0),
        del_p50: percentile(&del, 50.0),
        del_p99: percentile(&del, 99.0),
        idle_cpu,
        idle_cpu_exact,
    })
}

/// What a namespace costs with the product services on, over `n` namespaces.
struct AllRow {
    n: usize,
    rss_per_ns_kib: f64,
    fds_per_ns: f64,
    /// Created -> portmapper, DNS and NTP all answering.
    up_p50: Duration,
    up_p99: Duration,
    idle_cpu: Duration,
    /// The same from schedstat (exact).
    idle_cpu_exact: Duration,
    /// Daemon started with the `n` namespaces present -> every listener of every namespace
    /// bound (the last change of its fd count, once back at the figure above).
    start_bound: Duration,
    /// The restarted daemon's CPU time until every listener was bound (plus 300 ms idle).
    start_cpu: Duration,
    /// Daemon started with the `n` namespaces present -> all of them served (all three),
    /// found by probing each in turn: an upper bound that includes the probing.
    start_all: Duration,
    /// Deleted -> every fd of the namespace released.
    del_p50: Duration,
    del_p99: Duration,
    /// The same from the unlink's return.
    del_unlinked_p99: Duration,
}

/// Waits until the daemon's fd count stops changing (listeners come up asynchronously), at
/// least `floor`. Not by polling `ns list`: a 1,000-entry answer is built in the daemon's heap
/// and would be counted as per-namespace memory.
fn settled_fds(d: &nsaux_tests::daemon::Daemon, floor: usize) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = d.fd_count();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = d.fd_count();
        if now == last && now > floor {
            return Ok(now);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "fd count still changing after 120 s"
        );
        last = now;
    }
}

/// The fds a namespace costs with the configuration the all-services rows run
/// ([`all_services_config`]: 8 by default, 6 with DNS on 127.0.0.53 alone), measured on one
/// namespace for each build, plus room for a DNS upstream socket: sizes those runs to the fd
/// limit. Measured, not a constant: the count follows the configured addresses and the build.
fn fds_per_ns_all(builds: &[Build]) -> anyhow::Result<usize> {
    let mut most = 0;
    for build in builds {
        let etc = tempfile::tempdir()?;
        let d = build.start(&all_services_config(etc.path()))?;
        std::thread::sleep(Duration::from_millis(200));
        let fds0 = d.fd_count();
        let _ns = d.netns("fd-probe")?;
        let fds = settled_fds(&d, fds0)?;
        most = most.max(fds.saturating_sub(fds0));
    }
    Ok(most + 1)
}

/// RSS growth, fds, lifecycle latencies and idle CPU per namespace with the product services
/// on, over `n` namespaces.
fn run_all_services(build: &Build, n: usize) -> anyhow::Result<AllRow> {
    let etc = tempfile::tempdir()?;
    let mut d = build.start(&all_services_config(etc.path()))?;
    let pid = d.pid();
    std::thread::sleep(Duration::from_millis(200));
    let rss0 = rss_kib(pid);
    let fds0 = d.fd_count();
    let dir = d.netns_dir();
    let dir2 = dir.clone();
    let up: Vec<Duration> = std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
        let home = File::open("/proc/thread-self/ns/net")?;
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            nsaux_tests::netns::create_on_this_thread(&dir2, &format!("a{i}"))?;
            let t0 = Instant::now();
            probe_all(t0 + Duration::from_secs(5)).with_context(|| format!("namespace a{i}"))?;
            lat.push(t0.elapsed());
            setns(home.as_fd(), CloneFlags::CLONE_NEWNET).context("setns home")?;
        }
        Ok(lat)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("creator thread panicked"))??;
    let fds_n = settled_fds(&d, fds0 + n)?;
    let rss = rss_kib(pid).saturating_sub(rss0) as f64 / n as f64;
    let fds = fds_n.saturating_sub(fds0) as f64 / n as f64;
    let cpu0 = cpu_time(pid);
    let exact0 = task_cpu_ns(pid);
    std::thread::sleep(Duration::from_secs(10));
    let idle_cpu = cpu_time(pid).saturating_sub(cpu0);
    let idle_cpu_exact = Duration::from_nanos(cpu_ns_since(pid, &exact0));
    // Only now check that every service is up everywhere (the figures are of a served set).
    let list = d.ns_list()?;
    anyhow::ensure!(list.len() == n, "{} namespaces listed of {n}", list.len());
    for ns in &list {
        for s in ["rpcbind", "ntp", "dns"] {
            anyhow::ensure!(
                ns["services"][s]["state"] == "up",
                "{s} not up in {}",
                ns["name"]
            );
        }
    }
    // Started with all of them present, twice. First from the start to every listener bound:
    // the fds a namespace costs, in every namespace, and then the count still for 300 ms; the
    // time is that of its last change. Not the moment the count first reaches the total: a
    // daemon starting many namespaces at once holds their files (and not yet registered
    // sockets) meanwhile, so the total is crossed before the last listener is up. Polled every
    // 1 ms (`fd_count` is one `stat` on Linux >= 6.2). And the CPU the daemon used for that.
    let target = fds0 + n * (fds.floor() as usize).max(1);
    d.stop()?;
    let t0 = Instant::now();
    d.restart()?;
    let bound_deadline = Instant::now() + Duration::from_secs(60);
    let (mut last, mut changed) = (d.fd_count(), t0.elapsed());
    let mut reached = false;
    loop {
        let now = d.fd_count();
        if now != last {
            (last, changed) = (now, t0.elapsed());
        }
        reached |= now >= target;
        if reached && t0.elapsed() > changed + Duration::from_millis(300) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < bound_deadline,
            "listeners not all bound within 60 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let start_bound = changed;
    // The daemon's CPU from its start to here (all its threads, 10 ms ticks).
    let start_cpu = cpu_time(d.pid());
    // Then from the start to the last namespace answering on all three services: the probe
    // sockets are made inside every namespace before the start, and once the fd count reaches
    // the total all queries go out at once, again every 5 ms to those not yet answered. An
    // upper bound by the polling (the answers of 2,000 namespaces are read in turn).
    let names: Vec<String> = (0..n).map(|i| format!("a{i}")).collect();
    let probes = ProbeSet::open(&dir, &names)?;
    d.stop()?;
    let t0 = Instant::now();
    d.restart()?;
    while d.fd_count() < target {
        anyhow::ensure!(
            Instant::now() < bound_deadline + Duration::from_secs(60),
            "listeners not all bound within 60 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    probes.until_answered(Instant::now() + Duration::from_secs(10))?;
    let start_all = t0.elapsed();
    settled_fds(&d, n)?;
    // A namespace's fds as measured above, whole.
    let per_ns = (fds.floor() as usize).max(1);
    // Delete: time a sample one by one (until its fds are gone), then the rest in bulk. Also
    // timed from the unlink's return (the daemon learns of a deletion from the unlink; the
    // unmount before it is the kernel's, and with thousands of mounts it alone can take
    // milliseconds on a loaded machine).
    let mut del = Vec::new();
    let mut del_unlinked = Vec::new();
    for i in 0..n {
        let path = dir.join(format!("a{i}"));
        let before = d.fd_count();
        let t0 = Instant::now();
        umount2(&path, MntFlags::MNT_DETACH)?;
        std::fs::remove_file(&path)?;
        let unlinked = Instant::now();
        if i < DELETE_SAMPLES {
            wait_for("fds released", Duration::from_secs(10), || {
                (d.fd_count() + per_ns <= before).then_some(())
            })?;
            del.push(t0.elapsed());
            del_unlinked.push(unlinked.elapsed());
        }
    }
    Ok(AllRow {
        n,
        rss_per_ns_kib: rss,
        fds_per_ns: fds,
        up_p50: percentile(&up, 50.0),
        up_p99: percentile(&up, 99.0),
        idle_cpu,
        idle_cpu_exact,
        start_bound,
        start_cpu,
        start_all,
        del_p50: percentile(&del, 50.0),
        del_p99: percentile(&del, 99.0),
        del_unlinked_p99: percentile(&del_unlinked, 99.0),
    })
}

/// The idle CPU cell: `utime + stime` (10 ms units: a fraction of a millisecond of work can
/// show as 10 ms) and the exact on-CPU time from schedstat.
fn idle(ticks: Duration, exact: Duration) -> String {
    format!(
        "{} ms ({:.2} ms exact)",
        ticks.as_millis(),
        exact.as_secs_f64() * 1e3
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the core benchmark needs root (namespaces)");
        return Ok(());
    }
    let sizes: Vec<usize> = std::env::var("NSAUX_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1_000, 10_000]);
    // The daemon raises its fd limit as far as it may; without CAP_SYS_RESOURCE that is the
    // hard limit it inherits. Each namespace here costs FDS_PER_NS fds.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    let fit = usize::try_from(hard.saturating_sub(200)).unwrap_or(usize::MAX) / FDS_PER_NS;
    let mut notes = Vec::new();
    let sizes: Vec<usize> = sizes
        .into_iter()
        .map(|n| {
            if n > fit {
                let capped = fit / 1000 * 1000;
                notes.push(format!("{n} namespaces need {} fds; the fd hard limit here is {hard} (no CAP_SYS_RESOURCE to raise it): measured {capped} instead", n * FDS_PER_NS));
                capped
            } else {
                n
            }
        })
        .collect();
    let builds = builds()?;
    let all_sizes: Vec<usize> = std::env::var("NSAUX_BENCH_ALL_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 2_000]);
    let per_ns_all = if all_sizes.is_empty() {
        1
    } else {
        let per_ns = fds_per_ns_all(&builds)?;
        eprintln!(
            "core bench: all-services sizes capped for {per_ns} fds per namespace \
             (measured on one namespace, the most of the builds, +1 for an upstream socket)"
        );
        per_ns
    };
    let fit_all = usize::try_from(hard.saturating_sub(200)).unwrap_or(usize::MAX) / per_ns_all;
    let all_sizes: Vec<usize> = all_sizes
        .into_iter()
        .map(|n| {
            if n > fit_all {
                notes.push(format!(
                    "all services: {n} namespaces may need {} fds; the fd hard limit here is {hard}: measured {fit_all} instead",
                    n * per_ns_all
                ));
                fit_all
            } else {
                n
            }
        })
        .collect();
    let mut rows = Vec::new();
    for n in sizes {
        for b in &builds {
            eprintln!("core bench: {} {n} namespaces ...", b.label);
            let r = run(b, n)?;
            rows.push(vec![
                b.label.to_owned(),
                r.n.to_string(),
                format!("{:.1} KiB", r.rss_per_ns_kib),
                ms(r.up_p50),
                ms(r.up_p99),
                ms(r.del_p50),
                ms(r.del_p99),
                idle(r.idle_cpu, r.idle_cpu_exact),
            ]);
        }
    }
    println!(
        "\nnsauxd core (ident on: 4 listeners per namespace), {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print_table(
        &[
            "daemon",
            "namespaces",
            "RSS / netns",
            "up p50",
            "up p99",
            "release p50",
            "release p99",
            "idle CPU 10 s",
        ],
        &rows,
    );
    let mut all_rows = Vec::new();
    for &all_n in &all_sizes {
        for b in &builds {
            eprintln!(
                "core bench: {} {all_n} namespaces, all product services on ...",
                b.label
            );
            let r = run_all_services(b, all_n)?;
            all_rows.push(vec![
                b.label.to_owned(),
                r.n.to_string(),
                format!("{:.1} KiB", r.rss_per_ns_kib),
                format!("{:.2}", r.fds_per_ns),
                ms(r.up_p50),
                ms(r.up_p99),
                idle(r.idle_cpu, r.idle_cpu_exact),
                ms(r.start_bound),
                format!("{} ms", r.start_cpu.as_millis()),
                ms(r.start_all),
                ms(r.del_p50),
                ms(r.del_p99),
                ms(r.del_unlinked_p99),
            ]);
        }
    }
    println!("\nnsauxd with the portmapper, DNS and NTP on (ident off)");
    print_table(
        &[
            "daemon",
            "namespaces",
            "RSS / netns",
            "fds / netns",
            "up (all 3) p50",
            "up (all 3) p99",
            "idle CPU 10 s",
            "start -> all bound",
            "start CPU",
            "start -> all probed",
            "release p50",
            "release p99",
            "p99 from unlink",
        ],
        &all_rows,
    );
    for n in notes {
        println!("note: {n}");
    }
    Ok(())
}
