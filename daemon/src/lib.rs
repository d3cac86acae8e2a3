//! nsauxd: one process serving auxiliary network services inside every network namespace.
//!
//! The library exists for the two binaries: [`daemon_main`] (`nsauxd`) and [`ctl_main`]
//! (`nsauxctl`). Everything else is crate-private, so the compiler reports dead code.
//! `ARCHITECTURE.md` at the repository root says where each job lives.
//!
//! # Layout
//! - `sys` — the only unsafe code: setns, namespace cookies, pktinfo/timestamp UDP, pidfd.
//! - `netns` — namespace identity (`NetnsId`), sources, the `factory` that creates sockets inside
//!   a namespace, and the live directory `tracker`.
//! - `serve` — the service traits, UDP/TCP/local loops, and the built-in `ident` service; the
//!   portmapper's durable registration journal (boot id + cookie) is `serve::rpcbind::journal`.
//! - `manager` — the single task that owns every namespace's state and applies changes: its
//!   loop and reloads, namespace sources (attach/detach, pid watch), listeners (bind, retry),
//!   reports (status, ns list).
//! - `config` — the TOML configuration with per-namespace overrides.
//! - `control` — the control socket protocol, server and client; the server hands requests
//!   over as `control::Call`s and knows nothing of the manager.
//! - `ops` — single-instance lock, logging, systemd notification.
//! - `startup` — `nsauxd`'s entry point: arguments, configuration, runtime, manager, signals.
//! - `ctl` — `nsauxctl`'s entry point: subcommands, control requests, table printing.
//! - `defaults` — default paths shared by both.
//! - `privilege` — the capabilities kept after start (the rest are dropped).
//! - `budget` — the daemon-wide memory ceiling over the per-namespace tables.
//! - `lock`, `seed` — the one poison-tolerant lock helper and the one seeding helper.
//! - `metrics` — counters per namespace, the exposition and the read-only observation socket.
//! - `hooks`, `cni` — what runtimes call: the OCI hook (`nsauxctl oci-hook`) and the CNI plugin
//!   (`nsaux-cni`, entry point [`cni_main`]), attaching and detaching under a runtime's key.
//! - `escape` — untrusted text made safe for logs and tables (no forged lines, no terminal escapes).
#![warn(missing_docs)]

mod budget;
mod build_info;
mod cni;
mod config;
mod control;
mod ctl;
mod defaults;
#[cfg(test)]
mod docs;
mod escape;
mod hooks;
mod lock;
mod manager;
mod metrics;
mod netns;
mod ops;
mod privilege;
mod seed;
mod serve;
mod startup;
mod state_file;
mod sys;

pub use cni::cni_main;
pub use ctl::ctl_main;
pub use startup::daemon_main;
