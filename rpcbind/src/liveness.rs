//! Liveness of registered services: NULL-call probes, counting the rounds a service stays
//! silent, backing off, and deciding when its registration is dead.
//!
//! Why in the protocol crate: which probe a reply answers, how misses are counted, how often a
//! silent service is asked again and when it is given up are protocol rules that deserve unit
//! tests. The daemon only sends the probes a [`Liveness::round`] returns, hands back the replies,
//! and calls `round` once per interval; rounds are this module's clock, so no time is read here.
//!
//! rpcbind has no such check (its `is_bound` is compiled out): a service that dies without
//! UNSET stays registered until the next reboot. Here the daemon's `prune` option enables it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::registry::Entry;
use crate::rpc::{
    AUTH_NONE, ReplyBody, decode_reply, encode_call_header, is_rpc_reply, message_xid,
};
use crate::uaddr::{loopback_if_wildcard, parse_uaddr};

/// The slowest probing: a service that missed `k` probes in a row is asked every `2^k`-th
/// round, at most every `2^MAX_BACKOFF_SHIFT` = 8th.
const MAX_BACKOFF_SHIFT: u32 = 3;

/// Appends an RPC NULL call (procedure 0) to `prog` version `vers` with AUTH_NONE. Why public:
/// the daemon's probes and tests check that a service (ours or another) answers without
/// writing RPC bytes by hand. Over TCP/AF_LOCAL, wrap it with [`crate::frame_record`].
pub fn encode_null_call(xid: u32, prog: u32, vers: u32, out: &mut Vec<u8>) {
    encode_call_header(out, xid, prog, vers, 0, AUTH_NONE, &[]);
}

/// True if `reply` is a successful reply to the call with `xid` (a NULL reply has no results).
/// Why public: a strict check for tests and tools; liveness itself counts any reply (see
/// [`Probe::is_answered_by`]).
pub fn is_null_reply(xid: u32, reply: &[u8]) -> bool {
    matches!(decode_reply(reply), Some((x, ReplyBody::Success(_))) if x == xid)
}

/// How a probe reaches its service, chosen by the registration's netid. Why: the daemon sends
/// UDP probes from the namespace's port-111 socket and TCP probes over connections of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeTransport {
    /// One datagram; the reply comes back to the port-111 socket ([`Liveness::on_reply`]).
    Udp,
    /// One record on a new connection; the reply comes back on it ([`Probe::is_answered_by`]).
    Tcp,
}

/// Which probes the daemon can send this round. Why: a registration the daemon has no means to
/// probe is left alone, neither asked nor counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProbeSources {
    /// A UDP socket on IPv4 is at hand (registrations with netid `udp`).
    pub udp: bool,
    /// A UDP socket on IPv6 is at hand (`udp6`).
    pub udp6: bool,
    /// TCP connections can be made (`tcp`, `tcp6`).
    pub tcp: bool,
}

impl ProbeSources {
    /// Whether a registration with `netid` can be probed.
    fn cover(self, netid: &str) -> bool {
        match netid {
            "udp" => self.udp,
            "udp6" => self.udp6,
            "tcp" | "tcp6" => self.tcp,
            _ => false,
        }
    }
}

/// One probe for the daemon to send. Why a value: the daemon carries it to a socket and back
/// without knowing RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The call's xid: the probe is outstanding under it until answered or withdrawn.
    pub xid: u32,
    /// Datagram or connection.
    pub transport: ProbeTransport,
    /// The registered address, a wildcard host replaced by loopback (a service registered as
    /// `0.0.0.0.p.p` listens on every address of the namespace).
    pub target: SocketAddr,
    /// The RPC NULL call, without record marking.
    pub call: Vec<u8>,
}

impl Probe {
    /// True when `reply` (the head of it will do: xid and message type) is an RPC reply to this
    /// probe. Any reply counts, errors included: a service that answers at all is alive.
    pub fn is_answered_by(&self, reply: &[u8]) -> bool {
        is_rpc_reply(reply) && message_xid(reply) == Some(self.xid)
    }
}

/// What one round decided. Why two lists: probing is the daemon's I/O, removal is a table
/// change it must journal.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    /// Probes to send now, in table order.
    pub probes: Vec<Probe>,
    /// Registrations silent for `max_misses` probes in a row: remove them (journaled), then
    /// call [`Liveness::forget`]. If the removal fails they stay dead and come back next round.
    pub dead: Vec<Entry>,
}

/// The liveness bookkeeping of one namespace: outstanding probes and misses in a row.
#[derive(Debug, Default, Clone)]
pub struct Liveness {
    /// Rounds started so far (the backoff's clock).
    round: u32,
    /// Probes sent and not answered yet: xid → registration probed.
    outstanding: BTreeMap<u32, Entry>,
    /// Probes missed in a row, per registration (absent: none).
    misses: BTreeMap<Entry, u32>,
}

/// Next state of the xid generator (a full-period LCG mod 2^32: no xid repeats within a round).
fn next_xid_state(s: u32) -> u32 {
    s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223)
}

impl Liveness {
    /// Nothing probed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a round: every probe of the last round still unanswered is a miss; registrations
    /// no longer in `registrations` are forgotten; those at `max_misses` (at least 1) are dead;
    /// the rest are probed, a registration with `k` misses only every `2^k`-th round (at most
    /// every 8th). `registrations` are the clients' registrations in table order (not the
    /// portmapper's own), `sources` what the daemon can probe with, and `xid_seed` fresh
    /// unpredictable bits for this round's xids (so nobody can answer a probe in a dead
    /// service's place).
    pub fn round(
        &mut self,
        registrations: impl IntoIterator<Item = Entry>,
        sources: ProbeSources,
        max_misses: u32,
        xid_seed: u32,
    ) -> Round {
        self.round = self.round.wrapping_add(1);
        let max_misses = max_misses.max(1);
        let targets: Vec<Entry> = registrations
            .into_iter()
            .filter(|e| sources.cover(&e.netid))
            .collect();
        for e in std::mem::take(&mut self.outstanding).into_values() {
            *self.misses.entry(e).or_insert(0) += 1;
        }
        let probed: BTreeSet<&Entry> = targets.iter().collect();
        self.misses.retain(|e, _| probed.contains(e));
        let mut out = Round::default();
        let mut xid_state = xid_seed;
        for e in targets {
            let missed = self.misses.get(&e).copied().unwrap_or(0);
            if missed >= max_misses {
                out.dead.push(e);
                continue;
            }
            if !self
                .round
                .is_multiple_of(1 << missed.min(MAX_BACKOFF_SHIFT))
            {
                continue;
            }
            let Some(target) = parse_uaddr(&e.uaddr).map(loopback_if_wildcard) else {
                continue;
            };
            xid_state = next_xid_state(xid_state);
            let xid = xid_state | 1;
            let mut call = Vec::with_capacity(40);
            encode_null_call(xid, e.prog, e.vers, &mut call);
            let transport = if e.netid.starts_with("tcp") {
                ProbeTransport::Tcp
            } else {
                ProbeTransport::Udp
            };
            self.outstanding.insert(xid, e);
            out.probes.push(Probe {
                xid,
                transport,
                target,
                call,
            });
        }
        out
    }

    /// A reply arrived on the UDP socket the probes leave from: if it answers an outstanding
    /// probe, the service is alive and its misses are forgotten. Returns whether it did (else it
    /// is someone else's reply, e.g. to a forwarded call).
    pub fn on_reply(&mut self, reply: &[u8]) -> bool {
        if !is_rpc_reply(reply) {
            return false;
        }
        message_xid(reply).is_some_and(|xid| self.answered(xid))
    }

    /// The probe sent with `xid` was answered (checked with [`Probe::is_answered_by`]): the
    /// service is alive and its misses are forgotten. Returns whether `xid` was outstanding.
    pub fn answered(&mut self, xid: u32) -> bool {
        let Some(e) = self.outstanding.remove(&xid) else {
            return false;
        };
        self.misses.remove(&e);
        true
    }

    /// The probe with `xid` could not be made (no socket, send failed, no time left): it is no
    /// evidence against the service, so it does not count as a miss.
    pub fn withdraw(&mut self, xid: u32) {
        self.outstanding.remove(&xid);
    }

    /// The dead registrations were removed: forget their misses, so one registered again under
    /// the same address starts afresh.
    pub fn forget(&mut self, removed: &[Entry]) {
        for e in removed {
            self.misses.remove(e);
        }
    }

    /// Probes `e` missed in a row. Why public: for status output and tests.
    pub fn misses(&self, e: &Entry) -> u32 {
        self.misses.get(e).copied().unwrap_or(0)
    }

    /// Number of probes sent and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{AcceptStat, PMAP_PROG, encode_accepted};

    fn reg(prog: u32, netid: &str, uaddr: &str) -> Entry {
        Entry {
            prog,
            vers: 1,
            netid: netid.into(),
            uaddr: uaddr.into(),
            owner: "0".into(),
        }
    }

    fn all() -> ProbeSources {
        ProbeSources {
            udp: true,
            udp6: true,
            tcp: true,
        }
    }

    fn reply(xid: u32) -> Vec<u8> {
        let mut b = Vec::new();
        encode_accepted(&mut b, xid, AcceptStat::Success);
        b
    }

    fn xids(r: &Round) -> Vec<u32> {
        r.probes.iter().map(|p| p.xid).collect()
    }

    #[test]
    fn null_call_for_any_program() {
        let mut b = Vec::new();
        encode_null_call(0x1234_5679, 100_024, 3, &mut b);
        let words: Vec<u32> = b
            .chunks(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // xid, CALL, RPC version 2, program, version, procedure 0, AUTH_NONE cred and verifier.
        assert_eq!(words, [0x1234_5679, 0, 2, 100_024, 3, 0, 0, 0, 0, 0]);
        assert!(is_null_reply(0x1234_5679, &reply(0x1234_5679)));
        assert!(!is_null_reply(0x1234_5679, &b));
    }

    #[test]
    fn probes_what_the_sources_reach_at_their_address() {
        let mut l = Liveness::new();
        let regs = vec![
            reg(1, "udp", "0.0.0.0.3.232"),
            reg(2, "udp6", "::1.3.233"),
            reg(3, "tcp", "10.0.0.5.3.234"),
            reg(4, "tcp6", "::.3.235"),
            reg(5, "local", "/run/x.sock"),
            reg(6, "udp", "not an address"),
        ];
        let sources = ProbeSources {
            udp: true,
            udp6: false,
            tcp: true,
        };
        let r = l.round(regs, sources, 3, 42);
        let got: Vec<(ProbeTransport, String)> = r
            .probes
            .iter()
            .map(|p| (p.transport, p.target.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (ProbeTransport::Udp, "127.0.0.1:1000".into()),
                (ProbeTransport::Tcp, "10.0.0.5:1002".into()),
                (ProbeTransport::Tcp, "[::1]:1003".into()),
            ]
        );
        assert!(r.dead.is_empty());
        let mut want = Vec::new();
        encode_null_call(r.probes[1].xid, 3, 1, &mut want);
        assert_eq!(r.probes[1].call, want);
        let mut distinct = xids(&r);
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);
        assert!(r.probes.iter().all(|p| p.xid % 2 == 1));
        assert_eq!(l.outstanding(), 3);
    }

    #[test]
    fn xids_follow_the_seed() {
        let regs = || {
            vec![
                reg(1, "udp", "127.0.0.1.3.232"),
                reg(2, "tcp", "127.0.0.1.3.233"),
            ]
        };
        let a = Liveness::new().round(regs(), all(), 3, 99);
        let b = Liveness::new().round(regs(), all(), 3, 99);
        let c = Liveness::new().round(regs(), all(), 3, 100);
        assert_eq!(xids(&a), xids(&b));
        assert_ne!(xids(&a), xids(&c));
    }

    #[test]
    fn silence_backs_off_then_kills() {
        let e = reg(1, "udp", "127.0.0.1.3.232");
        let mut l = Liveness::new();
        // Round k probes when k is a multiple of 2^misses (at most 8); misses are counted at
        // the start of the round after a probe.
        let mut probed = Vec::new();
        let mut dead_at = None;
        for k in 1..=40u32 {
            let r = l.round(vec![e.clone()], all(), 5, k);
            if !r.probes.is_empty() {
                probed.push((k, l.misses(&e)));
            }
            if !r.dead.is_empty() {
                assert_eq!(r.dead, std::slice::from_ref(&e));
                dead_at = Some(k);
                break;
            }
        }
        assert_eq!(probed, [(1, 0), (2, 1), (4, 2), (8, 3), (16, 4)]);
        assert_eq!(
            dead_at,
            Some(17),
            "the round that counts the fifth miss removes it"
        );
    }

    #[test]
    fn dead_until_forgotten() {
        let e = reg(1, "tcp", "127.0.0.1.3.232");
        let mut l = Liveness::new();
        l.round(vec![e.clone()], all(), 1, 1);
        let r = l.round(vec![e.clone()], all(), 1, 2);
        assert_eq!((r.dead.len(), r.probes.len()), (1, 0));
        // The removal failed: still dead next round, and not probed.
        let r = l.round(vec![e.clone()], all(), 1, 3);
        assert_eq!((r.dead.len(), r.probes.len()), (1, 0));
        // Removed, then registered again: a fresh start.
        l.forget(&r.dead);
        let r = l.round(vec![e.clone()], all(), 1, 4);
        assert_eq!((r.dead.len(), r.probes.len()), (0, 1));
    }

    #[test]
    fn an_answer_clears_the_misses() {
        let e = reg(1, "udp", "127.0.0.1.3.232");
        let mut l = Liveness::new();
        l.round(vec![e.clone()], all(), 3, 1);
        let r = l.round(vec![e.clone()], all(), 3, 2);
        assert_eq!(l.misses(&e), 1);
        let p = &r.probes[0];
        // A call with the probe's xid, or a reply to another xid, is not the answer.
        assert!(!l.on_reply(&p.call));
        assert!(!l.on_reply(&reply(p.xid ^ 2)));
        assert!(l.on_reply(&reply(p.xid)));
        assert_eq!(l.misses(&e), 0);
        assert!(!l.on_reply(&reply(p.xid)), "answered once");
        let r = l.round(vec![e.clone()], all(), 3, 3);
        assert_eq!((l.misses(&e), r.probes.len()), (0, 1));
    }

    #[test]
    fn a_tcp_answer_is_matched_by_its_probe() {
        let e = reg(1, "tcp", "127.0.0.1.3.232");
        let mut l = Liveness::new();
        let r = l.round(vec![e], all(), 3, 1);
        let p = &r.probes[0];
        let mut denied = Vec::new();
        encode_accepted(&mut denied, p.xid, AcceptStat::ProgUnavail);
        assert!(p.is_answered_by(&denied[..8]), "any reply, even an error");
        assert!(!p.is_answered_by(&reply(p.xid.wrapping_add(2))));
        assert!(!p.is_answered_by(&p.call));
        assert!(l.answered(p.xid));
        assert!(!l.answered(p.xid));
    }

    #[test]
    fn withdrawn_probes_and_vanished_registrations_are_no_misses() {
        let a = reg(1, "udp", "127.0.0.1.3.232");
        let b = reg(PMAP_PROG + 1, "tcp", "127.0.0.1.3.233");
        let mut l = Liveness::new();
        let r = l.round(vec![a.clone(), b.clone()], all(), 3, 1);
        l.withdraw(r.probes[0].xid);
        l.round(vec![a.clone(), b.clone()], all(), 3, 2);
        assert_eq!((l.misses(&a), l.misses(&b)), (0, 1));
        // b was unregistered; registered again later it starts with no misses.
        l.round(vec![a.clone()], all(), 3, 3);
        assert_eq!(l.misses(&b), 0);
        // A registration the daemon cannot reach now is left alone, and forgotten.
        let none = ProbeSources::default();
        let r = l.round(vec![a.clone()], none, 3, 4);
        assert!(r.probes.is_empty() && r.dead.is_empty());
        assert_eq!(l.misses(&a), 0);
    }
}
