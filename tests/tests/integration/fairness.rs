//! Issue 11, a fair share of the one event loop: a remote host behind a veth floods one
//! namespace's NTP, DNS and portmapper (closed loop, many requests in flight, plus undecodable
//! junk), bounded in time and count, while real clients (`ntpdig`, `dig`, `rpcinfo`) in another
//! namespace served by the same daemon keep getting answers within a generous bound. Timing
//! targets live in `cargo bench --bench isolation`, not here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nsaux_tests::closed_loop::{
    ClosedLoop, FLOODED_ADDR, FLOODED_CONFIG, junk, ntp_request, request_for,
};
use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::dns::{dig, section};
use nsaux_tests::env::require;
use nsaux_tests::netns::{TestNetns, veth};
use nsaux_tests::rpc::wait_portmapper_udp;

const CONFIG: &str = FLOODED_CONFIG;
const TARGET: [u8; 4] = FLOODED_ADDR;
/// Each flood stops after this long or this many requests, whichever comes first.
const FLOOD_TIME: Duration = Duration::from_secs(8);
const FLOOD_MAX: u64 = 3_000_000;
const WINDOW: u64 = 256;
/// What a real client's exchange may take while the other namespace is flooded: generous
/// (each tool's own timeout is 2 s), so a loaded test machine does not fail it.
const BOUND: Duration = Duration::from_secs(3);
/// NTP exchanges made one after another from the quiet namespace during the flood.
const QUIET_BURST: u64 = 200;

/// A closed-loop flood (`port` 0: open-loop junk to all three ports) from the current
/// namespace; returns the answers it got (junk: datagrams sent).
fn flood(port: u16, stop: &AtomicBool) -> anyhow::Result<u64> {
    if port == 0 {
        let to = [123, 53, 111].map(|p| SocketAddr::from((TARGET, p)));
        return Ok(junk(&to, stop, FLOOD_TIME, FLOOD_MAX)?);
    }
    let flood = ClosedLoop {
        to: SocketAddr::from((TARGET, port)),
        window: WINDOW,
        time: FLOOD_TIME,
        max_requests: FLOOD_MAX,
        stop,
        slot: None,
    };
    let got = flood.run(|n| request_for(port, n))?;
    Ok(got.answers)
}

/// Runs `script` in `ns`, checks it succeeds within [`BOUND`] and returns its stdout.
fn timed(ns: &TestNetns, script: &str) -> anyhow::Result<String> {
    let t0 = Instant::now();
    let out = ns.sh(script)?;
    let took = t0.elapsed();
    assert!(
        took < BOUND,
        "{script:?} took {took:?} while another namespace was flooded"
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_flooded_namespace_leaves_the_others_answering() -> anyhow::Result<()> {
    let name = "a_flooded_namespace_leaves_the_others_answering";
    if !require(name, &["ntpdig", "dig", "rpcinfo"]) {
        return Ok(());
    }
    let d = Daemon::start(CONFIG)?;
    let flooded = d.netns("fa-flooded")?;
    let quiet = d.netns("fa-quiet")?;
    let far_dir = tempfile::tempdir()?;
    let far = TestNetns::create(far_dir.path(), "fa-far")?;
    veth(&flooded, "fa0", "10.0.0.5/24", &far, "fa1", "10.0.0.9/24")?;
    for ns in [&flooded, &quiet] {
        wait_portmapper_udp(ns, &format!("portmapper in {}", ns.name))?;
        wait_for("dns answers", Duration::from_secs(5), || {
            dig(ns, "@127.0.0.53 probe.lan A")
                .ok()
                .filter(|o| section(o, "ANSWER").len() == 1)
        })?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = [123u16, 53, 111, 0]
        .into_iter()
        .map(|port| {
            let stop = Arc::clone(&stop);
            let far = far.path.clone();
            std::thread::spawn(move || {
                nsaux_tests::netns::in_netns_file(&far, move || flood(port, &stop))?
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let checks = (|| -> anyhow::Result<()> {
        for _ in 0..3 {
            let out = timed(&quiet, "ntpdig -j -t 2 127.0.0.1")?;
            let v = nsaux_tests::ntpdig::report(&out)?;
            assert_eq!(v["stratum"].as_u64(), Some(10), "ntpdig: {v}");
            let out = timed(&quiet, "dig +time=2 +tries=1 @127.0.0.53 probe.lan A")?;
            let answer = section(&out, "ANSWER");
            assert_eq!(
                answer.first().map(|r| r.3.as_str()),
                Some("10.9.9.9"),
                "{out}"
            );
            let out = timed(&quiet, "rpcinfo -u 127.0.0.1 100000 2")?;
            assert!(out.contains("ready and waiting"), "rpcinfo: {out}");
        }
        // A burst of NTP exchanges, one at a time, from the quiet namespace: they arrive while
        // the flooded namespace's sockets are backlogged, so the quiet lane serves them.
        let answered = nsaux_tests::netns::in_netns_file(&quiet.path, || {
            (0..QUIET_BURST)
                .filter(|&i| {
                    let to = SocketAddr::from(([127, 0, 0, 1], 123));
                    nsaux_tests::netns::udp_exchange(to, &ntp_request(i), BOUND)
                        .is_ok_and(|r| r.is_some())
                })
                .count()
        })?;
        assert_eq!(
            answered, QUIET_BURST as usize,
            "quiet NTP exchanges answered"
        );
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let mut got = Vec::new();
    for f in floods {
        got.push(f.join().map_err(|_| anyhow::anyhow!("flood panicked"))??);
    }
    checks?;
    // The floods really ran: the flooded namespace answered them too.
    for (what, n) in ["ntp", "dns", "getport"].iter().zip(&got) {
        assert!(*n > 1000, "{what} flood got only {n} answers");
    }
    // The shedding counters are reported per namespace; the quiet one shed nothing.
    let ns = d
        .ns("fa-quiet")?
        .ok_or_else(|| anyhow::anyhow!("fa-quiet not listed"))?;
    assert_eq!(ns["udp"]["dropped"].as_u64(), Some(0), "{ns}");
    // Its datagrams did not all wait for a turn of the busy loop: the quiet lane served some
    // (`serve/quiet.rs`).
    assert!(
        ns["udp"]["served_between"].as_u64().is_some_and(|n| n > 0),
        "{ns}"
    );
    let ns = d
        .ns("fa-flooded")?
        .ok_or_else(|| anyhow::anyhow!("fa-flooded not listed"))?;
    assert!(ns["udp"]["deferred"].is_u64(), "{ns}");
    assert!(ns["udp"]["dropped"].is_u64(), "{ns}");
    Ok(())
}
