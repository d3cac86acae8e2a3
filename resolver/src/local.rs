//! Local records: the namespace's static names (hosts file, configuration, run-time API),
//! answered authoritatively, with PTR records derived from every forward record.
//!
//! Why a separate store: a VS needs its own names to resolve even when upstreams are down,
//! and local answers must never be cached or mixed with upstream data.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::Name;

use crate::config::Config;
use crate::error::Error;
use crate::hosts_table::{HostsBuilder, HostsTable, LocalIndex};
use crate::response::LocalData;
use crate::wire::{self, CLASS_IN, TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_PTR};

/// Where a record came from; each source is replaced or edited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// Static configuration.
    Config,
    /// Added at run time.
    Runtime,
}

/// One forward record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    /// Wire name as given (case kept for PTR targets).
    name: Vec<u8>,
    /// The address.
    addr: IpAddr,
    /// Origin.
    source: Source,
}

/// What the local store says about a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LocalAnswer {
    /// The name is local and has data of the asked type.
    Data(Vec<LocalData>),
    /// The name is local but has no data of that type (NOERROR, empty).
    NoData,
    /// The name lies in a local domain and does not exist.
    NxDomain,
    /// Not ours: forward it.
    NotLocal,
}

/// The configured and run-time records with their indexes, and the local domains. Why a
/// struct of its own behind an `Arc`: every namespace made from the same settings starts with
/// the same records, so they share one copy (issue 16: about 1 KiB per namespace); a
/// run-time change copies it first (`Arc::make_mut`).
#[derive(Debug, Default, Clone)]
struct Own {
    /// Configured and run-time records in insertion order (the hosts file is kept apart).
    recs: Vec<Rec>,
    /// Indexes over `recs`.
    index: LocalIndex,
    /// Lower-cased local domains: names at or below them are never forwarded.
    domains: Vec<Vec<u8>>,
}

/// The local record store with derived forward and reverse indexes.
#[derive(Debug, Default)]
pub(crate) struct LocalRecords {
    /// Configured and run-time records, shared until changed.
    own: Arc<Own>,
    /// The namespace's hosts file, parsed and indexed (possibly elsewhere: see
    /// [`HostsTable`]); `None` while it has no names. Boxed: most namespaces have no hosts
    /// file, and an empty table inline is about 150 bytes (issue 16: bytes per namespace).
    hosts: Option<Box<HostsTable>>,
}

/// The configured local records and domains of a [`Config`], parsed and indexed once. Why:
/// a daemon makes one resolver per namespace from the same settings; resolvers made with
/// [`crate::Resolver::with_shared_local`] from one `SharedLocal` share these records instead
/// of holding a copy each (issue 16: bytes per namespace).
#[derive(Debug, Clone)]
pub struct SharedLocal {
    /// The settings it was built from (`Config::local_records`).
    records: Vec<(String, IpAddr)>,
    /// The settings it was built from (`Config::local_domains`).
    domains: Vec<String>,
    /// The parsed and indexed records.
    own: Arc<Own>,
    /// The rest of the settings it was built from, without the per-instance lists
    /// (upstreams, allow list, local records and domains): what the resolvers made from it
    /// share (see [`crate::Resolver::with_shared_local`]).
    settings: Arc<Config>,
}

impl SharedLocal {
    /// Parses and indexes `config`'s local records and domains.
    pub fn new(config: &Config) -> Result<Self, Error> {
        let mut local = LocalRecords::new(&config.local_domains)?;
        for (name, addr) in &config.local_records {
            local.add(name, *addr, Source::Config)?;
        }
        Ok(Self {
            records: config.local_records.clone(),
            domains: config.local_domains.clone(),
            own: local.own,
            settings: Arc::new(Config {
                upstreams: Vec::new(),
                allow: Vec::new(),
                local_records: Vec::new(),
                local_domains: Vec::new(),
                ..config.clone()
            }),
        })
    }

    /// Whether it was built from the same local records and domains and the same other
    /// settings as `config` has (only then may a resolver for `config` use it); the
    /// upstreams and the allow list may differ.
    pub fn fits(&self, config: &Config) -> bool {
        self.records == config.local_records
            && self.domains == config.local_domains
            && self.settings.same_settings(config)
    }

    /// The shared settings (see [`SharedLocal::settings`]).
    pub(crate) fn settings(&self) -> Arc<Config> {
        Arc::clone(&self.settings)
    }
}

/// Parses a host name into an uncompressed wire name (case kept).
pub(crate) fn name_wire(name: &str) -> Result<Vec<u8>, Error> {
    let bad = || Error::InvalidName(name.to_owned());
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.contains(char::is_whitespace) {
        return Err(bad());
    }
    if let Some(w) = plain_name_wire(trimmed) {
        return Ok(w);
    }
    let parsed = Name::from_ascii(trimmed).map_err(|_| bad())?;
    if parsed.is_root() {
        return Err(bad());
    }
    Ok(wire::name_to_wire(&parsed))
}

/// The wire form of a plain host name (letters, digits, `-` but not first, `_`, dots
/// between non-empty labels), built without the general parser: a hosts file has hundreds of thousands of
/// them. `None` for anything else, which goes through the general parser.
fn plain_name_wire(name: &str) -> Option<Vec<u8>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 250 {
        return None;
    }
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        let first_ok = label.bytes().next().is_some_and(|b| b != b'-');
        if !first_ok || label.len() > 63 || !label.bytes().all(ok) {
            return None;
        }
        out.push(u8::try_from(label.len()).ok()?);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Some(out)
}

/// The lower-cased wire reverse name of `addr` (`in-addr.arpa` / `ip6.arpa`), built
/// directly: a hosts file may hold a hundred thousand addresses.
pub(crate) fn reverse_wire(addr: IpAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(74);
    let mut label = |s: &[u8]| {
        out.push(u8::try_from(s.len()).unwrap_or(0));
        out.extend_from_slice(s);
    };
    match addr {
        IpAddr::V4(a) => {
            for b in a.octets().iter().rev() {
                label(b.to_string().as_bytes());
            }
            label(b"in-addr");
        }
        IpAddr::V6(a) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for b in a.octets().iter().rev() {
                label(&[HEX[usize::from(b & 15)]]);
                label(&[HEX[usize::from(b >> 4)]]);
            }
            label(b"ip6");
        }
    }
    label(b"arpa");
    out.push(0);
    out
}

/// Whether wire name `name` equals or lies below wire name `zone` (both lower-cased).
pub(crate) fn is_subdomain(name: &[u8], zone: &[u8]) -> bool {
    suffixes(name).any(|s| s == zone)
}

/// Iterates a wire name and each of its ancestors (down to the root `\0`).
pub(crate) fn suffixes(name: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = Some(0usize);
    std::iter::from_fn(move || {
        let p = pos?;
        let rest = name.get(p..)?;
        let len = usize::from(*rest.first()?);
        pos = if len == 0 { None } else { Some(p + 1 + len) };
        Some(rest)
    })
}

impl Own {
    /// Adds without rebuilding (duplicates from the same source are ignored).
    fn push(&mut self, name: Vec<u8>, addr: IpAddr, source: Source) {
        let exists = self
            .recs
            .iter()
            .any(|r| r.source == source && r.addr == addr && r.name.eq_ignore_ascii_case(&name));
        if !exists {
            self.recs.push(Rec { name, addr, source });
        }
    }

    /// Recomputes the indexes of the records.
    fn rebuild(&mut self) {
        self.index = LocalIndex::build(
            self.recs.iter().map(|r| (r.name.as_slice(), r.addr)),
            &self.domains,
        );
    }
}

impl LocalRecords {
    /// Creates a store with the given local domains.
    pub(crate) fn new(domains: &[String]) -> Result<Self, Error> {
        let domains = domains
            .iter()
            .map(|d| name_wire(d).map(|w| wire::lower_wire_name(&w)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            own: Arc::new(Own {
                domains,
                ..Own::default()
            }),
            hosts: None,
        })
    }

    /// A store starting with `shared`'s records (shared, not copied) and no hosts file.
    pub(crate) fn from_shared(shared: &SharedLocal) -> Self {
        Self {
            own: Arc::clone(&shared.own),
            hosts: None,
        }
    }

    /// Adds a record (duplicates from the same source are ignored).
    pub(crate) fn add(&mut self, name: &str, addr: IpAddr, source: Source) -> Result<(), Error> {
        let name = name_wire(name)?;
        let own = Arc::make_mut(&mut self.own);
        own.push(name, addr, source);
        own.rebuild();
        Ok(())
    }

    /// Removes a record of `source`; returns whether one was there.
    pub(crate) fn remove(
        &mut self,
        name: &str,
        addr: IpAddr,
        source: Source,
    ) -> Result<bool, Error> {
        let name = name_wire(name)?;
        let matches =
            |r: &Rec| r.source == source && r.addr == addr && r.name.eq_ignore_ascii_case(&name);
        if !self.own.recs.iter().any(matches) {
            return Ok(false);
        }
        let own = Arc::make_mut(&mut self.own);
        own.recs.retain(|r| !matches(r));
        own.rebuild();
        Ok(true)
    }

    /// Replaces all hosts-file records with those in `text`; returns the bad lines/names.
    pub(crate) fn set_hosts(&mut self, text: &str) -> Vec<Error> {
        let (table, errors) = self.hosts_builder().build(text);
        drop(self.install_hosts(table));
        errors
    }

    /// What a hosts table for this store is built with.
    pub(crate) fn hosts_builder(&self) -> HostsBuilder {
        HostsBuilder {
            domains: self.own.domains.clone(),
        }
    }

    /// Installs a hosts table built elsewhere (re-indexed here only if it was built under
    /// other local domains).
    pub(crate) fn install_hosts(&mut self, table: HostsTable) -> HostsTable {
        let mut table = table;
        if table.domains != self.own.domains {
            table.index.existing =
                LocalIndex::existing_under(table.index.forward.keys(), &self.own.domains);
            table.domains.clone_from(&self.own.domains);
        }
        let empty = table.index.forward.is_empty()
            && table.index.reverse.is_empty()
            && table.index.existing.is_empty();
        let new = (!empty).then(|| Box::new(table));
        std::mem::replace(&mut self.hosts, new).map_or_else(HostsTable::default, |old| *old)
    }

    /// Number of forward records.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.own.recs.len() + self.hosts.as_ref().map_or(0, |h| h.records)
    }

    /// Answers a question if it is local. `qname` is lower-cased wire.
    pub(crate) fn lookup(&self, qname: &[u8], qtype: u16, qclass: u16) -> LocalAnswer {
        if qclass != CLASS_IN {
            return LocalAnswer::NotLocal;
        }
        let own = self.own.index.forward.get(qname);
        let hosts = self.hosts.as_ref().and_then(|h| h.index.forward.get(qname));
        if own.is_some() || hosts.is_some() {
            let own = own.map_or(&[][..], Vec::as_slice);
            let hosts = hosts.map_or(&[][..], Vec::as_slice);
            // Configured and run-time records first, then the hosts file's.
            let addrs: Vec<IpAddr> = own
                .iter()
                .chain(hosts.iter().filter(|a| !own.contains(a)))
                .copied()
                .collect();
            // ANY gets one RRset (RFC 8482 §4.1): the A records, or the AAAA ones if none.
            let any_v4 = addrs.iter().any(IpAddr::is_ipv4);
            let data: Vec<LocalData> = addrs
                .iter()
                .filter(|a| match qtype {
                    TYPE_A => a.is_ipv4(),
                    TYPE_AAAA => a.is_ipv6(),
                    TYPE_ANY => a.is_ipv4() == any_v4,
                    _ => false,
                })
                .map(|a| LocalData::Addr(*a))
                .collect();
            return if data.is_empty() {
                LocalAnswer::NoData
            } else {
                LocalAnswer::Data(data)
            };
        }
        let own = self.own.index.reverse.get(qname);
        let hosts = self.hosts.as_ref().and_then(|h| h.index.reverse.get(qname));
        if own.is_some() || hosts.is_some() {
            let own = own.map_or(&[][..], Vec::as_slice);
            let hosts = hosts.map_or(&[][..], Vec::as_slice);
            return if qtype == TYPE_PTR || qtype == TYPE_ANY {
                let fresh = hosts
                    .iter()
                    .filter(|t| !own.iter().any(|o| o.eq_ignore_ascii_case(t)));
                LocalAnswer::Data(
                    own.iter()
                        .chain(fresh)
                        .cloned()
                        .map(LocalData::Ptr)
                        .collect(),
                )
            } else {
                LocalAnswer::NoData
            };
        }
        let domains = &self.own.domains;
        if domains.iter().any(|d| is_subdomain(qname, d)) {
            return if self.own.index.existing.contains(qname)
                || self
                    .hosts
                    .as_ref()
                    .is_some_and(|h| h.index.existing.contains(qname))
                || domains.iter().any(|d| d == qname)
            {
                LocalAnswer::NoData
            } else {
                LocalAnswer::NxDomain
            };
        }
        LocalAnswer::NotLocal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<u8> {
        wire::lower_wire_name(&name_wire(s).expect("name"))
    }

    #[test]
    fn fast_paths_agree_with_the_general_parser() {
        for n in [
            "box",
            "Box.LAN",
            "a-b_c.d9.",
            "-x.lan",
            "x..y",
            "a.b\\.c",
            "ünï.lan",
            ".",
        ] {
            let general = Name::from_ascii(n)
                .ok()
                .filter(|p| !p.is_root())
                .map(|p| wire::name_to_wire(&p));
            if let Some(fast) = plain_name_wire(n) {
                assert_eq!(Some(fast), general, "{n}");
            }
        }
        assert!(plain_name_wire("x..y").is_none());
        for a in [
            "10.0.0.5",
            "0.0.0.0",
            "255.1.20.3",
            "fd00::5",
            "2001:db8::abcd:1",
        ] {
            let ip: IpAddr = a.parse().expect("ip");
            let general = wire::lower_wire_name(&wire::name_to_wire(&Name::from(ip)));
            assert_eq!(reverse_wire(ip), general, "{a}");
        }
    }

    #[test]
    fn forward_reverse_and_domains() {
        let mut l = LocalRecords::new(&["lan".to_owned()]).expect("domains");
        let errs = l.set_hosts("10.0.0.5 Box.lan box\n fd00::5 box.lan\n");
        assert!(errs.is_empty());
        assert_eq!(
            l.lookup(&w("box.lan"), TYPE_A, CLASS_IN),
            LocalAnswer::Data(vec![LocalData::Addr("10.0.0.5".parse().expect("ip"))])
        );
        assert_eq!(
            l.lookup(&w("BOX.LAN"), TYPE_AAAA, CLASS_IN),
            LocalAnswer::Data(vec![LocalData::Addr("fd00::5".parse().expect("ip"))])
        );
        assert_eq!(l.lookup(&w("box.lan"), 16, CLASS_IN), LocalAnswer::NoData);
        assert_eq!(
            l.lookup(&w("other.lan"), TYPE_A, CLASS_IN),
            LocalAnswer::NxDomain
        );
        assert_eq!(l.lookup(&w("lan"), TYPE_A, CLASS_IN), LocalAnswer::NoData);
        assert_eq!(
            l.lookup(&w("example.com"), TYPE_A, CLASS_IN),
            LocalAnswer::NotLocal
        );
        assert_eq!(
            l.lookup(&w("5.0.0.10.in-addr.arpa"), TYPE_PTR, CLASS_IN),
            LocalAnswer::Data(vec![
                LocalData::Ptr(name_wire("Box.lan").expect("n")),
                LocalData::Ptr(name_wire("box").expect("n"))
            ])
        );
        assert!(matches!(
            l.lookup(
                &w("5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa"),
                TYPE_PTR,
                CLASS_IN
            ),
            LocalAnswer::Data(_)
        ));
        assert_eq!(
            l.lookup(&w("6.0.0.10.in-addr.arpa"), TYPE_PTR, CLASS_IN),
            LocalAnswer::NotLocal
        );
        l.add(
            "extra.lan",
            "10.0.0.6".parse().expect("ip"),
            Source::Runtime,
        )
        .expect("add");
        assert!(matches!(
            l.lookup(&w("extra.lan"), TYPE_A, CLASS_IN),
            LocalAnswer::Data(_)
        ));
        assert!(
            l.remove(
                "extra.lan",
                "10.0.0.6".parse().expect("ip"),
                Source::Runtime
            )
            .expect("rm")
        );
        assert_eq!(
            l.lookup(&w("extra.lan"), TYPE_A, CLASS_IN),
            LocalAnswer::NxDomain
        );
        // Replacing the hosts file keeps runtime records only.
        l.set_hosts("");
        assert_eq!(l.len(), 0);
        assert!(name_wire("bad name").is_err());
    }
}
