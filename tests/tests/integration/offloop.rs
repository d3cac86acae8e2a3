//! Work moved off the loop (issue 11 item 3): the portmapper journal's compaction and replay run
//! on blocking threads, and the walks over every namespace give the loop back in bounded turns.
//! What must not change with it: no acknowledged registration is lost or duplicated, the table's
//! order survives, whether the daemon is killed (`kill -9`) before, during or after a
//! compaction's rename; and the reports still list every namespace exactly once.

use std::collections::BTreeSet;
use std::time::Duration;

use nsaux_tests::daemon::{Daemon, journal_files, wait_for};
use nsaux_tests::env::require_root;
use nsaux_tests::netns::TestNetns;
use nsaux_tests::rpc::{
    self, Cred, PMAP, call, change_local, connect_abstract, rpcb, stream_call, wait_portmapper_udp,
};

const ABSTRACT: &str = "/run/rpcbind.sock";
/// The fault-injection pause of a compaction between its snapshot and its catch-up (the daemon
/// is built with the `fault-injection` feature for the tests).
const PAUSE_ENV: &str = "NSAUX_FAULT_COMPACTION_PAUSE_MS";
const FIRST: u32 = 950_000;

/// A v4 SET (`set`) or UNSET over the abstract socket; true when answered TRUE.
fn change(ns: &TestNetns, set: bool, prog: u32) -> anyhow::Result<bool> {
    change_local(ns, set, prog, &addr(prog), Duration::from_secs(2))
}

/// A socket path per program, long enough that a few hundred changes fill a small journal.
fn addr(prog: u32) -> String {
    format!("/run/{}-{prog}.sock", "y".repeat(60))
}

/// The registered programs from [`FIRST`] on, in table order.
fn table(d: &Daemon, ns: &str) -> anyhow::Result<Vec<u32>> {
    d.rpc_progs(ns, FIRST)
}

/// The acknowledged table: what a client that saw every reply knows is registered, in order.
#[derive(Default)]
struct Model {
    order: Vec<u32>,
    next: u32,
}

impl Model {
    /// One churn step: SET a new program, and UNSET the oldest once more than `live` are
    /// registered. Every change must be acknowledged.
    fn step(&mut self, ns: &TestNetns, live: usize) -> anyhow::Result<()> {
        let prog = FIRST + self.next;
        self.next += 1;
        anyhow::ensure!(change(ns, true, prog)?, "SET {prog} not acknowledged");
        self.order.push(prog);
        if self.order.len() > live {
            let old = self.order.remove(0);
            anyhow::ensure!(change(ns, false, old)?, "UNSET {old} not acknowledged");
        }
        Ok(())
    }

    /// Churns until the namespace reports a compaction under way (at most `max` steps).
    fn until_compacting(
        &mut self,
        d: &Daemon,
        ns: &TestNetns,
        live: usize,
        max: usize,
    ) -> anyhow::Result<()> {
        for i in 0..max {
            self.step(ns, live)?;
            if i % 4 == 3 && d.rpc_journal(&ns.name)?["compacting"] == true {
                return Ok(());
            }
        }
        anyhow::bail!("no compaction started after {max} changes")
    }
}

#[test]
fn compaction_off_the_loop_loses_nothing_across_kill9() -> anyhow::Result<()> {
    if !require_root("compaction_off_the_loop_loses_nothing_across_kill9") {
        return Ok(());
    }
    // A 16 KiB journal: compaction starts past 12 KiB (three quarters of the cap), and each
    // compaction pauses 1.5 s between its snapshot and its catch-up. The changes made during
    // the pause stay under the cap (one at the cap would wait for the compaction: see
    // `rewrites.rs`).
    let mut d = Daemon::start_with_env(
        "[rpcbind]\nenabled = true\njournal_max_bytes = 16384\n",
        &[],
        &[(PAUSE_ENV, "1500")],
    )?;
    let a = d.netns("ol-a")?;
    wait_portmapper_udp(&a, "portmapper in ol-a")?;
    let mut m = Model::default();
    const LIVE: usize = 10;

    // 1. Changes acknowledged while a compaction runs end up in the renamed file.
    m.until_compacting(&d, &a, LIVE, 300)?;
    for _ in 0..6 {
        m.step(&a, LIVE)?;
    }
    let st = d.rpc_journal("ol-a")?;
    assert_eq!(
        st["compacting"], true,
        "the compaction ended too soon: {st}"
    );
    let done = wait_for("compaction done", Duration::from_secs(10), || {
        d.rpc_journal("ol-a")
            .ok()
            .filter(|s| s["compacting"] == false && s["compactions"].as_u64() >= Some(1))
    })?;
    let files = journal_files(&d.state_dir());
    assert_eq!(files.len(), 1, "{files:?}");
    let size = std::fs::metadata(&files[0])?.len();
    assert_eq!(Some(size), done["bytes"].as_u64(), "{done}");
    assert!(size < 6144, "compacted journal is {size} bytes");
    assert_eq!(table(&d, "ol-a")?, m.order, "table after the compaction");
    for _ in 0..5 {
        m.step(&a, LIVE)?;
    }
    d.kill9()?;
    d.restart()?;
    let got = wait_for("ol-a restored", Duration::from_secs(10), || {
        table(&d, "ol-a").ok().filter(|t| !t.is_empty())
    })?;
    assert_eq!(
        got, m.order,
        "replay after a compaction's rename and kill -9"
    );

    // 2. kill -9 while a compaction is paused before its rename: the old file holds it all.
    m.until_compacting(&d, &a, LIVE, 300)?;
    for _ in 0..5 {
        m.step(&a, LIVE)?;
    }
    assert_eq!(d.rpc_journal("ol-a")?["compacting"], true);
    d.kill9()?;
    d.restart()?;
    let got = wait_for("ol-a restored", Duration::from_secs(10), || {
        table(&d, "ol-a").ok().filter(|t| !t.is_empty())
    })?;
    assert_eq!(got, m.order, "replay after kill -9 during a compaction");
    // The replayed namespace keeps journaling where it left off.
    for _ in 0..5 {
        m.step(&a, LIVE)?;
    }
    assert_eq!(table(&d, "ol-a")?, m.order);
    let st = d.rpc_journal("ol-a")?;
    assert_eq!(st["state"], "ok", "{st}");
    assert_eq!(st["replaying"], false, "{st}");
    Ok(())
}

#[test]
fn a_replayed_namespace_answers_streams_with_its_whole_table() -> anyhow::Result<()> {
    if !require_root("a_replayed_namespace_answers_streams_with_its_whole_table") {
        return Ok(());
    }
    let mut d = Daemon::start("[rpcbind]\nenabled = true\n")?;
    let a = d.netns("ol-r")?;
    wait_portmapper_udp(&a, "portmapper in ol-r")?;
    let mut m = Model::default();
    for _ in 0..80 {
        m.step(&a, 60)?;
    }
    d.kill9()?;
    d.restart()?;
    // The first stream call after the restart waits for the replay instead of answering from
    // a half-restored table: the last program registered is there at once.
    let last = *m
        .order
        .last()
        .ok_or_else(|| anyhow::anyhow!("empty model"))?;
    let reply = wait_for("GETADDR answered", Duration::from_secs(10), || {
        let args = rpcb(last, 1, "local", "", "0");
        a.run_in(move || {
            let mut s = connect_abstract(ABSTRACT).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            stream_call(&mut s, &call(last, PMAP, 4, 3, Cred::None, &args))
        })
        .ok()
        .flatten()
    })?;
    assert_eq!(
        rpc::result_string(&reply),
        Some(addr(last)),
        "GETADDR of {last} right after the restart"
    );
    assert_eq!(table(&d, "ol-r")?, m.order, "order kept by the replay");
    Ok(())
}

#[test]
fn reports_walk_every_namespace_once_in_bounded_turns() -> anyhow::Result<()> {
    if !require_root("reports_walk_every_namespace_once_in_bounded_turns") {
        return Ok(());
    }
    // More namespaces than one turn of a walk (32) handles.
    const N: usize = 40;
    let d = Daemon::start("[rpcbind]\nenabled = true\n")?;
    let mut names = BTreeSet::new();
    let mut held = Vec::new();
    for i in 0..N {
        let name = format!("ol-w{i}");
        held.push(d.netns(&name)?);
        names.insert(name);
    }
    let listed = wait_for("every namespace up", Duration::from_secs(30), || {
        let list = d.ns_list().ok()?;
        let up = list
            .iter()
            .filter(|n| n["services"]["rpcbind"]["state"] == "up")
            .count();
        (up == names.len()).then_some(list)
    })?;
    let got: BTreeSet<String> = listed
        .iter()
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(got, names);
    assert_eq!(listed.len(), names.len(), "a namespace listed twice");
    let st = d.ctl_json(&["status"])?;
    assert_eq!(st["namespaces"].as_u64(), Some(N as u64), "{st}");
    let lists = d.ctl_json(&["rpc", "list"])?;
    assert_eq!(lists.as_object().map(serde_json::Map::len), Some(N));
    Ok(())
}
