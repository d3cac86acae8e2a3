//! What build this is (crate version, git commit, compiler), set by `daemon/build.rs`. Why:
//! an operator comparing hosts, or a bug report, needs the exact source, and the crate version
//! alone does not change between commits. Shown by `--version` and `nsaux_build_info`.

/// Crate version.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Git commit the binary was built from (12 hex digits), or "unknown" outside a repository.
pub(crate) const COMMIT: &str = env!("NSAUX_GIT_COMMIT");

/// `rustc --version` of the compiler that built it.
pub(crate) const RUSTC: &str = env!("NSAUX_RUSTC_VERSION");

/// What `--version` prints after the program name: version, commit and compiler (clap's
/// `long_version`, so `-V` stays the bare version that man pages and scripts may record).
pub(crate) const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("NSAUX_GIT_COMMIT"),
    ", ",
    env!("NSAUX_RUSTC_VERSION"),
    ")"
);
