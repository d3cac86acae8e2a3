//! DNS benchmark (issue 4). Not a timed test: run `cargo bench -p nsaux-tests --bench dns`
//! (root; needs dnsperf, dnsmasq, unbound, dig).
//!
//! 1. Cache hits: nsauxd, dnsmasq and unbound (1 thread) each serve the same cached name on
//!    127.0.0.53:53 in their own namespace, forwarding to the same kind of origin (an unbound
//!    with local data on 127.0.0.2 in that namespace, queried once to fill the cache). The
//!    same load generator (dnsperf, same flags, bounded in time) runs against each in turn;
//!    we print answers/s and the server's CPU time (utime+stime) per answer.
//! 2. Memory: nsauxd with only the resolver on, N namespaces (default 1,000) each answering
//!    a local record (no cache entries); RSS growth / N.
//!
//! `NSAUX_DNS_BENCH_SECS` (default 5) sets the load duration, `NSAUX_DNS_BENCH_NS` the
//! namespace count.

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::mount::{MntFlags, umount2};
use nix::sched::{CloneFlags, setns};
use nsaux_tests::bench::{cpu_time, print_table, rss_kib};
use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::dns::{Server, dig, section};
use nsaux_tests::netns::TestNetns;

const ORIGIN: &str = "127.0.0.2";
/// Not under `test.`: unbound answers that RFC 6761 name itself unless told otherwise.
const ORIGIN_ZONE: &str = "  local-zone: \".\" refuse\n  local-zone: \"benchzone.\" static\n  \
    local-data: \"benchzone. 3600 IN SOA ns.benchzone. admin.benchzone. 1 3600 600 86400 30\"\n  \
    local-data: \"www.benchzone. 3600 IN A 10.0.0.1\"\n";

struct Result {
    name: &'static str,
    completed: u64,
    qps: f64,
    cpu_us: f64,
}

/// Warms the cache of the server on 127.0.0.53 in `ns`, then runs dnsperf against it.
/// The other services are off: each benchmark measures its own service.
const OTHERS_OFF: &str = "[ntp]\nenabled = false\n[rpcbind]\nenabled = false\n";

fn load(
    ns: &TestNetns,
    name: &'static str,
    pid: u32,
    secs: u64,
    data: &Path,
) -> anyhow::Result<Result> {
    wait_for(&format!("{name} answers"), Duration::from_secs(10), || {
        dig(ns, "@127.0.0.53 www.benchzone A")
            .ok()
            .filter(|o| section(o, "ANSWER").len() == 1)
    })?;
    let cpu0 = cpu_time(pid);
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
        ])
        .arg("-l")
        .arg(secs.to_string())
        .arg("-d")
        .arg(data)
        .output()
        .context("running dnsperf")?;
    let cpu = cpu_time(pid).saturating_sub(cpu0);
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
    let completed = completed as u64;
    Ok(Result {
        name,
        completed,
        qps,
        cpu_us: cpu.as_secs_f64() * 1e6 / completed.max(1) as f64,
    })
}

fn cache_hits(secs: u64) -> anyhow::Result<Vec<Result>> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("queries.txt");
    std::fs::write(&data, "www.benchzone A\n")?;
    let mut results = Vec::new();

    // nsauxd.
    {
        let d = Daemon::start(&format!("{OTHERS_OFF}[dns]\nupstreams = [\"{ORIGIN}\"]\n"))?;
        let ns = d.netns("bench-nsaux")?;
        let _origin = Server::unbound(&ns, ORIGIN, ORIGIN_ZONE)?;
        results.push(load(&ns, "nsauxd", d.pid(), secs, &data)?);
    }
    // dnsmasq (single-threaded by design).
    {
        let ns = TestNetns::create(tmp.path(), "bench-dnsmasq")?;
        let _origin = Server::unbound(&ns, ORIGIN, ORIGIN_ZONE)?;
        let srv = Server::dnsmasq(
            &ns,
            "127.0.0.53",
            &[&format!("--server={ORIGIN}"), "--cache-size=10000"],
        )?;
        results.push(load(&ns, "dnsmasq", srv.pid(), secs, &data)?);
    }
    // unbound, 1 thread, forwarding.
    {
        let ns = TestNetns::create(tmp.path(), "bench-unbound")?;
        let _origin = Server::unbound(&ns, ORIGIN, ORIGIN_ZONE)?;
        let fwd = format!(
            "  do-not-query-localhost: no\n  access-control: 127.0.0.0/8 allow\n\
             forward-zone:\n  name: \".\"\n  forward-addr: {ORIGIN}\n"
        );
        let srv = Server::unbound(&ns, "127.0.0.53", &fwd)?;
        results.push(load(&ns, "unbound", srv.pid(), secs, &data)?);
    }
    Ok(results)
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

/// RSS growth per namespace with the resolver on in `n` namespaces, KiB.
fn memory(n: usize) -> anyhow::Result<(f64, f64)> {
    let d = Daemon::start(
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
    let secs: u64 = std::env::var("NSAUX_DNS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .clamp(1, 60);
    let n: usize = std::env::var("NSAUX_DNS_BENCH_NS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000);

    eprintln!("dns bench: cache hits, {secs} s per server ...");
    let hits = cache_hits(secs)?;
    let unbound_cpu = hits
        .iter()
        .find(|r| r.name == "unbound")
        .map_or(f64::NAN, |r| r.cpu_us);
    let rows: Vec<Vec<String>> = hits
        .iter()
        .map(|r| {
            vec![
                r.name.to_owned(),
                r.completed.to_string(),
                format!("{:.0}", r.qps),
                format!("{:.2}", r.cpu_us),
                format!("{:.2}x", r.cpu_us / unbound_cpu),
            ]
        })
        .collect();
    eprintln!("dns bench: memory at {n} namespaces ...");
    let (kib, fds) = memory(n)?;

    println!(
        "\nDNS cache hits: same name, dnsperf -c 4 -q 64 -l {secs} on loopback in a private namespace, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print_table(
        &[
            "server",
            "answers",
            "answers/s",
            "CPU µs/answer",
            "vs unbound",
        ],
        &rows,
    );
    println!("\nnsauxd with the resolver on (UDP+TCP on 127.0.0.53), no cache entries");
    print_table(
        &["namespaces", "RSS / netns", "fds / netns"],
        &[vec![
            n.to_string(),
            format!("{kib:.1} KiB"),
            format!("{fds:.1}"),
        ]],
    );
    Ok(())
}
