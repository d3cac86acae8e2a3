//! Calls that met the journal being rewritten off the loop (`compact.rs`: a stale file replaced
//! whole, or a compaction the change needs to fit under `journal_max_bytes`).
//!
//! Such a call changed nothing ([`Answer::Wait`]); it is handled again once the rewrite is over,
//! so the client gets the reply it would have got, a few milliseconds late, instead of having
//! to retry. If the rewrite failed (a full disk), the call is given up like a failed append:
//! logged, not acknowledged, the client retries. A stream (TCP, AF_LOCAL) waits in its own task before its next record; a UDP call
//! waits in a small task of its own and its reply leaves by the deferred send path
//! ([`UdpEndpoint::send_from`]). At most [`MAX_WAITING`] UDP calls per namespace wait (the rest
//! get no reply and retry, as after a lost datagram), each for at most [`RETRIES`] rewrites and
//! [`WAIT`] each.
//!
//! The compaction started for room at `journal_max_bytes` snapshots the table with the waiting
//! change in it (an UNSET at a full file needs that room), so until the call is handled again
//! the file holds a change the table does not. The call keeps a [`HeldChange`] meanwhile: when
//! it is dropped (the call handled again, given up after its retries or its wait, or dropped
//! for want of room among the waiting calls) the file is marked stale and rewritten whole from
//! the table off the loop (a compaction still running gives up and leaves the old file, which
//! never held the change). A restart therefore never replays a change that was not
//! acknowledged, whatever became of the call.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use nsaux_rpcbind::{CallContext, Caller, Transport};

use super::service::{Answer, RpcbindNs};
use super::unix_secs;
use crate::serve::{Datagram, ReplyTo, UdpEndpoint};

/// UDP calls per namespace that may wait for a rewrite at once: a flood of SETs during one
/// must not make a task per datagram.
pub(super) const MAX_WAITING: usize = 16;
/// Rewrites a call waits for before it is dropped (the first may end in failure and the next
/// change start another; a reconfiguration may restart one).
pub(super) const RETRIES: usize = 3;
/// How long a call waits for one rewrite to end.
pub(super) const WAIT: Duration = Duration::from_secs(5);

impl RpcbindNs {
    /// Waits until a journal rewrite ended after `seen` (see [`Answer::Wait`]), for at most
    /// `limit`. True if it did and succeeded: the call may be handled again. Otherwise the call
    /// is given up (and that is logged, rate-limited).
    pub(super) async fn journal_turn_after(&self, seen: u64, limit: Duration) -> bool {
        let ended = tokio::time::timeout(limit, self.signals.turn_after(seen)).await;
        let ok = matches!(ended, Ok(true));
        if !ok && self.journal_log.allow() {
            let error = self.state().journal_error.clone().unwrap_or_default();
            tracing::error!(netns = %self.ns.name, error = %error, timed_out = ended.is_err(),
                "cannot journal a registration change; not acknowledging it");
        }
        ok
    }

    /// Handles datagram `d` again once the journal rewrite running now is over, and sends the
    /// reply then, if there is room among the waiting calls and a runtime to wait on.
    pub(super) fn answer_later(
        &self,
        ep: &Arc<UdpEndpoint>,
        d: &Datagram<'_>,
        seen: u64,
        held: Option<HeldChange>,
    ) {
        let (Some(me), Ok(rt)) = (self.me.upgrade(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let call = Waiting {
            ep: Arc::downgrade(ep),
            data: d.data.to_vec(),
            peer: d.peer,
            local: d.local,
            ifindex: d.ifindex,
        };
        rt.spawn(async move {
            me.retry_datagram(call, seen, held).await;
            me.waiting.fetch_sub(1, Ordering::Relaxed);
        });
    }

    async fn retry_datagram(&self, call: Waiting, mut seen: u64, mut held: Option<HeldChange>) {
        let mut out = Vec::new();
        for _ in 0..RETRIES {
            if !self.journal_turn_after(seen, WAIT).await {
                return;
            }
            let Some(ep) = call.ep.upgrade() else {
                return; // the socket went (its listener was closed)
            };
            let wall = SystemTime::now();
            let d = Datagram {
                data: &call.data,
                peer: call.peer,
                local: call.local,
                ifindex: call.ifindex,
                rx_time: None,
                received: Instant::now(),
                wall,
                truncated: false,
            };
            let ctx = CallContext {
                transport: Transport::Udp,
                caller: Caller::Ip(call.peer),
                local_addr: Some(call.local),
                now_unix: unix_secs(wall),
            };
            let answer = self.handle_call(&ctx, &call.data, &mut out, Some((&ep, &d)));
            // Handled again: whatever the answer, the file is made to match the table.
            drop(held.take());
            match answer {
                Answer::Reply => {
                    let to = ReplyTo::sender(&d);
                    if let Err(e) = ep.send_from(&out, to.dst, to.src, to.ifindex) {
                        tracing::debug!(netns = %self.ns.name, error = %e, "cannot send a late reply");
                    }
                    return;
                }
                Answer::Silent => return,
                Answer::Wait { seen: s, held: h } => {
                    seen = s;
                    held = h.then(|| self.held_change());
                }
            }
        }
    }

    /// The guard for a call whose change a compaction at the cap holds (see the module docs).
    pub(super) fn held_change(&self) -> HeldChange {
        HeldChange(self.me.clone())
    }
}

/// Kept by a call whose change the compaction at `journal_max_bytes` holds while the table
/// does not; dropped once the call is handled again or given up, it has the journal rewritten
/// whole from the table (module docs). Dropped with the state unlocked.
pub(super) struct HeldChange(Weak<RpcbindNs>);

impl Drop for HeldChange {
    fn drop(&mut self) {
        let Some(ns) = self.0.upgrade() else {
            return;
        };
        let mut st = ns.state();
        if st.gone {
            return;
        }
        // A compaction running now sees the file stale and gives up, then starts the rewrite.
        st.journal_stale = true;
        if !st.replaying {
            ns.start_compaction(&mut st, true);
        }
    }
}

/// A UDP call kept until the rewrite is over.
struct Waiting {
    /// Weak: a waiting call never keeps a socket open.
    ep: Weak<UdpEndpoint>,
    data: Vec<u8>,
    peer: SocketAddr,
    local: SocketAddr,
    ifindex: u32,
}
