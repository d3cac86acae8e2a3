//! The verdict of [`crate::Server::handle`]: what to send, or why nothing is
//! sent. Returned (not reported through a callback) so the daemon counts it
//! and a test asserts one value.

/// What the daemon should do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "the daemon must send the reply or count the drop"]
pub enum Action {
    /// Send `out[..len]` back to the client, from the address the request
    /// arrived at. `len` never exceeds the request's length.
    Respond {
        /// Length of the reply in the caller's output buffer.
        len: usize,
        /// What kind of reply it is, for statistics.
        kind: ResponseKind,
    },
    /// Send nothing.
    Ignore(DropReason),
}

/// The kind of reply sent, so the daemon can count them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseKind {
    /// A normal time reply from a synchronised clock (or the local stratum).
    Time,
    /// A time reply with leap indicator 3: our clock is unsynchronised and
    /// `answer_unsynchronised` is set. Clients will not synchronise to it.
    Unsynchronised,
    /// A normal time reply let through although the client is over its rate
    /// limit (the leak that keeps spoofed victims served).
    Leaked,
    /// A RATE kiss-o'-death (stratum 0, refid "RATE", leap 3).
    KissRate,
}

/// Why a request was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The client address is denied by the allow/deny lists.
    Denied,
    /// Shorter than the 48-byte header.
    TooShort,
    /// Longer than any NTP request (see [`crate::trailer::MAX_REQUEST_LEN`]).
    TooLong,
    /// Length not a multiple of 4, or broken extension fields.
    Malformed,
    /// Version 0 or 5..=7.
    BadVersion,
    /// Mode 0 (reserved) in an NTPv2-4 packet, or an NTPv1 packet from port 123 (a peer's).
    Mode0,
    /// Mode 1 (symmetric active) while symmetric mode is disabled.
    Mode1,
    /// Mode 2 (symmetric passive): a reply, not a request.
    Mode2,
    /// Mode 4 (server): a reply, not a request; answering could start loops.
    Mode4,
    /// Mode 5 (broadcast).
    Mode5,
    /// Mode 6 (control, ntpq): amplification vector.
    Mode6,
    /// Mode 7 (private, ntpdc monlist): amplification vector.
    Mode7,
    /// Carries a MAC or crypto-NAK; we have no keys to verify or sign.
    Authenticated,
    /// Carries NTS extension fields; we have no NTS keys.
    Nts,
    /// Our clock is unsynchronised and `answer_unsynchronised` is off.
    Unsynchronised,
    /// Over the client's rate limit.
    RateLimited,
    /// The caller's output buffer is shorter than 48 bytes (a daemon bug).
    BufferTooSmall,
}
