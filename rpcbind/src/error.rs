//! Error types of the crate: why an XDR body or a TCP record could not be decoded.

use thiserror::Error;

/// Why an XDR value could not be decoded.
///
/// Every variant maps to GARBAGE_ARGS (or a dropped datagram for a broken call header), never to
/// a panic: the bytes come from the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum XdrError {
    /// The input ended before the value did (truncated datagram or record).
    #[error("XDR input truncated")]
    Truncated,
    /// A length prefix exceeded the cap (9000 bytes for rpcbind strings, CVE-2017-8779).
    #[error("XDR length {len} exceeds the limit {max}")]
    TooLong {
        /// The length the peer claimed.
        len: u32,
        /// The limit that applied.
        max: u32,
    },
    /// An XDR bool was neither 0 nor 1.
    #[error("XDR bool out of range: {0}")]
    BadBool(u32),
    /// A string was not UTF-8 (netids, universal addresses and owners are ASCII in practice).
    #[error("XDR string is not UTF-8")]
    NotUtf8,
    /// A list had more elements than the cap allows.
    #[error("XDR list too long")]
    ListTooLong,
}

/// Why a TCP record stream is broken; the daemon closes the connection on any of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record (sum of its fragments) would exceed the configured maximum size.
    #[error("record of at least {size} bytes exceeds the maximum {max}")]
    TooLarge {
        /// Bytes the record would have at least.
        size: usize,
        /// The configured cap.
        max: usize,
    },
}
