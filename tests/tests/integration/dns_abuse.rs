//! DNS abuse from a remote host (issue 10, items 1 and 7): an attacker in its own namespace
//! behind a veth sends ANY, junk and refused queries and gets nothing back that amplifies
//! (errors no longer than the query, ANY at most twice); it retransmits one query far past
//! `max_waiters` while the upstream is slow, and another client asking the same name is
//! still answered; it floods cache misses and the upstream sockets stay within their cap. Real
//! `dig` clients are served throughout.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::dns::{Server, answer_a, dig, section, status};
use nsaux_tests::env::require;
use nsaux_tests::netns::{TestNetns, veth};

/// Where the upstream servers listen, inside their own namespace.
const UP_ADDR: &str = "192.0.2.53";
/// The daemon's default `max_waiters` (the resolver's): the retransmit test sends more.
const MAX_WAITERS: usize = 64;

/// Daemon config: DNS only, listening on every address of the namespace.
fn config(etc: &Path, extra: &str) -> String {
    format!(
        "[ntp]\nenabled = false\n\n[rpcbind]\nenabled = false\n\n[dns]\nnetns_etc_dir = \"{}\"\n\
         addresses = [\"0.0.0.0\"]\n{extra}",
        etc.display()
    )
}

/// A served namespace `name` with an upstream namespace (192.0.2.53 routed via
/// 10.56.IDX.2) and a remote attacker namespace on 10.57.IDX.0/24 (the served end is
/// 10.57.IDX.1, the attacker 10.57.IDX.2, which also holds 10.99.IDX.2, outside every subnet
/// of the served namespace).
struct Site {
    vs: TestNetns,
    up: TestNetns,
    atk: TestNetns,
    /// The DNS endpoint as the attacker reaches it.
    ep: SocketAddr,
    /// The attacker's address outside the served subnets.
    outsider: String,
}

fn site(d: &Daemon, etc: &Path, dir: &Path, name: &str, idx: u8) -> anyhow::Result<Site> {
    std::fs::create_dir_all(etc.join(name))?;
    std::fs::write(
        etc.join(name).join("resolv.conf"),
        format!("nameserver {UP_ADDR}\n"),
    )?;
    let vs = d.netns(name)?;
    let up = TestNetns::create(dir, &format!("up-{name}"))?;
    let atk = TestNetns::create(dir, &format!("atk-{name}"))?;
    veth(
        &vs,
        "tou0",
        &format!("10.56.{idx}.1/24"),
        &up,
        "tovs0",
        &format!("10.56.{idx}.2/24"),
    )?;
    up.sh(&format!("ip addr add {UP_ADDR}/32 dev lo"))?;
    vs.sh(&format!("ip route add {UP_ADDR}/32 via 10.56.{idx}.2"))?;
    veth(
        &vs,
        "atk0",
        &format!("10.57.{idx}.1/24"),
        &atk,
        "vs0",
        &format!("10.57.{idx}.2/24"),
    )?;
    let outsider = format!("10.99.{idx}.2");
    atk.sh(&format!("ip addr add {outsider}/32 dev vs0"))?;
    vs.sh(&format!("ip route add {outsider}/32 via 10.57.{idx}.2"))?;
    let ep: SocketAddr = format!("10.57.{idx}.1:53").parse()?;
    Ok(Site {
        vs,
        up,
        atk,
        ep,
        outsider,
    })
}

/// A raw query: `qdcount` (the question is written once), opcode, QTYPE, and an OPT of
/// `version` with a COOKIE option when `edns`.
fn raw(id: u16, opcode: u8, qdcount: u16, name: &str, qtype: u16, edns: Option<u8>) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01 | (opcode << 3), 0x00]);
    q.extend_from_slice(&qdcount.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if let Some(version) = edns {
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, version, 0, 0, 0, 12]);
        q.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    }
    q
}

/// A name near the 255-byte limit.
fn long_name() -> String {
    ["x", "y", "z", "w"].map(|c| c.repeat(61)).join(".")
}

/// Sends `q` from `bind` (inside `ns`) to `ep`; the answer, if any.
fn exchange(
    ns: &TestNetns,
    bind: &str,
    ep: SocketAddr,
    q: &[u8],
) -> anyhow::Result<Option<Vec<u8>>> {
    let (q, bind) = (q.to_vec(), format!("{bind}:0"));
    ns.run_in(move || -> anyhow::Result<Option<Vec<u8>>> {
        let s = UdpSocket::bind(bind)?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        s.send_to(&q, ep)?;
        let mut buf = [0u8; 65_535];
        Ok(s.recv(&mut buf).ok().map(|n| buf[..n].to_vec()))
    })?
}

fn rcode(a: &[u8]) -> u8 {
    a.get(3).map_or(255, |b| b & 0x0f)
}

fn u16_at(a: &[u8], i: usize) -> u16 {
    a.get(i..i + 2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

fn stats(d: &Daemon, ns: &str) -> anyhow::Result<serde_json::Value> {
    Ok(d.ctl_json(&["dns", "stats", "--ns", ns])?[ns].clone())
}

#[test]
fn any_and_error_answers_to_a_remote_host_never_amplify() -> anyhow::Result<()> {
    if !require(
        "any_and_error_answers_to_a_remote_host_never_amplify",
        &["dig", "unbound"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let d = Daemon::start(&config(
        etc.path(),
        "local_domains = [\"lan\"]\nrecords = [{ name = \"h.lan\", addr = \"10.1.2.3\" }, \
         { name = \"h.lan\", addr = \"10.1.2.4\" }]\n\
         rate_limit = { per_second = 20, burst = 60, slip = 1 }\n",
    ))?;
    let s = site(&d, etc.path(), dir.path(), "vsamp", 1)?;
    let zone = "  local-zone: \"test.\" static\n  local-data: \"www.test. 300 IN A 10.9.9.9\"\n  \
                local-data: \"www.test. 300 IN TXT 'a fairly long text record that ANY would return'\"\n  \
                local-data: \"www.test. 300 IN MX 10 mail.test.\"\n";
    let _srv = Server::unbound(&s.up, UP_ADDR, zone)?;
    let at = format!("@{}", s.ep.ip());
    let out = wait_for("remote dig answered", Duration::from_secs(5), || {
        dig(&s.atk, &format!("{at} www.test A"))
            .ok()
            .filter(|o| status(o).is_some())
    })?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.9.9.9", "{out}");
    let atk_ip = "10.57.1.2";

    // ANY: one record (HINFO from upstream names, one RRset for local ones), at most 2x.
    for name in ["www.test", "h.lan", "nothing.test", &long_name()] {
        for edns in [None, Some(0)] {
            let q = raw(0x0101, 0, 1, name, 255, edns);
            let a = exchange(&s.atk, atk_ip, s.ep, &q)?
                .ok_or_else(|| anyhow::anyhow!("ANY {name} {edns:?}: no answer"))?;
            assert_eq!(rcode(&a), 0, "ANY {name}");
            assert!(
                a.len() <= 2 * q.len(),
                "ANY {name} {edns:?}: {} bytes for a {}-byte query",
                a.len(),
                q.len()
            );
        }
    }
    // Errors: never longer than the query, long names and EDNS included.
    let long = long_name();
    let errors = [
        ("two questions", 0, 2, 1, Some(0)),
        ("opcode 5", 5, 1, 1, Some(0)),
        ("AXFR", 0, 1, 252, Some(0)),
        ("QTYPE OPT", 0, 1, 41, None),
        ("EDNS version 1", 0, 1, 1, Some(1)),
    ];
    for (what, opcode, qd, qtype, edns) in errors {
        for name in ["www.test", long.as_str()] {
            let q = raw(0x0202, opcode, qd, name, qtype, edns);
            let a = exchange(&s.atk, atk_ip, s.ep, &q)?
                .ok_or_else(|| anyhow::anyhow!("{what}: no answer"))?;
            if edns == Some(1) {
                // BADVERS (16) lives in the OPT: the header RCODE bits are 0.
                assert_eq!(u16_at(&a, 10), 1, "{what}: the OPT carrying BADVERS");
            } else {
                assert_ne!(rcode(&a), 0, "{what}: an error");
            }
            assert!(a.len() <= q.len(), "{what}: {} > {}", a.len(), q.len());
        }
    }
    // REFUSED: from outside the served subnets.
    for name in ["www.test", long.as_str()] {
        for edns in [None, Some(0)] {
            let q = raw(0x0303, 0, 1, name, 1, edns);
            let a = exchange(&s.atk, &s.outsider, s.ep, &q)?
                .ok_or_else(|| anyhow::anyhow!("refused {name}: no answer"))?;
            assert_eq!(rcode(&a), 5, "REFUSED");
            assert!(a.len() <= q.len(), "REFUSED: {} > {}", a.len(), q.len());
        }
    }
    // Real clients are still served, over UDP and TCP.
    let out = dig(&s.atk, &format!("{at} www.test A"))?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.9.9.9", "{out}");
    let out = dig(&s.atk, &format!("{at} +tcp h.lan A"))?;
    assert_eq!(section(&out, "ANSWER").len(), 2, "{out}");
    // A burst past the rate limit: what comes back while limited is the slip (TC, no
    // records), never longer than the query.
    let q = raw(0x0404, 0, 1, "www.test", 1, Some(0));
    let (slips, answers) = s.atk.run_in(move || -> anyhow::Result<(usize, usize)> {
        let sock = UdpSocket::bind("10.57.1.2:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(300)))?;
        for _ in 0..200 {
            sock.send_to(&q, s.ep)?;
        }
        let (mut slips, mut answers) = (0, 0);
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            let a = &buf[..n];
            if a[2] & 0x02 != 0 {
                assert!(n <= q.len(), "slip of {n} bytes for {}", q.len());
                slips += 1;
            } else {
                answers += 1;
            }
        }
        Ok((slips, answers))
    })??;
    assert!(
        slips >= 50 && answers <= 80,
        "{slips} slips, {answers} answers"
    );
    let out = dig(&s.atk, &format!("{at} +tcp www.test A"))?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.9.9.9", "{out}");
    let out = dig(&s.vs, "@127.0.0.53 www.test A")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.9.9.9", "{out}");
    let st = stats(&d, "vsamp")?;
    assert!(st["any_minimal"].as_u64() >= Some(6), "{st}");
    Ok(())
}

/// An upstream on `UP_ADDR`:53/udp in `ns` that answers every A query with `A 10.11.0.1`,
/// `delay` after it came in, and counts the queries it saw.
struct SlowUpstream {
    seen: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SlowUpstream {
    fn start(ns: &TestNetns, delay: Duration) -> anyhow::Result<Self> {
        let sock = ns.run_in(|| UdpSocket::bind((UP_ADDR, 53)))??;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let seen = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut due: Vec<(Instant, Vec<u8>, SocketAddr)> = Vec::new();
            let mut buf = [0u8; 1500];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf)
                    && let Some(reply) = answer_a(&buf[..n], [10, 11, 0, 1])
                {
                    seen2.fetch_add(1, Ordering::Relaxed);
                    due.push((Instant::now() + delay, reply, peer));
                }
                let now = Instant::now();
                for (_, reply, peer) in due.iter().filter(|(t, ..)| *t <= now) {
                    let _ = sock.send_to(reply, peer);
                }
                due.retain(|(t, ..)| *t > now);
            }
        });
        Ok(Self {
            seen,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for SlowUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn one_client_retransmitting_cannot_fill_the_waiters_for_a_name() -> anyhow::Result<()> {
    if !require(
        "one_client_retransmitting_cannot_fill_the_waiters_for_a_name",
        &["dig"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let d = Daemon::start(&config(
        etc.path(),
        "attempt_timeout_ms = 4000\nquery_timeout_ms = 6000\nlocal_domains = [\"lan\"]\n\
         records = [{ name = \"ok.lan\", addr = \"10.1.1.1\" }]\n",
    ))?;
    let s = site(&d, etc.path(), dir.path(), "vsrtx", 2)?;
    let up = SlowUpstream::start(&s.up, Duration::from_millis(1500))?;
    let at = format!("@{}", s.ep.ip());
    wait_for("remote dig answered", Duration::from_secs(5), || {
        dig(&s.atk, &format!("{at} ok.lan A"))
            .ok()
            .filter(|o| status(o).is_some())
    })?;
    // One socket (one address and port), one ID, one question, sent 3x max_waiters times.
    let ep = s.ep;
    let atk = s.atk.run_in(|| UdpSocket::bind("10.57.2.2:0"))??;
    let q = raw(0x7777, 0, 1, "slow.test", 1, None);
    let t = Instant::now();
    for _ in 0..3 * MAX_WAITERS {
        atk.send_to(&q, ep)?;
    }
    // Another client asks the same name while the upstream has not answered.
    let out = dig(&s.vs, "@127.0.0.53 slow.test A +tries=1 +time=5")?;
    assert_eq!(status(&out).as_deref(), Some("NOERROR"), "{out}");
    assert_eq!(section(&out, "ANSWER")[0].3, "10.11.0.1", "{out}");
    assert!(
        t.elapsed() >= Duration::from_millis(1000),
        "answered before the upstream"
    );
    // The retransmitting client gets exactly one answer: the real one.
    atk.set_read_timeout(Some(Duration::from_millis(700)))?;
    let mut buf = [0u8; 1500];
    let mut got = Vec::new();
    while let Ok(n) = atk.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    assert_eq!(
        got.len(),
        1,
        "answers to {} copies: {got:?}",
        3 * MAX_WAITERS
    );
    assert_eq!(
        (u16_at(&got[0], 0), rcode(&got[0]), u16_at(&got[0], 6)),
        (0x7777, 0, 1)
    );
    assert_eq!(up.seen.load(Ordering::Relaxed), 1, "one upstream query");
    let st = stats(&d, "vsrtx")?;
    assert!(
        st["retransmits"].as_u64() >= Some(3 * MAX_WAITERS as u64 - 1),
        "{st}"
    );
    assert_eq!(st["servfail"].as_u64(), Some(0), "{st}");
    Ok(())
}

/// A remote host floods cache misses (a new name per query) while the upstream is slow: the
/// namespace's pooled upstream sockets stay within their cap (64 in use plus the spares of one
/// batch, and the pool's epoll), so the daemon's fds cannot be run out from one namespace; a
/// client of another namespace keeps being answered, and every socket is closed once the
/// flood is over.
#[test]
fn a_remote_miss_flood_holds_at_most_the_upstream_socket_cap() -> anyhow::Result<()> {
    if !require(
        "a_remote_miss_flood_holds_at_most_the_upstream_socket_cap",
        &["dig"],
    ) {
        return Ok(());
    }
    /// The pool's cap (`serve/dns/pool.rs` `MAX_UPSTREAM_SOCKETS`).
    const CAP: usize = 64;
    let etc = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let d = Daemon::start(&config(
        etc.path(),
        "attempt_timeout_ms = 3000\nquery_timeout_ms = 4000\nlocal_domains = [\"lan\"]\n\
         records = [{ name = \"ok.lan\", addr = \"10.1.1.1\" }]\n",
    ))?;
    let s = site(&d, etc.path(), dir.path(), "vsflood", 3)?;
    let other = d.netns("bystander")?;
    let _up = SlowUpstream::start(&s.up, Duration::from_millis(1500))?;
    let at = format!("@{}", s.ep.ip());
    wait_for("remote dig answered", Duration::from_secs(5), || {
        dig(&s.atk, &format!("{at} ok.lan A"))
            .ok()
            .filter(|o| status(o).is_some())
    })?;
    let fds = |pid: u32| std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    let before = fds(d.pid());
    let ep = s.ep;
    let atk = s.atk.run_in(|| UdpSocket::bind("10.57.3.2:0"))??;
    let (mut peak, mut most_in_use) = (0, 0);
    for i in 0..2_000u32 {
        atk.send_to(
            &raw(
                (i & 0xffff) as u16,
                0,
                1,
                &format!("n{i}.flood.test"),
                1,
                None,
            ),
            ep,
        )?;
        if i % 100 == 99 {
            peak = peak.max(fds(d.pid()));
        }
    }
    let ns_status = || -> Option<serde_json::Value> {
        Some(d.ns("vsflood").ok()??["services"]["dns"]["status"].clone())
    };
    for _ in 0..10 {
        peak = peak.max(fds(d.pid()));
        if let Some(st) = ns_status() {
            let in_use = st["upstream_sockets"].as_u64().unwrap_or(0) as usize;
            assert!(in_use <= CAP, "{st}");
            most_in_use = most_in_use.max(in_use);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The flood did reach the pool (2,000 misses in flight against a 1.5 s upstream) ...
    assert!(
        most_in_use >= CAP / 2,
        "only {most_in_use} upstream sockets in use"
    );
    // ... and it held in use at most CAP, spares of one batch (at most 32) and its epoll.
    assert!(
        peak <= before + CAP + 32 + 1,
        "fds grew from {before} to {peak} under the miss flood"
    );
    // The other namespace answers meanwhile.
    wait_for("bystander answered", Duration::from_secs(5), || {
        dig(&other, "@127.0.0.53 ok.lan A +tries=1 +time=2")
            .ok()
            .filter(|o| status(o).as_deref() == Some("NOERROR"))
    })?;
    // Everything given back once the flood's queries have ended and the spares idled out.
    wait_for("upstream sockets released", Duration::from_secs(20), || {
        ns_status().filter(|st| st["upstream_sockets"] == 0 && st["spare_sockets"] == 0)
    })?;
    Ok(())
}
