//! Remote calls (v2/v3 CALLIT, v4 BCAST and INDIRECT), following rpcbind's `rpcbproc_callit_com`
//! and `check_callit`: who may be called, which error each failure gives, and the effect that asks
//! the daemon to forward.
//!
//! Why sans-IO: forwarding needs a socket and a timer, so the core only decides and describes; the
//! daemon sends, [`crate::ForwardTable`] matches the reply by the xid it handed out, and
//! [`PendingCall::build_reply`] makes the answer.

use std::net::{IpAddr, SocketAddr};

use crate::context::{CallContext, Transport};
use crate::outcome::{Answer, DropReason, Refusal};
use crate::registry::Registry;
use crate::rpc::{
    AUTH_NONE, AUTH_SYS, AcceptStat, AuthStat, CallHeader, PMAP_PROG, ReplyBody, decode_reply,
    encode_accepted, encode_call_header,
};
use crate::stats::Stats;
use crate::types::RmtCallArgs;
use crate::uaddr::{loopback_if_wildcard, merge, parse_uaddr};
use crate::xdr::{XdrReader, XdrWrite};

/// Which remote-call procedure the caller used; decides the reply shape and error behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteKind {
    /// v2 PMAPPROC_CALLIT: reply carries the port; failures are silent.
    CallitV2,
    /// v3 RPCBPROC_CALLIT: reply carries the uaddr; failures are silent.
    CallitV3,
    /// v4 RPCBPROC_BCAST (same number as CALLIT): as v3.
    BcastV4,
    /// v4 RPCBPROC_INDIRECT: failures are answered with RPC errors.
    IndirectV4,
}

impl RemoteKind {
    /// Portmapper version the call came in on.
    fn version(self) -> u32 {
        match self {
            Self::CallitV2 => 2,
            Self::CallitV3 => 3,
            Self::BcastV4 | Self::IndirectV4 => 4,
        }
    }

    /// INDIRECT reports errors; the others keep quiet.
    fn is_indirect(self) -> bool {
        self == Self::IndirectV4
    }

    /// The failure answer: an error for INDIRECT, silence otherwise.
    fn fail(self, r: Refusal) -> Answer {
        if self.is_indirect() {
            Answer::Err(r)
        } else {
            Answer::Drop(DropReason::RemoteCallSilent)
        }
    }
}

/// A call the daemon should forward to a registered service on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Where to send it: the registration's address, with a wildcard host replaced by loopback
    /// (rpcbind sends to its local address).
    pub target: SocketAddr,
    /// Transport to forward on (the one the call came in on: "udp" or "udp6").
    pub netid: &'static str,
    /// Target program.
    pub prog: u32,
    /// Target version.
    pub vers: u32,
    /// Target procedure.
    pub proc_: u32,
    /// XDR arguments for the target procedure.
    pub args: Vec<u8>,
    /// Credential flavor to pass on (AUTH_NONE or AUTH_SYS, as rpcbind does).
    pub cred_flavor: u32,
    /// Credential body to pass on.
    pub cred_body: Vec<u8>,
    /// What the [`crate::ForwardTable`] keeps until the target answers.
    pub pending: PendingCall,
}

impl Forward {
    /// True when the target is a service of this host as seen from where the call arrived: a
    /// loopback address, or `arrived_on`, the local address the call was sent to (rpcbind also
    /// sends to its local address). Why: a forward must never leave for another host, or the
    /// portmapper becomes a relay that lends its address to anyone.
    pub fn targets_this_host(&self, arrived_on: IpAddr) -> bool {
        self.target.ip().is_loopback() || self.target.ip() == arrived_on
    }

    /// Appends the call to send to the target, using the daemon's own `forward_xid` (which it uses
    /// to match the target's reply; never reuse the caller's xid).
    pub fn encode_call(&self, forward_xid: u32, out: &mut Vec<u8>) {
        encode_call_header(
            out,
            forward_xid,
            self.prog,
            self.vers,
            self.proc_,
            self.cred_flavor,
            &self.cred_body,
        );
        out.extend_from_slice(&self.args);
    }
}

/// State needed to answer the original caller once the target replied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCall {
    /// The caller's xid, echoed in our reply.
    pub caller_xid: u32,
    /// The procedure the caller used.
    pub kind: RemoteKind,
    /// Target address as the caller should see it (merged with the local address).
    pub reply_uaddr: String,
    /// Longest reply the caller may get: twice its request for a non-loopback UDP caller
    /// ([`crate::UDP_REPLY_FACTOR`]), `None` otherwise. Why: the target's results are copied
    /// into the reply, so without it a small forwarded call could reflect a large answer.
    pub max_reply: Option<usize>,
}

impl PendingCall {
    /// Builds the reply to the original caller from the target's reply (xid already matched by
    /// the [`crate::ForwardTable`]). Returns true if `out` now holds a reply to send: the results
    /// wrapped with the port (v2) or uaddr (v3/v4); SYSTEM_ERR for INDIRECT when the target
    /// failed; false (silence) for CALLIT/BCAST failures.
    pub fn build_reply(&self, forwarded_reply: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        let Some((_, ReplyBody::Success(results))) = decode_reply(forwarded_reply) else {
            return self.build_failure(out);
        };
        match self.kind {
            RemoteKind::CallitV2 => {
                // rpcbind reads the port out of an IPv4 uaddr; anything else fails to encode.
                let Some(SocketAddr::V4(a)) = parse_uaddr(&self.reply_uaddr) else {
                    return false;
                };
                encode_accepted(out, self.caller_xid, AcceptStat::Success);
                out.put_u32(u32::from(a.port()));
            }
            _ => {
                encode_accepted(out, self.caller_xid, AcceptStat::Success);
                out.put_string(&self.reply_uaddr);
            }
        }
        out.put_opaque(results);
        if self.max_reply.is_some_and(|max| out.len() > max) {
            // SYSTEM_ERR (24 bytes) for INDIRECT, silence for CALLIT/BCAST: both within bound.
            return self.build_failure(out);
        }
        true
    }

    /// The answer when forwarding failed (send error, target error): SYSTEM_ERR for INDIRECT,
    /// nothing otherwise. Returns true if `out` holds a reply. rpcbind sends nothing on timeout.
    pub fn build_failure(&self, out: &mut Vec<u8>) -> bool {
        out.clear();
        if self.kind.is_indirect() {
            encode_accepted(out, self.caller_xid, AcceptStat::SystemErr);
            true
        } else {
            false
        }
    }
}

/// rpcbind `check_callit`: NULL procedures always pass; the portmapper itself, NFS, rquota,
/// yppasswd, mountd MNT/UMNT, ypbind SETDOM and NIS map transfers (ALL/MATCH/FIRST/NEXT) are
/// refused, because forwarding them lets a remote host act with this host's address.
pub fn remote_call_allowed(prog: u32, proc_: u32) -> bool {
    const NFS: u32 = 100_003;
    const YPPROG: u32 = 100_004;
    const MOUNTPROG: u32 = 100_005;
    const YPBINDPROG: u32 = 100_007;
    const YPPASSWDPROG: u32 = 100_009;
    const RQUOTAPROG: u32 = 100_011;
    if proc_ == 0 {
        return true;
    }
    match prog {
        PMAP_PROG | NFS | YPPASSWDPROG | RQUOTAPROG => false,
        MOUNTPROG => !matches!(proc_, 1 | 3),
        YPBINDPROG => proc_ != 2,
        YPPROG => !matches!(proc_, 3 | 4 | 5 | 8),
        _ => true,
    }
}

/// Serves CALLIT/BCAST/INDIRECT like `rpcbproc_callit_com`, in its order of checks.
pub(crate) fn callit(
    kind: RemoteKind,
    h: &CallHeader<'_>,
    ctx: &CallContext,
    reg: &Registry,
    stats: &mut Stats,
    enabled: bool,
) -> Answer {
    if ctx.transport != Transport::Udp {
        return Answer::Drop(DropReason::RemoteCallNotDatagram);
    }
    let Ok(a) = RmtCallArgs::decode(&mut XdrReader::new(h.args)) else {
        return kind.fail(Refusal::GarbageArgs);
    };
    if !remote_call_allowed(a.prog, a.proc_) {
        return Answer::Err(Refusal::Auth(AuthStat::TooWeak));
    }
    let netid = ctx.netid();
    let found = reg.find_service(a.prog, a.vers, netid);
    stats.rmtcall(
        kind.version(),
        kind.is_indirect(),
        a.prog,
        a.vers,
        a.proc_,
        netid,
        found.is_some_and(|e| e.vers == a.vers),
    );
    let Some(entry) = found else {
        return kind.fail(Refusal::ProgUnavail);
    };
    if entry.vers != a.vers {
        if kind.is_indirect() {
            let (low, high) = reg.find_versions(a.prog, netid);
            return Answer::Err(Refusal::ProgMismatch { low, high });
        }
        return Answer::Drop(DropReason::RemoteCallSilent);
    }
    if !enabled {
        // rpcbind without remote calls has no forwarding socket: INDIRECT gets SYSTEM_ERR.
        return kind.fail(Refusal::SystemErr);
    }
    let Some(target) = parse_uaddr(&entry.uaddr).map(loopback_if_wildcard) else {
        return kind.fail(Refusal::SystemErr);
    };
    let (cred_flavor, cred_body) = match h.cred.flavor {
        AUTH_NONE | AUTH_SYS => (h.cred.flavor, h.cred.body.to_vec()),
        _ => return kind.fail(Refusal::Auth(AuthStat::TooWeak)),
    };
    Answer::Forward(Forward {
        target,
        netid,
        prog: a.prog,
        vers: a.vers,
        proc_: a.proc_,
        args: a.args,
        cred_flavor,
        cred_body,
        pending: PendingCall {
            caller_xid: h.xid,
            kind,
            reply_uaddr: merge(&entry.uaddr, ctx.local_addr),
            max_reply: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn deny_list() {
        assert!(remote_call_allowed(PMAP_PROG, 0));
        assert!(!remote_call_allowed(PMAP_PROG, 3));
        assert!(!remote_call_allowed(100_003, 1));
        assert!(!remote_call_allowed(100_005, 1));
        assert!(remote_call_allowed(100_005, 2));
        assert!(!remote_call_allowed(100_007, 2));
        assert!(remote_call_allowed(100_007, 1));
        assert!(!remote_call_allowed(100_004, 8));
        assert!(remote_call_allowed(100_004, 1));
        assert!(!remote_call_allowed(100_011, 1));
        assert!(remote_call_allowed(100_024, 1));
    }

    #[test]
    fn forwards_stay_on_this_host() {
        let to = |ip: IpAddr| Forward {
            target: SocketAddr::new(ip, 1000),
            netid: "udp",
            prog: 100_024,
            vers: 1,
            proc_: 0,
            args: vec![],
            cred_flavor: AUTH_NONE,
            cred_body: vec![],
            pending: PendingCall {
                caller_xid: 1,
                kind: RemoteKind::CallitV2,
                reply_uaddr: String::new(),
                max_reply: None,
            },
        };
        let here = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert!(to(IpAddr::V4(Ipv4Addr::LOCALHOST)).targets_this_host(here));
        assert!(to(IpAddr::V6(Ipv6Addr::LOCALHOST)).targets_this_host(here));
        assert!(to(here).targets_this_host(here));
        assert!(!to(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))).targets_this_host(here));
    }
}
