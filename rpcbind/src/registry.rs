//! The registration table of one namespace, with rpcbind's `map_set`/`map_unset`/`find_service`
//! semantics.
//!
//! Why one ordered `Vec`: rpcbind keeps an append-only linked list and its lookups depend on that
//! order (the fallback returns the *last* other version); tables are small (capped).

use std::sync::Arc;

use crate::context::SUPERUSER;
use crate::rpc::PMAP_PROG;
use crate::shared_str::{SharedStr, superuser};
use crate::types::Pmap;
use crate::uaddr::uaddr_port;

/// IP protocol number of TCP, as v2 `pmap.prot` carries it.
pub(crate) const IPPROTO_TCP: u32 = 6;
/// IP protocol number of UDP.
pub(crate) const IPPROTO_UDP: u32 = 17;

/// One registration: program `prog` version `vers` is reachable over `netid` at `uaddr`.
///
/// Public fields so the daemon can journal entries with its own serde derive and give them back
/// through [`crate::Portmapper::restore`]. Ordered so [`crate::Liveness`] can key a map by it
/// without a hasher's random state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    /// RPC program number.
    pub prog: u32,
    /// RPC program version.
    pub vers: u32,
    /// Transport id ("udp", "tcp", "udp6", "tcp6", "local", or anything a client registered).
    pub netid: SharedStr,
    /// Universal address of the service.
    pub uaddr: SharedStr,
    /// Who registered it: a uid in decimal, "superuser" or "unknown"; decides who may UNSET.
    pub owner: SharedStr,
}

/// What a SET did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SetResult {
    /// A new entry was appended (journal it).
    Added(Entry),
    /// The same (prog, vers, netid, uaddr) was already there: TRUE, nothing changes.
    Unchanged,
    /// (prog, vers, netid) is registered at another address: FALSE.
    Conflict,
    /// The namespace reached `max_registrations`, or the entry would take the table past its
    /// byte limit: FALSE.
    Full,
}

/// The registrations one UNSET removed, and where each stood.
///
/// Why the positions: lookups depend on the table's order (see [`Registry`]), so when the daemon
/// cannot journal a removal and has to take it back ([`crate::Portmapper::undo_unset`]), the
/// entries must go back to their old places, not to the end; otherwise the table would differ
/// from the one a journal replay rebuilds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// The removed entries, in table order.
    entries: Vec<Entry>,
    /// The index each entry had in the table before the removal (ascending, same length).
    positions: Vec<usize>,
}

impl Removed {
    /// The removed entries, in table order (what the daemon journals).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// How many entries were removed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was removed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// An UNSET hit an entry owned by someone else (and the caller is not superuser).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotOwner;

/// Fixed cost counted per entry besides its strings (the `Entry` itself, three `String`
/// headers and the allocator's rounding, approximately).
pub const ENTRY_OVERHEAD: usize = 96;

/// What one entry is accounted as, in bytes: its strings plus [`ENTRY_OVERHEAD`].
///
/// Why an estimate and not the allocator's truth: the budget must be cheap and deterministic
/// (the same table always counts the same), and it only has to bound memory, not measure it.
pub fn entry_bytes(netid: &str, uaddr: &str, owner: &str) -> usize {
    ENTRY_OVERHEAD + netid.len() + uaddr.len() + owner.len()
}

/// The portmapper's own registrations for one set of self endpoints, built once. Why: every
/// namespace's portmapper starts with the same ones (14 entries, 0.7 KiB with the default
/// endpoints); portmappers made with [`crate::Portmapper::with_self_table`] share this table
/// until their first change (copy on write), so a namespace nobody registers in holds no
/// table of its own (issue 16: bytes per namespace).
#[derive(Debug, Clone)]
pub struct SelfTable {
    /// The entries, without limits (the portmapper's own always exist).
    pub(crate) registry: Registry,
}

impl SelfTable {
    /// For each endpoint, in order, 100000 v2 (udp/tcp only), v3 and v4, owned by "superuser";
    /// `self_endpoints` are (netid, uaddr), as for [`crate::Portmapper::new`].
    pub fn new(self_endpoints: &[(SharedStr, SharedStr)]) -> Self {
        let mut registry = Registry::new(usize::MAX, usize::MAX);
        let versions_of = |netid: &str| -> &'static [u32] {
            if netid_to_prot(netid).is_some() {
                &[2, 3, 4]
            } else {
                &[3, 4]
            }
        };
        registry.reserve_exact(
            self_endpoints
                .iter()
                .map(|(netid, _)| versions_of(netid).len())
                .sum(),
        );
        let owner = superuser();
        for (netid, uaddr) in self_endpoints {
            for &vers in versions_of(netid) {
                registry.insert_unchecked(Entry {
                    prog: PMAP_PROG,
                    vers,
                    netid: netid.clone(),
                    uaddr: uaddr.clone(),
                    owner: owner.clone(),
                });
            }
        }
        Self { registry }
    }
}

/// The registration table of one namespace.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Entries in registration order (lookups depend on the order). Shared with snapshots
    /// ([`Self::snapshot`]: a DUMP or a journal rewrite encoded elsewhere); a change while one
    /// is held copies the table once (`Arc::make_mut`), so a snapshot costs nothing otherwise.
    entries: Arc<Vec<Entry>>,
    /// Cap on `entries.len()`.
    max: usize,
    /// Sum of [`entry_bytes`] over `entries`.
    bytes: usize,
    /// Cap on `bytes` for a SET (the configured cap, or less while the daemon's memory
    /// ceiling leaves less room).
    max_bytes: usize,
    /// SETs refused for want of bytes so far (the daemon logs each new one with its cause).
    refused_bytes: u64,
}

impl Registry {
    /// An empty table holding at most `max` entries and `max_bytes` accounted bytes.
    pub fn new(max: usize, max_bytes: usize) -> Self {
        Self {
            entries: Arc::new(Vec::new()),
            max,
            bytes: 0,
            max_bytes,
            refused_bytes: 0,
        }
    }

    /// A table with `shared`'s entries, held in common (not copied) until its first change,
    /// and these limits.
    pub(crate) fn from_shared(shared: &Self, max: usize, max_bytes: usize) -> Self {
        Self {
            entries: Arc::clone(&shared.entries),
            max,
            bytes: shared.bytes,
            max_bytes,
            refused_bytes: 0,
        }
    }

    /// Room for `n` more entries, exactly: the portmapper's own entries are known up front,
    /// and doubling growth would leave slots (80 bytes each) unused in every namespace.
    pub(crate) fn reserve_exact(&mut self, n: usize) {
        Arc::make_mut(&mut self.entries).reserve_exact(n);
    }

    /// Bytes the table is accounted as (sum of [`entry_bytes`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// SETs refused so far because the entry would pass the byte limit.
    pub fn refused_for_bytes(&self) -> u64 {
        self.refused_bytes
    }

    /// Sets the byte limit SETs are held to; removals and existing entries are unaffected.
    pub(crate) fn set_byte_limit(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
    }

    /// All entries in registration order (v3/v4 DUMP order).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The table as it is now, for work done elsewhere (a DUMP encoded off the daemon's loop, a
    /// journal rewrite): one reference count, no copy (see the `entries` field).
    pub fn snapshot(&self) -> Arc<Vec<Entry>> {
        Arc::clone(&self.entries)
    }

    /// rpcbind `find_service`: the entry for (prog, vers, netid); failing that, the *last* entry of
    /// the same program on that netid (any version), so that GETADDR can still point the client
    /// at the program, which then answers PROG_MISMATCH with its real range.
    pub(crate) fn find_service(&self, prog: u32, vers: u32, netid: &str) -> Option<&Entry> {
        let mut hit = None;
        for e in self.entries.iter() {
            if e.prog != prog || !e.netid.eq_ignore_ascii_case(netid) {
                continue;
            }
            hit = Some(e);
            if e.vers == vers {
                break;
            }
        }
        hit
    }

    /// rpcbind `find_versions`: lowest and highest version of `prog` on `netid` (0, 0 if none).
    pub(crate) fn find_versions(&self, prog: u32, netid: &str) -> (u32, u32) {
        let mut it = self
            .entries
            .iter()
            .filter(|e| e.prog == prog && e.netid.eq_ignore_ascii_case(netid))
            .map(|e| e.vers);
        let Some(first) = it.next() else {
            return (0, 0);
        };
        it.fold((first, first), |(lo, hi), v| (lo.min(v), hi.max(v)))
    }

    /// rpcbind `map_set`.
    pub(crate) fn set(
        &mut self,
        prog: u32,
        vers: u32,
        netid: &str,
        uaddr: &str,
        owner: &str,
    ) -> SetResult {
        if let Err(r) = self.admit(prog, vers, netid, uaddr, owner) {
            return r;
        }
        let e = Entry {
            prog,
            vers,
            netid: netid.into(),
            uaddr: uaddr.into(),
            owner: owner.into(),
        };
        self.push(e.clone());
        SetResult::Added(e)
    }

    /// What SET decides before anything changes: `Err` with the answer when the entry is
    /// not to be added (already there, conflict, no room).
    fn admit(
        &mut self,
        prog: u32,
        vers: u32,
        netid: &str,
        uaddr: &str,
        owner: &str,
    ) -> Result<(), SetResult> {
        if let Some(f) = self.find_service(prog, vers, netid)
            && f.vers == vers
        {
            return Err(if f.uaddr == uaddr {
                SetResult::Unchanged
            } else {
                SetResult::Conflict
            });
        }
        let cost = entry_bytes(netid, uaddr, owner);
        if self.entries.len() >= self.max {
            return Err(SetResult::Full);
        }
        if self.bytes.saturating_add(cost) > self.max_bytes {
            self.refused_bytes += 1;
            return Err(SetResult::Full);
        }
        Ok(())
    }

    /// Appends an admitted entry and counts its bytes.
    fn push(&mut self, e: Entry) {
        self.bytes += entry_bytes(&e.netid, &e.uaddr, &e.owner);
        Arc::make_mut(&mut self.entries).push(e);
    }

    /// Appends an entry at start-up (self registrations, journal replay) without the cap, so the
    /// portmapper's own entries always exist; duplicates and conflicts are skipped like SET.
    /// The entry is kept as given: its strings stay shared with whoever else holds them.
    pub(crate) fn insert_unchecked(&mut self, e: Entry) -> bool {
        let saved = (self.max, self.max_bytes);
        (self.max, self.max_bytes) = (usize::MAX, usize::MAX);
        let r = self.admit(e.prog, e.vers, &e.netid, &e.uaddr, &e.owner);
        (self.max, self.max_bytes) = saved;
        let added = r.is_ok();
        if added {
            self.push(e);
        }
        added
    }

    /// rpcbind `map_unset`: removes (prog, vers, netid) — every netid when `netid` is empty — if
    /// `owner` is "superuser" or owns each matching entry. Removing nothing is a success.
    ///
    /// Unlike rpcbind, which deletes matching entries up to the first foreign one and then fails,
    /// this is all-or-nothing, so the reply and the journal never disagree.
    pub(crate) fn unset(
        &mut self,
        prog: u32,
        vers: u32,
        netid: &str,
        owner: &str,
    ) -> Result<Removed, NotOwner> {
        let matches = |e: &Entry| {
            e.prog == prog
                && e.vers == vers
                && (netid.is_empty() || e.netid.eq_ignore_ascii_case(netid))
        };
        if owner != SUPERUSER && self.entries.iter().any(|e| matches(e) && e.owner != owner) {
            return Err(NotOwner);
        }
        let mut removed = Removed::default();
        if !self.entries.iter().any(&matches) {
            // Nothing to remove: leave a snapshot's table shared.
            return Ok(removed);
        }
        let mut bytes = self.bytes;
        // `retain` visits the entries once, in order, so `i` is each one's old index.
        let mut i = 0;
        Arc::make_mut(&mut self.entries).retain(|e| {
            let hit = matches(e);
            if hit {
                bytes -= entry_bytes(&e.netid, &e.uaddr, &e.owner);
                removed.entries.push(e.clone());
                removed.positions.push(i);
            }
            i += 1;
            !hit
        });
        self.bytes = bytes;
        Ok(removed)
    }

    /// Puts back what [`Self::unset`] removed, each entry at its old index. Exact only when no
    /// other change came in between (undo several removals latest first). Inserting in ascending
    /// order of old index restores the old table: every entry before an old index is back when
    /// that index is filled. Indices past the end (a misuse) append instead of panicking.
    pub(crate) fn reinsert(&mut self, removed: Removed) {
        for (at, e) in removed.positions.into_iter().zip(removed.entries) {
            let at = at.min(self.entries.len());
            self.bytes += entry_bytes(&e.netid, &e.uaddr, &e.owner);
            Arc::make_mut(&mut self.entries).insert(at, e);
        }
    }

    /// The v2 view (`list_pml`): entries whose netid is exactly "udp" or "tcp" (case-sensitive)
    /// and whose uaddr ends in two port fields, in registration order. This is what stock
    /// rpcbind shows (measured by the conformance harness: its v2 DUMP lists a "tcp" entry
    /// registered with "::1.15.164" as port 4004 and leaves "UDP" out); nsauxd's SET refuses
    /// such addresses, so the difference never shows here.
    #[cfg(test)]
    pub(crate) fn pmap_list(&self) -> Vec<Pmap> {
        self.entries.iter().filter_map(pmap_of).collect()
    }

    /// rpcbind `find_service_pmap` on the v2 view: the port for (prog, vers, prot), falling back
    /// to the last other version of `prog` on that protocol.
    pub(crate) fn find_pmap(&self, prog: u32, vers: u32, prot: u32) -> Option<u32> {
        let mut hit = None;
        // Lazily: a GETPORT must not copy the whole v2 view of a large table.
        for p in self.entries.iter().filter_map(pmap_of) {
            if p.prog != prog || p.prot != prot {
                continue;
            }
            hit = Some(p.port);
            if p.vers == vers {
                break;
            }
        }
        hit
    }
}

/// rpcbind `pmap_netid2ipprot`: "udp" → 17, "tcp" → 6 (exact, IPv4 only), else none.
pub(crate) fn netid_to_prot(netid: &str) -> Option<u32> {
    match netid {
        "udp" => Some(IPPROTO_UDP),
        "tcp" => Some(IPPROTO_TCP),
        _ => None,
    }
}

/// rpcbind `pmap_ipprot2netid`.
pub(crate) fn prot_to_netid(prot: u32) -> Option<&'static str> {
    match prot {
        IPPROTO_UDP => Some("udp"),
        IPPROTO_TCP => Some("tcp"),
        _ => None,
    }
}

/// One entry's row in the v2 view ([`Registry::pmap_list`]), if it has one: shared by the
/// table's own view and DUMP replies encoded from a snapshot (`dump.rs`).
pub(crate) fn pmap_of(e: &Entry) -> Option<Pmap> {
    let prot = netid_to_prot(&e.netid)?;
    let port = uaddr_port(&e.uaddr)?;
    Some(Pmap {
        prog: e.prog,
        vers: e.vers,
        prot,
        port: u32::from(port),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_view_keeps_only_exact_udp_and_tcp_netids_as_rpcbind() {
        let mut r = Registry::new(16, usize::MAX);
        for (vers, (netid, uaddr)) in (1..).zip([
            ("udp", "0.0.0.0.8.1"),
            ("UDP", "0.0.0.0.8.2"),
            ("tcp6", "::.8.3"),
            ("local", "/run/x.sock"),
            ("tcp", "1.2.3.4.8.4"),
        ]) {
            assert!(matches!(
                r.set(7, vers, netid, uaddr, "0"),
                SetResult::Added(_)
            ));
        }
        let ports: Vec<u32> = r.pmap_list().iter().map(|p| p.port).collect();
        assert_eq!(ports, [0x801, 0x804]);
    }

    #[test]
    fn set_semantics() {
        let mut r = Registry::new(3, usize::MAX);
        assert!(matches!(
            r.set(1, 1, "udp", "0.0.0.0.8.1", "0"),
            SetResult::Added(_)
        ));
        assert_eq!(r.set(1, 1, "UDP", "0.0.0.0.8.1", "x"), SetResult::Unchanged);
        assert_eq!(r.set(1, 1, "udp", "0.0.0.0.8.2", "0"), SetResult::Conflict);
        assert!(matches!(
            r.set(1, 2, "udp", "0.0.0.0.8.2", "0"),
            SetResult::Added(_)
        ));
        assert!(matches!(
            r.set(1, 1, "tcp", "0.0.0.0.8.1", "0"),
            SetResult::Added(_)
        ));
        assert_eq!(r.set(2, 1, "tcp", "0.0.0.0.8.1", "0"), SetResult::Full);
        assert_eq!(r.find_versions(1, "udp"), (1, 2));
        assert_eq!(r.find_versions(9, "udp"), (0, 0));
    }

    #[test]
    fn fallback_is_last_other_version() {
        let mut r = Registry::new(10, usize::MAX);
        let _ = r.set(7, 1, "udp", "0.0.0.0.0.1", "0");
        let _ = r.set(7, 3, "udp", "0.0.0.0.0.3", "0");
        assert_eq!(r.find_service(7, 9, "udp").map(|e| e.vers), Some(3));
        assert_eq!(r.find_service(7, 1, "udp").map(|e| e.vers), Some(1));
        assert_eq!(r.find_service(7, 1, "tcp"), None);
        assert_eq!(r.find_pmap(7, 9, IPPROTO_UDP), Some(3));
        assert_eq!(r.find_pmap(7, 1, IPPROTO_UDP), Some(1));
        assert_eq!(r.find_pmap(7, 1, IPPROTO_TCP), None);
    }

    #[test]
    fn unset_owner_rules() {
        let mut r = Registry::new(10, usize::MAX);
        let _ = r.set(5, 1, "udp", "0.0.0.0.0.1", "1000");
        let _ = r.set(5, 1, "tcp", "0.0.0.0.0.1", "1001");
        assert_eq!(r.unset(5, 1, "", "1000"), Err(NotOwner));
        assert_eq!(r.entries().len(), 2);
        assert_eq!(r.unset(5, 1, "udp", "1000").map(|v| v.len()), Ok(1));
        assert_eq!(r.unset(5, 1, "", "superuser").map(|v| v.len()), Ok(1));
        assert_eq!(r.unset(5, 1, "", "1000"), Ok(Removed::default()));
    }

    #[test]
    fn reinsert_restores_the_exact_order() {
        let mut r = Registry::new(10, usize::MAX);
        let _ = r.set(5, 1, "udp", "0.0.0.0.0.1", "0");
        let _ = r.set(6, 1, "udp", "0.0.0.0.0.2", "0");
        let _ = r.set(5, 1, "tcp", "0.0.0.0.0.1", "0");
        let _ = r.set(7, 1, "udp", "0.0.0.0.0.3", "0");
        let _ = r.set(5, 1, "udp6", "::.0.1", "0");
        let before = r.entries().to_vec();
        // One UNSET removing several, then a second removal; undone latest first.
        let all5 = r.unset(5, 1, "", SUPERUSER).unwrap_or_default();
        assert_eq!(all5.len(), 3);
        let seven = r.unset(7, 1, "udp", SUPERUSER).unwrap_or_default();
        assert_eq!(r.entries().len(), 1);
        r.reinsert(seven);
        r.reinsert(all5);
        assert_eq!(r.entries(), &before[..]);
        // The v2 lookups that depend on the order agree as well.
        assert_eq!(r.find_service(5, 1, "tcp"), before.get(2));
    }

    #[test]
    fn byte_cap_refuses_growth_and_counts_exactly() {
        let cost = entry_bytes("udp", "0.0.0.0.0.1", "0");
        let mut r = Registry::new(100, 2 * cost + 5);
        assert!(matches!(
            r.set(1, 1, "udp", "0.0.0.0.0.1", "0"),
            SetResult::Added(_)
        ));
        assert!(matches!(
            r.set(2, 1, "udp", "0.0.0.0.0.1", "0"),
            SetResult::Added(_)
        ));
        assert_eq!(r.bytes(), 2 * cost);
        // A third small one, or one big string, does not fit; a duplicate is still TRUE.
        assert_eq!(r.set(3, 1, "udp", "0.0.0.0.0.1", "0"), SetResult::Full);
        assert_eq!(r.refused_for_bytes(), 1);
        assert_eq!(r.set(1, 1, "udp", "0.0.0.0.0.1", "0"), SetResult::Unchanged);
        let removed = r.unset(1, 1, "", SUPERUSER).unwrap_or_default();
        assert_eq!(r.bytes(), cost);
        let big = "x".repeat(64);
        assert_eq!(r.set(3, 1, "udp", &big, "0"), SetResult::Full);
        r.reinsert(removed);
        assert_eq!(r.bytes(), 2 * cost);
        // A lower limit (the daemon's ceiling) refuses growth but keeps what is there.
        let _ = r.unset(2, 1, "", SUPERUSER);
        r.set_byte_limit(cost);
        assert_eq!(r.set(4, 1, "udp", "0.0.0.0.0.1", "0"), SetResult::Full);
        assert_eq!(r.entries().len(), 1);
        // Start-up entries ignore the limit but are counted.
        assert!(r.insert_unchecked(Entry {
            prog: 9,
            vers: 1,
            netid: "udp".into(),
            uaddr: big.clone().into(),
            owner: "0".into(),
        }));
        assert_eq!(r.bytes(), cost + entry_bytes("udp", &big, "0"));
    }

    #[test]
    fn pmap_view_only_ipv4_udp_tcp() {
        let mut r = Registry::new(10, usize::MAX);
        let _ = r.set(5, 1, "udp6", "::.0.1", "0");
        let _ = r.set(5, 1, "local", "/run/x", "0");
        let _ = r.set(5, 1, "tcp", "127.0.0.1.3.235", "0");
        assert_eq!(
            r.pmap_list(),
            vec![Pmap {
                prog: 5,
                vers: 1,
                prot: 6,
                port: 1003
            }]
        );
    }
}
