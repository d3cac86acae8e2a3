//! Identity races and hostile names (issue 10, items 5 and 6): path-socket callers routed by
//! pidfd and refused with an RPC reply when nsaux does not serve them or they are gone; FIFOs
//! and symlinks in a watched directory; one label per namespace; names with newlines and
//! terminal escapes shown escaped in `nsauxctl` tables and the daemon's log.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::env::{require, require_root};
use nsaux_tests::netns::TestNetns;
use nsaux_tests::rpc::{Cred, PMAP, call, connect_abstract, rpcb, stream_call};

const ON: &str = "[rpcbind]\nenabled = true\n";
const ABSTRACT: &str = "/run/rpcbind.sock";
const EVIL: &str = "evil\n\x1b[31mred";
const EVIL_ESCAPED: &str = "evil\\n\\u{1b}[31mred";

/// Connects to the path socket, sends a NULL call and prints the reply record in hex.
const NULL_CALLER: &str = r#"
use Socket;
socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
connect($s, pack_sockaddr_un($ARGV[0])) or die "connect: $!";
syswrite($s, pack("N*", 0x80000028, 0x1234, 0, 2, 100000, 2, 0, 0, 0, 0, 0)) == 44 or die "write: $!";
$SIG{ALRM} = sub { print "timeout\n"; exit 1 };
alarm 3;
my $buf = "";
while (length($buf) < 24) { my $n = sysread($s, $buf, 4096, length $buf); last unless $n; }
print unpack("H*", $buf), "\n";
"#;

/// The hex a NULL call gets when it is served (last fragment of 24 bytes; xid 0x1234; REPLY;
/// MSG_ACCEPTED; AUTH_NONE verifier; SUCCESS).
const SERVED: &str = "800000180000123400000001000000000000000000000000";
/// The hex of the refusal (last fragment of 20 bytes; xid 0x1234; REPLY; MSG_DENIED;
/// AUTH_ERROR; AUTH_TOOWEAK).
const REFUSED: &str = "800000140000123400000001000000010000000100000005";

/// A NULL call over the daemon's path socket from a process inside `ns` (a process, since the
/// daemon looks at the caller's process, not a thread that entered another namespace); the
/// reply in hex.
fn path_null(ns: &TestNetns, sock: &Path) -> anyhow::Result<String> {
    let out = ns
        .command("perl")
        .args(["-e", NULL_CALLER])
        .arg(sock)
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Waits until the path socket routes `ns`'s callers to its portmapper.
fn wait_routed(d: &Daemon, ns: &TestNetns) -> anyhow::Result<()> {
    let sock = d.rpcbind_socket();
    wait_for("path socket routing", Duration::from_secs(5), || {
        path_null(ns, &sock)
            .ok()
            .filter(|r| r.starts_with(SERVED))
            .map(|_| ())
    })
}

/// Runs `script` in `ns_path` with a private `/run` whose `rpcbind.sock` is the daemon's.
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

#[test]
fn unserved_namespace_gets_an_rpc_refusal_not_sigpipe() -> anyhow::Result<()> {
    if !require(
        "unserved_namespace_gets_an_rpc_refusal_not_sigpipe",
        &["rpcinfo", "perl"],
    ) {
        return Ok(());
    }
    let d = Daemon::start(ON)?;
    let a = d.netns("served")?;
    wait_routed(&d, &a)?;
    let other = tempfile::tempdir()?;
    let stranger = TestNetns::create(other.path(), "stranger")?;
    for cmd in ["rpcinfo -p", "rpcinfo"] {
        let out = in_private_run(
            &stranger.path,
            &d.rpcbind_socket(),
            &format!("{cmd}; echo \"rc=$?\""),
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        // 141 = killed by SIGPIPE; an RPC error makes rpcinfo exit 1 and say why.
        assert!(text.contains("rc=1"), "{cmd}: {text} / {err}");
        assert!(
            err.contains("RPC: Authentication error"),
            "{cmd}: stderr {err}"
        );
    }
    wait_for("refusal logged", Duration::from_secs(2), || {
        let log = d.log();
        (log.contains("does not serve; refused") && log.contains("netns=net:[")).then_some(())
    })?;
    // The served namespace is still served, by a real client too.
    wait_routed(&d, &a)?;
    let out = in_private_run(&a.path, &d.rpcbind_socket(), "rpcinfo -p")?;
    assert!(out.status.success(), "{out:?}");
    Ok(())
}

/// Connects to `sock` from a process in `ns` that then exits (and is reaped) while its child
/// keeps the connection, sends a NULL call and prints the reply in hex. The daemon is stopped
/// meanwhile, so it only looks at the caller once the connecting process is gone.
const ORPHAN_CALLER: &str = r#"
use Socket;
socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
connect($s, pack_sockaddr_un($ARGV[0])) or die "connect: $!";
my $pp = $$;
my $pid = fork();
die "fork: $!" unless defined $pid;
exit 0 if $pid;
while (getppid() == $pp) { select(undef, undef, undef, 0.01); }
syswrite($s, pack("N*", 0x80000028, 0x1234, 0, 2, 100000, 2, 0, 0, 0, 0, 0)) == 44 or die "write: $!";
$SIG{ALRM} = sub { print "timeout\n"; exit 1 };
alarm 5;
my $buf = "";
while (length($buf) < 24) { my $n = sysread($s, $buf, 4096, length $buf); last unless $n; }
print unpack("H*", $buf), "\n";
"#;

#[test]
fn caller_whose_process_is_gone_is_refused() -> anyhow::Result<()> {
    if !require("caller_whose_process_is_gone_is_refused", &["perl"]) {
        return Ok(());
    }
    let d = Daemon::start(ON)?;
    let a = d.netns("served")?;
    wait_routed(&d, &a)?;
    d.signal(Signal::SIGSTOP)?;
    let run = || -> anyhow::Result<String> {
        let mut child = a
            .command("perl")
            .args(["-e", ORPHAN_CALLER])
            .arg(d.rpcbind_socket())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        // Reaps the connecting process: its pid is free for reuse from here on.
        let status = child.wait()?;
        anyhow::ensure!(status.success(), "connecting process failed: {status}");
        std::thread::sleep(Duration::from_millis(100));
        d.signal(Signal::SIGCONT)?;
        let mut text = String::new();
        stdout.read_to_string(&mut text)?;
        Ok(text)
    };
    let got = run();
    d.signal(Signal::SIGCONT)?;
    let got = got?;
    assert_eq!(got.trim(), REFUSED, "{got}");
    wait_for("gone caller logged", Duration::from_secs(2), || {
        d.log().contains("caller's process is gone").then_some(())
    })?;
    // Callers that are there are still routed.
    wait_routed(&d, &a)?;
    Ok(())
}

#[test]
fn fifo_and_symlink_in_the_watched_directory_neither_hang_nor_redirect() -> anyhow::Result<()> {
    if !require(
        "fifo_and_symlink_in_the_watched_directory_neither_hang_nor_redirect",
        &["perl"],
    ) {
        return Ok(());
    }
    let d = Daemon::start(ON)?;
    let elsewhere = tempfile::tempdir()?;
    let target = TestNetns::create(elsewhere.path(), "target")?;
    nix::unistd::mkfifo(
        &d.netns_dir().join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )?;
    std::os::unix::fs::symlink(&target.path, d.netns_dir().join("link"))?;
    // A namespace added afterwards is still found: the tracker did not hang on the FIFO.
    let after = d.netns("after")?;
    wait_for("namespace after the FIFO", Duration::from_secs(5), || {
        d.ns("after").ok().flatten()
    })?;
    wait_routed(&d, &after)?;
    let names: Vec<String> = d
        .ns_list()?
        .iter()
        .map(|n| n["name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n == "fifo" || n == "link"),
        "{names:?}"
    );
    // The symlink did not make the daemon serve the namespace it points to.
    let sock = d.rpcbind_socket();
    assert_eq!(
        path_null(&target, &sock)?,
        REFUSED,
        "the symlinked namespace must not be served"
    );
    Ok(())
}

#[test]
fn one_label_per_namespace_and_the_label_follows_the_file() -> anyhow::Result<()> {
    if !require_root("one_label_per_namespace_and_the_label_follows_the_file") {
        return Ok(());
    }
    let d = Daemon::start(ON)?;
    let mut first = d.netns("first")?;
    // The first label is the one whose mount the daemon saw first. `first` is mounted by an
    // exec'd `unshare` (milliseconds after its file exists; tens of them under load), the alias
    // below within microseconds: without this wait the daemon may see the alias mounted first
    // and rightly label the namespace "alias".
    wait_for("first served", Duration::from_secs(5), || {
        d.ns("first").ok().flatten()
    })?;
    let alias = d.netns_dir().join("alias");
    std::fs::File::create(&alias)?;
    nix::mount::mount(
        Some(&first.path),
        &alias,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )?;
    let alias_ns = wait_for("alias recorded", Duration::from_secs(5), || {
        d.ns("first")
            .ok()
            .flatten()
            .filter(|n| n["aliases"].to_string().contains("alias"))
    })?;
    assert!(
        d.ns("alias")?.is_none(),
        "an alias is not a second namespace"
    );
    let id = alias_ns["id"].clone();
    let registered = wait_for("registration", Duration::from_secs(5), || {
        first
            .run_in(|| {
                let mut s = connect_abstract(ABSTRACT).ok()?;
                let args = rpcb(200_088, 1, "udp", "0.0.0.0.4.8", "0");
                stream_call(&mut s, &call(7, PMAP, 4, 1, Cred::None, &args))
            })
            .ok()
            .flatten()
            .and_then(|r| nsaux_tests::rpc::result_u32(&r))
    })?;
    assert_eq!(registered, 1);
    // `ip netns del first` while the alias lives: the namespace is now known as "alias" only.
    first.delete()?;
    wait_for("relabelled", Duration::from_secs(5), || {
        d.ns("alias").ok().flatten().filter(|n| n["id"] == id)
    })?;
    // Relabelling restarts its services, but its registrations (kept by cookie) stay.
    let kept = wait_for("registrations kept", Duration::from_secs(5), || {
        d.ctl_json(&["rpc", "list", "--ns", "alias"])
            .ok()
            .filter(|v| v.to_string().contains("200088"))
    })?;
    assert!(kept.get("alias").is_some(), "{kept}");
    // A namespace re-created as "first" gets the label "first", and only it.
    let _again = d.netns("first")?;
    let fresh = wait_for("re-created", Duration::from_secs(5), || {
        d.ns("first").ok().flatten().filter(|n| n["id"] != id)
    })?;
    assert_ne!(fresh["id"], id);
    let list = d.ns_list()?;
    let mut labels: Vec<&str> = list.iter().filter_map(|n| n["name"].as_str()).collect();
    let n = labels.len();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), n, "labels must be unique: {list:?}");
    let _ = nix::mount::umount2(&alias, nix::mount::MntFlags::MNT_DETACH);
    Ok(())
}

#[test]
fn hostile_names_are_escaped_in_tables_and_logs() -> anyhow::Result<()> {
    if !require_root("hostile_names_are_escaped_in_tables_and_logs") {
        return Ok(());
    }
    let d = Daemon::start(ON)?;
    let elsewhere = tempfile::tempdir()?;
    let ns = TestNetns::create(elsewhere.path(), "plain")?;
    let out = d.ctl(&["attach", EVIL, "--path", &ns.path.display().to_string()])?;
    assert!(out.status.success(), "{out:?}");
    wait_for(
        "portmapper in the evil namespace",
        Duration::from_secs(5),
        || {
            ns.run_in(|| {
                let mut s = connect_abstract(ABSTRACT).ok()?;
                stream_call(&mut s, &call(1, PMAP, 2, 0, Cred::None, &[]))
            })
            .ok()
            .flatten()
        },
    )?;
    // A registration whose netid carries a newline and an escape (a stricter SET may refuse
    // it; either way nothing raw may come out).
    let evil_netid = "tcp\n\x1b[31m";
    let reply = ns.run_in(move || {
        let mut s = connect_abstract(ABSTRACT).ok()?;
        let args = rpcb(200_077, 1, evil_netid, "0.0.0.0.4.1", "0");
        stream_call(&mut s, &call(7, PMAP, 4, 1, Cred::None, &args))
    })?;
    let registered = reply.as_ref().and_then(nsaux_tests::rpc::result_u32) == Some(1);
    let ok = d.ctl(&["rpc", "list"])?;
    let rpc = String::from_utf8_lossy(&ok.stdout).into_owned();
    let nsl = String::from_utf8_lossy(&d.ctl(&["ns", "list"])?.stdout).into_owned();
    for (what, text) in [("rpc list", &rpc), ("ns list", &nsl)] {
        assert!(
            !text.contains('\x1b'),
            "{what} carries a raw escape: {text:?}"
        );
        assert!(
            !text.contains("evil\n"),
            "{what} carries a raw newline: {text:?}"
        );
        assert!(text.contains(EVIL_ESCAPED), "{what}: {text:?}");
    }
    if registered {
        assert!(rpc.contains("tcp\\n\\u{1b}[31m"), "{rpc:?}");
    }
    let log = d.log();
    assert!(!log.contains('\x1b'), "log carries a raw escape");
    assert!(!log.contains("evil\n"), "log carries a forged line");
    assert!(log.contains(EVIL_ESCAPED), "{log}");
    Ok(())
}

#[test]
fn the_same_name_in_two_watched_directories_gets_two_labels() -> anyhow::Result<()> {
    if !require_root("the_same_name_in_two_watched_directories_gets_two_labels") {
        return Ok(());
    }
    let second = tempfile::tempdir()?;
    let second_dir = second.path().display().to_string();
    let d = Daemon::start_with(ON, &["--netns-dir", &second_dir])?;
    let _one = d.netns("dup")?;
    wait_for("first dup", Duration::from_secs(5), || {
        d.ns("dup").ok().flatten()
    })?;
    let _two = TestNetns::create(second.path(), "dup")?;
    let list = wait_for("second dup", Duration::from_secs(5), || {
        d.ns_list().ok().filter(|l| {
            l.iter()
                .filter(|n| n["name"].to_string().contains("dup"))
                .count()
                == 2
        })
    })?;
    let names: Vec<&str> = list.iter().filter_map(|n| n["name"].as_str()).collect();
    assert!(names.contains(&"dup"), "{names:?}");
    let other = list
        .iter()
        .find(|n| n["name"].as_str().is_some_and(|s| s.starts_with("dup@")))
        .ok_or_else(|| anyhow::anyhow!("no suffixed label: {names:?}"))?;
    assert_eq!(other["name"], format!("dup@{}", other["id"]));
    Ok(())
}
