//! Who called and over what: the per-call context the daemon passes in, and the rules derived from
//! it (transport netid, owner string, loopback checks).
//!
//! Why here and not in the daemon: these rules decide protocol answers (owner, AUTH_TOOWEAK), so
//! they must be unit-testable without sockets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The socket type a call arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A UDP datagram (one datagram = one call).
    Udp,
    /// A TCP record (reassembled by [`crate::RecordDecoder`]).
    Tcp,
    /// An AF_LOCAL stream (`/run/rpcbind.sock`, abstract or path), also record-marked.
    Local,
}

/// The peer that sent the call, as the daemon observed it (never as the request claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// An IP peer (UDP source or TCP peer address).
    Ip(SocketAddr),
    /// An AF_LOCAL peer with `SO_PEERCRED` credentials.
    Local {
        /// Peer's effective uid.
        uid: u32,
        /// Peer's pid, if known (for logs only).
        pid: Option<u32>,
    },
}

/// Everything about one call except its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallContext {
    /// Socket type the call arrived on.
    pub transport: Transport,
    /// Who sent it.
    pub caller: Caller,
    /// The local address the call arrived on (UDP pktinfo destination, TCP `getsockname`); used to
    /// answer GETADDR for wildcard registrations. `None` for AF_LOCAL or when unknown.
    pub local_addr: Option<SocketAddr>,
    /// Wall-clock seconds since the epoch, for GETTIME.
    pub now_unix: u64,
}

impl CallContext {
    /// The netid of the transport the call arrived on ("udp", "udp6", "tcp", "tcp6", "local"),
    /// which rpcbind uses as the lookup key for GETADDR/GETPORT-style queries.
    pub fn netid(&self) -> &'static str {
        let v6 = match (self.local_addr, self.caller) {
            (Some(a), _) => a.is_ipv6(),
            (None, Caller::Ip(a)) => a.is_ipv6(),
            (None, Caller::Local { .. }) => false,
        };
        match (self.transport, v6) {
            (Transport::Udp, false) => "udp",
            (Transport::Udp, true) => "udp6",
            (Transport::Tcp, false) => "tcp",
            (Transport::Tcp, true) => "tcp6",
            (Transport::Local, _) => "local",
        }
    }

    /// rpcbind's `is_loopback`: AF_LOCAL, or exactly 127.0.0.1 / ::1 / ::ffff:127.0.0.1.
    pub(crate) fn is_loopback_exact(&self) -> bool {
        match self.caller {
            Caller::Local { .. } => true,
            Caller::Ip(a) => is_exact_loopback_ip(a.ip()),
        }
    }

    /// Loopback in the wide sense (127.0.0.0/8, ::1, v4-mapped) or AF_LOCAL: the caller is inside
    /// this namespace's host. Used for the UDP DUMP restriction.
    pub(crate) fn is_loopback_any(&self) -> bool {
        match self.caller {
            Caller::Local { .. } => true,
            Caller::Ip(a) => match a.ip() {
                IpAddr::V4(v4) => v4.is_loopback(),
                IpAddr::V6(v6) => {
                    v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v| v.is_loopback())
                }
            },
        }
    }

    /// May this caller SET/UNSET? AF_LOCAL always; loopback IP when the config allows it.
    pub(crate) fn may_register(&self, loopback_may_register: bool) -> bool {
        match self.caller {
            Caller::Local { .. } => true,
            Caller::Ip(_) => loopback_may_register && self.is_loopback_exact(),
        }
    }

    /// rpcbind's `getowner`: uid of an AF_LOCAL peer ("superuser" for 0); a loopback IP peer from a
    /// reserved port (< 1024) is "superuser"; anyone else is "unknown".
    pub fn owner(&self) -> String {
        match self.caller {
            Caller::Local { uid: 0, .. } => SUPERUSER.to_owned(),
            Caller::Local { uid, .. } => uid.to_string(),
            Caller::Ip(a) if is_exact_loopback_ip(a.ip()) && a.port() < 1024 => {
                SUPERUSER.to_owned()
            }
            Caller::Ip(_) => "unknown".to_owned(),
        }
    }
}

/// The owner string that may unset anything.
pub const SUPERUSER: &str = "superuser";

/// 127.0.0.1, ::1 or ::ffff:127.0.0.1, as rpcbind's `is_loopback` checks.
fn is_exact_loopback_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped() == Some(Ipv4Addr::LOCALHOST),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> CallContext {
        CallContext {
            transport: Transport::Udp,
            caller: Caller::Ip(s.parse().expect("test addr")),
            local_addr: None,
            now_unix: 0,
        }
    }

    #[test]
    fn owners() {
        assert_eq!(ip("127.0.0.1:700").owner(), "superuser");
        assert_eq!(ip("127.0.0.1:40000").owner(), "unknown");
        assert_eq!(ip("[::1]:700").owner(), "superuser");
        assert_eq!(ip("127.0.0.2:700").owner(), "unknown");
        assert_eq!(ip("10.0.0.1:700").owner(), "unknown");
        let mut c = ip("127.0.0.1:1");
        c.caller = Caller::Local { uid: 0, pid: None };
        assert_eq!(c.owner(), "superuser");
        c.caller = Caller::Local {
            uid: 1000,
            pid: Some(5),
        };
        assert_eq!(c.owner(), "1000");
    }

    #[test]
    fn register_rights() {
        assert!(ip("127.0.0.1:5000").may_register(true));
        assert!(!ip("127.0.0.1:5000").may_register(false));
        assert!(ip("[::ffff:127.0.0.1]:5000").may_register(true));
        assert!(!ip("10.1.1.1:5000").may_register(true));
        assert!(!ip("127.0.0.2:5000").may_register(true));
        assert!(ip("127.0.0.2:5000").is_loopback_any());
    }

    #[test]
    fn netids() {
        let mut c = ip("127.0.0.1:5000");
        assert_eq!(c.netid(), "udp");
        c.transport = Transport::Tcp;
        c.local_addr = Some("[::]:111".parse().expect("addr"));
        assert_eq!(c.netid(), "tcp6");
        c.transport = Transport::Local;
        assert_eq!(c.netid(), "local");
    }
}
