//! Protocol settings of one namespace's portmapper.
//!
//! Why plain fields: the daemon owns the TOML and converts it into this struct (ntpd-rs style),
//! so this crate stays free of serde.

/// Settings that change protocol behaviour; I/O settings (ports, addresses) live in the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Serve CALLIT/BCAST/INDIRECT by forwarding (rpcbind `--enable-rmtcalls`). Off by default:
    /// remote calls are a DDoS amplifier and have a CVE history; when off we reply exactly as
    /// rpcbind ≥ 1.2.5 built without remote calls.
    pub remote_calls: bool,
    /// Maximum number of registrations in one namespace, self registrations included; a SET
    /// beyond it returns FALSE. Bounds memory and the size of DUMP replies.
    pub max_registrations: usize,
    /// Maximum bytes the registrations of one namespace may hold (see
    /// [`crate::registry::entry_bytes`]); a SET beyond it returns FALSE. Why besides the entry
    /// cap: entries carry strings of up to 9000 bytes each, so 1024 entries alone may hold tens
    /// of MiB; the default (1 MiB) is far above what 1024 ordinary registrations take.
    pub max_registration_bytes: usize,
    /// Refuse DUMP and GETSTAT over UDP from callers that are not loopback
    /// (AUTH_ERROR/AUTH_TOOWEAK), because both are reflection amplifiers. Off, they are still
    /// bound by the 2x reply rule ([`crate::UDP_REPLY_FACTOR`]).
    pub udp_dump_loopback_only: bool,
    /// Accept SET/UNSET from 127.0.0.1 / ::1 callers, not only from the local (AF_LOCAL)
    /// transport. rpcbind only does this with `-L`; the kernel and older libtirpc register over
    /// loopback UDP/TCP, so the default is on.
    pub loopback_may_register: bool,
    /// Largest UDP reply we send (libtirpc `UDPMSGSIZE` is 8800); a larger one becomes SYSTEM_ERR,
    /// as when libtirpc fails to encode a reply.
    pub udp_max_reply: usize,
    /// Cap on GETSTAT address/remote-call lookup rows per version (rpcbind has none, so a caller
    /// varying prog/vers can grow it forever). New keys beyond the cap are not recorded.
    pub max_stat_rows: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            remote_calls: false,
            max_registrations: 1024,
            max_registration_bytes: 1 << 20,
            udp_dump_loopback_only: true,
            loopback_may_register: true,
            udp_max_reply: 8800,
            max_stat_rows: 256,
        }
    }
}
