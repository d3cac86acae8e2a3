//! Daemon core: namespace tracking, socket factory, per-namespace services, config reload,
//! control socket. Uses the built-in `ident` service as the probe.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::dns::dig;
use nsaux_tests::env::{bin, require, require_root};
use nsaux_tests::netns::{TestNetns, in_netns_file, udp_exchange, veth};

const IDENT_ON: &str = "[ident]\nenabled = true\n";
const PORT: u16 = 7867;

fn lo() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], PORT))
}

/// Asks the ident service inside `ns` at `to`; returns the answer line and its source. The query
/// is padded: a caller outside the namespace gets no answer longer than twice its query.
fn ident(ns: &TestNetns, to: SocketAddr) -> Option<(String, SocketAddr)> {
    ns.udp_query(to, &[b'?'; 256], Duration::from_millis(200))
        .ok()
        .flatten()
        .map(|(b, from)| (String::from_utf8_lossy(&b).into_owned(), from))
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

#[test]
fn fifty_namespaces_each_answer_within_a_second() -> anyhow::Result<()> {
    if !require_root("fifty_namespaces_each_answer_within_a_second") {
        return Ok(());
    }
    let d = Daemon::start(IDENT_ON)?;
    let mut all = Vec::new();
    for i in 0..50 {
        let name = format!("vs{i}");
        let ns = d.netns(&name)?;
        let created = Instant::now();
        let (line, from) = wait_for(&format!("ident in {name}"), Duration::from_secs(1), || {
            ident(&ns, lo())
        })?;
        assert!(created.elapsed() < Duration::from_secs(1));
        assert_eq!(field(&line, "netns"), Some(name.as_str()), "{line}");
        assert_eq!(from, lo());
        all.push(ns);
    }
    let list = d.ns_list()?;
    assert_eq!(list.len(), 50);
    for ns in &list {
        assert_eq!(ns["services"]["ident"]["state"], "up", "{ns}");
        assert!(ns["id"].as_u64().is_some());
        assert!(ns["source"].as_str().is_some_and(|s| s.starts_with("dir:")));
    }
    // Every namespace has its own identity.
    let mut ids: Vec<u64> = list.iter().filter_map(|n| n["id"].as_u64()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 50);
    Ok(())
}

/// `worker_threads` above one runs tokio's multi-thread scheduler; one (the default, and every
/// other test) runs the current-thread scheduler. Every service must answer under both.
#[test]
fn several_workers_serve_every_service() -> anyhow::Result<()> {
    let test = "several_workers_serve_every_service";
    if !require(test, &["dig", "rpcinfo", "ntpdig"]) {
        return Ok(());
    }
    let d = Daemon::start(
        "worker_threads = 3\n[ident]\nenabled = true\n[dns]\nlocal_domains = [\"lan\"]\n\
         records = [{ name = \"w.lan\", addr = \"10.0.0.7\" }]\n\
         [ntp]\nstratum = 5\nlocal_stratum = 5\n",
    )?;
    for name in ["mw-a", "mw-b"] {
        let ns = d.netns(name)?;
        let (line, _) = wait_for("ident", Duration::from_secs(5), || ident(&ns, lo()))?;
        assert_eq!(field(&line, "netns"), Some(name), "{line}");
        wait_for("dns local record", Duration::from_secs(5), || {
            dig(&ns, "@127.0.0.53 w.lan A +short")
                .ok()
                .filter(|o| o.trim() == "10.0.0.7")
        })?;
        let rpc = ns.sh("rpcinfo -p 127.0.0.1")?;
        let rpc = String::from_utf8_lossy(&rpc.stdout);
        assert!(rpc.contains("portmapper"), "{name}: rpcinfo -p: {rpc}");
        let ntp = ns.sh("ntpdig -j -t 2 127.0.0.1")?;
        let ntp = String::from_utf8_lossy(&ntp.stdout);
        assert!(ntp.contains("\"offset\""), "{name}: ntpdig: {ntp}");
    }
    // The scheduler really is the multi-thread one: the main thread, three workers and the
    // namespace thread (one worker runs 3 threads here: main, namespace thread, a blocking one).
    let threads = std::fs::read_dir(format!("/proc/{}/task", d.pid()))?.count();
    assert!(threads >= 5, "{threads} threads");
    Ok(())
}

#[test]
fn same_address_in_two_namespaces_gets_its_own_answer() -> anyhow::Result<()> {
    if !require_root("same_address_in_two_namespaces_gets_its_own_answer") {
        return Ok(());
    }
    let d = Daemon::start(IDENT_ON)?;
    let client_dir = tempfile::tempdir()?;
    let a = d.netns("vs-a")?;
    let b = d.netns("vs-b")?;
    let ca = TestNetns::create(client_dir.path(), "client-a")?;
    let cb = TestNetns::create(client_dir.path(), "client-b")?;
    veth(&a, "vsa0", "10.0.0.5/24", &ca, "ca0", "10.0.0.9/24")?;
    veth(&b, "vsb0", "10.0.0.5/24", &cb, "cb0", "10.0.0.9/24")?;
    // A second address on vs-a: a multi-homed VS must be answered from the address queried.
    a.sh("ip addr add 10.0.0.6/24 dev vsa0")?;
    let vs5 = SocketAddr::from(([10, 0, 0, 5], PORT));
    let vs6 = SocketAddr::from(([10, 0, 0, 6], PORT));
    for (client, name) in [(&ca, "vs-a"), (&cb, "vs-b")] {
        let (line, from) = wait_for("ident over veth", Duration::from_secs(5), || {
            ident(client, vs5)
        })?;
        assert_eq!(field(&line, "netns"), Some(name), "{line}");
        assert_eq!(field(&line, "local"), Some("10.0.0.5:7867"), "{line}");
        assert_eq!(from, vs5, "answer must come from the address queried");
    }
    let (line, from) = wait_for("ident on second address", Duration::from_secs(5), || {
        ident(&ca, vs6)
    })?;
    assert_eq!(field(&line, "netns"), Some("vs-a"));
    assert_eq!(
        from, vs6,
        "answer must come from the second address: {line}"
    );
    // TCP too.
    let out = ca.sh("exec 3<>/dev/tcp/10.0.0.5/7867 && cat <&3")?;
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(field(&line, "netns"), Some("vs-a"), "{line}");
    assert_eq!(field(&line, "proto"), Some("tcp"), "{line}");
    Ok(())
}

#[test]
fn delete_releases_every_fd_and_the_namespace() -> anyhow::Result<()> {
    if !require_root("delete_releases_every_fd_and_the_namespace") {
        return Ok(());
    }
    let d = Daemon::start(IDENT_ON)?;
    // Settle: the start-up status call's connection may still be closing.
    std::thread::sleep(Duration::from_millis(100));
    let baseline = d.fd_count();
    let mut ns = d.netns("gone")?;
    let ino = std::fs::metadata(&ns.path).map(|m| std::os::unix::fs::MetadataExt::ino(&m))?;
    wait_for("ident", Duration::from_secs(2), || ident(&ns, lo()))?;
    // A TCP connection that stays open must not pin the namespace either.
    let held = ns.run_in(|| std::net::TcpStream::connect(lo()))??;
    assert!(d.fd_count() > baseline);
    ns.delete()?;
    d.wait_released(baseline, ino)?;
    assert!(d.ns_list()?.is_empty());
    drop(held);
    Ok(())
}

#[test]
fn recreated_name_is_a_new_namespace() -> anyhow::Result<()> {
    if !require_root("recreated_name_is_a_new_namespace") {
        return Ok(());
    }
    let d = Daemon::start(IDENT_ON)?;
    let mut ns = d.netns("again")?;
    let (line, _) = wait_for("ident", Duration::from_secs(2), || ident(&ns, lo()))?;
    let first = field(&line, "id").map(str::to_owned);
    ns.delete()?;
    wait_for("gone", Duration::from_secs(5), || {
        d.ns_list().ok().filter(Vec::is_empty)
    })?;
    let ns2 = d.netns("again")?;
    let (line2, _) = wait_for("ident", Duration::from_secs(2), || ident(&ns2, lo()))?;
    let second = field(&line2, "id").map(str::to_owned);
    assert!(first.is_some() && second.is_some());
    assert_ne!(
        first, second,
        "a re-created namespace must get a new identity"
    );
    let entry = d.ns("again")?.expect("listed");
    assert_eq!(entry["id"].to_string(), second.unwrap_or_default());
    Ok(())
}

#[test]
fn port_taken_by_another_program_is_reported_and_others_serve() -> anyhow::Result<()> {
    if !require_root("port_taken_by_another_program_is_reported_and_others_serve") {
        return Ok(());
    }
    let d = Daemon::start(IDENT_ON)?;
    // Create "busy" outside the watched dir first, occupy the port, then move it in.
    let staging = tempfile::tempdir()?;
    let busy = TestNetns::create(staging.path(), "busy")?;
    let squatter =
        busy.run_in(|| std::net::UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], PORT))))??;
    let busy_in = d.dir.path().join("netns").join("busy");
    std::fs::File::create(&busy_in)?;
    nix::mount::mount(
        Some(&busy.path),
        &busy_in,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )?;
    let fine = d.netns("fine")?;
    wait_for("ident in fine", Duration::from_secs(2), || {
        ident(&fine, lo())
    })?;
    let entry = wait_for("busy listed", Duration::from_secs(2), || {
        d.ns("busy").ok().flatten()
    })?;
    let svc = &entry["services"]["ident"];
    assert_eq!(svc["state"], "partial", "{entry}");
    let failed: Vec<_> = svc["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{entry}");
    assert_eq!(failed[0]["listener"], "udp:0.0.0.0:7867");
    assert!(
        failed[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("in use")),
        "{entry}"
    );
    assert!(
        d.log().contains("netns=busy"),
        "the failure is logged with the namespace name"
    );
    assert_eq!(
        d.ns("fine")?.expect("listed")["services"]["ident"]["state"],
        "up"
    );
    // Once the other program lets go, the retry with backoff takes the port.
    drop(squatter);
    wait_for("busy recovers", Duration::from_secs(10), || {
        d.ns("busy")
            .ok()
            .flatten()
            .filter(|e| e["services"]["ident"]["state"] == "up")
    })?;
    let busy_view = TestNetns::create(staging.path(), "unused")?;
    drop(busy_view);
    let answer = in_netns_file(&busy_in, || {
        udp_exchange(lo(), b"?", Duration::from_millis(500))
    })??;
    assert!(answer.is_some_and(|(b, _)| String::from_utf8_lossy(&b).contains("netns=busy")));
    nix::mount::umount2(&busy_in, nix::mount::MntFlags::MNT_DETACH)?;
    std::fs::remove_file(&busy_in)?;
    Ok(())
}

#[test]
fn attach_by_pid_detaches_when_the_process_exits() -> anyhow::Result<()> {
    if !require_root("attach_by_pid_detaches_when_the_process_exits") {
        return Ok(());
    }
    let d = Daemon::start(IDENT_ON)?;
    let mut child = Command::new("unshare")
        .args(["--net", "sh", "-c", "ip link set lo up && exec sleep 300"])
        .stdin(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let ns_path = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
    // Wait for unshare to have entered its namespace.
    let own =
        std::fs::metadata("/proc/self/ns/net").map(|m| std::os::unix::fs::MetadataExt::ino(&m))?;
    wait_for("child in its namespace", Duration::from_secs(5), || {
        std::fs::metadata(&ns_path)
            .ok()
            .filter(|m| std::os::unix::fs::MetadataExt::ino(m) != own)
    })?;
    std::thread::sleep(Duration::from_millis(100));
    let out = d.ctl(&["attach", "ctr1", "--pid", &pid.to_string()])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entry = d.ns("ctr1")?.expect("attached");
    assert_eq!(entry["source"], format!("pid:{pid}"));
    let answer = wait_for("ident in attached ns", Duration::from_secs(2), || {
        in_netns_file(&ns_path, || {
            udp_exchange(lo(), b"?", Duration::from_millis(200))
        })
        .ok()?
        .ok()?
    })?;
    assert!(String::from_utf8_lossy(&answer.0).contains("netns=ctr1"));
    // Same name twice is refused with a reason.
    let dup = d.ctl(&["attach", "ctr1", "--pid", &pid.to_string()])?;
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already"));
    child.kill()?;
    child.wait()?;
    wait_for("detached after exit", Duration::from_secs(5), || {
        d.ns("ctr1").ok().flatten().is_none().then_some(())
    })?;

    // Attach by path, then explicit detach.
    let dir = tempfile::tempdir()?;
    let p = TestNetns::create(dir.path(), "byfile")?;
    let path = p.path.display().to_string();
    let out = d.ctl(&["attach", "byfile", "--path", &path])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("ident by path", Duration::from_secs(2), || ident(&p, lo()))?;
    assert!(d.ctl(&["detach", "byfile"])?.status.success());
    assert!(d.ns("byfile")?.is_none());

    // Errors: non-zero exit with a one-line reason.
    for args in [
        vec!["detach", "nosuch"],
        vec!["attach", "x", "--pid", "999999999"],
        vec!["attach", "x", "--path", "/etc/hostname"],
    ] {
        let out = d.ctl(&args)?;
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("nsauxctl: "), "{err}");
    }
    Ok(())
}

/// The daemon's sockets other than AF_LOCAL ones (control connections come and go), read
/// until two reads 50 ms apart agree (services open short-lived probe sockets).
fn socket_set(d: &Daemon) -> Vec<String> {
    let read = || {
        let unix: std::collections::HashSet<String> =
            std::fs::read_to_string("/proc/self/net/unix")
                .unwrap_or_default()
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(6).map(|i| format!("socket:[{i}]")))
                .collect();
        let mut v: Vec<String> = d
            .fd_targets()
            .into_iter()
            .filter(|t| t.starts_with("socket:") && !unix.contains(t))
            .collect();
        v.sort();
        v
    };
    let mut last = read();
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(50));
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

#[test]
fn reload_keeps_old_config_on_error_and_unchanged_sockets_on_success() -> anyhow::Result<()> {
    if !require_root("reload_keeps_old_config_on_error_and_unchanged_sockets_on_success") {
        return Ok(());
    }
    let d = Daemon::start(IDENT_ON)?;
    let ns = d.netns("r1")?;
    wait_for("ident", Duration::from_secs(2), || ident(&ns, lo()))?;
    let before = socket_set(&d);
    let list_before = d.ns_list()?;

    d.write_config("[ident]\nenabled = true\nprot = 1\n")?;
    let out = d.ctl(&["reload"])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("prot") && err.contains("old configuration kept"),
        "{err}"
    );
    assert_eq!(
        socket_set(&d),
        before,
        "a failed reload must not touch sockets"
    );
    assert_eq!(d.ns_list()?.len(), list_before.len());
    assert!(ident(&ns, lo()).is_some());

    // SIGHUP with a broken file: logged, nothing changes.
    d.signal(nix::sys::signal::Signal::SIGHUP)?;
    wait_for("reload error logged", Duration::from_secs(5), || {
        d.log().contains("reload failed").then_some(())
    })?;
    assert_eq!(socket_set(&d), before);

    // A valid change: TCP off. UDP sockets must survive, TCP ones go.
    d.write_config("[ident]\nenabled = true\ntcp = false\n")?;
    let out = d.ctl(&["reload"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = socket_set(&d);
    assert_eq!(after.len(), before.len() - 2, "two TCP listeners closed");
    assert!(
        after.iter().all(|s| before.contains(s)),
        "UDP sockets kept across reload"
    );
    let entry = d.ns("r1")?.expect("listed");
    let listeners = entry["services"]["ident"]["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(listeners.iter().all(|l| {
        l["listener"]
            .as_str()
            .is_some_and(|s| s.starts_with("udp:"))
    }));

    // Disable via SIGHUP: everything for the service closes, the namespace stays tracked.
    d.write_config("[ident]\nenabled = false\n")?;
    d.signal(nix::sys::signal::Signal::SIGHUP)?;
    wait_for("ident disabled", Duration::from_secs(5), || {
        d.ns("r1")
            .ok()
            .flatten()
            .filter(|e| e["services"].get("ident").is_none())
    })?;
    assert!(ident(&ns, lo()).is_none());
    Ok(())
}

#[test]
fn per_namespace_overrides_by_glob() -> anyhow::Result<()> {
    if !require_root("per_namespace_overrides_by_glob") {
        return Ok(());
    }
    let d =
        Daemon::start("[[netns]]\nmatch = \"web-*\"\nident = { enabled = true, port = 7999 }\n")?;
    let web = d.netns("web-1")?;
    let db = d.netns("db-1")?;
    wait_for("ident in web-1 on 7999", Duration::from_secs(2), || {
        web.udp_query(
            SocketAddr::from(([127, 0, 0, 1], 7999)),
            b"?",
            Duration::from_millis(200),
        )
        .ok()
        .flatten()
    })?;
    wait_for("db-1 listed", Duration::from_secs(2), || {
        d.ns("db-1").ok().flatten()
    })?;
    assert!(ident(&db, lo()).is_none());
    assert!(
        d.ns("db-1")?.expect("listed")["services"]
            .get("ident")
            .is_none()
    );
    Ok(())
}

#[test]
fn real_ip_netns_add_and_del_in_a_private_mount_namespace() -> anyhow::Result<()> {
    if !require_root("real_ip_netns_add_and_del_in_a_private_mount_namespace")
        || !nsaux_tests::env::require_tool("real_ip_netns", "ip")
    {
        return Ok(());
    }
    // The daemon runs in its own mount namespace with a private tmpfs on /run, so `ip netns`
    // (which always uses /run/netns) works for real without touching the host's entries.
    let dir = tempfile::tempdir()?;
    let run = dir.path().join("run");
    let script = format!(
        "mount --make-rprivate / && mount -t tmpfs nsaux-test /run && mkdir -p /run/netns && exec {} --runtime-dir {} --state-dir {} --config {}",
        bin("nsauxd").display(),
        run.display(),
        dir.path().join("state").display(),
        dir.path().join("nsaux.toml").display()
    );
    std::fs::write(
        dir.path().join("nsaux.toml"),
        format!("host_netns = false\n{IDENT_ON}"),
    )?;
    let log = std::fs::File::create(dir.path().join("log"))?;
    let child = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    /// Stops the daemon (ours, by pid) however the test ends, panics included.
    struct StopOnDrop(std::process::Child);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            if let Ok(pid) = i32::try_from(self.0.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = self.0.wait();
        }
    }
    let pid = child.id();
    let _stop = StopOnDrop(child);
    let ctl = |args: &[&str]| {
        Command::new(bin("nsauxctl"))
            .arg("--runtime-dir")
            .arg(&run)
            .args(args)
            .output()
    };
    let result = (|| -> anyhow::Result<()> {
        wait_for("daemon up", Duration::from_secs(20), || {
            ctl(&["status"]).ok().filter(|o| o.status.success())
        })?;
        let mnt = format!("--mount=/proc/{pid}/ns/mnt");
        let ip = |args: &[&str]| -> anyhow::Result<()> {
            let st = Command::new("nsenter")
                .arg(&mnt)
                .arg("ip")
                .args(args)
                .status()?;
            anyhow::ensure!(st.success(), "ip {args:?} failed");
            Ok(())
        };
        ip(&["netns", "add", "real1"])?;
        ip(&["-n", "real1", "link", "set", "lo", "up"])?;
        let listed = |name: &str| -> bool {
            ctl(&["ns", "list", "--json"])
                .ok()
                .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                .and_then(|v| v.as_array().cloned())
                .is_some_and(|a| {
                    a.iter()
                        .any(|n| n["name"] == name && n["services"]["ident"]["state"] == "up")
                })
        };
        wait_for("real1 served", Duration::from_secs(5), || {
            listed("real1").then_some(())
        })?;
        let out = Command::new("nsenter")
            .arg(&mnt)
            .args([
                "ip",
                "netns",
                "exec",
                "real1",
                "bash",
                "-c",
                "exec 3<>/dev/tcp/127.0.0.1/7867 && cat <&3",
            ])
            .output()?;
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("netns=real1"),
            "{out:?}"
        );
        ip(&["netns", "del", "real1"])?;
        wait_for("real1 gone", Duration::from_secs(5), || {
            (!listed("real1")).then_some(())
        })?;
        Ok(())
    })();
    drop(_stop);
    if result.is_err() {
        eprintln!(
            "{}",
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
        );
    }
    result
}

#[test]
fn single_instance_clean_stop_and_bad_config_exit_codes() -> anyhow::Result<()> {
    if !require_root("single_instance_clean_stop_and_bad_config_exit_codes") {
        return Ok(());
    }
    let mut d = Daemon::start(IDENT_ON)?;
    let p = d.dir.path().to_path_buf();
    // Second daemon on the same runtime dir: refused with a clear reason.
    let out = Command::new(bin("nsauxd"))
        .arg("--runtime-dir")
        .arg(p.join("run"))
        .arg("--config")
        .arg(p.join("nsaux.toml"))
        .args(["--no-host-netns", "--netns-dir"])
        .arg(p.join("other"))
        .output()?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another nsauxd"),
        "{out:?}"
    );
    // Bad config: EX_CONFIG (78) naming the field.
    std::fs::write(p.join("bad.toml"), "[ident]\nport = \"eighty\"\n")?;
    let out = Command::new(bin("nsauxd"))
        .arg("--config")
        .arg(p.join("bad.toml"))
        .output()?;
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("port"),
        "{out:?}"
    );
    // validate agrees, offline.
    let out = Command::new(bin("nsauxctl"))
        .args(["validate", "--config"])
        .arg(p.join("bad.toml"))
        .output()?;
    assert!(!out.status.success());
    // SIGTERM: clean exit 0, control socket removed.
    let st = d.stop()?;
    assert!(st.success(), "{st}");
    assert!(!p.join("run/control.sock").exists());
    // Talking to a stopped daemon: non-zero, one line.
    let out = d.ctl(&["status"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("daemon not running"));
    Ok(())
}

#[test]
fn control_socket_is_private() -> anyhow::Result<()> {
    if !require_root("control_socket_is_private") {
        return Ok(());
    }
    let d = Daemon::start("")?;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.runtime_dir().join("control.sock"))?.permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let status = d.ctl_json(&["status"])?;
    assert_eq!(status["namespaces"], 0);
    assert_eq!(status["host_netns"], false);
    let out = d.ctl(&["ns", "list"])?;
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("NAME"));
    Ok(())
}

#[test]
fn shipped_example_configs_validate() -> anyhow::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(bin("nsauxctl"))
                .arg("validate")
                .arg("--config")
                .arg(&path)
                .output()?;
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n > 0, "no example configs found in {}", dir.display());
    Ok(())
}

#[test]
fn tells_systemd_ready_and_stopping() -> anyhow::Result<()> {
    if !require_root("tells_systemd_ready_and_stopping") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path)?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))?;
    let path = sock_path.display().to_string();
    let mut d = Daemon::start_with_env("", &[], &[("NOTIFY_SOCKET", path.as_str())])?;
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf)?;
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    assert!(d.stop()?.success());
    let n = sock.recv(&mut buf)?;
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    Ok(())
}

#[test]
fn follows_several_namespace_directories() -> anyhow::Result<()> {
    if !require_root("follows_several_namespace_directories") {
        return Ok(());
    }
    let other = tempfile::tempdir()?;
    let other_path = other.path().display().to_string();
    let d = Daemon::start_with(IDENT_ON, &["--netns-dir", &other_path])?;
    let a = d.netns("in-default")?;
    let b = TestNetns::create(other.path(), "in-other")?;
    for ns in [&a, &b] {
        let (line, _) = wait_for("ident", Duration::from_secs(2), || ident(ns, lo()))?;
        assert_eq!(field(&line, "netns"), Some(ns.name.as_str()));
    }
    let entry = d.ns("in-other")?.expect("listed");
    assert_eq!(entry["source"], format!("dir:{other_path}"));
    Ok(())
}

#[test]
fn help_documents_every_flag_and_version_works() -> anyhow::Result<()> {
    let out = Command::new(bin("nsauxd")).arg("--help").output()?;
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--runtime-dir",
        "--state-dir",
        "--netns-dir",
        "--no-host-netns",
        "--version",
    ] {
        assert!(help.contains(flag), "nsauxd --help lacks {flag}:\n{help}");
    }
    for b in ["nsauxd", "nsauxctl"] {
        let out = Command::new(bin(b)).arg("--version").output()?;
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    }
    let out = Command::new(bin("nsauxctl")).arg("--help").output()?;
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "status", "ns", "attach", "detach", "reload", "validate", "rpc", "dns", "ntp",
    ] {
        assert!(help.contains(cmd), "nsauxctl --help lacks {cmd}:\n{help}");
    }
    Ok(())
}
