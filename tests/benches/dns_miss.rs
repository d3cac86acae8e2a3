//! DNS cache-miss benchmark (issue 16, target 4). Not a timed test: run
//! `cargo bench -p nsaux-tests --bench dns_miss` (root; needs dnsperf, dnsmasq, unbound, dig).
//!
//! nsauxd, dnsmasq and unbound (1 thread) each serve 127.0.0.53:53 in their own namespace and
//! forward to the same upstream: a tiny responder (a thread of this bench) in another
//! namespace, reached over a veth pair per forwarder, that answers any name with one A record.
//! dnsperf (same flags for all) sends a new name per query (`-n 1` over a file of names
//! never asked before), so every query is a miss forwarded upstream. The forwarders are loaded
//! in turn for `ROUNDS` rounds; we print answers/s and the forwarder's CPU per answered miss
//! (NOERROR answers; exact on-CPU time of all its threads from schedstat, and `utime + stime`
//! from `/proc/PID/stat`), and each one's ratio to the better of dnsmasq and unbound (target
//! for nsauxd: ≤ 0.70×).
//!
//! `NSAUX_BENCH_BASELINE=path` adds another nsauxd build as row `nsauxd (baseline)`.
//! `NSAUX_DNS_MISS_SECS` (default 3) is the load time of one round, `NSAUX_DNS_MISS_ROUNDS`
//! (default 5) the rounds.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};
use nsaux_tests::bench::{
    BASELINE_LABEL, ab_summary, builds, clk_tck, cpu_mark, median, print_table, range,
};
use nsaux_tests::daemon::wait_for;
use nsaux_tests::dns::{Server, answer_a, dig, section};
use nsaux_tests::netns::{TestNetns, veth};

/// The other services are off: the bench measures the resolver alone.
const OTHERS_OFF: &str = "[ntp]\nenabled = false\n[rpcbind]\nenabled = false\n";
/// Names per query file: more than any forwarder answers in one round.
const NAMES: usize = 300_000;

/// The upstream: a thread answering every query on 0.0.0.0:53 inside its namespace.
struct Upstream {
    ns: TestNetns,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Upstream {
    fn start(dir: &Path) -> anyhow::Result<Self> {
        let ns = TestNetns::create(dir, "miss-upstream")?;
        let file = std::fs::File::open(&ns.path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            setns(&file, CloneFlags::CLONE_NEWNET).context("setns upstream")?;
            let sock = UdpSocket::bind("0.0.0.0:53")?;
            sock.set_read_timeout(Some(Duration::from_millis(100)))?;
            let _ = ready_tx.send(());
            let mut buf = [0u8; 4096];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(r) = answer_a(&buf[..n], [10, 0, 0, 1]) {
                    let _ = sock.send_to(&r, from);
                }
            }
            Ok(())
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("upstream responder did not start")?;
        Ok(Self {
            ns,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One dnsperf run against one forwarder.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    answered: u64,
    qps: f64,
    cpu_ns: u64,
    ticks: u64,
}

impl Run {
    fn cpu_us(&self) -> f64 {
        self.cpu_ns as f64 / 1000.0 / self.answered.max(1) as f64
    }
}

/// Writes `NAMES` names nobody asked before (`tag` makes them unique per server and round).
fn query_file(path: &Path, tag: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..NAMES {
        writeln!(f, "q{i}.{tag}.missbench A")?;
    }
    f.flush()?;
    Ok(())
}

/// Loads the forwarder on 127.0.0.53 in `ns` with one pass over `data` (every query a miss).
fn load(ns: &TestNetns, pid: u32, secs: u64, data: &Path) -> anyhow::Result<Run> {
    // Per-thread schedstat since this mark, with the process's utime + stime as the figure for
    // threads that exit in the window (`CpuMark::spent_ns`).
    let cpu0 = cpu_mark(pid);
    let out = ns
        .command("dnsperf")
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
            "-n",
            "1",
        ])
        .arg("-l")
        .arg(secs.to_string())
        .arg("-d")
        .arg(data)
        .output()
        .context("running dnsperf")?;
    let cpu = cpu0.spent_ns();
    let ticks = cpu0.ticks_since();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |key: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    // "Response codes:       NOERROR 1000 (100.00%), SERVFAIL 2 (0.20%)"
    let noerror = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Response codes:"))
        .and_then(|r| {
            let mut w = r.split_whitespace();
            w.position(|x| x == "NOERROR")?;
            w.next()?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    let Some(qps) = field("Queries per second:") else {
        bail!(
            "dnsperf output not understood: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    Ok(Run {
        answered: noerror,
        qps,
        cpu_ns: cpu,
        ticks,
    })
}

/// One forwarder under test.
struct Forwarder<'a> {
    name: &'static str,
    ns: &'a TestNetns,
    pid: u32,
    runs: Vec<Run>,
}

impl Forwarder<'_> {
    fn answered(&self) -> u64 {
        self.runs.iter().map(|r| r.answered).sum()
    }
    fn qps(&self) -> f64 {
        self.runs.iter().map(|r| r.qps).sum::<f64>() / self.runs.len().max(1) as f64
    }
    fn cpu_us(&self) -> f64 {
        let ns: u64 = self.runs.iter().map(|r| r.cpu_ns).sum();
        ns as f64 / 1000.0 / self.answered().max(1) as f64
    }
    fn ticks_us(&self, tck: u64) -> f64 {
        let t: u64 = self.runs.iter().map(|r| r.ticks).sum();
        t as f64 * 1e6 / tck as f64 / self.answered().max(1) as f64
    }
}

/// Waits until the forwarder in `ns` answers a (new) name through the upstream.
fn wait_answers(ns: &TestNetns, name: &str) -> anyhow::Result<()> {
    let mut n = 0u32;
    wait_for(&format!("{name} forwards"), Duration::from_secs(10), || {
        n += 1;
        dig(
            ns,
            &format!("@127.0.0.53 +time=1 +tries=1 warm{n}.missbench A"),
        )
        .ok()
        .filter(|o| section(o, "ANSWER").len() == 1)
    })?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the dns_miss benchmark needs root (namespaces)");
        return Ok(());
    }
    for tool in ["dnsperf", "dnsmasq", "unbound", "dig"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            bail!("the dns_miss benchmark needs `{tool}`");
        }
    }
    let env = |key: &str| std::env::var(key).ok().and_then(|s| s.parse::<u64>().ok());
    let secs = env("NSAUX_DNS_MISS_SECS").unwrap_or(3).clamp(1, 60);
    let rounds = usize::try_from(env("NSAUX_DNS_MISS_ROUNDS").unwrap_or(5).clamp(1, 20))?;

    let tmp = tempfile::tempdir()?;
    let upstream = Upstream::start(tmp.path())?;
    // Forwarder k reaches the upstream at 10.77.k.1 over its own veth pair.
    let link = |ns: &TestNetns, k: usize| -> anyhow::Result<String> {
        veth(
            ns,
            &format!("fw{k}"),
            &format!("10.77.{k}.2/24"),
            &upstream.ns,
            &format!("up{k}"),
            &format!("10.77.{k}.1/24"),
        )?;
        Ok(format!("10.77.{k}.1"))
    };

    let mut k = 0;
    let mut nsauxds = Vec::new();
    for b in builds()? {
        let up = format!("10.77.{k}.1");
        let d = b.start(&format!("{OTHERS_OFF}[dns]\nupstreams = [\"{up}\"]\n"))?;
        let ns = d.netns(&format!("miss-nsaux{k}"))?;
        link(&ns, k)?;
        k += 1;
        nsauxds.push((b.label, d, ns));
    }
    let dnsmasq_ns = TestNetns::create(tmp.path(), "miss-dnsmasq")?;
    let up = link(&dnsmasq_ns, k)?;
    k += 1;
    let dnsmasq = Server::dnsmasq(
        &dnsmasq_ns,
        "127.0.0.53",
        &[&format!("--server={up}"), "--cache-size=10000"],
    )?;
    let unbound_ns = TestNetns::create(tmp.path(), "miss-unbound")?;
    let up = link(&unbound_ns, k)?;
    let fwd = format!(
        "  access-control: 127.0.0.0/8 allow\nforward-zone:\n  name: \".\"\n  forward-addr: {up}\n"
    );
    let unbound = Server::unbound(&unbound_ns, "127.0.0.53", &fwd)?;

    let mut servers: Vec<Forwarder<'_>> = nsauxds
        .iter()
        .map(|(label, d, ns)| Forwarder {
            name: label,
            ns,
            pid: d.pid(),
            runs: Vec::new(),
        })
        .collect();
    servers.push(Forwarder {
        name: "dnsmasq",
        ns: &dnsmasq_ns,
        pid: dnsmasq.pid(),
        runs: Vec::new(),
    });
    servers.push(Forwarder {
        name: "unbound",
        ns: &unbound_ns,
        pid: unbound.pid(),
        runs: Vec::new(),
    });
    for s in &servers {
        wait_answers(s.ns, s.name)?;
    }

    eprintln!("dns_miss bench: {rounds} rounds of {secs} s per forwarder ...");
    let data = tmp.path().join("names.txt");
    for round in 0..rounds {
        for (i, s) in servers.iter_mut().enumerate() {
            query_file(&data, &format!("r{round}s{i}"))?;
            let run = load(s.ns, s.pid, secs, &data)?;
            eprintln!(
                "  round {round} {:<17} answered {:>7}  {:>7.0}/s  {:>6.2} µs/answer",
                s.name,
                run.answered,
                run.qps,
                run.cpu_us()
            );
            if run.answered == 0 {
                bail!("{} answered no miss", s.name);
            }
            s.runs.push(run);
        }
    }

    // The reference of every ratio: the better (cheaper) of dnsmasq and unbound, per round
    // and in total.
    let stock: Vec<&Forwarder<'_>> = servers
        .iter()
        .filter(|s| s.name == "dnsmasq" || s.name == "unbound")
        .collect();
    let best_total = stock
        .iter()
        .map(|s| s.cpu_us())
        .fold(f64::INFINITY, f64::min);
    let best_round: Vec<f64> = (0..rounds)
        .map(|r| {
            stock
                .iter()
                .map(|s| s.runs[r].cpu_us())
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    let tck = clk_tck();
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            let per_round: Vec<f64> = s
                .runs
                .iter()
                .zip(&best_round)
                .map(|(r, b)| r.cpu_us() / b)
                .collect();
            let (lo, hi) = range(&per_round);
            vec![
                s.name.to_owned(),
                s.answered().to_string(),
                format!("{:.0}", s.qps()),
                format!("{:.2}", s.cpu_us()),
                format!("{:.2}", s.ticks_us(tck)),
                format!("{:.2}x", s.cpu_us() / best_total),
                format!("{:.2}x", median(&per_round)),
                format!("{lo:.2}–{hi:.2}x"),
            ]
        })
        .collect();
    println!(
        "\nDNS cache misses: a new name per query, dnsperf -c 4 -q 64 -n 1 -l {secs}, {rounds} rounds, \
         upstream in another namespace over veth, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print_table(
        &[
            "forwarder",
            "answered",
            "answers/s",
            "CPU µs/miss",
            "(utime+stime)",
            "vs best stock",
            "median of rounds",
            "rounds",
        ],
        &rows,
    );
    println!("target: nsauxd ≤ 0.70x the better of dnsmasq and unbound");
    if let (Some(new), Some(base)) = (
        servers.iter().find(|s| s.name == "nsauxd"),
        servers.iter().find(|s| s.name == BASELINE_LABEL),
    ) {
        let per_round: Vec<f64> = new
            .runs
            .iter()
            .zip(&base.runs)
            .map(|(a, b)| a.cpu_us() / b.cpu_us())
            .collect();
        println!(
            "{}",
            ab_summary("cache misses", new.cpu_us() / base.cpu_us(), &per_round)
        );
    }
    Ok(())
}
