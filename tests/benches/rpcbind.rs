//! Portmapper benchmark (not a timed test): nsauxd vs stock rpcbind, side by side in one run.
//!
//! `cargo bench -p nsaux-tests --bench rpcbind` (as root). Measures, with the same UDP load
//! generator on loopback inside a private network namespace:
//! - UDP GETPORT answers per second and server CPU µs per answer (utime+stime from
//!   /proc/PID/stat);
//! - memory: nsauxd RSS growth per namespace at 1,000 namespaces with the portmapper on, vs the
//!   RSS of one stock rpcbind (× N for one per namespace).
//!
//! Stock rpcbind only ever runs inside its own network namespace and a private mount namespace
//! with a tmpfs on /run (so /run/rpcbind.sock, /run/rpcbind.lock and its state stay private),
//! in the foreground and without warm start (-w is not used).

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
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

/// `NSAUX_BENCH_SKIP_MEMORY=1` measures throughput only.
fn skip_memory() -> bool {
    std::env::var("NSAUX_BENCH_SKIP_MEMORY").is_ok_and(|v| v == "1")
}

#[derive(Debug, Clone, Copy)]
struct Load {
    answers: u64,
    secs: f64,
    cpu_us_per_answer: f64,
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
            cpu_us_per_answer: cpu_us / answers.max(1) as f64,
        })
    })?
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

    // Throughput and CPU.
    let d = Daemon::start(
        "[rpcbind]\nenabled = true\n[ntp]\nenabled = false\n[dns]\nenabled = false\n",
    )?;
    let ns = d.netns("bench")?;
    wait_portmapper_udp(&ns, "nsauxd portmapper")?;
    let ours = load(&ns.path, d.pid())?;
    let stock_dir = tempfile::tempdir()?;
    let stock_ns = TestNetns::create(stock_dir.path(), "stock")?;
    let stock = Stock::start(&stock_ns)?;
    let theirs = load(&stock_ns.path, stock.pid())?;
    let stock_rss = nsaux_tests::bench::rss_kib(stock.pid());
    drop(stock);
    drop(ns);

    // Memory: RSS growth of nsauxd per namespace with the portmapper on.
    let rss_base = nsaux_tests::bench::rss_kib(d.pid());
    let mut all: Vec<TestNetns> = Vec::with_capacity(N_NS);
    let t0 = Instant::now();
    let n_ns = if skip_memory() { 0 } else { N_NS };
    for i in 0..n_ns {
        all.push(d.netns(&format!("m{i}"))?);
    }
    let created = t0.elapsed();
    // Poll the small `status` answer (5 listeners per namespace), not `ns list`, whose
    // megabyte of JSON would stay in the allocator and count as growth.
    wait_for("every namespace served", Duration::from_secs(120), || {
        std::thread::sleep(Duration::from_millis(200));
        let st = d.ctl_json(&["status"]).ok()?;
        (st["listeners_up"].as_u64()? == 5 * n_ns as u64
            && st["namespaces"].as_u64()? == n_ns as u64)
            .then_some(())
    })?;
    // Let allocator caches settle.
    std::thread::sleep(Duration::from_millis(500));
    let rss_full = nsaux_tests::bench::rss_kib(d.pid());
    let per_ns_kib = (rss_full.saturating_sub(rss_base)) as f64 / n_ns.max(1) as f64;
    let fds = d.fd_count();
    drop(all);

    let ours_rate = ours.answers as f64 / ours.secs;
    let theirs_rate = theirs.answers as f64 / theirs.secs;
    println!();
    println!(
        "portmapper benchmark: UDP GETPORT on loopback inside a namespace, one load generator"
    );
    println!(
        "(window {}, at most {MAX_ANSWERS} answers or {} s per server; {} namespaces created in {:.1} s)",
        window(),
        MAX_TIME.as_secs(),
        N_NS,
        created.as_secs_f64()
    );
    println!();
    println!(
        "| metric                               | nsauxd        | stock rpcbind   | ratio  | target  |"
    );
    println!(
        "|--------------------------------------|---------------|-----------------|--------|---------|"
    );
    println!(
        "| GETPORT answers/s                    | {:>13.0} | {:>15.0} | {:>5.2}× |         |",
        ours_rate,
        theirs_rate,
        ours_rate / theirs_rate
    );
    println!(
        "| server CPU µs per answer             | {:>13.2} | {:>15.2} | {:>5.2}× | ≤ 0.25× |",
        ours.cpu_us_per_answer,
        theirs.cpu_us_per_answer,
        ours.cpu_us_per_answer / theirs.cpu_us_per_answer
    );
    println!(
        "| answers measured                     | {:>13} | {:>15} |        |         |",
        ours.answers, theirs.answers
    );
    println!(
        "| memory per namespace (KiB)           | {:>13.1} | {:>15} | {:>5.3}× | ≤ 16    |",
        per_ns_kib,
        stock_rss,
        per_ns_kib / stock_rss as f64
    );
    println!(
        "| memory for {N_NS} namespaces (MiB)     | {:>13.1} | {:>15.1} |        |         |",
        (rss_full.saturating_sub(rss_base)) as f64 / 1024.0,
        (stock_rss * N_NS as u64) as f64 / 1024.0
    );
    println!();
    println!(
        "nsauxd RSS: {rss_base} KiB before, {rss_full} KiB with {N_NS} namespaces ({fds} fds); \
         stock rpcbind RSS: {stock_rss} KiB per instance (one per namespace)."
    );
    Ok(())
}
