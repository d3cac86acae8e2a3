//! The types that cross the boundary between this core and the daemon: who asked, what
//! happened to a query, what to send upstream and what to send back to a client.
//!
//! Why in one place: these are the whole contract with `daemon/`; everything else in the
//! crate is internal.

use std::net::SocketAddr;
use std::time::Instant;

/// How a message travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// One datagram; answers are size-limited and may be truncated (TC).
    Udp,
    /// One message on a stream; the daemon adds/removes the 2-byte length prefix.
    Tcp,
}

/// The client a query came from, plus the daemon's own routing token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientInfo {
    /// Source address of the query (access control and rate limiting key on its IP).
    pub addr: SocketAddr,
    /// Transport of the query (size limit, TC, rate limiting applies to UDP only).
    pub transport: Transport,
    /// Opaque to the resolver and handed back in `ClientAnswer`, so the daemon can find the
    /// socket / TCP connection (and local address) to answer from.
    pub token: u64,
}

/// Identifies one upstream resolution (shared by every client coalesced onto it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryToken(pub u64);

/// What `handle_query` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an Answered outcome means `out` holds a reply that must be sent"]
pub enum QueryOutcome {
    /// `out` holds the answer: send it to the client now.
    Answered(AnswerKind),
    /// Needs upstream: the answer will come out of `poll_answer` later. Drive
    /// `poll_transmit`/`poll_timeout` now.
    Pending(QueryToken),
    /// Send nothing.
    Dropped(DropReason),
}

/// Which path produced an answer (for metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerKind {
    /// Authoritative local data (hosts, config, run-time records).
    Local,
    /// Fresh cache hit.
    Cache,
    /// Expired cache data served because upstreams failed (RFC 8767).
    Stale,
    /// Answer relayed from an upstream (RCODE preserved).
    Upstream,
    /// Client not in the allow list.
    Refused,
    /// Malformed query.
    FormErr,
    /// Unsupported opcode or query type.
    NotImp,
    /// Unsupported EDNS version (extended RCODE 16).
    BadVers,
    /// SERVFAIL generated here, with the reason to log.
    ServFail(ServFailReason),
    /// Rate-limited client answered with an empty TC=1 reply ("slip").
    Truncated,
    /// QTYPE ANY answered with a synthesized HINFO record (RFC 8482), not forwarded.
    MinimalAny,
}

/// Why the resolver itself answered SERVFAIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServFailReason {
    /// No upstream servers are configured for this instance. (SERVFAIL rather than REFUSED:
    /// the client is allowed, the service is just unable; glibc then tries its next server.)
    NoUpstreams,
    /// Too many outstanding upstream queries (`Config::max_outstanding`).
    Overloaded,
    /// Every attempt timed out or failed and no stale data was available.
    UpstreamsFailed,
}

/// Why a query got no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than a DNS header.
    Malformed,
    /// QR bit set: it is a response, not a query.
    NotAQuery,
    /// Client over its rate limit.
    RateLimited,
    /// Outstanding-query cap reached and `Overload::Drop` configured.
    Overloaded,
    /// A UDP retransmission (same client address and port, ID and question) of a query
    /// still waiting upstream: its answer goes out once, to the first copy's route.
    Retransmit,
}

/// A message to send to an upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTransmit {
    /// Destination server.
    pub upstream: SocketAddr,
    /// Transport to use. `Tcp` means: open a connection (from inside the namespace), send
    /// `payload` with a 2-byte length prefix, and feed the one reply to `handle_upstream`.
    pub transport: Transport,
    /// The resolution this belongs to.
    pub token: QueryToken,
    /// DNS message ID used (needed for `handle_upstream_error`).
    pub dns_id: u16,
    /// The DNS message, without length prefix.
    pub payload: Vec<u8>,
    /// When the core gives up on this attempt (UDP: `attempt_timeout` after it was made,
    /// TCP: twice that). The daemon arms exactly this instant for the socket or connection
    /// carrying it, so the two sides never disagree on how long an attempt lives.
    pub deadline: Instant,
}

/// A deferred answer to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAnswer {
    /// Who to send it to (with the daemon's token).
    pub client: ClientInfo,
    /// The DNS message, without length prefix.
    pub payload: Vec<u8>,
    /// How it was produced.
    pub kind: AnswerKind,
    /// The resolution it belongs to.
    pub token: QueryToken,
}

/// What `handle_upstream` did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// It answered an outstanding query (answers may now be ready).
    Accepted,
    /// It arrived after its query completed; used for upstream health only.
    Late,
    /// Discarded; the query keeps waiting (spoofing or garbage).
    Ignored(IgnoreReason),
}

/// Why an upstream message was discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IgnoreReason {
    /// Not a parseable DNS response.
    Malformed,
    /// No outstanding query has this ID.
    UnknownId,
    /// Came from another address or transport than the query went to.
    WrongSource,
    /// The question does not match the one asked.
    QuestionMismatch,
}
