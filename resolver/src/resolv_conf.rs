//! Parser for the resolv.conf format (resolv.conf(5)): the namespace's
//! `ETC/NAME/resolv.conf` names the upstream servers.
//!
//! Why here and not in the daemon: the daemon only reads the file as text; what the text
//! means (which lines count, comments, zone suffixes) is protocol logic and is tested
//! without files, next to the hosts parser.

use std::net::IpAddr;

use crate::error::Error;

/// What a resolv.conf says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` addresses in file order (port 53 is implied). A `%zone` suffix is
    /// dropped: inside a namespace its routing picks the interface.
    pub nameservers: Vec<IpAddr>,
    /// The search list: the last `search` or `domain` line wins, as in glibc.
    pub search: Vec<String>,
    /// `options` in file order.
    pub options: Vec<ResolvOption>,
}

/// One word of an `options` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvOption {
    /// `ndots:N`: dots a name needs before it is tried as absolute first.
    Ndots(u32),
    /// `timeout:N`: seconds a stub waits for one server.
    Timeout(u32),
    /// `attempts:N`: rounds a stub makes over the servers.
    Attempts(u32),
    /// Any other option (`rotate`, `edns0`, `trust-ad`, ...), as written.
    Other(String),
}

/// Parses resolv.conf text. Unusable lines are skipped and reported, so one typo never
/// hides the other servers. Comments start at `#` or `;`.
pub fn parse_resolv_conf(text: &str) -> (ResolvConf, Vec<Error>) {
    let mut conf = ResolvConf::default();
    let mut errors = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(keyword) = words.next() else {
            continue;
        };
        let skipped = |reason| Error::ResolvConfLine {
            line: n + 1,
            reason,
        };
        match keyword {
            "nameserver" => match words.next().map(nameserver) {
                Some(Some(addr)) => conf.nameservers.push(addr),
                Some(None) => errors.push(skipped("not an IP address")),
                None => errors.push(skipped("nameserver without an address")),
            },
            "search" | "domain" => conf.search = words.map(str::to_owned).collect(),
            "options" => {
                for word in words {
                    match option(word) {
                        Some(o) => conf.options.push(o),
                        None => errors.push(skipped("bad option value")),
                    }
                }
            }
            // Meaningful to a stub resolver only; nothing for a forwarder to use or report.
            "sortlist" => {}
            _ => errors.push(skipped("unknown keyword")),
        }
    }
    (conf, errors)
}

/// A `nameserver` address, its `%zone` suffix dropped.
fn nameserver(word: &str) -> Option<IpAddr> {
    word.split('%').next().unwrap_or(word).parse().ok()
}

/// One `options` word; `None` when a numeric option has no number.
fn option(word: &str) -> Option<ResolvOption> {
    let number = |v: &str| v.parse::<u32>().ok();
    Some(match word.split_once(':') {
        Some(("ndots", v)) => ResolvOption::Ndots(number(v)?),
        Some(("timeout", v)) => ResolvOption::Timeout(number(v)?),
        Some(("attempts", v)) => ResolvOption::Attempts(number(v)?),
        _ => ResolvOption::Other(word.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn nameservers_in_order() {
        let t = "# comment\nsearch lan\nnameserver 10.0.0.1 # first\n\
                 nameserver fe80::1%eth0\nnameserver bogus\n  nameserver\t10.0.0.2\n";
        let (conf, errors) = parse_resolv_conf(t);
        assert_eq!(
            conf.nameservers,
            vec![ip("10.0.0.1"), ip("fe80::1"), ip("10.0.0.2")]
        );
        assert_eq!(
            errors,
            vec![Error::ResolvConfLine {
                line: 5,
                reason: "not an IP address"
            }]
        );
    }

    #[test]
    fn ipv6_scope_is_dropped() {
        let (conf, errors) = parse_resolv_conf("nameserver fe80::53%veth0\nnameserver ::1\n");
        assert_eq!(conf.nameservers, vec![ip("fe80::53"), ip("::1")]);
        assert!(errors.is_empty());
    }

    #[test]
    fn comments_in_first_column_and_inline() {
        let t = "; old server\n;nameserver 10.9.9.9\n#nameserver 10.8.8.8\n\
                 nameserver 10.0.0.1;inline\nnameserver 10.0.0.2#inline\n\n   \n";
        let (conf, errors) = parse_resolv_conf(t);
        assert_eq!(conf.nameservers, vec![ip("10.0.0.1"), ip("10.0.0.2")]);
        assert!(errors.is_empty());
    }

    #[test]
    fn search_last_line_wins() {
        let (conf, _) = parse_resolv_conf("search a.example b.example\ndomain c.example\n");
        assert_eq!(conf.search, vec!["c.example"]);
        let (conf, _) = parse_resolv_conf("domain c.example\nsearch a.example b.example\n");
        assert_eq!(conf.search, vec!["a.example", "b.example"]);
    }

    #[test]
    fn options_are_typed() {
        let (conf, errors) =
            parse_resolv_conf("options ndots:2 timeout:1 rotate\noptions attempts:3 edns0\n");
        assert_eq!(
            conf.options,
            vec![
                ResolvOption::Ndots(2),
                ResolvOption::Timeout(1),
                ResolvOption::Other("rotate".into()),
                ResolvOption::Attempts(3),
                ResolvOption::Other("edns0".into()),
            ]
        );
        assert!(errors.is_empty());
        let (conf, errors) = parse_resolv_conf("options ndots:x trust-ad\n");
        assert_eq!(conf.options, vec![ResolvOption::Other("trust-ad".into())]);
        assert_eq!(
            errors,
            vec![Error::ResolvConfLine {
                line: 1,
                reason: "bad option value"
            }]
        );
    }

    #[test]
    fn garbage_lines_are_reported_not_fatal() {
        let t =
            "nameserver\nhello world\n\u{0}\u{1}binary\nsortlist 10.0.0.0/8\nnameserver 10.0.0.1\n";
        let (conf, errors) = parse_resolv_conf(t);
        assert_eq!(conf.nameservers, vec![ip("10.0.0.1")]);
        assert_eq!(
            errors,
            vec![
                Error::ResolvConfLine {
                    line: 1,
                    reason: "nameserver without an address"
                },
                Error::ResolvConfLine {
                    line: 2,
                    reason: "unknown keyword"
                },
                Error::ResolvConfLine {
                    line: 3,
                    reason: "unknown keyword"
                },
            ]
        );
    }
}
