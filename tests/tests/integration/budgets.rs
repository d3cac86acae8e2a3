//! Budgets (issue 10 item 3): per-namespace byte caps on the registration table and the
//! journal, a journal on a full disk, and the daemon-wide memory ceiling. Each refusal must be
//! protocol-correct (SET answers FALSE, or no reply when the change cannot be made durable),
//! confined to the namespace that hit it, logged with the namespace, and never stop the daemon.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nsaux_tests::daemon::{Daemon, journal_files, wait_for};
use nsaux_tests::env::{require, require_root};
use nsaux_tests::netns::TestNetns;
use nsaux_tests::rpc::{
    self, Cred, PMAP, Reply, call, connect_abstract, rpcb, stream_call, wait_portmapper_udp,
};
use serde_json::Value;

const ABSTRACT: &str = "/run/rpcbind.sock";

/// Waits until the portmapper answers NULL over loopback UDP in `ns`.
fn wait_up(ns: &TestNetns) -> anyhow::Result<()> {
    wait_portmapper_udp(ns, &format!("portmapper in {}", ns.name))
}

/// A v4 SET over the abstract socket: the reply, or `None` when none came within 2 s.
fn set_v4(ns: &TestNetns, prog: u32, netid: &str, uaddr: &str) -> anyhow::Result<Option<Reply>> {
    let args = rpcb(prog, 1, netid, uaddr, "0");
    ns.run_in(move || {
        let mut s = connect_abstract(ABSTRACT).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream_call(&mut s, &call(prog, PMAP, 4, 1, Cred::None, &args))
    })
}

/// A v4 UNSET over the abstract socket; true when answered TRUE.
fn unset_v4(ns: &TestNetns, prog: u32) -> anyhow::Result<bool> {
    let args = rpcb(prog, 1, "", "", "0");
    let r = ns.run_in(move || {
        let mut s = connect_abstract(ABSTRACT).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream_call(&mut s, &call(prog, PMAP, 4, 2, Cred::None, &args))
    })?;
    Ok(r.as_ref().and_then(rpc::result_u32) == Some(1))
}

/// A long local address that any careful SET validation accepts (a socket path under 108
/// bytes), unique per program.
fn long_path(prog: u32) -> String {
    format!("/run/{}-{prog}.sock", "x".repeat(80))
}

/// The programs registered in `ns` at or above `from`, per `nsauxctl rpc list`.
fn progs(d: &Daemon, ns: &str, from: u64) -> anyhow::Result<Vec<u64>> {
    let v = d.ctl_json(&["rpc", "list", "--ns", ns])?;
    let mut p: Vec<u64> = v[ns]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["prog"].as_u64())
        .filter(|p| *p >= from)
        .collect();
    p.sort_unstable();
    p.dedup();
    Ok(p)
}

/// The portmapper's status in `ns list --json` for namespace `name`.
fn rpcbind_status(d: &Daemon, name: &str) -> anyhow::Result<Value> {
    let ns = d
        .ns(name)?
        .ok_or_else(|| anyhow::anyhow!("namespace {name} not listed"))?;
    Ok(ns["services"]["rpcbind"]["status"].clone())
}

/// The journal of the namespace whose file mentions `prog`.
fn journal_with(dir: &Path, prog: u32) -> Option<PathBuf> {
    journal_files(dir)
        .into_iter()
        .find(|j| std::fs::read_to_string(j).is_ok_and(|t| t.contains(&format!(",{prog},"))))
}

/// Floods `ns` with SETs of long addresses from program `first` on, until `refusals` SETs in
/// a row were refused or `max` were sent. Returns (acknowledged programs, replies that were
/// neither TRUE nor FALSE).
fn flood(ns: &TestNetns, first: u32, max: u32, refusals: u32) -> anyhow::Result<(Vec<u32>, u32)> {
    let (mut acked, mut odd, mut in_a_row) = (Vec::new(), 0, 0);
    for prog in first..first + max {
        match set_v4(ns, prog, "local", &long_path(prog))?
            .as_ref()
            .and_then(rpc::result_u32)
        {
            Some(1) => {
                acked.push(prog);
                in_a_row = 0;
            }
            Some(0) => {
                in_a_row += 1;
                if in_a_row >= refusals {
                    break;
                }
            }
            _ => odd += 1,
        }
    }
    Ok((acked, odd))
}

#[test]
fn set_flood_is_refused_in_its_namespace_and_the_journal_stays_bounded() -> anyhow::Result<()> {
    if !require(
        "set_flood_is_refused_in_its_namespace_and_the_journal_stays_bounded",
        &["rpcinfo"],
    ) {
        return Ok(());
    }
    // A: 24 KiB of registrations, a 12 KiB journal (the journal cap bites first); B: defaults.
    let mut d = Daemon::start(
        "[rpcbind]\nenabled = true\n\n[[netns]]\nmatch = \"bud-a\"\n\
         rpcbind = { max_registration_bytes = 24576, journal_max_bytes = 12288 }\n",
    )?;
    let a = d.netns("bud-a")?;
    let b = d.netns("bud-b")?;
    wait_up(&a)?;
    wait_up(&b)?;
    let (acked, odd) = flood(&a, 900_000, 400, 5)?;
    assert_eq!(odd, 0, "every SET in the flood is answered TRUE or FALSE");
    assert!(acked.len() > 20, "only {} acknowledged", acked.len());
    assert!(acked.len() < 395, "the flood was never refused");
    // B is not affected: it registers, and rpcinfo sees it.
    let r = set_v4(&b, 910_000, "udp", "0.0.0.0.8.8")?;
    assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1));
    let out = b.sh("rpcinfo -p 127.0.0.1")?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("910000"),
        "{out:?}"
    );
    // A's journal is bounded, in bytes; its status says why SETs are refused.
    let ja = journal_with(&d.state_dir(), acked[0])
        .ok_or_else(|| anyhow::anyhow!("no journal for A"))?;
    let size = std::fs::metadata(&ja)?.len();
    assert!(size <= 12288, "journal of A is {size} bytes");
    let st = rpcbind_status(&d, "bud-a")?;
    assert_eq!(st["journal"]["state"], "ok", "{st}");
    assert!(st["journal"]["refused_at_cap"].as_u64() > Some(0), "{st}");
    assert!(st["journal"]["bytes"].as_u64() <= Some(12288), "{st}");
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("registration refused") && l.contains("netns=bud-a")),
        "{log}"
    );
    // Churn (UNSET one, SET another) keeps the file near its live size: compaction.
    let mut live = acked.clone();
    for i in 0..150u32 {
        let old = live.remove(0);
        assert!(unset_v4(&a, old)?, "UNSET {old}");
        let new = 920_000 + i;
        let r = set_v4(&a, new, "local", &long_path(new))?;
        assert_eq!(
            r.as_ref().and_then(rpc::result_u32),
            Some(1),
            "SET {new} after UNSET"
        );
        live.push(new);
        let size = std::fs::metadata(&ja)?.len();
        assert!(
            size <= 12288,
            "journal of A grew to {size} bytes under churn"
        );
    }
    // kill -9: the replayed table is exactly the acknowledged set.
    d.kill9()?;
    d.restart()?;
    live.sort_unstable();
    let want: Vec<u64> = live.iter().map(|p| u64::from(*p)).collect();
    let got = wait_for("A restored", Duration::from_secs(5), || {
        progs(&d, "bud-a", 900_000).ok().filter(|p| !p.is_empty())
    })?;
    assert_eq!(
        got, want,
        "replay after kill -9 differs from the acknowledged set"
    );
    assert_eq!(progs(&d, "bud-b", 900_000)?, vec![910_000]);
    Ok(())
}

/// A tmpfs mounted on a directory for the life of the test (lazily unmounted on drop).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(at)?;
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()?;
        anyhow::ensure!(st.success(), "mount tmpfs on {}", at.display());
        Ok(Self(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with a filler file until it is full.
fn fill(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path)?;
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    // Byte-granular: whatever partial page is left gets used too.
    while f.write_all(&[0]).is_ok() {}
    Ok(path)
}

#[test]
fn full_disk_stops_journaling_only_where_a_write_failed_and_resumes() -> anyhow::Result<()> {
    if !require_root("full_disk_stops_journaling_only_where_a_write_failed_and_resumes") {
        return Ok(());
    }
    // The state directory is a small tmpfs: once full, a write that needs a new page fails
    // (ENOSPC) while appends that fit in a file's last page still succeed. A floods with long
    // lines until its page runs out; B makes one small change, which fits.
    let (d, _mnt) = Daemon::start_after("[rpcbind]\nenabled = true\n", |dir| {
        Tmpfs::mount(&dir.join("state"), "256k")
    })?;
    let a = d.netns("full-a")?;
    let b = d.netns("full-b")?;
    wait_up(&a)?;
    wait_up(&b)?;
    for (ns, prog) in [(&a, 930_000), (&b, 940_000)] {
        let r = set_v4(ns, prog, "udp", "0.0.0.0.8.8")?;
        assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1));
    }
    let jb =
        journal_with(&d.state_dir(), 940_000).ok_or_else(|| anyhow::anyhow!("no journal for B"))?;
    let filler = fill(&d.state_dir())?;
    // A: SETs until one cannot be journaled (no reply: it is not acknowledged).
    let mut failed_at = None;
    for prog in 930_001..930_100 {
        match set_v4(&a, prog, "local", &long_path(prog))?
            .as_ref()
            .and_then(rpc::result_u32)
        {
            Some(1) => {}
            None => {
                failed_at = Some(prog);
                break;
            }
            other => anyhow::bail!("unexpected answer {other:?} to SET {prog}"),
        }
    }
    let failed_at = failed_at.ok_or_else(|| anyhow::anyhow!("A never hit the full disk"))?;
    assert!(
        !progs(&d, "full-a", 900_000)?.contains(&u64::from(failed_at)),
        "rolled back"
    );
    let st = rpcbind_status(&d, "full-a")?;
    assert_eq!(st["journal"]["state"], "failing", "{st}");
    assert!(
        st["journal"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{st}"
    );
    // B still journals (its change fits in its file's last page) and says it is fine.
    let r = set_v4(&b, 940_001, "udp", "0.0.0.0.8.9")?;
    assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1));
    assert!(std::fs::read_to_string(&jb)?.contains(",940001,"));
    assert_eq!(rpcbind_status(&d, "full-b")?["journal"]["state"], "ok");
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("cannot journal") && l.contains("netns=full-a")),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("cannot journal") && l.contains("netns=full-b"))
    );
    // Space returns: A journals again, by itself, and says so.
    std::fs::remove_file(filler)?;
    let r = set_v4(&a, failed_at, "local", &long_path(failed_at))?;
    assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1));
    assert_eq!(rpcbind_status(&d, "full-a")?["journal"]["state"], "ok");
    let ja =
        journal_with(&d.state_dir(), 930_000).ok_or_else(|| anyhow::anyhow!("no journal for A"))?;
    assert!(std::fs::read_to_string(ja)?.contains(&format!(",{failed_at},")));
    assert!(d.log().contains("journaling resumed"));
    Ok(())
}

#[test]
fn memory_ceiling_refuses_growth_everywhere_without_abort() -> anyhow::Result<()> {
    if !require_root("memory_ceiling_refuses_growth_everywhere_without_abort") {
        return Ok(());
    }
    let d = Daemon::start("[limits]\nmemory_max_bytes = 16384\n\n[rpcbind]\nenabled = true\n")?;
    let a = d.netns("ceil-a")?;
    let b = d.netns("ceil-b")?;
    wait_up(&a)?;
    wait_up(&b)?;
    let (acked, odd) = flood(&a, 950_000, 400, 5)?;
    assert_eq!(odd, 0, "every SET is answered TRUE or FALSE");
    assert!(
        !acked.is_empty() && acked.len() < 395,
        "{} acknowledged",
        acked.len()
    );
    // The ceiling is daemon-wide: B cannot grow either, but still answers lookups.
    let r = set_v4(&b, 960_000, "local", &long_path(960_000))?;
    assert_eq!(
        r.as_ref().and_then(rpc::result_u32),
        Some(0),
        "B over the ceiling"
    );
    let status = d.ctl_json(&["status"])?;
    let total = status["memory_accounted_bytes"]
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!(total <= 16384, "{status}");
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("memory ceiling") && l.contains("netns=ceil-a")),
        "{log}"
    );
    // Room made in A is room for B.
    for p in acked.iter().take(3) {
        assert!(unset_v4(&a, *p)?);
    }
    let r = set_v4(&b, 960_000, "local", &long_path(960_000))?;
    assert_eq!(
        r.as_ref().and_then(rpc::result_u32),
        Some(1),
        "B after A shrank"
    );
    let out = b.sh("rpcinfo -p 127.0.0.1")?;
    assert!(out.status.success(), "{out:?}");
    assert!(
        d.ctl(&["status"])?.status.success(),
        "the daemon is still up"
    );
    Ok(())
}

#[test]
fn memory_ceiling_keeps_dns_answers_out_of_the_cache_but_answers() -> anyhow::Result<()> {
    if !require(
        "memory_ceiling_keeps_dns_answers_out_of_the_cache_but_answers",
        &["dig", "unbound"],
    ) {
        return Ok(());
    }
    use nsaux_tests::dns::{Server, dig, section, status};
    let etc = tempfile::tempdir()?;
    let updir = tempfile::tempdir()?;
    let up_addr = "192.0.2.53";
    std::fs::create_dir_all(etc.path().join("ceil-dns"))?;
    std::fs::write(
        etc.path().join("ceil-dns/resolv.conf"),
        format!("nameserver {up_addr}\n"),
    )?;
    // A ceiling of one byte: no table may grow at all (the portmapper and NTP are off).
    let base = format!(
        "[ntp]\nenabled = false\n\n[rpcbind]\nenabled = false\n\n[dns]\nnetns_etc_dir = \"{}\"\n",
        etc.path().display()
    );
    let d = Daemon::start(&format!("[limits]\nmemory_max_bytes = 1\n\n{base}"))?;
    let vs = d.netns("ceil-dns")?;
    let up = TestNetns::create(updir.path(), "up-ceil-dns")?;
    nsaux_tests::netns::veth(&vs, "tou0", "10.53.9.1/24", &up, "tovs0", "10.53.9.2/24")?;
    up.sh(&format!("ip addr add {up_addr}/32 dev lo"))?;
    vs.sh(&format!("ip route add {up_addr}/32 via 10.53.9.2"))?;
    let _srv = Server::unbound(
        &up,
        up_addr,
        "  local-zone: \".\" refuse\n  local-zone: \"test.\" static\n  \
         local-data: \"www.test. 300 IN A 10.9.9.9\"\n",
    )?;
    let ask = || -> anyhow::Result<String> {
        wait_for("dns answer", Duration::from_secs(5), || {
            dig(&vs, "@127.0.0.53 www.test A")
                .ok()
                .filter(|o| status(o).as_deref() == Some("NOERROR"))
        })
    };
    let stats = || -> anyhow::Result<Value> {
        Ok(d.ctl_json(&["dns", "stats", "--ns", "ceil-dns"])?["ceil-dns"].clone())
    };
    for _ in 0..2 {
        let out = ask()?;
        assert_eq!(section(&out, "ANSWER").len(), 1, "{out}");
    }
    let st = stats()?;
    assert_eq!(
        st["cache_entries"], 0,
        "nothing cached at the ceiling: {st}"
    );
    assert!(st["upstream_queries"].as_u64() >= Some(2), "{st}");
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains("answer not cached") && l.contains("netns=ceil-dns")),
        "{}",
        d.log()
    );
    // The ceiling lifted by a reload: answers are cached again.
    d.write_config(&base)?;
    assert!(d.ctl(&["reload"])?.status.success());
    ask()?;
    let st = stats()?;
    assert_eq!(st["cache_entries"], 1, "{st}");
    Ok(())
}
