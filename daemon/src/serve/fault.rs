//! Fault injection for the shared-fate tests (cargo feature `fault-injection`, off by
//! default and never in a release package).
//!
//! With the feature, a datagram whose payload is exactly [`PANIC`] makes the service handling
//! it panic, and one that is exactly [`END_LISTENER`] makes its UDP listener task return, so
//! the integration tests can prove that a panic in one namespace is contained and that an
//! ended listener is restarted. Without the feature this module is not compiled at all: no
//! network peer or unprivileged user can reach it in a normal build. The test harness builds
//! the daemon it runs with the feature (`tests/src/env.rs`).

/// Payload that panics the service handling it.
pub(crate) const PANIC: &[u8] = b"nsaux-fault-injection: panic";
/// Payload that ends the UDP listener task that received it.
pub(crate) const END_LISTENER: &[u8] = b"nsaux-fault-injection: end listener";
/// Service control action (`nsauxctl SERVICE fault-panic`) that panics inside the action.
pub(crate) const PANIC_ACTION: &str = "fault-panic";

/// Panics when `data` asks for it; called just before a datagram is handed to its service.
pub(crate) fn before_datagram(data: &[u8]) {
    if data == PANIC {
        panic!("fault injection: panic requested by a datagram");
    }
}

/// Environment variable: milliseconds a portmapper journal compaction waits (on its blocking
/// thread) between writing its snapshot and copying the appends made meanwhile, so a test can
/// append, and `kill -9` the daemon, while a compaction is under way.
pub(crate) const COMPACTION_PAUSE_ENV: &str = "NSAUX_FAULT_COMPACTION_PAUSE_MS";

/// Sleeps as [`COMPACTION_PAUSE_ENV`] asks (on a blocking thread, never the loop).
pub(crate) fn compaction_pause() {
    if let Some(ms) = std::env::var(COMPACTION_PAUSE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}
