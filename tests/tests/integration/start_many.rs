//! A daemon started with many namespaces already present (issue 16: they arrive from the
//! tracker's first scan in bursts, started a few trips at a time): every one is served under its
//! own label, and namespaces deleted while the daemon starts are released.

use std::net::SocketAddr;
use std::time::Duration;

use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::dns::dig;
use nsaux_tests::env::require;
use nsaux_tests::netns::TestNetns;

/// More than one burst of the manager (`arrivals::BURST_MAX`, 256) and many trips of 32.
const PRESENT: usize = 300;
/// Every tenth of them is deleted while the daemon starts.
const DELETE_EVERY: usize = 10;

fn config(etc: &std::path::Path) -> String {
    format!(
        "[ident]\nenabled = true\n\n[ntp]\nstratum = 5\nlocal_stratum = 5\n\n[dns]\nnetns_etc_dir = \"{}\"\nlocal_domains = [\"lan\"]\n\
         records = [{{ name = \"c.lan\", addr = \"10.0.0.9\" }}]\n",
        etc.display()
    )
}

/// The `netns=` label in the ident answer from inside `ns` (which namespace's socket answered).
fn ident_label(ns: &TestNetns) -> Option<String> {
    let to = SocketAddr::from(([127, 0, 0, 1], 7867));
    let (b, _) = ns
        .udp_query(to, &[b'?'; 256], Duration::from_millis(500))
        .ok()
        .flatten()?;
    String::from_utf8_lossy(&b)
        .split_whitespace()
        .find_map(|w| w.strip_prefix("netns=").map(str::to_owned))
}

/// The daemon's fd count once it stopped changing (listeners come up asynchronously, and the
/// start-up `status` connection closes).
fn settled_fds(d: &Daemon) -> anyhow::Result<usize> {
    let mut last = d.fd_count();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(300));
        let now = d.fd_count();
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    anyhow::bail!("fd count still changing after 30 s")
}

#[test]
fn namespaces_present_at_start_are_all_served_and_deleted_ones_released() -> anyhow::Result<()> {
    let name = "namespaces_present_at_start_are_all_served_and_deleted_ones_released";
    if !require(name, &["dig", "rpcinfo", "ntpdig"]) {
        return Ok(());
    }
    // The daemon binary is built (when stale) on its first use: before the deleter's clock runs.
    let _ = nsaux_tests::env::bin("nsauxd");
    let etc = tempfile::tempdir()?;
    let (mut d, (kept, deleter)) = Daemon::start_after(&config(etc.path()), |dir| {
        let netns = dir.join("netns");
        let mut kept = Vec::new();
        let mut doomed = Vec::new();
        for i in 0..PRESENT {
            let ns = TestNetns::create(&netns, &format!("s{i}"))?;
            if i % DELETE_EVERY == 5 {
                doomed.push(ns);
            } else {
                kept.push(ns);
            }
        }
        // Deletes the doomed ones as soon as the daemon has started the first namespace of
        // its start-up scan (which reported them all): while the rest are being started.
        let log = dir.join("nsauxd.log");
        let deleter = std::thread::spawn(move || -> anyhow::Result<Vec<TestNetns>> {
            wait_for("first namespace started", Duration::from_secs(60), || {
                std::fs::read_to_string(&log)
                    .ok()
                    .filter(|l| l.contains("namespace appeared"))
            })?;
            for ns in &mut doomed {
                ns.delete()?;
            }
            Ok(doomed)
        });
        Ok((kept, deleter))
    })?;
    let doomed = deleter
        .join()
        .map_err(|_| anyhow::anyhow!("deleter panicked"))??;
    // Every kept namespace is listed with every service up, and nothing else is.
    let all_up = |l: &Vec<serde_json::Value>| {
        l.len() == kept.len()
            && l.iter().all(|e| {
                ["rpcbind", "ntp", "dns", "ident"]
                    .iter()
                    .all(|s| e["services"][s]["state"] == "up")
            })
    };
    let list = wait_for(
        "kept namespaces listed, all up",
        Duration::from_secs(20),
        || d.ns_list().ok().filter(all_up),
    )?;
    let listed: std::collections::HashSet<&str> =
        list.iter().filter_map(|e| e["name"].as_str()).collect();
    let log = d.log();
    for ns in &doomed {
        assert!(
            !listed.contains(ns.name.as_str()),
            "deleted {} still listed",
            ns.name
        );
        // Reported by the scan, so started and then released (not forgotten half-way).
        assert!(
            log.contains(&format!("namespace gone; released netns={} ", ns.name)),
            "deleted {} not released",
            ns.name
        );
    }
    // Each namespace answers from its own sockets, under its own label.
    for ns in &kept {
        let label = wait_for(
            &format!("ident in {}", ns.name),
            Duration::from_secs(2),
            || ident_label(ns),
        )?;
        assert_eq!(label, ns.name, "the socket of another namespace answered");
    }
    // Real clients in a few of them.
    for ns in [&kept[0], &kept[kept.len() / 2], &kept[kept.len() - 1]] {
        let out = dig(ns, "@127.0.0.53 c.lan A +short")?;
        assert_eq!(out.trim(), "10.0.0.9", "dig in {}", ns.name);
        let out = ns.sh("rpcinfo -p 127.0.0.1")?;
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("portmapper"),
            "rpcinfo in {}",
            ns.name
        );
        let out = ns.sh("ntpdig -j -t 2 127.0.0.1")?;
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("\"offset\""),
            "ntpdig in {}",
            ns.name
        );
    }
    // Nothing of a deleted namespace is held: the same daemon started afresh with only the kept
    // namespaces present holds exactly as many fds.
    let fds = settled_fds(&d)?;
    d.stop()?;
    d.restart()?;
    wait_for(
        "kept namespaces listed again",
        Duration::from_secs(20),
        || d.ns_list().ok().filter(|l| l.len() == kept.len()),
    )?;
    let fds_fresh = settled_fds(&d)?;
    assert_eq!(
        fds, fds_fresh,
        "fds after deletions during start-up vs a fresh start with the same namespaces"
    );
    Ok(())
}
