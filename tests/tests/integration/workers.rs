//! Issue 11 item 4, more cores when there are more: with `worker_threads = 2`, NTP floods into
//! four namespaces at once (the GSO/GRO generator of `nsaux_tests::flood`, bounded in time and
//! count) are served by both worker threads, not one; the generator's count stays honest (never
//! more answers than requests); and a fifth namespace's real client (`ntpdig`) keeps getting
//! answers meanwhile. Throughput figures live in `cargo bench --bench workers`, not here.

use std::net::SocketAddr;
use std::time::Duration;

use nsaux_tests::closed_loop::{ntp_request, wait_ntp_answers};
use nsaux_tests::daemon::Daemon;
use nsaux_tests::env::require;
use nsaux_tests::flood::Flood;

const CONFIG: &str = "worker_threads = 2\n[ntp]\nstratum = 10\nlocal_stratum = 10\n\
    rate_limit = { enabled = false }\n[dns]\nenabled = false\n[rpcbind]\nenabled = false\n";
const NTP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 123);
/// CPU each of the two workers must have used during the flood: a small part of what one gets
/// even on a loaded machine (hundreds of ms), but far more than an idle worker's.
const WORKER_MIN_CPU: Duration = Duration::from_millis(20);

/// On-CPU time of each `nsaux-worker` thread of `pid`, by thread id.
fn worker_cpu(pid: u32) -> anyhow::Result<Vec<(String, Duration)>> {
    let mut v = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != "nsaux-worker" {
            continue;
        }
        let ns = std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        v.push((
            t.file_name().to_string_lossy().into_owned(),
            Duration::from_nanos(ns),
        ));
    }
    Ok(v)
}

#[test]
fn floods_over_several_namespaces_keep_both_workers_busy() -> anyhow::Result<()> {
    let name = "floods_over_several_namespaces_keep_both_workers_busy";
    if !require(name, &["ntpdig"]) {
        return Ok(());
    }
    let d = Daemon::start(CONFIG)?;
    let spaces = (0..4)
        .map(|i| d.netns(&format!("wk{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let quiet = d.netns("wk-quiet")?;
    for ns in spaces.iter().chain([&quiet]) {
        wait_ntp_answers(&ns.path, NTP, "NTP answers")?;
    }
    let before = worker_cpu(d.pid())?;
    let flood = Flood {
        target: NTP,
        namespaces: spaces.iter().map(|n| n.path.clone()).collect(),
        sockets_per_ns: 4,
        window: 32,
        burst: 32,
        threads: 1,
        time: Duration::from_millis(1500),
        max_requests: 3_000_000,
        request: ntp_request,
    };
    let running = std::thread::spawn(move || flood.run());
    std::thread::sleep(Duration::from_millis(300));
    let out = quiet.sh("ntpdig -j -t 2 127.0.0.1")?;
    let report = running
        .join()
        .map_err(|_| anyhow::anyhow!("flood panicked"))??;
    let after = worker_cpu(d.pid())?;

    let text = String::from_utf8_lossy(&out.stdout);
    let v = nsaux_tests::ntpdig::report(&text)?;
    assert_eq!(v["stratum"].as_u64(), Some(10), "ntpdig: {v}");
    assert!(report.answers > 10_000, "the flood really ran: {report:?}");
    assert!(report.answers <= report.sent, "{report:?}");
    // Both workers served the flood (the runtime's blocking-pool threads carry the same name
    // but sit idle here, so they are the ones left below the bar).
    let used: Vec<Duration> = after
        .iter()
        .map(|(tid, cpu)| {
            let was = before
                .iter()
                .find(|(t, _)| t == tid)
                .map_or(Duration::ZERO, |(_, c)| *c);
            cpu.saturating_sub(was)
        })
        .collect();
    let busy = used.iter().filter(|&&c| c >= WORKER_MIN_CPU).count();
    assert!(
        busy >= 2,
        "workers that served the flood: {busy} (CPU per worker thread: {used:?})"
    );
    Ok(())
}
