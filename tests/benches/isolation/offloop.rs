//! The fourth table: loop stalls at thousands of namespaces (issue 11 item 3).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nsaux_tests::bench::{builds, print_table};
use nsaux_tests::daemon::wait_for;
use nsaux_tests::netns::in_netns_file;
use nsaux_tests::rpc::{Cred, PMAP, call, wait_portmapper_udp};

use crate::load::{probe, wait_ntp};
use crate::row;

/// Registrations in the churned namespace of [`offloop_stalls`]: about 1 MiB of journal lines.
const OFFLOOP_TABLE: u32 = 8_000;
/// Changes per second of that churn (a compaction about every second and a half).
const OFFLOOP_CHURN_RATE: f64 = 6_000.0;

/// One SET (`set`) or UNSET of program `prog` over an open AF_LOCAL connection; true if TRUE.
fn offloop_change(s: &mut std::os::unix::net::UnixStream, set: bool, prog: u32) -> bool {
    let uaddr = format!("/run/offloop-{}-{prog}.sock", "z".repeat(40));
    let (proc_, args) = if set {
        (1, nsaux_tests::rpc::rpcb(prog, 1, "local", &uaddr, "0"))
    } else {
        (2, nsaux_tests::rpc::rpcb(prog, 1, "", "", "0"))
    };
    nsaux_tests::rpc::stream_call(s, &call(prog, PMAP, 4, proc_, Cred::None, &args))
        .as_ref()
        .and_then(nsaux_tests::rpc::result_u32)
        == Some(1)
}

/// The fourth table (see the module docs): what work that used to run on the loop costs a quiet
/// namespace's NTP client, at thousands of namespaces, per build (A/B with the baseline).
pub(crate) fn offloop_stalls(time: Duration) -> anyhow::Result<()> {
    use std::os::fd::AsFd as _;
    let n: usize = std::env::var("NSAUX_OFFLOOP_NS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let config = "[ntp]\nstratum = 10\nlocal_stratum = 10\nrate_limit = { enabled = false }\n\
                  [rpcbind]\nmax_registrations = 20000\nmax_registration_bytes = 67108864\n";
    let mut rows = Vec::new();
    for build in builds()? {
        let d = build.start(config)?;
        let b = d.netns("B")?;
        let j = d.netns("J")?;
        // The crowd, created on one thread that returns home after each.
        let dir = d.netns_dir();
        let names: Vec<String> = (0..n).map(|i| format!("S{i}")).collect();
        let names2 = names.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let home = std::fs::File::open("/proc/thread-self/ns/net")?;
            for name in &names2 {
                nsaux_tests::netns::create_on_this_thread(&dir, name)?;
                nix::sched::setns(home.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("creator thread panicked"))??;
        // An older build may not hold this many namespaces (its fd limit): say so and go on
        // with the next build rather than fail the whole table.
        if let Err(e) = wait_for("every namespace listed", Duration::from_secs(120), || {
            (d.ns_list().ok()?.len() >= n + 2).then_some(())
        }) {
            println!(
                "{}: did not serve {n} namespaces ({e}); no row",
                build.label
            );
            continue;
        }
        wait_ntp(&b.path, "NTP in B")?;
        wait_portmapper_udp(&j, "portmapper in J")?;
        // J's table: OFFLOOP_TABLE registrations over one connection.
        j.run_in(|| -> anyhow::Result<()> {
            let mut s = nsaux_tests::rpc::connect_abstract("/run/rpcbind.sock")?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            for p in 0..OFFLOOP_TABLE {
                anyhow::ensure!(offloop_change(&mut s, true, 600_000 + p), "SET {p}");
            }
            Ok(())
        })??;

        type Job<'a> = &'a (dyn Fn(&Arc<AtomicBool>) -> anyhow::Result<u64> + Sync);
        let work: [(&str, Job<'_>); 6] = [
            ("idle", &|_| Ok(0)),
            ("ns list --json", &|stop| {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    anyhow::ensure!(d.ctl(&["ns", "list", "--json"])?.status.success());
                    k += 1;
                }
                Ok(k)
            }),
            ("metrics", &|stop| {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    anyhow::ensure!(d.ctl(&["metrics"])?.status.success());
                    k += 1;
                }
                Ok(k)
            }),
            ("journal churn", &|stop| {
                let stop = Arc::clone(stop);
                j.run_in(move || -> anyhow::Result<u64> {
                    let mut s = nsaux_tests::rpc::connect_abstract("/run/rpcbind.sock")?;
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    let (mut k, mut next) = (0u64, OFFLOOP_TABLE);
                    let started = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        // A fixed rate, so every build does the same work per second.
                        let due = Duration::from_secs_f64(k as f64 / OFFLOOP_CHURN_RATE);
                        if let Some(ahead) = due.checked_sub(started.elapsed()) {
                            std::thread::sleep(ahead);
                        }
                        anyhow::ensure!(offloop_change(&mut s, true, 600_000 + next), "SET");
                        anyhow::ensure!(
                            offloop_change(&mut s, false, 600_000 + next - OFFLOOP_TABLE),
                            "UNSET"
                        );
                        next += 1;
                        k += 2;
                    }
                    Ok(k)
                })?
            }),
            ("DUMP 8,000", &|stop| {
                let stop = Arc::clone(stop);
                j.run_in(move || -> anyhow::Result<u64> {
                    let mut s = nsaux_tests::rpc::connect_abstract("/run/rpcbind.sock")?;
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    let mut k = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let req = call(k as u32, PMAP, 4, 4, Cred::None, &[]);
                        std::io::Write::write_all(&mut s, &nsaux_tests::rpc::frame(&req))?;
                        let rec = nsaux_tests::rpc::read_record(&mut s)
                            .ok_or_else(|| anyhow::anyhow!("no DUMP reply"))?;
                        anyhow::ensure!(rec.len() > 400_000, "short DUMP: {}", rec.len());
                        k += 1;
                    }
                    Ok(k)
                })?
            }),
            ("replay 8,000", &|stop| {
                let off =
                    format!("{config}[[netns]]\nmatch = \"J\"\nrpcbind = {{ enabled = false }}\n");
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    d.write_config(&off)?;
                    anyhow::ensure!(d.ctl(&["reload"])?.status.success(), "reload off");
                    d.write_config(config)?;
                    anyhow::ensure!(d.ctl(&["reload"])?.status.success(), "reload on");
                    wait_for("J replayed", Duration::from_secs(10), || {
                        let n = d.ns("J").ok()??;
                        let st = &n["services"]["rpcbind"]["status"];
                        (st["registrations"].as_u64()? >= u64::from(OFFLOOP_TABLE)
                            && st["journal"]["replaying"] == false)
                            .then_some(())
                    })?;
                    k += 1;
                }
                Ok(k)
            }),
        ];
        for (name, job) in work {
            let stop = Arc::new(AtomicBool::new(false));
            let cpu0 = nsaux_tests::bench::cpu_ns(d.pid());
            let (p, done, secs) = std::thread::scope(|sc| -> anyhow::Result<_> {
                let started = Instant::now();
                let h = sc.spawn(|| job(&stop));
                std::thread::sleep(Duration::from_millis(100));
                let bpath = b.path.clone();
                let p = in_netns_file(&bpath, move || probe(time, None));
                stop.store(true, Ordering::Relaxed);
                let done = h
                    .join()
                    .map_err(|_| anyhow::anyhow!("work thread panicked"))??;
                Ok((p??, done, started.elapsed().as_secs_f64()))
            })?;
            let mut r = row(name, build.label, &p, None);
            let max = p.rtts.iter().max().copied().unwrap_or_default();
            r.insert(5, format!("{:.0} µs", max.as_secs_f64() * 1e6));
            let cpu = nsaux_tests::bench::cpu_ns(d.pid()).saturating_sub(cpu0);
            r[7] = if name == "idle" {
                "-".into()
            } else {
                format!("{:.1}/s", done as f64 / secs)
            };
            r.push(if name == "idle" || done == 0 {
                "-".into()
            } else {
                format!("{:.0} µs", cpu as f64 / 1e3 / done as f64)
            });
            rows.push(r);
        }
        let dir = d.netns_dir();
        for name in &names {
            let path = dir.join(name);
            let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&path);
        }
    }
    println!(
        "\nB probed (1 NTP request in flight) at {n} namespaces while the daemon does work that \
         once ran on its loop; max = the longest wait B saw:\n"
    );
    print_table(
        &[
            "work",
            "server",
            "B answers/s",
            "B p50",
            "B p99",
            "B max",
            "B lost",
            "work done",
            "CPU / work",
        ],
        &rows,
    );
    Ok(())
}
