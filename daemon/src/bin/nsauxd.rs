//! The nsaux daemon; all logic lives in the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    nsauxd::daemon_main()
}
