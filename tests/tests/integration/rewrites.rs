//! The portmapper journal's whole-file rewrites off the loop (issue 11 item 3): after a failed
//! write, after a reload that dropped registrations, and at `journal_max_bytes`. Each rewrite is
//! paused 1.5 s by fault injection (`NSAUX_FAULT_COMPACTION_PAUSE_MS`, between its snapshot and
//! its rename): meanwhile another namespace's portmapper answers at once (the loop is free), the
//! call that needs the rewrite is answered after it (late, not lost), and `kill -9` + restart
//! gives back exactly the acknowledged table, in order. A burst of UDP SETs during a rewrite
//! keeps at most 16 calls waiting (`serve/rpcbind/busy.rs`): those are answered after it, the
//! rest get no reply and change nothing, and another namespace's `rpcinfo` is answered meanwhile.
//! An UNSET at a full journal that is given up during the compaction it started does not come
//! back on restart: the entry is still registered.

use std::net::UdpSocket;
use std::thread;
use std::time::{Duration, Instant};

use nsaux_tests::daemon::{Daemon, journal_files, wait_for};
use nsaux_tests::env::{require, require_root};
use nsaux_tests::netns::TestNetns;
use nsaux_tests::rpc::{
    self, Cred, PMAP, call, change_local, getport_answered, lo111, pmap, udp_call,
    wait_portmapper_udp,
};
use serde_json::Value;

const PAUSE_ENV: &str = "NSAUX_FAULT_COMPACTION_PAUSE_MS";
const PAUSE: Duration = Duration::from_millis(1500);
const FIRST: u32 = 960_000;

/// A socket path per program, long enough that a few dozen registrations fill a small journal.
fn addr(prog: u32) -> String {
    format!("/run/{}-{prog}.sock", "z".repeat(88))
}

/// A v4 SET (`set`) or UNSET over the abstract socket, waiting up to 5 s for the reply; true
/// when answered TRUE.
fn change(ns: &TestNetns, set: bool, prog: u32) -> anyhow::Result<bool> {
    change_local(ns, set, prog, &addr(prog), Duration::from_secs(5))
}

/// A v2 SET over UDP, sent once, waiting up to 5 s: the answer, if any.
fn udp_set(ns: &TestNetns, prog: u32) -> anyhow::Result<Option<u32>> {
    let r = ns.run_in(move || {
        udp_call(
            lo111(),
            &call(prog, PMAP, 2, 1, Cred::None, &pmap(prog, 1, 17, 2049)),
            Duration::from_secs(5),
        )
    })?;
    Ok(r.as_ref().and_then(rpc::result_u32))
}

/// The registered programs from [`FIRST`] on, in table order.
fn table(d: &Daemon, ns: &str) -> anyhow::Result<Vec<u32>> {
    d.rpc_progs(ns, FIRST)
}

/// The bystander's portmapper answers a GETPORT within a second (a rewrite on the loop would
/// hold it for the whole pause).
fn bystander_answers(b: &TestNetns) -> anyhow::Result<()> {
    for i in 0..3 {
        let t = Instant::now();
        anyhow::ensure!(
            getport_answered(b, 10 + i, Duration::from_secs(1))?,
            "bystander GETPORT {i} unanswered within 1 s (after {:?})",
            t.elapsed()
        );
        thread::sleep(Duration::from_millis(150));
    }
    Ok(())
}

/// Waits until namespace `name` has no compaction or rewrite running.
fn until_idle(d: &Daemon, name: &str) -> anyhow::Result<Value> {
    wait_for("journal rewrite done", Duration::from_secs(10), || {
        d.rpc_journal(name)
            .ok()
            .filter(|s| s["compacting"] == false)
    })
}

/// kill -9, restart, and the table of `name` once its replay is done.
fn kill9_and_replay(d: &mut Daemon, ns: &TestNetns) -> anyhow::Result<Vec<u32>> {
    d.kill9()?;
    d.restart()?;
    wait_portmapper_udp(ns, "portmapper back")?;
    wait_for("replayed", Duration::from_secs(10), || {
        d.rpc_journal(&ns.name)
            .ok()
            .filter(|s| s["replaying"] == false)
    })?;
    table(d, &ns.name)
}

#[test]
fn a_failed_write_is_repaired_off_the_loop_and_kill9_loses_nothing() -> anyhow::Result<()> {
    if !require_root("a_failed_write_is_repaired_off_the_loop_and_kill9_loses_nothing") {
        return Ok(());
    }
    let pause = PAUSE.as_millis().to_string();
    let mut d = Daemon::start_with_env("[rpcbind]\nenabled = true\n", &[], &[(PAUSE_ENV, &pause)])?;
    let a = d.netns("rw-fail")?;
    let b = d.netns("rw-fail-b")?;
    wait_portmapper_udp(&a, "portmapper in A")?;
    wait_portmapper_udp(&b, "portmapper in B")?;
    let mut acked = Vec::new();
    for prog in FIRST..FIRST + 5 {
        anyhow::ensure!(change(&a, true, prog)?, "SET {prog}");
        acked.push(prog);
    }
    // A directory in the journal's place: the append fails (EISDIR, even for root), the SET is
    // not acknowledged, and the file is stale from now on.
    let files = journal_files(&d.state_dir());
    anyhow::ensure!(files.len() == 1, "{files:?}");
    let journal = files[0].clone();
    std::fs::remove_file(&journal)?;
    std::fs::create_dir(&journal)?;
    assert!(
        !change(&a, true, FIRST + 5)?,
        "an unjournaled SET is acknowledged"
    );
    assert_eq!(d.rpc_journal("rw-fail")?["state"], "failing");
    // Repaired: the next change (one UDP datagram, no retransmission) starts the rewrite of the
    // whole file off the loop and is answered once it is done.
    std::fs::remove_dir(&journal)?;
    let (answer, took) = thread::scope(|s| -> anyhow::Result<_> {
        let late = s.spawn(|| -> anyhow::Result<(Option<u32>, Duration)> {
            let t = Instant::now();
            Ok((udp_set(&a, FIRST + 6)?, t.elapsed()))
        });
        thread::sleep(Duration::from_millis(300));
        let st = d.rpc_journal("rw-fail")?;
        assert_eq!(st["compacting"], true, "no rewrite under way: {st}");
        bystander_answers(&b)?;
        late.join()
            .map_err(|_| anyhow::anyhow!("SET thread panicked"))?
    })?;
    assert_eq!(answer, Some(1), "the late SET is answered TRUE");
    assert!(
        took >= PAUSE / 2,
        "answered before the rewrite ended ({took:?})"
    );
    acked.push(FIRST + 6);
    let st = until_idle(&d, "rw-fail")?;
    assert_eq!(st["state"], "ok", "{st}");
    assert!(d.log().contains("journaling resumed"));
    assert_eq!(table(&d, "rw-fail")?, acked);
    // The rewritten file holds every acknowledged registration, the failed one not.
    assert_eq!(kill9_and_replay(&mut d, &a)?, acked);
    Ok(())
}

#[test]
fn a_reload_that_drops_registrations_rewrites_the_journal_off_the_loop() -> anyhow::Result<()> {
    if !require_root("a_reload_that_drops_registrations_rewrites_the_journal_off_the_loop") {
        return Ok(());
    }
    let roomy = "[rpcbind]\nenabled = true\nmax_registrations = 64\n";
    let pause = PAUSE.as_millis().to_string();
    let mut d = Daemon::start_with_env(roomy, &[], &[(PAUSE_ENV, &pause)])?;
    let a = d.netns("rw-reload")?;
    let b = d.netns("rw-reload-b")?;
    wait_portmapper_udp(&a, "portmapper in A")?;
    wait_portmapper_udp(&b, "portmapper in B")?;
    for prog in FIRST..FIRST + 20 {
        anyhow::ensure!(change(&a, true, prog)?, "SET {prog}");
    }
    // 12 self registrations + 10: the reload drops 10 of A's 20.
    d.write_config("[rpcbind]\nenabled = true\nmax_registrations = 22\n")?;
    let t = Instant::now();
    let out = d.ctl(&["reload"])?;
    assert!(out.status.success(), "{out:?}");
    let reload_took = t.elapsed();
    assert!(
        reload_took < PAUSE,
        "the reload waited for the rewrite ({reload_took:?})"
    );
    let kept = table(&d, "rw-reload")?;
    assert_eq!(kept.len(), 10, "{kept:?}");
    let st = d.rpc_journal("rw-reload")?;
    assert_eq!(st["compacting"], true, "no rewrite under way: {st}");
    // A change during the rewrite waits for it, then is acknowledged.
    let (unset, took) = thread::scope(|s| -> anyhow::Result<_> {
        let late = s.spawn(|| -> anyhow::Result<(bool, Duration)> {
            let t = Instant::now();
            Ok((change(&a, false, kept[0])?, t.elapsed()))
        });
        bystander_answers(&b)?;
        late.join()
            .map_err(|_| anyhow::anyhow!("UNSET thread panicked"))?
    })?;
    assert!(unset, "the UNSET during the rewrite is acknowledged");
    assert!(
        took >= Duration::from_millis(300),
        "did not wait ({took:?})"
    );
    let expect: Vec<u32> = kept[1..].to_vec();
    until_idle(&d, "rw-reload")?;
    assert_eq!(table(&d, "rw-reload")?, expect);
    // The journal lost the dropped registrations too: a restart under the roomy configuration
    // does not bring them back.
    d.write_config(roomy)?;
    assert_eq!(kill9_and_replay(&mut d, &a)?, expect);
    Ok(())
}

#[test]
fn a_change_at_the_journal_cap_waits_for_a_compaction_off_the_loop() -> anyhow::Result<()> {
    if !require_root("a_change_at_the_journal_cap_waits_for_a_compaction_off_the_loop") {
        return Ok(());
    }
    const CAP: u64 = 16384;
    let pause = PAUSE.as_millis().to_string();
    let mut d = Daemon::start_with_env(
        &format!("[rpcbind]\nenabled = true\njournal_max_bytes = {CAP}\n"),
        &[],
        &[(PAUSE_ENV, &pause)],
    )?;
    let a = d.netns("rw-cap")?;
    let b = d.netns("rw-cap-b")?;
    wait_portmapper_udp(&a, "portmapper in A")?;
    wait_portmapper_udp(&b, "portmapper in B")?;
    // A table of about 80 % of the cap, then churn (SET a new one, UNSET the oldest): the file
    // passes the cap within a few steps of the compaction's start, so some change meets the
    // file full while the compaction is paused.
    let mut order = Vec::new();
    let mut next = FIRST;
    loop {
        anyhow::ensure!(change(&a, true, next)?, "SET {next}");
        order.push(next);
        next += 1;
        if d.rpc_journal("rw-cap")?["bytes"].as_u64() > Some(CAP * 8 / 10) {
            break;
        }
    }
    let mut waited = Duration::ZERO;
    let mut bystander_checked = false;
    for _ in 0..40 {
        let t = Instant::now();
        anyhow::ensure!(change(&a, true, next)?, "SET {next} not acknowledged");
        order.push(next);
        next += 1;
        let old = order.remove(0);
        anyhow::ensure!(change(&a, false, old)?, "UNSET {old} not acknowledged");
        waited = waited.max(t.elapsed());
        if !bystander_checked && d.rpc_journal("rw-cap")?["compacting"] == true {
            bystander_answers(&b)?;
            bystander_checked = true;
        }
        if waited >= PAUSE / 3 {
            break;
        }
    }
    assert!(bystander_checked, "no compaction seen");
    assert!(
        waited >= PAUSE / 3,
        "no change waited for the compaction at the cap (longest step {waited:?})"
    );
    let st = until_idle(&d, "rw-cap")?;
    assert_eq!(st["refused_at_cap"], 0, "{st}");
    assert!(st["bytes"].as_u64() <= Some(CAP), "{st}");
    for f in journal_files(&d.state_dir()) {
        assert!(std::fs::metadata(&f)?.len() <= CAP, "{}", f.display());
    }
    assert_eq!(table(&d, "rw-cap")?, order);
    assert_eq!(kill9_and_replay(&mut d, &a)?, order);
    Ok(())
}

/// UDP calls per namespace that may wait for a rewrite at once (`MAX_WAITING` in
/// `daemon/src/serve/rpcbind/busy.rs`); the rest get no reply, as after a lost datagram.
const MAX_WAITING: usize = 16;
/// UDP SETs sent back to back while the rewrite runs: well past [`MAX_WAITING`].
const BURST: u32 = 40;
/// The rewrite's pause in the burst test: long enough that the bystander's `rpcinfo` runs
/// and is seen to end inside it on a loaded machine, shorter than a waiting call's 5 s.
const BURST_PAUSE: Duration = Duration::from_millis(3000);

/// A v2 SET over UDP for each of `progs` (xid = program), sent back to back from one loopback
/// socket (SET is refused to non-loopback callers) in `ns`; then the replies that come within
/// `listen` of the first send: (xid, the bool result, when).
fn udp_set_burst(
    ns: &TestNetns,
    progs: Vec<u32>,
    listen: Duration,
) -> anyhow::Result<Vec<(u32, Option<u32>, Duration)>> {
    ns.run_in(move || -> anyhow::Result<_> {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.connect(lo111())?;
        let t0 = Instant::now();
        for &p in &progs {
            s.send(&call(p, PMAP, 2, 1, Cred::None, &pmap(p, 1, 17, 2049)))?;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while let Some(left) = listen.checked_sub(t0.elapsed()) {
            s.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            match s.recv(&mut buf) {
                Ok(n) => {
                    let (xid, answer) = rpc::parse_reply(&buf[..n])
                        .map_or((0, None), |(x, r)| (x, rpc::result_u32(&r)));
                    got.push((xid, answer, t0.elapsed()));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(got)
    })?
}

#[test]
fn a_burst_of_udp_sets_during_a_rewrite_keeps_16_waiting_and_drops_the_rest() -> anyhow::Result<()>
{
    let name = "a_burst_of_udp_sets_during_a_rewrite_keeps_16_waiting_and_drops_the_rest";
    if !require(name, &["rpcinfo"]) {
        return Ok(());
    }
    let pause = BURST_PAUSE.as_millis().to_string();
    let mut d = Daemon::start_with_env("[rpcbind]\nenabled = true\n", &[], &[(PAUSE_ENV, &pause)])?;
    let a = d.netns("rw-burst")?;
    let b = d.netns("rw-burst-b")?;
    wait_portmapper_udp(&a, "portmapper in A")?;
    wait_portmapper_udp(&b, "portmapper in B")?;
    let mut acked = Vec::new();
    for prog in FIRST..FIRST + 3 {
        anyhow::ensure!(change(&a, true, prog)?, "SET {prog}");
        acked.push(prog);
    }
    // A failed append makes the file stale (as in the first test): the next change starts a
    // rewrite of the whole file, and every change meanwhile waits for it.
    let files = journal_files(&d.state_dir());
    anyhow::ensure!(files.len() == 1, "{files:?}");
    std::fs::remove_file(&files[0])?;
    std::fs::create_dir(&files[0])?;
    assert!(
        !change(&a, true, FIRST + 3)?,
        "an unjournaled SET is acknowledged"
    );
    std::fs::remove_dir(&files[0])?;

    let burst: Vec<u32> = (FIRST + 10..FIRST + 10 + BURST).collect();
    let (replies, rpcinfo) = thread::scope(|s| -> anyhow::Result<_> {
        let flood =
            s.spawn(|| udp_set_burst(&a, burst.clone(), BURST_PAUSE + Duration::from_secs(3)));
        thread::sleep(Duration::from_millis(300));
        let st = d.rpc_journal("rw-burst")?;
        anyhow::ensure!(st["compacting"] == true, "no rewrite under way: {st}");
        // Another namespace's portmapper answers real rpcinfo calls during the rewrite.
        let out = b.sh("rpcinfo -u 127.0.0.1 100000 2 && rpcinfo -p 127.0.0.1")?;
        let st = d.rpc_journal("rw-burst")?;
        anyhow::ensure!(
            st["compacting"] == true,
            "the rewrite ended before rpcinfo in B did: {st}"
        );
        let replies = flood
            .join()
            .map_err(|_| anyhow::anyhow!("burst thread panicked"))??;
        Ok((replies, out))
    })?;
    let text = String::from_utf8_lossy(&rpcinfo.stdout);
    assert!(rpcinfo.status.success(), "rpcinfo in B: {rpcinfo:?}");
    assert!(
        text.contains("ready and waiting"),
        "rpcinfo -u in B: {text}"
    );
    assert!(
        rpc::pmap_rows(&text).contains(&(PMAP, 2, "udp".to_owned(), 111)),
        "rpcinfo -p in B: {text}"
    );

    // The first MAX_WAITING calls waited and were answered TRUE once the rewrite was over; the
    // others got no reply at all (no FALSE, no error: the client retries, as after a loss).
    assert_eq!(
        replies.len(),
        MAX_WAITING,
        "replies to the burst: {replies:?}"
    );
    let mut answered: Vec<u32> = replies.iter().map(|r| r.0).collect();
    answered.sort_unstable();
    answered.dedup();
    assert_eq!(
        answered.len(),
        MAX_WAITING,
        "a call answered twice: {replies:?}"
    );
    for &(xid, answer, at) in &replies {
        assert!(
            burst.contains(&xid),
            "a reply to no call of the burst: {xid}"
        );
        assert_eq!(answer, Some(1), "SET {xid} during the rewrite: {replies:?}");
        assert!(
            at >= BURST_PAUSE / 2,
            "SET {xid} answered before the rewrite ended ({at:?})"
        );
    }
    let st = until_idle(&d, "rw-burst")?;
    assert_eq!(st["state"], "ok", "{st}");
    // Nothing lost, nothing unacknowledged: the table holds the acknowledged registrations
    // and the answered SETs (whose retries ran concurrently, so in any order), no other.
    let t = table(&d, "rw-burst")?;
    assert_eq!(t[..acked.len().min(t.len())], acked[..], "{t:?}");
    let mut rest = t[acked.len().min(t.len())..].to_vec();
    rest.sort_unstable();
    assert_eq!(rest, answered, "the table after the rewrite");
    // The dropped calls changed nothing; retried now, each is acknowledged at once.
    let mut expect = t;
    for &prog in burst.iter().filter(|p| !answered.contains(p)) {
        assert_eq!(udp_set(&a, prog)?, Some(1), "retried SET {prog}");
        expect.push(prog);
    }
    // The daemon is still there, and the journal holds exactly what was acknowledged.
    let status = d.ctl_json(&["status"])?;
    assert_eq!(status["namespaces"].as_u64(), Some(2), "{status}");
    assert_eq!(table(&d, "rw-burst")?, expect);
    assert_eq!(kill9_and_replay(&mut d, &a)?, expect);
    Ok(())
}

/// The compaction's pause in [`an_unset_given_up_at_a_full_journal_is_not_replayed`]: longer
/// than a waiting call's 5 s (`WAIT` in `busy.rs`), so the call that met the cap is given up.
const GIVE_UP_PAUSE: Duration = Duration::from_millis(6500);

/// An UNSET at a full journal (`journal_max_bytes`) needs the room a compaction gives, so the
/// compaction it starts snapshots the table without the entry, while the call waits with the
/// entry back in the table. Given up after its wait, the UNSET was never acknowledged: the
/// entry must still be there after `kill -9` and a restart (the file is rewritten whole from
/// the table once the call is given up).
#[test]
fn an_unset_given_up_at_a_full_journal_is_not_replayed() -> anyhow::Result<()> {
    if !require_root("an_unset_given_up_at_a_full_journal_is_not_replayed") {
        return Ok(());
    }
    const CAP: u64 = 16384;
    let pause = GIVE_UP_PAUSE.as_millis().to_string();
    let mut d = Daemon::start_with_env(
        &format!("[rpcbind]\nenabled = true\njournal_max_bytes = {CAP}\n"),
        &[],
        &[(PAUSE_ENV, &pause)],
    )?;
    let a = d.netns("rw-give-up")?;
    wait_portmapper_udp(&a, "portmapper in A")?;
    // SETs only (no garbage in the file, so no compaction) until one is refused at the cap.
    let mut order = Vec::new();
    for prog in FIRST..FIRST + 400 {
        if !change(&a, true, prog)? {
            break;
        }
        order.push(prog);
    }
    let st = d.rpc_journal("rw-give-up")?;
    anyhow::ensure!(st["refused_at_cap"] == 1, "the journal never filled: {st}");
    let first = order[0];
    let t = Instant::now();
    assert!(
        !change(&a, false, first)?,
        "the UNSET was acknowledged before the compaction ended"
    );
    anyhow::ensure!(
        t.elapsed() >= Duration::from_secs(4),
        "UNSET refused at once ({:?}), not given up after a wait",
        t.elapsed()
    );
    wait_for("journal rewritten", GIVE_UP_PAUSE * 4, || {
        d.rpc_journal("rw-give-up")
            .ok()
            .filter(|s| s["compacting"] == false && s["state"] == "ok")
    })?;
    assert_eq!(table(&d, "rw-give-up")?, order);
    assert_eq!(kill9_and_replay(&mut d, &a)?, order);
    Ok(())
}
