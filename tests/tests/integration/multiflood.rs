//! Issue 11, an attacker who owns several namespaces: floods into three namespaces at once
//! leave a fourth answering its real clients (`ntpdig`, `dig`, `rpcinfo`), its datagrams served
//! by the quiet lane (`serve/quiet.rs`); and a swarm of low-rate floods into many namespaces,
//! each of which stays quiet and so is served by the lane, does not starve a busy namespace
//! whose sockets are served by the loop's own turns (the lane takes no more than the shares
//! say: nothing starves, nothing is lost). Every flood comes from a namespace behind a veth,
//! bounded in time and count. Timing targets live in `cargo bench --bench isolation`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nsaux_tests::closed_loop::{
    ClosedLoop, FLOODED_ADDR, FLOODED_CONFIG, junk, ntp_request, request_for,
};
use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::dns::{dig, section};
use nsaux_tests::env::{require, require_root};
use nsaux_tests::netns::{TestNetns, in_netns_file, udp_exchange, veth};
use nsaux_tests::rpc::wait_portmapper_udp;

const CONFIG: &str = FLOODED_CONFIG;
/// The flooded namespaces' address on their veth (each its own namespace, so one address).
const TARGET: [u8; 4] = FLOODED_ADDR;
/// Each flood stops after this long or this many requests, whichever comes first.
const FLOOD_TIME: Duration = Duration::from_secs(6);
const FLOOD_MAX: u64 = 2_000_000;
const WINDOW: u64 = 128;
/// What a real client's exchange may take meanwhile: generous (each tool's own timeout is 2 s).
const BOUND: Duration = Duration::from_secs(3);
/// Length of one counting window of the busy namespace's answers: longer than the longest
/// pause a loaded test machine was seen to give the daemon (about 200 ms).
const SLOT: Duration = Duration::from_millis(500);

/// A flood from the current namespace to `TARGET`: closed loop on `port` (123 or 53) with
/// `WINDOW` requests in flight, or open-loop junk to both ports (`port` 0), until `stop`, the
/// time `limit` or `FLOOD_MAX`. Returns the answers it got per [`SLOT`] (junk: datagrams sent,
/// as one count).
fn flood(port: u16, stop: &AtomicBool, limit: Duration) -> anyhow::Result<Vec<u64>> {
    if port == 0 {
        let to = [123, 53].map(|p| SocketAddr::from((TARGET, p)));
        return Ok(vec![junk(&to, stop, limit, FLOOD_MAX)?]);
    }
    let flood = ClosedLoop {
        to: SocketAddr::from((TARGET, port)),
        window: WINDOW,
        time: limit,
        max_requests: FLOOD_MAX,
        stop,
        slot: Some(SLOT),
    };
    let got = flood.run(|n| request_for(port, n))?;
    Ok(got.slots)
}

/// Starts floods from `far` (one thread each) for at most `limit`.
fn start_floods(
    far: &TestNetns,
    ports: &[u16],
    stop: &Arc<AtomicBool>,
    limit: Duration,
) -> Vec<std::thread::JoinHandle<anyhow::Result<Vec<u64>>>> {
    ports
        .iter()
        .map(|&port| {
            let stop = Arc::clone(stop);
            let far = far.path.clone();
            std::thread::spawn(move || in_netns_file(&far, move || flood(port, &stop, limit))?)
        })
        .collect()
}

fn join(
    floods: Vec<std::thread::JoinHandle<anyhow::Result<Vec<u64>>>>,
) -> anyhow::Result<Vec<Vec<u64>>> {
    floods
        .into_iter()
        .map(|f| f.join().map_err(|_| anyhow::anyhow!("flood panicked"))?)
        .collect()
}

/// Runs `script` in `ns`, checks it succeeds within [`BOUND`] and returns its stdout.
fn timed(ns: &TestNetns, script: &str) -> anyhow::Result<String> {
    let t0 = Instant::now();
    let out = ns.sh(script)?;
    let took = t0.elapsed();
    anyhow::ensure!(
        took < BOUND,
        "{script:?} took {took:?} while other namespaces were flooded"
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `udp` of namespace `name` in `ns list --json`.
fn udp_counts(d: &Daemon, name: &str) -> anyhow::Result<serde_json::Value> {
    let ns = d
        .ns(name)?
        .ok_or_else(|| anyhow::anyhow!("{name} not listed"))?;
    Ok(ns["udp"].clone())
}

#[test]
fn three_flooded_namespaces_leave_a_fourth_answering() -> anyhow::Result<()> {
    let name = "three_flooded_namespaces_leave_a_fourth_answering";
    if !require(name, &["ntpdig", "dig", "rpcinfo"]) {
        return Ok(());
    }
    let d = Daemon::start(CONFIG)?;
    let far_dir = tempfile::tempdir()?;
    let mut pairs = Vec::new();
    for k in 0..3 {
        let flooded = d.netns(&format!("mf-f{k}"))?;
        let far = TestNetns::create(far_dir.path(), &format!("mf-x{k}"))?;
        veth(
            &flooded,
            &format!("mfa{k}"),
            "10.0.0.5/24",
            &far,
            &format!("mfb{k}"),
            "10.0.0.9/24",
        )?;
        pairs.push((flooded, far));
    }
    let quiet = d.netns("mf-quiet")?;
    for ns in pairs.iter().map(|p| &p.0).chain([&quiet]) {
        wait_portmapper_udp(ns, &format!("portmapper in {}", ns.name))?;
        wait_for("dns answers", Duration::from_secs(5), || {
            dig(ns, "@127.0.0.53 probe.lan A")
                .ok()
                .filter(|o| section(o, "ANSWER").len() == 1)
        })?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = pairs
        .iter()
        .map(|(_, far)| start_floods(far, &[123, 53, 0], &stop, FLOOD_TIME))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let checks = (|| -> anyhow::Result<()> {
        for _ in 0..2 {
            let out = timed(&quiet, "ntpdig -j -t 2 127.0.0.1")?;
            let v = nsaux_tests::ntpdig::report(&out)?;
            anyhow::ensure!(v["stratum"].as_u64() == Some(10), "ntpdig: {v}");
            let out = timed(&quiet, "dig +time=2 +tries=1 @127.0.0.53 probe.lan A")?;
            let answer = section(&out, "ANSWER");
            anyhow::ensure!(
                answer.first().map(|r| r.3.as_str()) == Some("10.9.9.9"),
                "{out}"
            );
            let out = timed(&quiet, "rpcinfo -u 127.0.0.1 100000 2")?;
            anyhow::ensure!(out.contains("ready and waiting"), "rpcinfo: {out}");
        }
        // NTP exchanges one after another: they arrive while three namespaces' sockets are
        // backlogged, so the quiet lane serves them.
        let answered = in_netns_file(&quiet.path, || {
            (0..100u64)
                .filter(|&i| {
                    let to = SocketAddr::from(([127, 0, 0, 1], 123));
                    udp_exchange(to, &ntp_request(i), BOUND).is_ok_and(|r| r.is_some())
                })
                .count()
        })?;
        anyhow::ensure!(answered == 100, "quiet NTP exchanges answered: {answered}");
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let mut got = Vec::new();
    for f in floods {
        got.push(join(f)?);
    }
    checks?;
    // Every flood really ran, in every flooded namespace.
    for (k, per_ns) in got.iter().enumerate() {
        for (what, slots) in ["ntp", "dns"].iter().zip(per_ns) {
            let n: u64 = slots.iter().sum();
            assert!(n > 500, "{what} flood of mf-f{k} got only {n} answers");
        }
    }
    let udp = udp_counts(&d, "mf-quiet")?;
    assert_eq!(udp["dropped"].as_u64(), Some(0), "{udp}");
    assert!(
        udp["served_between"].as_u64().is_some_and(|n| n > 0),
        "the quiet lane served none of mf-quiet's datagrams: {udp}"
    );
    Ok(())
}

/// Namespaces of the low-rate swarm.
const SWARM: usize = 16;
/// NTP requests per second the swarm sends to each of its namespaces.
const SWARM_RATE: f64 = 400.0;

/// The swarm, from the attacker's namespace: one socket per target (10.1.K.5), a request to
/// each in turn at [`SWARM_RATE`] each, answers read as they come. Returns (sent, answered).
fn swarm(stop: &AtomicBool, limit: Duration) -> anyhow::Result<(u64, u64)> {
    let socks: Vec<UdpSocket> = (0..SWARM)
        .map(|k| -> anyhow::Result<UdpSocket> {
            let s = UdpSocket::bind(SocketAddr::from(([10, 1, k as u8, 9], 0)))?;
            s.connect(SocketAddr::from(([10, 1, k as u8, 5], 123)))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect::<anyhow::Result<_>>()?;
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut buf = [0u8; 512];
    let start = Instant::now();
    let drain = |answered: &mut u64, buf: &mut [u8]| {
        for s in &socks {
            while s.recv(buf).is_ok() {
                *answered += 1;
            }
        }
    };
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
        for s in &socks {
            if s.send(&ntp_request(round)).is_ok() {
                sent += 1;
            }
        }
        round += 1;
        drain(&mut answered, &mut buf);
        let due = Duration::from_secs_f64(round as f64 / SWARM_RATE);
        if let Some(ahead) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
    // Late answers.
    let end = Instant::now();
    while end.elapsed() < Duration::from_millis(500) && answered < sent {
        drain(&mut answered, &mut buf);
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((sent, answered))
}

#[test]
fn a_swarm_of_quiet_floods_does_not_starve_a_busy_namespace() -> anyhow::Result<()> {
    if !require_root("a_swarm_of_quiet_floods_does_not_starve_a_busy_namespace") {
        return Ok(());
    }
    let d = Daemon::start(CONFIG)?;
    let far_dir = tempfile::tempdir()?;
    // The busy namespace and its flooder.
    let busy = d.netns("sw-busy")?;
    let busy_far = TestNetns::create(far_dir.path(), "sw-busy-far")?;
    veth(&busy, "swa", "10.0.0.5/24", &busy_far, "swb", "10.0.0.9/24")?;
    // The swarm's namespaces, each behind a veth from one attacker namespace.
    let attacker = TestNetns::create(far_dir.path(), "sw-attacker")?;
    let mut quiet = Vec::new();
    for k in 0..SWARM {
        let ns = d.netns(&format!("sw-q{k}"))?;
        veth(
            &ns,
            &format!("swq{k}"),
            &format!("10.1.{k}.5/24"),
            &attacker,
            &format!("swx{k}"),
            &format!("10.1.{k}.9/24"),
        )?;
        quiet.push(ns);
    }
    wait_portmapper_udp(&busy, "portmapper in sw-busy")?;
    for ns in &quiet {
        wait_portmapper_udp(ns, &format!("portmapper in {}", ns.name))?;
    }

    // 1. The busy namespace alone.
    let stop = Arc::new(AtomicBool::new(false));
    let alone = join(start_floods(
        &busy_far,
        &[123],
        &stop,
        Duration::from_secs(2),
    ))?;
    let alone_rate =
        alone[0].iter().sum::<u64>() as f64 / (alone[0].len() as f64 * SLOT.as_secs_f64());

    // 2. The busy namespace while the swarm floods every quiet one slowly.
    let swarm_stop = Arc::new(AtomicBool::new(false));
    let swarm_thread = {
        let stop = Arc::clone(&swarm_stop);
        let path = attacker.path.clone();
        std::thread::spawn(move || {
            in_netns_file(&path, move || swarm(&stop, Duration::from_secs(5)))?
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let during = join(start_floods(
        &busy_far,
        &[123],
        &stop,
        Duration::from_secs(3),
    ));
    swarm_stop.store(true, Ordering::Relaxed);
    let (sent, answered) = swarm_thread
        .join()
        .map_err(|_| anyhow::anyhow!("swarm panicked"))??;
    let during = during?;
    let slots = &during[0];
    let during_rate = slots.iter().sum::<u64>() as f64 / (slots.len() as f64 * SLOT.as_secs_f64());

    // Nothing starves: the busy namespace was answered in every half second, at a rate
    // not far below what it got alone (generous: a loaded machine), and the swarm was answered.
    assert!(
        slots.len() >= 4 && slots.iter().all(|&n| n > 0),
        "the busy namespace starved in some half second: {slots:?}"
    );
    assert!(
        during_rate >= alone_rate / 10.0,
        "busy namespace: {during_rate:.0} answers/s during the swarm, {alone_rate:.0} alone"
    );
    assert!(
        sent > 1000 && answered * 10 >= sent * 9,
        "swarm: {answered} of {sent} answered"
    );
    // The swarm's namespaces stayed quiet: served by the lane, nothing dropped.
    let (mut between, mut dropped) = (0, 0);
    for ns in &quiet {
        let udp = udp_counts(&d, &ns.name)?;
        between += udp["served_between"].as_u64().unwrap_or(0);
        dropped += udp["dropped"].as_u64().unwrap_or(0);
    }
    assert!(between > 0, "the lane served none of the swarm");
    assert_eq!(dropped, 0, "the swarm's namespaces shed datagrams");
    println!(
        "busy alone {alone_rate:.0}/s, during the swarm {during_rate:.0}/s; swarm {answered}/{sent} \
         answered, {between} by the lane"
    );
    Ok(())
}
