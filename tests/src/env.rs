//! Gating and binaries.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Whether we run under CI, where every test must run.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether the running kernel is `major.minor` or later (`/proc/sys/kernel/osrelease`), for
/// assertions on behaviour a kernel version brought; false when the release cannot be read.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.trim().parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

/// True when the test may proceed. Without root: fails under CI, skips loudly elsewhere.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(!in_ci(), "{test} needs root and CI=true: refusing to skip");
    skip(test, "needs root (run the suite as root; CI does)");
    false
}

/// True when running as root with every tool in `tools` on PATH: the preamble of a test that
/// needs namespaces and real clients. Missing anything fails under CI, skips loudly elsewhere.
pub fn require(test: &str, tools: &[&str]) -> bool {
    require_root(test) && tools.iter().all(|t| require_tool(test, t))
}

/// True when `tool` is on PATH. Missing: fails under CI, skips loudly elsewhere.
pub fn require_tool(test: &str, tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return true;
    }
    assert!(
        !in_ci(),
        "{test} needs `{tool}` and CI=true: refusing to skip"
    );
    skip(
        test,
        &format!("`{tool}` not installed (the README's test command installs it)"),
    );
    false
}

/// The environment variable naming the file that collects skip markers.
pub const SKIP_LOG_ENV: &str = "NSAUX_SKIP_LOG";

/// Records that `test` skipped itself. A skipping test returns early and so counts as passed
/// in cargo's summary; `scripts/test` counts these markers to report it as skipped instead.
/// The marker goes to the file named by [`SKIP_LOG_ENV`] (one appended line, so tests in
/// parallel threads or processes never interleave) because cargo captures the stderr of a
/// test that passes; it is printed to stderr as well for a human running one test.
pub fn skip(test: &str, reason: &str) {
    let line = format!("NSAUX-SKIPPED {test}: {reason}\n");
    eprint!("{line}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        use std::io::Write as _;
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        // Losing the marker would report a skip as a pass: fail instead.
        if let Err(e) = written {
            panic!("{test}: cannot record the skip in {}: {e}", path.display());
        }
    }
}

/// The directory holding the workspace's built binaries (`target/<profile>`). Under cargo
/// (`cargo test -p nsaux-tests` does not rebuild another package's binaries) they are brought
/// up to date once per test process, so a test never runs a stale daemon; outside cargo they
/// are built only if missing. The daemon built here has the `fault-injection` feature.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // The test executable lives in target/<profile>/deps/.
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe
            .parent()
            .and_then(|d| d.parent())
            .map(PathBuf::from)
            .expect("target dir");
        let under_cargo = std::env::var_os("CARGO").is_some();
        if under_cargo || !dir.join("nsauxd").exists() || !dir.join("nsauxctl").exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let release = dir.file_name().is_some_and(|n| n == "release");
            let mut cmd = Command::new(cargo);
            // With the test-only fault hooks (daemon/src/serve/fault.rs): tests/integration/
            // fate.rs makes a service panic on request. Benchmarks build their own daemon
            // without them (bench.rs).
            cmd.args([
                "build",
                "-q",
                "-p",
                "nsauxd",
                "--bins",
                "--features",
                "nsauxd/fault-injection",
            ]);
            if release {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("running cargo build");
            assert!(st.success(), "building nsauxd failed");
        }
        dir
    })
    .clone()
}

/// Path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}
