//! Parser for the `/etc/hosts` format (hosts(5)).
//!
//! Why here and not in the daemon: the daemon only reads the namespace's hosts file as text;
//! what the text means for DNS answers is protocol logic and is tested without files.

use std::net::IpAddr;

use crate::error::Error;

/// One usable hosts line: an address and its names, canonical name first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsEntry {
    /// The address.
    pub addr: IpAddr,
    /// Canonical name, then aliases, as written.
    pub names: Vec<String>,
}

/// Parses hosts text. Bad lines are skipped and reported, so one typo never hides the rest.
pub fn parse_hosts(text: &str) -> (Vec<HostsEntry>, Vec<Error>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(addr) = fields.next() else {
            continue;
        };
        // Link-local IPv6 may carry a zone ("fe80::1%eth0"); DNS has no use for it.
        let addr = addr.split('%').next().unwrap_or(addr);
        let Ok(addr) = addr.parse::<IpAddr>() else {
            errors.push(Error::HostsLine {
                line: n + 1,
                reason: "not an IP address",
            });
            continue;
        };
        let names: Vec<String> = fields.map(str::to_owned).collect();
        if names.is_empty() {
            errors.push(Error::HostsLine {
                line: n + 1,
                reason: "address without names",
            });
            continue;
        }
        entries.push(HostsEntry { addr, names });
    }
    (entries, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_default() {
        let text = "127.0.0.1\tlocalhost\n127.0.1.1\tvs1.example.org vs1\n\n# The following lines are desirable for IPv6 capable hosts\n::1     localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\nfe80::1%eth0 ll # comment\nbogus name\n10.0.0.1\n";
        let (entries, errors) = parse_hosts(text);
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[1].names, vec!["vs1.example.org", "vs1"]);
        assert_eq!(entries[4].addr, "fe80::1".parse::<IpAddr>().expect("addr"));
        assert_eq!(errors.len(), 2);
        assert!(matches!(errors[0], Error::HostsLine { line: 8, .. }));
    }
}
