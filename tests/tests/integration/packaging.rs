//! The Debian package (issue 12): built with cargo-deb from a release build, checked by
//! `lintian` (no error), its control fields and contents read back with `dpkg-deb`, unpacked
//! into a throwaway root whose installed `nsauxd validate` accepts the installed conffile; and
//! the build identity (`--version`, `nsaux_build_info`) naming the git commit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use nsaux_tests::daemon::Daemon;
use nsaux_tests::env::{bin, require, require_tool};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    Ok(out)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The package, built once per test process: `cargo deb` makes the release build itself
/// (cargo reuses `target/release` when it is up to date) and writes the .deb to a directory
/// of its own, which lives as long as the process.
fn package() -> anyhow::Result<PathBuf> {
    static DEB: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DEB.get_or_init(|| {
        let out = tempfile::Builder::new()
            .prefix("nsaux-deb")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = Command::new(cargo)
            .current_dir(workspace())
            .args(["deb", "-p", "nsauxd", "--locked", "--fast", "--output"])
            .arg(&out)
            .output()
            .map_err(|e| e.to_string())?;
        if !built.status.success() {
            return Err(format!("cargo deb: {}", text(&built.stderr)));
        }
        std::fs::read_dir(&out)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .ok_or_else(|| "cargo deb wrote no .deb".to_owned())
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// The value of control field `name` in `dpkg-deb -f` output.
fn field<'a>(control: &'a str, name: &str) -> Option<&'a str> {
    control
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

#[test]
fn the_debian_package_passes_lintian_installs_and_validates_its_conffile() -> anyhow::Result<()> {
    let test = "the_debian_package_passes_lintian_installs_and_validates_its_conffile";
    if !require(test, &["lintian", "dpkg-deb", "dpkg"]) || !require_tool(test, "cargo-deb") {
        return Ok(());
    }
    let deb = package()?;

    // lintian: no error. Warnings are printed for the log (the README lists those accepted).
    let lint = Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(&deb)
        .output()?;
    let report = text(&lint.stdout);
    eprintln!("lintian:\n{report}{}", text(&lint.stderr));
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    assert!(
        !text(&lint.stderr).contains("internal error"),
        "lintian did not run: {}",
        text(&lint.stderr)
    );

    // Control fields: stands in for stock rpcbind.
    let control = text(&run(Command::new("dpkg-deb").arg("-f").arg(&deb))?.stdout);
    assert_eq!(field(&control, "Package"), Some("nsaux"), "{control}");
    for f in ["Provides", "Conflicts", "Replaces"] {
        assert_eq!(field(&control, f), Some("rpcbind"), "{f} in\n{control}");
    }
    let version = field(&control, "Version").unwrap_or_default();
    assert!(
        version.starts_with(env!("CARGO_PKG_VERSION")),
        "Version {version}"
    );
    let maintainer = field(&control, "Maintainer").unwrap_or_default();
    assert!(
        !maintainer.contains("example.org") && maintainer.contains('@'),
        "{maintainer}"
    );
    assert!(field(&control, "Depends").is_some_and(|d| d.contains("libc6")));

    // Contents.
    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb))?.stdout);
    for path in [
        "./usr/sbin/nsauxd",
        "./usr/sbin/nsauxctl",
        "./usr/lib/cni/nsaux-cni",
        "./etc/nsaux/nsaux.toml",
        "./usr/lib/systemd/system/nsauxd.service",
        "./usr/share/man/man8/nsauxd.8.gz",
        "./usr/share/man/man8/nsauxctl.8.gz",
        "./usr/share/man/man5/nsaux.toml.5.gz",
        "./usr/share/containers/oci/hooks.d/nsaux.json",
        "./usr/share/bash-completion/completions/nsauxctl",
        "./usr/share/doc/nsaux/copyright",
        "./usr/share/doc/nsaux/changelog.Debian.gz",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} missing in\n{listing}"
        );
    }
    let root = tempfile::tempdir()?;
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(root.path().join("DEBIAN")))?;
    let conffiles = std::fs::read_to_string(root.path().join("DEBIAN/conffiles"))?;
    assert_eq!(conffiles.trim(), "/etc/nsaux/nsaux.toml");

    // Installed into a throwaway root: the installed nsauxctl accepts the installed conffile,
    // the hook runs the installed nsauxctl, and the changelog names the package's version.
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root.path()))?;
    let r = root.path();
    let valid = run(Command::new(r.join("usr/sbin/nsauxctl"))
        .args(["validate", "--config"])
        .arg(r.join("etc/nsaux/nsaux.toml")))?;
    eprintln!("validate: {}{}", text(&valid.stdout), text(&valid.stderr));
    let hook: serde_json::Value = serde_json::from_slice(&std::fs::read(
        r.join("usr/share/containers/oci/hooks.d/nsaux.json"),
    )?)?;
    let hook_path = hook["hook"]["path"].as_str().unwrap_or_default();
    assert!(
        r.join(hook_path.trim_start_matches('/')).is_file(),
        "the hook runs {hook_path}, which the package does not install"
    );
    let changelog = run(Command::new("gzip")
        .arg("-dc")
        .arg(r.join("usr/share/doc/nsaux/changelog.Debian.gz")))?;
    let first = text(&changelog.stdout);
    let first = first.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("nsaux ({version})")),
        "changelog's first entry {first:?} is not the package's version {version}"
    );
    let version_out = run(Command::new(r.join("usr/sbin/nsauxctl")).arg("--version"))?;
    assert!(text(&version_out.stdout).starts_with("nsauxctl "));
    Ok(())
}

/// The commit this checkout is at, as build.rs records it, or "unknown" outside git.
fn head_commit() -> String {
    Command::new("git")
        .current_dir(workspace())
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| text(&o.stdout).trim().to_owned(),
        )
}

#[test]
fn version_and_build_info_name_the_commit_and_compiler() -> anyhow::Result<()> {
    let test = "version_and_build_info_name_the_commit_and_compiler";
    if !require(test, &[]) {
        return Ok(());
    }
    let commit = head_commit();
    for b in ["nsauxd", "nsauxctl"] {
        let out = run(Command::new(bin(b)).arg("--version"))?;
        let v = text(&out.stdout);
        assert!(
            v.starts_with(&format!(
                "{b} {} (commit {commit}, rustc ",
                env!("CARGO_PKG_VERSION")
            )),
            "{b} --version: {v:?}"
        );
        // -V stays the bare version (what the man pages record).
        let short = text(&run(Command::new(bin(b)).arg("-V"))?.stdout);
        assert_eq!(short.trim(), format!("{b} {}", env!("CARGO_PKG_VERSION")));
    }
    let d = Daemon::start("")?;
    let out = d.ctl(&["metrics"])?;
    assert!(out.status.success(), "{out:?}");
    let exposition = text(&out.stdout);
    let info = exposition
        .lines()
        .find(|l| l.starts_with("nsaux_build_info{"))
        .unwrap_or_default();
    assert!(
        info.contains(&format!("commit=\"{commit}\""))
            && info.contains("rustc=\"rustc ")
            && info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && info.ends_with(" 1"),
        "{info:?}"
    );
    Ok(())
}
