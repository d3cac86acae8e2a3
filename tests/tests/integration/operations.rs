//! Operations (issue 12): `nsauxctl` as an operator meets it (text never raw JSON, reasons for
//! a partial service, closed pipes, exit codes, `--version`, `validate` like the daemon, config
//! errors in plain words), DNS on `::1` by default, man pages that render, and the daemon
//! running with only the capabilities it keeps.

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::dns::{dig, section};
use nsaux_tests::env::{bin, require, require_root, require_tool};
use nsaux_tests::netns::TestNetns;

/// rpcbind, DNS (a local record, one upstream that never answers) and NTP (answering as
/// synchronised) in every namespace.
const CONFIG: &str = "[rpcbind]\nenabled = true\n\n[ntp]\nlocal_stratum = 10\n\n\
    [dns]\nlocal_domains = [\"lan\"]\nupstreams = [\"192.0.2.1\"]\n\
    records = [{ name = \"h.lan\", addr = \"10.0.0.7\" }]\nnetns_etc_dir = \"/nonexistent\"\n";

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits until every service of `name` is listed `up`.
fn wait_up(d: &Daemon, name: &str) -> anyhow::Result<()> {
    wait_for(&format!("{name} up"), Duration::from_secs(10), || {
        let ns = d.ns(name).ok()??;
        let all_up = ns["services"]
            .as_object()?
            .values()
            .all(|s| s["state"] == "up");
        all_up.then_some(())
    })
}

/// Text output that reads like JSON: an object or array opening, or a quoted key.
fn looks_like_json(s: &str) -> bool {
    s.lines().any(|l| {
        let t = l.trim_start();
        t.starts_with('{') || t.starts_with("[{") || t.starts_with("[\"") || t.contains("\":")
    })
}

#[test]
fn text_output_is_never_json_and_verbs_answer_in_one_sentence() -> anyhow::Result<()> {
    let test = "text_output_is_never_json_and_verbs_answer_in_one_sentence";
    if !require(test, &["rpcinfo"]) {
        return Ok(());
    }
    let d = Daemon::start(CONFIG)?;
    let ns = d.netns("ops-text")?;
    wait_up(&d, "ops-text")?;
    // Some traffic so the statistics have rows.
    ns.sh("rpcinfo -T tcp 127.0.0.1 100000 4 && rpcinfo -p 127.0.0.1 >/dev/null")?;
    for args in [
        &["status"][..],
        &["ns", "list"],
        &["rpc", "list"],
        &["rpc", "stats"],
        &["dns", "stats"],
        &["dns", "flush"],
        &["ntp", "status"],
        &["ntp", "stats"],
    ] {
        let out = d.ctl(args)?;
        let t = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert!(!looks_like_json(&t), "{args:?} printed JSON:\n{t}");
    }
    let stats = String::from_utf8_lossy(&d.ctl(&["rpc", "stats"])?.stdout).into_owned();
    for want in [
        "PORTMAP (version 2) statistics",
        "RPCBIND (version 3) statistics",
        "RPCBIND (version 4) statistics",
        "GETPORT",
        "GETADDR",
        "VERADDR",
    ] {
        assert!(stats.contains(want), "rpc stats lacks {want}:\n{stats}");
    }
    let dns = String::from_utf8_lossy(&d.ctl(&["dns", "stats"])?.stdout).into_owned();
    let head = dns
        .lines()
        .find(|l| l.contains("ADDRESS"))
        .unwrap_or_else(|| panic!("no upstream table:\n{dns}"));
    for col in ["SRTT", "FAILURES", "STATE"] {
        assert!(head.contains(col), "{head}");
    }
    assert!(dns.contains("192.0.2.1:53"), "{dns}");

    let other = TestNetns::create(d.dir.path(), "ops-text-attached")?;
    let path = other.path.display().to_string();
    for (args, want) in [
        (
            vec!["attach", "ops-att", "--path", path.as_str()],
            "attached namespace ops-att",
        ),
        (vec!["detach", "ops-att"], "detached namespace ops-att"),
        (vec!["reload"], "configuration reloaded"),
    ] {
        let out = d.ctl(&args)?;
        let t = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert_eq!(t.lines().count(), 1, "{args:?}: {t}");
        assert!(t.starts_with(want), "{args:?}: {t}");
    }
    Ok(())
}

#[test]
fn ns_list_says_why_a_service_is_partial() -> anyhow::Result<()> {
    let test = "ns_list_says_why_a_service_is_partial";
    if !require_root(test) {
        return Ok(());
    }
    let d = Daemon::start("[ident]\nenabled = true\nport = 7867\n")?;
    // A namespace where another program already holds ident's TCP port: UDP comes up, TCP
    // cannot, so the service is partial.
    let ns = TestNetns::create(d.dir.path(), "ops-partial")?;
    let holder = ns.run_in(|| std::net::TcpListener::bind("0.0.0.0:7867"))??;
    let out = d.ctl(&[
        "attach",
        "ops-partial",
        "--path",
        &ns.path.display().to_string(),
    ])?;
    assert!(out.status.success(), "{}", text(&out));
    let listed = wait_for("partial ident", Duration::from_secs(10), || {
        let out = d.ctl(&["ns", "list"]).ok()?;
        let t = String::from_utf8_lossy(&out.stdout).into_owned();
        t.contains("ident partial").then_some(t)
    })?;
    let why = listed
        .lines()
        .find(|l| l.starts_with("ops-partial ident partial"))
        .unwrap_or_else(|| panic!("no reason line:\n{listed}"));
    assert!(why.contains("tcp:0.0.0.0:7867"), "{why}");
    assert!(why.contains("address in use"), "{why}");
    drop(holder);
    Ok(())
}

/// Runs nsauxctl with its stdout a pipe whose reading end is already closed.
fn ctl_into_closed_pipe(args: &[&str]) -> anyhow::Result<Output> {
    let (read, write) = nix::unistd::pipe()?;
    drop(read);
    Ok(Command::new(bin("nsauxctl"))
        .args(args)
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()?)
}

#[test]
fn a_closed_pipe_ends_nsauxctl_quietly() -> anyhow::Result<()> {
    let test = "a_closed_pipe_ends_nsauxctl_quietly";
    if !require_root(test) {
        return Ok(());
    }
    let d = Daemon::start(CONFIG)?;
    let _ns = d.netns("ops-pipe")?;
    wait_up(&d, "ops-pipe")?;
    let run = d.runtime_dir().display().to_string();
    let cfg = d.dir.path().join("nsaux.toml").display().to_string();
    for args in [
        vec!["--runtime-dir", &run, "rpc", "list"],
        vec!["--runtime-dir", &run, "ns", "list"],
        vec!["--runtime-dir", &run, "--json", "status"],
        vec!["validate", "--config", &cfg],
        vec!["--help"],
    ] {
        let out = ctl_into_closed_pipe(&args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        let quiet = out.status.code() == Some(0) || out.status.signal() == Some(libc::SIGPIPE);
        assert!(quiet, "{args:?}: {:?} {err}", out.status);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // And as an operator types it: status 141 (SIGPIPE) or 0, one line, nothing on stderr.
    let out = Command::new("bash")
        .args([
            "-c",
            "\"$0\" --runtime-dir \"$1\" rpc list | head -1; echo \"status=${PIPESTATUS[0]}\"",
        ])
        .arg(bin("nsauxctl"))
        .arg(&run)
        .output()?;
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains("status=0") || t.contains("status=141"),
        "{t} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn nothing_matched_exits_non_zero_everywhere() -> anyhow::Result<()> {
    let test = "nothing_matched_exits_non_zero_everywhere";
    if !require_root(test) {
        return Ok(());
    }
    let d = Daemon::start(CONFIG)?;
    let _ns = d.netns("ops-exit")?;
    wait_up(&d, "ops-exit")?;
    for (args, code) in [
        (&["rpc", "list", "--ns", "ops-nope"][..], 1),
        (&["dns", "stats", "--ns", "ops-nope"], 1),
        (&["rpc", "unset", "--ns", "ops-exit", "395000", "1"], 1),
        (
            &["--json", "rpc", "unset", "--ns", "ops-exit", "395000", "1"],
            1,
        ),
        (
            &["dns", "remove", "--ns", "ops-exit", "x.lan", "10.9.9.9"],
            1,
        ),
        (&["detach", "ops-nope"], 1),
        (&["rpc", "frobnicate"], 2),
        (&["rpc", "list", "--ns", "ops-exit"], 0),
    ] {
        let out = d.ctl(args)?;
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
        if code == 1 {
            assert!(
                String::from_utf8_lossy(&out.stderr).starts_with("nsauxctl: "),
                "{args:?}: {}",
                text(&out)
            );
        }
    }
    Ok(())
}

#[test]
fn version_names_each_binary() -> anyhow::Result<()> {
    for name in ["nsauxctl", "nsauxd"] {
        let out = Command::new(bin(name)).arg("--version").output()?;
        let t = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert!(t.starts_with(&format!("{name} ")), "{name}: {t}");
    }
    Ok(())
}

/// Runs `script` in a private mount namespace whose /etc is an empty tmpfs, so the default
/// configuration path is under the test's control; `$CTL` and `$D` name the binaries.
fn with_private_etc(script: &str) -> anyhow::Result<Output> {
    Ok(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c"])
        .arg(format!("mount -t tmpfs nsaux-test-etc /etc && {script}"))
        .env("CTL", bin("nsauxctl"))
        .env("D", bin("nsauxd"))
        .output()?)
}

#[test]
fn validate_without_a_file_checks_what_the_daemon_would_load() -> anyhow::Result<()> {
    let test = "validate_without_a_file_checks_what_the_daemon_would_load";
    if !require(test, &["unshare"]) {
        return Ok(());
    }
    // Absent default file: built-in defaults, as nsauxd runs.
    let out = with_private_etc("\"$CTL\" validate")?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("built-in defaults"), "{}", text(&out));
    // A bad default file: both refuse it, naming the field (nsauxd exits 78 before serving).
    let out = with_private_etc(
        "mkdir /etc/nsaux && printf '[dns]\\nport = 0\\n' > /etc/nsaux/nsaux.toml && \
         \"$CTL\" validate; echo \"ctl=$?\"; \"$D\" --no-host-netns --runtime-dir /etc/r \
         --state-dir /etc/s --netns-dir /etc/n; echo \"daemon=$?\"",
    )?;
    let t = text(&out);
    assert!(t.contains("ctl=1"), "{t}");
    assert!(t.contains("daemon=78"), "{t}");
    assert_eq!(
        t.matches("dns.port: 0 out of range 1..=65535").count(),
        2,
        "{t}"
    );
    Ok(())
}

#[test]
fn config_errors_quote_the_value_list_the_keys_and_say_integer() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bad.toml");
    for (doc, wants) in [
        (
            "[ident]\nport = \"eighty\"\n",
            &["ident.port", "\"eighty\"", "integer"][..],
        ),
        ("[ntp]\nport = 70000\n", &["ntp.port", "70000", "integer"]),
        (
            "[ident]\nprot = 1\n",
            &[
                "ident.prot",
                "valid keys: enabled, port, addresses, udp, tcp",
            ],
        ),
        (
            "bogus = 1\n",
            &["bogus", "valid top-level keys", "worker_threads"],
        ),
        ("[rpcbind]\nport = 0\n", &["rpcbind.port", "0 out of range"]),
        (
            "worker_threads = 0\n",
            &["worker_threads", "0 out of range 1..=64"],
        ),
        (
            "receive_coalesce_us = 5000\n",
            &["receive_coalesce_us", "5000 out of range 0..=1000"],
        ),
    ] {
        std::fs::write(&file, doc)?;
        let out = Command::new(bin("nsauxctl"))
            .args(["validate", "--config"])
            .arg(&file)
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{doc}: {err}");
        for w in wants {
            assert!(err.contains(w), "{doc}: {err} lacks {w}");
        }
        for rust in ["u16", "u32", "usize", "u64"] {
            assert!(
                !err.split(|c: char| !c.is_alphanumeric()).any(|w| w == rust),
                "{doc}: {err}"
            );
        }
    }
    Ok(())
}

#[test]
fn dns_answers_on_ipv6_loopback_by_default_and_without_ipv6_too() -> anyhow::Result<()> {
    let test = "dns_answers_on_ipv6_loopback_by_default_and_without_ipv6_too";
    if !require(test, &["dig", "sysctl"]) {
        return Ok(());
    }
    let d = Daemon::start(CONFIG)?;
    let ns = d.netns("ops-v6")?;
    wait_up(&d, "ops-v6")?;
    let a = wait_for("an answer on ::1", Duration::from_secs(5), || {
        let out = dig(&ns, "@::1 +tries=1 +time=1 h.lan A").ok()?;
        let a = section(&out, "ANSWER");
        (!a.is_empty()).then_some(a)
    })?;
    assert_eq!(a[0].3, "10.0.0.7");
    // A namespace with IPv6 switched off before the daemon sees it: still served, all up.
    let off = TestNetns::create(d.dir.path(), "ops-nov6")?;
    off.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.lo.disable_ipv6=1")?;
    let out = d.ctl(&[
        "attach",
        "ops-nov6",
        "--path",
        &off.path.display().to_string(),
    ])?;
    assert!(out.status.success(), "{}", text(&out));
    wait_up(&d, "ops-nov6")?;
    let out = dig(&off, "@127.0.0.53 +tries=1 +time=2 h.lan A")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.0.0.7", "{out}");
    Ok(())
}

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

#[test]
fn man_pages_render_without_warnings() -> anyhow::Result<()> {
    let test = "man_pages_render_without_warnings";
    if !require_tool(test, "man") {
        return Ok(());
    }
    for (page, name) in [
        ("man/nsauxd.8", "nsauxd"),
        ("man/nsauxctl.8", "nsauxctl"),
        ("man/nsaux.toml.5", "nsaux.toml"),
    ] {
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(packaging().join(page))
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .output()?;
        let t = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{page}: {}", text(&out));
        assert!(
            out.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(t.contains("NAME") && t.contains(name), "{page}:\n{t}");
    }
    let ctl = String::from_utf8_lossy(
        &Command::new("man")
            .args(["-l"])
            .arg(packaging().join("man/nsauxctl.8"))
            .env("MANPAGER", "cat")
            .output()?
            .stdout,
    )
    .into_owned();
    assert!(
        ctl.contains("EXIT STATUS") && ctl.contains("nothing matched"),
        "{ctl}"
    );
    Ok(())
}

/// The capability numbers nsauxd keeps (`daemon/src/privilege.rs`).
const KEPT_MASK: u64 = (1 << 10) | (1 << 12) | (1 << 19) | (1 << 21);

fn cap_eff(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .ok_or_else(|| anyhow::anyhow!("no CapEff"))?;
    Ok(u64::from_str_radix(hex.trim(), 16)?)
}

#[test]
fn the_daemon_keeps_only_its_capabilities_and_every_service_answers_with_them() -> anyhow::Result<()>
{
    let test = "the_daemon_keeps_only_its_capabilities_and_every_service_answers_with_them";
    if !require(test, &["setpriv", "rpcinfo", "dig", "ntpdig"]) {
        return Ok(());
    }
    // Started as root with every capability: it drops to the kept three.
    let d = Daemon::start(CONFIG)?;
    assert_eq!(cap_eff(d.pid())?, KEPT_MASK, "after start");
    drop(d);
    // Started with only the kept three in its bounding set (what the unit allows, less
    // CAP_SYS_RESOURCE): every service answers.
    let dir = tempfile::tempdir()?;
    let wrapper = dir.path().join("nsauxd-kept-caps");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec setpriv --bounding-set -all,+sys_admin,+net_bind_service,+net_admin,+sys_ptrace \
             --inh-caps -all -- {} \"$@\"\n",
            bin("nsauxd").display()
        ),
    )?;
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let d = Daemon::start_binary(Some(&wrapper), CONFIG)?;
    assert_eq!(cap_eff(d.pid())?, KEPT_MASK, "under setpriv");
    let ns = d.netns("ops-caps")?;
    wait_up(&d, "ops-caps")?;
    ns.sh("rpcinfo -T tcp 127.0.0.1 100000 4 && rpcinfo -T udp 127.0.0.1 100000 2")?;
    let out = dig(&ns, "@127.0.0.53 +tries=1 +time=2 h.lan A")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.0.0.7", "{out}");
    let out = ns.sh("ntpdig -t 2 127.0.0.1")?;
    assert!(out.status.success(), "{}", text(&out));
    Ok(())
}

/// A reload that changes a key read only at start (`worker_threads`, `receive_coalesce_us`,
/// `quiet_lane_cpu_percent`) is accepted, says in the log that the running value stays until
/// a restart, and changes nothing that runs: still one lane thread, still the same workers.
#[test]
fn a_reload_that_changes_a_start_only_key_says_a_restart_is_needed() -> anyhow::Result<()> {
    let d = Daemon::start("")?;
    let threads = |d: &Daemon| -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        for t in std::fs::read_dir(format!("/proc/{}/task", d.pid()))? {
            names.push(
                std::fs::read_to_string(t?.path().join("comm"))?
                    .trim()
                    .to_owned(),
            );
        }
        names.sort();
        Ok(names)
    };
    let before = threads(&d)?;
    d.write_config("worker_threads = 2\nquiet_lane_cpu_percent = 0\n")?;
    let out = d.ctl(&["reload"])?;
    assert!(out.status.success(), "{}", text(&out));
    for key in ["worker_threads", "quiet_lane_cpu_percent"] {
        wait_for(&format!("{key} warning"), Duration::from_secs(5), || {
            d.log()
                .lines()
                .any(|l| l.contains("read at start only") && l.contains(key))
                .then_some(())
        })?;
    }
    assert!(
        !d.log()
            .lines()
            .any(|l| l.contains("read at start only") && l.contains("receive_coalesce_us")),
        "an unchanged key was reported"
    );
    assert_eq!(
        threads(&d)?,
        before,
        "the reload changed the daemon's threads"
    );
    assert!(before.iter().any(|t| t == "nsaux-quiet"), "{before:?}");
    // Out of range: refused by reload (the running configuration kept) and by validate.
    d.write_config("quiet_lane_cpu_percent = 101\n")?;
    let out = d.ctl(&["reload"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "reload accepted 101 %");
    assert!(
        err.contains("quiet_lane_cpu_percent") && err.contains("0..=100"),
        "{err}"
    );
    let out = Command::new(bin("nsauxctl"))
        .args(["validate", "--config"])
        .arg(d.dir.path().join("nsaux.toml"))
        .output()?;
    assert!(!out.status.success(), "validate accepted 101 %");
    Ok(())
}
