//! nsaux-rpcbind: a sans-IO portmapper (RFC 1833 program 100000, versions 2, 3 and 4) with
//! rpcbind's observable semantics, for one network namespace at a time.
//!
//! The daemon passes bytes plus a [`CallContext`] (transport, peer, local address, `now`) to
//! [`Portmapper::handle`] and gets reply bytes plus an [`Outcome`] (verdict and effects) back. This
//! crate does no I/O: no sockets, files, clocks or threads.
//!
//! # Layout
//! - [`config`]: `Config`, the protocol settings of one namespace.
//! - [`context`]: `Transport`, `Caller`, `CallContext`; owner and loopback rules.
//! - [`server`]: `Portmapper`, dispatch of versions 2/3/4 and every procedure.
//! - [`registry`]: `Registry`/`Entry`, rpcbind's set/unset/lookup semantics.
//! - [`rmtcall`]: CALLIT/BCAST/INDIRECT, the deny list and the `Forward` effect.
//! - [`stats`]: GETSTAT counters in rpcbind's layout.
//! - [`outcome`]: `Outcome`, `Verdict`, `Effect`.
//! - [`record`]: TCP record marking (`RecordDecoder`, `frame_record`).
//! - [`probe`]: NULL call / reply helpers for liveness probes.
//! - [`uaddr`]: universal address parsing, formatting, merging, taddr conversion.
//! - `rpc` (private): RPC call/reply headers.
//! - `types` (private): portmapper XDR types.
//! - `xdr` (private): capped XDR reader/writer.
//! - [`error`]: `XdrError`, `RecordError`.
#![forbid(unsafe_code)]

pub mod config;
pub mod context;
pub mod error;
pub mod outcome;
pub mod probe;
pub mod record;
pub mod registry;
pub mod rmtcall;
mod rpc;
pub mod server;
pub mod stats;
mod types;
pub mod uaddr;
mod xdr;

pub use config::Config;
pub use context::{CallContext, Caller, SUPERUSER, Transport};
pub use error::{RecordError, XdrError};
pub use outcome::{DropReason, Effect, Outcome, Refusal, Verdict};
pub use probe::{encode_null_call, is_null_reply};
pub use record::{DEFAULT_MAX_RECORD, RecordDecoder, frame_record};
pub use registry::{Entry, Registry};
pub use rmtcall::{Forward, PendingCall, RemoteKind, remote_call_allowed};
pub use rpc::{AuthStat, NotACall, PMAP_PROG, ReplyBody, decode_reply};
pub use server::Portmapper;
pub use stats::{AddrStat, RmtStat, Stats, VersStats};
pub use xdr::MAX_XDR_LEN;
