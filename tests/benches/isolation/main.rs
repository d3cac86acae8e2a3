//! Tenant isolation benchmark (issue 11): what a flood into namespace A costs namespace B.
//!
//! `cargo bench -p nsaux-tests --bench isolation` (root; needs chronyd, rpcbind, unbound). Not a
//! timed test: it prints two tables and fails only if B never answers at all.
//!
//! * Servers, side by side in one run: nsauxd serving A and B (NTP, DNS on 127.0.0.53 forwarding
//!   to an origin unbound in a third namespace behind a veth, the portmapper), every build of
//!   `nsaux_tests::bench::builds` (`NSAUX_BENCH_BASELINE` adds one); and the stock daemons in
//!   namespaces of their own: chronyd in A and in B, rpcbind and a 1-thread unbound (same kind
//!   of origin) in A. The kernel's CPU scheduler shares the machine between those processes;
//!   nsauxd has to do it inside its one loop.
//! * Load, from Rust threads inside A (closed loop, `WINDOW` requests in flight per socket):
//!   `flood3` = NTP + DNS cache hits + rpcbind GETPORT at once; `junk` = undecodable 8-byte
//!   datagrams to all three ports as fast as one thread sends (open loop); `dns-miss` = DNS
//!   queries for names never asked before (each a cache miss forwarded upstream);
//!   `junk-paced` = junk at a fixed rate (`NSAUX_JUNK_RATE`, default 60,000/s), the same
//!   offered load for every server (the open-loop `junk` sends as fast as its thread gets CPU,
//!   so a server that spends less of the shared CPU on junk is sent more of it);
//!   `flood3-b-paced` = flood3 while B asks at a fixed rate (`NSAUX_PROBE_RATE`, default
//!   1,000/s, still one request in flight): A's answers/s compare at equal work for B;
//!   `dns-miss-paced` = cache misses at a fixed rate (`NSAUX_MISS_RATE`, default 15,000/s): the
//!   closed-loop miss flood asks a faster server more often, and each miss also costs the
//!   origin's CPU on the same 2 CPUs.
//! * Probe, from inside B: one NTP request in flight for `PROBE` (timeout `PROBE_TIMEOUT`,
//!   counted lost); B's answers/s, p50, p99 and losses, and A's answers/s (junk: datagrams
//!   sent/s). `idle` is the probe with nothing else running.
//! * Second table: A's 100,000-line hosts file rewritten every second (so A's resolver reloads
//!   it) while B is probed; B's p99 against its idle figure.
//!
//! * (The `worker_threads` table that was third here is its own bench now, with a generator
//!   cheap enough to leave the server most of the machine: `cargo bench --bench workers`.)
//!
//! * Fourth table ([`offloop_stalls`], issue 11 item 3, "nothing blocks the loop"): a quiet
//!   namespace B probed (one NTP request in flight; p99 and the longest wait, the loop stall it
//!   saw) while the daemon serves `NSAUX_OFFLOOP_NS` (default 2,000) namespaces and runs, in
//!   turn: nothing; `nsauxctl ns list --json` back to back; `nsauxctl metrics` back to back; and
//!   a SET/UNSET churn (6,000 changes/s) in a namespace holding 8,000 registrations (each
//!   journal compaction then rewrites about 1 MiB); v4 DUMPs of that table back to back over
//!   the abstract socket (about 800 KB each); and reloads that turn that namespace's portmapper
//!   off and on again, so that it is made anew and replays its 8,000-registration journal
//!   (each replay counted once it is done). "CPU / work" is the daemon's CPU (all threads) per
//!   unit of work done. `NSAUX_ISOLATION_ONLY=offloop` runs only this table.
//!
//! `NSAUX_ISOLATION_SECS` (default 3) sets the probe time of one scenario.
//! `NSAUX_ISOLATION_ONLY` (a comma-separated list of `idle`, `flood3`, `flood3-b-paced`, `junk`,
//! `junk-paced`, `dns-miss`, `dns-miss-paced`, `hosts`, `offloop`) runs only those scenarios and tables, and
//! `NSAUX_ISOLATION_REPEAT` (default 1) runs the first table's scenarios that many times, the
//! setups measured in turn within each pass and in reverse order every other pass, so an A/B on a loaded machine gets a median and range.
//! The first table's extra columns say where B's mean wait goes: p75/p90/p95 and the mean, and
//! `B rq wait` = the run-queue wait per time slice of the thread that served B (nsauxd's quiet
//! lane, its main thread in a build without one, or chronyd in B), from `/proc/*/schedstat`:
//! how long the scheduler kept a woken server waiting; `CPU/ans` = nsauxd's CPU time per
//! answer it gave (A's and B's); `loop/A` = its loop thread's CPU time per A answer (what A's
//! own answers cost it, apart from the lane's work for B); `B srv CPU` = the CPUs used by
//! that thread which served B (the lane, chronyd in B) over the scenario; `B by lane` = the
//! share of B's answers the quiet lane served (nsauxd's `served_between` for B; the rest
//! waited for the loop); `coalesced/s` = waits nsauxd's loop delayed to coalesce receives
//! (`nsaux_receive_coalesced_waits_total`), per second.

mod load;
mod offloop;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::bail;
use nsaux_tests::bench::{Chronyd, builds, percentile, print_table};
use nsaux_tests::dns::Server;
use nsaux_tests::netns::{TestNetns, in_netns_file, veth};
use nsaux_tests::rpc::{spawn_stock_rpcbind, wait_portmapper_udp};

use load::{Flood, Probe, flood, probe, wait_dns, wait_ntp};
use offloop::offloop_stalls;

const ORIGIN_ZONE: &str = "  local-zone: \".\" refuse\n  local-zone: \"benchzone.\" static\n  \
    local-data: \"benchzone. 3600 IN SOA ns.benchzone. admin.benchzone. 1 3600 600 86400 30\"\n  \
    local-data: \"www.benchzone. 3600 IN A 10.0.0.1\"\n";
const HOSTS_LINES: usize = 100_000;

fn probe_time() -> Duration {
    let secs = std::env::var("NSAUX_ISOLATION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3u64);
    Duration::from_secs(secs.max(1))
}

/// Whether `NSAUX_ISOLATION_ONLY` (unset: everything) names this scenario or table.
fn wanted(name: &str) -> bool {
    std::env::var("NSAUX_ISOLATION_ONLY")
        .map_or(true, |only| only.split(',').any(|o| o.trim() == name))
}

/// Passes over the first table's scenarios (`NSAUX_ISOLATION_REPEAT`, default 1).
fn repeats() -> usize {
    std::env::var("NSAUX_ISOLATION_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1usize)
        .max(1)
}

/// Run-queue wait and time slices of one thread (`/proc/PID/task/TID/schedstat`, fields 2
/// and 3): their deltas over a scenario give the wait per slice of the thread serving B.
fn sched_wait(pid: u32, tid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
    let mut f = s.split_whitespace().skip(1);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// On-CPU nanoseconds of one thread (`schedstat` field 1): nsauxd's loop (its main thread),
/// whose CPU per A answer says what A's own answers cost, apart from the lane's work for B
/// (and from the CPU the probe client itself takes from a 2-core machine when B is served
/// faster, which lowers A's answers/s without costing A anything per answer).
fn thread_cpu(pid: u32, tid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The thread of `pid` named `comm` (nsauxd's quiet lane), or the process itself.
fn thread_named(pid: u32, comm: &str) -> u32 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == comm))
        .and_then(|t| t.file_name().to_str()?.parse().ok())
        .unwrap_or(pid)
}

/// The namespaces one server setup serves, and the pid(s) to watch.
struct Setup {
    label: &'static str,
    a: PathBuf,
    b: PathBuf,
    /// nsauxd's pid (its CPU per answer); `None` for the stock daemons.
    daemon: Option<u32>,
    /// The process and thread that serve B's probe under flood (see [`sched_wait`]).
    b_server: (u32, u32),
}

/// What one scenario measured besides B's round trips.
#[derive(Debug, Default)]
struct Extra {
    /// A's answers/s (junk: datagrams sent/s).
    a_rate: f64,
    /// Run-queue wait per time slice of B's server thread.
    rq_wait: Option<Duration>,
    /// nsauxd's CPU time per answer (A's and B's).
    cpu_per_answer: Option<Duration>,
    /// nsauxd's loop thread's CPU time per A answer.
    loop_per_a: Option<Duration>,
    /// CPU of B's server thread (nsauxd's quiet lane, chronyd in B), in CPUs.
    b_server_cpu: Option<f64>,
    /// Share of B's answers the quiet lane served (nsauxd only; from `served_between`).
    b_by_lane: Option<f64>,
    /// Waits nsauxd's loop delayed to coalesce receives, per second (`receive_coalesce_us`).
    coalesced: Option<f64>,
}

/// Runs `floods` in A while B is probed; returns B's figures and A's answers/s.
fn scenario(
    s: &Setup,
    floods: &[Flood],
    b_rate: Option<f64>,
    time: Duration,
) -> anyhow::Result<(Probe, Extra)> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let wait0 = sched_wait(s.b_server.0, s.b_server.1);
    let cpu0 = s.daemon.map(nsaux_tests::bench::cpu_ns);
    let loop0 = s.daemon.and_then(|p| thread_cpu(p, p));
    let server0 = thread_cpu(s.b_server.0, s.b_server.1);
    let handles: Vec<JoinHandle<anyhow::Result<u64>>> = floods
        .iter()
        .map(|&kind| {
            let stop = Arc::clone(&stop);
            let a = s.a.clone();
            std::thread::spawn(move || in_netns_file(&a, move || flood(kind, &stop))?)
        })
        .collect();
    if !floods.is_empty() {
        std::thread::sleep(Duration::from_millis(300));
    }
    let p = in_netns_file(&s.b, move || probe(time, b_rate));
    stop.store(true, Ordering::Relaxed);
    let mut a_total = 0u64;
    for h in handles {
        a_total += h.join().map_err(|_| anyhow::anyhow!("flood panicked"))??;
    }
    let secs = started.elapsed().as_secs_f64();
    let p = p??;
    let rq_wait = wait0
        .zip(sched_wait(s.b_server.0, s.b_server.1))
        .map(|((w0, n0), (w1, n1))| {
            Duration::from_nanos(w1.saturating_sub(w0) / n1.saturating_sub(n0).max(1))
        });
    let answers = a_total + p.rtts.len() as u64;
    let cpu_per_answer = cpu0
        .zip(s.daemon.map(nsaux_tests::bench::cpu_ns))
        .filter(|_| !floods.iter().any(|f| f.is_junk()))
        .map(|(c0, c1)| Duration::from_nanos(c1.saturating_sub(c0) / answers.max(1)));
    let loop_per_a = loop0
        .zip(s.daemon.and_then(|p| thread_cpu(p, p)))
        .filter(|_| !floods.iter().any(|f| f.is_junk()))
        .map(|(c0, c1)| Duration::from_nanos(c1.saturating_sub(c0) / a_total.max(1)));
    let b_server_cpu = server0
        .zip(thread_cpu(s.b_server.0, s.b_server.1))
        .map(|(c0, c1)| c1.saturating_sub(c0) as f64 / 1e9 / secs);
    Ok((
        p,
        Extra {
            a_rate: a_total as f64 / secs,
            rq_wait,
            cpu_per_answer,
            loop_per_a,
            b_server_cpu,
            b_by_lane: None,
            coalesced: None,
        },
    ))
}

/// B's round trips in the first table's columns: answers/s, p50, p75, p90, p95, p99, mean,
/// lost, then the scenario's [`Extra`].
fn long_row(scenario: &str, label: &str, p: &Probe, x: Option<&Extra>) -> Vec<String> {
    let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
    let mean = p.rtts.iter().sum::<Duration>() / u32::try_from(p.rtts.len().max(1)).unwrap_or(1);
    let mut r = vec![
        scenario.to_owned(),
        label.to_owned(),
        format!(
            "{:.0}",
            p.rtts.len() as f64 / p.elapsed.as_secs_f64().max(1e-9)
        ),
    ];
    r.extend([50.0, 75.0, 90.0, 95.0, 99.0].map(|q| us(percentile(&p.rtts, q))));
    r.push(us(mean));
    r.push(p.lost.to_string());
    let dash = || "-".to_owned();
    r.push(x.map_or_else(dash, |x| format!("{:.0}", x.a_rate)));
    r.push(
        x.and_then(|x| x.rq_wait)
            .map_or_else(dash, |d| format!("{:.1} µs", d.as_secs_f64() * 1e6)),
    );
    for d in [
        x.and_then(|x| x.cpu_per_answer),
        x.and_then(|x| x.loop_per_a),
    ] {
        r.push(d.map_or_else(dash, |d| format!("{:.2} µs", d.as_secs_f64() * 1e6)));
    }
    r.push(
        x.and_then(|x| x.b_server_cpu)
            .map_or_else(dash, |c| format!("{c:.2}")),
    );
    r.push(
        x.and_then(|x| x.coalesced)
            .map_or_else(dash, |w| format!("{w:.0}")),
    );
    r.push(
        x.and_then(|x| x.b_by_lane)
            .map_or_else(dash, |f| format!("{:.1} %", f * 100.0)),
    );
    r
}

/// B's round trips in the second and fourth tables' short columns.
fn row(scenario: &str, label: &str, p: &Probe, a_rate: Option<f64>) -> Vec<String> {
    let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
    vec![
        scenario.to_owned(),
        label.to_owned(),
        format!(
            "{:.0}",
            p.rtts.len() as f64 / p.elapsed.as_secs_f64().max(1e-9)
        ),
        us(percentile(&p.rtts, 50.0)),
        us(percentile(&p.rtts, 99.0)),
        p.lost.to_string(),
        a_rate.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}")),
    ]
}

/// An unbound origin for `benchzone.` in a namespace of its own, behind a veth from `a`.
fn origin(dir: &Path, a: &TestNetns, name: &str, net: u8) -> anyhow::Result<(TestNetns, Server)> {
    let o = TestNetns::create(dir, name)?;
    veth(
        a,
        &format!("o{net}a"),
        &format!("10.{net}.0.1/24"),
        &o,
        &format!("o{net}b"),
        &format!("10.{net}.0.2/24"),
    )?;
    let server = Server::unbound(&o, &format!("10.{net}.0.2"), ORIGIN_ZONE)?;
    Ok((o, server))
}

/// A child process killed by its own pid when dropped (stock rpcbind).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hosts_file(version: usize) -> String {
    let mut s = String::with_capacity(HOSTS_LINES * 28);
    for i in 0..HOSTS_LINES {
        s.push_str(&format!(
            "10.{}.{}.{} h{i}.lan\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        ));
    }
    s.push_str(&format!("# version {version}\n"));
    s
}

fn main() -> anyhow::Result<()> {
    if !nsaux_tests::env::require_root("bench isolation")
        || !nsaux_tests::env::require("bench isolation", &["chronyd", "rpcbind", "unbound"])
    {
        return Ok(());
    }
    nsaux_tests::bench::build_release_daemon()?;
    let time = probe_time();
    let first = [
        "idle",
        "flood3",
        "flood3-b-paced",
        "junk",
        "junk-paced",
        "dns-miss",
        "dns-miss-paced",
        "hosts",
    ];
    if !first.iter().any(|n| wanted(n)) {
        return if wanted("offloop") {
            offloop_stalls(time)
        } else {
            Ok(())
        };
    }
    let tmp = tempfile::tempdir()?;
    let etc = tmp.path().join("etc");

    // nsauxd builds, each serving its own A and B, A forwarding to its own origin.
    let mut nsauxds = Vec::new();
    for (i, b) in builds()?.into_iter().enumerate() {
        let net = 80 + u8::try_from(i).unwrap_or(0);
        let etc_b = etc.join(format!("build{i}"));
        std::fs::create_dir_all(etc_b.join("A"))?;
        std::fs::write(etc_b.join("A/hosts"), "10.0.0.9 seed.lan\n")?;
        let config = format!(
            "[ntp]\nstratum = 10\nlocal_stratum = 10\nrate_limit = {{ enabled = false }}\n\
             [dns]\nupstreams = [\"10.{net}.0.2\"]\nnetns_etc_dir = \"{}\"\n",
            etc_b.display()
        );
        let d = b.start(&config)?;
        let a = d.netns("A")?;
        let bns = d.netns("B")?;
        let odir = tmp.path().join(format!("origin{i}"));
        std::fs::create_dir_all(&odir)?;
        let (o, server) = origin(&odir, &a, "O", net)?;
        nsauxds.push((b.label, d, a, bns, o, server, etc_b));
    }
    // Stock daemons in namespaces nsauxd never sees.
    let sdir = tmp.path().join("stock");
    std::fs::create_dir_all(&sdir)?;
    let sa = TestNetns::create(&sdir, "SA")?;
    let sb = TestNetns::create(&sdir, "SB")?;
    let (_so, _sorigin) = origin(&sdir, &sa, "SO", 90)?;
    let _chrony_a = Chronyd::start(&sa)?;
    let _chrony_b = Chronyd::start(&sb)?;
    let _rpcbind = Killed(spawn_stock_rpcbind(&sa)?);
    let fwd = "  do-not-query-localhost: no\n  access-control: 127.0.0.0/8 allow\n\
         forward-zone:\n  name: \".\"\n  forward-addr: 10.90.0.2\n";
    let _unbound = Server::unbound(&sa, "127.0.0.53", fwd)?;

    let mut setups: Vec<Setup> = nsauxds
        .iter()
        .map(|(label, d, a, b, ..)| Setup {
            label,
            a: a.path.clone(),
            b: b.path.clone(),
            daemon: Some(d.pid()),
            b_server: (d.pid(), thread_named(d.pid(), "nsaux-quiet")),
        })
        .collect();
    let chrony_b = _chrony_b.child.id();
    setups.push(Setup {
        label: "stock daemons",
        a: sa.path.clone(),
        b: sb.path.clone(),
        daemon: None,
        b_server: (chrony_b, chrony_b),
    });
    for s in &setups {
        wait_ntp(&s.a, &format!("{}: NTP in A", s.label))?;
        wait_ntp(&s.b, &format!("{}: NTP in B", s.label))?;
        wait_dns(&s.a, &format!("{}: DNS in A", s.label))?;
    }
    wait_portmapper_udp(&sa, "stock rpcbind")?;
    for (label, _, a, ..) in &nsauxds {
        wait_portmapper_udp(a, label)?;
    }

    const FLOOD3: &[Flood] = &[Flood::Ntp, Flood::DnsHit, Flood::Getport];
    // (name, floods into A, B's request rate: None = closed loop)
    let scenarios: [(&str, &[Flood], Option<f64>); 7] = [
        ("idle", &[], None),
        ("flood3", FLOOD3, None),
        ("flood3-b-paced", FLOOD3, Some(load::probe_rate())),
        ("junk", &[Flood::Junk], None),
        ("junk-paced", &[Flood::JunkPaced], None),
        ("dns-miss", &[Flood::DnsMiss], None),
        ("dns-miss-paced", &[Flood::DnsMissPaced], None),
    ];
    let mut rows = Vec::new();
    let mut answered = 0;
    let passes = repeats();
    for pass in 1..=passes {
        for (name, floods, b_rate) in scenarios {
            if !wanted(name) {
                continue;
            }
            let title = if passes > 1 {
                format!("{name} #{pass}")
            } else {
                name.to_owned()
            };
            // Every other pass in reverse order, so no build is always measured first (in
            // session 8 the build measured second won 16 of 20 miss-flood passes against one
            // it did not differ from).
            let mut order: Vec<usize> = (0..setups.len()).collect();
            if pass % 2 == 0 {
                order.reverse();
            }
            for i in order {
                let s = &setups[i];
                // B's datagrams served by the quiet lane, from nsauxd's own count.
                let by_lane = || -> Option<u64> {
                    let ns = nsauxds.get(i)?.1.ns("B").ok()??;
                    ns["udp"]["served_between"].as_u64()
                };
                let lane0 = by_lane();
                // Waits the loop delayed (receive coalescing), from nsauxd's metrics.
                let waits = || -> Option<u64> {
                    nsauxds
                        .get(i)?
                        .1
                        .counter("nsaux_receive_coalesced_waits_total")
                        .ok()
                };
                let waits0 = waits();
                let t0 = Instant::now();
                let (p, mut x) = scenario(s, floods, b_rate, time)?;
                let secs = t0.elapsed().as_secs_f64();
                x.coalesced = waits0
                    .zip(waits())
                    .map(|(w0, w1)| w1.saturating_sub(w0) as f64 / secs);
                x.b_by_lane = lane0
                    .zip(by_lane())
                    .map(|(l0, l1)| l1.saturating_sub(l0) as f64 / p.rtts.len().max(1) as f64);
                answered += p.rtts.len();
                rows.push(long_row(
                    &title,
                    s.label,
                    &p,
                    (!floods.is_empty()).then_some(&x),
                ));
            }
        }
    }
    for (label, d, ..) in &nsauxds {
        if let Some(ns) = d.ns("A")? {
            println!("{label}: A shed {}", ns["udp"]);
        }
        if let Some(ns) = d.ns("B")? {
            println!("{label}: B {}", ns["udp"]);
        }
    }
    println!(
        "\nB probed with 1 NTP request in flight while A is flooded ({} s each):\n",
        time.as_secs()
    );
    print_table(
        &[
            "scenario",
            "server",
            "B answers/s",
            "B p50",
            "B p75",
            "B p90",
            "B p95",
            "B p99",
            "B mean",
            "B lost",
            "A answers/s",
            "B rq wait",
            "CPU/ans",
            "loop/A",
            "B srv CPU",
            "coalesced/s",
            "B by lane",
        ],
        &rows,
    );
    if !wanted("hosts") {
        if answered == 0 && !rows.is_empty() {
            bail!("B never answered");
        }
        return if wanted("offloop") {
            offloop_stalls(time)
        } else {
            Ok(())
        };
    }

    // Second table: A's hosts file (100,000 lines) rewritten every second while B is probed.
    let mut rows = Vec::new();
    for (label, _, _, b, _, _, etc_b) in &nsauxds {
        let idle = in_netns_file(&b.path, move || probe(time, None))??;
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = Arc::clone(&stop);
            let path = etc_b.join("A/hosts");
            let texts = [hosts_file(0), hosts_file(1)];
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let tmp = path.with_extension("new");
                    std::fs::write(&tmp, &texts[(n % 2) as usize])?;
                    std::fs::rename(&tmp, &path)?;
                    n += 1;
                    std::thread::sleep(Duration::from_millis(1000));
                }
                Ok(n)
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        let busy = in_netns_file(&b.path, move || probe(time, None))??;
        stop.store(true, Ordering::Relaxed);
        let writes = writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
        answered += busy.rtts.len();
        let ratio = percentile(&busy.rtts, 99.0).as_secs_f64()
            / percentile(&idle.rtts, 99.0).as_secs_f64().max(1e-9);
        let mut r = row("hosts reload", label, &busy, None);
        r[6] = format!("{writes} rewrites, p99 {ratio:.1}x idle");
        rows.push(row("idle", label, &idle, None));
        rows.push(r);
    }
    println!("\nB probed while A's {HOSTS_LINES}-line hosts file is rewritten every second:\n");
    print_table(
        &[
            "scenario",
            "server",
            "B answers/s",
            "B p50",
            "B p99",
            "B lost",
            "A",
        ],
        &rows,
    );
    if answered == 0 {
        bail!("B never answered");
    }
    if wanted("offloop") {
        offloop_stalls(time)?;
    }
    Ok(())
}
