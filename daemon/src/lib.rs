//! nsauxd: one process serving auxiliary network services inside every network namespace.
//!
//! # Layout
//! - [`sys`] — the only unsafe code: setns, namespace cookies, pktinfo/timestamp UDP, pidfd.
//! - [`netns`] — namespace identity ([`netns::NetnsId`]), sources, the [`netns::factory`]
//!   that creates sockets inside a namespace, and the live directory [`netns::tracker`].
//! - [`serve`] — the service traits, UDP/TCP/local loops, and the built-in `ident` service.
//! - [`manager`] — the single task that owns every namespace's state and applies changes: its
//!   loop and reloads, namespace sources (attach/detach, pid watch), listeners (bind, retry),
//!   reports (status, ns list).
//! - [`state`] — durable journals (portmapper registrations), keyed by boot id + cookie.
//! - [`config`] — the TOML configuration with per-namespace overrides.
//! - [`control`] — the control socket protocol, server and client; the server hands requests
//!   over as [`control::Call`]s and knows nothing of the manager.
//! - [`ops`] — single-instance lock, logging, systemd notification.
//! - [`startup`] — `nsauxd`'s entry point: arguments, configuration, runtime, manager, signals.
//! - [`ctl`] — `nsauxctl`'s entry point: subcommands, control requests, table printing.
//! - [`defaults`] — default paths shared by both.

pub mod config;
pub mod control;
pub mod ctl;
pub mod defaults;
mod lock;
pub mod manager;
pub mod netns;
pub mod ops;
mod seed;
pub mod serve;
pub mod startup;
pub mod state;
mod sys;

pub use ctl::ctl_main;
pub use startup::daemon_main;
