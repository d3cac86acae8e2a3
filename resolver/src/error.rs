//! Errors of the resolver crate: configuration, local-record and resolv.conf input only.
//!
//! Why so few: network input never produces an `Error`. Bad queries become DNS error
//! answers or drops (see `event::QueryOutcome`), bad upstream replies are ignored and counted.

/// Something the daemon passed in (config, hosts text, a record) was unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A CIDR string did not parse (`addr/len`, or a bare address).
    #[error("invalid CIDR {0:?}")]
    InvalidCidr(String),
    /// A host or domain name is not a valid DNS name.
    #[error("invalid domain name {0:?}")]
    InvalidName(String),
    /// A hosts-file line could not be used (the rest of the file still is).
    #[error("hosts line {line}: {reason}")]
    HostsLine {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A resolv.conf line could not be used (the rest of the file still is).
    #[error("resolv.conf line {line}: {reason}")]
    ResolvConfLine {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
}
