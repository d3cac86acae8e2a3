//! The per-namespace files of the `ip netns` convention: `ETC/NAME/resolv.conf` (upstreams)
//! and `ETC/NAME/hosts` (local records), re-read when they change.
//!
//! Why a stamp check instead of inotify: the check runs only on queries that need an upstream
//! (at most once a second) or when no upstream is known, so an idle namespace costs no CPU
//! and no inotify watch, and a file created after the namespace is still noticed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime: i64,
    mtime_ns: i64,
    len: u64,
    ino: u64,
}

/// A file whose content is re-read when its stamp changes.
#[derive(Debug)]
pub(super) struct Watched {
    /// The file.
    pub(super) path: PathBuf,
    /// The stamp last read (`None`: absent or unreadable).
    stamp: Option<Stamp>,
    /// Whether it was ever checked.
    checked: bool,
}

impl Watched {
    /// A file not yet read.
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            stamp: None,
            checked: false,
        }
    }

    /// `Some(content)` when the file changed since the last call (`Some(None)`: it went away
    /// or cannot be read); `None` when unchanged.
    pub(super) fn changed(&mut self) -> Option<Option<String>> {
        let stamp = std::fs::metadata(&self.path).ok().map(|m| Stamp {
            mtime: m.mtime(),
            mtime_ns: m.mtime_nsec(),
            len: m.len(),
            ino: m.ino(),
        });
        if self.checked && stamp == self.stamp {
            return None;
        }
        self.checked = true;
        self.stamp = stamp;
        if stamp.is_none() {
            return Some(None);
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Some(Some(text)),
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot read");
                }
                self.stamp = None;
                Some(None)
            }
        }
    }
}

/// The `nameserver` entries of a resolv.conf, in order (port 53; a `%scope` suffix is
/// dropped, since the namespace's routing picks the interface).
pub(super) fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then_some(())?;
            let addr = words.next()?;
            let addr = addr.split('%').next().unwrap_or(addr);
            addr.parse().ok()
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_in_order() {
        let t = "# comment\nsearch lan\nnameserver 10.0.0.1 # first\n\
                 nameserver fe80::1%eth0\nnameserver bogus\n  nameserver\t10.0.0.2\n";
        let v = parse_resolv_conf(t);
        assert_eq!(
            v,
            vec![
                "10.0.0.1".parse::<IpAddr>().ok(),
                "fe80::1".parse().ok(),
                "10.0.0.2".parse().ok()
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
        );
    }

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
}
