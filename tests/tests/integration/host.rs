//! The daemon's own ("host") namespace, served by default (`host_netns = true`). Every other
//! test passes `--no-host-netns` so the machine's real namespace is never served; here the
//! daemon runs inside a test-created namespace, which is therefore its host namespace.

use std::net::SocketAddr;
use std::time::Duration;

use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::dns::{dig, section, status};
use nsaux_tests::env::require;
use nsaux_tests::netns::TestNetns;

const IDENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7867);
const NTP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 123);

/// Every service on, the host namespace served; `host` is the value of `host_netns`.
fn config(etc: &std::path::Path, host: bool) -> String {
    format!(
        "host_netns = {host}\n\n[ident]\nenabled = true\n\n[ntp]\nstratum = 10\nlocal_stratum = 10\n\n\
         [rpcbind]\nenabled = true\n\n[dns]\nnetns_etc_dir = \"{}\"\nlocal_domains = [\"lan\"]\n\
         records = [{{ name = \"h.lan\", addr = \"10.0.0.7\" }}]\n",
        etc.display()
    )
}

/// The ident answer line in `ns`, if any.
fn ident(ns: &TestNetns) -> Option<String> {
    ns.udp_query(IDENT, b"?", Duration::from_millis(200))
        .ok()
        .flatten()
        .map(|(b, _)| String::from_utf8_lossy(&b).into_owned())
}

/// The (mode, stratum) of the NTP answer to a v4 client request in `ns`, if any.
fn ntp(ns: &TestNetns) -> Option<(u8, u8)> {
    let mut req = vec![0u8; 48];
    req[0] = (4 << 3) | 3;
    req[40..48].copy_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
    ns.udp_query(NTP, &req, Duration::from_millis(200))
        .ok()
        .flatten()
        .filter(|(b, _)| b.len() == 48 && b[24..32] == req[40..48])
        .map(|(b, _)| (b[0] & 7, b[1]))
}

/// Whether `rpcinfo` reaches the portmapper over TCP in `ns`.
fn rpcinfo(ns: &TestNetns) -> bool {
    ns.sh("rpcinfo -T tcp 127.0.0.1 100000 4").is_ok()
}

fn host_listed(d: &Daemon) -> anyhow::Result<bool> {
    Ok(d.ns_list()?
        .iter()
        .any(|n| n["name"] == "host" && n["source"] == "host"))
}

#[test]
fn host_namespace_is_served_and_the_switch_turns_it_off() -> anyhow::Result<()> {
    let test = "host_namespace_is_served_and_the_switch_turns_it_off";
    if !require(test, &["nsenter", "dig", "rpcinfo"]) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let etc = tempfile::tempdir()?;
    let home = TestNetns::create(dir.path(), "home")?;
    let d = Daemon::start_in_netns(&config(etc.path(), true), &home.path)?;
    // nsenter exec'd the daemon: the pid stopped on drop is nsauxd's own.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", d.pid()))?;
    assert_eq!(comm.trim(), "nsauxd");

    let line = wait_for(
        "ident in the host namespace",
        Duration::from_secs(5),
        || ident(&home),
    )?;
    assert!(line.contains("netns=host"), "{line}");
    assert!(host_listed(&d)?, "{:?}", d.ns_list()?);
    let host = d
        .ns("host")?
        .ok_or_else(|| anyhow::anyhow!("no host entry"))?;
    for svc in ["ident", "ntp", "rpcbind", "dns"] {
        assert_eq!(host["services"][svc]["state"], "up", "{svc}: {host}");
    }
    let answer = wait_for("NTP in the host namespace", Duration::from_secs(5), || {
        ntp(&home)
    })?;
    assert_eq!(answer, (4, 10), "server mode, configured stratum 10");
    let out = wait_for("DNS in the host namespace", Duration::from_secs(5), || {
        dig(&home, "@127.0.0.53 h.lan A")
            .ok()
            .filter(|o| status(o).is_some())
    })?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.0.0.7", "{out}");
    wait_for(
        "rpcinfo in the host namespace",
        Duration::from_secs(5),
        || rpcinfo(&home).then_some(()),
    )?;

    // The switch off: reload drops the host namespace and every service in it stops.
    d.write_config(&config(etc.path(), false))?;
    let reload = d.ctl(&["reload"])?;
    assert!(reload.status.success(), "{reload:?}");
    wait_for("host namespace dropped", Duration::from_secs(5), || {
        (!host_listed(&d).ok()?).then_some(())
    })?;
    wait_for("every service gone", Duration::from_secs(5), || {
        let dns_gone = dig(&home, "@127.0.0.53 h.lan A")
            .ok()
            .is_some_and(|o| status(&o).is_none());
        (ident(&home).is_none() && ntp(&home).is_none() && dns_gone && !rpcinfo(&home))
            .then_some(())
    })?;

    // And on again.
    d.write_config(&config(etc.path(), true))?;
    assert!(d.ctl(&["reload"])?.status.success());
    let line = wait_for("ident back", Duration::from_secs(5), || ident(&home))?;
    assert!(line.contains("netns=host"), "{line}");
    Ok(())
}

#[test]
fn host_netns_false_in_the_file_never_serves_the_host() -> anyhow::Result<()> {
    let test = "host_netns_false_in_the_file_never_serves_the_host";
    if !require(test, &["nsenter"]) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let etc = tempfile::tempdir()?;
    let home = TestNetns::create(dir.path(), "home")?;
    let d = Daemon::start_in_netns(&config(etc.path(), false), &home.path)?;
    // A namespace of the watched directory is served: the daemon is up and serving.
    let vs = d.netns("vs1")?;
    let line = wait_for("ident in vs1", Duration::from_secs(5), || ident(&vs))?;
    assert!(line.contains("netns=vs1"), "{line}");
    assert!(!host_listed(&d)?, "{:?}", d.ns_list()?);
    assert_eq!(ident(&home), None);
    assert_eq!(ntp(&home), None);
    Ok(())
}
