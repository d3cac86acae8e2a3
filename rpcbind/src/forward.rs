//! Bookkeeping for forwarded remote calls, like rpcbind's `FINFO` table: a fixed number of slots,
//! duplicate suppression, our own xids that encode the slot, expiry, and where each answer goes.
//!
//! Why in the protocol crate: which call a reply belongs to, whom to answer and from where, and
//! when to give up, are protocol rules that deserve unit tests; the daemon only sends, receives
//! and passes `now`. The table holds everything a forward needs, so the daemon keeps no list
//! beside it.

use std::net::{IpAddr, SocketAddr};

use crate::rmtcall::{Forward, PendingCall};
use crate::rpc::message_xid;

/// rpcbind's slot count (`NFORWARD`).
pub const DEFAULT_FORWARD_SLOTS: usize = 64;
/// rpcbind's give-up time for a forwarded call (`MAXTIME_OFF`), in seconds.
pub const DEFAULT_FORWARD_MAX_AGE: u64 = 300;

/// Where a forwarded call came from. Why kept: the answer must go back to the caller from the
/// very address (and interface) the call was sent to, or a client of a multi-homed namespace
/// drops it as coming from a stranger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Who asked, to send the answer back.
    pub caller: SocketAddr,
    /// The local address the call arrived on: the answer's source address.
    pub local: IpAddr,
    /// The interface the call arrived by (0: let routing choose).
    pub ifindex: u32,
}

/// One forwarded call waiting for the target's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    /// The xid we sent the target.
    forward_xid: u32,
    /// Who asked and where the call arrived.
    origin: Origin,
    /// How to answer.
    pending: PendingCall,
    /// When it was forwarded (or last seen again as a duplicate).
    since: u64,
}

/// Outstanding forwarded calls of one namespace.
#[derive(Debug, Clone)]
pub struct ForwardTable {
    /// Fixed slots; `None` is free.
    slots: Vec<Option<Slot>>,
    /// Seconds after which a slot is dropped.
    max_age: u64,
    /// Last xid base handed out; xids are `base + slot index`.
    last_xid: u32,
}

impl ForwardTable {
    /// A table with `slots` entries (at least 1); `xid_seed` should be unpredictable (the daemon
    /// passes bits from the OS random source) so forwarded xids cannot be guessed.
    pub fn new(slots: usize, max_age: u64, xid_seed: u32) -> Self {
        Self {
            slots: vec![None; slots.max(1)],
            max_age,
            last_xid: xid_seed,
        }
    }

    /// Records a forward and returns the xid to send it with ([`Forward::encode_call`]), or
    /// `None` if the same caller already has this call outstanding (a retransmission: rpcbind does
    /// not hit the slow server again; the first one's origin stays). When all slots are busy the
    /// oldest is dropped. `now` is in seconds (any epoch, the same for every call).
    pub fn start(&mut self, fwd: &Forward, origin: Origin, now: u64) -> Option<u32> {
        self.expire(now);
        let n = self.slots.len();
        if let Some(s) = self.slots.iter_mut().flatten().find(|s| {
            s.origin.caller == origin.caller
                && s.pending.caller_xid == fwd.pending.caller_xid
                && s.pending.kind == fwd.pending.kind
        }) {
            s.since = now;
            return None;
        }
        let idx = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => self
                .slots
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.as_ref().map_or(0, |s| s.since))
                .map_or(0, |(i, _)| i),
        };
        // xid = base + slot, so a reply finds its slot directly; never 0.
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        self.last_xid = self.last_xid.wrapping_add(n32);
        if self.last_xid.wrapping_add(n32) <= n32 {
            self.last_xid = n32;
        }
        let forward_xid = self.last_xid.wrapping_add(u32::try_from(idx).unwrap_or(0));
        self.slots[idx] = Some(Slot {
            forward_xid,
            origin,
            pending: fwd.pending.clone(),
            since: now,
        });
        Some(forward_xid)
    }

    /// Matches a reply from a target by its xid and frees the slot; returns where to answer and
    /// what to answer with ([`PendingCall::build_reply`]). Unknown xids give `None` (drop it).
    pub fn finish(&mut self, reply: &[u8]) -> Option<(Origin, PendingCall)> {
        self.take(message_xid(reply)?)
    }

    /// Forgets the forward sent with `forward_xid`, returning it: its call could not be sent,
    /// so no reply will come and the caller gets [`PendingCall::build_failure`] at once.
    pub fn cancel(&mut self, forward_xid: u32) -> Option<(Origin, PendingCall)> {
        self.take(forward_xid)
    }

    /// Frees the slot of `forward_xid`.
    fn take(&mut self, forward_xid: u32) -> Option<(Origin, PendingCall)> {
        let s = self
            .slots
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(|s| s.forward_xid == forward_xid))?;
        s.take().map(|s| (s.origin, s.pending))
    }

    /// Drops forwards older than the maximum age (rpcbind sends nothing for them).
    pub fn expire(&mut self, now: u64) {
        for s in &mut self.slots {
            if s.as_ref()
                .is_some_and(|x| now.saturating_sub(x.since) > self.max_age)
            {
                *s = None;
            }
        }
    }

    /// Number of forwards outstanding.
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// True when nothing is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for ForwardTable {
    fn default() -> Self {
        Self::new(DEFAULT_FORWARD_SLOTS, DEFAULT_FORWARD_MAX_AGE, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rmtcall::RemoteKind;

    fn fwd(xid: u32) -> Forward {
        Forward {
            target: SocketAddr::from(([127, 0, 0, 1], 1000)),
            netid: "udp",
            prog: 100_024,
            vers: 1,
            proc_: 1,
            args: vec![],
            cred_flavor: 0,
            cred_body: vec![],
            pending: PendingCall {
                caller_xid: xid,
                kind: RemoteKind::IndirectV4,
                reply_uaddr: "10.0.0.5.3.232".into(),
                max_reply: None,
            },
        }
    }

    fn caller() -> Origin {
        origin(9)
    }

    fn origin(host: u8) -> Origin {
        Origin {
            caller: SocketAddr::from(([10, 0, 0, host], 4000)),
            local: IpAddr::from([10, 0, 0, 1]),
            ifindex: 3,
        }
    }

    #[test]
    fn start_finish_duplicate_expire() {
        let mut t = ForwardTable::new(2, 300, 12345);
        let x1 = t.start(&fwd(1), caller(), 10).expect("first");
        assert_ne!(x1, 0);
        assert_eq!(t.start(&fwd(1), caller(), 11), None, "duplicate");
        let x2 = t.start(&fwd(2), caller(), 12).expect("second");
        assert_ne!(x1, x2);
        assert_eq!(t.len(), 2);
        // Full: the oldest (x1) is replaced.
        let x3 = t.start(&fwd(3), caller(), 13).expect("third");
        assert!(t.finish(&x1.to_be_bytes()).is_none());
        let (c, p) = t.finish(&x3.to_be_bytes()).expect("match");
        assert_eq!((c, p.caller_xid), (caller(), 3));
        assert!(t.finish(&x3.to_be_bytes()).is_none(), "slot freed");
        assert!(t.finish(&[1, 2]).is_none());
        t.expire(13 + 301);
        assert!(t.is_empty());
        let _ = x2;
    }

    #[test]
    fn the_answer_goes_back_where_the_call_came_from() {
        let mut t = ForwardTable::new(4, 300, 7);
        let x1 = t.start(&fwd(1), origin(9), 10).expect("first");
        // Another caller with the same xid is not a duplicate.
        let x2 = t.start(&fwd(1), origin(8), 10).expect("second caller");
        // A retransmission keeps the first origin.
        let mut moved = origin(9);
        moved.local = IpAddr::from([10, 0, 0, 2]);
        assert_eq!(t.start(&fwd(1), moved, 11), None);
        let reply = |x: u32| [x.to_be_bytes(), [0, 0, 0, 1]].concat();
        assert_eq!(t.finish(&reply(x2)).map(|(o, _)| o), Some(origin(8)));
        assert_eq!(t.finish(&reply(x1)).map(|(o, _)| o), Some(origin(9)));
        assert!(t.is_empty());
    }

    #[test]
    fn a_cancelled_forward_is_gone() {
        let mut t = ForwardTable::new(4, 300, 7);
        let x = t.start(&fwd(1), caller(), 10).expect("first");
        assert_eq!(
            t.cancel(x).map(|(o, p)| (o, p.caller_xid)),
            Some((caller(), 1))
        );
        assert!(t.is_empty());
        assert!(t.finish(&x.to_be_bytes()).is_none());
        // The caller's retransmission is forwarded again, not taken for a duplicate.
        assert!(t.start(&fwd(1), caller(), 11).is_some());
    }

    #[test]
    fn xid_never_zero() {
        let mut t = ForwardTable::new(4, 300, u32::MAX - 5);
        for i in 0..20 {
            let x = t.start(&fwd(i), caller(), u64::from(i)).expect("xid");
            assert_ne!(x, 0);
        }
    }
}
