//! CNI plugin for nsauxd (chained after the plugins that set up the interfaces); all logic
//! lives in the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    nsauxd::cni_main()
}
