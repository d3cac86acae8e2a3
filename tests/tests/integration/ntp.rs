//! NTP service: real clients (`ntpdig`, `chronyd -Q`) and a byte-level test client, in private
//! namespaces only. The kernel clock of the test machine may or may not be synchronised, so
//! every check of stratum, leap or refid uses settings that make the answer independent of it
//! (`stratum = local_stratum = N`, a fake local NTP daemon that says "unsynchronised"), or reads
//! the daemon's own view of the kernel state and checks the matching case exactly.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::env::{require, require_root};
use nsaux_tests::netns::TestNetns;
use serde_json::Value;

const LO4: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 123);
const LO6: SocketAddr = SocketAddr::new(std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 123);
const WAIT: Duration = Duration::from_millis(300);

/// NTP time now, 32.32 since 1900.
fn ntp_now() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    ((d.as_secs() + 2_208_988_800) << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

/// Seconds between two NTP timestamps (b − a).
fn ntp_diff(a: u64, b: u64) -> f64 {
    (b.wrapping_sub(a) as i64) as f64 / 4_294_967_296.0
}

/// A request header: leap 0, `version`, `mode`, `poll`, transmit timestamp `tx`.
fn request(version: u8, mode: u8, poll: i8, tx: u64) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = (version << 3) | mode;
    p[2] = poll.to_ne_bytes()[0];
    p[40..48].copy_from_slice(&tx.to_be_bytes());
    p
}

/// The fields of an NTP header, decoded independently of the daemon's codec.
#[derive(Debug, Clone, Copy)]
struct Reply {
    len: usize,
    leap: u8,
    version: u8,
    mode: u8,
    stratum: u8,
    poll: i8,
    precision: i8,
    refid: [u8; 4],
    origin: u64,
    receive: u64,
    transmit: u64,
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().unwrap_or([0; 8]))
}

fn parse(b: &[u8]) -> Reply {
    assert!(b.len() >= 48, "reply too short: {} bytes", b.len());
    Reply {
        len: b.len(),
        leap: b[0] >> 6,
        version: (b[0] >> 3) & 7,
        mode: b[0] & 7,
        stratum: b[1],
        poll: i8::from_ne_bytes([b[2]]),
        precision: i8::from_ne_bytes([b[3]]),
        refid: [b[12], b[13], b[14], b[15]],
        origin: be64(&b[24..32]),
        receive: be64(&b[32..40]),
        transmit: be64(&b[40..48]),
    }
}

/// Sends `payload` from inside `ns`; the reply (and its source) or `None`.
fn ask(ns: &TestNetns, to: SocketAddr, payload: &[u8]) -> Option<(Vec<u8>, SocketAddr)> {
    ns.udp_query(to, payload, WAIT).ok().flatten()
}

/// A plain v4 client request; waits until the service answers (listeners come up shortly
/// after the namespace appears).
fn wait_answer(ns: &TestNetns, to: SocketAddr) -> anyhow::Result<Reply> {
    wait_for("an NTP answer", Duration::from_secs(5), || {
        ask(ns, to, &request(4, 3, 6, ntp_now())).map(|(b, _)| parse(&b))
    })
}

fn ctl_ns(d: &Daemon, args: &[&str], ns: &str) -> anyhow::Result<Value> {
    let mut a = args.to_vec();
    a.extend(["--ns", ns]);
    let v = d.ctl_json(&a)?;
    Ok(v[ns].clone())
}

/// How far a client may find the clock it shares with the server off, given the round trip
/// `delay` it measured: 5 ms, or half the round trip (plus the clock's reading jitter) when a
/// loaded machine stretched the exchange further.
fn same_clock_bound(delay: f64) -> f64 {
    if delay.is_finite() {
        0.005_f64.max(delay / 2.0 + 0.000_5)
    } else {
        0.005
    }
}

#[test]
fn ntpdig_and_chronyd_agree_in_two_namespaces() -> anyhow::Result<()> {
    let name = "ntpdig_and_chronyd_agree_in_two_namespaces";
    if !require(name, &["ntpdig", "chronyd"]) {
        return Ok(());
    }
    // stratum = local_stratum: the same stratum whether or not the kernel clock is
    // synchronised; a per-namespace override proves each namespace serves its own settings.
    let d = Daemon::start(
        "[ntp]\nstratum = 5\nlocal_stratum = 5\n\n[[netns]]\nmatch = \"vs-b\"\n\
         ntp = { stratum = 6, local_stratum = 6 }\n",
    )?;
    let a = d.netns("vs-a")?;
    let b = d.netns("vs-b")?;
    for (ns, stratum) in [(&a, 5u64), (&b, 6)] {
        wait_answer(ns, LO4)?;
        for server in ["127.0.0.1", "::1"] {
            let out = ns.sh(&format!("ntpdig -j -t 2 {server}"))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let v = nsaux_tests::ntpdig::report(&text)?;
            let offset = v["offset"].as_f64().unwrap_or(f64::NAN);
            let delay = v["delay"].as_f64().unwrap_or(f64::NAN);
            // One clock on both ends: the server's stamps lie between the client's, so the
            // offset is at most half the round trip (a loaded machine can stretch that).
            assert!(
                offset.abs() < same_clock_bound(delay),
                "{}: ntpdig offset {v}",
                ns.name
            );
            assert_eq!(v["stratum"].as_u64(), Some(stratum), "{}: {v}", ns.name);
            assert_eq!(v["leap"], "no-leap", "{}: {v}", ns.name);
        }
    }
    // chronyd -Q in both namespaces at once: it only measures (-Q, -x), writes only into a
    // temporary directory and opens no command socket.
    let runs: Vec<_> = [(&a, 5u32), (&b, 6)]
        .into_iter()
        .map(|(ns, stratum)| {
            let dir = tempfile::tempdir()?;
            let p = dir.path().display().to_string();
            let child = ns
                .command("chronyd")
                .args(["-Q", "-x", "-t", "20", "-u", "root", "-f", "/dev/null"])
                .arg("server 127.0.0.1 iburst maxsamples 4")
                .arg(format!("pidfile {p}/chronyd.pid"))
                .arg(format!("driftfile {p}/drift"))
                .arg(format!("dumpdir {p}"))
                .arg(format!("logdir {p}"))
                .arg("log measurements")
                .arg("cmdport 0")
                .arg("bindcmdaddress /")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()?;
            Ok((ns.name.clone(), stratum, dir, child))
        })
        .collect::<anyhow::Result<_>>()?;
    for (ns, stratum, dir, child) in runs {
        let out = child.wait_with_output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{ns}: chronyd -Q failed:\n{text}");
        let offset: f64 = text
            .split("System clock wrong by ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("{ns}: no offset in chronyd output:\n{text}"))?;
        // measurements.log: "date time IP L St (3 test fields) LP RP Score Offset Peer-delay
        // ..." for every sample.
        let log = std::fs::read_to_string(dir.path().join("measurements.log"))?;
        let samples: Vec<Vec<&str>> = log
            .lines()
            .filter(|l| l.contains("127.0.0.1"))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(!samples.is_empty(), "{ns}: no samples:\n{log}");
        // chronyd's estimate comes from its samples: on one clock, within half the shortest
        // round trip among them.
        let shortest = samples
            .iter()
            .filter_map(|s| s.get(12).and_then(|d| d.parse::<f64>().ok()))
            .fold(f64::INFINITY, f64::min);
        assert!(
            offset.abs() < same_clock_bound(shortest),
            "{ns}: chronyd offset {offset}, shortest delay {shortest}:\n{log}"
        );
        for s in samples {
            assert_eq!(s.get(3), Some(&"N"), "{ns}: leap in {s:?}");
            assert_eq!(
                s.get(4),
                Some(&stratum.to_string().as_str()),
                "{ns}: stratum in {s:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn reply_fields_follow_the_request() -> anyhow::Result<()> {
    if !require_root("reply_fields_follow_the_request") {
        return Ok(());
    }
    let d = Daemon::start("[ntp]\nstratum = 7\nlocal_stratum = 7\n")?;
    let ns = d.netns("vs-f")?;
    // A second interface with two addresses: answers must come from the address queried.
    ns.sh(
        "ip link add d0 type veth peer name d1 && ip addr add 10.9.0.1/24 dev d0 && \
           ip addr add 10.9.0.2/24 dev d0 && ip link set d0 up && ip link set d1 up",
    )?;
    wait_answer(&ns, LO4)?;
    let v2: SocketAddr = "10.9.0.2:123".parse()?;
    for (to, version, poll) in [(LO4, 4u8, 6i8), (LO6, 4, 7), (LO4, 3, 5), (v2, 4, 4)] {
        let before = ntp_now();
        let tx = before ^ 0x5a5a_1234; // a nonce in the low bits: must come back bit for bit
        let (bytes, from) = ask(&ns, to, &request(version, 3, poll, tx))
            .ok_or_else(|| anyhow::anyhow!("no answer from {to}"))?;
        let after = ntp_now();
        let r = parse(&bytes);
        assert_eq!(from, to, "answered from the address queried");
        assert_eq!(r.len, 48);
        assert_eq!(r.mode, 4, "{r:?}");
        assert_eq!(r.version, version, "{r:?}");
        assert_eq!(r.origin, tx, "origin must echo our transmit timestamp");
        assert_eq!(r.poll, poll, "poll echoed (rate-limit minimum is 3)");
        assert_eq!(r.stratum, 7, "{r:?}");
        assert_eq!(r.leap, 0, "{r:?}");
        assert!((-30..=-6).contains(&r.precision), "{r:?}");
        assert!(
            ntp_diff(r.receive, r.transmit) >= 0.0,
            "receive ≤ transmit: {r:?}"
        );
        assert!(
            ntp_diff(before, r.receive) >= -0.001,
            "receive after our send: {r:?}"
        );
        assert!(
            ntp_diff(r.transmit, after) >= -0.001,
            "transmit before our receive: {r:?}"
        );
        assert!(ntp_diff(r.receive, r.transmit) < 0.05, "{r:?}");
    }
    // The stratum and refid come from where the status says.
    let st = ctl_ns(&d, &["ntp", "status"], "vs-f")?;
    assert_eq!(st["stratum"], 7, "{st}");
    if st["kernel_synchronised"] == true {
        assert_eq!(st["stratum_source"], "config", "{st}");
    } else {
        assert_eq!(st["stratum_source"], "local_stratum", "{st}");
        assert_eq!(st["refid"], "127.127.1.1", "{st}");
    }
    Ok(())
}

#[test]
fn junk_gets_no_reply_and_replies_never_grow() -> anyhow::Result<()> {
    if !require_root("junk_gets_no_reply_and_replies_never_grow") {
        return Ok(());
    }
    let d = Daemon::start("[ntp]\nlocal_stratum = 8\nrate_limit = { enabled = false }\n")?;
    let ns = d.netns("vs-j")?;
    wait_answer(&ns, LO4)?;
    let base = ctl_ns(&d, &["ntp", "stats"], "vs-j")?;
    let tx = ntp_now();
    let mut mode6 = request(2, 6, 0, 0);
    mode6.truncate(12); // an ntpq READSTAT request
    let mut mode7 = request(2, 7, 0, 0);
    mode7.truncate(8); // ntpdc MON_GETLIST header
    let mut oversized = request(4, 3, 6, tx);
    oversized.resize(1200, 0);
    let mut huge = request(4, 3, 6, tx);
    huge.resize(4000, 0);
    let mut odd = request(4, 3, 6, tx);
    odd.push(0);
    let mut mac = request(4, 3, 6, tx);
    mac.resize(48 + 20, 1); // key id + 128-bit digest
    let junk: Vec<(&str, Vec<u8>)> = vec![
        ("mode 6 (12 bytes)", mode6),
        ("mode 6 (48 bytes)", request(2, 6, 0, tx)),
        ("mode 7 (8 bytes)", mode7),
        ("mode 7 (48 bytes)", request(2, 7, 0, tx)),
        ("47 bytes", request(4, 3, 6, tx)[..47].to_vec()),
        ("empty", Vec::new()),
        ("1200 bytes", oversized),
        ("4000 bytes", huge),
        ("49 bytes", odd),
        ("mode 4", request(4, 4, 6, tx)),
        ("mode 1 (symmetric off)", request(4, 1, 6, tx)),
        ("version 0", request(0, 3, 6, tx)),
        ("version 5", request(5, 3, 6, tx)),
        ("with MAC", mac),
    ];
    for (what, payload) in &junk {
        assert!(
            ask(&ns, LO4, payload).is_none(),
            "{what}: must get no reply"
        );
        assert!(
            ask(&ns, LO6, payload).is_none(),
            "{what} over IPv6: must get no reply"
        );
    }
    // An NTPv4 request with an extension field is answered, with a bare 48-byte header.
    let mut ext = request(4, 3, 6, tx);
    ext.extend_from_slice(&[0x02, 0x00, 0x00, 28]);
    ext.resize(48 + 28, 0);
    let (bytes, _) = ask(&ns, LO4, &ext).ok_or_else(|| anyhow::anyhow!("ext: no answer"))?;
    assert_eq!(bytes.len(), 48, "reply never longer than the request");
    assert_eq!(parse(&bytes).origin, tx);
    // Still alive after all that.
    wait_answer(&ns, LO4)?;
    let s = ctl_ns(&d, &["ntp", "stats"], "vs-j")?;
    let delta = |k: &str| s[k].as_u64().unwrap_or(0) - base[k].as_u64().unwrap_or(0);
    // Short mode 6/7 packets are malformed before their mode is looked at.
    assert_eq!(delta("dropped_mode6"), 2, "{s}");
    assert_eq!(delta("dropped_mode7"), 2, "{s}");
    assert_eq!(delta("dropped_auth"), 2, "{s}");
    assert_eq!(delta("dropped_other_mode"), 4, "{s}");
    // 12-byte mode 6, 8-byte mode 7, 47, empty, 1200, 4000, 49 bytes, versions 0 and 5,
    // twice each.
    assert_eq!(delta("dropped_malformed"), 18, "{s}");
    assert_eq!(delta("answered"), 2, "{s}");
    assert_eq!(delta("requests"), 2 * junk.len() as u64 + 2, "{s}");
    Ok(())
}

#[test]
fn rate_limit_kisses_a_flood_while_others_are_served() -> anyhow::Result<()> {
    if !require_root("rate_limit_kisses_a_flood_while_others_are_served") {
        return Ok(());
    }
    // Default limits (chrony's: burst 8, one answer per 8 s, leak 1 in 4) plus kisses.
    let d = Daemon::start("[ntp]\nlocal_stratum = 8\nstratum = 8\n")?;
    let ns = d.netns("vs-r")?;
    let other = d.netns("vs-o")?;
    // Warm up from a third address so 127.0.0.1 starts with a full bucket.
    wait_for("ntp up", Duration::from_secs(5), || {
        ns.run_in(|| {
            let s = UdpSocket::bind("127.0.0.3:0").ok()?;
            s.set_read_timeout(Some(WAIT)).ok()?;
            s.send_to(&request(4, 3, 6, ntp_now()), LO4).ok()?;
            s.recv_from(&mut [0u8; 512]).ok()
        })
        .ok()
        .flatten()
    })?;
    // 200 requests back to back from 127.0.0.1.
    let (normal, kisses, total) = ns.run_in(|| -> anyhow::Result<(usize, usize, usize)> {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        for i in 0..200u64 {
            s.send_to(&request(4, 3, 0, ntp_now() + i), LO4)?;
        }
        let (mut normal, mut kisses, mut total) = (0, 0, 0);
        let mut buf = [0u8; 512];
        while let Ok((n, _)) = s.recv_from(&mut buf) {
            let r = parse(&buf[..n]);
            total += 1;
            if r.stratum == 0 && &r.refid == b"RATE" && r.leap == 3 {
                kisses += 1;
            } else if r.stratum == 8 {
                normal += 1;
            }
        }
        Ok((normal, kisses, total))
    })??;
    assert!(kisses > 0, "a flood must get RATE kisses ({normal} normal)");
    assert!(normal >= 8, "the burst is answered ({normal})");
    assert!(
        normal < 100,
        "most of the flood is not answered normally ({normal})"
    );
    assert!(
        total < 200,
        "some of the flood is dropped ({total} replies)"
    );
    // Meanwhile another client in the same namespace, and the same address in another
    // namespace, are served normally.
    for _ in 0..5 {
        let r = ns.run_in(|| -> anyhow::Result<Option<Reply>> {
            let s = UdpSocket::bind("127.0.0.2:0")?;
            s.set_read_timeout(Some(WAIT))?;
            s.send_to(&request(4, 3, 6, ntp_now()), LO4)?;
            let mut buf = [0u8; 512];
            Ok(s.recv_from(&mut buf).ok().map(|(n, _)| parse(&buf[..n])))
        })??;
        let r = r.ok_or_else(|| anyhow::anyhow!("127.0.0.2 got no answer"))?;
        assert_eq!(r.stratum, 8, "{r:?}");
        let r = wait_answer(&other, LO4)?;
        assert_eq!(r.stratum, 8, "other namespace: {r:?}");
    }
    let s = ctl_ns(&d, &["ntp", "stats"], "vs-r")?;
    assert!(s["kod_sent"].as_u64().unwrap_or(0) >= kisses as u64, "{s}");
    assert!(s["dropped_rate_limited"].as_u64().unwrap_or(0) > 0, "{s}");
    let o = ctl_ns(&d, &["ntp", "stats"], "vs-o")?;
    assert_eq!(o["kod_sent"], 0, "rate-limit state is per namespace: {o}");
    Ok(())
}

/// A fake local NTP daemon on the test's loopback (the daemon's own namespace): answers every
/// client request with the given leap/stratum/refid and counts the queries.
struct FakeReference {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeReference {
    fn start(leap: u8, stratum: u8, refid: [u8; 4]) -> anyhow::Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = sock.local_addr()?;
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, st) = (Arc::clone(&queries), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if n < 48 || buf[0] & 7 != 3 {
                    continue;
                }
                q.fetch_add(1, Ordering::Relaxed);
                let mut r = [0u8; 48];
                r[0] = (leap << 6) | (4 << 3) | 4;
                r[1] = stratum;
                r[2] = 6;
                r[3] = 0xe8; // -24
                r[4..8].copy_from_slice(&0x0000_0042u32.to_be_bytes()); // ~1 ms root delay
                r[8..12].copy_from_slice(&0x0000_0020u32.to_be_bytes());
                r[12..16].copy_from_slice(&refid);
                let now = ntp_now();
                r[16..24].copy_from_slice(&(now - (10 << 32)).to_be_bytes());
                r[24..32].copy_from_slice(&buf[40..48]);
                r[32..40].copy_from_slice(&now.to_be_bytes());
                r[40..48].copy_from_slice(&now.to_be_bytes());
                let _ = sock.send_to(&r, peer);
            }
        });
        Ok(Self {
            addr,
            queries,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for FakeReference {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn copied_reference_and_unsynchronised_behaviour_follow_config() -> anyhow::Result<()> {
    if !require_root("copied_reference_and_unsynchronised_behaviour_follow_config") {
        return Ok(());
    }
    let unsync = FakeReference::start(3, 16, [0; 4])?;
    let good = FakeReference::start(0, 2, [10, 1, 2, 3])?;
    let d = Daemon::start(&format!(
        "[ntp]\nreference = \"{u}\"\nrate_limit = {{ enabled = false }}\n\n\
         [[netns]]\nmatch = \"vs-silent\"\nntp = {{ answer_unsynchronised = false }}\n\n\
         [[netns]]\nmatch = \"vs-local\"\nntp = {{ local_stratum = 9 }}\n\n\
         [[netns]]\nmatch = \"vs-copy\"\nntp = {{ reference = \"{g}\" }}\n",
        u = unsync.addr,
        g = good.addr
    ))?;
    let loud = d.netns("vs-loud")?;
    let silent = d.netns("vs-silent")?;
    let local = d.netns("vs-local")?;
    let copy = d.netns("vs-copy")?;
    // The first request triggers the (asynchronous) query of the local NTP daemon; later ones
    // see its answer: unsynchronised, whatever the kernel says.
    let r = wait_for("unsynchronised answer", Duration::from_secs(5), || {
        ask(&loud, LO4, &request(4, 3, 6, ntp_now()))
            .map(|(b, _)| parse(&b))
            .filter(|r| r.leap == 3)
    })?;
    assert_eq!((r.leap, r.stratum, r.refid), (3, 16, [0; 4]), "{r:?}");
    // The reference query runs in the background; wait for its result to show.
    let st = wait_for("reference queried", Duration::from_secs(5), || {
        ctl_ns(&d, &["ntp", "status"], "vs-loud").ok().filter(|st| {
            st["reference"]
                .as_str()
                .is_some_and(|s| s.contains("reports unsynchronised"))
        })
    })?;
    assert_eq!(st["serving"], "unsynchronised", "{st}");
    // Silent when told so: requests are counted as dropped, never answered.
    for _ in 0..3 {
        assert!(ask(&silent, LO4, &request(4, 3, 6, ntp_now())).is_none());
    }
    let s = ctl_ns(&d, &["ntp", "stats"], "vs-silent")?;
    assert_eq!(s["answered"], 0, "{s}");
    assert_eq!(s["dropped_unsynchronised"], 3, "{s}");
    // local_stratum: served as synchronised at that stratum.
    let r = wait_answer(&local, LO4)?;
    assert_eq!(
        (r.leap, r.stratum, r.refid),
        (0, 9, [127, 127, 1, 1]),
        "{r:?}"
    );
    // One query serves every namespace and many requests: no query per request.
    for _ in 0..5 {
        let _ = ask(&loud, LO4, &request(4, 3, 6, ntp_now()));
    }
    // (At most 2: a slow machine may cross the 8 s retry interval of a non-copied answer.)
    let q = unsync.queries.load(Ordering::Relaxed);
    assert!((1..=2).contains(&q), "lazy, cached reference queries: {q}");
    // A synchronised local daemon is copied (stratum and refid verbatim).
    let _ = ask(&copy, LO4, &request(4, 3, 6, ntp_now()));
    let st = wait_for("reference copied", Duration::from_secs(5), || {
        let st = ctl_ns(&d, &["ntp", "status"], "vs-copy").ok()?;
        st["reference"]
            .as_str()
            .is_some_and(|s| s == format!("copied from {}", good.addr))
            .then_some(st)
    })?;
    let r = wait_answer(&copy, LO4)?;
    if st["kernel_synchronised"] == true {
        assert_eq!((r.leap, r.stratum, r.refid), (0, 2, [10, 1, 2, 3]), "{r:?}");
        assert_eq!(
            st["stratum_source"],
            format!("copied from {}", good.addr),
            "{st}"
        );
    } else {
        // The kernel has the last word: without sync, nothing is claimed.
        assert_eq!((r.leap, r.stratum), (3, 16), "{r:?}");
        assert_eq!(st["serving"], "unsynchronised", "{st}");
    }
    assert_eq!(good.queries.load(Ordering::Relaxed), 1);
    Ok(())
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum()
}

#[test]
fn idle_daemon_spends_no_cpu_and_refreshes_the_reference_only_on_demand() -> anyhow::Result<()> {
    if !require_root("idle_daemon_spends_no_cpu_and_refreshes_the_reference_only_on_demand") {
        return Ok(());
    }
    let reference = FakeReference::start(0, 2, [10, 1, 2, 3])?;
    let d = Daemon::start(&format!(
        "[ntp]\nreference = \"{}\"\nreference_max_age = 1\n",
        reference.addr
    ))?;
    let ns = d.netns("vs-idle")?;
    wait_answer(&ns, LO4)?;
    wait_for("first reference query", Duration::from_secs(5), || {
        (reference.queries.load(Ordering::Relaxed) == 1).then_some(())
    })?;
    // Idle for three refresh periods: no query, (almost) no CPU.
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(d.pid());
    std::thread::sleep(Duration::from_secs(3));
    let spent = cpu_ticks(d.pid()) - before;
    assert!(spent <= 1, "idle daemon used {spent} clock ticks in 3 s");
    assert_eq!(
        reference.queries.load(Ordering::Relaxed),
        1,
        "no periodic refresh while idle"
    );
    // The next request finds the copy stale and starts exactly one refresh.
    for _ in 0..5 {
        wait_answer(&ns, LO4)?;
    }
    wait_for("refresh on demand", Duration::from_secs(5), || {
        (reference.queries.load(Ordering::Relaxed) == 2).then_some(())
    })?;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(reference.queries.load(Ordering::Relaxed), 2);
    Ok(())
}
