//! Namespaces for tests, in a private directory.

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};

/// A network namespace bound to `DIR/NAME`, like `ip netns add` makes (file first, then the
/// bind mount). Deleted like `ip netns del` (lazy unmount, then unlink) when dropped.
#[derive(Debug)]
pub struct TestNetns {
    /// Its file.
    pub path: PathBuf,
    /// Its label.
    pub name: String,
    deleted: bool,
}

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

impl TestNetns {
    /// Creates namespace `name` in `dir` with `lo` up.
    pub fn create(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let path = dir.join(name);
        File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let arg = format!("--net={}", path.display());
        run(Command::new("unshare").args([arg.as_str(), "ip", "link", "set", "lo", "up"]))?;
        Ok(Self {
            path,
            name: name.to_owned(),
            deleted: false,
        })
    }

    /// Runs a bash command inside the namespace and returns its output (error if it fails).
    pub fn sh(&self, script: &str) -> anyhow::Result<Output> {
        run(Command::new("nsenter")
            .arg(format!("--net={}", self.path.display()))
            .args(["bash", "-c", script]))
    }

    /// A `Command` that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path.display())).arg(program);
        c
    }

    /// Runs `f` on a fresh thread that has entered the namespace.
    pub fn run_in<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> anyhow::Result<R> {
        in_netns_file(&self.path, f)
    }

    /// Sends `payload` over UDP to `to` from inside the namespace; returns the answer and the
    /// address it came from, or `None` on timeout.
    pub fn udp_query(
        &self,
        to: SocketAddr,
        payload: &[u8],
        timeout: Duration,
    ) -> anyhow::Result<Option<(Vec<u8>, SocketAddr)>> {
        let payload = payload.to_vec();
        self.run_in(move || udp_exchange(to, &payload, timeout))?
    }

    /// Deletes it now, the way `ip netns del` does.
    pub fn delete(&mut self) -> anyhow::Result<()> {
        if !self.deleted {
            self.deleted = true;
            nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH).context("umount")?;
            std::fs::remove_file(&self.path).context("unlink")?;
        }
        Ok(())
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = self.delete();
    }
}

/// Runs `f` on a fresh thread inside the namespace file `path`.
pub fn in_netns_file<R: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> R + Send + 'static,
) -> anyhow::Result<R> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    std::thread::spawn(move || -> anyhow::Result<R> {
        setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread panicked"))?
}

/// One UDP request/answer from the current namespace.
pub fn udp_exchange(
    to: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> anyhow::Result<Option<(Vec<u8>, SocketAddr)>> {
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.send_to(payload, to)?;
    let mut buf = vec![0u8; 65_536];
    match sock.recv_from(&mut buf) {
        Ok((n, from)) => Ok(Some((buf[..n].to_vec(), from))),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Connects a veth pair between two namespaces and addresses both ends.
///
/// `a_addr`/`b_addr` are CIDR strings such as `10.0.0.5/24`. Returns once both ends pass packets.
pub fn veth(
    a: &TestNetns,
    a_if: &str,
    a_addr: &str,
    b: &TestNetns,
    b_if: &str,
    b_addr: &str,
) -> anyhow::Result<()> {
    a.sh(&format!(
        "ip link add {a_if} type veth peer name {b_if} netns {b} && ip addr add {a_addr} dev {a_if} && ip link set {a_if} up",
        b = b.path.display()
    ))?;
    b.sh(&format!(
        "ip addr add {b_addr} dev {b_if} && ip link set {b_if} up"
    ))?;
    // Until the kernel's link watch has run for a new link (up to a second later on a busy
    // machine), its queueing discipline is the no-op one and drops every packet: a test's first
    // single-shot datagram would vanish. The operational state turns UP in that same step.
    for (ns, ifname) in [(a, a_if), (b, b_if)] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let out = ns.sh(&format!("ip -o link show dev {ifname}"))?;
            if String::from_utf8_lossy(&out.stdout).contains(" state UP ") {
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "veth {ifname} did not come up within 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(())
}

/// Brings `lo` up in the calling thread's namespace (what `ip link set lo up` does), without
/// spawning a process: benchmarks create thousands of namespaces.
#[allow(unsafe_code)]
pub fn bring_lo_up() -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let sock = UdpSocket::bind("127.0.0.1:0").or_else(|_| UdpSocket::bind("0.0.0.0:0"))?;
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read/write the flags member of a valid ifreq that
    // names an interface; the fd is a live socket.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Creates a namespace bound at `dir/name` on the calling thread, as `ip netns add` does (file
/// first, then the bind mount), with `lo` up. The thread stays inside it: call from a
/// dedicated thread that returns home with `setns` (benchmarks create thousands this way).
pub fn create_on_this_thread(dir: &Path, name: &str) -> anyhow::Result<()> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET).context("unshare")?;
    bring_lo_up().context("lo up")?;
    let path = dir.join(name);
    File::create(&path)?;
    nix::mount::mount(
        Some("/proc/thread-self/ns/net"),
        &path,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .context("bind mount")?;
    Ok(())
}
