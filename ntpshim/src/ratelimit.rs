//! Per-client response rate limiting, modelled on chrony's `ratelimit`
//! (clientlog.c): a token bucket per client address in a bounded hash table.
//!
//! * Each client may get `burst` responses back to back and then one per
//!   2^`interval_log2` seconds on average.
//! * Over the limit, one request in 2^`leak_log2` is still answered normally,
//!   so a victim whose address an attacker spoofs keeps getting time (the
//!   attacker's flood cannot lock the victim out). The answer empties the
//!   bucket, as in chrony.
//! * Of the requests not leaked, one in 2^`kod_log2` gets a RATE
//!   kiss-o'-death asking a real client to slow down; the rest are dropped.
//!   Replies are never longer than requests, so neither path amplifies.
//! * Memory is bounded: the table grows by doubling from 8 entries up to
//!   `max_clients` (rounded up to a power of two); when the client's slot of 8
//!   entries is full at maximum size, the entry hit least recently (fewest
//!   hits on ties) is replaced. Spoofed floods therefore cost at most
//!   `max_clients` × 48 bytes and O(8) work per packet. Slots are chosen by a
//!   keyed hash so an attacker cannot aim at a victim's slot.
//!
//! Not copied from chrony: its heuristic that stops limiting clients which
//! poll faster when unanswered, and its 1/16 s fixed-point timestamps (we
//! keep nanoseconds).

use alloc::vec;
use alloc::vec::Vec;
use core::net::IpAddr;

use crate::acl::{canonical, mask};
use crate::mono::Mono;
use crate::rng::{Rng, hash128};

/// Entries per hash slot (chrony's `SLOT_SIZE`).
const SLOT_SIZE: usize = 8;

/// Rate limiting parameters. `Default` is chrony's `ratelimit` defaults
/// (interval 3, burst 8, leak 2) plus RATE kisses for 1 in 4 of the
/// remaining over-limit requests, 128-bit IPv6 keys and 4096 clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimitConfig {
    /// Log2 of the minimum average interval between responses, seconds;
    /// clamped to -4..=12. Also the minimum poll we advertise in replies, as
    /// chrony does, so well-behaved clients adapt.
    pub interval_log2: i8,
    /// Responses allowed back to back before limiting starts; at least 1.
    pub burst: u8,
    /// One over-limit request in 2^`leak_log2` is answered normally; clamped
    /// to 1..=4 (chrony's range: never zero, or limiting would not limit).
    pub leak_log2: u8,
    /// One non-leaked over-limit request in 2^`kod_log2` gets a RATE
    /// kiss-o'-death (clamped to 0..=4, 0 meaning every one); `None` never
    /// sends a kiss (chrony's default).
    pub kod_log2: Option<u8>,
    /// IPv6 clients are keyed by this prefix length (clamped to 32..=128).
    /// chrony uses whole addresses (128); 64 stops a client from escaping the
    /// limit by rotating addresses within its /64, at the cost of one bucket
    /// for a whole LAN. IPv4 clients are always keyed by /32.
    pub ipv6_prefix: u8,
    /// Upper bound on tracked clients, i.e. on memory (48 bytes each).
    pub max_clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            interval_log2: 3,
            burst: 8,
            leak_log2: 2,
            kod_log2: Some(2),
            ipv6_prefix: 128,
            max_clients: 4096,
        }
    }
}

/// What the limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Within the limit: answer.
    Pass,
    /// Over the limit but leaked: answer normally.
    Leak,
    /// Over the limit: answer with a RATE kiss-o'-death.
    Kiss,
    /// Over the limit: do not answer.
    Drop,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    key: u128,
    used: bool,
    last: Mono,
    credit_ns: u64,
    hits: u64,
}

/// The per-client table and its parameters.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    config: RateLimitConfig,
    interval_ns: u64,
    max_credit_ns: u64,
    max_slots: usize,
    entries: Vec<Entry>,
    hash_key: u64,
    rng: Rng,
    /// Bytes past which the table does not grow (it evicts within a slot instead): the
    /// daemon's memory ceiling. `usize::MAX` when none holds.
    growth_limit: usize,
}

impl RateLimiter {
    /// Builds an empty table; `seed` keys the slot hash and the coin flips
    /// (the daemon should pass random bits).
    #[must_use]
    pub fn new(config: RateLimitConfig, seed: u64) -> Self {
        let config = RateLimitConfig {
            interval_log2: config.interval_log2.clamp(-4, 12),
            burst: config.burst.max(1),
            leak_log2: config.leak_log2.clamp(1, 4),
            kod_log2: config.kod_log2.map(|k| k.min(4)),
            ipv6_prefix: config.ipv6_prefix.clamp(32, 128),
            max_clients: config.max_clients.max(SLOT_SIZE),
        };
        let interval_ns = if config.interval_log2 >= 0 {
            1_000_000_000u64 << config.interval_log2
        } else {
            1_000_000_000u64 >> config.interval_log2.unsigned_abs()
        };
        let max_slots = config.max_clients.div_ceil(SLOT_SIZE).next_power_of_two();
        let mut rng = Rng::new(seed);
        let hash_key = rng.next_u64();
        Self {
            config,
            interval_ns,
            max_credit_ns: interval_ns * u64::from(config.burst),
            max_slots,
            // The first slot is made at the first request: most namespaces' NTP servers
            // are never asked, and 8 entries are some 400 bytes (issue 16).
            entries: Vec::new(),
            hash_key,
            rng,
            growth_limit: usize::MAX,
        }
    }

    /// Bytes the table holds (what the daemon accounts against its memory ceiling).
    #[must_use]
    pub fn table_bytes(&self) -> usize {
        self.capacity() * size_of::<Entry>()
    }

    /// Holds the table to `bytes`: past it, a new client evicts the stalest of its slot rather
    /// than doubling the table. Why: the daemon's memory ceiling; the table never shrinks, so
    /// existing clients keep their state.
    pub fn limit_growth(&mut self, bytes: usize) {
        self.growth_limit = bytes;
    }

    /// The effective (clamped) parameters.
    #[must_use]
    pub const fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Number of table entries currently allocated (memory bound checks).
    #[must_use]
    pub fn capacity(&self) -> usize {
        // The first slot counts from the start, made or not, so the figure (and what the
        // daemon accounts) does not jump at the first request.
        self.entries.len().max(SLOT_SIZE)
    }

    /// Number of clients currently tracked.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.entries.iter().filter(|e| e.used).count()
    }

    /// Records a request from `client` at `now` and decides whether to answer.
    #[must_use]
    pub fn check(&mut self, now: Mono, client: IpAddr) -> Verdict {
        let key = self.key(client);
        let index = self.find_or_insert(key);
        let (interval, max_credit) = (self.interval_ns, self.max_credit_ns);
        let Some(e) = self.entries.get_mut(index) else {
            // Unreachable by construction; answering is the safe fallback.
            return Verdict::Pass;
        };
        if e.hits > 0 {
            let elapsed = now.saturating_nanos_since(e.last);
            e.credit_ns = e.credit_ns.saturating_add(elapsed).min(max_credit);
        }
        if now > e.last || e.hits == 0 {
            e.last = now;
        }
        e.hits = e.hits.saturating_add(1);
        if e.credit_ns >= interval {
            e.credit_ns -= interval;
            return Verdict::Pass;
        }
        if self.rng.one_in_pow2(self.config.leak_log2) {
            if let Some(e) = self.entries.get_mut(index) {
                e.credit_ns = 0;
            }
            return Verdict::Leak;
        }
        match self.config.kod_log2 {
            Some(k) if self.rng.one_in_pow2(k) => Verdict::Kiss,
            _ => Verdict::Drop,
        }
    }

    fn key(&self, client: IpAddr) -> u128 {
        match canonical(client) {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            v6 @ IpAddr::V6(_) => match mask(v6, self.config.ipv6_prefix) {
                IpAddr::V6(m) => u128::from(m),
                IpAddr::V4(_) => 0,
            },
        }
    }

    fn slot_of(&self, key: u128) -> usize {
        let slots = self.entries.len() / SLOT_SIZE;
        // `slots` is a power of two, so masking keeps doubling stable.
        (hash128(self.hash_key, key) as usize) & (slots - 1)
    }

    fn find_or_insert(&mut self, key: u128) -> usize {
        if self.entries.is_empty() {
            self.entries = vec![Entry::default(); SLOT_SIZE];
        }
        loop {
            let first = self.slot_of(key) * SLOT_SIZE;
            let slot = self
                .entries
                .get(first..first + SLOT_SIZE)
                .unwrap_or_default();
            if let Some(i) = slot.iter().position(|e| e.used && e.key == key) {
                return first + i;
            }
            if let Some(i) = slot.iter().position(|e| !e.used) {
                return self.reset(first + i, key);
            }
            if self.entries.len() / SLOT_SIZE < self.max_slots
                && self.table_bytes().saturating_mul(2) <= self.growth_limit
            {
                self.grow();
                continue;
            }
            let victim = slot
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| (e.last, e.hits))
                .map_or(0, |(i, _)| i);
            return self.reset(first + victim, key);
        }
    }

    fn reset(&mut self, index: usize, key: u128) -> usize {
        if let Some(e) = self.entries.get_mut(index) {
            *e = Entry {
                key,
                used: true,
                last: Mono::default(),
                credit_ns: self.max_credit_ns,
                hits: 0,
            };
        }
        index
    }

    fn grow(&mut self) {
        let doubled = vec![Entry::default(); self.entries.len() * 2];
        let old = core::mem::replace(&mut self.entries, doubled);
        for e in old.into_iter().filter(|e| e.used) {
            let first = self.slot_of(e.key) * SLOT_SIZE;
            if let Some(free) = self
                .entries
                .get_mut(first..first + SLOT_SIZE)
                .and_then(|s| s.iter_mut().find(|x| !x.used))
            {
                *free = e;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limiter(kod: Option<u8>) -> RateLimiter {
        RateLimiter::new(
            RateLimitConfig {
                kod_log2: kod,
                ..RateLimitConfig::default()
            },
            7,
        )
    }

    #[test]
    fn burst_then_limited() {
        let mut rl = limiter(None);
        let now = Mono::from_nanos(1_000_000_000);
        for _ in 0..8 {
            assert_eq!(rl.check(now, ip("192.0.2.1")), Verdict::Pass);
        }
        let over: Vec<_> = (0..400).map(|_| rl.check(now, ip("192.0.2.1"))).collect();
        assert!(!over.contains(&Verdict::Pass));
        assert!(!over.contains(&Verdict::Kiss));
        let leaks = over.iter().filter(|v| **v == Verdict::Leak).count();
        // 1 in 4 on average.
        assert!((60..140).contains(&leaks), "{leaks}");
        // Another client is unaffected.
        assert_eq!(rl.check(now, ip("192.0.2.2")), Verdict::Pass);
    }

    #[test]
    fn refills_at_interval() {
        let mut rl = limiter(None);
        let mut now = Mono::from_nanos(5);
        for _ in 0..8 {
            assert_eq!(rl.check(now, ip("192.0.2.1")), Verdict::Pass);
        }
        now = now.saturating_add(Duration::from_secs(8));
        assert_eq!(rl.check(now, ip("192.0.2.1")), Verdict::Pass);
        // One request every 8 s is always fine.
        for _ in 0..100 {
            now = now.saturating_add(Duration::from_secs(8));
            assert_eq!(rl.check(now, ip("192.0.2.1")), Verdict::Pass);
        }
    }

    #[test]
    fn kisses_when_enabled() {
        let mut rl = limiter(Some(1));
        let now = Mono::from_nanos(0);
        let v: Vec<_> = (0..400).map(|_| rl.check(now, ip("2001:db8::1"))).collect();
        let kisses = v.iter().filter(|v| **v == Verdict::Kiss).count();
        let drops = v.iter().filter(|v| **v == Verdict::Drop).count();
        // (400 - 8) * 3/4 not leaked, half of those kissed.
        assert!((110..185).contains(&kisses), "{kisses}");
        assert!((110..185).contains(&drops), "{drops}");
    }

    #[test]
    fn ipv6_prefix_aggregation() {
        let mut rl = RateLimiter::new(
            RateLimitConfig {
                ipv6_prefix: 64,
                kod_log2: None,
                ..RateLimitConfig::default()
            },
            1,
        );
        let now = Mono::from_nanos(0);
        for i in 0..8 {
            let a = ip(&format!("2001:db8::{i}"));
            assert_eq!(rl.check(now, a), Verdict::Pass);
        }
        assert_ne!(rl.check(now, ip("2001:db8::ff")), Verdict::Pass);
        assert_eq!(rl.check(now, ip("2001:db8:0:1::1")), Verdict::Pass);
    }

    #[test]
    fn mapped_ipv4_shares_bucket() {
        let mut rl = limiter(None);
        let now = Mono::from_nanos(0);
        for _ in 0..4 {
            assert_eq!(rl.check(now, ip("192.0.2.1")), Verdict::Pass);
            assert_eq!(rl.check(now, ip("::ffff:192.0.2.1")), Verdict::Pass);
        }
        assert_ne!(rl.check(now, ip("192.0.2.1")), Verdict::Pass);
    }

    #[test]
    fn table_is_bounded() {
        let mut rl = RateLimiter::new(
            RateLimitConfig {
                max_clients: 100,
                ..RateLimitConfig::default()
            },
            3,
        );
        assert_eq!(rl.capacity(), 8);
        for i in 0..100_000u32 {
            let a = IpAddr::V4(i.wrapping_mul(2_654_435_761).into());
            let _ = rl.check(Mono::from_nanos(u64::from(i)), a);
        }
        // 100 rounds up to 13 slots -> 16 slots of 8.
        assert_eq!(rl.capacity(), 128);
        assert!(rl.tracked() <= 128);
        assert!(rl.tracked() > 100);
    }

    #[test]
    fn active_client_survives_spoofed_flood() {
        let mut rl = RateLimiter::new(
            RateLimitConfig {
                max_clients: 64,
                kod_log2: None,
                ..RateLimitConfig::default()
            },
            9,
        );
        let victim = ip("198.51.100.7");
        let mut now = Mono::from_nanos(0);
        for _ in 0..8 {
            assert_eq!(rl.check(now, victim), Verdict::Pass);
        }
        // Spoofed sources fill the table; the victim is evicted at worst and
        // then starts over with a full bucket: never locked out.
        for i in 0..10_000u32 {
            now = now.saturating_add(Duration::from_millis(1));
            let _ = rl.check(now, IpAddr::V4((0x0A00_0000 + i).into()));
        }
        assert_eq!(rl.check(now, victim), Verdict::Pass);
        assert!(rl.capacity() <= 64);
    }

    #[test]
    fn backwards_time_gives_no_credit() {
        let mut rl = limiter(None);
        let late = Mono::from_nanos(100_000_000_000);
        for _ in 0..8 {
            assert_eq!(rl.check(late, ip("192.0.2.1")), Verdict::Pass);
        }
        let early = Mono::from_nanos(0);
        let v: Vec<_> = (0..20).map(|_| rl.check(early, ip("192.0.2.1"))).collect();
        assert!(!v.contains(&Verdict::Pass));
    }

    #[test]
    fn growth_limit_evicts_instead_of_growing() {
        let mut rl = RateLimiter::new(
            RateLimitConfig {
                max_clients: 1024,
                ..RateLimitConfig::default()
            },
            7,
        );
        let start = rl.table_bytes();
        rl.limit_growth(start);
        for i in 0..200u32 {
            let _ = rl.check(Mono::default(), IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(rl.table_bytes(), start, "held at the limit");
        assert!(rl.tracked() <= SLOT_SIZE);
        rl.limit_growth(usize::MAX);
        for i in 0..200u32 {
            let _ = rl.check(Mono::default(), IpAddr::from(i.to_be_bytes()));
        }
        assert!(rl.table_bytes() > start, "grows again once lifted");
    }
}
