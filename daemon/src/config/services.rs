//! Per-service sections. Each is overridable per namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use nsaux_ntpshim::{IpNet, RefId};
use serde::{Deserialize, Deserializer, de};

/// All service sections, as seen by one namespace.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServicesConfig {
    /// The built-in diagnostic responder.
    pub(crate) ident: IdentConfig,
    /// The portmapper (rpcbind replacement).
    pub(crate) rpcbind: RpcbindConfig,
    /// The NTP server.
    pub(crate) ntp: NtpConfig,
    /// The per-namespace DNS resolver endpoint.
    pub(crate) dns: super::dns::DnsConfig,
}

/// The `ident` service answers every UDP datagram or TCP connection with one line naming the
/// namespace that answered. It exists to prove the plumbing (and for operators to check which
/// namespace a given address reaches); it is off by default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct IdentConfig {
    /// Serve it at all.
    pub(crate) enabled: bool,
    /// Port for UDP and TCP.
    pub(crate) port: u16,
    /// Addresses to bind in each namespace (wildcards answer from the address queried).
    pub(crate) addresses: Vec<IpAddr>,
    /// Listen on UDP.
    pub(crate) udp: bool,
    /// Listen on TCP.
    pub(crate) tcp: bool,
}

impl Default for IdentConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            port: 7867,
            addresses: vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ],
            udp: true,
            tcp: true,
        }
    }
}

/// The portmapper: program 100000 v2/v3/v4 on UDP/TCP port 111 and the abstract AF_LOCAL socket
/// in every namespace, plus the path socket in the daemon's own mount namespace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RpcbindConfig {
    /// Serve it at all.
    pub(crate) enabled: bool,
    /// Port for UDP and TCP.
    pub(crate) port: u16,
    /// Addresses to bind in each namespace (wildcards answer from the address queried).
    pub(crate) addresses: Vec<IpAddr>,
    /// Listen on UDP.
    pub(crate) udp: bool,
    /// Listen on TCP.
    pub(crate) tcp: bool,
    /// Abstract AF_LOCAL name created inside each namespace (what the kernel ≥ 6.5 and
    /// libtirpc ≥ 1.3.5 try first); "" disables it.
    pub(crate) local_abstract: String,
    /// Path socket in the daemon's own mount namespace; each connection is served by the
    /// caller's network namespace. Daemon-wide: only the base `[rpcbind]` value counts (a
    /// per-namespace override is ignored). "" disables it; `nsauxd --rpcbind-socket` wins.
    pub(crate) local_path: String,
    /// Forward CALLIT/BCAST/INDIRECT inside the same namespace (off, as in rpcbind ≥ 1.2.5).
    pub(crate) remote_calls: bool,
    /// Most registrations in one namespace (self registrations included).
    pub(crate) max_registrations: usize,
    /// Most connections from remote (non-loopback TCP) callers open at once in one namespace;
    /// at the budget the longest-idle remote connection is closed to admit a new one.
    #[serde(deserialize_with = "super::slots::de_budget")]
    pub(crate) max_connections: usize,
    /// Seconds a TCP/AF_LOCAL connection may go without completing a record before it is
    /// closed (CVE-2021-46828; bytes that do not complete a record do not count).
    #[serde(deserialize_with = "super::slots::de_idle_secs")]
    pub(crate) idle_timeout_secs: u64,
    /// Most connections from local callers (AF_LOCAL, loopback TCP) open at once in one
    /// namespace, apart from the remote budget so remote callers can never crowd them out.
    #[serde(deserialize_with = "super::slots::de_budget")]
    pub(crate) max_local_connections: usize,
    /// Most connections one peer (source IP, or uid over AF_LOCAL) holds at once; its own
    /// longest-idle one is closed beyond that.
    #[serde(deserialize_with = "super::slots::de_budget")]
    pub(crate) max_connections_per_peer: usize,
    /// Seconds a record may take from its first byte to its last (a trickle cannot hold a
    /// connection open).
    #[serde(deserialize_with = "super::slots::de_record_secs")]
    pub(crate) record_timeout_secs: u64,
    /// Refuse DUMP and GETSTAT over UDP from non-loopback callers (reflection amplifiers).
    pub(crate) udp_dump_loopback_only: bool,
    /// Accept SET/UNSET from 127.0.0.1/::1 (the kernel and older libtirpc register that way).
    pub(crate) loopback_may_register: bool,
    /// Probe registered UDP and TCP services with an RPC NULL call and drop those that stop
    /// answering.
    pub(crate) prune: bool,
    /// Seconds between liveness rounds when `prune` is on.
    pub(crate) prune_interval_secs: u64,
    /// Missed probes in a row after which a registration is removed.
    pub(crate) prune_after_misses: u32,
    /// Seconds after start before the journals of namespaces that did not come back (they went
    /// while the daemon was down) are deleted. Every namespace present at start must have been
    /// found by then, or its journal goes too: the default leaves a slow start plenty of room.
    /// Daemon-wide and read at start: only the base `[rpcbind]` value counts.
    pub(crate) journal_sweep_delay_secs: u64,
    /// Most bytes the registrations of one namespace may take (see `nsaux_rpcbind::entry_bytes`);
    /// a SET beyond it returns FALSE.
    #[serde(deserialize_with = "de_budget")]
    pub(crate) max_registration_bytes: usize,
    /// Most GETSTAT lookup (and remote-call) rows kept per portmapper version; new rows beyond
    /// it are not recorded.
    pub(crate) max_stat_rows: usize,
    /// Largest a namespace's journal file may grow. The file is compacted (rewritten from the
    /// live table) when it passes twice its live size plus 64 KiB; a SET that would not fit
    /// even after compaction returns FALSE.
    #[serde(deserialize_with = "de_budget")]
    pub(crate) journal_max_bytes: usize,
}

/// Smallest byte budget accepted for a table or journal: below it not even one ordinary
/// registration (about 130 bytes, 200 journaled) plus room to compact would fit, which is a
/// typo rather than a policy.
const MIN_BUDGET: usize = 4096;

fn de_budget<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n < MIN_BUDGET {
        return Err(de::Error::custom(format!(
            "{n} bytes is below the minimum of {MIN_BUDGET}"
        )));
    }
    Ok(n)
}

impl Default for RpcbindConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            port: 111,
            addresses: vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ],
            udp: true,
            tcp: true,
            local_abstract: "/run/rpcbind.sock".into(),
            local_path: "/run/rpcbind.sock".into(),
            remote_calls: false,
            max_registrations: 1024,
            max_connections: 64,
            idle_timeout_secs: 30,
            max_local_connections: 64,
            max_connections_per_peer: 16,
            record_timeout_secs: 10,
            udp_dump_loopback_only: true,
            loopback_may_register: true,
            prune: false,
            prune_interval_secs: 60,
            prune_after_misses: 3,
            journal_sweep_delay_secs: 60,
            max_registration_bytes: nsaux_rpcbind::Config::default().max_registration_bytes,
            max_stat_rows: nsaux_rpcbind::Config::default().max_stat_rows,
            journal_max_bytes: 4 << 20,
        }
    }
}

/// The `[ntp]` section: an NTP server on every namespace's own addresses, serving the host's
/// clock (CLOCK_REALTIME is shared by all namespaces, so one daemon can serve them truthfully).
///
/// On by default: it is a product service. The wire protocol lives in `nsaux-ntpshim`; this is
/// only what an operator sets.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct NtpConfig {
    /// Serve NTP at all.
    pub(crate) enabled: bool,
    /// UDP port.
    pub(crate) port: u16,
    /// Addresses to bind in each namespace (wildcards answer from the address queried).
    pub(crate) addresses: Vec<IpAddr>,
    /// Client networks allowed (CIDR); empty means everyone not denied.
    #[serde(deserialize_with = "de_nets")]
    pub(crate) allow: Vec<IpNet>,
    /// Client networks refused (CIDR); the most specific entry wins, deny on ties.
    #[serde(deserialize_with = "de_nets")]
    pub(crate) deny: Vec<IpNet>,
    /// While the host clock is unsynchronised, answer with leap 3 / stratum 16 (`true`, as
    /// chrony does, so clients can see why) or stay silent so they fail over (`false`).
    pub(crate) answer_unsynchronised: bool,
    /// Answer symmetric active (mode 1) requests with mode 2. Off: few need it.
    pub(crate) symmetric: bool,
    /// Serve the host clock as synchronised at this stratum (1..=15) whenever it is not known
    /// to be synchronised, like chrony's `local stratum N`: for isolated networks and hosts
    /// whose kernel never reports sync.
    #[serde(deserialize_with = "de_opt_stratum")]
    pub(crate) local_stratum: Option<u8>,
    /// Stratum advertised while the kernel says the clock is synchronised, unless `reference`
    /// supplies one (1..=15). The kernel does not know the stratum, so someone must say it.
    #[serde(deserialize_with = "de_stratum")]
    pub(crate) stratum: u8,
    /// Reference ID advertised with `stratum`: an IPv4 address ("192.0.2.1") or a code of at
    /// most four ASCII characters ("GPS").
    #[serde(deserialize_with = "de_refid")]
    pub(crate) refid: RefId,
    /// Copy stratum, reference ID, root delay and dispersion from the NTP daemon that disciplines
    /// the host clock, queried at this address from the daemon's own namespace (as rsntp does
    /// with chronyd). Queried only when a request arrives and the copy is older than
    /// `reference_max_age`, so an idle daemon sends nothing. Unreachable: `stratum`/`refid` serve.
    /// It must not be nsauxd itself: when the host namespace is served too, run the local daemon
    /// on another port (rsntp's convention is chronyd on 11123) or it would copy its own answers.
    pub(crate) reference: Option<SocketAddr>,
    /// Seconds a copied reference is used before it is refreshed (asynchronously; the stale copy
    /// serves meanwhile).
    pub(crate) reference_max_age: u64,
    /// Per-client rate limiting.
    pub(crate) rate_limit: NtpRateLimitConfig,
    /// Answer chrony clients that ask for interleaved mode (`server ... xleave`) with the
    /// kernel's transmit timestamp of their previous reply, as chrony's server does for any
    /// client. The table of earlier exchanges holds at most `rate_limit.max_clients` of them
    /// (chrony sizes both by `clientloglimit`). Off: basic mode only.
    pub(crate) interleaved: bool,
}

impl Default for NtpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            port: 123,
            addresses: vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ],
            allow: Vec::new(),
            deny: Vec::new(),
            answer_unsynchronised: true,
            symmetric: false,
            local_stratum: None,
            stratum: 3,
            refid: RefId::UNSYNC,
            reference: None,
            reference_max_age: 64,
            rate_limit: NtpRateLimitConfig::default(),
            interleaved: true,
        }
    }
}

/// `[ntp.rate_limit]`: chrony's `ratelimit` scheme (token bucket per client with a leak so a
/// spoofed victim keeps getting answers), plus RATE kiss-o'-death. Defaults are chrony's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct NtpRateLimitConfig {
    /// Limit at all (off for benchmarks or trusted networks only).
    pub(crate) enabled: bool,
    /// Log2 of the average seconds between answers to one client (-4..=12).
    pub(crate) interval: i8,
    /// Answers allowed back to back before limiting starts.
    pub(crate) burst: u8,
    /// One over-limit request in 2^leak is still answered normally (1..=4).
    pub(crate) leak: u8,
    /// Send RATE kiss-o'-death replies to some over-limit requests.
    pub(crate) kiss: bool,
    /// One non-leaked over-limit request in 2^kiss_log2 gets the kiss (0..=4).
    pub(crate) kiss_log2: u8,
    /// IPv6 clients share a bucket per prefix of this length (32..=128).
    pub(crate) ipv6_prefix: u8,
    /// Most clients tracked per namespace (memory bound: 48 bytes each).
    pub(crate) max_clients: usize,
}

impl Default for NtpRateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: 3,
            burst: 8,
            leak: 2,
            kiss: true,
            kiss_log2: 2,
            ipv6_prefix: 128,
            max_clients: 4096,
        }
    }
}

fn de_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.parse().map_err(de::Error::custom))
        .collect()
}

fn check_stratum<E: de::Error>(n: u8) -> Result<u8, E> {
    if (1..=15).contains(&n) {
        Ok(n)
    } else {
        Err(E::custom(format!("stratum {n} out of range 1..=15")))
    }
}

fn de_stratum<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    check_stratum(u8::deserialize(d)?)
}

fn de_opt_stratum<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    Ok(Some(check_stratum(u8::deserialize(d)?)?))
}

/// Parses a reference ID: dotted IPv4, or up to four ASCII characters.
pub(crate) fn parse_refid(s: &str) -> Result<RefId, String> {
    if let Ok(ip) = s.parse::<Ipv4Addr>() {
        return Ok(RefId(ip.octets()));
    }
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "refid {s:?}: want an IPv4 address or 1..=4 printable ASCII characters"
        ));
    }
    Ok(RefId::from_ascii(s))
}

fn de_refid<'de, D: Deserializer<'de>>(d: D) -> Result<RefId, D::Error> {
    parse_refid(&String::deserialize(d)?).map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn ntp_is_on_by_default_on_port_123() {
        let c = Config::from_toml("", None).expect("valid");
        let n = &c.for_namespace("x").ntp;
        assert!(n.enabled);
        assert_eq!(n.port, 123);
        assert_eq!(n.addresses.len(), 2);
        assert!(n.rate_limit.enabled);
        assert_eq!(n.reference, None);
    }

    #[test]
    fn ntp_fields_are_validated_with_their_path() {
        let c = Config::from_toml(
            "[ntp]\nallow = [\"10.0.0.0/8\"]\ndeny = [\"10.1.0.0/16\"]\nrefid = \"GPS\"\n\
             local_stratum = 10\nreference = \"127.0.0.1:123\"\n",
            None,
        )
        .expect("valid");
        let n = &c.for_namespace("x").ntp;
        assert_eq!(n.allow.len(), 1);
        assert_eq!(n.refid, RefId(*b"GPS\0"));
        assert_eq!(n.local_stratum, Some(10));
        for (bad, field) in [
            ("[ntp]\nstratum = 0\n", "ntp.stratum"),
            ("[ntp]\nlocal_stratum = 16\n", "ntp.local_stratum"),
            ("[ntp]\nrefid = \"TOOLONG\"\n", "ntp.refid"),
            ("[ntp]\nallow = [\"10.0.0.0/33\"]\n", "ntp.allow"),
            ("[ntp]\nreference = \"localhost\"\n", "ntp.reference"),
            ("[ntp]\nrate_limit = { bogus = 1 }\n", "ntp.rate_limit"),
            (
                "[rpcbind]\njournal_max_bytes = 100\n",
                "rpcbind.journal_max_bytes",
            ),
            (
                "[rpcbind]\nmax_registration_bytes = 0\n",
                "rpcbind.max_registration_bytes",
            ),
            ("[limits]\nmemory_max_bytes = -1\n", "memory_max_bytes"),
            ("[limits]\nbogus = 1\n", "bogus"),
        ] {
            let e = Config::from_toml(bad, None).expect_err(bad);
            assert!(e.to_string().contains(field), "{bad}: {e}");
        }
        assert_eq!(parse_refid("192.0.2.1"), Ok(RefId([192, 0, 2, 1])));
    }
}
