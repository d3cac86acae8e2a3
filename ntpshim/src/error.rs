//! Errors of the parsing helpers. `Server::handle` never returns an error: it
//! turns every problem with network input into a [`crate::DropReason`].

use alloc::string::String;

use thiserror::Error;

/// Why bytes could not be read as, or written to, an NTP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Fewer than 48 bytes: not an NTP packet.
    #[error("NTP packet too short: {len} bytes, need 48")]
    TooShort {
        /// Length of the input.
        len: usize,
    },
    /// The output buffer cannot hold a 48-byte header.
    #[error("output buffer too small: {len} bytes, need 48")]
    BufferTooSmall {
        /// Length of the output buffer.
        len: usize,
    },
}

/// Why a string is not an IP network such as `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseNetError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    #[error("invalid address in {0:?}")]
    Address(String),
    /// The part after `/` is not a number.
    #[error("invalid prefix length in {0:?}")]
    Prefix(String),
    /// The prefix is longer than the address (32 for IPv4, 128 for IPv6).
    #[error("prefix length {prefix} too long for {input:?}")]
    PrefixTooLong {
        /// The input string.
        input: String,
        /// The prefix length found.
        prefix: u8,
    },
}
