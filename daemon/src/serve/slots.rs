//! Connection slots that cannot be starved: one table per service and namespace (all its TCP
//! and AF_LOCAL listeners, and the path socket, share it), with separate budgets for local
//! callers (AF_LOCAL, TCP from loopback) and remote ones, and a cap per peer (source IP, or uid
//! for AF_LOCAL). A newcomer is never refused: at a cap the connection of that class (or of that
//! peer) that completed a record longest ago is closed to make room. That is libtirpc's answer
//! to CVE-2021-46828 (close the oldest), judged by the last complete record instead of the last
//! byte, so that a remote host holding connections can never lock out a local registration.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::Peer;
use crate::lock::lock;

/// How many connections each class and each peer may hold (from the service's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotBudget {
    /// AF_LOCAL and loopback TCP callers together.
    pub(crate) local: usize,
    /// Every other TCP caller together.
    pub(crate) remote: usize,
    /// One source IP (remote or loopback TCP) or one uid (AF_LOCAL).
    pub(crate) per_peer: usize,
}

impl Default for SlotBudget {
    fn default() -> Self {
        Self {
            local: 64,
            remote: 64,
            per_peer: 16,
        }
    }
}

/// Who a per-peer cap counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PeerKey {
    /// An AF_LOCAL caller, by its kernel-verified uid.
    Uid(u32),
    /// A TCP caller, by source address (IPv4-mapped IPv6 folded to IPv4).
    Ip(IpAddr),
}

/// Sorts a peer into its class (`true`: local) and its per-peer key.
fn classify(peer: &Peer) -> (bool, PeerKey) {
    match peer {
        Peer::Local { uid, .. } => (true, PeerKey::Uid(*uid)),
        Peer::Ip(a) => {
            let ip = match a.ip() {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                v4 @ IpAddr::V4(_) => v4,
            };
            (ip.is_loopback(), PeerKey::Ip(ip))
        }
    }
}

/// One open connection as the table sees it.
#[derive(Debug)]
struct Entry {
    /// Local class or remote.
    local: bool,
    /// Per-peer key.
    key: PeerKey,
    /// When it was admitted or last completed a record.
    last: Instant,
    /// Fired to close it when it is evicted.
    evict: CancellationToken,
}

/// The open connections, by slot id.
#[derive(Debug, Default)]
struct Table {
    /// Next slot id.
    next: u64,
    /// Open connections.
    entries: HashMap<u64, Entry>,
}

impl Table {
    /// Closes (fires and forgets) the longest-idle entry matching `pick`; false if none does.
    fn evict_oldest(&mut self, pick: impl Fn(&Entry) -> bool) -> bool {
        let oldest = self
            .entries
            .iter()
            .filter(|(_, e)| pick(e))
            .min_by_key(|(_, e)| e.last)
            .map(|(id, _)| *id);
        let Some(id) = oldest else { return false };
        if let Some(e) = self.entries.remove(&id) {
            e.evict.cancel();
        }
        true
    }
}

/// The shared slot table of one service in one namespace.
#[derive(Debug, Default)]
pub(crate) struct SlotTable {
    /// Guarded entries; held only for short scans, never across an await.
    table: Mutex<Table>,
}

/// A service's slot table in one namespace, made at its first connection. Why: most
/// namespaces never see a TCP or AF_LOCAL client, and a table is an 80-byte block (issue 16:
/// bytes per namespace); until then it reads as empty.
#[derive(Debug, Default)]
pub(crate) struct LazySlots(OnceLock<Arc<SlotTable>>);

impl LazySlots {
    /// The table, made now if this is the first connection.
    pub(crate) fn table(&self) -> &Arc<SlotTable> {
        self.0.get_or_init(SlotTable::new)
    }

    /// Connections open now (0 before the first).
    pub(crate) fn len(&self) -> usize {
        self.0.get().map_or(0, |t| t.len())
    }
}

/// What a caller learns when its connection was admitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Admission {
    /// Connections closed to make room (0 unless a cap was reached).
    pub(crate) evicted: usize,
    /// Whether the newcomer counts as local.
    pub(crate) local: bool,
}

impl SlotTable {
    /// A new, empty table.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Connections open now (for `ns list`).
    pub(crate) fn len(&self) -> usize {
        lock(&self.table).entries.len()
    }

    /// Admits a connection from `peer`, closing the longest-idle connections of the same peer
    /// and then of the same class while they are at their caps (a budget of 0 counts as 1).
    pub(crate) fn admit(self: &Arc<Self>, peer: &Peer, budget: SlotBudget) -> (Slot, Admission) {
        let (local, key) = classify(peer);
        let class_cap = if local { budget.local } else { budget.remote }.max(1);
        let peer_cap = budget.per_peer.max(1);
        let now = Instant::now();
        let mut t = lock(&self.table);
        let mut evicted = 0;
        while t.entries.values().filter(|e| e.key == key).count() >= peer_cap
            && t.evict_oldest(|e| e.key == key)
        {
            evicted += 1;
        }
        while t.entries.values().filter(|e| e.local == local).count() >= class_cap
            && t.evict_oldest(|e| e.local == local)
        {
            evicted += 1;
        }
        let id = t.next;
        t.next += 1;
        let evict = CancellationToken::new();
        t.entries.insert(
            id,
            Entry {
                local,
                key,
                last: now,
                evict: evict.clone(),
            },
        );
        drop(t);
        let slot = Slot {
            table: Arc::clone(self),
            id,
            evict,
        };
        (slot, Admission { evicted, local })
    }
}

/// A connection's place in its table; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The table it counts in.
    table: Arc<SlotTable>,
    /// Its id there.
    id: u64,
    /// Fired when the table evicts it.
    evict: CancellationToken,
}

impl Slot {
    /// Marks a complete record (a request or a reply-worthy message) now: the connection is
    /// then the newest to be evicted.
    pub(crate) fn record_done(&self) {
        if let Some(e) = lock(&self.table.table).entries.get_mut(&self.id) {
            e.last = Instant::now();
        }
    }

    /// Fires when the connection is evicted; whoever runs the connection closes it then.
    pub(crate) fn evicted(&self) -> CancellationToken {
        self.evict.clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.table.table).entries.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn ip(s: &str) -> Peer {
        Peer::Ip(s.parse::<SocketAddr>().expect("addr"))
    }

    fn uid(uid: u32) -> Peer {
        Peer::Local {
            uid,
            gid: 0,
            pid: None,
        }
    }

    const B: SlotBudget = SlotBudget {
        local: 3,
        remote: 4,
        per_peer: 2,
    };

    #[test]
    fn a_lazy_table_is_made_by_the_first_connection() {
        let lazy = LazySlots::default();
        assert_eq!(lazy.len(), 0, "reads as empty before");
        assert!(
            lazy.0.get().is_none(),
            "no table before the first connection"
        );
        let (a, _) = lazy.table().admit(&ip("192.0.2.1:1000"), B);
        assert_eq!(lazy.len(), 1);
        let (_b, _) = lazy.table().admit(&uid(1), B);
        assert!(Arc::ptr_eq(lazy.table(), lazy.table()), "one table");
        assert_eq!(lazy.len(), 2);
        drop(a);
        assert_eq!(lazy.len(), 1);
    }

    #[test]
    fn per_peer_cap_evicts_that_peers_longest_idle() {
        let t = SlotTable::new();
        let (a, _) = t.admit(&ip("192.0.2.1:1000"), B);
        let (b, _) = t.admit(&ip("192.0.2.1:1001"), B);
        a.record_done(); // b is now the longest idle of that peer
        let (_c, adm) = t.admit(&ip("192.0.2.1:1002"), B);
        assert_eq!(adm.evicted, 1);
        assert!(b.evicted().is_cancelled());
        assert!(!a.evicted().is_cancelled());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn remote_flood_never_touches_local_slots() {
        let t = SlotTable::new();
        let locals: Vec<_> = (0..3).map(|u| t.admit(&uid(u), B).0).collect();
        let lo = t.admit(&ip("127.0.0.1:5"), B);
        assert!(lo.1.local);
        assert!(locals[0].evicted().is_cancelled(), "local class at its cap");
        let mut remotes = Vec::new();
        for i in 0..300u32 {
            let a = format!("198.51.{}.{}:{}", i / 200, i % 200, 1000 + i);
            remotes.push(t.admit(&ip(&a), B));
        }
        assert!(remotes.iter().all(|(_, a)| !a.local));
        assert_eq!(
            remotes
                .iter()
                .filter(|(s, _)| !s.evicted().is_cancelled())
                .count(),
            4
        );
        assert!(!lo.0.evicted().is_cancelled());
        assert!(locals[1..].iter().all(|s| !s.evicted().is_cancelled()));
        assert_eq!(t.len(), 3 + 4);
    }

    #[test]
    fn v4_mapped_loopback_is_local_and_drop_frees() {
        let t = SlotTable::new();
        let (s, adm) = t.admit(&ip("[::ffff:127.0.0.1]:9"), B);
        assert!(adm.local);
        assert_eq!(t.len(), 1);
        drop(s);
        assert_eq!(t.len(), 0);
    }
}
