//! Liveness probe helpers: build a NULL call and recognise its reply.
//!
//! Why in this crate: the daemon (and tests) can check that a portmapper (ours or another) answers
//! without writing RPC bytes by hand.

use crate::rpc::{AUTH_NONE, PMAP_PROG, ReplyBody, decode_reply, encode_call_header};

/// Appends a NULL call (procedure 0) to program 100000 version `vers` with AUTH_NONE.
/// Over TCP/AF_LOCAL, wrap it with [`crate::frame_record`].
pub fn encode_null_call(xid: u32, vers: u32, out: &mut Vec<u8>) {
    encode_call_header(out, xid, PMAP_PROG, vers, 0, AUTH_NONE, &[]);
}

/// True if `reply` is a successful reply to the call with `xid` (a NULL reply has no results).
pub fn is_null_reply(xid: u32, reply: &[u8]) -> bool {
    matches!(decode_reply(reply), Some((x, ReplyBody::Success(_))) if x == xid)
}
