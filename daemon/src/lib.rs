//! nsauxd: one process serving auxiliary network services inside every network namespace.
//!
//! # Layout
//! - [`sys`] — the only unsafe code: setns, namespace cookies, pktinfo/timestamp UDP, pidfd.
//! - [`netns`] — namespace identity ([`netns::NetnsId`]), sources, the [`netns::factory`]
//!   that creates sockets inside a namespace, and the live directory [`netns::tracker`].
//! - [`serve`] — the service traits, UDP/TCP/local loops, and the built-in `ident` service; the
//!   portmapper's durable registration journal (boot id + cookie) is [`serve::rpcbind::journal`].
//! - [`manager`] — the single task that owns every namespace's state and applies changes.
//! - [`config`] — the TOML configuration with per-namespace overrides.
//! - [`control`] — the control socket protocol, server and client.
//! - [`ops`] — single-instance lock, logging, systemd notification.
//! - [`cli`] — `nsauxd` and `nsauxctl` entry points.

pub mod cli;
pub mod config;
pub mod control;
mod lock;
pub mod manager;
pub mod netns;
pub mod ops;
mod seed;
pub mod serve;
mod sys;

pub use cli::{ctl_main, daemon_main};
