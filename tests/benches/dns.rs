//! DNS benchmark (issue 4). Not a timed test: run `cargo bench -p nsaux-tests --bench dns`
//! (root; needs dnsperf, dnsmasq, unbound, dig).
//!
//! 1. Cache hits: nsauxd, dnsmasq and unbound (1 thread) each serve the same cached name on
//!    127.0.0.53:53 in their own namespace, forwarding to the same kind of origin (an unbound
//!    with local data on 127.0.0.2 in that namespace, queried once to fill the cache). The
//!    same load generator (dnsperf, same flags, bounded in time) runs against each in turn,
//!    for `ROUNDS` rounds so drift in machine load hits all alike; we print answers/s and the
//!    server's CPU time per answer (exact on-CPU time of all its threads, from schedstat), per
//!    round and in total, and the median of the per-round ratios to unbound. Once unpinned,
//!    once with dnsperf and the server on different CPUs (`CpuMode`; issue 16), a table each.
//!    A *floor* row (`nsaux_tests::floor`, issue 16): a minimal server with nsauxd's socket
//!    (IPv4 bound to 127.0.0.53, no receive control messages), a blocking `recvmmsg` and one GSO
//!    `sendmmsg` per batch, answering every query with a fixed A record and no protocol work:
//!    the kernel's cost per answer with the best batching, printed as floor / unbound next to
//!    nsauxd / unbound. `NSAUX_FLOOR_COALESCE_US=10,25,...` adds a `floor +D µs` row per delay:
//!    the same floor sleeping D µs after every batch that was not full (receive coalescing).
//!    dnsperf's average and maximum latency are printed per round and per server.
//! 2. Memory: nsauxd with only the resolver on, N namespaces (default 1,000) each answering
//!    a local record (no cache entries); RSS growth / N.
//!
//! `NSAUX_BENCH_BASELINE=path` (see `nsaux_tests::bench::builds`) measures another nsauxd
//! build too, in the same run: row `nsauxd (baseline)` in both tables, its own namespace and
//! origin in part 1, loaded in turn with the others in every round.
//!
//! `NSAUX_DNS_BENCH_SECS` (default 3) sets the load duration of one round,
//! `NSAUX_DNS_BENCH_ROUNDS` (default 9) the rounds, `NSAUX_DNS_BENCH_NS` the namespace count;
//! many short rounds because nsauxd's CPU per answer varies by up to 1.8× between rounds with
//! where the scheduler puts dnsperf's threads, and the median needs many samples.

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::mount::{MntFlags, umount2};
use nix::sched::{CloneFlags, setns};
use nsaux_tests::bench::{
    BASELINE_LABEL, Build, CpuMode, ab_summary, builds, cpu_mark, median, print_table, range,
    rss_kib,
};
use nsaux_tests::daemon::wait_for;
use nsaux_tests::dns::{Server, dig, section};
use nsaux_tests::floor::{Floor, FloorSpec};
use nsaux_tests::netns::TestNetns;

const ORIGIN: &str = "127.0.0.2";
/// Not under `test.`: unbound answers that RFC 6761 name itself unless told otherwise.
const ORIGIN_ZONE: &str = "  local-zone: \".\" refuse\n  local-zone: \"benchzone.\" static\n  \
    local-data: \"benchzone. 3600 IN SOA ns.benchzone. admin.benchzone. 1 3600 600 86400 30\"\n  \
    local-data: \"www.benchzone. 3600 IN A 10.0.0.1\"\n";

/// One dnsperf run against one server.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    completed: u64,
    qps: f64,
    cpu_ns: u64,
    /// dnsperf's average and maximum latency, seconds.
    lat_avg: f64,
    lat_max: f64,
}

impl Run {
    fn cpu_us(&self) -> f64 {
        self.cpu_ns as f64 / 1000.0 / self.completed.max(1) as f64
    }
}

/// Warms the cache of the server on 127.0.0.53 in `ns`, then runs dnsperf against it.
/// The other services are off: each benchmark measures its own service.
const OTHERS_OFF: &str = "[ntp]\nenabled = false\n[rpcbind]\nenabled = false\n";

fn load(
    ns: &TestNetns,
    name: &str,
    pid: u32,
    secs: u64,
    data: &Path,
    mode: CpuMode,
) -> anyhow::Result<Run> {
    mode.pin_server(pid)?;
    wait_for(&format!("{name} answers"), Duration::from_secs(10), || {
        dig(ns, "@127.0.0.53 www.benchzone A")
            .ok()
            .filter(|o| section(o, "ANSWER").len() == 1)
    })?;
    // Per-thread schedstat since this mark, with the process's utime + stime as the figure for
    // threads that exit in the window (`CpuMark::spent_ns`).
    let cpu0 = cpu_mark(pid);
    let taskset = mode.taskset_args();
    let mut cmd = if taskset.is_empty() {
        ns.command("dnsperf")
    } else {
        let mut c = ns.command("taskset");
        c.args(&taskset).arg("dnsperf");
        c
    };
    let out = cmd
        .args([
            "-s",
            "127.0.0.53",
            "-p",
            "53",
            "-c",
            "4",
            "-q",
            "64",
            "-t",
            "2",
        ])
        .arg("-l")
        .arg(secs.to_string())
        .arg("-d")
        .arg(data)
        .output()
        .context("running dnsperf")?;
    let cpu = cpu0.spent_ns();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |key: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let (Some(completed), Some(qps)) = (field("Queries completed:"), field("Queries per second:"))
    else {
        bail!(
            "dnsperf output not understood: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // "Average Latency (s):  0.000282 (min 0.000013, max 0.004187)"
    let lat_max = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Average Latency (s):"))
        .and_then(|r| r.split("max ").nth(1))
        .and_then(|r| r.trim_end_matches(')').trim().parse().ok())
        .unwrap_or(f64::NAN);
    Ok(Run {
        completed: completed as u64,
        qps,
        cpu_ns: cpu,
        lat_avg: field("Average Latency (s):").unwrap_or(f64::NAN),
        lat_max,
    })
}

/// Totals of one server over all rounds, and its per-round CPU per answer.
struct Total {
    name: &'static str,
    runs: Vec<Run>,
}

impl Total {
    fn completed(&self) -> u64 {
        self.runs.iter().map(|r| r.completed).sum()
    }
    fn qps(&self) -> f64 {
        self.runs.iter().map(|r| r.qps).sum::<f64>() / self.runs.len().max(1) as f64
    }
    fn cpu_us(&self) -> f64 {
        let ns: u64 = self.runs.iter().map(|r| r.cpu_ns).sum();
        ns as f64 / 1000.0 / self.completed().max(1) as f64
    }
    /// Median over rounds of dnsperf's average latency, and the largest maximum, µs.
    fn latency_us(&self) -> (f64, f64) {
        let avg: Vec<f64> = self.runs.iter().map(|r| r.lat_avg * 1e6).collect();
        let max = self
            .runs
            .iter()
            .map(|r| r.lat_max * 1e6)
            .fold(0.0, f64::max);
        (median(&avg), max)
    }
}

/// Starts the servers side by side (each nsauxd build, dnsmasq and unbound, each in its own
/// namespace with its own origin), then, in each CPU mode, loads them in turn for `rounds`
/// rounds.
fn cache_hits(
    builds: &[Build],
    secs: u64,
    rounds: usize,
    modes: &[CpuMode],
) -> anyhow::Result<Vec<(CpuMode, Vec<Total>)>> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("queries.txt");
    std::fs::write(&data, "www.benchzone A\n")?;

    let config = format!("{OTHERS_OFF}[dns]\nupstreams = [\"{ORIGIN}\"]\n");
    // Every nsauxd build (`NSAUX_BENCH_BASELINE` adds one) with its own namespace and origin.
    let mut nsauxds = Vec::new();
    for b in builds {
        let d = b.start(&config)?;
        let ns = d.netns("bench-nsaux")?;
        let origin = Server::unbound(&ns, ORIGIN, ORIGIN_ZONE)?;
        nsauxds.push((b.label, d, ns, origin));
    }

    // dnsmasq (single-threaded by design). Its namespace and unbound's live outside the
    // daemon's watched directory: nsauxd never serves them.
    let dnsmasq_ns = TestNetns::create(tmp.path(), "bench-dnsmasq")?;
    let _dnsmasq_origin = Server::unbound(&dnsmasq_ns, ORIGIN, ORIGIN_ZONE)?;
    let dnsmasq = Server::dnsmasq(
        &dnsmasq_ns,
        "127.0.0.53",
        &[&format!("--server={ORIGIN}"), "--cache-size=10000"],
    )?;

    // unbound, 1 thread, forwarding.
    let unbound_ns = TestNetns::create(tmp.path(), "bench-unbound")?;
    let _unbound_origin = Server::unbound(&unbound_ns, ORIGIN, ORIGIN_ZONE)?;
    let fwd = format!(
        "  do-not-query-localhost: no\n  access-control: 127.0.0.0/8 allow\n\
         forward-zone:\n  name: \".\"\n  forward-addr: {ORIGIN}\n"
    );
    let unbound = Server::unbound(&unbound_ns, "127.0.0.53", &fwd)?;

    // The floor: the kernel alone, with nsauxd's socket and the best batching.
    let floor_ns = TestNetns::create(tmp.path(), "bench-floor")?;
    let floor = Floor::start(&floor_ns, FloorSpec::dns_stub())?;
    // Floors with a receive coalescing delay (`NSAUX_FLOOR_COALESCE_US`), one namespace each.
    let mut coalescing = Vec::new();
    for d in nsaux_tests::floor::coalesce_delays()? {
        let ns = TestNetns::create(tmp.path(), &format!("bench-floor{d}"))?;
        let spec = FloorSpec {
            coalesce_us: d,
            ..FloorSpec::dns_stub()
        };
        let f = Floor::start(&ns, spec)?;
        let label: &'static str = Box::leak(format!("floor +{d} µs").into_boxed_str());
        coalescing.push((label, ns, f));
    }

    let mut servers: Vec<(&'static str, &TestNetns, u32)> = nsauxds
        .iter()
        .map(|(label, d, ns, _)| (*label, ns, d.pid()))
        .collect();
    servers.push(("floor", &floor_ns, floor.pid()));
    for (label, ns, f) in &coalescing {
        servers.push((label, ns, f.pid()));
    }
    servers.push(("dnsmasq", &dnsmasq_ns, dnsmasq.pid()));
    servers.push(("unbound", &unbound_ns, unbound.pid()));
    let mut out = Vec::new();
    for &mode in modes {
        eprintln!("dns bench: {}", mode.label());
        let mut totals: Vec<Total> = servers
            .iter()
            .map(|(name, _, _)| Total {
                name,
                runs: Vec::new(),
            })
            .collect();
        for round in 0..rounds {
            for ((name, ns, pid), total) in servers.iter().zip(&mut totals) {
                let run = load(ns, name, *pid, secs, &data, mode)?;
                eprintln!(
                    "  round {round} {name:<17} answers {:>8}  {:>7.0}/s  {:>5.2} µs/answer  latency avg {:>6.0} µs max {:>6.0} µs",
                    run.completed,
                    run.qps,
                    run.cpu_us(),
                    run.lat_avg * 1e6,
                    run.lat_max * 1e6
                );
                total.runs.push(run);
            }
        }
        out.push((mode, totals));
    }
    // Unpinned again, should anything run after.
    for (_, _, pid) in &servers {
        CpuMode::Unpinned.pin_server(*pid)?;
    }
    Ok(out)
}

/// A query for `probe.lan` A.
fn probe_query() -> Vec<u8> {
    let mut q = vec![0x42, 0x42, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in ["probe", "lan"] {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// RSS growth per namespace with the resolver on in `n` namespaces, KiB, and fds per namespace.
fn memory(build: &Build, n: usize) -> anyhow::Result<(f64, f64)> {
    let d = build.start(
        "[ntp]\nenabled = false\n[rpcbind]\nenabled = false\n[dns]\nlocal_domains = [\"lan\"]\nrecords = [{ name = \"probe.lan\", addr = \"10.0.0.1\" }]\n",
    )?;
    let pid = d.pid();
    let dir = d.netns_dir();
    std::thread::sleep(Duration::from_millis(300));
    let rss0 = rss_kib(pid);
    let fds0 = d.fd_count();
    let dir2 = dir.clone();
    std::thread::spawn(move || -> anyhow::Result<()> {
        let home = File::open("/proc/thread-self/ns/net")?;
        let q = probe_query();
        let ep = SocketAddr::from(([127, 0, 0, 53], 53));
        for i in 0..n {
            nsaux_tests::netns::create_on_this_thread(&dir2, &format!("m{i}"))?;
            let sock = UdpSocket::bind("127.0.0.1:0")?;
            sock.set_read_timeout(Some(Duration::from_millis(2)))?;
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut buf = [0u8; 512];
            loop {
                sock.send_to(&q, ep)?;
                if let Ok((len, _)) = sock.recv_from(&mut buf) {
                    anyhow::ensure!(len > 12 && buf[3] & 0x0f == 0, "bad probe answer");
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "namespace {i} not served");
            }
            drop(sock);
            setns(home.as_fd(), CloneFlags::CLONE_NEWNET).context("setns home")?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("creator thread panicked"))??;
    std::thread::sleep(Duration::from_millis(500));
    let rss_n = rss_kib(pid);
    let per_ns = rss_n.saturating_sub(rss0) as f64 / n as f64;
    let fds_per_ns = d.fd_count().saturating_sub(fds0) as f64 / n as f64;
    for i in 0..n {
        let path = dir.join(format!("m{i}"));
        umount2(&path, MntFlags::MNT_DETACH)?;
        std::fs::remove_file(&path)?;
    }
    wait_for("all released", Duration::from_secs(120), || {
        (d.fd_count() <= fds0).then_some(())
    })?;
    Ok((per_ns, fds_per_ns))
}

fn main() -> anyhow::Result<()> {
    // Started again as a floor server: serves until killed.
    nsaux_tests::floor::child_main()?;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the dns benchmark needs root (namespaces)");
        return Ok(());
    }
    for tool in ["dnsperf", "dnsmasq", "unbound", "dig"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            bail!("the dns benchmark needs `{tool}`");
        }
    }
    let env = |key: &str| std::env::var(key).ok().and_then(|s| s.parse::<u64>().ok());
    let secs = env("NSAUX_DNS_BENCH_SECS").unwrap_or(3).clamp(1, 60);
    let rounds = usize::try_from(env("NSAUX_DNS_BENCH_ROUNDS").unwrap_or(9).clamp(1, 20))?;
    let n = usize::try_from(env("NSAUX_DNS_BENCH_NS").unwrap_or(1_000))?;
    let builds = builds()?;

    eprintln!("dns bench: cache hits, {rounds} rounds of {secs} s per server ...");
    let hits = cache_hits(&builds, secs, rounds, &CpuMode::all())?;
    let mut memory_rows = Vec::new();
    for b in &builds {
        eprintln!("dns bench: {} memory at {n} namespaces ...", b.label);
        let (kib, fds) = memory(b, n)?;
        memory_rows.push(vec![
            b.label.to_owned(),
            n.to_string(),
            format!("{kib:.1} KiB"),
            format!("{fds:.1}"),
        ]);
    }
    for (mode, totals) in &hits {
        print_hits(*mode, totals, secs, rounds);
    }
    println!("\nnsauxd with the resolver on (UDP+TCP on 127.0.0.53), no cache entries");
    print_table(
        &["daemon", "namespaces", "RSS / netns", "fds / netns"],
        &memory_rows,
    );
    Ok(())
}

/// Prints the cache-hit table of one CPU mode, with the A/B line when a baseline ran.
fn print_hits(mode: CpuMode, hits: &[Total], secs: u64, rounds: usize) {
    let unbound = hits.iter().find(|t| t.name == "unbound");
    let unbound_cpu = unbound.map_or(f64::NAN, Total::cpu_us);
    let rows: Vec<Vec<String>> = hits
        .iter()
        .map(|t| {
            // Median over rounds of (this server / unbound in the same round).
            let per_round: Vec<f64> = unbound.map_or_else(Vec::new, |u| {
                t.runs
                    .iter()
                    .zip(&u.runs)
                    .map(|(a, b)| a.cpu_us() / b.cpu_us())
                    .collect()
            });
            let (lo, hi) = range(&per_round);
            let (lat, lat_max) = t.latency_us();
            vec![
                t.name.to_owned(),
                t.completed().to_string(),
                format!("{:.0}", t.qps()),
                format!("{:.2}", t.cpu_us()),
                format!("{:.2}x", t.cpu_us() / unbound_cpu),
                format!("{:.2}x", median(&per_round)),
                format!("{lo:.2}–{hi:.2}x"),
                format!("{lat:.0} / {lat_max:.0}"),
            ]
        })
        .collect();
    println!(
        "\nDNS cache hits, {}: same name, dnsperf -c 4 -q 64 -l {secs}, {rounds} rounds, on loopback in a private namespace, {} CPUs (target: nsauxd ≤ 0.60x unbound)",
        mode.label(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print_table(
        &[
            "server",
            "answers",
            "answers/s",
            "CPU µs/answer",
            "vs unbound",
            "median of rounds",
            "rounds",
            "latency µs (median avg / max)",
        ],
        &rows,
    );
    if let (Some(new), Some(floor)) = (
        hits.iter().find(|t| t.name == "nsauxd"),
        hits.iter().find(|t| t.name == "floor"),
    ) {
        let floor_ratio = floor.cpu_us() / unbound_cpu;
        let verdict = if floor_ratio > 0.60 {
            "the floor is above the 0.60x target: only fewer wakeups per answer (receive coalescing, the `floor +D µs` rows) go below it"
        } else {
            "the floor is below the 0.60x target"
        };
        println!(
            "nsauxd / floor CPU per answer: {:.2}x (floor / unbound {floor_ratio:.2}x; {verdict})",
            new.cpu_us() / floor.cpu_us()
        );
    }
    if let (Some(new), Some(base)) = (
        hits.iter().find(|t| t.name == "nsauxd"),
        hits.iter().find(|t| t.name == BASELINE_LABEL),
    ) {
        let per_round: Vec<f64> = new
            .runs
            .iter()
            .zip(&base.runs)
            .map(|(a, b)| a.cpu_us() / b.cpu_us())
            .collect();
        println!(
            "{}",
            ab_summary("cache hits", new.cpu_us() / base.cpu_us(), &per_round)
        );
    }
}
