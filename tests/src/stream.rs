//! How a stream connection ended, for tests that require the daemon to close one.
//!
//! A read that times out means the daemon kept the connection open, which is exactly what such
//! a test must catch; so the outcome is told apart instead of lumping every error in as
//! "closed".

use std::io::{ErrorKind, Read};

/// What one read from a connection the peer should have closed gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// End of file: the peer closed (FIN).
    Eof,
    /// The peer reset the connection (RST: closed with unread data, or aborted).
    Reset,
    /// The peer sent this many bytes instead of closing.
    Data(usize),
    /// Nothing came before the read timeout: the connection is still open.
    TimedOut,
    /// Any other error.
    Other(ErrorKind),
}

impl ReadEnd {
    /// Whether the peer closed the connection (EOF or reset), the only outcomes a
    /// "must be closed" check accepts.
    pub fn closed(self) -> bool {
        matches!(self, Self::Eof | Self::Reset)
    }
}

/// Reads once from `s` (whose read timeout the caller has set) and classifies the outcome.
pub fn read_end(s: &mut impl Read) -> ReadEnd {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => ReadEnd::Eof,
        Ok(n) => ReadEnd::Data(n),
        Err(e) => match e.kind() {
            ErrorKind::ConnectionReset => ReadEnd::Reset,
            ErrorKind::WouldBlock | ErrorKind::TimedOut => ReadEnd::TimedOut,
            k => ReadEnd::Other(k),
        },
    }
}
