//! The plain closed-loop UDP flood of the integration tests (fairness, multiflood, lane): one
//! std socket, a window of requests in flight, one `send` and one `recv` per request.
//!
//! Unlike [`crate::flood`] (GSO bursts from loopback sockets, for benches that must leave the
//! machine to the server) it binds the unspecified address, so it floods a namespace from a
//! remote host behind a veth; and it counts answers per time slot, so a test can see whether a
//! namespace starved in any part of the flood. Bounded in time and in requests, and stops early
//! when told to.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long the flood waits for an answer before it counts its window as lost and refills it.
const STALL: Duration = Duration::from_millis(20);

/// One closed-loop flood from the current namespace to one server.
#[derive(Debug, Clone, Copy)]
pub struct ClosedLoop<'a> {
    /// The server.
    pub to: SocketAddr,
    /// Requests in flight.
    pub window: u64,
    /// How long to run at most.
    pub time: Duration,
    /// Requests after which it stops even if `time` has not passed.
    pub max_requests: u64,
    /// Stops the flood early when set (by another thread).
    pub stop: &'a AtomicBool,
    /// Counts the answers per slot of this length ([`Answers::slots`]); `None`: one count.
    pub slot: Option<Duration>,
}

/// What a closed-loop flood got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers {
    /// Requests sent.
    pub sent: u64,
    /// Answers received.
    pub answers: u64,
    /// Answers per [`ClosedLoop::slot`] from the start, the last (partial) slot left out
    /// unless it is the only one (`[0]` when nothing was answered); empty without a slot
    /// length.
    pub slots: Vec<u64>,
}

impl ClosedLoop<'_> {
    /// Floods until stopped, the time is up or `max_requests` are sent; `request` makes
    /// request number `n`.
    pub fn run(&self, mut request: impl FnMut(u64) -> Vec<u8>) -> io::Result<Answers> {
        let start = Instant::now();
        let s = UdpSocket::bind(unspecified(self.to))?;
        s.connect(self.to)?;
        s.set_read_timeout(Some(STALL))?;
        let mut got = Answers {
            slots: self.slot.map(|_| vec![0]).unwrap_or_default(),
            ..Answers::default()
        };
        let mut in_flight = 0u64;
        let mut buf = [0u8; 2048];
        while !over(self.stop, start, self.time, got.sent, self.max_requests) {
            while in_flight < self.window {
                if s.send(&request(got.sent)).is_err() {
                    break;
                }
                got.sent += 1;
                in_flight += 1;
            }
            match s.recv(&mut buf) {
                Ok(_) => {
                    got.answers += 1;
                    in_flight = in_flight.saturating_sub(1);
                    if let Some(slot) = self.slot {
                        count_in_slot(&mut got.slots, start.elapsed(), slot);
                    }
                }
                Err(_) => in_flight = 0,
            }
        }
        if got.slots.len() > 1 {
            got.slots.pop();
        }
        Ok(got)
    }
}

/// An open-loop flood of undecodable 8-byte datagrams from the current namespace, to each of
/// `targets` in turn, until stopped, `time` is up or `max` are sent; returns how many were.
pub fn junk(
    targets: &[SocketAddr],
    stop: &AtomicBool,
    time: Duration,
    max: u64,
) -> io::Result<u64> {
    let Some(&first) = targets.first() else {
        return Ok(0);
    };
    let start = Instant::now();
    let s = UdpSocket::bind(unspecified(first))?;
    s.set_nonblocking(true)?;
    let mut n = 0u64;
    while !over(stop, start, time, n, max) {
        let to = targets[usize::try_from(n).unwrap_or(0) % targets.len()];
        let _ = s.send_to(&[0xff; 8], to);
        n += 1;
    }
    Ok(n)
}

/// An NTP client request (mode 3, version 4) whose transmit timestamp is `tx`, so every
/// request of a flood is distinct.
pub fn ntp_request(tx: u64) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x23;
    p[40..48].copy_from_slice(&tx.to_be_bytes());
    p
}

/// A recursive DNS query (RD set) with id `id` for the A record of `name` (dotted, without
/// the final dot).
pub fn dns_a_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).unwrap_or(u8::MAX));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn over(stop: &AtomicBool, start: Instant, time: Duration, sent: u64, max: u64) -> bool {
    stop.load(Ordering::Relaxed) || start.elapsed() >= time || sent >= max
}

fn count_in_slot(slots: &mut Vec<u64>, at: Duration, slot: Duration) {
    let i = usize::try_from(at.as_nanos() / slot.as_nanos().max(1)).unwrap_or(usize::MAX - 1);
    if slots.len() <= i {
        slots.resize(i + 1, 0);
    }
    slots[i] += 1;
}

fn unspecified(to: SocketAddr) -> SocketAddr {
    if to.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

/// Waits up to 10 s until NTP at `to`, asked from inside the namespace at `path`, answers one
/// request: a namespace is served a moment after it appears, and a flood or a probe started
/// before that would count the start-up as losses.
pub fn wait_ntp_answers(path: &std::path::Path, to: SocketAddr, what: &str) -> anyhow::Result<()> {
    let path = path.to_path_buf();
    crate::daemon::wait_for(what, Duration::from_secs(10), || {
        let path = path.clone();
        crate::netns::in_netns_file(&path, move || {
            crate::netns::udp_exchange(to, &ntp_request(1), Duration::from_millis(200))
        })
        .ok()
        .and_then(Result::ok)
        .flatten()
    })
    .map(drop)
}

/// Waits up to 10 s until DNS at `to`, asked from inside the namespace at `path` for the A
/// record of `name`, answers with at least one record: a forwarded name's first answer waits
/// for its upstream, and a flood or a probe started before that would count start-up as losses.
pub fn wait_dns_answers(
    path: &std::path::Path,
    to: SocketAddr,
    name: &str,
    what: &str,
) -> anyhow::Result<()> {
    let (path, query) = (path.to_path_buf(), dns_a_query(7, name));
    crate::daemon::wait_for(what, Duration::from_secs(10), || {
        let (path, query) = (path.clone(), query.clone());
        crate::netns::in_netns_file(&path, move || {
            crate::netns::udp_exchange(to, &query, Duration::from_millis(500))
        })
        .ok()
        .and_then(Result::ok)
        .flatten()
        .filter(|(b, _)| b.len() > 12 && u16::from_be_bytes([b[6], b[7]]) >= 1)
    })
    .map(drop)
}

/// The configuration the flood tests (`fairness`, `multiflood`) run: NTP without rate limiting
/// (a flood must be answered, not shed by the limiter), DNS also on [`FLOODED_ADDR`] with a
/// local record `probe.lan` to ask for.
pub const FLOODED_CONFIG: &str = "[ntp]\nstratum = 10\nlocal_stratum = 10\nrate_limit = { enabled = false }\n\
    [dns]\naddresses = [\"127.0.0.53\", \"10.0.0.5\"]\nlocal_domains = [\"lan\"]\n\
    records = [{ name = \"probe.lan\", addr = \"10.9.9.9\" }]\n";

/// The flooded namespace's address on its veth in those tests.
pub const FLOODED_ADDR: [u8; 4] = [10, 0, 0, 5];

/// Request `n` of a closed-loop flood to `port` of the daemon: NTP (123), a DNS query for
/// `probe.lan` (53), otherwise a portmapper GETPORT (v2).
pub fn request_for(port: u16, n: u64) -> Vec<u8> {
    use crate::rpc::{Cred, PMAP, call, pmap};
    match port {
        123 => ntp_request(n),
        53 => dns_a_query(n as u16, "probe.lan"),
        _ => call(n as u32, PMAP, 2, 3, Cred::None, &pmap(PMAP, 2, 17, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dns_query_is_the_one_the_tests_wrote_by_hand() {
        let mut want = 7u16.to_be_bytes().to_vec();
        want.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(b"\x05probe\x03lan\x00\x00\x01\x00\x01");
        assert_eq!(dns_a_query(7, "probe.lan"), want);
    }

    #[test]
    fn answers_are_counted_per_slot_and_the_partial_last_slot_dropped() {
        let mut slots = vec![0];
        let slot = Duration::from_millis(500);
        for ms in [0, 10, 600, 1_400, 1_600] {
            count_in_slot(&mut slots, Duration::from_millis(ms), slot);
        }
        assert_eq!(slots, [2, 1, 1, 1]);
    }

    #[test]
    fn a_flood_against_a_loopback_echo_counts_its_answers() -> anyhow::Result<()> {
        let echo = UdpSocket::bind("127.0.0.1:0")?;
        echo.set_read_timeout(Some(Duration::from_millis(100)))?;
        let to = echo.local_addr()?;
        let stop = AtomicBool::new(false);
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut echoed = 0u64;
            while let Ok((n, from)) = echo.recv_from(&mut buf) {
                if echo.send_to(&buf[..n], from).is_ok() {
                    echoed += 1;
                }
            }
            echoed
        });
        let flood = ClosedLoop {
            to,
            window: 4,
            time: Duration::from_secs(5),
            max_requests: 200,
            stop: &stop,
            slot: Some(Duration::from_secs(10)),
        };
        let got = flood.run(ntp_request)?;
        let echoed = server
            .join()
            .map_err(|_| anyhow::anyhow!("echo panicked"))?;
        // The last refill may pass the bound by less than a window.
        assert!((200..204).contains(&got.sent), "{got:?}");
        assert!(
            got.answers > 0 && got.answers <= echoed,
            "{got:?}, {echoed}"
        );
        assert_eq!(got.slots, [got.answers]);
        Ok(())
    }
}
