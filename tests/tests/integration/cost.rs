//! What a namespace costs (issue 16): at most six fds with the portmapper, DNS (127.0.0.53)
//! and NTP on, none of them the namespace file, all released when the namespace goes; and the
//! dual-stack sockets behind that figure keep the portmapper's netids and reply addresses
//! exact, checked with the real `rpcinfo` and raw calls over both families.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::Duration;

use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::env::{require, require_root};
use nsaux_tests::netns::{TestNetns, udp_exchange};
use nsaux_tests::rpc::{
    Cred, PMAP, call, connect_abstract, parse_reply, result_string, result_u32, rpcb, stream_call,
};

/// The fd budget per namespace with the three product services on (issue 16, target 2).
const FDS_PER_NS: usize = 6;

/// The product services on, the resolver reading its files from `etc` (hermetic). DNS on
/// 127.0.0.53 only: the issue counts the default's IPv6 endpoint (`::1`, two more fds: UDP and
/// TCP) separately.
fn all_services(etc: &Path) -> String {
    format!(
        "[rpcbind]\nenabled = true\n\n[ntp]\nenabled = true\nlocal_stratum = 5\n\n\
         [dns]\nenabled = true\naddresses = [\"127.0.0.53\"]\nnetns_etc_dir = \"{}\"\nlocal_domains = [\"lan\"]\n\
         records = [{{ name = \"c.lan\", addr = \"10.0.0.9\" }}]\n",
        etc.display()
    )
}

/// A DNS query for `c.lan` A (answered from the configured records, no upstream).
fn dns_query() -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(b"\x01c\x03lan\x00\x00\x01\x00\x01");
    q
}

/// An NTP version 4 client request.
fn ntp_query() -> Vec<u8> {
    let mut q = vec![0u8; 48];
    q[0] = 0x23;
    q
}

/// Whether all three services answer over UDP inside `ns`.
fn all_answer(ns: &TestNetns) -> bool {
    ns.run_in(|| {
        let t = Duration::from_millis(300);
        let ask = |to: SocketAddr, q: &[u8]| udp_exchange(to, q, t).ok().flatten().is_some();
        ask(
            SocketAddr::from(([127, 0, 0, 1], 111)),
            &call(1, PMAP, 2, 0, Cred::None, &[]),
        ) && ask(SocketAddr::from(([127, 0, 0, 53], 53)), &dns_query())
            && ask(SocketAddr::from(([127, 0, 0, 1], 123)), &ntp_query())
    })
    .unwrap_or(false)
}

fn wait_served(ns: &TestNetns) -> anyhow::Result<()> {
    wait_for(
        &format!("all services in {}", ns.name),
        Duration::from_secs(5),
        || all_answer(ns).then_some(()),
    )
}

/// The nsfs inode of a namespace file (what `/proc/PID/fd` shows as `net:[INO]`).
fn ns_ino(ns: &TestNetns) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(&ns.path)?.ino())
}

/// The listener names of `service` in namespace `name` that are up.
fn up_listeners(d: &Daemon, name: &str, service: &str) -> anyhow::Result<Vec<String>> {
    let entry = d
        .ns(name)?
        .ok_or_else(|| anyhow::anyhow!("{name} not listed"))?;
    Ok(entry["services"][service]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["state"] == "up")
        .filter_map(|l| l["listener"].as_str().map(String::from))
        .collect())
}

#[test]
fn a_namespace_costs_at_most_six_fds_none_of_them_its_file() -> anyhow::Result<()> {
    if !require_root("a_namespace_costs_at_most_six_fds_none_of_them_its_file") {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let d = Daemon::start(&all_services(etc.path()))?;
    // One namespace first, so that whatever the daemon opens once (lazily, for the first
    // namespace) is in the baseline.
    let warm = d.netns("c0")?;
    wait_served(&warm)?;
    let settle = |d: &Daemon| {
        // The namespace file closes right after its first UDP listener is up.
        let mut last = d.fd_count();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(50));
            let now = d.fd_count();
            if now == last {
                return now;
            }
            last = now;
        }
        last
    };
    let fds0 = settle(&d);
    const N: usize = 6;
    let mut spaces = Vec::new();
    for i in 1..=N {
        let ns = d.netns(&format!("c{i}"))?;
        wait_served(&ns)?;
        spaces.push(ns);
    }
    let fds = settle(&d);
    let per_ns = fds.saturating_sub(fds0) as f64 / N as f64;
    assert!(
        fds <= fds0 + FDS_PER_NS * N,
        "{per_ns:.2} fds per namespace ({fds0} -> {fds} for {N}): {:?}",
        d.fd_targets()
    );
    // None of them is a namespace file: the daemon reaches each through its sockets.
    let targets = d.fd_targets();
    for ns in spaces.iter().chain([&warm]) {
        let net = format!("net:[{}]", ns_ino(ns)?);
        assert!(
            !targets.contains(&net),
            "{} held by its file: {targets:?}",
            ns.name
        );
    }
    // The wildcard pairs are one dual-stack socket each.
    let rpcbind = up_listeners(&d, "c1", "rpcbind")?;
    assert!(
        rpcbind.contains(&"udp:[::]:111+v4".to_owned())
            && rpcbind.contains(&"tcp:[::]:111+v4".to_owned()),
        "{rpcbind:?}"
    );
    assert_eq!(up_listeners(&d, "c1", "ntp")?, ["udp:[::]:123+v4"]);
    // Still reachable without its file: a reload that changes a listener binds inside it.
    d.write_config(&all_services(etc.path()).replace("local_stratum = 5\n", "port = 1123\n"))?;
    let out = d.ctl(&["reload"])?;
    assert!(out.status.success(), "{out:?}");
    wait_for("ntp moved to port 1123", Duration::from_secs(5), || {
        let l = up_listeners(&d, "c1", "ntp").ok()?;
        (l == ["udp:[::]:1123+v4"]).then_some(())
    })?;
    let ntp_on_new_port = spaces[0].run_in(|| {
        udp_exchange(
            SocketAddr::from(([127, 0, 0, 1], 1123)),
            &ntp_query(),
            Duration::from_secs(1),
        )
        .ok()
        .flatten()
        .is_some()
    })?;
    assert!(ntp_on_new_port, "NTP on the new port after reload");
    // Deleted: every fd of the namespaces goes.
    for ns in &mut spaces {
        ns.delete()?;
    }
    wait_for("fds released", Duration::from_secs(5), || {
        (d.fd_count() <= fds0).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}: {} > {fds0}: {:?}", d.fd_count(), d.fd_targets()))?;
    Ok(())
}

/// A v3 GETADDR over UDP to `to` for `netid`: the universal address answered.
fn getaddr_udp(to: SocketAddr, netid: &str) -> Option<String> {
    let msg = call(7, PMAP, 3, 3, Cred::None, &rpcb(100_005, 3, netid, "", ""));
    let (b, from) = udp_exchange(to, &msg, Duration::from_secs(1)).ok()??;
    // The answer leaves from the address queried.
    (from == to).then_some(())?;
    result_string(&parse_reply(&b)?.1)
}

/// The same over TCP.
fn getaddr_tcp(to: SocketAddr, netid: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let msg = call(8, PMAP, 3, 3, Cred::None, &rpcb(100_005, 3, netid, "", ""));
    let r = stream_call(&mut s, &msg)?;
    let _ = s.flush();
    result_string(&r)
}

#[test]
fn netids_and_reply_addresses_stay_exact_on_dual_stack_sockets() -> anyhow::Result<()> {
    if !require(
        "netids_and_reply_addresses_stay_exact_on_dual_stack_sockets",
        &["rpcinfo"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let d = Daemon::start(&all_services(etc.path()))?;
    let ns = d.netns("ds")?;
    wait_served(&ns)?;
    let rpcbind = up_listeners(&d, "ds", "rpcbind")?;
    assert!(
        rpcbind.contains(&"udp:[::]:111+v4".to_owned()),
        "{rpcbind:?}"
    );
    // mountd-like wildcard registrations on all four IP netids, over the abstract socket.
    for (netid, uaddr) in [
        ("udp", "0.0.0.0.78.72"),
        ("tcp", "0.0.0.0.78.73"),
        ("udp6", "::.78.74"),
        ("tcp6", "::.78.75"),
    ] {
        let args = rpcb(100_005, 3, netid, uaddr, "0");
        let r = ns.run_in(move || {
            let mut s = connect_abstract("/run/rpcbind.sock").ok()?;
            stream_call(&mut s, &call(9, PMAP, 4, 1, Cred::None, &args))
        })?;
        assert_eq!(
            r.as_ref().and_then(result_u32),
            Some(1),
            "SET {netid}: {r:?}"
        );
    }
    // Real rpcinfo over each transport, to the one socket serving both families.
    for (proto, host) in [
        ("udp", "127.0.0.1"),
        ("tcp", "127.0.0.1"),
        ("udp6", "::1"),
        ("tcp6", "::1"),
    ] {
        let out = ns.sh(&format!("rpcinfo -T {proto} {host} 100000 4"))?;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "program 100000 version 4 ready and waiting",
            "-T {proto}"
        );
    }
    // The portmapper's own netids are those of separate sockets.
    let out = ns.sh("rpcinfo -s 127.0.0.1")?;
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(summary.contains("local,tcp6,udp6,tcp,udp"), "{summary}");
    // GETADDR per netid answers with the address of the family asked over, and (UDP) from
    // the address queried, 127.0.0.2 included (lo holds all of 127/8).
    let (udp4, udp4b, udp6, tcp4, tcp6) = ns.run_in(|| {
        (
            getaddr_udp(SocketAddr::from(([127, 0, 0, 1], 111)), "udp"),
            getaddr_udp(SocketAddr::from(([127, 0, 0, 2], 111)), "udp"),
            getaddr_udp("[::1]:111".parse().expect("addr"), "udp6"),
            getaddr_tcp(SocketAddr::from(([127, 0, 0, 1], 111)), "tcp"),
            getaddr_tcp("[::1]:111".parse().expect("addr"), "tcp6"),
        )
    })?;
    assert_eq!(udp4.as_deref(), Some("127.0.0.1.78.72"));
    assert_eq!(udp4b.as_deref(), Some("127.0.0.2.78.72"));
    assert_eq!(udp6.as_deref(), Some("::1.78.74"));
    assert_eq!(tcp4.as_deref(), Some("127.0.0.1.78.73"));
    assert_eq!(tcp6.as_deref(), Some("::1.78.75"));
    // rpcinfo -p (v2 DUMP over TCP from IPv4) lists the registrations with their protocols.
    let out = ns.sh("rpcinfo -p 127.0.0.1")?;
    let dump = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dump.lines().any(|l| l
            .split_whitespace()
            .take(4)
            .eq(["100005", "3", "udp", "20040"])),
        "{dump}"
    );
    Ok(())
}
