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
//! - [`forward`]: `ForwardTable`, `Origin`: forwarded remote calls, whom to answer and from
//!   where (rpcbind's FINFO).
//! - [`liveness`]: `Liveness`, `Probe`: NULL-call probes of registered services, misses,
//!   backoff and removal of silent registrations.
//! - [`stats`]: GETSTAT counters in rpcbind's layout.
//! - [`outcome`]: `Outcome`, `Verdict`, `Effect`.
//! - [`record`]: TCP record marking (`RecordDecoder`, `frame_record`).
//! - [`uaddr`]: universal address parsing, formatting, merging, taddr conversion.
//! - [`validate`]: what SET accepts (known netid, a uaddr that parses for it, length caps).
//! - `rpc` (private): RPC call/reply headers; `is_rpc_reply` and `message_xid` are re-exported.
//! - `types` (private): portmapper XDR types.
//! - `xdr` (private): capped XDR reader/writer.
//! - [`error`]: `XdrError`, `RecordError`.
//!
//! # Using it from the daemon
//! 1. `Portmapper::new(config, &[(netid, uaddr), ...])` per namespace, with the endpoints actually
//!    listened on; then `restore(journaled_entries)`.
//! 2. UDP: one datagram → `handle(&ctx, datagram, &mut out)`. TCP/AF_LOCAL: bytes →
//!    `RecordDecoder::feed` → each record → `handle` → `frame_record(&out, &mut wire)`.
//! 3. Carry out `Outcome::effects` in order (journal `Registered`/`Unregistered` first), then send
//!    `out` iff `Outcome::should_reply()`. If the journal write fails, take the changes back
//!    (latest first: `unset_admin` for a `Registered`, `undo_unset` for an `Unregistered`) and
//!    send nothing, so the client retries. `Verdict::Forwarded` means the reply comes later from
//!    `PendingCall::build_reply` (remote calls only).
//! 4. Remote calls: `ForwardTable::start` with the call's `Origin` and `now` gives the xid to
//!    send `Forward::encode_call` with; a datagram that `is_rpc_reply` goes to
//!    `ForwardTable::finish`, which says whom to answer and from where.
//! 5. Liveness (optional): every interval `Liveness::round(registrations, sources, max_misses,
//!    seed)` gives probes to send and dead registrations to remove (journaled, then
//!    `Liveness::forget`). Replies go to `Liveness::on_reply` (UDP) or are checked with
//!    `Probe::is_answered_by` and reported with `Liveness::answered` (TCP); a probe that could
//!    not be sent is `Liveness::withdraw`n.
//!
//! Randomness: the crate has no random source of its own. Forwarded xids start from the seed
//! given to `ForwardTable::new` and probe xids from the one given to each `Liveness::round`; the
//! daemon takes both from the OS random source, so nobody can answer in a target's place.
//!
//! # Where this differs from rpcbind, on purpose
//! - RPC version ≠ 2 gets MSG_DENIED/RPC_MISMATCH (RFC 5531); libtirpc silently drops it.
//! - A non-UTF-8 string argument is GARBAGE_ARGS (netids and addresses are ASCII in practice).
//! - UNSET is all-or-nothing: rpcbind deletes matching entries up to the first one the caller does
//!   not own and then answers FALSE.
//! - GETADDR replaces the host of a *wildcard* registration with the local address the call arrived
//!   on; specific addresses are returned unchanged (rpcbind rewrites every host part with the
//!   interface on the caller's network). The request's `r_addr` hint is not used.
//! - GETADDRLIST skips registrations with an unknown netid (rpcbind would send no reply at all).
//! - SET does not check that the registered server is up (rpcbind's `is_bound`, compiled out
//!   there too). Instead, when the daemon enables it, [`Liveness`] probes registrations with NULL
//!   calls and reports those silent for several rounds, which rpcbind never removes.
//! - Loopback IP callers may SET/UNSET by default (`Config::loopback_may_register`, rpcbind `-L`).
//! - UDP DUMP and GETSTAT from non-loopback callers are refused with AUTH_TOOWEAK
//!   (`Config::udp_dump_loopback_only`), the registration table and GETSTAT rows are capped, UDP
//!   replies over 8800 bytes become SYSTEM_ERR, and so does any UDP reply to a non-loopback
//!   caller longer than twice its request ([`UDP_REPLY_FACTOR`]; no reflection).
//! - SET refuses (FALSE) an unknown netid, a uaddr that does not parse for its netid and
//!   over-long strings ([`validate`]); rpcbind stores anything.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod context;
mod dump;
pub mod error;
pub mod forward;
pub mod liveness;
pub mod outcome;
pub mod record;
pub mod refuse;
pub mod registry;
pub mod rmtcall;
mod rpc;
pub mod server;
mod shared_str;
pub mod stats;
mod types;
pub mod uaddr;
pub mod validate;
mod xdr;

pub use config::Config;
pub use context::{CallContext, Caller, SUPERUSER, Transport};
pub use dump::DumpJob;
pub use error::{RecordError, XdrError};
pub use forward::{DEFAULT_FORWARD_MAX_AGE, DEFAULT_FORWARD_SLOTS, ForwardTable, Origin};
pub use liveness::{
    Liveness, Probe, ProbeSources, ProbeTransport, Round, encode_null_call, is_null_reply,
};
pub use outcome::{DropReason, Effect, Outcome, Refusal, Verdict};
pub use record::{DEFAULT_MAX_RECORD, RecordDecoder, frame_record};
pub use refuse::refuse_set_reply;
pub use registry::{Entry, Registry, Removed, SelfTable, entry_bytes};
pub use rmtcall::{Forward, PendingCall, RemoteKind, remote_call_allowed};
pub use rpc::{AuthStat, NotACall, PMAP_PROG, ReplyBody, decode_reply, is_rpc_reply, message_xid};
pub use server::{Portmapper, UDP_REPLY_FACTOR};
pub use shared_str::SharedStr;
pub use stats::{AddrStat, RmtStat, Stats, VersStats};
pub use validate::{InvalidSet, check_set};
pub use xdr::MAX_XDR_LEN;
