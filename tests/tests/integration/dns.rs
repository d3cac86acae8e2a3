//! DNS resolver endpoint (issue 4): real `dig` and glibc clients in VS namespaces, real
//! upstream servers (unbound, dnsmasq) in their own namespaces reached over veth links and
//! routes. Every daemon points `netns_etc_dir` at a private directory: nothing here touches the
//! host's /etc/netns or /etc/resolv.conf.

use std::collections::HashSet;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::dns::{Server, answer_a, dig, section, status};
use nsaux_tests::env::require;
use nsaux_tests::netns::{TestNetns, veth};
use nsaux_tests::stream::{ReadEnd, read_end};

/// The endpoint inside every VS namespace.
const EP: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(127, 0, 0, 53),
    53,
));
/// Where every upstream server listens, inside its own namespace (the same address for all
/// of them: each VS reaches its own through its own route).
const UP_ADDR: &str = "192.0.2.53";

/// A test zone for unbound: `www.test` A `ip`, `who.test` TXT `tag`, `big.test` with 40 TXT
/// records (≈ 2.9 KB: truncated over UDP at 1232), NXDOMAIN with SOA minimum 30.
fn zone(tag: &str, ip: &str) -> String {
    let mut z = String::from(
        "  local-zone: \".\" refuse\n  local-zone: \"test.\" static\n  \
         local-data: \"test. 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 30\"\n",
    );
    z.push_str(&format!("  local-data: \"www.test. 300 IN A {ip}\"\n"));
    z.push_str(&format!("  local-data: \"who.test. 300 IN TXT '{tag}'\"\n"));
    z.push_str(&format!(
        "  local-data: \"later.test. 300 IN TXT '{tag}-later'\"\n"
    ));
    for i in 0..40 {
        z.push_str(&format!(
            "  local-data: 'big.test. 300 IN TXT \"record {i:02} padding padding padding padding padding padding\"'\n"
        ));
    }
    z
}

/// A VS namespace served by the daemon, linked to a private upstream namespace: the VS has
/// 10.53.IDX.1/24 and a route to 192.0.2.53 via the upstream's 10.53.IDX.2.
fn linked(d: &Daemon, updir: &Path, name: &str, idx: u8) -> anyhow::Result<(TestNetns, TestNetns)> {
    let vs = d.netns(name)?;
    let up = TestNetns::create(updir, &format!("up-{name}"))?;
    veth(
        &vs,
        "tou0",
        &format!("10.53.{idx}.1/24"),
        &up,
        "tovs0",
        &format!("10.53.{idx}.2/24"),
    )?;
    up.sh(&format!("ip addr add {UP_ADDR}/32 dev lo"))?;
    vs.sh(&format!("ip route add {UP_ADDR}/32 via 10.53.{idx}.2"))?;
    Ok((vs, up))
}

/// DNS tests run with NTP and the portmapper off, so socket counts are the resolver's alone.
fn config(etc: &Path, extra: &str) -> String {
    format!(
        "[ntp]\nenabled = false\n\n[rpcbind]\nenabled = false\n\n[dns]\nnetns_etc_dir = \"{}\"\n{extra}",
        etc.display()
    )
}

fn write_resolv(etc: &Path, ns: &str, text: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(etc.join(ns))?;
    std::fs::write(etc.join(ns).join("resolv.conf"), text)?;
    Ok(())
}

/// Waits until the endpoint in `vs` answers `args` with a status, and returns the output.
fn dig_ready(vs: &TestNetns, args: &str) -> anyhow::Result<String> {
    wait_for("dns endpoint answers", Duration::from_secs(5), || {
        dig(vs, &format!("@127.0.0.53 {args}"))
            .ok()
            .filter(|o| status(o).is_some())
    })
}

fn stats(d: &Daemon, ns: &str) -> anyhow::Result<serde_json::Value> {
    Ok(d.ctl_json(&["dns", "stats", "--ns", ns])?[ns].clone())
}

#[test]
fn dig_and_glibc_resolve_through_a_routed_upstream() -> anyhow::Result<()> {
    if !require(
        "dig_and_glibc_resolve_through_a_routed_upstream",
        &["dig", "unbound", "getent"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let updir = tempfile::tempdir()?;
    // The self entry must be skipped, the routed one used.
    write_resolv(
        etc.path(),
        "vs1",
        &format!("nameserver 127.0.0.53\nnameserver {UP_ADDR}\n"),
    )?;
    let d = Daemon::start(&config(etc.path(), ""))?;
    let (vs, up) = linked(&d, updir.path(), "vs1", 1)?;
    let _srv = Server::unbound(&up, UP_ADDR, &zone("one", "10.1.1.1"))?;

    let out = dig_ready(&vs, "www.test A")?;
    assert_eq!(status(&out).as_deref(), Some("NOERROR"), "{out}");
    let ans = section(&out, "ANSWER");
    assert_eq!(ans.len(), 1, "{out}");
    assert_eq!(ans[0].3, "10.1.1.1", "{out}");
    assert!(
        out.contains("SERVER: 127.0.0.53#53"),
        "answer must come from the endpoint: {out}"
    );

    // TCP from the client too.
    let out = dig(&vs, "@127.0.0.53 +tcp www.test A")?;
    assert_eq!(section(&out, "ANSWER").len(), 1, "{out}");

    // glibc: a private mount namespace where /etc/resolv.conf names the endpoint.
    let resolv = etc.path().join("client-resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.53\noptions timeout:2 attempts:1\n",
    )?;
    let out = vs.sh(&format!(
        "unshare -m sh -c 'mount --bind {} /etc/resolv.conf && getent ahostsv4 www.test'",
        resolv.display()
    ))?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("10.1.1.1"), "getent: {text}");

    let st = stats(&d, "vs1")?;
    assert!(st["upstream_queries"].as_u64() >= Some(1), "{st}");
    assert!(st["cache_hits"].as_u64() >= Some(1), "{st}");
    assert_eq!(st["upstreams"][0]["addr"], format!("{UP_ADDR}:53"), "{st}");
    Ok(())
}

#[test]
fn two_namespaces_with_different_upstreams_never_share_answers() -> anyhow::Result<()> {
    if !require(
        "two_namespaces_with_different_upstreams_never_share_answers",
        &["dig", "unbound", "dnsmasq"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let updir = tempfile::tempdir()?;
    // vs-a takes its upstream from config (glob override), vs-b from its resolv.conf.
    write_resolv(etc.path(), "vs-b", &format!("nameserver {UP_ADDR}\n"))?;
    let cfg = config(
        etc.path(),
        &format!("\n[[netns]]\nmatch = \"vs-a*\"\ndns = {{ upstreams = [\"{UP_ADDR}:53\"] }}\n"),
    );
    let d = Daemon::start(&cfg)?;
    let (a, up_a) = linked(&d, updir.path(), "vs-a", 2)?;
    let (b, up_b) = linked(&d, updir.path(), "vs-b", 3)?;
    let _sa = Server::unbound(&up_a, UP_ADDR, &zone("aaa", "10.2.2.2"))?;
    let _sb = Server::dnsmasq(
        &up_b,
        UP_ADDR,
        &[
            "--host-record=www.test,10.3.3.3",
            "--txt-record=who.test,bbb",
        ],
    )?;

    // Warm vs-a's cache first, then ask vs-b the same names.
    for _ in 0..2 {
        let out = dig_ready(&a, "www.test A")?;
        assert_eq!(section(&out, "ANSWER")[0].3, "10.2.2.2", "{out}");
        let out = dig_ready(&a, "who.test TXT")?;
        assert_eq!(section(&out, "ANSWER")[0].3, "\"aaa\"", "{out}");
    }
    let before = stats(&d, "vs-b")?;
    let out = dig_ready(&b, "www.test A")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.3.3.3", "{out}");
    let out = dig_ready(&b, "who.test TXT")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "\"bbb\"", "{out}");
    let after = stats(&d, "vs-b")?;
    assert_eq!(before["cache_hits"], after["cache_hits"], "{after}");
    assert!(after["upstream_queries"].as_u64() >= Some(2), "{after}");
    assert!(
        after["upstream_source"]
            .as_str()
            .is_some_and(|s| s.ends_with("vs-b/resolv.conf")),
        "{after}"
    );
    assert_eq!(stats(&d, "vs-a")?["upstream_source"], "config");
    // And vs-a still gets its own.
    let out = dig(&a, "@127.0.0.53 www.test A")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.2.2.2", "{out}");
    Ok(())
}

#[test]
fn ttl_counts_down_and_nxdomain_is_cached_with_the_soa_ttl() -> anyhow::Result<()> {
    if !require(
        "ttl_counts_down_and_nxdomain_is_cached_with_the_soa_ttl",
        &["dig", "unbound"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let updir = tempfile::tempdir()?;
    write_resolv(etc.path(), "vst", &format!("nameserver {UP_ADDR}\n"))?;
    let d = Daemon::start(&config(etc.path(), ""))?;
    let (vs, up) = linked(&d, updir.path(), "vst", 4)?;
    let _srv = Server::unbound(&up, UP_ADDR, &zone("t", "10.4.4.4"))?;

    let first = dig_ready(&vs, "www.test A")?;
    let t1 = section(&first, "ANSWER")[0].1;
    assert!(t1 <= 300, "{first}");
    let nx1 = dig(&vs, "@127.0.0.53 nope.test A")?;
    assert_eq!(status(&nx1).as_deref(), Some("NXDOMAIN"), "{nx1}");
    let soa1 = section(&nx1, "AUTHORITY");
    assert_eq!(soa1.len(), 1, "{nx1}");
    assert_eq!(soa1[0].2, "SOA");
    assert!(soa1[0].1 <= 30, "negative TTL is the SOA minimum: {nx1}");
    let up_before = stats(&d, "vst")?["upstream_queries"].as_u64();

    std::thread::sleep(Duration::from_millis(2_100));
    let second = dig(&vs, "@127.0.0.53 www.test A")?;
    let t2 = section(&second, "ANSWER")[0].1;
    assert!(t2 + 2 <= t1, "TTL must count down: {t1} then {t2}");
    let nx2 = dig(&vs, "@127.0.0.53 nope.test A")?;
    assert_eq!(status(&nx2).as_deref(), Some("NXDOMAIN"), "{nx2}");
    let soa2 = section(&nx2, "AUTHORITY");
    assert!(soa2[0].1 + 2 <= soa1[0].1, "{nx1}\n{nx2}");
    let st = stats(&d, "vst")?;
    assert_eq!(
        st["upstream_queries"].as_u64(),
        up_before,
        "both must come from cache: {st}"
    );

    // Flush: the next query goes upstream again.
    d.ctl(&["dns", "flush", "--ns", "vst"])?;
    let _ = dig(&vs, "@127.0.0.53 www.test A")?;
    assert!(stats(&d, "vst")?["upstream_queries"].as_u64() > up_before);
    Ok(())
}

#[test]
fn truncated_upstream_answer_is_fetched_over_tcp() -> anyhow::Result<()> {
    if !require(
        "truncated_upstream_answer_is_fetched_over_tcp",
        &["dig", "unbound"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let updir = tempfile::tempdir()?;
    write_resolv(etc.path(), "vsbig", &format!("nameserver {UP_ADDR}\n"))?;
    let d = Daemon::start(&config(etc.path(), ""))?;
    let (vs, up) = linked(&d, updir.path(), "vsbig", 5)?;
    let _srv = Server::unbound(&up, UP_ADDR, &zone("b", "10.5.5.5"))?;
    // The upstream itself truncates over UDP.
    let direct = dig(
        &up,
        &format!("@{UP_ADDR} +ignore +bufsize=1232 big.test TXT"),
    )?;
    assert!(direct.contains(" tc"), "upstream must truncate: {direct}");

    // dig retries over TCP itself when we truncate towards it; the full set must arrive.
    let out = dig_ready(&vs, "big.test TXT")?;
    assert_eq!(section(&out, "ANSWER").len(), 40, "{out}");
    let st = stats(&d, "vsbig")?;
    assert!(st["tcp_retries"].as_u64() >= Some(1), "{st}");
    let out = dig(&vs, "@127.0.0.53 +tcp big.test TXT")?;
    assert_eq!(section(&out, "ANSWER").len(), 40, "{out}");
    Ok(())
}

#[test]
fn upstream_down_gives_servfail_in_time_and_recovers() -> anyhow::Result<()> {
    if !require(
        "upstream_down_gives_servfail_in_time_and_recovers",
        &["dig", "unbound"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let updir = tempfile::tempdir()?;
    write_resolv(etc.path(), "vsdown", &format!("nameserver {UP_ADDR}\n"))?;
    let d = Daemon::start(&config(
        etc.path(),
        "query_timeout_ms = 1500\nattempt_timeout_ms = 400\n",
    ))?;
    let (vs, up) = linked(&d, updir.path(), "vsdown", 6)?;
    let mut srv = Server::unbound(&up, UP_ADDR, &zone("d", "10.6.6.6"))?;
    let out = dig_ready(&vs, "www.test A")?;
    assert_eq!(status(&out).as_deref(), Some("NOERROR"), "{out}");

    srv.stop()?;
    let t = Instant::now();
    let out = vs.sh("dig +time=6 +tries=1 @127.0.0.53 who.test TXT || true")?;
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let took = t.elapsed();
    assert_eq!(status(&out).as_deref(), Some("SERVFAIL"), "{out}");
    assert!(
        took < Duration::from_millis(2_500),
        "SERVFAIL must come within the 1.5 s query timeout, took {took:?}"
    );
    // The cached name is still served meanwhile.
    let out = dig(&vs, "@127.0.0.53 www.test A")?;
    assert_eq!(status(&out).as_deref(), Some("NOERROR"), "{out}");

    srv.restart()?;
    let out = wait_for("recovery", Duration::from_secs(30), || {
        dig(&vs, "@127.0.0.53 later.test TXT")
            .ok()
            .filter(|o| status(o).as_deref() == Some("NOERROR"))
    })?;
    assert_eq!(section(&out, "ANSWER")[0].3, "\"d-later\"", "{out}");
    assert!(stats(&d, "vsdown")?["upstream_failures"].as_u64() >= Some(1));
    Ok(())
}

#[test]
fn no_upstream_means_servfail_and_a_log_line_until_resolv_conf_appears() -> anyhow::Result<()> {
    if !require(
        "no_upstream_means_servfail_and_a_log_line_until_resolv_conf_appears",
        &["dig", "unbound"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let updir = tempfile::tempdir()?;
    let d = Daemon::start(&config(etc.path(), ""))?;
    let (vs, up) = linked(&d, updir.path(), "vsnone", 7)?;
    let _srv = Server::unbound(&up, UP_ADDR, &zone("n", "10.7.7.7"))?;
    let out = dig_ready(&vs, "www.test A")?;
    assert_eq!(status(&out).as_deref(), Some("SERVFAIL"), "{out}");
    wait_for(
        "log line naming the namespace",
        Duration::from_secs(2),
        || {
            d.log()
                .lines()
                .any(|l| l.contains("no upstream servers") && l.contains("vsnone"))
                .then_some(())
        },
    )?;
    // The status names the files looked for (made when shown, issue 16).
    let resolv = etc.path().join("vsnone").join("resolv.conf");
    let absent = stats(&d, "vsnone")?["upstream_source"].clone();
    let absent = absent.as_str().unwrap_or_default();
    assert!(
        absent.ends_with(" (absent)") && absent.contains(&*resolv.to_string_lossy()),
        "{absent}"
    );
    // The file appears: the next query uses it (no restart, no reload).
    write_resolv(etc.path(), "vsnone", &format!("nameserver {UP_ADDR}\n"))?;
    let out = dig(&vs, "@127.0.0.53 www.test A")?;
    assert_eq!(status(&out).as_deref(), Some("NOERROR"), "{out}");
    assert_eq!(section(&out, "ANSWER")[0].3, "10.7.7.7");
    assert_eq!(
        stats(&d, "vsnone")?["upstream_source"],
        resolv.to_string_lossy().as_ref()
    );
    Ok(())
}

#[test]
fn local_config_hosts_and_runtime_records_forward_and_reverse() -> anyhow::Result<()> {
    if !require(
        "local_config_hosts_and_runtime_records_forward_and_reverse",
        &["dig"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    std::fs::create_dir_all(etc.path().join("vsrec"))?;
    std::fs::write(
        etc.path().join("vsrec/hosts"),
        "10.8.8.8 fromhosts.lan\nfd00::8 fromhosts.lan\n",
    )?;
    let d = Daemon::start(&config(
        etc.path(),
        "local_domains = [\"lan\"]\nrecords = [{ name = \"static.lan\", addr = \"10.9.9.9\" }]\n",
    ))?;
    let vs = d.netns("vsrec")?;
    let out = dig_ready(&vs, "static.lan A")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.9.9.9", "{out}");
    assert!(
        out.contains(" aa"),
        "local answers are authoritative: {out}"
    );
    let out = dig(&vs, "@127.0.0.53 fromhosts.lan AAAA")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "fd00::8", "{out}");
    let out = dig(&vs, "@127.0.0.53 -x 10.8.8.8")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "fromhosts.lan.", "{out}");

    let out = dig(&vs, "@127.0.0.53 vs.lan A")?;
    assert_eq!(status(&out).as_deref(), Some("NXDOMAIN"), "{out}");
    let add = d.ctl(&["dns", "add", "--ns", "vsrec", "vs.lan", "10.7.7.7"])?;
    assert!(add.status.success(), "{add:?}");
    let out = dig(&vs, "@127.0.0.53 vs.lan A")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.7.7.7", "{out}");
    let out = dig(&vs, "@127.0.0.53 -x 10.7.7.7")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "vs.lan.", "{out}");
    let ttl = section(&out, "ANSWER")[0].1;
    assert!(ttl <= 10, "local TTL is short: {out}");
    let rm = d.ctl(&["dns", "remove", "--ns", "vsrec", "vs.lan", "10.7.7.7"])?;
    assert!(rm.status.success(), "{rm:?}");
    let out = dig(&vs, "@127.0.0.53 vs.lan A")?;
    assert_eq!(status(&out).as_deref(), Some("NXDOMAIN"), "{out}");
    // Removing again is an error; unknown namespaces too.
    assert!(
        !d.ctl(&["dns", "remove", "--ns", "vsrec", "vs.lan", "10.7.7.7"])?
            .status
            .success()
    );
    assert!(
        !d.ctl(&["dns", "add", "--ns", "nope", "x.lan", "10.0.0.1"])?
            .status
            .success()
    );
    Ok(())
}

#[test]
fn clients_outside_the_namespace_subnets_are_refused() -> anyhow::Result<()> {
    if !require(
        "clients_outside_the_namespace_subnets_are_refused",
        &["dig"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let cdir = tempfile::tempdir()?;
    let d = Daemon::start(&config(
        etc.path(),
        "addresses = [\"0.0.0.0\"]\nlocal_domains = [\"lan\"]\n\
         records = [{ name = \"x.lan\", addr = \"10.1.2.3\" }]\n",
    ))?;
    let vs = d.netns("vsacl")?;
    let client = TestNetns::create(cdir.path(), "client")?;
    veth(&vs, "c0", "10.54.0.1/24", &client, "vs0", "10.54.0.2/24")?;
    client.sh("ip addr add 10.99.0.2/32 dev vs0")?;
    vs.sh("ip route add 10.99.0.2/32 via 10.54.0.2")?;
    // Same subnet as the VS's own address: allowed (the veth appeared after the namespace).
    let out = wait_for("answer over veth", Duration::from_secs(5), || {
        dig(&client, "@10.54.0.1 x.lan A")
            .ok()
            .filter(|o| status(o).is_some())
    })?;
    assert_eq!(status(&out).as_deref(), Some("NOERROR"), "{out}");
    assert!(out.contains("SERVER: 10.54.0.1#53"), "{out}");
    // From elsewhere: REFUSED.
    let out = dig(&client, "@10.54.0.1 -b 10.99.0.2 x.lan A")?;
    assert_eq!(status(&out).as_deref(), Some("REFUSED"), "{out}");
    assert!(stats(&d, "vsacl")?["refused"].as_u64() >= Some(1));
    Ok(())
}

/// A DNS query for `name` type A with RD, without EDNS.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = vec![
        (id >> 8) as u8,
        id as u8,
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn rcode(answer: &[u8]) -> u8 {
    answer.get(3).map_or(255, |b| b & 0x0f)
}

#[test]
fn malformed_queries_get_formerr_or_nothing_and_service_continues() -> anyhow::Result<()> {
    if !require(
        "malformed_queries_get_formerr_or_nothing_and_service_continues",
        &["dig"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let d = Daemon::start(&config(
        etc.path(),
        "local_domains = [\"lan\"]\nrecords = [{ name = \"ok.lan\", addr = \"10.1.1.1\" }]\n\
         tcp_idle_timeout = 2\n",
    ))?;
    let vs = d.netns("vsbad")?;
    dig_ready(&vs, "ok.lan A")?;
    let t = Duration::from_millis(300);
    let ask = |bytes: &[u8]| vs.udp_query(EP, bytes, t);

    // Every query with a readable header and QR clear earns an error answer with its ID
    // echoed; no answer at all is a failure.
    let must_answer = |what: &str, bytes: &[u8], want: u8| -> anyhow::Result<()> {
        let (a, from) = ask(bytes)?.ok_or_else(|| anyhow::anyhow!("{what}: no answer"))?;
        assert_eq!(rcode(&a), want, "{what}: rcode");
        assert_eq!(&a[..2], &bytes[..2], "{what}: ID echoed");
        assert_eq!(from, EP, "{what}: answered from the endpoint");
        Ok(())
    };
    const FORMERR: u8 = 1;
    const NOTIMP: u8 = 4;
    // Zero questions.
    let zero_q = [0x12, 0x34, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
    must_answer("zero questions", &zero_q, FORMERR)?;
    // A compression pointer to itself.
    let mut looped = vec![0x22, 0x22, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    looped.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    must_answer("pointer loop", &looped, FORMERR)?;
    // A label longer than the message.
    let mut long = vec![0x33, 0x33, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    long.extend_from_slice(&[63, b'a', b'b']);
    must_answer("label past the end", &long, FORMERR)?;
    // A question count that lies.
    let mut lying = query(0x4444, "ok.lan");
    lying[5] = 9;
    must_answer("qdcount 9", &lying, FORMERR)?;
    // No header (a 5-byte stub, empty) or a response (QR set in 0xff…): dropped, never
    // answered (answering responses is how loops and reflection start).
    for (what, junk) in [
        ("5-byte stub", &[1u8, 2, 3, 4, 5][..]),
        ("empty", &[][..]),
        ("512 bytes of 0xff", &[0xff; 512][..]),
    ] {
        let a = ask(junk)?;
        assert!(a.is_none(), "{what} must be dropped: {a:?}");
    }
    // An unknown opcode → NOTIMP.
    let mut op = query(0x5555, "ok.lan");
    op[2] = 0x01 | (5 << 3);
    must_answer("opcode 5", &op, NOTIMP)?;

    // TCP: a frame announcing 65535 bytes that never come, then a frame of junk.
    let (held, junk_end) = vs.run_in(move || -> anyhow::Result<(TcpStream, ReadEnd)> {
        let mut huge = TcpStream::connect(EP)?;
        huge.write_all(&[0xff, 0xff, 1, 2, 3])?;
        let mut junk = TcpStream::connect(EP)?;
        junk.set_read_timeout(Some(Duration::from_secs(3)))?;
        junk.write_all(&[0, 5, 1, 2, 3, 4, 5])?;
        Ok((huge, read_end(&mut junk)))
    })??;
    assert!(
        junk_end.closed(),
        "a junk TCP frame must close the connection (EOF or reset): {junk_end:?}"
    );
    // While the huge frame hangs, TCP and UDP still answer.
    let out = dig(&vs, "@127.0.0.53 +tcp ok.lan A")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.1.1.1", "{out}");
    let good = query(0x6666, "ok.lan");
    let (a, from) = ask(&good)?.ok_or_else(|| anyhow::anyhow!("no answer after junk"))?;
    assert_eq!(rcode(&a), 0);
    assert_eq!(&a[..2], &[0x66, 0x66]);
    assert_eq!(from, EP);
    // The stalled connection is cut at the idle timeout.
    let cut = vs.run_in(move || {
        let mut h = held;
        let _ = h.set_read_timeout(Some(Duration::from_secs(5)));
        let t = Instant::now();
        (read_end(&mut h), t.elapsed())
    })?;
    assert!(
        cut.0.closed() && cut.1 < Duration::from_secs(4),
        "the stalled connection must be closed (EOF or reset) at the 2 s idle timeout: {cut:?}"
    );
    let st = stats(&d, "vsbad")?;
    assert!(st["formerr"].as_u64() >= Some(1), "{st}");
    assert!(st["dropped"].as_u64() >= Some(1), "{st}");
    Ok(())
}

#[test]
fn delete_releases_every_fd_with_dns_upstream_sockets_in_use() -> anyhow::Result<()> {
    if !require(
        "delete_releases_every_fd_with_dns_upstream_sockets_in_use",
        &["dig", "unbound"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let updir = tempfile::tempdir()?;
    write_resolv(etc.path(), "vsfd", &format!("nameserver {UP_ADDR}\n"))?;
    let d = Daemon::start(&config(etc.path(), ""))?;
    std::thread::sleep(Duration::from_millis(100));
    let baseline = d.fd_count();
    let (mut vs, up) = linked(&d, updir.path(), "vsfd", 8)?;
    let ino = std::fs::metadata(&vs.path).map(|m| std::os::unix::fs::MetadataExt::ino(&m))?;
    let _srv = Server::unbound(&up, UP_ADDR, &zone("f", "10.8.8.1"))?;
    // UDP upstream socket, a TCP upstream exchange, and a client TCP connection held open.
    let out = dig_ready(&vs, "www.test A")?;
    assert_eq!(status(&out).as_deref(), Some("NOERROR"), "{out}");
    let out = dig(&vs, "@127.0.0.53 big.test TXT")?;
    assert_eq!(section(&out, "ANSWER").len(), 40, "{out}");
    let held = vs.run_in(|| TcpStream::connect(EP))??;
    assert!(d.fd_count() > baseline);
    vs.delete()?;
    d.wait_released(baseline, ino)?;
    assert!(d.ns_list()?.is_empty());
    drop(held);
    Ok(())
}

#[test]
fn ipv6_endpoint_answers_from_the_address_queried() -> anyhow::Result<()> {
    if !require("ipv6_endpoint_answers_from_the_address_queried", &["dig"]) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let d = Daemon::start(&config(
        etc.path(),
        "addresses = [\"127.0.0.53\", \"::1\"]\nlocal_domains = [\"lan\"]\n\
         records = [{ name = \"six.lan\", addr = \"fd00::6\" }]\n",
    ))?;
    let vs = d.netns("vs6")?;
    let out = wait_for("answer on ::1", Duration::from_secs(5), || {
        dig(&vs, "@::1 six.lan AAAA")
            .ok()
            .filter(|o| status(o).is_some())
    })?;
    assert_eq!(section(&out, "ANSWER")[0].3, "fd00::6", "{out}");
    assert!(out.contains("SERVER: ::1#53"), "{out}");
    let out = dig(&vs, "@::1 +tcp six.lan AAAA")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "fd00::6", "{out}");
    Ok(())
}

#[test]
fn rate_limited_udp_client_is_dropped_or_slipped_but_tcp_still_answers() -> anyhow::Result<()> {
    if !require(
        "rate_limited_udp_client_is_dropped_or_slipped_but_tcp_still_answers",
        &["dig"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let d = Daemon::start(&config(
        etc.path(),
        "local_domains = [\"lan\"]\nrecords = [{ name = \"r.lan\", addr = \"10.1.1.1\" }]\n\
         rate_limit = { per_second = 5, burst = 5, slip = 0 }\n",
    ))?;
    let vs = d.netns("vsrl")?;
    dig_ready(&vs, "r.lan A")?;
    let answered = vs.run_in(|| -> anyhow::Result<usize> {
        let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
        s.set_read_timeout(Some(Duration::from_millis(300)))?;
        for i in 0..50u16 {
            s.send_to(&query(i, "r.lan"), EP)?;
        }
        let mut n = 0;
        let mut buf = [0u8; 512];
        while s.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        Ok(n)
    })??;
    assert!(
        answered <= 10,
        "50 queries at once, burst 5: {answered} answered"
    );
    let out = dig(&vs, "@127.0.0.53 +tcp r.lan A")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.1.1.1", "{out}");
    assert!(stats(&d, "vsrl")?["rate_limited"].as_u64() >= Some(40));
    Ok(())
}

#[test]
fn reload_switches_upstreams_and_disabling_releases_upstream_sockets() -> anyhow::Result<()> {
    if !require(
        "reload_switches_upstreams_and_disabling_releases_upstream_sockets",
        &["dig", "unbound"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let updir = tempfile::tempdir()?;
    let d = Daemon::start(&config(etc.path(), ""))?;
    std::thread::sleep(Duration::from_millis(100));
    let baseline = d.fd_count();
    let (vs, up) = linked(&d, updir.path(), "vsrl2", 9)?;
    let _srv = Server::unbound(&up, UP_ADDR, &zone("r", "10.9.9.1"))?;
    let out = dig_ready(&vs, "www.test A")?;
    assert_eq!(
        status(&out).as_deref(),
        Some("SERVFAIL"),
        "no upstream yet: {out}"
    );
    let with_ns = d.fd_count();

    d.write_config(&config(
        etc.path(),
        &format!("\n[[netns]]\nmatch = \"vsrl*\"\ndns = {{ upstreams = [\"{UP_ADDR}\"] }}\n"),
    ))?;
    assert!(d.ctl(&["reload"])?.status.success());
    let out = dig(&vs, "@127.0.0.53 www.test A")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.9.9.1", "{out}");
    assert!(d.fd_count() > with_ns, "an upstream socket is open");

    // Disable DNS for the namespace: listeners and upstream sockets must go, the namespace
    // fd stays (it is still tracked).
    d.write_config(&format!(
        "{}\n[[netns]]\nmatch = \"vsrl*\"\ndns = {{ enabled = false }}\n",
        config(etc.path(), "")
    ))?;
    assert!(d.ctl(&["reload"])?.status.success());
    wait_for("dns sockets closed", Duration::from_secs(5), || {
        (d.fd_count() <= baseline + 1).then_some(())
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}: {} vs {baseline}+1: {:?}",
            d.fd_count(),
            d.fd_targets()
        )
    })?;
    Ok(())
}

#[test]
fn a_dead_first_upstream_fails_over_to_the_next() -> anyhow::Result<()> {
    if !require(
        "a_dead_first_upstream_fails_over_to_the_next",
        &["dig", "unbound"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let updir = tempfile::tempdir()?;
    // 192.0.2.54 is routed to the upstream namespace, which does not have it: a black hole.
    write_resolv(
        etc.path(),
        "vsfo",
        &format!("nameserver 192.0.2.54\nnameserver {UP_ADDR}\n"),
    )?;
    let d = Daemon::start(&config(
        etc.path(),
        "attempt_timeout_ms = 300\nquery_timeout_ms = 3000\n",
    ))?;
    let (vs, up) = linked(&d, updir.path(), "vsfo", 10)?;
    vs.sh("ip route add 192.0.2.54/32 via 10.53.10.2")?;
    let _srv = Server::unbound(&up, UP_ADDR, &zone("fo", "10.10.10.10"))?;
    let t = Instant::now();
    let out = dig_ready(&vs, "www.test A")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.10.10.10", "{out}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let st = stats(&d, "vsfo")?;
    let ups = st["upstreams"].as_array().cloned().unwrap_or_default();
    assert_eq!(ups.len(), 2, "{st}");
    let dead = ups.iter().find(|u| u["addr"] == "192.0.2.54:53");
    assert!(
        dead.is_some_and(|u| u["failures"].as_u64() >= Some(1) || u["down"] == true),
        "{st}"
    );
    Ok(())
}

/// A minimal upstream in namespace `ns` on `UP_ADDR`:53/udp: answers every A query with
/// `A 10.11.0.1` (TTL 300) and records the source port and DNS ID of each query it sees.
struct Recorder {
    seen: std::sync::Arc<std::sync::Mutex<Vec<(u16, u16)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Recorder {
    fn start(ns: &TestNetns) -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        // The socket belongs to the namespace it is made in; the thread serving it need not.
        let sock = ns.run_in(|| std::net::UdpSocket::bind((UP_ADDR, 53)))??;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let q = &buf[..n];
                let Some(reply) = answer_a(q, [10, 11, 0, 1]) else {
                    continue;
                };
                if let Ok(mut s) = seen2.lock() {
                    s.push((peer.port(), u16::from_be_bytes([q[0], q[1]])));
                }
                let _ = sock.send_to(&reply, peer);
            }
        });
        Ok(Self {
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// (source port, DNS ID) of every query seen so far.
    fn seen(&self) -> Vec<(u16, u16)> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Fails unless `v` (values in the order they were sent) looks drawn at random from a range of
/// at least `min_span` values: hardly any repeats, neither ascending nor descending, both bytes
/// varying, a wide span, no constant or small stride between neighbours. For uniform random
/// values at 40 samples the checks fail by chance with a probability of about 10⁻⁵ (the
/// neighbour check, for ports), the others far less; a counter, a counter with a random start
/// or stride, or a narrow window fails at least one.
fn assert_random_spread(what: &str, v: &[u16], min_span: u16) {
    let n = v.len();
    assert!(n >= 32, "{what}: need at least 32 samples, have {n}");
    let distinct = |f: &dyn Fn(u16) -> u16| v.iter().map(|&x| f(x)).collect::<HashSet<u16>>();
    assert!(
        distinct(&|x| x).len() >= n - 2,
        "{what}: must differ per query: {v:?}"
    );
    let ascending = v.windows(2).all(|w| w[0] <= w[1]);
    let descending = v.windows(2).all(|w| w[0] >= w[1]);
    assert!(!ascending && !descending, "{what}: monotonic: {v:?}");
    // Uniform bytes: about 37 of 256 values distinct in 40 draws; a counter keeps its high
    // byte, a stride of 256 its low byte.
    let want_bytes = n / 3;
    assert!(
        distinct(&|x| x >> 8).len() >= want_bytes,
        "{what}: high bytes must vary: {v:?}"
    );
    assert!(
        distinct(&|x| x & 0xff).len() >= want_bytes,
        "{what}: low bytes must vary: {v:?}"
    );
    let (lo, hi) = (v.iter().min(), v.iter().max());
    let span = hi.zip(lo).map_or(0, |(h, l)| h - l);
    assert!(
        span >= min_span,
        "{what}: span {span} below {min_span}: {v:?}"
    );
    let steps: Vec<u16> = v.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    let strides: HashSet<u16> = steps.iter().copied().collect();
    assert!(
        strides.len() >= n / 2,
        "{what}: too few distinct steps between consecutive values ({}): {v:?}",
        strides.len()
    );
    // Neighbours within ±16 of each other: probability ≈ 33/span per pair when random.
    let near = steps
        .iter()
        .filter(|&&d| d <= 16 || d >= u16::MAX - 15)
        .count();
    assert!(
        near <= 2,
        "{what}: {near} consecutive values within 16 of each other (sequential?): {v:?}"
    );
}

#[test]
fn every_upstream_query_gets_its_own_random_source_port() -> anyhow::Result<()> {
    if !require(
        "every_upstream_query_gets_its_own_random_source_port",
        &["dig"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let updir = tempfile::tempdir()?;
    write_resolv(etc.path(), "vsport", &format!("nameserver {UP_ADDR}\n"))?;
    let d = Daemon::start(&config(etc.path(), ""))?;
    let (vs, up) = linked(&d, updir.path(), "vsport", 11)?;
    let rec = Recorder::start(&up)?;
    // 40 misses: enough that a counter, a narrow window or a fixed stride cannot pass the
    // checks below by chance, few enough to take a few seconds.
    const N: usize = 40;
    for i in 0..N {
        let out = dig_ready(&vs, &format!("q{i}.test A"))?;
        assert_eq!(section(&out, "ANSWER")[0].3, "10.11.0.1", "{out}");
    }
    // A cache hit sends nothing upstream.
    let out = dig(&vs, "@127.0.0.53 q0.test A")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.11.0.1", "{out}");
    let seen = rec.seen();
    assert_eq!(
        seen.len(),
        N,
        "one upstream query per distinct name: {seen:?}"
    );
    let ports: Vec<u16> = seen.iter().map(|s| s.0).collect();
    let ids: Vec<u16> = seen.iter().map(|s| s.1).collect();
    assert_random_spread("upstream DNS IDs", &ids, 1 << 15);
    // Ports come from the ≈ 28,000 ephemeral ones (32768..60999 by default).
    assert_random_spread("upstream source ports", &ports, 8_192);
    // Each query's socket closed with its answer: none stays in use; the unused spares go
    // after 10 s idle, so an idle namespace holds no upstream socket.
    let dns_status = || -> Option<serde_json::Value> {
        Some(d.ns("vsport").ok()??["services"]["dns"]["status"].clone())
    };
    wait_for("upstream sockets closed", Duration::from_secs(5), || {
        dns_status().filter(|s| s["upstream_sockets"] == 0)
    })?;
    let st = wait_for("spare sockets closed", Duration::from_secs(15), || {
        dns_status().filter(|s| s["spare_sockets"] == 0)
    })?;
    assert_eq!(st["upstream_sockets"], 0, "{st}");
    Ok(())
}
