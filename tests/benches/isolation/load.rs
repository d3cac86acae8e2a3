//! The isolation bench's load: the floods into A, the probe of B, and the waits for servers.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};
use nsaux_tests::daemon::wait_for;
use nsaux_tests::netns::{in_netns_file, udp_exchange};
use nsaux_tests::rpc::{Cred, PMAP, call, pmap};

pub(crate) const WINDOW: u64 = 256;
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
pub(crate) const NTP: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 123);
pub(crate) const RPC: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 111);
pub(crate) const DNS: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 53)),
    53,
);

pub(crate) fn ntp_request(tx: u64) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x23; // v4, mode 3
    p[40..48].copy_from_slice(&tx.to_be_bytes());
    p
}

pub(crate) fn dns_query(id: u64, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&(id as u16).to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

pub(crate) fn getport(xid: u64) -> Vec<u8> {
    call(xid as u32, PMAP, 2, 3, Cred::None, &pmap(PMAP, 2, 17, 0))
}

/// A flood into A: what it sends, where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flood {
    Ntp,
    DnsHit,
    DnsMiss,
    /// Cache misses at most [`miss_rate`] a second (still up to `WINDOW` in flight), the same
    /// for every server: the closed-loop `DnsMiss` asks a faster server more often, and each
    /// miss also costs its origin's CPU on the same machine.
    DnsMissPaced,
    Getport,
    Junk,
    /// Junk at [`junk_rate`] datagrams a second, the same for every server: the open-loop
    /// `Junk` sends as fast as its thread gets CPU, so a server that spends less of the
    /// shared CPU on junk is sent more of it.
    JunkPaced,
}

impl Flood {
    /// Whether this flood sends junk (A's column then counts datagrams sent, not answers).
    pub(crate) fn is_junk(self) -> bool {
        matches!(self, Self::Junk | Self::JunkPaced)
    }

    pub(crate) fn target(self) -> SocketAddr {
        match self {
            Self::Ntp => NTP,
            Self::DnsHit | Self::DnsMiss | Self::DnsMissPaced => DNS,
            Self::Getport => RPC,
            Self::Junk | Self::JunkPaced => NTP,
        }
    }

    pub(crate) fn request(self, n: u64, salt: u64) -> Vec<u8> {
        match self {
            Self::Ntp => ntp_request(n),
            Self::DnsHit => dns_query(n, "www.benchzone"),
            Self::DnsMiss | Self::DnsMissPaced => dns_query(n, &format!("m{salt}x{n}.benchzone")),
            Self::Getport => getport(n),
            Self::Junk | Self::JunkPaced => vec![0xff; 8],
        }
    }
}

/// A client socket with a receive buffer large enough for a full window of answers.
pub(crate) fn client_socket(to: SocketAddr) -> anyhow::Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    setsockopt(&s, sockopt::RcvBufForce, &(4 << 20))?;
    s.connect(to)?;
    Ok(s)
}

/// Closed loop (or, for junk, open loop) from inside the current namespace until `stop`;
/// returns answers (junk: datagrams sent).
pub(crate) fn flood(kind: Flood, stop: &AtomicBool) -> anyhow::Result<u64> {
    // Names never asked before in this run: the DNS miss flood misses every time.
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    if kind.is_junk() {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.set_nonblocking(true)?;
        let mut sent = 0u64;
        let targets = [NTP, DNS, RPC];
        let rate = (kind == Flood::JunkPaced).then(junk_rate);
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let burst = match rate {
                None => 256,
                Some(r) => {
                    let due = due_by(started, r);
                    if due <= sent {
                        std::thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                    (due - sent).min(256)
                }
            };
            for _ in 0..burst {
                if s.send_to(&[0xff; 8], targets[(sent % 3) as usize]).is_ok() {
                    sent += 1;
                }
            }
        }
        return Ok(sent);
    }
    let s = client_socket(kind.target())?;
    let rate = (kind == Flood::DnsMissPaced).then(miss_rate);
    // Paced: wake often enough to keep the rate; a quiet spell is not a loss.
    s.set_read_timeout(Some(Duration::from_millis(if rate.is_some() {
        1
    } else {
        20
    })))?;
    let (mut n, mut answers, mut in_flight) = (0u64, 0u64, 0u64);
    let mut buf = [0u8; 2048];
    let started = Instant::now();
    let mut last_answer = started;
    while !stop.load(Ordering::Relaxed) {
        let allowed = rate.map_or(u64::MAX, |r| due_by(started, r));
        while in_flight < WINDOW && n < allowed {
            match s.send(&kind.request(n, salt)) {
                Ok(_) => {
                    n += 1;
                    in_flight += 1;
                }
                Err(_) => break,
            }
        }
        match s.recv(&mut buf) {
            Ok(_) => {
                answers += 1;
                in_flight = in_flight.saturating_sub(1);
                last_answer = Instant::now();
            }
            Err(_) if rate.is_some() && last_answer.elapsed() < PROBE_TIMEOUT => {}
            // Lost somewhere (a queue overflowed): start a fresh window.
            Err(_) => {
                in_flight = 0;
                last_answer = Instant::now();
            }
        }
    }
    Ok(answers)
}

/// How many requests a flood paced at `rate` a second from `started` has been due to send.
fn due_by(started: Instant, rate: f64) -> u64 {
    (started.elapsed().as_secs_f64() * rate) as u64
}

/// B's figures for one scenario.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    pub(crate) rtts: Vec<Duration>,
    pub(crate) lost: u64,
    pub(crate) elapsed: Duration,
}

/// Datagrams a second of [`Flood::JunkPaced`] (`NSAUX_JUNK_RATE`, default 60,000: below what
/// the open-loop junk flood reached into any server on a quiet 2-CPU machine).
pub(crate) fn junk_rate() -> f64 {
    env_rate("NSAUX_JUNK_RATE", 60_000.0)
}

/// Queries a second of [`Flood::DnsMissPaced`] (`NSAUX_MISS_RATE`, default 15,000: below what
/// the stock daemons' one-thread unbound answered under the closed-loop miss flood here).
pub(crate) fn miss_rate() -> f64 {
    env_rate("NSAUX_MISS_RATE", 15_000.0)
}

/// B's requests a second in the paced-probe scenario (`NSAUX_PROBE_RATE`, default 1,000):
/// the same demand from B for every server, so A's answers/s compare at equal work for B.
pub(crate) fn probe_rate() -> f64 {
    env_rate("NSAUX_PROBE_RATE", 1_000.0)
}

fn env_rate(var: &str, default: f64) -> f64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|r| r.is_finite() && *r >= 1.0)
        .unwrap_or(default)
}

/// One NTP request in flight from inside the current namespace for `time`; with `rate`, the
/// n-th request leaves no earlier than n/rate seconds after the start (a late answer is not
/// made up for by a burst: still one in flight).
pub(crate) fn probe(time: Duration, rate: Option<f64>) -> anyhow::Result<Probe> {
    let s = client_socket(NTP)?;
    s.set_read_timeout(Some(PROBE_TIMEOUT))?;
    let mut p = Probe::default();
    let mut buf = [0u8; 512];
    let start = Instant::now();
    let mut tx = 1u64;
    while start.elapsed() < time {
        if let Some(ahead) = rate
            .map(|r| Duration::from_secs_f64((tx - 1) as f64 / r))
            .and_then(|due| due.checked_sub(start.elapsed()))
        {
            std::thread::sleep(ahead);
        }
        tx += 1;
        let t0 = Instant::now();
        s.send(&ntp_request(tx))?;
        loop {
            match s.recv(&mut buf) {
                // The answer to this request (its origin stamp is our transmit stamp).
                Ok(48) if buf[24..32] == tx.to_be_bytes() => {
                    p.rtts.push(t0.elapsed());
                    break;
                }
                Ok(_) if t0.elapsed() < PROBE_TIMEOUT => {}
                _ => {
                    p.lost += 1;
                    break;
                }
            }
        }
    }
    p.elapsed = start.elapsed();
    Ok(p)
}

pub(crate) fn wait_ntp(ns: &Path, what: &str) -> anyhow::Result<()> {
    let ns = ns.to_owned();
    wait_for(what, Duration::from_secs(10), || {
        in_netns_file(&ns, || {
            udp_exchange(NTP, &ntp_request(1), Duration::from_millis(200))
        })
        .ok()
        .and_then(Result::ok)
        .flatten()
    })
    .map(|_| ())
}

/// Waits until DNS in `ns` answers `www.benchzone` (forwarded to the origin).
pub(crate) fn wait_dns(ns: &Path, what: &str) -> anyhow::Result<()> {
    nsaux_tests::closed_loop::wait_dns_answers(ns, DNS, "www.benchzone", what)
}
