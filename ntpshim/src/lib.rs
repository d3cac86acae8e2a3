//! Sans-IO NTP server for nsaux: turns *(now, client address, receive time,
//! request bytes, clock status)* into *(reply bytes, verdict)*. No sockets,
//! clocks, files or threads: the daemon reads `adjtimex`, the monotonic clock
//! and the kernel receive timestamp and passes them in; the transmit timestamp
//! is read through a closure at the last moment.
//!
//! The library is `no_std` (with `alloc`), so any attempt to reach for
//! sockets, files or clocks fails to compile instead of waiting for review.
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | [`timestamp`] | NTP 32.32 timestamps and 16.16 short values, Unix conversions |
//! | [`mono`] | [`Mono`], the caller's monotonic time for rate limiting |
//! | [`packet`] | 48-byte header codec: [`Header`], [`Leap`], [`Mode`], [`RefId`] |
//! | [`trailer`] | classifies bytes after the header: extensions, MAC, NTS |
//! | [`clock`] | [`ClockStatus`] from `adjtimex` numbers, [`ClockStatusSource`], [`FakeClock`], precision |
//! | [`reference`](mod@reference) | [`ReferenceState`]: when to re-copy a local NTP daemon's reference, what to serve meanwhile |
//! | [`reply`] | the clock fields of a reply: synchronised, local stratum or unsynchronised |
//! | [`acl`] | [`IpNet`] CIDR parsing and the allow/deny rule |
//! | [`ratelimit`] | chrony-style per-client token buckets with leak and RATE kiss |
//! | [`interleave`] | interleaved mode (`xleave`): the bounded table of earlier exchanges, chrony's rules |
//! | [`server`] | [`Config`] and [`Server::handle`], the request pipeline |
//! | [`action`] | [`Action`], [`ResponseKind`], [`DropReason`]: the verdict |
//! | [`stats`] | [`Stats`] counters over verdicts |
//! | [`error`] | `thiserror` errors of the parsing helpers |
//!
//! # Decisions (and where they come from)
//!
//! * Requests: modes 3 (and 1 if `symmetric`) of versions 1..=4, 48..=1140
//!   bytes, length a multiple of 4 (chrony's `parse_packet`). Replies echo the
//!   version, are always exactly 48 bytes, so never longer than the request.
//! * NTPv4 extension fields are skipped and answered with a bare header;
//!   MACs and crypto-NAKs (we hold no keys) and NTS fields are dropped, as
//!   chrony does for unknown keys. Mode 0 (NTPv1 by port) is dropped: the
//!   daemon's port is not an input.
//! * Poll is echoed, raised to the rate-limit interval (chrony's
//!   `CLG_GetNtpMinPoll`). Precision comes from the clock status.
//! * Synchronised means kernel `maxerror` < 16 s, not `STA_UNSYNC`. When
//!   unsynchronised: leap 3, stratum 16, refid 0 (or silence, or the local
//!   stratum); see [`reply`].
//! * Rate limiting is chrony's token bucket with leak (normal answers) and an
//!   optional RATE kiss (stratum 0, refid "RATE", leap 3); see [`ratelimit`].
//! * Access: most specific allow/deny entry wins, deny wins ties; see [`acl`].
//! * Interleaved mode as chrony serves it, when [`Config::interleave`] is set (the
//!   daemon's default); see [`interleave`].
//! * Not done: timestamp fuzzing below the precision,
//!   chrony's "client polls faster when dropped" heuristic, authentication.
//!
//! # Use
//!
//! ```
//! use nsaux_ntpshim::{Action, Config, FakeClock, Mono, NtpTimestamp, Server};
//!
//! let mut server = Server::new(Config::default());
//! let mut request = [0u8; 48];
//! request[0] = 0x23; // LI 0, version 4, mode 3 (client)
//! let mut out = [0u8; 48];
//! let recv = NtpTimestamp::from_unix(1_800_000_000, 0);
//! let action = server.handle(
//!     Mono::from_nanos(0),
//!     "192.0.2.1".parse().unwrap(),
//!     recv,
//!     &request,
//!     &FakeClock::synchronised().status,
//!     || NtpTimestamp::from_unix(1_800_000_000, 20_000),
//!     &mut out,
//! );
//! assert!(matches!(action, Action::Respond { len: 48, .. }));
//! ```
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod acl;
pub mod action;
pub mod clock;
pub mod error;
pub mod interleave;
pub mod mono;
pub mod packet;
pub mod ratelimit;
pub mod reference;
pub mod reply;
mod rng;
pub mod server;
pub mod stats;
pub mod timestamp;
pub mod trailer;

pub use acl::{AccessList, IpNet};
pub use action::{Action, DropReason, ResponseKind};
pub use clock::{
    ClockStatus, ClockStatusSource, FakeClock, KernelTimex, Reference, precision_from_resolution_ns,
};
pub use error::{PacketError, ParseNetError};
pub use interleave::{Interleave, Lookup};
pub use mono::Mono;
pub use packet::{HEADER_LEN, Header, Leap, Mode, RefId};
pub use ratelimit::{RateLimitConfig, RateLimiter};
pub use reference::{ReferenceChoice, ReferenceSource, ReferenceState};
pub use server::{Config, Server};
pub use stats::Stats;
pub use timestamp::{NtpShort, NtpTimestamp};

#[cfg(test)]
mod tests;
