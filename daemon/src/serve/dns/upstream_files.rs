//! Where a namespace's upstream servers come from when the config names none.
//!
//! Why an order of its own: the programs of a namespace should ask nsaux (127.0.0.53), and a
//! resolv.conf that says so cannot also tell nsaux where to forward. So nsaux first reads a
//! file of its own, `NETNS_ETC_DIR/NAME/nsaux-upstreams` (`upstreams_file`), and only then the
//! namespace's resolv.conf with nsaux's own addresses taken out. The host namespace has no
//! directory under `NETNS_ETC_DIR` by convention: it reads the host's `/etc/resolv.conf`, and
//! when that names only systemd-resolved's stub, resolved's real upstream list.
//!
//! | namespace | first found wins |
//! | --- | --- |
//! | named | `ETC/NAME/nsaux-upstreams`, `ETC/NAME/resolv.conf` (minus nsaux) |
//! | host | `ETC/host/nsaux-upstreams`, `ETC/host/resolv.conf`, `host_resolv_conf` (minus nsaux; `host_resolved_conf` behind the 127.0.0.53 stub) |

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use super::watched::Watched;
use crate::config::{DnsConfig, UpstreamAddr};
use crate::serve::NsInfo;

/// Largest upstream list or resolv.conf read (they are read in the query path; real ones
/// are a few hundred bytes).
const MAX_UPSTREAM_FILE_BYTES: u64 = 64 << 10;
/// systemd-resolved's stub listener, which a host's `/etc/resolv.conf` names when resolved
/// manages it.
const RESOLVED_STUB: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53));

/// One file and the content last read from it.
#[derive(Debug)]
struct Src {
    file: Watched,
    text: Option<String>,
}

impl Src {
    fn new(path: &Path) -> Self {
        Self {
            file: Watched::new(path.to_path_buf()),
            text: None,
        }
    }

    /// Re-reads the file if its stamp changed; true when it did.
    fn poll(&mut self) -> bool {
        match self.file.changed(MAX_UPSTREAM_FILE_BYTES) {
            Some(text) => {
                self.text = text;
                true
            }
            None => false,
        }
    }

    fn path(&self) -> String {
        self.file.path.display().to_string()
    }
}

/// The upstream source files of one namespace, in the order they are tried.
#[derive(Debug)]
pub(super) struct UpstreamFiles {
    /// nsaux's own list (`upstreams_file`).
    own: Option<Src>,
    /// `ETC/NAME/resolv.conf` (for the host namespace only if someone wrote one).
    resolv: Option<Src>,
    /// Host namespace: `host_resolv_conf`, and `host_resolved_conf` behind the stub. Boxed:
    /// only the host namespace has them, and two sources inline cost every other namespace
    /// about 250 bytes (issue 16: bytes per namespace).
    host: Option<Box<(Src, Src)>>,
}

/// What the files say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Choice {
    /// The upstreams.
    pub(super) list: Vec<SocketAddr>,
    /// The file they came from, for status and logs; `None` when no file was found (the
    /// files looked for are then [`UpstreamFiles::looked_for`], made when shown: a namespace
    /// without files would otherwise keep a string of their paths, about 180 bytes).
    pub(super) source: Option<String>,
    /// The file found names nameservers, but every one of them is nsaux itself.
    pub(super) only_self: bool,
}

impl UpstreamFiles {
    /// The files for `ns` under `c`; `None` when the config lists upstreams or turns every
    /// file off.
    pub(super) fn new(ns: &NsInfo, c: &DnsConfig) -> Option<Self> {
        if !c.upstreams.is_empty() {
            return None;
        }
        let dir = c.netns_etc_dir.join(&ns.name);
        let own = (!c.upstreams_file.is_empty()).then(|| Src::new(&dir.join(&c.upstreams_file)));
        let resolv = c.resolv_conf.then(|| Src::new(&dir.join("resolv.conf")));
        let host = (c.resolv_conf && ns.is_host).then(|| {
            Box::new((
                Src::new(&c.host_resolv_conf),
                Src::new(&c.host_resolved_conf),
            ))
        });
        (own.is_some() || resolv.is_some()).then_some(Self { own, resolv, host })
    }

    /// Re-reads whichever file changed (one `stat` each otherwise); true when any did.
    pub(super) fn poll(&mut self) -> bool {
        let mut changed = false;
        for s in [&mut self.own, &mut self.resolv].into_iter().flatten() {
            changed |= s.poll();
        }
        if let Some((h, r)) = self.host.as_deref_mut() {
            changed |= h.poll();
            changed |= r.poll();
        }
        changed
    }

    /// The upstreams the files give, first found wins (see the module docs). Lines that do
    /// not parse are logged and skipped.
    pub(super) fn choose(&self, ns: &NsInfo, c: &DnsConfig) -> Choice {
        if let Some(own) = &self.own
            && let Some(text) = &own.text
        {
            let (list, bad) = parse_upstreams_file(text);
            for line in bad {
                tracing::warn!(netns = %ns.name, path = %own.path(), line, "dns: upstream line skipped (want IP, IP:PORT or [IPv6]:PORT)");
            }
            return Choice {
                list,
                source: Some(own.path()),
                only_self: false,
            };
        }
        if let Some(r) = &self.resolv
            && let Some(text) = &r.text
        {
            return from_resolv_conf(ns, c, text, r.path());
        }
        if let Some((h, resolved)) = self.host.as_deref()
            && let Some(text) = &h.text
        {
            let (conf, _) = nsaux_resolver::parse_resolv_conf(text);
            let stub_only = !conf.nameservers.is_empty()
                && conf.nameservers.iter().all(|ip| *ip == RESOLVED_STUB);
            if stub_only && let Some(rtext) = &resolved.text {
                let mut choice = from_resolv_conf(ns, c, rtext, resolved.path());
                choice.source = Some(format!(
                    "{} (behind the stub in {})",
                    resolved.path(),
                    h.path()
                ));
                return choice;
            }
            return from_resolv_conf(ns, c, text, h.path());
        }
        Choice {
            list: Vec::new(),
            source: None,
            only_self: false,
        }
    }

    /// The files looked for, when none was found (see [`Choice::source`]).
    pub(super) fn looked_for(&self) -> String {
        let looked = self.own.iter().chain(&self.resolv).map(Src::path);
        let looked: Vec<String> = looked
            .chain(self.host.as_deref().map(|(h, _)| h.path()))
            .collect();
        format!("{} (absent)", looked.join(", "))
    }

    /// Where nsaux's own upstream list for this namespace goes (for the WARN that says so).
    pub(super) fn own_path(&self) -> Option<String> {
        self.own.as_ref().map(Src::path)
    }
}

/// The upstreams a resolv.conf names, minus entries that are this endpoint.
fn from_resolv_conf(ns: &NsInfo, c: &DnsConfig, text: &str, source: String) -> Choice {
    let (conf, skipped) = nsaux_resolver::parse_resolv_conf(text);
    for e in skipped {
        tracing::debug!(netns = %ns.name, error = %e, "dns: resolv.conf line skipped");
    }
    let named = conf.nameservers.len();
    let list: Vec<SocketAddr> = conf
        .nameservers
        .into_iter()
        .map(|ip| SocketAddr::new(ip, 53))
        .filter(|up| {
            let me = is_self(*up, &c.addresses, c.port);
            if me {
                tracing::debug!(netns = %ns.name, upstream = %up, "dns: skipping resolv.conf entry that is this endpoint");
            }
            !me
        })
        .collect();
    Choice {
        only_self: named > 0 && list.is_empty(),
        list,
        source: Some(source),
    }
}

/// Whether an upstream `up` is this endpoint itself (a resolv.conf written for clients of the
/// namespace usually names it): forwarding to ourselves would loop.
pub(super) fn is_self(up: SocketAddr, listen: &[IpAddr], port: u16) -> bool {
    if up.port() != port {
        return false;
    }
    listen.iter().any(|l| {
        *l == up.ip()
            || (l.is_unspecified() && l.is_ipv4() == up.is_ipv4() && up.ip().is_loopback())
    })
}

/// nsaux's own upstream list: one server a line, `IP`, `IP:PORT` or `[IPv6]:PORT`,
/// optionally after the word `nameserver` (so a resolv.conf's lines may be copied); `#` and
/// `;` start comments. Returns the servers and the lines that were not understood.
pub(super) fn parse_upstreams_file(text: &str) -> (Vec<SocketAddr>, Vec<usize>) {
    let (mut list, mut bad) = (Vec::new(), Vec::new());
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(mut first) = words.next() else {
            continue;
        };
        if first == "nameserver" {
            match words.next() {
                Some(w) => first = w,
                None => {
                    bad.push(n + 1);
                    continue;
                }
            }
        }
        match (UpstreamAddr::try_from(first.to_owned()), words.next()) {
            (Ok(a), None) => {
                if !list.contains(&a.0) {
                    list.push(a.0);
                }
            }
            _ => bad.push(n + 1),
        }
    }
    (list, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_entries_are_recognised() {
        let listen: Vec<IpAddr> = vec![[127, 0, 0, 53].into()];
        assert!(is_self("127.0.0.53:53".parse().expect("addr"), &listen, 53));
        assert!(!is_self("127.0.0.1:53".parse().expect("addr"), &listen, 53));
        assert!(!is_self(
            "127.0.0.53:5353".parse().expect("addr"),
            &listen,
            53
        ));
        let any: Vec<IpAddr> = vec![[0, 0, 0, 0].into()];
        assert!(is_self("127.0.0.1:53".parse().expect("addr"), &any, 53));
        assert!(!is_self("10.0.0.1:53".parse().expect("addr"), &any, 53));
    }

    #[test]
    fn upstream_file_lines() {
        let (list, bad) = parse_upstreams_file(
            "# mine\n192.0.2.1\nnameserver 192.0.2.2 ; resolv.conf style\n[2001:db8::1]:5353\n\
             192.0.2.1\nbogus\nnameserver\n192.0.2.3 extra\n",
        );
        let want: Vec<SocketAddr> = ["192.0.2.1:53", "192.0.2.2:53", "[2001:db8::1]:5353"]
            .iter()
            .map(|s| s.parse().expect("addr"))
            .collect();
        assert_eq!(list, want);
        assert_eq!(bad, vec![6, 7, 8]);
    }
}
