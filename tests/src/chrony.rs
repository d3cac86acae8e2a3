//! Stock chronyd as a server, for the tests and benches that compare nsauxd with it.

/// chronyd as an NTP server (`local stratum 10`, never touching the clock) in a namespace of
/// a test or bench, every file in a temporary directory: the stock daemon the NTP benches and
/// the conformance and interleaved-mode tests compare with. Killed by its own pid when dropped.
#[derive(Debug)]
pub struct Chronyd {
    /// The chronyd process (its pid is what a bench reads CPU time from).
    pub child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Chronyd {
    /// Starts chronyd on port 123 in `ns`.
    pub fn start(ns: &crate::netns::TestNetns) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        use std::process::Stdio;
        let dir = tempfile::tempdir()?;
        let p = dir.path().display().to_string();
        let conf = dir.path().join("chrony.conf");
        std::fs::write(
            &conf,
            format!(
                "port 123\nlocal stratum 10\nallow\ncmdport 0\nbindcmdaddress /\npidfile {p}/chronyd.pid\n\
                 driftfile {p}/drift\ndumpdir {p}\nntsdumpdir {p}\n"
            ),
        )?;
        let child = ns
            .command("chronyd")
            .args(["-x", "-d", "-u", "root", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chronyd")?;
        Ok(Self { child, _dir: dir })
    }
}

impl Drop for Chronyd {
    fn drop(&mut self) {
        // Our own child, by pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
