//! What `Portmapper::handle` tells the daemon: a verdict (send the reply or not, and why) and the
//! effects it must carry out.
//!
//! Why a returned value rather than callbacks: a test asserts one value, and `#[must_use]` makes
//! forgetting to journal a registration a compiler warning.

use crate::registry::{Entry, Removed};
use crate::rmtcall::Forward;
use crate::rpc::{AuthStat, NotACall};

/// Result of handling one call.
#[must_use = "the daemon must send the reply per the verdict and carry out every effect"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether `out` holds a reply to send, and why.
    pub verdict: Verdict,
    /// Side effects, in order; journal registration changes *before* sending the reply.
    pub effects: Vec<Effect>,
}

impl Outcome {
    /// True when `out` holds a reply the daemon must send back to the caller.
    pub fn should_reply(&self) -> bool {
        matches!(self.verdict, Verdict::Replied | Verdict::Refused(_))
    }
}

/// The fate of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A successful RPC reply is in `out` (this includes SET answering FALSE).
    Replied,
    /// An RPC error reply is in `out`; send it.
    Refused(Refusal),
    /// Nothing to send (`out` is empty).
    Dropped(DropReason),
    /// Nothing to send now: see the [`Effect::Forward`] effect; the reply comes from
    /// [`crate::PendingCall::build_reply`].
    Forwarded,
}

/// Which RPC error was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `rpcvers` != 2: MSG_DENIED / RPC_MISMATCH (2, 2).
    RpcMismatch,
    /// MSG_DENIED / AUTH_ERROR: bad or rejected credentials, or AUTH_TOOWEAK for SET/UNSET from a
    /// non-local caller, UDP DUMP from afar, or a denied remote call.
    Auth(AuthStat),
    /// Program is not 100000.
    ProgUnavail,
    /// Version outside 2..=4 (or, for INDIRECT, outside the target's registered range).
    ProgMismatch {
        /// Lowest supported version.
        low: u32,
        /// Highest supported version.
        high: u32,
    },
    /// Unknown procedure for the version.
    ProcUnavail,
    /// Arguments did not decode (includes any string/opaque over 9000 bytes).
    GarbageArgs,
    /// Reply too large for UDP, or INDIRECT could not be forwarded (remote calls disabled).
    SystemErr,
}

/// Why nothing is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not a decodable RPC call header.
    NotACall(NotACall),
    /// CALLIT/BCAST/INDIRECT over a stream transport: rpcbind only serves them over datagrams.
    RemoteCallNotDatagram,
    /// CALLIT/BCAST failure: these stay silent so broadcasts are not answered with complaints
    /// (includes "remote calls disabled").
    RemoteCallSilent,
}

/// Something the daemon must do besides sending the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A registration was added: journal it.
    Registered(Entry),
    /// Registrations were removed: journal their removal (or, if that fails, give them back to
    /// [`crate::Portmapper::undo_unset`]).
    Unregistered(Removed),
    /// Forward a remote call (only with `Config::remote_calls`).
    Forward(Forward),
}

/// A procedure's answer before it is turned into reply bytes.
#[derive(Debug)]
pub(crate) enum Answer {
    /// SUCCESS with these result bytes.
    Ok(Vec<u8>),
    /// An error reply.
    Err(Refusal),
    /// No reply.
    Drop(DropReason),
    /// No reply now; forward.
    Forward(Forward),
}
