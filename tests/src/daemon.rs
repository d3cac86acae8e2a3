//! Running `nsauxd` under test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::env::bin;
use crate::netns::TestNetns;

/// A daemon with private directories: `DIR/netns` (watched), `DIR/run`, `DIR/state`,
/// `DIR/nsaux.toml`, `DIR/nsauxd.log`. Stopped by pid (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Daemon {
    /// The private directory.
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    /// Another build of nsauxd to run instead of the workspace's (benchmark A/B comparisons).
    binary: Option<PathBuf>,
    /// A test namespace to run the daemon in, served as its own ("host") namespace.
    home_netns: Option<PathBuf>,
}

impl Daemon {
    /// Starts a daemon with this configuration text (`--no-host-netns`: the test host's own
    /// namespace is never served) and waits until its control socket answers.
    pub fn start(config: &str) -> anyhow::Result<Self> {
        Self::start_with(config, &[])
    }

    /// Like [`Daemon::start`], with extra command-line arguments.
    pub fn start_with(config: &str, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_env(config, extra, &[])
    }

    /// Like [`Daemon::start_with`], with extra environment variables for the daemon.
    pub fn start_with_env(
        config: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Ok(Self::start_full(config, extra, env, None, None, |_| Ok(()))?.0)
    }

    /// Like [`Daemon::start`], running the nsauxd binary at `binary` (`None`: the
    /// workspace's): benchmarks measure another build beside this one in the same run
    /// (`NSAUX_BENCH_BASELINE`, see [`crate::bench::builds`]).
    pub fn start_binary(binary: Option<&Path>, config: &str) -> anyhow::Result<Self> {
        Ok(Self::start_full(config, &[], &[], binary, None, |_| Ok(()))?.0)
    }

    /// Starts a daemon inside the test namespace at `netns` and lets it serve that namespace
    /// as its own ("host", the `host_netns` switch of `config`): the host-namespace path is
    /// then tested without ever serving the real host's namespace.
    pub fn start_in_netns(config: &str, netns: &Path) -> anyhow::Result<Self> {
        Ok(Self::start_full(config, &[], &[], None, Some(netns), |_| Ok(()))?.0)
    }

    /// Starts a daemon after `setup` has run on its private directory (e.g. to occupy its
    /// rpcbind path socket first), returning what `setup` returned.
    pub fn start_after<T>(
        config: &str,
        setup: impl FnOnce(&Path) -> anyhow::Result<T>,
    ) -> anyhow::Result<(Self, T)> {
        Self::start_full(config, &[], &[], None, None, setup)
    }

    fn start_full<T>(
        config: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        binary: Option<&Path>,
        home_netns: Option<&Path>,
        setup: impl FnOnce(&Path) -> anyhow::Result<T>,
    ) -> anyhow::Result<(Self, T)> {
        let dir = tempfile::Builder::new().prefix("nsaux-test-").tempdir()?;
        std::fs::create_dir(dir.path().join("netns"))?;
        std::fs::write(dir.path().join("nsaux.toml"), config)?;
        let t = setup(dir.path())?;
        let mut d = Self {
            dir,
            child: None,
            extra_args: extra.iter().map(|s| (*s).to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            binary: binary.map(Path::to_owned),
            home_netns: home_netns.map(Path::to_owned),
        };
        d.spawn()?;
        Ok((d, t))
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let p = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p.join("nsauxd.log"))?;
        let binary = self.binary.clone().unwrap_or_else(|| bin("nsauxd"));
        let mut cmd = match &self.home_netns {
            // nsenter execs the daemon (no fork for a network namespace): the pid is nsauxd's.
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg(binary);
                c
            }
            None => {
                let mut c = Command::new(binary);
                c.arg("--no-host-netns");
                c
            }
        };
        let child = cmd
            .arg("--config")
            .arg(p.join("nsaux.toml"))
            .arg("--runtime-dir")
            .arg(p.join("run"))
            .arg("--state-dir")
            .arg(p.join("state"))
            .arg("--netns-dir")
            .arg(p.join("netns"))
            // Never the host's /run/rpcbind.sock: a private path socket per test daemon.
            .arg("--rpcbind-socket")
            .arg(p.join("rpcbind.sock"))
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                "NSAUX_LOG",
                std::env::var("NSAUX_LOG").unwrap_or_else(|_| "debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning nsauxd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(out) = self.ctl(&["status"])
                && out.status.success()
            {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                bail!("nsauxd exited early ({st}); log:\n{}", self.log());
            }
            if Instant::now() > deadline {
                bail!("nsauxd did not come up; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Restarts after a `kill -9` (or a clean stop), with the same directories.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.spawn()
    }

    /// The private netns directory the daemon watches.
    pub fn netns_dir(&self) -> PathBuf {
        self.dir.path().join("netns")
    }

    /// The portmapper's path socket (private to this daemon; tests bind-mount it onto
    /// `/run/rpcbind.sock` inside a private mount namespace).
    pub fn rpcbind_socket(&self) -> PathBuf {
        self.dir.path().join("rpcbind.sock")
    }

    /// The state directory (journals).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The runtime directory.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Creates a namespace in the watched directory.
    pub fn netns(&self, name: &str) -> anyhow::Result<TestNetns> {
        TestNetns::create(&self.netns_dir(), name)
    }

    /// Runs `nsauxctl --runtime-dir RUN ARGS...`.
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(bin("nsauxctl"))
            .arg("--runtime-dir")
            .arg(self.runtime_dir())
            .args(args)
            .output()
            .context("running nsauxctl")
    }

    /// The value of one daemon-wide counter of `nsauxctl metrics` (`name` with its `_total`),
    /// e.g. `nsaux_quiet_lane_pauses_total`.
    pub fn counter(&self, name: &str) -> anyhow::Result<u64> {
        let out = self.ctl(&["metrics"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no counter {name} in\n{text}"))
    }

    /// `nsauxctl ARGS --json`, parsed; error with stderr if it fails.
    pub fn ctl_json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ctl(&a)?;
        if !out.status.success() {
            bail!(
                "nsauxctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).context("nsauxctl printed bad JSON")
    }

    /// `ns list --json`.
    pub fn ns_list(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .ctl_json(&["ns", "list"])?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The `ns list` entry named `name`.
    pub fn ns(&self, name: &str) -> anyhow::Result<Option<Value>> {
        Ok(self.ns_list()?.into_iter().find(|n| n["name"] == name))
    }

    /// The portmapper's journal status of namespace `name` (`ns list`: whether a compaction or
    /// rewrite runs, the file's state and size), which the journal tests wait on and check.
    pub fn rpc_journal(&self, name: &str) -> anyhow::Result<Value> {
        let ns = self
            .ns(name)?
            .ok_or_else(|| anyhow::anyhow!("namespace {name} not listed"))?;
        Ok(ns["services"]["rpcbind"]["status"]["journal"].clone())
    }

    /// The programs from `first` on registered in namespace `ns`, in table order (`rpc list`):
    /// what a test compares with the registrations it saw acknowledged.
    pub fn rpc_progs(&self, ns: &str, first: u32) -> anyhow::Result<Vec<u32>> {
        let v = self.ctl_json(&["rpc", "list", "--ns", ns])?;
        Ok(v[ns]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["prog"].as_u64())
            .filter_map(|p| u32::try_from(p).ok())
            .filter(|p| *p >= first)
            .collect())
    }

    /// Number of open fds of the daemon. Linux ≥ 6.2 reports it as the size of `/proc/PID/fd`
    /// (cheap even with 50,000 fds); older kernels report 0 there, so we count entries.
    pub fn fd_count(&self) -> usize {
        let dir = format!("/proc/{}/fd", self.pid());
        match std::fs::metadata(&dir).map(|m| m.len()) {
            Ok(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => std::fs::read_dir(&dir).map_or(0, Iterator::count),
        }
    }

    /// Waits until the daemon's fd count is back to `baseline` after a namespace (nsfs inode
    /// `ino`) was deleted, then checks it holds no reference to that namespace.
    pub fn wait_released(&self, baseline: usize, ino: u64) -> anyhow::Result<()> {
        wait_for("fd count back to baseline", Duration::from_secs(5), || {
            (self.fd_count() <= baseline).then_some(())
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}: now {} vs {baseline}: {:?}",
                self.fd_count(),
                self.fd_targets()
            )
        })?;
        let net_ref = format!("net:[{ino}]");
        anyhow::ensure!(
            !self.fd_targets().iter().any(|t| t == &net_ref),
            "daemon still holds {net_ref}"
        );
        Ok(())
    }

    /// The targets of the daemon's fd symlinks (`socket:[N]`, `net:[N]`, paths).
    pub fn fd_targets(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|p| p.display().to_string())
            .collect()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nsauxd.log")).unwrap_or_default()
    }

    /// Writes a new configuration file (not applied until reload).
    pub fn write_config(&self, text: &str) -> anyhow::Result<()> {
        Ok(std::fs::write(self.dir.path().join("nsaux.toml"), text)?)
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        let pid = i32::try_from(self.pid())?;
        kill(Pid::from_raw(pid), sig)?;
        Ok(())
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait for a clean exit; returns its exit status.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("not running")?;
        let pid = i32::try_from(c.id())?;
        kill(Pid::from_raw(pid), Signal::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                bail!("nsauxd did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        // Namespaces a test or bench created in our directory without a `TestNetns` guard
        // (benchmarks make thousands in-process) would otherwise stay mounted after a failure.
        if let Ok(entries) = std::fs::read_dir(self.netns_dir()) {
            for e in entries.flatten() {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_file(e.path());
            }
        }
        if std::thread::panicking() {
            eprintln!("---- nsauxd log ----\n{}", self.log());
        }
    }
}

/// Polls `f` until it returns `Some`, or fails after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// `Path` helper for callers that format paths into shell commands.
pub fn shell_path(p: &Path) -> String {
    p.display().to_string()
}

/// The portmapper journal files under a daemon's state directory `dir` (any depth): tests
/// check what was written, replayed and swept.
pub fn journal_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "journal") {
                out.push(p);
            }
        }
    }
    out
}
