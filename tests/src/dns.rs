//! DNS test helpers: real upstream servers (unbound, dnsmasq) in their own namespaces, and
//! `dig` run inside a namespace.
//!
//! Every server gets a private directory for its config and pid file, listens only on the
//! address given (inside its namespace) and is stopped by pid when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::daemon::wait_for;
use crate::netns::TestNetns;

/// A DNS server process inside a test namespace.
#[derive(Debug)]
pub struct Server {
    /// Its private directory (config, pid file, log).
    pub dir: tempfile::TempDir,
    /// The address it listens on.
    pub addr: String,
    child: Option<Child>,
    argv: Vec<String>,
    ns_path: PathBuf,
}

impl Server {
    /// Starts unbound (1 thread) on `addr`:53 inside `ns`, authoritative for the local data
    /// lines given (`local-zone`/`local-data` statements). Waits until it answers.
    pub fn unbound(ns: &TestNetns, addr: &str, zone: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("nsaux-unbound-")
            .tempdir()?;
        let d = dir.path().display().to_string();
        let conf = format!(
            "server:\n  interface: {addr}\n  port: 53\n  do-daemonize: no\n  username: \"\"\n  \
             chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n  \
             logfile: \"\"\n  verbosity: 0\n  num-threads: 1\n  do-ip6: no\n  \
             access-control: 0.0.0.0/0 allow\n  module-config: \"iterator\"\n  \
             msg-cache-size: 4m\n  rrset-cache-size: 4m\n  minimal-responses: yes\n{zone}\n\
             remote-control:\n  control-enable: no\n"
        );
        let path = dir.path().join("unbound.conf");
        std::fs::write(&path, conf)?;
        let argv = vec![
            "unbound".to_owned(),
            "-d".to_owned(),
            "-c".to_owned(),
            path.display().to_string(),
        ];
        Self::start(ns, dir, addr, argv)
    }

    /// Starts dnsmasq on `addr`:53 inside `ns` with no upstream, no hosts file, and these
    /// extra options (e.g. `--host-record=www.test,10.0.0.1`). Waits until it answers.
    pub fn dnsmasq(ns: &TestNetns, addr: &str, opts: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("nsaux-dnsmasq-")
            .tempdir()?;
        let d = dir.path().display().to_string();
        let mut argv: Vec<String> = [
            "dnsmasq",
            "-k",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--group=root",
            "--bind-interfaces",
            "--port=53",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        argv.push(format!("--pid-file={d}/dnsmasq.pid"));
        argv.push(format!("--listen-address={addr}"));
        argv.extend(opts.iter().map(|s| (*s).to_owned()));
        Self::start(ns, dir, addr, argv)
    }

    fn start(
        ns: &TestNetns,
        dir: tempfile::TempDir,
        addr: &str,
        argv: Vec<String>,
    ) -> anyhow::Result<Self> {
        let mut s = Self {
            dir,
            addr: addr.to_owned(),
            child: None,
            argv,
            ns_path: ns.path.clone(),
        };
        s.spawn()?;
        let probe = format!("dig @{addr} +time=1 +tries=1 +short . SOA");
        wait_for(
            &format!("{} up", s.argv[0]),
            Duration::from_secs(10),
            || ns.sh(&probe).ok(),
        )
        .with_context(|| format!("log: {}", s.log()))?;
        Ok(s)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join("server.log"))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.ns_path.display()))
            .args(&self.argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.argv[0]))?;
        self.child = Some(child);
        Ok(())
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stops it (SIGTERM, then SIGKILL) and reaps it.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        let pid = i32::try_from(c.id())?;
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        for _ in 0..200 {
            if c.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        c.kill()?;
        c.wait()?;
        Ok(())
    }

    /// Starts it again with the same configuration and waits until it answers.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("still running");
        }
        self.spawn()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Runs `dig ARGS` inside `ns` (one try, 2 s) and returns its stdout, whatever the status.
pub fn dig(ns: &TestNetns, args: &str) -> anyhow::Result<String> {
    let out = ns.sh(&format!("dig +time=2 +tries=1 {args} || true"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `status:` of a dig answer (`NOERROR`, `NXDOMAIN`, `SERVFAIL`…), if any.
pub fn status(dig_out: &str) -> Option<String> {
    dig_out.split("status: ").nth(1).map(|r| {
        r.chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect()
    })
}

/// The records of the ANSWER (or another) section of a dig answer: (name, ttl, type, data).
pub fn section(dig_out: &str, name: &str) -> Vec<(String, u32, String, String)> {
    let head = format!(";; {name} SECTION:");
    let mut v = Vec::new();
    let mut on = false;
    for line in dig_out.lines() {
        if line.starts_with(";; ") {
            on = line.starts_with(&head);
            continue;
        }
        if !on || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 5 {
            v.push((
                f[0].to_owned(),
                f[1].parse().unwrap_or(u32::MAX),
                f[3].to_owned(),
                f[4..].join(" "),
            ));
        }
    }
    v
}

/// A fake upstream's answer to query `q`: its ID and question echoed, NOERROR, one A record
/// `ip` (TTL 300); `None` for a query it cannot parse.
pub fn answer_a(q: &[u8], ip: [u8; 4]) -> Option<Vec<u8>> {
    let mut i = 12;
    loop {
        let len = usize::from(*q.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len >= 0xc0 {
            return None;
        }
        i += len;
    }
    let qend = i + 4;
    let question = q.get(12..qend)?;
    let mut r = Vec::with_capacity(qend + 16);
    r.extend_from_slice(&q[..2]);
    r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]); // QR RD RA, 1 question, 1 answer
    r.extend_from_slice(question);
    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x01, 0x2c, 0, 4]);
    r.extend_from_slice(&ip);
    Some(r)
}
