//! Records which source and which compiler made this build, for `nsaux_build_info` and
//! `--version`: an operator comparing hosts needs the commit, not only the crate version.
//!
//! Never fails: in a tarball (no git, or not a repository) the commit is "unknown".
//! `NSAUX_GIT_COMMIT` in the environment overrides it (a distribution building from a
//! release tarball knows the commit even though git does not).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `cmd args` and returns its trimmed stdout if it succeeded with some output.
fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

/// Tells cargo to run this script again when `path` changes. Only for a file that exists: cargo
/// takes a missing one as always changed, which would rebuild the daemon on every build.
fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// The git files whose change means another commit is checked out (HEAD, the branch's ref,
/// packed refs), so the commit is read again then and only then.
fn watch_git() {
    let Some(git_dir) = output("git", &["rev-parse", "--git-dir"]) else {
        return;
    };
    let git_dir = PathBuf::from(git_dir);
    watch(&git_dir.join("HEAD"));
    let common = output("git", &["rev-parse", "--git-common-dir"])
        .map_or_else(|| git_dir.clone(), PathBuf::from);
    watch(&common.join("packed-refs"));
    if let Some(r) = output("git", &["rev-parse", "--symbolic-full-name", "HEAD"])
        && r.starts_with("refs/")
    {
        watch(&common.join(r));
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=NSAUX_GIT_COMMIT");
    let commit = std::env::var("NSAUX_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            watch_git();
            output("git", &["rev-parse", "--short=12", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let rustc_version = output(&rustc, &["--version"]).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=NSAUX_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=NSAUX_RUSTC_VERSION={rustc_version}");
}
