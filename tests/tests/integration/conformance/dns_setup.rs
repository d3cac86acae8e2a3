//! The DNS side of the harness: an authoritative BIND (`named -g`) in a namespace of its own
//! serving one zone with every common shape and one signed zone (keys made at test time),
//! and the three forwarders — nsauxd, unbound, dnsmasq — each in its own namespace behind a
//! veth, all forwarding to it.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::dns::{Server, dig, status};
use nsaux_tests::netns::{TestNetns, veth};

/// Where BIND listens, inside its namespace (each forwarder routes to it over its own veth).
pub(super) const AUTH: &str = "192.0.2.53";

/// The plain zone: every common type, a CNAME chain, a >1232-byte RRset, a wildcard, a
/// delegation, an empty non-terminal (`ent`).
fn plain_zone() -> String {
    let mut z = String::from(
        "$TTL 300\n\
         @ IN SOA ns.conf.example. admin.conf.example. 1 3600 600 86400 60\n\
         @ NS ns\n\
         @ MX 10 mail\n\
         @ CAA 0 issue \"ca.example\"\n\
         ns A 192.0.2.53\n\
         mail A 192.0.2.25\n\
         www A 192.0.2.10\n\
         www AAAA 2001:db8::10\n\
         txt TXT \"hello\" \"world\"\n\
         hinfo HINFO \"cpu\" \"os\"\n\
         _sip._udp SRV 10 20 5060 www\n\
         ptr PTR www.conf.example.\n\
         c1 CNAME c2\n\
         c2 CNAME c3\n\
         c3 CNAME www\n\
         dangling CNAME nope\n\
         *.wild A 192.0.2.77\n\
         sub NS ns.sub\n\
         ns.sub A 192.0.2.99\n\
         x.ent A 192.0.2.5\n",
    );
    for i in 0..40 {
        z.push_str(&format!(
            "big TXT \"record {i:02} padding padding padding padding padding padding\"\n"
        ));
    }
    z
}

/// The zone that gets signed.
const SIGNED_ZONE: &str = "$TTL 300\n\
    @ IN SOA ns.signed.example. admin.signed.example. 1 3600 600 86400 60\n\
    @ NS ns\n\
    ns A 192.0.2.53\n\
    www A 192.0.2.11\n";

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// BIND as a child process, stopped by pid when dropped.
#[derive(Debug)]
pub(super) struct Named {
    child: Child,
    dir: tempfile::TempDir,
}

impl Named {
    /// Writes the zones, signs `signed.example` (ECDSA P-256 KSK and ZSK made now), starts
    /// `named -g` in `ns` on [`AUTH`] and waits until it answers.
    pub(super) fn start(ns: &TestNetns) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("nsaux-named-").tempdir()?;
        let d = dir.path();
        std::fs::write(d.join("conf.zone"), plain_zone())?;
        std::fs::write(d.join("signed.zone"), SIGNED_ZONE)?;
        for extra in [&[][..], &["-f", "KSK"][..]] {
            run(Command::new("dnssec-keygen")
                .args(["-q", "-a", "ECDSAP256SHA256", "-K"])
                .arg(d)
                .args(extra)
                .arg("signed.example"))?;
        }
        // -d: the dsset file goes to the private directory, not the working directory.
        run(Command::new("dnssec-signzone")
            .args(["-q", "-S", "-K"])
            .arg(d)
            .arg("-d")
            .arg(d)
            .args(["-o", "signed.example", "-f"])
            .arg(d.join("signed.zone.signed"))
            .arg(d.join("signed.zone")))?;
        let p = d.display();
        let conf = format!(
            "options {{\n directory \"{p}\";\n pid-file \"{p}/named.pid\";\n \
             session-keyfile \"{p}/session.key\";\n managed-keys-directory \"{p}\";\n \
             listen-on port 53 {{ {AUTH}; }};\n listen-on-v6 {{ none; }};\n recursion no;\n \
             allow-query {{ any; }};\n dnssec-validation no;\n}};\ncontrols {{ }};\n\
             zone \"conf.example\" {{ type primary; file \"{p}/conf.zone\"; }};\n\
             zone \"signed.example\" {{ type primary; file \"{p}/signed.zone.signed\"; }};\n"
        );
        std::fs::write(d.join("named.conf"), conf)?;
        let log = std::fs::File::create(d.join("named.log"))?;
        let child = ns
            .command("named")
            .args(["-g", "-n", "1", "-c"])
            .arg(d.join("named.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning named")?;
        let named = Self { child, dir };
        wait_for("named answers", Duration::from_secs(10), || {
            dig(ns, &format!("@{AUTH} conf.example SOA"))
                .ok()
                .filter(|o| status(o).as_deref() == Some("NOERROR"))
        })
        .with_context(|| named.log())?;
        Ok(named)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Links forwarder namespace `fwd` to the authoritative one over veth `idx`, with a route to
/// [`AUTH`].
pub(super) fn link(fwd: &TestNetns, auth: &TestNetns, idx: u8) -> anyhow::Result<()> {
    veth(
        fwd,
        "cfup",
        &format!("10.131.{idx}.1/24"),
        auth,
        &format!("cfa{idx}"),
        &format!("10.131.{idx}.2/24"),
    )?;
    fwd.sh(&format!("ip route add {AUTH}/32 via 10.131.{idx}.2"))?;
    Ok(())
}

/// Everything the DNS comparison runs against; dropping it stops every process.
pub(super) struct Rig {
    /// The forwarders' namespaces and addresses, nsauxd first.
    pub(super) targets: Vec<(&'static str, TestNetns, SocketAddr)>,
    _servers: Vec<Server>,
    _named: Named,
    _auth: TestNetns,
    _daemon: Daemon,
    _dirs: Vec<tempfile::TempDir>,
}

/// Starts BIND, nsauxd (serving namespace `cfdns`), unbound and dnsmasq.
pub(super) fn rig() -> anyhow::Result<Rig> {
    let etc = tempfile::tempdir()?;
    let nsdir = tempfile::tempdir()?;
    std::fs::create_dir_all(etc.path().join("cfdns"))?;
    std::fs::write(
        etc.path().join("cfdns/resolv.conf"),
        format!("nameserver {AUTH}\n"),
    )?;
    let daemon = Daemon::start(&format!(
        "[ntp]\nenabled = false\n\n[rpcbind]\nenabled = false\n\n[dns]\nnetns_etc_dir = \"{}\"\n",
        etc.path().display()
    ))?;
    let auth = TestNetns::create(nsdir.path(), "cfauth")?;
    auth.sh(&format!("ip addr add {AUTH}/32 dev lo"))?;
    let named = Named::start(&auth)?;
    let vs = daemon.netns("cfdns")?;
    link(&vs, &auth, 1)?;
    let unbound_ns = TestNetns::create(nsdir.path(), "cfunbound")?;
    link(&unbound_ns, &auth, 2)?;
    let dnsmasq_ns = TestNetns::create(nsdir.path(), "cfdnsmasq")?;
    link(&dnsmasq_ns, &auth, 3)?;
    let forward = format!("forward-zone:\n  name: \".\"\n  forward-addr: {AUTH}\n");
    let unbound = Server::unbound(&unbound_ns, "127.0.0.1", &forward)?;
    let dnsmasq = Server::dnsmasq(&dnsmasq_ns, "127.0.0.1", &[&format!("--server={AUTH}")])?;
    let ep: SocketAddr = "127.0.0.53:53".parse()?;
    wait_for("nsauxd endpoint answers", Duration::from_secs(5), || {
        dig(&vs, "@127.0.0.53 www.conf.example A")
            .ok()
            .filter(|o| status(o).as_deref() == Some("NOERROR"))
    })?;
    let lo: SocketAddr = "127.0.0.1:53".parse()?;
    Ok(Rig {
        targets: vec![
            ("nsauxd", vs, ep),
            ("unbound", unbound_ns, lo),
            ("dnsmasq", dnsmasq_ns, lo),
        ],
        _servers: vec![unbound, dnsmasq],
        _named: named,
        _auth: auth,
        _daemon: daemon,
        _dirs: vec![etc, nsdir],
    })
}
