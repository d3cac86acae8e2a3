//! Lookup indexes for local records, and a hosts file turned into such indexes.
//!
//! Why a separate, buildable-anywhere table: a hosts file of 100,000 lines takes tens of
//! milliseconds to parse and index. The daemon builds a [`HostsTable`] away from its event
//! loop (the builder is `Send` and needs nothing from the resolver but its local domains)
//! and installs the finished table with a pointer swap. Every step is linear: duplicates are
//! found with hash sets, and the reverse name of an address is computed once per address.

use std::net::IpAddr;

use hashbrown::{HashMap, HashSet};

use crate::error::Error;
use crate::hosts::parse_hosts;
use crate::local::{is_subdomain, name_wire, reverse_wire, suffixes};
use crate::wire;

/// Forward, reverse and existence indexes over a set of local records.
#[derive(Debug, Default, Clone)]
pub(crate) struct LocalIndex {
    /// Lower-cased name → addresses, in record order.
    pub(crate) forward: HashMap<Vec<u8>, Vec<IpAddr>>,
    /// Lower-cased reverse name → PTR targets (case kept), in record order.
    pub(crate) reverse: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    /// Every local name and all its ancestors inside local domains (empty non-terminals
    /// answer NODATA, not NXDOMAIN: RFC 8020).
    pub(crate) existing: HashSet<Vec<u8>>,
}

impl LocalIndex {
    /// Indexes `recs` (wire names, case kept) under the lower-cased `domains`, in linear time.
    pub(crate) fn build<'a>(
        recs: impl Iterator<Item = (&'a [u8], IpAddr)>,
        domains: &[Vec<u8>],
    ) -> Self {
        let mut ix = Self::default();
        let mut forward_seen: HashSet<(Vec<u8>, IpAddr)> = HashSet::new();
        let mut reverse_seen: HashSet<(IpAddr, Vec<u8>)> = HashSet::new();
        let mut reverse_names: HashMap<IpAddr, Vec<u8>> = HashMap::new();
        for (name, addr) in recs {
            let lower = wire::lower_wire_name(name);
            if forward_seen.insert((lower.clone(), addr)) {
                ix.forward.entry(lower.clone()).or_default().push(addr);
            }
            if reverse_seen.insert((addr, lower.clone())) {
                let rev = reverse_names
                    .entry(addr)
                    .or_insert_with(|| reverse_wire(addr))
                    .clone();
                ix.reverse.entry(rev).or_default().push(name.to_vec());
            }
            if !domains.is_empty() {
                mark_existing(&mut ix.existing, &lower, domains);
            }
        }
        ix
    }

    /// The `existing` set for these lower-cased names under other local domains.
    pub(crate) fn existing_under<'a>(
        names: impl Iterator<Item = &'a Vec<u8>>,
        domains: &[Vec<u8>],
    ) -> HashSet<Vec<u8>> {
        let mut set = HashSet::new();
        if !domains.is_empty() {
            for n in names {
                mark_existing(&mut set, n, domains);
            }
        }
        set
    }
}

/// Adds `lower` and its ancestors that lie inside a local domain to `set`.
fn mark_existing(set: &mut HashSet<Vec<u8>>, lower: &[u8], domains: &[Vec<u8>]) {
    for s in suffixes(lower) {
        if domains.iter().any(|d| is_subdomain(s, d)) {
            set.insert(s.to_vec());
        }
    }
}

/// Builds [`HostsTable`]s for one resolver: carries the only setting the indexes depend on.
///
/// Why a builder: the daemon parses a namespace's hosts file on a blocking thread, where it
/// cannot borrow the resolver; the builder is a small owned copy of what the table needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostsBuilder {
    /// Lower-cased wire local domains.
    pub(crate) domains: Vec<Vec<u8>>,
}

impl HostsBuilder {
    /// Parses and indexes hosts text (linear in its size). Returns the table and the lines
    /// or names that were skipped, for the caller to log.
    pub fn build(&self, text: &str) -> (HostsTable, Vec<Error>) {
        let (entries, mut errors) = parse_hosts(text);
        let mut recs: Vec<(Vec<u8>, IpAddr)> = Vec::new();
        for e in entries {
            for n in &e.names {
                match name_wire(n) {
                    Ok(w) => recs.push((w, e.addr)),
                    Err(err) => errors.push(err),
                }
            }
        }
        let index = LocalIndex::build(recs.iter().map(|(n, a)| (n.as_slice(), *a)), &self.domains);
        let records = index.forward.values().map(Vec::len).sum();
        let table = HostsTable {
            domains: self.domains.clone(),
            records,
            index,
        };
        (table, errors)
    }
}

/// A parsed and indexed hosts file, ready to be installed into a resolver in O(1).
#[derive(Debug, Default, Clone)]
pub struct HostsTable {
    /// The local domains it was indexed under (a resolver with others re-indexes).
    pub(crate) domains: Vec<Vec<u8>>,
    /// Distinct (name, address) records.
    pub(crate) records: usize,
    /// The indexes.
    pub(crate) index: LocalIndex,
}

impl HostsTable {
    /// Distinct (name, address) records it holds (for status and tests).
    pub fn records(&self) -> usize {
        self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use std::fmt::Write as _;
    use std::time::Instant;

    /// 100,000 lines, every one a duplicate of another and half of them naming one address
    /// (the shape of an ad-blocking hosts file): linear, so seconds at most even in a
    /// debug build on a loaded machine (about 1 s there; quadratic would be minutes; timing
    /// targets live in the benches).
    #[test]
    // The test times itself; the code under test reads no clock.
    #[allow(clippy::disallowed_methods)]
    fn a_hundred_thousand_lines_parse_in_linear_time() {
        let mut text = String::new();
        for i in 0..50_000u32 {
            let _ = writeln!(text, "0.0.0.0 ad{i}.example.com");
        }
        for i in 0..50_000u32 {
            let _ = writeln!(
                text,
                "10.{}.{}.{} AD{i}.example.com",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            );
        }
        text.push_str("0.0.0.0 ad7.example.com\n0.0.0.0 AD7.EXAMPLE.COM\n");
        let start = Instant::now();
        let (t, errors) = HostsBuilder::default().build(&text);
        let took = start.elapsed();
        assert!(errors.is_empty());
        assert_eq!(t.records(), 100_000);
        assert_eq!(t.index.forward.len(), 50_000);
        let zero =
            wire::lower_wire_name(&wire::name_to_wire(&Name::from(IpAddr::from([0, 0, 0, 0]))));
        assert_eq!(t.index.reverse.get(&zero).map(Vec::len), Some(50_000));
        assert!(
            took.as_secs() < 60,
            "100,000 hosts lines took {took:?}: not linear"
        );
    }

    #[test]
    fn duplicates_are_dropped_case_insensitively_keeping_the_first_spelling() {
        let (t, _) =
            HostsBuilder::default().build("10.0.0.1 Box box BOX\n10.0.0.1 box\n10.0.0.2 box\n");
        let b = wire::lower_wire_name(&name_wire("box").expect("name"));
        assert_eq!(
            t.index.forward.get(&b),
            Some(&vec![
                IpAddr::from([10, 0, 0, 1]),
                IpAddr::from([10, 0, 0, 2])
            ])
        );
        let rev = wire::lower_wire_name(&wire::name_to_wire(&Name::from(IpAddr::from([
            10, 0, 0, 1,
        ]))));
        assert_eq!(
            t.index.reverse.get(&rev),
            Some(&vec![name_wire("Box").expect("name")])
        );
        assert_eq!(t.records(), 2);
    }
}
