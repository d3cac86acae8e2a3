//! Shared fate contained (issue 10, item 4): a config the daemon cannot run with is refused by
//! `validate` and by reload (the running daemon keeps serving), a panic in one namespace's
//! service leaves every other namespace serving and is rebuilt with backoff, and a listener
//! task that ends is reported and restarted. Panics and listener ends are injected through the
//! daemon's `fault-injection` feature, which the test harness builds in (tests/src/env.rs).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::dns::dig;
use nsaux_tests::env::{bin, require, require_root};
use nsaux_tests::netns::TestNetns;
use serde_json::Value;

/// Must match daemon/src/serve/fault.rs.
const PANIC: &[u8] = b"nsaux-fault-injection: panic";
const END_LISTENER: &[u8] = b"nsaux-fault-injection: end listener";

const TOML_MAX: u64 = i64::MAX as u64;

/// Every numeric key with a limit, the largest value accepted, and the words the refusal must
/// contain (the full field just above the limit; at the TOML maximum a u32 key fails to parse
/// and the message names its section).
const LIMITS: &[(&str, &str, u64, bool)] = &[
    // (section, key, max, is_u32)
    ("rpcbind", "max_registrations", 1 << 24, false),
    ("rpcbind", "max_connections", 65_536, false),
    ("rpcbind", "max_local_connections", 65_536, false),
    ("rpcbind", "max_connections_per_peer", 65_536, false),
    ("rpcbind", "idle_timeout_secs", 86_400, false),
    ("rpcbind", "record_timeout_secs", 3_600, false),
    ("rpcbind", "prune_interval_secs", 366 * 86_400, false),
    ("rpcbind", "journal_sweep_delay_secs", 366 * 86_400, false),
    ("ntp", "reference_max_age", 366 * 86_400, false),
    ("ntp.rate_limit", "max_clients", 1 << 24, false),
    ("dns", "cache_size", 1 << 24, false),
    ("dns", "cache_max_bytes", 1 << 32, false),
    ("dns", "max_outstanding", 16_384, false),
    ("dns", "query_timeout_ms", 3_600_000, false),
    ("dns", "attempt_timeout_ms", 3_600_000, false),
    ("dns", "stale_max_age", 366 * 86_400, false),
    ("dns", "tcp_idle_timeout", 86_400, false),
    ("dns", "tcp_max_connections", 65_536, false),
    ("dns", "tcp_max_local_connections", 65_536, false),
    ("dns", "tcp_max_connections_per_peer", 65_536, false),
    ("dns", "tcp_record_timeout", 3_600, false),
    ("dns.rate_limit", "per_second", 1_000_000, true),
    ("dns.rate_limit", "burst", 1_000_000, true),
    ("dns.rate_limit", "max_clients", 1 << 24, false),
];

const IDENT_ON: &str = "[ident]\nenabled = true\n";

fn ident_answers(ns: &TestNetns) -> bool {
    ns.udp_query(
        SocketAddr::from(([127, 0, 0, 1], 7867)),
        b"?",
        Duration::from_millis(300),
    )
    .ok()
    .flatten()
    .is_some()
}

#[test]
fn every_limit_is_refused_by_validate_and_by_reload() -> anyhow::Result<()> {
    if !require_root("every_limit_is_refused_by_validate_and_by_reload") {
        return Ok(());
    }
    let d = Daemon::start(IDENT_ON)?;
    let ns = d.netns("fate-lim")?;
    wait_for("ident", Duration::from_secs(5), || {
        ident_answers(&ns).then_some(())
    })?;
    let file = d.state_dir().with_file_name("limit-check.toml");
    for &(section, key, max, is_u32) in LIMITS {
        // The largest value is accepted.
        std::fs::write(&file, format!("[{section}]\n{key} = {max}\n"))?;
        let out = Command::new(bin("nsauxctl"))
            .args(["validate", "--config"])
            .arg(&file)
            .output()?;
        assert!(out.status.success(), "{section}.{key} = {max}: {out:?}");
        for bad in [max + 1, TOML_MAX] {
            let text = format!("{IDENT_ON}[{section}]\n{key} = {bad}\n");
            let named = if bad == TOML_MAX && is_u32 {
                section.to_owned()
            } else {
                format!("{section}.{key}")
            };
            std::fs::write(&file, &text)?;
            let out = Command::new(bin("nsauxctl"))
                .args(["validate", "--config"])
                .arg(&file)
                .output()?;
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "validate accepted {text}");
            assert!(err.contains(&named), "{text}: {err}");
            d.write_config(&text)?;
            let out = d.ctl(&["reload"])?;
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "reload accepted {text}");
            assert!(
                err.contains(&named) && err.contains("old configuration kept"),
                "{text}: {err}"
            );
        }
    }
    // The examples at start-up: refused as a bad configuration (EX_CONFIG), no abort.
    for text in [
        "[rpcbind]\nmax_connections = 9223372036854775807\n",
        "[rpcbind]\nprune = true\nprune_interval_secs = 9223372036854775807\n",
    ] {
        std::fs::write(&file, text)?;
        let out = Command::new(bin("nsauxd"))
            .arg("--config")
            .arg(&file)
            .output()?;
        assert_eq!(out.status.code(), Some(78), "{text}: {out:?}");
    }
    // The daemon is alive and serving with its old configuration.
    assert!(ident_answers(&ns), "ident stopped after refused reloads");
    assert!(d.ctl_json(&["status"])?["pid"].as_u64() == Some(u64::from(d.pid())));
    Ok(())
}

const SERVE_ALL: &str = "[dns]\nlocal_domains = [\"lan\"]\nrecords = [{ name = \"f.lan\", addr = \"10.0.0.9\" }]\n\
     [ntp]\nstratum = 5\nlocal_stratum = 5\n";

fn ntp_ok(ns: &TestNetns) -> bool {
    ns.sh("ntpdig -j -t 1 127.0.0.1")
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"offset\""))
}

fn serves_everything(ns: &TestNetns, name: &str) -> anyhow::Result<()> {
    let rpc = ns.sh("rpcinfo -p 127.0.0.1")?;
    let rpc = String::from_utf8_lossy(&rpc.stdout);
    anyhow::ensure!(rpc.contains("portmapper"), "{name}: rpcinfo -p: {rpc}");
    let a = dig(ns, "@127.0.0.53 f.lan A +short")?;
    anyhow::ensure!(a.trim() == "10.0.0.9", "{name}: dig: {a}");
    anyhow::ensure!(ntp_ok(ns), "{name}: ntpdig failed");
    Ok(())
}

fn ntp_entry(d: &Daemon, name: &str) -> Value {
    d.ns(name)
        .ok()
        .flatten()
        .map_or(Value::Null, |e| e["services"]["ntp"].clone())
}

/// Sends one datagram from inside `ns` to its NTP port (no answer expected).
fn poke_ntp(ns: &TestNetns, payload: &[u8]) -> anyhow::Result<()> {
    ns.udp_query(
        SocketAddr::from(([127, 0, 0, 1], 123)),
        payload,
        Duration::from_millis(50),
    )?;
    Ok(())
}

#[test]
fn panic_in_one_namespace_leaves_the_others_serving() -> anyhow::Result<()> {
    let test = "panic_in_one_namespace_leaves_the_others_serving";
    if !require(test, &["dig", "rpcinfo", "ntpdig"]) {
        return Ok(());
    }
    let d = Daemon::start(SERVE_ALL)?;
    let a = d.netns("fate-a")?;
    let b = d.netns("fate-b")?;
    for ns in [&a, &b] {
        wait_for("ntp", Duration::from_secs(5), || ntp_ok(ns).then_some(()))?;
    }
    poke_ntp(&a, PANIC)?;
    let entry = wait_for("ntp in A dropped", Duration::from_secs(3), || {
        let e = ntp_entry(&d, "fate-a");
        (e["panics"] == 1).then_some(e)
    })?;
    assert_eq!(entry["state"], "restarting", "{entry}");
    assert!(
        entry["error"]
            .as_str()
            .is_some_and(|e| e.contains("panicked")),
        "{entry}"
    );
    // Logged once, with the namespace.
    let log = d.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("service panicked on a datagram"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("fate-a"), "{}", lines[0]);
    assert!(lines[0].contains("fault.rs"), "location: {}", lines[0]);
    assert!(
        !log.contains("panicked at daemon/src/serve/fault.rs"),
        "the panic hook repeated a contained panic: {log}"
    );
    // B never noticed; A's other services never stopped.
    serves_everything(&b, "fate-b")?;
    let rpc = a.sh("rpcinfo -p 127.0.0.1")?;
    assert!(String::from_utf8_lossy(&rpc.stdout).contains("portmapper"));
    // A's NTP is rebuilt (first backoff: 1 s) and serves again.
    wait_for("ntp in A rebuilt", Duration::from_secs(5), || {
        ntp_ok(&a).then_some(())
    })?;
    serves_everything(&a, "fate-a")?;
    // A second panic in a row backs off longer: not a hot loop.
    poke_ntp(&a, PANIC)?;
    let entry = wait_for("second panic", Duration::from_secs(3), || {
        let e = ntp_entry(&d, "fate-a");
        (e["panics"] == 2).then_some(e)
    })?;
    assert!(
        entry["error"]
            .as_str()
            .is_some_and(|e| e.contains("restarting in 2s")),
        "{entry}"
    );
    let table = d.ctl(&["ns", "list"])?;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.contains("fate-a") && l.contains("ntp:restarting")),
        "{table}"
    );
    serves_everything(&b, "fate-b")?;
    wait_for("ntp in A rebuilt again", Duration::from_secs(6), || {
        ntp_ok(&a).then_some(())
    })?;
    // The same for the portmapper and the DNS endpoint: each is rebuilt in A alone.
    for (service, to) in [
        ("rpcbind", SocketAddr::from(([127, 0, 0, 1], 111))),
        ("dns", SocketAddr::from(([127, 0, 0, 53], 53))),
    ] {
        a.udp_query(to, PANIC, Duration::from_millis(50))?;
        wait_for(service, Duration::from_secs(3), || {
            let e = d.ns("fate-a").ok().flatten()?;
            (e["services"][service]["panics"] == 1).then_some(())
        })?;
        serves_everything(&b, "fate-b")?;
        wait_for("A serves everything again", Duration::from_secs(8), || {
            serves_everything(&a, "fate-a").ok()
        })?;
    }
    Ok(())
}

/// One raw control request (nsauxctl has no verb for the test-only action).
fn control(d: &Daemon, req: &Value) -> anyhow::Result<Value> {
    let mut s = UnixStream::connect(d.runtime_dir().join("control.sock"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{req}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(serde_json::from_str(&line)?)
}

#[test]
fn panic_in_a_control_action_is_contained() -> anyhow::Result<()> {
    let test = "panic_in_a_control_action_is_contained";
    if !require(test, &["ntpdig"]) {
        return Ok(());
    }
    let d = Daemon::start(SERVE_ALL)?;
    let a = d.netns("fate-ca")?;
    let b = d.netns("fate-cb")?;
    for ns in [&a, &b] {
        wait_for("ntp", Duration::from_secs(5), || ntp_ok(ns).then_some(()))?;
    }
    let reply = control(
        &d,
        &serde_json::json!({"cmd": "service", "service": "ntp", "action": "fault-panic", "ns": "fate-ca"}),
    )?;
    assert!(reply.to_string().contains("being rebuilt"), "{reply}");
    assert!(d.log().contains("control action panicked"));
    assert!(ntp_ok(&b), "B stopped serving");
    assert_eq!(ntp_entry(&d, "fate-cb")["state"], "up");
    wait_for("ntp in A rebuilt", Duration::from_secs(5), || {
        ntp_ok(&a).then_some(())
    })?;
    // The control socket still answers.
    d.ctl_json(&["status"])?;
    Ok(())
}

#[test]
fn ended_listener_is_reported_and_restarted() -> anyhow::Result<()> {
    let test = "ended_listener_is_reported_and_restarted";
    if !require(test, &["ntpdig"]) {
        return Ok(());
    }
    let d = Daemon::start(SERVE_ALL)?;
    let a = d.netns("fate-la")?;
    wait_for("ntp", Duration::from_secs(5), || ntp_ok(&a).then_some(()))?;
    poke_ntp(&a, END_LISTENER)?;
    // Reported while it waits for its restart.
    let l = wait_for("listener reported", Duration::from_secs(3), || {
        ntp_entry(&d, "fate-la")["listeners"]
            .as_array()?
            .iter()
            .find(|l| l["state"] == "restarting")
            .cloned()
    })?;
    assert!(
        l["error"]
            .as_str()
            .is_some_and(|e| e.contains("ended unexpectedly")),
        "{l}"
    );
    assert!(d.log().contains("listener ended unexpectedly"));
    // Restarted after its backoff, and counted.
    wait_for("listener restarted", Duration::from_secs(5), || {
        ntp_entry(&d, "fate-la")["listeners"]
            .as_array()?
            .iter()
            .any(|l| l["state"] == "up" && l["restarts"] == 1)
            .then_some(())
    })?;
    assert_eq!(ntp_entry(&d, "fate-la")["state"], "up");
    wait_for("ntp again", Duration::from_secs(3), || {
        ntp_ok(&a).then_some(())
    })?;
    Ok(())
}
