//! ONC RPC message header (RFC 5531): decode a call header, encode accepted/denied replies,
//! decode a reply header.
//!
//! Why hand-written rather than the `onc-rpc` crate: that crate assumes TCP record marking, while
//! here one buffer is exactly one message (a UDP datagram or an already reassembled TCP record),
//! and every rejection path must be chosen precisely.

use crate::error::XdrError;
use crate::xdr::{MAX_AUTH_BYTES, XdrReader, XdrWrite};

/// The portmapper's program number.
pub const PMAP_PROG: u32 = 100_000;
/// The only RPC protocol version (RFC 5531).
pub(crate) const RPC_VERSION: u32 = 2;
/// Message type CALL.
const MSG_CALL: u32 = 0;
/// Message type REPLY.
const MSG_REPLY: u32 = 1;
/// Flavor AUTH_NONE.
pub(crate) const AUTH_NONE: u32 = 0;
/// Flavor AUTH_SYS (AUTH_UNIX).
pub(crate) const AUTH_SYS: u32 = 1;
/// Flavor AUTH_SHORT.
const AUTH_SHORT: u32 = 2;

/// `accept_stat` values of an accepted reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptStat {
    /// The call ran; results follow.
    Success,
    /// Program not served here.
    ProgUnavail,
    /// Version outside `low..=high`.
    ProgMismatch { low: u32, high: u32 },
    /// Unknown procedure.
    ProcUnavail,
    /// Arguments could not be decoded.
    GarbageArgs,
    /// Server-side failure (e.g. reply too large for the transport).
    SystemErr,
}

/// `auth_stat` values used in AUTH_ERROR replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStat {
    /// Credentials malformed.
    BadCred = 1,
    /// Credential flavor not accepted.
    RejectedCred = 2,
    /// Caller is not allowed this operation with these credentials (SET/UNSET from afar).
    TooWeak = 5,
}

/// A credential or verifier (`opaque_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpaqueAuth<'a> {
    /// Authentication flavor.
    pub(crate) flavor: u32,
    /// Flavor-specific body, at most 400 bytes.
    pub(crate) body: &'a [u8],
}

impl<'a> OpaqueAuth<'a> {
    /// Decodes an `opaque_auth`, enforcing `MAX_AUTH_BYTES`.
    fn decode(r: &mut XdrReader<'a>) -> Result<Self, XdrError> {
        Ok(Self {
            flavor: r.u32()?,
            body: r.opaque(MAX_AUTH_BYTES)?,
        })
    }
}

/// A decoded call header; `args` is whatever follows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallHeader<'a> {
    /// Transaction id, echoed in the reply.
    pub(crate) xid: u32,
    /// RPC protocol version the caller speaks.
    pub(crate) rpcvers: u32,
    /// Program number.
    pub(crate) prog: u32,
    /// Program version.
    pub(crate) vers: u32,
    /// Procedure number.
    pub(crate) proc_: u32,
    /// Caller credentials.
    pub(crate) cred: OpaqueAuth<'a>,
    /// Procedure arguments.
    pub(crate) args: &'a [u8],
}

/// Why a buffer is not an RPC call we answer (libtirpc drops these silently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotACall {
    /// Too short to hold xid and message type.
    Truncated,
    /// Message type is REPLY or unknown.
    NotCall,
    /// The header (credentials, verifier) did not decode or exceeded 400 bytes.
    BadHeader,
}

/// Decodes a call header. A wrong `rpcvers` is *not* an error here: the caller answers
/// RPC_MISMATCH (RFC 5531), although libtirpc itself drops such calls.
pub(crate) fn decode_call(buf: &[u8]) -> Result<CallHeader<'_>, NotACall> {
    let mut r = XdrReader::new(buf);
    let xid = r.u32().map_err(|_| NotACall::Truncated)?;
    let mtype = r.u32().map_err(|_| NotACall::Truncated)?;
    if mtype != MSG_CALL {
        return Err(NotACall::NotCall);
    }
    let bad = |_| NotACall::BadHeader;
    let rpcvers = r.u32().map_err(bad)?;
    let prog = r.u32().map_err(bad)?;
    let vers = r.u32().map_err(bad)?;
    let proc_ = r.u32().map_err(bad)?;
    let cred = OpaqueAuth::decode(&mut r).map_err(bad)?;
    // The verifier is only checked for shape and length (<= 400 bytes).
    OpaqueAuth::decode(&mut r).map_err(bad)?;
    Ok(CallHeader {
        xid,
        rpcvers,
        prog,
        vers,
        proc_,
        cred,
        args: r.rest(),
    })
}

/// Checks the credential the way libtirpc's `_authenticate` does: AUTH_NONE and a well-formed
/// AUTH_SYS pass; a malformed AUTH_SYS is BADCRED; other flavors are REJECTEDCRED.
pub(crate) fn check_cred(cred: &OpaqueAuth<'_>) -> Result<(), AuthStat> {
    match cred.flavor {
        AUTH_NONE => Ok(()),
        AUTH_SYS => decode_auth_sys(cred.body).map_err(|_| AuthStat::BadCred),
        AUTH_SHORT => Err(AuthStat::RejectedCred),
        _ => Err(AuthStat::RejectedCred),
    }
}

/// Validates an `authsys_parms` body (stamp, machine name <= 255, uid, gid, <= 16 gids).
fn decode_auth_sys(body: &[u8]) -> Result<(), XdrError> {
    let mut r = XdrReader::new(body);
    r.u32()?;
    r.opaque(255)?;
    r.u32()?;
    r.u32()?;
    let n = r.u32()?;
    if n > 16 {
        return Err(XdrError::ListTooLong);
    }
    for _ in 0..n {
        r.u32()?;
    }
    Ok(())
}

/// Writes an RPC call header with the given credential and an AUTH_NONE verifier.
pub(crate) fn encode_call_header(
    out: &mut Vec<u8>,
    xid: u32,
    prog: u32,
    vers: u32,
    proc_: u32,
    cred_flavor: u32,
    cred_body: &[u8],
) {
    out.put_u32(xid);
    out.put_u32(MSG_CALL);
    out.put_u32(RPC_VERSION);
    out.put_u32(prog);
    out.put_u32(vers);
    out.put_u32(proc_);
    out.put_u32(cred_flavor);
    out.put_opaque(cred_body);
    out.put_u32(AUTH_NONE);
    out.put_opaque(&[]);
}

/// Writes an accepted-reply header; for `Success` the caller appends the results.
pub(crate) fn encode_accepted(out: &mut Vec<u8>, xid: u32, stat: AcceptStat) {
    out.put_u32(xid);
    out.put_u32(MSG_REPLY);
    out.put_u32(0); // MSG_ACCEPTED
    out.put_u32(AUTH_NONE);
    out.put_opaque(&[]);
    match stat {
        AcceptStat::Success => out.put_u32(0),
        AcceptStat::ProgUnavail => out.put_u32(1),
        AcceptStat::ProgMismatch { low, high } => {
            out.put_u32(2);
            out.put_u32(low);
            out.put_u32(high);
        }
        AcceptStat::ProcUnavail => out.put_u32(3),
        AcceptStat::GarbageArgs => out.put_u32(4),
        AcceptStat::SystemErr => out.put_u32(5),
    }
}

/// Writes a denied reply: RPC_MISMATCH (versions 2..=2).
pub(crate) fn encode_rpc_mismatch(out: &mut Vec<u8>, xid: u32) {
    out.put_u32(xid);
    out.put_u32(MSG_REPLY);
    out.put_u32(1); // MSG_DENIED
    out.put_u32(0); // RPC_MISMATCH
    out.put_u32(RPC_VERSION);
    out.put_u32(RPC_VERSION);
}

/// Writes a denied reply: AUTH_ERROR with the given status.
pub(crate) fn encode_auth_error(out: &mut Vec<u8>, xid: u32, stat: AuthStat) {
    out.put_u32(xid);
    out.put_u32(MSG_REPLY);
    out.put_u32(1); // MSG_DENIED
    out.put_u32(1); // AUTH_ERROR
    out.put_u32(stat as u32);
}

/// The interesting part of a decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyBody<'a> {
    /// Accepted with SUCCESS; the procedure results follow.
    Success(&'a [u8]),
    /// Accepted with another `accept_stat` (1..=5).
    Accepted(u32),
    /// Denied (RPC_MISMATCH or AUTH_ERROR).
    Denied,
}

/// True if `msg` is an RPC reply (message type REPLY). Why here: the daemon's port-111 socket
/// receives calls from clients and replies to what it sent itself (forwarded calls, liveness
/// probes); this cheap test on the header decides which path a datagram takes.
pub fn is_rpc_reply(msg: &[u8]) -> bool {
    msg.get(4..8) == Some(&MSG_REPLY.to_be_bytes()[..])
}

/// The xid of an RPC message (call or reply), or `None` if it is too short to have one. Why
/// public: replies are matched to what was sent (a forward, a probe) by this number alone.
pub fn message_xid(msg: &[u8]) -> Option<u32> {
    msg.get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
}

/// Decodes a reply header: returns its xid and body, or `None` if it is not a reply.
pub fn decode_reply(buf: &[u8]) -> Option<(u32, ReplyBody<'_>)> {
    let mut r = XdrReader::new(buf);
    let xid = r.u32().ok()?;
    if r.u32().ok()? != MSG_REPLY {
        return None;
    }
    match r.u32().ok()? {
        0 => {
            OpaqueAuth::decode(&mut r).ok()?;
            match r.u32().ok()? {
                0 => Some((xid, ReplyBody::Success(r.rest()))),
                s @ 1..=5 => Some((xid, ReplyBody::Accepted(s))),
                _ => None,
            }
        }
        1 => Some((xid, ReplyBody::Denied)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn call_header_roundtrip(xid: u32, prog: u32, vers: u32, proc_: u32,
                                 body in proptest::collection::vec(any::<u8>(), 0..400),
                                 args in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut b = Vec::new();
            encode_call_header(&mut b, xid, prog, vers, proc_, 7, &body);
            b.extend_from_slice(&args);
            let h = decode_call(&b).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!((h.xid, h.rpcvers, h.prog, h.vers, h.proc_), (xid, 2, prog, vers, proc_));
            prop_assert_eq!(h.cred.flavor, 7);
            prop_assert_eq!(h.cred.body, &body[..]);
            prop_assert_eq!(h.args, &args[..]);
        }

        #[test]
        fn accepted_reply_decodes(xid: u32, res in proptest::collection::vec(any::<u8>(), 0..32)) {
            let mut b = Vec::new();
            encode_accepted(&mut b, xid, AcceptStat::Success);
            b.extend_from_slice(&res);
            prop_assert_eq!(decode_reply(&b), Some((xid, ReplyBody::Success(&res[..]))));
        }
    }

    #[test]
    fn oversize_cred_is_bad_header() {
        let mut b = Vec::new();
        encode_call_header(&mut b, 1, 2, 3, 4, AUTH_SYS, &[0u8; 404]);
        assert_eq!(decode_call(&b).err(), Some(NotACall::BadHeader));
    }

    #[test]
    fn reply_is_not_a_call() {
        let mut b = Vec::new();
        encode_accepted(&mut b, 9, AcceptStat::ProcUnavail);
        assert_eq!(decode_call(&b).err(), Some(NotACall::NotCall));
        assert_eq!(decode_reply(&b), Some((9, ReplyBody::Accepted(3))));
        assert_eq!(decode_call(&[0, 0, 0]).err(), Some(NotACall::Truncated));
    }

    #[test]
    fn reply_recognition_and_xid() {
        let mut b = Vec::new();
        encode_accepted(&mut b, 0x0102_0304, AcceptStat::Success);
        assert!(is_rpc_reply(&b));
        assert_eq!(message_xid(&b), Some(0x0102_0304));
        b.clear();
        encode_call_header(&mut b, 7, PMAP_PROG, 2, 0, AUTH_NONE, &[]);
        assert!(!is_rpc_reply(&b));
        assert_eq!(message_xid(&b), Some(7));
        assert!(!is_rpc_reply(&[0, 0, 0, 1, 0, 0, 0]));
        assert_eq!(message_xid(&[1, 2, 3]), None);
    }

    #[test]
    fn denied_replies_decode() {
        let mut b = Vec::new();
        encode_rpc_mismatch(&mut b, 5);
        assert_eq!(decode_reply(&b), Some((5, ReplyBody::Denied)));
        b.clear();
        encode_auth_error(&mut b, 6, AuthStat::TooWeak);
        assert_eq!(decode_reply(&b), Some((6, ReplyBody::Denied)));
    }

    #[test]
    fn auth_sys_checks() {
        let mut body = Vec::new();
        body.put_u32(0);
        body.put_string("host");
        body.put_u32(0);
        body.put_u32(0);
        body.put_u32(2);
        body.put_u32(1);
        body.put_u32(2);
        let ok = OpaqueAuth {
            flavor: AUTH_SYS,
            body: &body,
        };
        assert_eq!(check_cred(&ok), Ok(()));
        let bad = OpaqueAuth {
            flavor: AUTH_SYS,
            body: &body[..8],
        };
        assert_eq!(check_cred(&bad), Err(AuthStat::BadCred));
        let short = OpaqueAuth {
            flavor: AUTH_SHORT,
            body: &[],
        };
        assert_eq!(check_cred(&short), Err(AuthStat::RejectedCred));
    }
}
