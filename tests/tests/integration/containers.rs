//! Containers and lifecycle hooks: a real `runc` container with `nsauxctl oci-hook` in its
//! `config.json`, the `nsaux-cni` plugin chained after the real `bridge` plugin, attachments and
//! registrations across `kill -9`, and each README recipe of the "Containers" section (read from
//! the README itself where it is a file). Recipes whose runtime is not run here are emulated, as
//! each test says.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nsaux_tests::daemon::{Daemon, journal_files, wait_for};
use nsaux_tests::env::{bin, bin_dir, require};
use nsaux_tests::netns::{TestNetns, in_netns_file};
use nsaux_tests::rpc::{Cred, PMAP, call, connect_abstract, result_u32, rpcb, stream_call};
use serde_json::{Value, json};

const DNS_RECORD: &str = "[dns]\nlocal_domains = [\"lan\"]\n\
    records = [{ name = \"w.lan\", addr = \"10.0.0.7\" }]\n[ntp]\nlocal_stratum = 10\n";

/// The fenced block after `<!-- recipe:NAME -->` in the README.
fn recipe(name: &str) -> anyhow::Result<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))?;
    let marker = format!("<!-- recipe:{name} -->");
    let rest = readme
        .split_once(&marker)
        .map(|(_, r)| r)
        .with_context(|| format!("README has no {marker}"))?;
    let body = rest
        .split_once("```")
        .and_then(|(_, r)| r.split_once('\n'))
        .and_then(|(_, r)| r.split_once("```"))
        .map(|(b, _)| b.to_owned())
        .with_context(|| format!("no code block after {marker}"))?;
    Ok(body)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `program args` with `stdin` and returns its output and wall time.
fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> anyhow::Result<(Output, Duration)> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    child.stdin.take().context("stdin")?.write_all(stdin)?;
    let out = child.wait_with_output()?;
    Ok((out, started.elapsed()))
}

/// A process in a namespace of its own (lo up), waited for until it is in it.
fn spawn_in_new_netns() -> anyhow::Result<(Child, PathBuf)> {
    let child = Command::new("unshare")
        .args(["--net", "sh", "-c", "ip link set lo up && exec sleep 60"])
        .stdin(Stdio::null())
        .spawn()?;
    let ns = PathBuf::from(format!("/proc/{}/ns/net", child.id()));
    let own = std::fs::metadata("/proc/self/ns/net")?.ino();
    let comm = format!("/proc/{}/comm", child.id());
    wait_for("process in its namespace", Duration::from_secs(5), || {
        let moved = std::fs::metadata(&ns).ok().is_some_and(|m| m.ino() != own);
        let exec = std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep");
        (moved && exec).then_some(())
    })?;
    Ok((child, ns))
}

fn ctl_ok(d: &Daemon, args: &[&str]) -> anyhow::Result<()> {
    let out = d.ctl(args)?;
    if !out.status.success() {
        bail!("nsauxctl {args:?}: {}", text(&out.stderr));
    }
    Ok(())
}

/// `rpcinfo -p 127.0.0.1` inside the namespace file `ns`.
fn rpcinfo(ns: &Path) -> String {
    Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["rpcinfo", "-p", "127.0.0.1"])
        .output()
        .map(|o| text(&o.stdout))
        .unwrap_or_default()
}

/// Registers `prog` v1 over the abstract socket inside `ns`, waiting for the portmapper.
fn register(ns: &Path, prog: u32) -> anyhow::Result<()> {
    let ns = ns.to_path_buf();
    wait_for("SET acknowledged", Duration::from_secs(5), || {
        in_netns_file(&ns, move || {
            let mut s = connect_abstract("/run/rpcbind.sock").ok()?;
            let args = rpcb(prog, 1, "udp", "0.0.0.0.3.1", "0");
            let r = stream_call(&mut s, &call(9, PMAP, 4, 1, Cred::None, &args))?;
            (result_u32(&r) == Some(1)).then_some(())
        })
        .ok()
        .flatten()
    })
}

fn oci_state(id: &str, pid: u32, status: &str, annotations: &Value) -> Vec<u8> {
    json!({ "ociVersion": "1.0.2", "id": id, "status": status, "pid": pid,
        "bundle": "/nonexistent", "annotations": annotations })
    .to_string()
    .into_bytes()
}

/// The OCI hook as a runtime runs it: `args` from the hook entry, state on stdin.
fn oci_hook(d: &Daemon, runtime_dir: &Path, state: &[u8]) -> anyhow::Result<(Output, Duration)> {
    run_with_stdin(
        Command::new(bin("nsauxctl")).args([
            "oci-hook",
            "--runtime-dir",
            &runtime_dir.display().to_string(),
            "--config",
            &d.dir.path().join("nsaux.toml").display().to_string(),
        ]),
        state,
    )
}

/// runc with the README's `config.json` hook entries: while the busybox container runs, its
/// namespace answers rpcinfo, dig and ntpdig from nsaux; when it exits, it is gone and every fd
/// is released.
#[test]
fn runc_container_is_served_while_it_runs() -> anyhow::Result<()> {
    let test = "runc_container_is_served_while_it_runs";
    if !require(test, &["runc", "busybox", "rpcinfo", "dig", "ntpdig"]) {
        return Ok(());
    }
    let d = Daemon::start(DNS_RECORD)?;
    let work = tempfile::tempdir()?;
    let bundle = work.path().join("bundle");
    let rootbin = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&rootbin)?;
    std::fs::copy("/bin/busybox", rootbin.join("busybox"))?;
    for applet in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", rootbin.join(applet))?;
    }
    let spec = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .output()?;
    anyhow::ensure!(spec.status.success(), "runc spec: {}", text(&spec.stderr));
    let mut config: Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)?;
    let snippet: Value = serde_json::from_str(&format!("{{{}}}", recipe("runc-hooks")?))?;
    let mut hooks = snippet["hooks"].clone();
    for stage in ["createRuntime", "poststop"] {
        let entry = &mut hooks[stage][0];
        assert_eq!(entry["path"], "/usr/sbin/nsauxctl");
        entry["path"] = json!(bin("nsauxctl"));
        let args = entry["args"].as_array_mut().context("args")?;
        args.extend([
            json!("--runtime-dir"),
            json!(d.runtime_dir()),
            json!("--config"),
            json!(d.dir.path().join("nsaux.toml")),
        ]);
    }
    config["hooks"] = hooks;
    config["annotations"] = snippet["annotations"].clone();
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(["/bin/sleep", "60"]);
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&config)?)?;

    let id = format!("nsaux-test-{}", std::process::id());
    let root = work.path().join("runc-root");
    let baseline = d.fd_count();
    let log = std::fs::File::create(work.path().join("runc.log"))?;
    let mut runc = Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let runc_log = || std::fs::read_to_string(work.path().join("runc.log")).unwrap_or_default();
    let entry = wait_for("container attached as web", Duration::from_secs(15), || {
        d.ns("web").ok().flatten()
    })
    .with_context(runc_log)?;
    assert_eq!(entry["attached"][0]["origin"], "hook", "{entry}");
    assert_eq!(entry["attached"][0]["key"], format!("oci:{id}"), "{entry}");
    // The hook ran at createRuntime, before `runc state` answers: the pid is the attach's.
    let pid: u32 = entry["source"]
        .as_str()
        .and_then(|s| s.strip_prefix("pid:"))
        .and_then(|p| p.parse().ok())
        .context("attached by pid")?;
    let ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let ino = std::fs::metadata(&ns)?.ino();
    let in_ns = |args: &[&str]| -> String {
        Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args(args)
            .output()
            .map(|o| text(&o.stdout))
            .unwrap_or_default()
    };
    wait_for("rpcinfo in the container", Duration::from_secs(5), || {
        rpcinfo(&ns).contains("portmapper").then_some(())
    })?;
    wait_for("dig in the container", Duration::from_secs(5), || {
        (in_ns(&[
            "dig",
            "+short",
            "+time=1",
            "+tries=1",
            "@127.0.0.53",
            "w.lan",
            "A",
        ])
        .trim()
            == "10.0.0.7")
            .then_some(())
    })?;
    let ntp = in_ns(&["ntpdig", "-j", "-t", "2", "127.0.0.1"]);
    assert!(ntp.contains("\"offset\""), "ntpdig: {ntp}");

    // The hook again, as a runtime retrying it: a no-op, and quick.
    let (out, again) = oci_hook(
        &d,
        &d.runtime_dir(),
        &oci_state(&id, pid, "created", &json!({ "io.nsaux.name": "web" })),
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let webs = d
        .ns_list()?
        .iter()
        .filter(|n| n["name"].as_str().is_some_and(|s| s.starts_with("web")))
        .count();
    assert_eq!(webs, 1, "a second hook run made another namespace");
    eprintln!("{test}: oci-hook attach (already attached) took {again:?}");
    assert!(again < Duration::from_secs(1), "{again:?}");

    let kill = Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["kill", &id, "KILL"])
        .status()?;
    assert!(kill.success());
    wait_for("runc run to end", Duration::from_secs(10), || {
        runc.try_wait().ok().flatten()
    })?;
    wait_for("container namespace gone", Duration::from_secs(5), || {
        d.ns("web").ok().flatten().is_none().then_some(())
    })?;
    d.wait_released(baseline, ino)?;
    let _ = Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["delete", "--force", &id])
        .output();
    Ok(())
}

/// The podman/CRI-O recipe, emulated: the shipped hooks.d file is read and its hook run the way
/// podman runs it (state on stdin) at prestart and poststop; ids are shortened and made unique,
/// a second run is a no-op, and a daemon that is down fails or warns as `[hooks]` says.
#[test]
fn hooks_d_entry_attaches_names_uniquely_and_follows_on_daemon_down() -> anyhow::Result<()> {
    let test = "hooks_d_entry_attaches_names_uniquely_and_follows_on_daemon_down";
    if !require(test, &["unshare"]) {
        return Ok(());
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/oci-hooks.d/nsaux.json");
    let hook: Value = serde_json::from_slice(&std::fs::read(file)?)?;
    assert_eq!(hook["version"], "1.0.0");
    assert_eq!(hook["hook"]["path"], "/usr/sbin/nsauxctl");
    assert_eq!(hook["hook"]["args"], json!(["nsauxctl", "oci-hook"]));
    assert_eq!(hook["stages"], json!(["prestart", "poststop"]));

    let d = Daemon::start("")?;
    let (mut a, _) = spawn_in_new_netns()?;
    let (mut b, _) = spawn_in_new_netns()?;
    let id_a = format!("{}aa", "0123456789ab".repeat(5));
    let id_b = format!("{}bb", "0123456789ab".repeat(5));
    let mut times = Vec::new();
    for (id, pid) in [(&id_a, a.id()), (&id_b, b.id()), (&id_a, a.id())] {
        let (out, took) = oci_hook(
            &d,
            &d.runtime_dir(),
            &oci_state(id, pid, "created", &json!({})),
        )?;
        assert!(out.status.success(), "{}", text(&out.stderr));
        times.push(took);
    }
    let names: Vec<String> = d
        .ns_list()?
        .iter()
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"0123456789ab".to_owned()), "{names:?}");
    assert!(names.contains(&"0123456789ab-2".to_owned()), "{names:?}");
    for id in [&id_a, &id_b, &id_a] {
        let (out, took) = oci_hook(
            &d,
            &d.runtime_dir(),
            &oci_state(id, 0, "stopped", &json!({})),
        )?;
        assert!(out.status.success(), "{}", text(&out.stderr));
        times.push(took);
    }
    assert!(d.ns_list()?.is_empty());
    eprintln!(
        "{test}: oci-hook wall times (attach, attach, again, detach, detach, again): {times:?}"
    );
    assert!(
        times.iter().all(|t| *t < Duration::from_secs(1)),
        "{times:?}"
    );

    // The daemon is down: fail (one line, non-zero) by default; warn lets the container start.
    let nowhere = d.dir.path().join("nowhere");
    let state = oci_state(&id_a, a.id(), "created", &json!({}));
    let (out, _) = oci_hook(&d, &nowhere, &state)?;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nsauxd is not running"), "{err}");
    d.write_config("[hooks]\non_daemon_down = \"warn\"\n")?;
    let (out, _) = oci_hook(&d, &nowhere, &state)?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("warning"));
    let (out, _) = oci_hook(&d, &nowhere, &oci_state(&id_a, 0, "stopped", &json!({})))?;
    assert!(
        out.status.success(),
        "poststop with the daemon down: {}",
        text(&out.stderr)
    );
    // An invalid policy is refused by validate.
    d.write_config("[hooks]\non_daemon_down = \"ignore\"\n")?;
    let out = d.ctl(&[
        "validate",
        "--config",
        &d.dir.path().join("nsaux.toml").display().to_string(),
    ])?;
    assert!(!out.status.success());
    for c in [&mut a, &mut b] {
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(())
}

/// Calls a CNI plugin the way a runtime does: environment plus the config on stdin, in the
/// "host" namespace `host`, for the container namespace `pod`.
fn cni(
    plugin: &Path,
    host: &TestNetns,
    pod: &TestNetns,
    command: &str,
    conf: &Value,
) -> anyhow::Result<Output> {
    Ok(run_with_stdin(
        Command::new("nsenter")
            .arg(format!("--net={}", host.path.display()))
            .arg(plugin)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "f00dfeedbeef0123456789")
            .env("CNI_NETNS", &pod.path)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .env(
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
            ),
        conf.to_string().as_bytes(),
    )?
    .0)
}

/// The README's CNI chain: the real `bridge` plugin (host-local IPAM) makes the pod's interface
/// in a test-made namespace, then `nsaux-cni` ADD attaches it and passes `prevResult` through;
/// CHECK, a repeated ADD, VERSION, DEL (twice) and a daemon that is down answer per the spec.
#[test]
fn cni_plugin_chained_after_bridge_adds_checks_and_deletes() -> anyhow::Result<()> {
    let test = "cni_plugin_chained_after_bridge_adds_checks_and_deletes";
    if !require(
        test,
        &["/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "rpcinfo"],
    ) {
        return Ok(());
    }
    let d = Daemon::start("")?;
    let dir = tempfile::tempdir()?;
    let host = TestNetns::create(dir.path(), "cni-host")?;
    let pod = TestNetns::create(dir.path(), "pod")?;
    let list: Value = serde_json::from_str(&recipe("cni-conflist")?)?;
    let version = list["cniVersion"].clone();
    let net = list["name"].clone();
    let conf_of = |plugin: &Value, prev: Option<&Value>| {
        let mut c = plugin.clone();
        c["cniVersion"] = version.clone();
        c["name"] = net.clone();
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    };
    let mut bridge = list["plugins"][0].clone();
    bridge["ipam"]["dataDir"] = json!(dir.path().join("ipam"));
    let mut nsaux = list["plugins"][1].clone();
    assert_eq!(nsaux["type"], "nsaux-cni");
    nsaux["runtimeDir"] = json!(d.runtime_dir());
    nsaux["nsauxConfig"] = json!(d.dir.path().join("nsaux.toml"));
    let bridge_bin = Path::new("/usr/lib/cni/bridge");
    let plugin = bin("nsaux-cni");

    let out = cni(bridge_bin, &host, &pod, "ADD", &conf_of(&bridge, None))?;
    anyhow::ensure!(out.status.success(), "bridge ADD: {}", text(&out.stdout));
    let prev: Value = serde_json::from_slice(&out.stdout)?;
    assert!(prev["ips"][0]["address"].is_string(), "{prev}");
    let add = conf_of(&nsaux, Some(&prev));
    let out = cni(&plugin, &host, &pod, "ADD", &add)?;
    assert!(out.status.success(), "ADD: {}", text(&out.stdout));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout)?,
        prev,
        "prevResult changed"
    );
    let entry = d.ns("default.web-0")?.context("pod attached")?;
    assert_eq!(entry["attached"][0]["origin"], "cni", "{entry}");
    wait_for("rpcinfo in the pod", Duration::from_secs(5), || {
        rpcinfo(&pod.path).contains("portmapper").then_some(())
    })?;
    let out = cni(&plugin, &host, &pod, "CHECK", &add)?;
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "CHECK: {}",
        text(&out.stdout)
    );
    // A repeated ADD is a no-op (no second label).
    let out = cni(&plugin, &host, &pod, "ADD", &add)?;
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(d.ns_list()?.len(), 1);
    let out = cni(
        &plugin,
        &host,
        &pod,
        "VERSION",
        &json!({ "cniVersion": "1.0.0" }),
    )?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    assert!(
        v["supportedVersions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("1.0.0"))),
        "{v}"
    );

    for _ in 0..2 {
        let out = cni(&plugin, &host, &pod, "DEL", &add)?;
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "DEL: {}",
            text(&out.stdout)
        );
    }
    assert!(d.ns("default.web-0")?.is_none());
    let out = cni(&plugin, &host, &pod, "CHECK", &add)?;
    assert!(!out.status.success());
    let err: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(err["cniVersion"], version);
    assert!(err["code"].as_u64().is_some_and(|c| c >= 100), "{err}");
    assert!(err["msg"].is_string(), "{err}");

    // The daemon is down: "try again later" (11) under `fail`, the result passed under `warn`.
    let mut down = add.clone();
    down["runtimeDir"] = json!(d.dir.path().join("nowhere"));
    let out = cni(&plugin, &host, &pod, "ADD", &down)?;
    assert!(!out.status.success());
    let err: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(err["code"], 11, "{err}");
    d.write_config("[hooks]\non_daemon_down = \"warn\"\n")?;
    let out = cni(&plugin, &host, &pod, "ADD", &down)?;
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout)?, prev);
    let out = cni(&plugin, &host, &pod, "DEL", &down)?;
    assert!(
        out.status.success(),
        "DEL with the daemon down: {}",
        text(&out.stdout)
    );

    let out = cni(
        bridge_bin,
        &host,
        &pod,
        "DEL",
        &conf_of(&bridge, Some(&prev)),
    )?;
    assert!(out.status.success(), "bridge DEL: {}", text(&out.stdout));
    Ok(())
}

/// Attach by pid and by path, register in both, add a DNS record, `kill -9`, restart: both are
/// back under their names and cookies with their registrations (kept past the journal sweep)
/// and the record; one whose process died meanwhile is forgotten; the pid watch works again
/// after the restart.
#[test]
fn attachments_and_registrations_come_back_after_kill9() -> anyhow::Result<()> {
    let test = "attachments_and_registrations_come_back_after_kill9";
    if !require(test, &["rpcinfo", "unshare", "dig"]) {
        return Ok(());
    }
    let mut d = Daemon::start(
        "[rpcbind]\njournal_sweep_delay_secs = 1\n[dns]\nlocal_domains = [\"lan\"]\n",
    )?;
    let dir = tempfile::tempdir()?;
    let by_path = TestNetns::create(dir.path(), "p")?;
    let (mut sleeper, pid_ns) = spawn_in_new_netns()?;
    let (mut doomed, _) = spawn_in_new_netns()?;
    ctl_ok(&d, &["attach", "bypid", "--pid", &sleeper.id().to_string()])?;
    ctl_ok(
        &d,
        &[
            "attach",
            "bypath",
            "--path",
            &by_path.path.display().to_string(),
        ],
    )?;
    ctl_ok(&d, &["attach", "doomed", "--pid", &doomed.id().to_string()])?;
    register(&pid_ns, 300_001)?;
    register(&by_path.path, 300_002)?;
    ctl_ok(
        &d,
        &["dns", "add", "--ns", "bypath", "keep.lan", "10.7.7.7"],
    )?;
    ctl_ok(
        &d,
        &["dns", "add", "--ns", "bypath", "gone.lan", "10.7.7.8"],
    )?;
    ctl_ok(
        &d,
        &["dns", "remove", "--ns", "bypath", "gone.lan", "10.7.7.8"],
    )?;
    let id_of = |d: &Daemon, n: &str| d.ns(n).ok().flatten().map(|e| e["id"].clone());
    let before = (id_of(&d, "bypid"), id_of(&d, "bypath"));
    assert!(before.0.is_some() && before.1.is_some());

    d.kill9()?;
    doomed.kill()?;
    doomed.wait()?;
    d.restart()?;
    wait_for("attachments back", Duration::from_secs(5), || {
        (id_of(&d, "bypid").is_some() && id_of(&d, "bypath").is_some()).then_some(())
    })?;
    assert_eq!((id_of(&d, "bypid"), id_of(&d, "bypath")), before);
    assert!(
        d.ns("doomed")?.is_none(),
        "a dead process's namespace came back"
    );
    // Past the journal sweep (1 s), the registrations are still there.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(rpcinfo(&pid_ns).contains("300001"), "{}", rpcinfo(&pid_ns));
    assert!(
        rpcinfo(&by_path.path).contains("300002"),
        "{}",
        rpcinfo(&by_path.path)
    );
    let journals = journal_files(&d.state_dir());
    let rpcbind = journals
        .iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "rpcbind"));
    assert_eq!(rpcbind.count(), 2, "{journals:?}");
    // The run-time DNS record is back; the removed one stays removed.
    let dig = |name: &str| {
        Command::new("nsenter")
            .arg(format!("--net={}", by_path.path.display()))
            .args([
                "dig",
                "+short",
                "+time=1",
                "+tries=1",
                "@127.0.0.53",
                name,
                "A",
            ])
            .output()
            .map(|o| text(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(dig("keep.lan"), "10.7.7.7");
    assert_eq!(dig("gone.lan"), "");
    sleeper.kill()?;
    sleeper.wait()?;
    wait_for("pid watch after restart", Duration::from_secs(5), || {
        d.ns("bypid").ok().flatten().is_none().then_some(())
    })?;
    Ok(())
}

/// The Docker recipe, emulated: its `netns_dirs` line validates, and a namespace file
/// bind-mounted into a watched directory (what Docker makes in /run/docker/netns) is served
/// until the file is removed (Docker's deferred removal), then released.
#[test]
fn docker_style_namespace_files_are_served_until_removed() -> anyhow::Result<()> {
    let test = "docker_style_namespace_files_are_served_until_removed";
    if !require(test, &["rpcinfo"]) {
        return Ok(());
    }
    let d = Daemon::start("")?;
    let cfg = d.dir.path().join("docker.toml");
    std::fs::write(
        &cfg,
        "netns_dirs = [\"/run/netns\", \"/run/docker/netns\"]\n",
    )?;
    ctl_ok(&d, &["validate", "--config", &cfg.display().to_string()])?;
    let baseline = d.fd_count();
    let real = tempfile::tempdir()?;
    let sandbox = TestNetns::create(real.path(), "sb")?;
    let ino = std::fs::metadata(&sandbox.path)?.ino();
    let file = d.netns_dir().join("1a2b3c4d5e6f");
    std::fs::File::create(&file)?;
    nix::mount::mount(
        Some(&sandbox.path),
        &file,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )?;
    wait_for("sandbox served", Duration::from_secs(5), || {
        d.ns("1a2b3c4d5e6f").ok().flatten()
    })?;
    wait_for("rpcinfo in the sandbox", Duration::from_secs(5), || {
        rpcinfo(&file).contains("portmapper").then_some(())
    })?;
    drop(sandbox);
    // The "container" stopped, but the file stays until Docker removes it: still served.
    std::thread::sleep(Duration::from_millis(200));
    assert!(d.ns("1a2b3c4d5e6f")?.is_some());
    nix::mount::umount2(&file, nix::mount::MntFlags::MNT_DETACH)?;
    std::fs::remove_file(&file)?;
    wait_for("sandbox gone", Duration::from_secs(5), || {
        d.ns("1a2b3c4d5e6f").ok().flatten().is_none().then_some(())
    })?;
    d.wait_released(baseline, ino)?;
    Ok(())
}

/// The LXC/Incus recipe, emulated: the README's `start-host` script run with `LXC_NAME` and
/// `LXC_PID` of a process in a test namespace (its `nsauxctl` pointed at the test daemon); the
/// namespace goes when that process exits.
#[test]
fn lxc_start_host_script_attaches_the_container() -> anyhow::Result<()> {
    let test = "lxc_start_host_script_attaches_the_container";
    if !require(test, &["unshare", "sh"]) {
        return Ok(());
    }
    let d = Daemon::start("")?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("lxc-start-host");
    std::fs::write(&script, recipe("lxc-hook")?)?;
    // `nsauxctl` on PATH is a wrapper naming the test daemon's runtime directory.
    let wrap = dir.path().join("nsauxctl");
    std::fs::write(
        &wrap,
        format!(
            "#!/bin/sh\nexec {} --runtime-dir {} \"$@\"\n",
            bin("nsauxctl").display(),
            d.runtime_dir().display()
        ),
    )?;
    for f in [&script, &wrap] {
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let (mut init, ns) = spawn_in_new_netns()?;
    let path = format!(
        "{}:{}:/usr/sbin:/usr/bin:/sbin:/bin",
        dir.path().display(),
        bin_dir().display()
    );
    let out = Command::new(&script)
        .args(["c1", "lxc", "start-host"])
        .env("PATH", path)
        .env("LXC_NAME", "c1")
        .env("LXC_PID", init.id().to_string())
        .output()?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("rpcinfo in the container", Duration::from_secs(5), || {
        rpcinfo(&ns).contains("portmapper").then_some(())
    })?;
    init.kill()?;
    init.wait()?;
    wait_for("container gone", Duration::from_secs(5), || {
        d.ns("c1").ok().flatten().is_none().then_some(())
    })?;
    Ok(())
}

/// The systemd-nspawn recipe, emulated: attach by the machine leader's pid (a process in a
/// test namespace), served under the machine's name, detached when the leader exits.
#[test]
fn nspawn_leader_attach_serves_the_machine() -> anyhow::Result<()> {
    let test = "nspawn_leader_attach_serves_the_machine";
    if !require(test, &["unshare", "dig"]) {
        return Ok(());
    }
    let d = Daemon::start(DNS_RECORD)?;
    let (mut leader, ns) = spawn_in_new_netns()?;
    ctl_ok(
        &d,
        &["attach", "machine1", "--pid", &leader.id().to_string()],
    )?;
    wait_for("dig in the machine", Duration::from_secs(5), || {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args([
                "dig",
                "+short",
                "+time=1",
                "+tries=1",
                "@127.0.0.53",
                "w.lan",
                "A",
            ])
            .output()
            .ok()?;
        (text(&out.stdout).trim() == "10.0.0.7").then_some(())
    })?;
    leader.kill()?;
    leader.wait()?;
    wait_for("machine gone", Duration::from_secs(5), || {
        d.ns("machine1").ok().flatten().is_none().then_some(())
    })?;
    Ok(())
}
