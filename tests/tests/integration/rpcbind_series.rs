//! The portmapper's per-namespace series (issue 12): calls by version and procedure and the
//! registrations gauge, labelled `netns`, only for namespaces opted in by `[observe]
//! per_namespace`, following real SET/UNSET/DUMP calls, and gone with their namespace.

use std::collections::BTreeMap;
use std::time::Duration;

use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::env::require;
use nsaux_tests::netns::TestNetns;
use nsaux_tests::rpc::{self, Cred, PMAP, call, lo111, pmap, udp_call, wait_portmapper_udp};

/// `name{labels}` → value, from `nsauxctl metrics` (comments skipped).
fn metrics(d: &Daemon) -> anyhow::Result<BTreeMap<String, f64>> {
    let out = d.ctl(&["metrics"])?;
    anyhow::ensure!(out.status.success(), "nsauxctl metrics: {out:?}");
    let mut m = BTreeMap::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .rsplit_once(' ')
            .ok_or_else(|| anyhow::anyhow!("bad line {line:?}"))?;
        m.insert(k.to_owned(), v.parse()?);
    }
    Ok(m)
}

fn get(m: &BTreeMap<String, f64>, k: &str) -> f64 {
    m.get(k).copied().unwrap_or(-1.0)
}

/// PMAP v2 SET (proc 1) or UNSET (proc 2) of program 300000 v1 UDP at `port`; the boolean reply.
fn set(ns: &TestNetns, proc_: u32, port: u32) -> anyhow::Result<Option<u32>> {
    Ok(ns
        .run_in(move || {
            udp_call(
                lo111(),
                &call(7, PMAP, 2, proc_, Cred::None, &pmap(300_000, 1, 17, port)),
                Duration::from_secs(1),
            )
        })?
        .as_ref()
        .and_then(rpc::result_u32))
}

#[test]
fn per_namespace_portmapper_series_follow_calls_and_leave_with_the_namespace() -> anyhow::Result<()>
{
    let test = "per_namespace_portmapper_series_follow_calls_and_leave_with_the_namespace";
    if !require(test, &["rpcinfo"]) {
        return Ok(());
    }
    let d = Daemon::start("[rpcbind]\nenabled = true\n\n[observe]\nper_namespace = [\"rpc-*\"]\n")?;
    let mut a = d.netns("rpc-a")?;
    let quiet = d.netns("quiet")?;
    wait_portmapper_udp(&a, "portmapper in rpc-a")?;
    wait_portmapper_udp(&quiet, "portmapper in quiet")?;

    let regs = "nsaux_netns_rpcbind_registrations{netns=\"rpc-a\"}";
    let set_calls =
        "nsaux_netns_rpcbind_calls_total{netns=\"rpc-a\",version=\"2\",procedure=\"set\"}";
    let unset_calls =
        "nsaux_netns_rpcbind_calls_total{netns=\"rpc-a\",version=\"2\",procedure=\"unset\"}";
    let dump_calls =
        "nsaux_netns_rpcbind_calls_total{netns=\"rpc-a\",version=\"2\",procedure=\"dump\"}";
    let before = metrics(&d)?;
    let self_regs = get(&before, regs);
    assert!(
        self_regs > 0.0,
        "the self registrations are counted: {before:#?}"
    );
    assert_eq!(get(&before, set_calls), 0.0, "{before:#?}");

    assert_eq!(set(&a, 1, 4000)?, Some(1), "SET");
    let out = a.sh("rpcinfo -p 127.0.0.1")?;
    assert!(out.status.success(), "{out:?}");
    let s = metrics(&d)?;
    assert_eq!(get(&s, set_calls), 1.0, "{s:#?}");
    assert!(get(&s, dump_calls) >= 1.0, "{s:#?}");
    assert_eq!(get(&s, regs), self_regs + 1.0, "{s:#?}");
    // Daemon-wide: both namespaces' tables.
    let total = get(&s, "nsaux_rpcbind_registrations");
    assert!(total >= self_regs * 2.0 + 1.0, "{total} in {s:#?}");
    assert!(
        !s.keys().any(|k| k.contains("netns=\"quiet\"")),
        "no series for a namespace that did not opt in"
    );

    assert_eq!(set(&a, 2, 0)?, Some(1), "UNSET");
    let s = metrics(&d)?;
    assert_eq!(get(&s, unset_calls), 1.0, "{s:#?}");
    assert_eq!(get(&s, regs), self_regs, "{s:#?}");

    // Registered again, then the namespace leaves: its series go, and so do its
    // registrations from the daemon-wide gauge.
    assert_eq!(set(&a, 1, 4001)?, Some(1), "SET again");
    let with_a = get(&metrics(&d)?, "nsaux_rpcbind_registrations");
    a.delete()?;
    let gone = wait_for("rpc-a's series gone", Duration::from_secs(5), || {
        metrics(&d)
            .ok()
            .filter(|s| !s.keys().any(|k| k.contains("netns=\"rpc-a\"")))
    })?;
    assert_eq!(
        get(&gone, "nsaux_rpcbind_registrations"),
        with_a - self_regs - 1.0,
        "{gone:#?}"
    );
    let daemon_wide_set = "nsaux_rpcbind_calls_total{version=\"2\",procedure=\"set\"}";
    assert!(get(&gone, daemon_wide_set) >= 2.0, "daemon-wide calls stay");
    Ok(())
}
