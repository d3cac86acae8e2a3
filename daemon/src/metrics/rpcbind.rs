//! The portmapper's own counters: calls by version and procedure (what `rpcinfo -m` shows)
//! and the registrations gauge, daemon-wide and per opted-in namespace. Kept apart from the
//! generic counter table because they are a table of their own (13 procedures x 3 versions)
//! and a gauge, which is not folded into the retired totals when a namespace goes.

use std::sync::atomic::Ordering;

use super::{C, Counters, NsMetrics};

/// Portmapper procedures counted per version (index = version - 2), like `rpcinfo -m`.
pub(crate) const RPC_PROCS: [&[&str]; 3] = [
    &["null", "set", "unset", "getport", "dump", "callit"],
    &[
        "null",
        "set",
        "unset",
        "getaddr",
        "dump",
        "callit",
        "gettime",
        "uaddr2taddr",
        "taddr2uaddr",
    ],
    &[
        "null",
        "set",
        "unset",
        "getaddr",
        "dump",
        "bcast",
        "gettime",
        "uaddr2taddr",
        "taddr2uaddr",
        "getversaddr",
        "indirect",
        "getaddrlist",
        "getstat",
    ],
];
/// Slots of the per-version procedure table (13 per version).
pub(super) const RPC_SLOTS: usize = 3 * 13;
/// One opted-in namespace's portmapper series for a scrape.
#[derive(Debug, Default)]
pub(crate) struct NsRpc {
    /// The namespace's name (the `netns` label).
    pub(crate) netns: String,
    /// Calls, `[version index][procedure]` as in [`RPC_PROCS`].
    pub(crate) calls: Vec<Vec<u64>>,
    /// Registrations now in its table.
    pub(crate) registrations: u64,
}

impl Counters {
    /// Calls of portmapper `vers`/`proc_`, index into [`RPC_PROCS`].
    pub(crate) fn rpc_get(&self, vers_idx: usize, proc_: usize) -> u64 {
        self.rpc
            .get(vers_idx * 13 + proc_)
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }
    /// Counts one portmapper call (UDP or stream record) by version and procedure, read from
    /// its RPC header; `answered` says whether a reply was sent at once.
    pub(crate) fn rpc_call(&self, msg: &[u8], answered: bool) {
        self.inc(C::RpcRequests);
        self.inc(if answered {
            C::RpcAnswers
        } else {
            C::RpcDropped
        });
        let word = |i: usize| {
            msg.get(i..i + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
        };
        if let (Some(0), Some(100_000), Some(vers), Some(proc_)) =
            (word(4), word(12), word(16), word(20))
            && let Some(names) = vers.checked_sub(2).and_then(|i| RPC_PROCS.get(i as usize))
            && (proc_ as usize) < names.len()
            && let Some(a) = self.rpc.get((vers as usize - 2) * 13 + proc_ as usize)
        {
            a.fetch_add(1, Ordering::Relaxed);
        }
    }
}
impl NsMetrics {
    /// Records the size of the namespace's portmapper table after a change (a gauge).
    pub(crate) fn set_registrations(&self, n: usize) {
        self.registrations
            .store(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The registrations gauge.
    pub(crate) fn registrations(&self) -> u64 {
        self.registrations.load(Ordering::Relaxed)
    }

    /// This namespace's portmapper series, labelled `netns`.
    pub(crate) fn rpc_of(&self, netns: &str) -> NsRpc {
        NsRpc {
            netns: netns.to_owned(),
            calls: RPC_PROCS
                .iter()
                .enumerate()
                .map(|(v, p)| (0..p.len()).map(|i| self.rpc_get(v, i)).collect())
                .collect(),
            registrations: self.registrations(),
        }
    }
}
