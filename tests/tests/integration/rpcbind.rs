//! The portmapper: real `rpcinfo` and `rpc.statd` inside real namespaces, the kernel's
//! registration sequence over the abstract socket, isolation, security, durability across
//! `kill -9`, and malformed input.
//!
//! Hermetic: the daemon's path socket lives in the test's temp dir; clients that need
//! `/run/rpcbind.sock` run in a private mount namespace with a tmpfs on `/run` and that socket
//! bind-mounted onto `/run/rpcbind.sock`.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nsaux_tests::daemon::{Daemon, journal_files, wait_for};
use nsaux_tests::env::{require, require_root};
use nsaux_tests::netns::{TestNetns, veth};
use nsaux_tests::rpc::{
    self, Cred, PMAP, Reply, Xdr, call, connect_abstract, lo111, pmap, rpcb, spawn_stock_rpcbind,
    stream_call, udp_call,
};
use nsaux_tests::stream::{ReadEnd, read_end};

const ON: &str = "[rpcbind]\nenabled = true\n";
const ABSTRACT: &str = "/run/rpcbind.sock";

fn null_v2() -> Vec<u8> {
    call(1, PMAP, 2, 0, Cred::None, &[])
}

/// Waits until the portmapper answers NULL over UDP, TCP and the abstract socket in `ns`.
fn wait_up(ns: &TestNetns) -> anyhow::Result<()> {
    wait_for(
        &format!("portmapper in {}", ns.name),
        Duration::from_secs(5),
        || {
            ns.run_in(|| {
                let udp = udp_call(lo111(), &null_v2(), Duration::from_millis(200));
                let tcp = TcpStream::connect(lo111()).ok().and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                    stream_call(&mut s, &null_v2())
                });
                let local = connect_abstract(ABSTRACT)
                    .ok()
                    .and_then(|mut s| stream_call(&mut s, &null_v2()));
                (udp.is_some() && tcp.is_some() && local.is_some()).then_some(())
            })
            .ok()
            .flatten()
        },
    )
}

/// A v4 SET/UNSET over the abstract socket (as root: owner "superuser").
fn local_v4(ns: &TestNetns, proc_: u32, args: Vec<u8>) -> anyhow::Result<Option<Reply>> {
    ns.run_in(move || {
        let mut s = connect_abstract(ABSTRACT).ok()?;
        stream_call(&mut s, &call(7, PMAP, 4, proc_, Cred::None, &args))
    })
}

/// Runs `script` with bash inside `ns` and a private mount namespace where `/run` is a fresh
/// tmpfs and the daemon's path socket is `/run/rpcbind.sock`.
fn in_private_run(ns_path: &Path, sock: &Path, script: &str) -> anyhow::Result<Output> {
    let setup = format!(
        "set -e; mount --make-rprivate /; mount -t tmpfs tmpfs /run; touch /run/rpcbind.sock; \
         mount --bind {} /run/rpcbind.sock; set +e; {script}",
        sock.display()
    );
    Ok(Command::new("nsenter")
        .arg(format!("--net={}", ns_path.display()))
        .args(["unshare", "-m", "bash", "-c", &setup])
        .output()?)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Rows of `rpcinfo -p` as (prog, vers, proto, port), sorted.
fn pmap_rows(text: &str) -> Vec<(u32, u32, String, u16)> {
    let mut v = rpc::pmap_rows(text);
    v.sort();
    v
}

/// Rows of plain `rpcinfo` / `rpcinfo HOST` as (prog, vers, netid, address, owner), sorted.
fn rpcb_rows(text: &str) -> Vec<(u32, u32, String, String, String)> {
    let mut v: Vec<_> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.parse().ok()?,
                (*f.get(2)?).to_owned(),
                (*f.get(3)?).to_owned(),
                (*f.last()?).to_owned(),
            ))
        })
        .collect();
    v.sort();
    v
}

fn self_pmap_rows() -> Vec<(u32, u32, String, u16)> {
    let mut v = Vec::new();
    for proto in ["tcp", "udp"] {
        for vers in 2..=4 {
            v.push((PMAP, vers, proto.to_owned(), 111));
        }
    }
    v.sort();
    v
}

fn self_rpcb_rows() -> Vec<(u32, u32, String, String, String)> {
    let mut v = Vec::new();
    for (netid, addr, versions) in [
        ("udp", "0.0.0.0.0.111", &[2, 3, 4][..]),
        ("tcp", "0.0.0.0.0.111", &[2, 3, 4][..]),
        ("udp6", "::.0.111", &[3, 4][..]),
        ("tcp6", "::.0.111", &[3, 4][..]),
        ("local", ABSTRACT, &[3, 4][..]),
    ] {
        for &vers in versions {
            v.push((
                PMAP,
                vers,
                netid.to_owned(),
                addr.to_owned(),
                "superuser".to_owned(),
            ));
        }
    }
    v.sort();
    v
}

/// One `nsauxctl rpc list` row: (prog, vers, netid, address, owner).
type Row = (u64, u64, String, String, String);

/// `nsauxctl rpc list --ns NAME` rows, sorted.
fn ctl_rows(d: &Daemon, ns: &str) -> anyhow::Result<Vec<Row>> {
    let v = d.ctl_json(&["rpc", "list", "--ns", ns])?;
    let mut rows: Vec<_> = v[ns]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["prog"].as_u64().unwrap_or(0),
                r["vers"].as_u64().unwrap_or(0),
                r["netid"].as_str().unwrap_or("").to_owned(),
                r["address"].as_str().unwrap_or("").to_owned(),
                r["owner"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    rows.sort();
    Ok(rows)
}

fn has_prog(rows: &[Row], prog: u64) -> bool {
    rows.iter().any(|r| r.0 == prog)
}

#[test]
fn rpcinfo_queries_inside_a_namespace() -> anyhow::Result<()> {
    if !require("rpcinfo_queries_inside_a_namespace", &["rpcinfo"]) {
        return Ok(());
    }
    let d = Daemon::start(ON)?;
    let ns = d.netns("vs1")?;
    wait_up(&ns)?;
    // mountd-like registrations over the abstract socket: v3 on udp/tcp, v1 on udp.
    for (vers, netid, uaddr) in [
        (3, "udp", "0.0.0.0.78.72"),
        (3, "tcp", "0.0.0.0.78.73"),
        (1, "udp", "0.0.0.0.78.74"),
    ] {
        let r = local_v4(&ns, 1, rpcb(100_005, vers, netid, uaddr, "0"))?;
        assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1), "{r:?}");
    }
    // -p: the v2 DUMP.
    let out = ns.sh("rpcinfo -p 127.0.0.1")?;
    let mut want = self_pmap_rows();
    want.extend([
        (100_005, 1, "udp".into(), 20042),
        (100_005, 3, "tcp".into(), 20041),
        (100_005, 3, "udp".into(), 20040),
    ]);
    want.sort();
    assert_eq!(pmap_rows(&stdout(&out)), want, "{}", stdout(&out));
    // -s: the program summary.
    let out = stdout(&ns.sh("rpcinfo -s 127.0.0.1")?);
    let summary: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        summary,
        vec![
            vec![
                "100000",
                "4,3,2",
                "local,tcp6,udp6,tcp,udp",
                "portmapper",
                "superuser"
            ],
            vec!["100005", "1,3", "tcp,udp", "mountd", "superuser"],
        ],
        "{out}"
    );
    // -l: the v4 GETADDRLIST for one program and version.
    let out = stdout(&ns.sh("rpcinfo -l 127.0.0.1 100005 3")?);
    let mut addrs: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("100005"))
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    addrs.sort_unstable();
    assert_eq!(addrs, ["127.0.0.1.78.72", "127.0.0.1.78.73"], "{out}");
    // -T: NULL per transport and version.
    for (proto, host) in [
        ("udp", "127.0.0.1"),
        ("tcp", "127.0.0.1"),
        ("udp6", "::1"),
        ("tcp6", "::1"),
    ] {
        for vers in 2..=4 {
            if vers == 2 && proto.ends_with('6') {
                continue;
            }
            let out = stdout(&ns.sh(&format!("rpcinfo -T {proto} {host} 100000 {vers}"))?);
            assert_eq!(
                out.trim(),
                format!("program 100000 version {vers} ready and waiting"),
                "-T {proto} v{vers}"
            );
        }
    }
    // -m: statistics count the three SETs and the calls above.
    let out = stdout(&ns.sh("rpcinfo -m 127.0.0.1")?);
    let v4 = out
        .split("RPCBIND (version 4) statistics")
        .nth(1)
        .unwrap_or("");
    let counts: Vec<&str> = v4.lines().nth(2).unwrap_or("").split_whitespace().collect();
    assert_eq!(counts.get(1), Some(&"3/3"), "v4 SET count: {out}");
    assert!(out.contains("PORTMAP (version 2) statistics"), "{out}");
    // -d by an unprivileged user (uid 1000 over the path socket: owner "1000") is refused and
    // removes nothing: the entries belong to the superuser.
    let out = in_private_run(
        &ns.path,
        &d.rpcbind_socket(),
        "setpriv --reuid=1000 --regid=1000 --clear-groups rpcinfo -d 100005 3",
    )?;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Could not delete registration"),
        "{out:?}"
    );
    assert_eq!(
        pmap_rows(&stdout(&ns.sh("rpcinfo -p 127.0.0.1")?))
            .iter()
            .filter(|r| r.0 == 100_005)
            .count(),
        3
    );
    // -d (local transport, as root) removes version 3 on every netid.
    let out = in_private_run(&ns.path, &d.rpcbind_socket(), "rpcinfo -d 100005 3")?;
    assert!(out.status.success(), "{:?}", out);
    let out = ns.sh("rpcinfo -p 127.0.0.1")?;
    let mut want = self_pmap_rows();
    want.push((100_005, 1, "udp".into(), 20042));
    want.sort();
    assert_eq!(pmap_rows(&stdout(&out)), want);
    // Plain rpcinfo (local transport) shows the full v4 dump with owners.
    let out = in_private_run(&ns.path, &d.rpcbind_socket(), "rpcinfo")?;
    let mut want = self_rpcb_rows();
    want.push((
        100_005,
        1,
        "udp".into(),
        "0.0.0.0.78.74".into(),
        "superuser".into(),
    ));
    want.sort();
    assert_eq!(rpcb_rows(&stdout(&out)), want, "{}", stdout(&out));
    Ok(())
}

#[test]
fn path_socket_serves_the_callers_namespace() -> anyhow::Result<()> {
    if !require("path_socket_serves_the_callers_namespace", &["rpcinfo"]) {
        return Ok(());
    }
    let d = Daemon::start(ON)?;
    let a = d.netns("ns-a")?;
    let b = d.netns("ns-b")?;
    wait_up(&a)?;
    wait_up(&b)?;
    local_v4(&a, 1, rpcb(200_001, 1, "udp", "0.0.0.0.4.1", "0"))?;
    local_v4(&b, 1, rpcb(200_002, 1, "udp", "0.0.0.0.4.2", "0"))?;
    for (ns, mine, theirs) in [(&a, "200001", "200002"), (&b, "200002", "200001")] {
        let out = in_private_run(&ns.path, &d.rpcbind_socket(), "rpcinfo")?;
        let text = stdout(&out);
        assert!(out.status.success(), "{out:?}");
        assert!(text.contains(mine), "{} must see {mine}: {text}", ns.name);
        assert!(!text.contains(theirs), "{} must not see {theirs}", ns.name);
        assert!(text.contains("local     /run/rpcbind.sock"), "{text}");
    }
    // A caller from a namespace nsauxd does not serve is refused (and nothing else answers).
    let other = tempfile::tempdir()?;
    let stranger = TestNetns::create(other.path(), "stranger")?;
    let out = in_private_run(&stranger.path, &d.rpcbind_socket(), "rpcinfo")?;
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(!stdout(&out).contains("200001"));
    wait_for("refusal logged", Duration::from_secs(2), || {
        d.log().contains("does not serve; refused").then_some(())
    })?;
    Ok(())
}

#[test]
fn statd_registers_in_its_namespace_only_and_unsets_on_stop() -> anyhow::Result<()> {
    if !require(
        "statd_registers_in_its_namespace_only_and_unsets_on_stop",
        &["rpc.statd"],
    ) {
        return Ok(());
    }
    let d = Daemon::start(ON)?;
    let a = d.netns("st-a")?;
    let b = d.netns("st-b")?;
    wait_up(&a)?;
    wait_up(&b)?;
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("sm"))?;
    std::fs::create_dir(dir.path().join("sm.bak"))?;
    let setup = format!(
        "set -e; mount --make-rprivate /; mount -t tmpfs tmpfs /run; touch /run/rpcbind.sock; \
         mount --bind {} /run/rpcbind.sock; exec rpc.statd -F -L -P {}",
        d.rpcbind_socket().display(),
        dir.path().display()
    );
    // nsenter, unshare and bash all exec: the child's pid is statd's.
    let mut statd = Command::new("nsenter")
        .arg(format!("--net={}", a.path.display()))
        .args(["unshare", "-m", "bash", "-c", &setup])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let statd_pid = i32::try_from(statd.id())?;
    let got = wait_for("statd registered", Duration::from_secs(10), || {
        ctl_rows(&d, "st-a")
            .ok()
            .filter(|r| r.iter().filter(|e| e.0 == 100_024).count() == 4)
    });
    let got = match got {
        Ok(g) => g,
        Err(e) => {
            let _ = statd.kill();
            return Err(e);
        }
    };
    let netids: Vec<&str> = got
        .iter()
        .filter(|e| e.0 == 100_024)
        .map(|e| e.2.as_str())
        .collect();
    assert_eq!(netids, ["tcp", "tcp6", "udp", "udp6"]);
    assert!(
        got.iter()
            .filter(|e| e.0 == 100_024)
            .all(|e| e.4 == "superuser")
    );
    assert!(!has_prog(&ctl_rows(&d, "st-b")?, 100_024));
    // And the world inside st-a sees it through rpcinfo over UDP.
    let out = stdout(&a.sh("rpcinfo -p 127.0.0.1")?);
    assert!(out.contains("100024"), "{out}");
    assert!(!stdout(&b.sh("rpcinfo -p 127.0.0.1")?).contains("100024"));
    // statd unregisters (pmap_unset / rpcb_unset) on SIGTERM.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(statd_pid),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let _ = statd.wait();
    wait_for("statd unregistered", Duration::from_secs(5), || {
        ctl_rows(&d, "st-a").ok().filter(|r| !has_prog(r, 100_024))
    })?;
    Ok(())
}

#[test]
fn kernel_registration_sequence_over_the_abstract_socket() -> anyhow::Result<()> {
    if !require_root("kernel_registration_sequence_over_the_abstract_socket") {
        return Ok(());
    }
    let d = Daemon::start(ON)?;
    let ns = d.netns("knfsd")?;
    wait_up(&ns)?;
    let replies = ns.run_in(|| -> Vec<(String, Option<Reply>)> {
        let mut out = Vec::new();
        let Ok(mut s) = connect_abstract(ABSTRACT) else {
            return out;
        };
        let mut xid = 100;
        let mut send = |what: String, proc_: u32, vers: u32, args: Vec<u8>| {
            xid += 1;
            let r = stream_call(&mut s, &call(xid, PMAP, vers, proc_, Cred::None, &args));
            out.push((what, r));
        };
        send("v2 NULL".into(), 0, 2, Vec::new());
        send("v4 NULL".into(), 0, 4, Vec::new());
        for (prog, vers, port) in [(100_003, 3, 2049), (100_021, 4, 40_000)] {
            for (netid, host) in [
                ("udp", "0.0.0.0"),
                ("tcp", "0.0.0.0"),
                ("udp6", "::"),
                ("tcp6", "::"),
            ] {
                let uaddr = format!("{host}.{}.{}", port >> 8, port & 0xff);
                send(
                    format!("SET {prog} {netid}"),
                    1,
                    4,
                    rpcb(prog, vers, netid, &uaddr, "0"),
                );
            }
        }
        out
    })?;
    assert_eq!(replies.len(), 10);
    for (what, r) in &replies {
        match what.as_str() {
            "v2 NULL" | "v4 NULL" => {
                assert!(matches!(r, Some(Reply::Accepted(0, _))), "{what}: {r:?}")
            }
            _ => assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1), "{what}"),
        }
    }
    let rows = ctl_rows(&d, "knfsd")?;
    let nfs: Vec<_> = rows.iter().filter(|r| r.0 == 100_003).collect();
    assert_eq!(nfs.len(), 4, "{rows:?}");
    assert!(nfs.iter().all(|r| r.4 == "superuser"));
    assert!(nfs.iter().any(|r| r.2 == "tcp6" && r.3 == "::.8.1"));
    // The operator's table: NS, PROG/VERS, NETID, ADDRESS, OWNER.
    let out = d.ctl(&["rpc", "list", "--ns", "knfsd"])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines.first().map(Vec::as_slice),
        Some(&["NS", "PROG/VERS", "NETID", "ADDRESS", "OWNER"][..])
    );
    assert!(
        lines
            .iter()
            .any(|l| l.as_slice() == ["knfsd", "100003/3", "tcp6", "::.8.1", "superuser"]),
        "{text}"
    );
    // GETPORT as lockd asks it, over UDP.
    let r = ns.run_in(|| {
        udp_call(
            lo111(),
            &call(9, PMAP, 2, 3, Cred::None, &pmap(100_021, 4, 17, 0)),
            Duration::from_secs(1),
        )
    })?;
    assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(40_000));
    // v4 UNSET with an empty netid and address removes every netid.
    for prog in [100_003, 100_021] {
        let vers = if prog == 100_003 { 3 } else { 4 };
        let r = local_v4(&ns, 2, rpcb(prog, vers, "", "", "0"))?;
        assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1));
    }
    let rows = ctl_rows(&d, "knfsd")?;
    assert!(
        !has_prog(&rows, 100_003) && !has_prog(&rows, 100_021),
        "{rows:?}"
    );
    Ok(())
}

#[test]
fn hundred_namespaces_keep_their_own_tables() -> anyhow::Result<()> {
    if !require_root("hundred_namespaces_keep_their_own_tables") {
        return Ok(());
    }
    let d = Daemon::start(ON)?;
    let mut all = Vec::new();
    for i in 0..100u32 {
        all.push(d.netns(&format!("iso{i}"))?);
    }
    for (i, ns) in (0u32..).zip(&all) {
        wait_up(ns)?;
        // Same program everywhere, a different port in each namespace; over loopback UDP.
        let port = 10_000 + i;
        let r = ns.run_in(move || {
            udp_call(
                lo111(),
                &call(i, PMAP, 2, 1, Cred::None, &pmap(300_000, 1, 17, port)),
                Duration::from_secs(1),
            )
        })?;
        assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1), "SET in {i}");
    }
    for (i, ns) in (0u32..).zip(&all) {
        let r = ns.run_in(|| {
            udp_call(
                lo111(),
                &call(5, PMAP, 2, 3, Cred::None, &pmap(300_000, 1, 17, 0)),
                Duration::from_secs(1),
            )
        })?;
        assert_eq!(
            r.as_ref().and_then(rpc::result_u32),
            Some(10_000 + i),
            "GETPORT in {}",
            ns.name
        );
    }
    // Removing it in one namespace leaves the other 99 alone.
    let r = all[0].run_in(|| {
        udp_call(
            lo111(),
            &call(6, PMAP, 2, 2, Cred::None, &pmap(300_000, 1, 17, 0)),
            Duration::from_secs(1),
        )
    })?;
    assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1));
    let list = d.ctl_json(&["rpc", "list"])?;
    let with = list
        .as_object()
        .map(|m| {
            m.values()
                .filter(|rows| {
                    rows.as_array()
                        .is_some_and(|r| r.iter().any(|e| e["prog"] == 300_000))
                })
                .count()
        })
        .unwrap_or(0);
    assert_eq!(with, 99);
    Ok(())
}

#[test]
fn set_from_afar_is_too_weak_and_foreign_unset_is_refused() -> anyhow::Result<()> {
    if !require_root("set_from_afar_is_too_weak_and_foreign_unset_is_refused") {
        return Ok(());
    }
    let d = Daemon::start(ON)?;
    let vs = d.netns("sec")?;
    let client_dir = tempfile::tempdir()?;
    let client = TestNetns::create(client_dir.path(), "client")?;
    veth(&vs, "sec0", "10.0.0.5/24", &client, "cl0", "10.0.0.9/24")?;
    wait_up(&vs)?;
    let far = SocketAddr::from(([10, 0, 0, 5], 111));
    const AUTH_TOOWEAK: u32 = 5;
    let (udp_set, tcp_set, udp_dump, getport) = client.run_in(move || {
        let t = Duration::from_secs(1);
        let udp_set = udp_call(
            far,
            &call(1, PMAP, 2, 1, Cred::None, &pmap(400_000, 1, 17, 999)),
            t,
        );
        let tcp_set = TcpStream::connect(far).ok().and_then(|mut s| {
            s.set_read_timeout(Some(t)).ok()?;
            stream_call(
                &mut s,
                &call(
                    2,
                    PMAP,
                    4,
                    1,
                    Cred::None,
                    &rpcb(400_000, 1, "tcp", "10.0.0.5.3.231", "0"),
                ),
            )
        });
        let udp_dump = udp_call(far, &call(3, PMAP, 2, 4, Cred::None, &[]), t);
        let getport = udp_call(
            far,
            &call(4, PMAP, 2, 3, Cred::None, &pmap(PMAP, 2, 17, 0)),
            t,
        );
        (udp_set, tcp_set, udp_dump, getport)
    })?;
    assert_eq!(udp_set, Some(Reply::AuthError(AUTH_TOOWEAK)));
    assert_eq!(tcp_set, Some(Reply::AuthError(AUTH_TOOWEAK)));
    assert_eq!(
        udp_dump,
        Some(Reply::AuthError(AUTH_TOOWEAK)),
        "UDP DUMP is loopback-only"
    );
    assert_eq!(getport.as_ref().and_then(rpc::result_u32), Some(111));
    assert!(!has_prog(&ctl_rows(&d, "sec")?, 400_000));
    // An entry owned by root (abstract socket) cannot be removed by an unprivileged loopback
    // caller (owner "unknown"), over UDP or TCP.
    local_v4(&vs, 1, rpcb(400_001, 1, "udp", "0.0.0.0.7.7", "0"))?;
    let (u2, u4) = vs.run_in(|| {
        let t = Duration::from_secs(1);
        let u2 = udp_call(
            lo111(),
            &call(5, PMAP, 2, 2, Cred::None, &pmap(400_001, 1, 17, 0)),
            t,
        );
        let u4 = TcpStream::connect(lo111()).ok().and_then(|mut s| {
            s.set_read_timeout(Some(t)).ok()?;
            stream_call(
                &mut s,
                &call(6, PMAP, 4, 2, Cred::None, &rpcb(400_001, 1, "", "", "")),
            )
        });
        (u2, u4)
    })?;
    // v2 UNSET tries tcp then udp and ORs the answers; rpcbind's map_unset answers TRUE when
    // nothing matched (tcp), so the v2 answer is TRUE although nothing is removed (as in
    // rpcbind). What counts is that the entry stays.
    assert_eq!(u2.as_ref().and_then(rpc::result_u32), Some(1), "{u2:?}");
    assert_eq!(u4.as_ref().and_then(rpc::result_u32), Some(0), "{u4:?}");
    assert!(has_prog(&ctl_rows(&d, "sec")?, 400_001));
    // The operator can.
    let out = d.ctl(&["rpc", "unset", "--ns", "sec", "400001", "1"])?;
    assert!(out.status.success(), "{out:?}");
    assert!(!has_prog(&ctl_rows(&d, "sec")?, 400_001));
    Ok(())
}

#[test]
fn kill9_under_load_loses_no_acknowledged_registration() -> anyhow::Result<()> {
    if !require_root("kill9_under_load_loses_no_acknowledged_registration") {
        return Ok(());
    }
    let mut d = Daemon::start(ON)?;
    let mut ns = d.netns("durable")?;
    let other = d.netns("bystander")?;
    wait_up(&ns)?;
    wait_up(&other)?;
    local_v4(&other, 1, rpcb(500_000, 1, "udp", "0.0.0.0.1.1", "0"))?;
    // A client registers as fast as it can over the abstract socket until the daemon dies.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = std::sync::Arc::clone(&stop);
    let path = ns.path.clone();
    let load = std::thread::spawn(move || {
        nsaux_tests::netns::in_netns_file(&path, move || {
            let mut acked = Vec::new();
            let mut s = connect_abstract(ABSTRACT).ok();
            let mut prog = 600_000u32;
            while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                let Some(sock) = s.as_mut() else { break };
                let uaddr = format!("0.0.0.0.{}.{}", (prog % 200) + 1, prog % 250);
                let r = stream_call(
                    sock,
                    &call(
                        prog,
                        PMAP,
                        4,
                        1,
                        Cred::None,
                        &rpcb(prog, 1, "udp", &uaddr, "0"),
                    ),
                );
                match r.as_ref().and_then(rpc::result_u32) {
                    Some(1) => acked.push(prog),
                    _ => break,
                }
                prog += 1;
            }
            acked
        })
    });
    std::thread::sleep(Duration::from_millis(400));
    d.kill9()?;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked = load
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    assert!(
        acked.len() > 20,
        "only {} registrations acknowledged",
        acked.len()
    );
    // Damage the journal tail the way a torn write would: a half line at the end.
    let journals: Vec<_> = journal_files(&d.state_dir());
    assert_eq!(journals.len(), 2, "{journals:?}");
    for j in &journals {
        let mut f = std::fs::OpenOptions::new().append(true).open(j)?;
        f.write_all(b"[\"S\",700000,1,\"udp\",\"0.0.0.0.1")?;
    }
    d.restart()?;
    let rows = wait_for("registrations restored", Duration::from_secs(5), || {
        ctl_rows(&d, "durable")
            .ok()
            .filter(|r| r.iter().filter(|e| e.0 >= 600_000).count() >= acked.len())
    })?;
    for p in &acked {
        assert!(
            has_prog(&rows, u64::from(*p)),
            "acknowledged {p} lost after kill -9"
        );
    }
    assert!(!has_prog(&rows, 700_000));
    assert!(d.log().contains("journal damaged"), "damage must be logged");
    assert!(has_prog(&ctl_rows(&d, "bystander")?, 500_000));
    assert!(!has_prog(&ctl_rows(&d, "bystander")?, 600_000));
    // The restored table answers lookups.
    wait_up(&ns)?;
    let first = acked[0];
    let r = ns.run_in(move || {
        udp_call(
            lo111(),
            &call(1, PMAP, 2, 3, Cred::None, &pmap(first, 1, 17, 0)),
            Duration::from_secs(1),
        )
    })?;
    assert!(r.as_ref().and_then(rpc::result_u32).is_some_and(|p| p > 0));
    // A namespace re-created under the same name is a new namespace: it starts empty, and the
    // old journal is gone.
    ns.delete()?;
    wait_for("namespace gone", Duration::from_secs(5), || {
        d.ns("durable").ok().flatten().is_none().then_some(())
    })?;
    wait_for("journal deleted", Duration::from_secs(5), || {
        (journal_files(&d.state_dir()).len() == 1).then_some(())
    })?;
    let again = d.netns("durable")?;
    wait_up(&again)?;
    let rows = ctl_rows(&d, "durable")?;
    assert!(rows.iter().all(|r| r.0 == u64::from(PMAP)), "{rows:?}");
    Ok(())
}

#[test]
fn malformed_input_gets_correct_refusals_and_service_continues() -> anyhow::Result<()> {
    if !require_root("malformed_input_gets_correct_refusals_and_service_continues") {
        return Ok(());
    }
    let d = Daemon::start(ON)?;
    let ns = d.netns("fuzz")?;
    wait_up(&ns)?;
    let results = ns.run_in(|| {
        let t = Duration::from_millis(300);
        let mut r = Vec::new();
        let mut bad_vers = call(1, PMAP, 2, 0, Cred::None, &[]);
        bad_vers[8..12].copy_from_slice(&3u32.to_be_bytes());
        let huge = vec![b'x'; 9001];
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated header", null_v2()[..10].to_vec()),
            ("empty", Vec::new()),
            ("rpc version 3", bad_vers),
            ("prog 100001", call(1, 100_001, 2, 0, Cred::None, &[])),
            ("vers 9", call(1, PMAP, 9, 0, Cred::None, &[])),
            ("proc 99", call(1, PMAP, 4, 99, Cred::None, &[])),
            (
                "oversized netid",
                call(
                    1,
                    PMAP,
                    4,
                    3,
                    Cred::None,
                    &Xdr::default()
                        .u32(100_003)
                        .u32(3)
                        .string(&huge)
                        .string(b"")
                        .string(b"")
                        .0,
                ),
            ),
            (
                "truncated args",
                call(1, PMAP, 2, 3, Cred::None, &[0, 1, 134]),
            ),
            (
                "string length past the end",
                call(
                    1,
                    PMAP,
                    3,
                    3,
                    Cred::None,
                    &Xdr::default().u32(1).u32(1).u32(0xffff_fff0).0,
                ),
            ),
        ];
        for (what, msg) in cases {
            let reply = udp_call(lo111(), &msg, t);
            let alive = udp_call(lo111(), &null_v2(), t).is_some();
            r.push((what.to_owned(), reply, alive));
        }
        // Streams: a fragment header claiming 2 GiB, and one that is not the last forever.
        let mut stream_results = Vec::new();
        for (what, bytes) in [
            ("huge fragment", 0xffff_fff0u32.to_be_bytes().to_vec()),
            ("2^31-1 non-last", 0x7fff_ffffu32.to_be_bytes().to_vec()),
        ] {
            let end = TcpStream::connect(lo111()).ok().map(|mut s| {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(&bytes);
                read_end(&mut s)
            });
            stream_results.push((what.to_owned(), end));
        }
        // A valid call split over three fragments and two writes is answered.
        let multi = TcpStream::connect(lo111()).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let m = null_v2();
            let (a, rest) = m.split_at(10);
            let (b, c) = rest.split_at(10);
            let mut wire = Vec::new();
            for (part, last) in [(a, false), (b, false), (c, true)] {
                let h = u32::try_from(part.len()).ok()? | if last { 0x8000_0000 } else { 0 };
                wire.extend_from_slice(&h.to_be_bytes());
                wire.extend_from_slice(part);
            }
            s.write_all(&wire[..7]).ok()?;
            std::thread::sleep(Duration::from_millis(20));
            s.write_all(&wire[7..]).ok()?;
            rpc::read_record(&mut s).and_then(|b| rpc::parse_reply(&b))
        });
        (r, stream_results, multi)
    })?;
    let (udp, streams, multi) = results;
    const GARBAGE_ARGS: u32 = 4;
    for (what, reply, alive) in &udp {
        assert!(alive, "daemon stopped answering after {what}");
        let want = match what.as_str() {
            "truncated header" | "empty" => None,
            "rpc version 3" => Some(Reply::RpcMismatch(2, 2)),
            "prog 100001" => Some(Reply::Accepted(1, Vec::new())),
            "vers 9" => Some(Reply::Accepted(2, Xdr::default().u32(2).u32(4).0)),
            "proc 99" => Some(Reply::Accepted(3, Vec::new())),
            _ => Some(Reply::Accepted(GARBAGE_ARGS, Vec::new())),
        };
        assert_eq!(reply, &want, "{what}");
    }
    for (what, end) in &streams {
        assert!(
            end.is_some_and(ReadEnd::closed),
            "{what}: connection must be closed (EOF or reset): {end:?}"
        );
    }
    assert!(
        matches!(multi, Some((1, Reply::Accepted(0, _)))),
        "{multi:?}"
    );
    assert!(ns.sh("rpcinfo -T tcp 127.0.0.1 100000 4").is_ok());
    Ok(())
}

#[test]
fn idle_connections_time_out_and_the_cap_holds() -> anyhow::Result<()> {
    if !require_root("idle_connections_time_out_and_the_cap_holds") {
        return Ok(());
    }
    // Issue 10: local callers (AF_LOCAL and loopback TCP) have their own budget, and at the
    // budget the longest-idle connection is closed to admit the newcomer (no refusal).
    let d = Daemon::start(
        "[rpcbind]\nenabled = true\nmax_local_connections = 3\nidle_timeout_secs = 1\n",
    )?;
    let ns = d.netns("cap")?;
    wait_up(&ns)?;
    // Let the probe connections of wait_up close.
    std::thread::sleep(Duration::from_millis(200));
    let (held_ok, extra_end, later_closed, after) = ns
        .run_in(|| {
            let mut held: Vec<TcpStream> = (0..2)
                .filter_map(|_| TcpStream::connect(lo111()).ok())
                .collect();
            let mut local: UnixStream = connect_abstract(ABSTRACT).ok()?;
            let held_ok = stream_call(&mut local, &null_v2()).is_some()
                && held
                    .iter_mut()
                    .all(|s| stream_call(s, &null_v2()).is_some());
            // A fourth connection (TCP + local count together) is served, and the one that
            // completed a call longest ago (the AF_LOCAL one) is closed to make room.
            let extra_served = TcpStream::connect(lo111()).ok().is_some_and(|mut s| {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                stream_call(&mut s, &null_v2()).is_some()
            });
            let _ = local.set_read_timeout(Some(Duration::from_millis(500)));
            let extra_end = extra_served.then(|| read_end(&mut local));
            // Idle ones are closed after the timeout.
            let start = Instant::now();
            let later_closed = held.iter_mut().all(|s| {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                read_end(s) == ReadEnd::Eof
            }) && start.elapsed() < Duration::from_secs(4);
            std::thread::sleep(Duration::from_millis(200));
            let after = TcpStream::connect(lo111())
                .ok()
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
                    stream_call(&mut s, &null_v2())
                })
                .is_some();
            Some((held_ok, extra_end, later_closed, after))
        })?
        .ok_or_else(|| anyhow::anyhow!("abstract connect failed"))?;
    assert!(held_ok);
    assert!(
        extra_end.is_some_and(ReadEnd::closed),
        "a newcomer over the cap must be served and the longest-idle connection closed \
         (EOF or reset): {extra_end:?}"
    );
    assert!(later_closed, "idle connections must be closed after 1 s");
    assert!(after, "slots are freed again");
    Ok(())
}

#[test]
fn port_111_held_by_stock_rpcbind_is_reported_with_namespace_and_address() -> anyhow::Result<()> {
    if !require(
        "port_111_held_by_stock_rpcbind_is_reported_with_namespace_and_address",
        &["rpcbind"],
    ) {
        return Ok(());
    }
    let d = Daemon::start(ON)?;
    let staging = tempfile::tempdir()?;
    let busy = TestNetns::create(staging.path(), "busy")?;
    // Stock rpcbind only ever in its own network namespace and a private mount namespace with a
    // tmpfs on /run (its lock, socket and state go there), in the foreground, no warm start.
    let mut stock = spawn_stock_rpcbind(&busy)?;
    let up = wait_for("stock rpcbind up", Duration::from_secs(5), || {
        busy.sh("rpcinfo -T udp 127.0.0.1 100000 2").ok()
    });
    let result = (|| -> anyhow::Result<()> {
        up?;
        let inside = d.netns_dir().join("busy");
        std::fs::File::create(&inside)?;
        nix::mount::mount(
            Some(&busy.path),
            &inside,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )?;
        let entry = wait_for("busy listed", Duration::from_secs(5), || {
            d.ns("busy").ok().flatten()
        })?;
        let errors: Vec<String> = entry["services"]["rpcbind"]["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["state"] == "failed")
            .filter_map(|l| l["error"].as_str().map(String::from))
            .collect();
        assert!(
            errors.iter().any(|e| e
                == "udp:0.0.0.0:111 in namespace \"busy\": address in use (another program holds it)"),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("tcp:0.0.0.0:111 in namespace \"busy\""))
        );
        let _ = nix::mount::umount2(&inside, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&inside);
        Ok(())
    })();
    let _ = stock.kill();
    let _ = stock.wait();
    result
}

/// A fake UDP RPC server on 127.0.0.1: answers every call with SUCCESS and `result` (echoing
/// the xid) until `stop`; returns the sources it heard from.
fn fake_server(
    sock: std::net::UdpSocket,
    result: Vec<u8>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<SocketAddr>> {
    std::thread::spawn(move || {
        let mut heard = Vec::new();
        let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
        let mut buf = [0u8; 2048];
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if n < 8 || buf[4..8] != [0, 0, 0, 0] {
                continue;
            }
            heard.push(from);
            let mut reply = buf[..4].to_vec();
            reply.extend_from_slice(&Xdr::default().u32(1).u32(0).u32(0).u32(0).u32(0).0);
            reply.extend_from_slice(&result);
            let _ = sock.send_to(&reply, from);
        }
        heard
    })
}

#[test]
fn remote_calls_are_off_by_default_and_stay_inside_the_namespace_when_on() -> anyhow::Result<()> {
    if !require_root("remote_calls_are_off_by_default_and_stay_inside_the_namespace_when_on") {
        return Ok(());
    }
    let d = Daemon::start(
        "[rpcbind]\nenabled = true\n\n[[netns]]\nmatch = \"rc-on\"\nrpcbind = { remote_calls = true }\n",
    )?;
    let mut answers = Vec::new();
    for name in ["rc-off", "rc-on"] {
        let ns = d.netns(name)?;
        wait_up(&ns)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = std::sync::Arc::clone(&stop);
        let (server, port) = ns.run_in(move || -> anyhow::Result<_> {
            let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
            let port = s.local_addr()?.port();
            Ok((fake_server(s, Xdr::default().u32(42).0, stop2), port))
        })??;
        let (set, callit, indirect) = ns.run_in(move || {
            let t = Duration::from_secs(1);
            let set = udp_call(
                lo111(),
                &call(
                    1,
                    PMAP,
                    2,
                    1,
                    Cred::None,
                    &pmap(400_100, 1, 17, u32::from(port)),
                ),
                t,
            );
            let args = Xdr::default().u32(400_100).u32(1).u32(0).string(&[]).0;
            let callit = udp_call(lo111(), &call(2, PMAP, 2, 5, Cred::None, &args), t);
            let indirect = udp_call(lo111(), &call(3, PMAP, 4, 10, Cred::None, &args), t);
            (set, callit, indirect)
        })?;
        let heard = stop_fake_server(&stop, server)?;
        assert_eq!(set.as_ref().and_then(rpc::result_u32), Some(1));
        answers.push((name, callit, indirect, heard, port));
    }
    const SYSTEM_ERR: u32 = 5;
    let (_, callit, indirect, heard, _) = &answers[0];
    assert_eq!(callit, &None, "CALLIT is silent when remote calls are off");
    assert_eq!(indirect, &Some(Reply::Accepted(SYSTEM_ERR, Vec::new())));
    assert!(heard.is_empty(), "nothing forwarded when off");
    let (_, callit, indirect, heard, port) = &answers[1];
    // v2 CALLIT reply: the port, then the opaque results (u32 42).
    let want = Xdr::default()
        .u32(u32::from(*port))
        .string(&Xdr::default().u32(42).0)
        .0;
    assert_eq!(callit, &Some(Reply::Accepted(0, want)));
    assert!(
        matches!(indirect, Some(Reply::Accepted(0, _))),
        "{indirect:?}"
    );
    assert!(!heard.is_empty());
    assert!(
        heard
            .iter()
            .all(|a| *a == SocketAddr::from(([127, 0, 0, 1], 111))),
        "forwarded from the namespace's own port 111: {heard:?}"
    );
    Ok(())
}

/// A daemon probing registrations every second (two misses prune), one served namespace, and
/// the stop flag for the fake services a pruning test runs in it.
fn pruning_daemon(
    name: &str,
) -> anyhow::Result<(
    Daemon,
    TestNetns,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
)> {
    let d = Daemon::start(
        "[rpcbind]\nenabled = true\nprune = true\nprune_interval_secs = 1\nprune_after_misses = 2\n",
    )?;
    let ns = d.netns(name)?;
    wait_up(&ns)?;
    Ok((
        d,
        ns,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    ))
}

/// Stops a fake service started with `stop` and returns what it recorded.
fn stop_fake_server<T>(
    stop: &std::sync::atomic::AtomicBool,
    server: std::thread::JoinHandle<T>,
) -> anyhow::Result<T> {
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    server
        .join()
        .map_err(|_| anyhow::anyhow!("fake server panicked"))
}

#[test]
fn liveness_pruning_removes_silent_services_only() -> anyhow::Result<()> {
    if !require_root("liveness_pruning_removes_silent_services_only") {
        return Ok(());
    }
    let (d, ns, stop) = pruning_daemon("prune")?;
    let stop2 = std::sync::Arc::clone(&stop);
    let (server, alive, dead) = ns.run_in(move || -> anyhow::Result<_> {
        let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let alive = s.local_addr()?.port();
        // A port nobody listens on.
        let dead = std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        Ok((fake_server(s, Vec::new(), stop2), alive, dead))
    })??;
    for (prog, port) in [(400_200, alive), (400_201, dead)] {
        let r = ns.run_in(move || {
            udp_call(
                lo111(),
                &call(
                    1,
                    PMAP,
                    2,
                    1,
                    Cred::None,
                    &pmap(prog, 1, 17, u32::from(port)),
                ),
                Duration::from_secs(1),
            )
        })?;
        assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1));
    }
    let result = wait_for("silent service pruned", Duration::from_secs(10), || {
        ctl_rows(&d, "prune").ok().filter(|r| !has_prog(r, 400_201))
    });
    std::thread::sleep(Duration::from_millis(1500));
    let rows = ctl_rows(&d, "prune")?;
    let heard = stop_fake_server(&stop, server)?;
    result?;
    assert!(has_prog(&rows, 400_200), "a live service is kept: {rows:?}");
    assert!(heard.len() >= 2, "the live service was probed: {heard:?}");
    assert!(d.log().contains("stopped answering"));
    Ok(())
}

#[test]
fn path_socket_held_by_another_portmapper_is_reported_then_taken_when_stale() -> anyhow::Result<()>
{
    if !require_root("path_socket_held_by_another_portmapper_is_reported_then_taken_when_stale") {
        return Ok(());
    }
    // Someone else answers on the path before the daemon starts.
    let (d, other) = Daemon::start_after(ON, |dir| {
        Ok(std::os::unix::net::UnixListener::bind(
            dir.join("rpcbind.sock"),
        )?)
    })?;
    let ns = d.netns("p1")?;
    wait_up(&ns)?;
    let status = wait_for("path status", Duration::from_secs(5), || {
        let e = d.ns("p1").ok().flatten()?;
        let s = e["services"]["rpcbind"]["status"]["local_path"]
            .as_str()?
            .to_owned();
        s.contains("held by another portmapper").then_some(s)
    })?;
    assert!(
        status.starts_with(&d.rpcbind_socket().display().to_string()),
        "{status}"
    );
    assert!(d.log().contains("cannot serve the rpcbind path socket"));
    // The other one exits and leaves a stale socket file: it is replaced on the next retry.
    drop(other);
    wait_for("path taken over", Duration::from_secs(10), || {
        let e = d.ns("p1").ok().flatten()?;
        e["services"]["rpcbind"]["status"]["local_path"]
            .as_str()?
            .ends_with("listening")
            .then_some(())
    })?;
    let out = in_private_run(&ns.path, &d.rpcbind_socket(), "rpcinfo -s")?;
    assert!(stdout(&out).contains("portmapper"), "{out:?}");
    Ok(())
}

#[test]
fn registration_cap_and_statistics_are_per_namespace() -> anyhow::Result<()> {
    if !require_root("registration_cap_and_statistics_are_per_namespace") {
        return Ok(());
    }
    // 12 self registrations + 2.
    let d = Daemon::start("[rpcbind]\nenabled = true\nmax_registrations = 14\n")?;
    let a = d.netns("cap-a")?;
    let b = d.netns("cap-b")?;
    wait_up(&a)?;
    wait_up(&b)?;
    let mut answers = Vec::new();
    for prog in [410_000, 410_001, 410_002] {
        let r = local_v4(&a, 1, rpcb(prog, 1, "udp", "0.0.0.0.9.9", "0"))?;
        answers.push(r.as_ref().and_then(rpc::result_u32));
    }
    assert_eq!(
        answers,
        [Some(1), Some(1), Some(0)],
        "the third SET is over the cap"
    );
    // The other namespace has its own cap.
    let r = local_v4(&b, 1, rpcb(410_002, 1, "udp", "0.0.0.0.9.9", "0"))?;
    assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1));
    let stats = d.ctl_json(&["rpc", "stats"])?;
    let v4_sets = |ns: &str| stats[ns]["by_version"][2]["set"].as_i64();
    assert_eq!(v4_sets("cap-a"), Some(2), "{stats}");
    assert_eq!(v4_sets("cap-b"), Some(1), "{stats}");
    assert_eq!(stats["cap-a"]["registrations"], 14);
    Ok(())
}

/// A fake TCP RPC server on a listener of the test: answers every call on every connection
/// with SUCCESS and no result (echoing the xid) until `stop`; returns how many calls it
/// answered.
fn fake_tcp_server(
    listener: std::net::TcpListener,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut answered = 0;
        if listener.set_nonblocking(true).is_err() {
            return 0;
        }
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let Ok((mut conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            if conn.set_nonblocking(false).is_err()
                || conn
                    .set_read_timeout(Some(Duration::from_millis(500)))
                    .is_err()
            {
                continue;
            }
            while let Some(rec) = rpc::read_record(&mut conn) {
                if rec.len() < 8 || rec[4..8] != [0, 0, 0, 0] {
                    break;
                }
                let mut reply = rec[..4].to_vec();
                reply.extend_from_slice(&Xdr::default().u32(1).u32(0).u32(0).u32(0).u32(0).0);
                if conn.write_all(&rpc::frame(&reply)).is_err() {
                    break;
                }
                answered += 1;
            }
        }
        answered
    })
}

#[test]
fn liveness_pruning_covers_tcp_only_registrations() -> anyhow::Result<()> {
    if !require(
        "liveness_pruning_covers_tcp_only_registrations",
        &["rpcinfo"],
    ) {
        return Ok(());
    }
    let (d, ns, stop) = pruning_daemon("prune-tcp")?;
    let stop2 = std::sync::Arc::clone(&stop);
    let (server, alive, dead) = ns.run_in(move || -> anyhow::Result<_> {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let alive = l.local_addr()?.port();
        // A port nobody listens on (bound, then closed).
        let dead = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        Ok((fake_tcp_server(l, stop2), alive, dead))
    })??;
    // Registered over TCP only, as a TCP-only service would (no udp entry to probe).
    for (prog, port) in [(400_300u32, alive), (400_301, dead)] {
        let uaddr = format!("0.0.0.0.{}.{}", port >> 8, port & 0xff);
        let r = local_v4(&ns, 1, rpcb(prog, 1, "tcp", &uaddr, "0"))?;
        assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1), "{r:?}");
    }
    let rpcinfo_p = || -> anyhow::Result<Vec<(u32, u32, String, u16)>> {
        Ok(pmap_rows(&stdout(&ns.sh("rpcinfo -p 127.0.0.1")?)))
    };
    let before = rpcinfo_p()?;
    assert!(
        before.contains(&(400_300, 1, "tcp".into(), alive))
            && before.contains(&(400_301, 1, "tcp".into(), dead)),
        "{before:?}"
    );
    let result = wait_for("silent TCP service pruned", Duration::from_secs(10), || {
        rpcinfo_p()
            .ok()
            .filter(|r| !r.iter().any(|e| e.0 == 400_301))
    });
    // A few more rounds: the live one must survive them.
    std::thread::sleep(Duration::from_millis(2500));
    let rows = rpcinfo_p()?;
    let answered = stop_fake_server(&stop, server)?;
    result?;
    assert!(
        rows.contains(&(400_300, 1, "tcp".into(), alive)),
        "a live TCP service is kept: {rows:?}"
    );
    assert!(
        answered >= 2,
        "the live service was probed over TCP: {answered}"
    );
    let log = d.log();
    assert!(
        log.lines().any(|l| l.contains("stopped answering")
            && l.contains("netid=tcp")
            && l.contains("prog=400301")),
        "{log}"
    );
    Ok(())
}

#[test]
fn failed_journal_write_is_not_acknowledged_and_service_continues() -> anyhow::Result<()> {
    if !require(
        "failed_journal_write_is_not_acknowledged_and_service_continues",
        &["rpcinfo"],
    ) {
        return Ok(());
    }
    let d = Daemon::start(ON)?;
    let ns = d.netns("jfail")?;
    let other = d.netns("jfail-bystander")?;
    wait_up(&ns)?;
    wait_up(&other)?;
    let r = local_v4(&ns, 1, rpcb(420_000, 1, "udp", "0.0.0.0.8.8", "0"))?;
    assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1));
    // Its journal now exists; a directory in its place makes every append fail (EISDIR), even
    // for root, whom file modes do not stop.
    let journals = journal_files(&d.state_dir());
    assert_eq!(journals.len(), 1, "{journals:?}");
    let journal = journals[0].clone();
    std::fs::remove_file(&journal)?;
    std::fs::create_dir(&journal)?;
    // v2 SET over UDP and v4 SET over the abstract socket: neither is acknowledged.
    let (udp_set, local_set) = ns.run_in(|| {
        let udp = udp_call(
            lo111(),
            &call(1, PMAP, 2, 1, Cred::None, &pmap(420_001, 1, 17, 2049)),
            Duration::from_secs(1),
        );
        let local = connect_abstract(ABSTRACT).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
            stream_call(
                &mut s,
                &call(
                    2,
                    PMAP,
                    4,
                    1,
                    Cred::None,
                    &rpcb(420_002, 1, "tcp", "0.0.0.0.8.9", "0"),
                ),
            )
        });
        (udp, local)
    })?;
    assert_eq!(udp_set, None, "a SET that was not journaled gets no reply");
    assert_eq!(
        local_set, None,
        "a SET that was not journaled gets no reply"
    );
    // Rolled back: DUMP (rpcinfo -p, v2 over TCP) and the v4 table show neither.
    let rows = pmap_rows(&stdout(&ns.sh("rpcinfo -p 127.0.0.1")?));
    assert!(rows.iter().any(|r| r.0 == 420_000), "{rows:?}");
    assert!(
        !rows.iter().any(|r| r.0 == 420_001 || r.0 == 420_002),
        "{rows:?}"
    );
    let ctl = ctl_rows(&d, "jfail")?;
    assert!(
        !has_prog(&ctl, 420_001) && !has_prog(&ctl, 420_002),
        "{ctl:?}"
    );
    // Logged with the namespace.
    let log = d.log();
    assert!(
        log.lines()
            .filter(
                |l| l.contains("cannot journal a registration change") && l.contains("netns=jfail")
            )
            .count()
            >= 2,
        "{log}"
    );
    // The daemon keeps serving: lookups here, registrations in another namespace.
    let getport = ns.run_in(|| {
        udp_call(
            lo111(),
            &call(3, PMAP, 2, 3, Cred::None, &pmap(420_000, 1, 17, 0)),
            Duration::from_secs(1),
        )
    })?;
    assert_eq!(getport.as_ref().and_then(rpc::result_u32), Some(0x0808));
    let r = local_v4(&other, 1, rpcb(420_003, 1, "udp", "0.0.0.0.8.10", "0"))?;
    assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1));
    // Once the journal can be written again, the same SET succeeds and is journaled.
    std::fs::remove_dir(&journal)?;
    let r = ns.run_in(|| {
        udp_call(
            lo111(),
            &call(4, PMAP, 2, 1, Cred::None, &pmap(420_001, 1, 17, 2049)),
            Duration::from_secs(1),
        )
    })?;
    assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1), "{r:?}");
    assert!(std::fs::read_to_string(&journal)?.contains("420001"));
    assert!(has_prog(&ctl_rows(&d, "jfail")?, 420_001));
    Ok(())
}

/// A v2 UNSET over UDP (`pmap_unset`, as daemons call it at exit).
fn udp_unset_v2(ns: &TestNetns, xid: u32, prog: u32) -> anyhow::Result<Option<Reply>> {
    ns.run_in(move || {
        udp_call(
            lo111(),
            &call(xid, PMAP, 2, 2, Cred::None, &pmap(prog, 1, 0, 0)),
            Duration::from_secs(1),
        )
    })
}

#[test]
fn failed_journal_write_of_unset_is_not_acknowledged_and_replay_matches() -> anyhow::Result<()> {
    let name = "failed_journal_write_of_unset_is_not_acknowledged_and_replay_matches";
    if !require(name, &["rpcinfo"]) {
        return Ok(());
    }
    let mut d = Daemon::start(ON)?;
    let ns = d.netns("junset")?;
    wait_up(&ns)?;
    // 441_000 on tcp and udp with 441_001 between them, so the v2 UNSET removes two entries
    // from two places; 441_002 for a v4 UNSET, 441_003 for the operator.
    for (xid, prog, prot, port) in [
        (1, 441_000, 6, 2049),
        (2, 441_001, 17, 900),
        (3, 441_000, 17, 2049),
        (4, 441_003, 17, 901),
    ] {
        let r = ns.run_in(move || {
            udp_call(
                lo111(),
                &call(xid, PMAP, 2, 1, Cred::None, &pmap(prog, 1, prot, port)),
                Duration::from_secs(1),
            )
        })?;
        assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1), "{r:?}");
    }
    let r = local_v4(&ns, 1, rpcb(441_002, 1, "tcp6", "::.8.9", "0"))?;
    assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1));
    // DUMP in table order (v2 and v3), and the owners.
    let dump_v2 = || -> anyhow::Result<String> { Ok(stdout(&ns.sh("rpcinfo -p 127.0.0.1")?)) };
    let dump_v3 = || -> anyhow::Result<String> { Ok(stdout(&ns.sh("rpcinfo 127.0.0.1")?)) };
    let (v2_before, v3_before) = (dump_v2()?, dump_v3()?);
    let ctl_before = ctl_rows(&d, "junset")?;
    assert!(has_prog(&ctl_before, 441_002), "{ctl_before:?}");
    // Break the journal (a directory in its place: every write fails, even for root).
    let journals = journal_files(&d.state_dir());
    assert_eq!(journals.len(), 1, "{journals:?}");
    let journal = journals[0].clone();
    std::fs::remove_file(&journal)?;
    std::fs::create_dir(&journal)?;
    // No reply to either UNSET, the operator is refused, and nothing is removed: not even
    // moved, the dumps are byte for byte the same (lookups depend on the order).
    assert_eq!(udp_unset_v2(&ns, 5, 441_000)?, None, "unjournaled v2 UNSET");
    let r = ns.run_in(|| {
        let mut s = connect_abstract(ABSTRACT).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let unset = rpcb(441_002, 1, "tcp6", "", "");
        stream_call(&mut s, &call(7, PMAP, 4, 2, Cred::None, &unset))
    })?;
    assert_eq!(r, None, "unjournaled v4 UNSET");
    let out = d.ctl(&["rpc", "unset", "--ns", "junset", "441003", "1"])?;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot write the journal"),
        "{out:?}"
    );
    let rows = pmap_rows(&dump_v2()?);
    for (prog, proto) in [(441_000, "tcp"), (441_000, "udp"), (441_003, "udp")] {
        assert!(
            rows.iter().any(|r| r.0 == prog && r.2 == proto),
            "{prog}/{proto} still registered: {rows:?}"
        );
    }
    assert_eq!(dump_v2()?, v2_before);
    assert_eq!(dump_v3()?, v3_before);
    assert_eq!(ctl_rows(&d, "junset")?, ctl_before);
    let log = d.log();
    assert!(
        log.lines()
            .filter(|l| l.contains("cannot journal a registration change")
                && l.contains("netns=junset"))
            .count()
            >= 2,
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("cannot journal an operator unset") && l.contains("netns=junset")),
        "{log}"
    );
    // The clients retry once the journal can be written again: now they are answered.
    std::fs::remove_dir(&journal)?;
    let r = udp_unset_v2(&ns, 6, 441_000)?;
    assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1), "{r:?}");
    let r = local_v4(&ns, 2, rpcb(441_002, 1, "tcp6", "", ""))?;
    assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1), "{r:?}");
    let rows = pmap_rows(&dump_v2()?);
    assert!(!rows.iter().any(|r| r.0 == 441_000), "{rows:?}");
    assert!(rows.iter().any(|r| r.0 == 441_001), "{rows:?}");
    assert!(rows.iter().any(|r| r.0 == 441_003), "{rows:?}");
    let acked = ctl_rows(&d, "junset")?;
    assert!(!has_prog(&acked, 441_002), "{acked:?}");
    let v3_acked = dump_v3()?;
    // After kill -9 the replay rebuilds exactly what was acknowledged: the failed UNSETs do
    // not count, the answered ones do. (The first write after the failure rewrote the whole
    // file, so the registrations whose lines went with the broken file are there too.)
    d.kill9()?;
    d.restart()?;
    wait_up(&ns)?;
    let replayed = wait_for("registrations restored", Duration::from_secs(5), || {
        ctl_rows(&d, "junset").ok().filter(|r| has_prog(r, 441_001))
    })?;
    assert_eq!(replayed, acked);
    assert_eq!(dump_v3()?, v3_acked, "same table, same order");
    Ok(())
}

#[test]
fn failed_journal_write_of_a_liveness_removal_keeps_the_registration() -> anyhow::Result<()> {
    if !require_root("failed_journal_write_of_a_liveness_removal_keeps_the_registration") {
        return Ok(());
    }
    let mut d = Daemon::start(
        "[rpcbind]\nenabled = true\nprune = true\nprune_interval_secs = 1\nprune_after_misses = 2\n",
    )?;
    let ns = d.netns("jprune")?;
    wait_up(&ns)?;
    // A UDP registration at a port nobody listens on: silent, so due for removal.
    let r = ns.run_in(|| -> anyhow::Result<_> {
        let dead = std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        Ok(udp_call(
            lo111(),
            &call(
                1,
                PMAP,
                2,
                1,
                Cred::None,
                &pmap(441_100, 1, 17, u32::from(dead)),
            ),
            Duration::from_secs(1),
        ))
    })??;
    assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1));
    let journals = journal_files(&d.state_dir());
    assert_eq!(journals.len(), 1, "{journals:?}");
    let journal = journals[0].clone();
    std::fs::remove_file(&journal)?;
    std::fs::create_dir(&journal)?;
    // The removal cannot be journaled: the registration is kept (a removal in memory only would
    // come back at the next restart), and the error is logged with the namespace.
    wait_for("failed removal logged", Duration::from_secs(10), || {
        d.log()
            .lines()
            .any(|l| {
                l.contains("cannot journal the removal of silent registrations")
                    && l.contains("netns=jprune")
            })
            .then_some(())
    })?;
    assert!(has_prog(&ctl_rows(&d, "jprune")?, 441_100));
    // Writable again: the next round removes it for good, across a restart too.
    std::fs::remove_dir(&journal)?;
    wait_for("silent service pruned", Duration::from_secs(10), || {
        ctl_rows(&d, "jprune")
            .ok()
            .filter(|r| !has_prog(r, 441_100))
    })?;
    d.kill9()?;
    d.restart()?;
    wait_up(&ns)?;
    let rows = wait_for("namespace found again", Duration::from_secs(5), || {
        ctl_rows(&d, "jprune").ok().filter(|r| !r.is_empty())
    })?;
    assert!(!has_prog(&rows, 441_100), "{rows:?}");
    Ok(())
}

#[test]
fn journals_of_namespaces_gone_while_down_are_swept() -> anyhow::Result<()> {
    if !require_root("journals_of_namespaces_gone_while_down_are_swept") {
        return Ok(());
    }
    let mut d = Daemon::start("[rpcbind]\nenabled = true\njournal_sweep_delay_secs = 3\n")?;
    let mut gone = d.netns("sw-gone")?;
    let stays = d.netns("sw-stays")?;
    wait_up(&gone)?;
    wait_up(&stays)?;
    for (ns, prog) in [(&gone, 430_000), (&stays, 430_001)] {
        let r = local_v4(ns, 1, rpcb(prog, 1, "udp", "0.0.0.0.8.8", "0"))?;
        assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1));
    }
    let cookie = |name: &str| -> anyhow::Result<u64> {
        d.ns(name)?
            .and_then(|n| n["id"].as_u64())
            .ok_or_else(|| anyhow::anyhow!("no id for {name}"))
    };
    let journal_of = |id: u64| {
        journal_files(&d.state_dir()).into_iter().find(|p| {
            p.file_name()
                .is_some_and(|f| *f == *format!("{id}.journal"))
        })
    };
    let gone_journal =
        journal_of(cookie("sw-gone")?).ok_or_else(|| anyhow::anyhow!("no journal for sw-gone"))?;
    let stays_journal = journal_of(cookie("sw-stays")?)
        .ok_or_else(|| anyhow::anyhow!("no journal for sw-stays"))?;
    // The daemon dies, and a namespace goes while it is down.
    d.kill9()?;
    gone.delete()?;
    d.restart()?;
    wait_up(&stays)?;
    assert!(
        gone_journal.exists(),
        "swept only after journal_sweep_delay_secs, once the namespaces present were found"
    );
    wait_for(
        "journal of the vanished namespace swept",
        Duration::from_secs(10),
        || (!gone_journal.exists()).then_some(()),
    )?;
    assert!(stays_journal.exists(), "a live namespace keeps its journal");
    assert!(has_prog(&ctl_rows(&d, "sw-stays")?, 430_001));
    assert!(
        d.log()
            .contains("removing the journal of a namespace that is gone")
    );
    // The kept journal is still the live one: a new registration lands in it.
    let r = local_v4(&stays, 1, rpcb(430_002, 1, "udp", "0.0.0.0.8.9", "0"))?;
    assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1));
    assert!(std::fs::read_to_string(&stays_journal)?.contains("430002"));
    Ok(())
}
