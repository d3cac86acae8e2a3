//! Control client for nsauxd; all logic lives in the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    nsauxd::ctl_main()
}
