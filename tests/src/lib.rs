//! Test harness for nsaux: real namespaces, the real daemon, real clients.
//!
//! # Layout
//! - [`env`] — root/tool gating (under `CI=true` a missing capability fails, never skips),
//!   locating the built binaries.
//! - [`netns`] — [`netns::TestNetns`]: a namespace bound into a private directory, created and
//!   deleted the way `ip netns add/del` do, and helpers to run code or commands inside it.
//! - [`ntpdig`] — ntpdig's JSON report, read one way.
//! - [`rpc`] — a tiny ONC RPC client (portmapper XDR, UDP, record-marked streams).
//! - [`stream`] — how a stream connection ended (EOF, reset, data, timeout), for checks
//!   that the daemon closed one.
//! - [`closed_loop`] — the plain closed-loop UDP flood (std socket, a window in flight, answers
//!   per time slot) the fairness tests send from a remote host behind a veth.
//! - [`flood`] — a cheap closed-loop UDP load generator (GSO bursts out, GRO reads in) for
//!   benches that must leave most of the machine to the server.
//! - [`floor`] — the floor server of the NTP and DNS benches (the kernel alone, best batching).
//! - [`service_probe`] — probes of the portmapper, DNS and NTP inside namespaces, for the
//!   benches that time when namespaces start answering.
//! - [`daemon`] — [`daemon::Daemon`]: an `nsauxd` with its own runtime/state/netns directories,
//!   stopped by pid when dropped.
//!
//! Nothing here touches the host's `/run/netns`, `/run/rpcbind.sock` or host ports.

#![warn(missing_docs)]

pub mod bench;
pub mod chrony;
pub mod closed_loop;
pub mod daemon;
pub mod dns;
pub mod env;
pub mod flood;
pub mod floor;
pub mod netns;
pub mod ntpdig;
pub mod rpc;
pub mod service_probe;
pub mod stream;
pub mod tcp_flood;
