//! Remote calls (CALLIT/BCAST/INDIRECT): sending a call on from the namespace's own port-111
//! UDP socket, and sending the target's answer back to the caller. What belongs to which call,
//! and whom to answer from where, is the core's [`ForwardTable`]; this file only does the I/O.

use std::sync::Arc;

use nsaux_rpcbind::{
    DEFAULT_FORWARD_MAX_AGE, DEFAULT_FORWARD_SLOTS, Forward, ForwardTable, Origin,
};

use super::service::{RpcbindNs, State};
use super::{any_source_for, unix_secs};
use crate::serve::{Datagram, Replies, ReplyTo, UdpEndpoint};

impl RpcbindNs {
    /// Forwards a remote call from the namespace's own UDP socket. Returns true when `out` now
    /// holds an immediate failure reply for the caller.
    pub(super) fn forward(
        &self,
        st: &mut State,
        f: &Forward,
        udp: Option<(&Arc<UdpEndpoint>, &Datagram<'_>)>,
        out: &mut Vec<u8>,
    ) -> bool {
        let Some((ep, d)) = udp else {
            return f.pending.build_failure(out);
        };
        // Never out to another host: the portmapper would lend its address to anyone.
        if !f.targets_this_host(d.local.ip()) {
            tracing::debug!(netns = %self.ns.name, target = %f.target, "remote call to a non-local registration refused");
            return f.pending.build_failure(out);
        }
        let table = st.forwards.get_or_insert_with(|| {
            Box::new(ForwardTable::new(
                DEFAULT_FORWARD_SLOTS,
                DEFAULT_FORWARD_MAX_AGE,
                crate::seed::random_u32(),
            ))
        });
        let origin = Origin {
            caller: d.peer,
            local: d.local.ip(),
            ifindex: d.ifindex,
        };
        let Some(xid) = table.start(f, origin, unix_secs(d.wall)) else {
            return false; // a retransmission of a call already forwarded
        };
        let mut call = Vec::with_capacity(64 + f.args.len());
        f.encode_call(xid, &mut call);
        if let Err(e) = ep.send_from(&call, f.target, any_source_for(f.target), 0) {
            tracing::debug!(netns = %self.ns.name, target = %f.target, error = %e, "forward failed");
            let _ = table.cancel(xid);
            return f.pending.build_failure(out);
        }
        false
    }

    /// A reply arrived on port 111: the answer to a liveness probe or to a forwarded call, which
    /// goes back to its caller from the address the call arrived on.
    pub(super) fn on_reply(&self, d: &Datagram<'_>, out: &mut Replies) {
        let mut st = self.state();
        if st.liveness.as_mut().is_some_and(|l| l.on_reply(d.data)) {
            return;
        }
        let Some((origin, pending)) = st.forwards.as_mut().and_then(|t| t.finish(d.data)) else {
            return;
        };
        drop(st);
        if pending.build_reply(d.data, out.buf()) {
            out.commit(ReplyTo {
                dst: origin.caller,
                src: origin.local,
                ifindex: origin.ifindex,
            });
        }
    }
}
