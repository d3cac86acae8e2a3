//! DUMP replies encoded apart from the table: a snapshot taken in [`Portmapper::take_dump`],
//! encoded later by [`DumpJob::encode`], which needs no access to the portmapper.
//!
//! Why: a DUMP reply is as large as the table (up to `max_registrations` entries, about 25 ns
//! each to encode). The daemon holds a namespace's table under a lock its event loop also
//! takes; the snapshot is the table itself, shared ([`crate::Registry::snapshot`]: one
//! reference count), so the loop pays nothing per entry and the encoding runs elsewhere. A
//! change made while a snapshot is held copies the table once. The bytes are exactly those
//! [`Portmapper::handle`] would have written for the same call at that moment.
//! Only streams (TCP, AF_LOCAL) take this path: a UDP DUMP is bounded by `udp_max_reply`
//! (its encoding stops once past it, since the reply is then a refusal).

use std::sync::Arc;

use crate::context::{CallContext, Transport};
use crate::registry::{Entry, pmap_of};
use crate::rpc::{AcceptStat, PMAP_PROG, RPC_VERSION, check_cred, decode_call, encode_accepted};
use crate::server::Portmapper;
use crate::xdr::XdrWrite;

/// The DUMP procedure number, the same in versions 2, 3 and 4.
const DUMP: u32 = 4;

/// A DUMP call answered from a snapshot of the table (see the module docs).
#[derive(Debug, Clone)]
pub struct DumpJob {
    xid: u32,
    /// 2 (the `pmaplist` view) or 3/4 (`rpcblist`).
    vers: u32,
    entries: Arc<Vec<Entry>>,
}

impl Portmapper {
    /// If `request` is a DUMP call over a stream that [`Portmapper::handle`] would answer with
    /// the table, counts it as `handle` would and returns the snapshot to encode; otherwise
    /// `None` (hand the call to `handle`). Costs one reference count, not a copy.
    pub fn take_dump(&mut self, ctx: &CallContext, request: &[u8]) -> Option<DumpJob> {
        if ctx.transport == Transport::Udp {
            return None;
        }
        let h = decode_call(request).ok()?;
        if h.rpcvers != RPC_VERSION
            || check_cred(&h.cred).is_err()
            || h.prog != PMAP_PROG
            || h.proc_ != DUMP
            || !(2..=4).contains(&h.vers)
        {
            return None;
        }
        self.count_dump(h.vers);
        Some(DumpJob {
            xid: h.xid,
            vers: h.vers,
            entries: self.registry_snapshot(),
        })
    }
}

impl DumpJob {
    /// Writes the reply (not record-framed) into `out`, cleared first.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        encode_accepted(out, self.xid, AcceptStat::Success);
        if self.vers == 2 {
            for p in self.entries.iter().filter_map(pmap_of) {
                out.put_bool(true);
                p.encode(out);
            }
        } else {
            for e in self.entries.iter() {
                out.put_bool(true);
                out.put_u32(e.prog);
                out.put_u32(e.vers);
                out.put_string(&e.netid);
                out.put_string(&e.uaddr);
                out.put_string(&e.owner);
            }
        }
        out.put_bool(false);
    }

    /// Entries in the snapshot (for the caller's accounting).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the snapshot is empty (never: the portmapper's own entries are always there).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::context::Caller;
    use crate::rpc::{AUTH_NONE, encode_call_header};

    fn call(xid: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        encode_call_header(&mut b, xid, PMAP_PROG, vers, proc_, AUTH_NONE, &[]);
        b.extend_from_slice(args);
        b
    }

    fn rpcb(prog: u32, netid: &str, uaddr: &str) -> Vec<u8> {
        let mut b = Vec::new();
        b.put_u32(prog);
        b.put_u32(1);
        b.put_string(netid);
        b.put_string(uaddr);
        b.put_string("");
        b
    }

    /// A portmapper with its own entries and registrations on several netids.
    fn populated() -> (Portmapper, CallContext) {
        let mut p = Portmapper::new(
            Config::default(),
            &[
                ("udp", "0.0.0.0.0.111"),
                ("tcp", "0.0.0.0.0.111"),
                ("local", "/run/rpcbind.sock"),
            ],
        );
        let local = CallContext {
            transport: Transport::Local,
            caller: Caller::Local { uid: 0, pid: None },
            local_addr: None,
            now_unix: 1_700_000_000,
        };
        let mut out = Vec::new();
        let regs = [
            ("udp", "0.0.0.0.8.1"),
            ("tcp", "0.0.0.0.8.2"),
            ("local", "/run/x.sock"),
            ("tcp6", "::.8.3"),
            ("udp", "10.0.0.1.8.4"),
        ];
        for (prog, (netid, uaddr)) in (300_000..).zip(regs) {
            let _ = p.handle(&local, &call(1, 4, 1, &rpcb(prog, netid, uaddr)), &mut out);
        }
        assert_eq!(p.entries().len(), 3 + 3 + 2 + 5);
        (p, local)
    }

    #[test]
    fn a_dump_from_a_snapshot_is_byte_for_byte_what_handle_writes() {
        // Two equal portmappers: one answers by `handle`, the other by a snapshot.
        let (mut by_handle, local) = populated();
        let (mut by_snapshot, _) = populated();
        let tcp = CallContext {
            transport: Transport::Tcp,
            caller: Caller::Ip("10.0.0.9:1000".parse().expect("addr")),
            local_addr: Some("10.0.0.5:111".parse().expect("addr")),
            now_unix: 1_700_000_000,
        };
        for ctx in [&local, &tcp] {
            for vers in 2..=4 {
                let req = call(77 + vers, vers, 4, &[]);
                let mut want = Vec::new();
                let _ = by_handle.handle(ctx, &req, &mut want);
                let job = by_snapshot.take_dump(ctx, &req).expect("a DUMP");
                assert!(!job.is_empty() && job.len() == by_snapshot.entries().len());
                let mut got = Vec::new();
                job.encode(&mut got);
                assert_eq!(got, want, "v{vers}");
                assert_eq!(by_snapshot.stats(), by_handle.stats(), "counted alike");
            }
        }
        // Not a DUMP, not over a stream, or not a version served: left to `handle`.
        let p = &mut by_snapshot;
        assert!(
            p.take_dump(&local, &call(1, 4, 3, &rpcb(1, "udp", "")))
                .is_none()
        );
        let udp = CallContext {
            transport: Transport::Udp,
            caller: Caller::Ip("127.0.0.1:600".parse().expect("addr")),
            local_addr: Some("127.0.0.1:111".parse().expect("addr")),
            now_unix: 1_700_000_000,
        };
        assert!(p.take_dump(&udp, &call(1, 2, 4, &[])).is_none());
        assert!(p.take_dump(&local, &call(1, 5, 4, &[])).is_none());
    }

    #[test]
    fn a_snapshot_is_the_table_when_taken_whatever_changes_after() {
        let (mut p, local) = populated();
        let req = call(5, 4, 4, &[]);
        let mut want = Vec::new();
        let _ = p.handle(&local, &req, &mut want);
        let job = p.take_dump(&local, &req).expect("a DUMP");
        let mut out = Vec::new();
        let _ = p.handle(
            &local,
            &call(1, 4, 1, &rpcb(399_999, "udp", "0.0.0.0.9.9")),
            &mut out,
        );
        let _ = p.handle(&local, &call(2, 4, 2, &rpcb(300_000, "", "")), &mut out);
        let mut got = Vec::new();
        job.encode(&mut got);
        assert_eq!(got, want);
        let mut now = Vec::new();
        let _ = p.handle(&local, &req, &mut now);
        assert_ne!(now, want, "the table itself changed");
    }

    #[test]
    fn a_udp_dump_past_the_reply_limit_is_refused_alike_without_encoding_it_all() {
        let mut p = Portmapper::new(
            Config {
                max_registrations: 4096,
                ..Config::default()
            },
            &[("udp", "0.0.0.0.0.111")],
        );
        let local = CallContext {
            transport: Transport::Local,
            caller: Caller::Local { uid: 0, pid: None },
            local_addr: None,
            now_unix: 1_700_000_000,
        };
        let udp = CallContext {
            transport: Transport::Udp,
            caller: Caller::Ip("127.0.0.1:600".parse().expect("addr")),
            local_addr: Some("127.0.0.1:111".parse().expect("addr")),
            now_unix: 1_700_000_000,
        };
        let mut out = Vec::new();
        let mut small = Vec::new();
        for prog in 400_000..402_000 {
            let _ = p.handle(
                &local,
                &call(1, 4, 1, &rpcb(prog, "udp", "0.0.0.0.8.1")),
                &mut out,
            );
            if prog == 400_010 {
                let _ = p.handle(&udp, &call(9, 4, 4, &[]), &mut small);
            }
        }
        // A small table fits: answered with the whole list.
        assert!(small.len() > 200 && small.len() <= 8800, "{}", small.len());
        let mut whole = Vec::new();
        let _ = p.handle(&local, &call(9, 4, 4, &[]), &mut whole);
        assert!(whole.len() > 8800);
        // A large one does not: the same refusal as before, for every version.
        for vers in 2..=4 {
            let o = p.handle(&udp, &call(9, vers, 4, &[]), &mut out);
            assert_eq!(
                o.verdict,
                crate::Verdict::Refused(crate::Refusal::SystemErr),
                "v{vers}"
            );
            assert_eq!(out.len(), 24, "v{vers}");
        }
    }
}
