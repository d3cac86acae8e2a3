//! Per-client response rate limiting (token bucket per source IP), with RRL-style "slip".
//!
//! Why: a UDP resolver reachable by many hosts can be used to flood a spoofed victim. Only
//! UDP is limited (a TCP peer has proven its address). When a client is over its budget, the
//! query is dropped, except every `slip`-th one, which gets an empty TC=1 answer so a real
//! client behind a spoofed flood can still retry over TCP (BIND RRL's slip).

use hashbrown::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Rate-limit settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained responses per second per client IP.
    pub per_second: u32,
    /// Bucket depth: how many responses may be sent at once after idling.
    pub burst: u32,
    /// Every `slip`-th limited query is answered with TC=1 instead of dropped (0: always drop).
    pub slip: u32,
    /// Most client buckets tracked; when full, idle (refilled) buckets are forgotten first.
    pub max_clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 100,
            burst: 200,
            slip: 2,
            max_clients: 4096,
        }
    }
}

/// The verdict for one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within budget.
    Allow,
    /// Over budget: drop.
    Drop,
    /// Over budget: answer empty with TC=1.
    Slip,
}

/// One client's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens available (scaled: 1 token = 1000 milli-tokens).
    milli_tokens: u64,
    /// Last refill.
    last: Instant,
    /// Limited queries so far (for slip).
    limited: u32,
}

/// Token buckets for every recently seen client.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// Settings.
    cfg: RateLimitConfig,
    /// Buckets by client IP.
    buckets: HashMap<IpAddr, Bucket>,
    /// Buckets past which the table counts as full (the daemon's memory ceiling, converted
    /// from bytes); `usize::MAX` when none holds.
    growth_limit: usize,
}

/// Bytes one client bucket is accounted as (key, bucket and the map's control byte, rounded).
pub(crate) const BUCKET_BYTES: usize = 64;

impl RateLimiter {
    /// Creates an empty limiter.
    pub(crate) fn new(cfg: RateLimitConfig) -> Self {
        Self {
            cfg,
            buckets: HashMap::new(),
            growth_limit: usize::MAX,
        }
    }

    /// Bytes the table is accounted as.
    pub(crate) fn bytes(&self) -> usize {
        self.buckets.len() * BUCKET_BYTES
    }

    /// Holds the table to `bytes`: past it a new client is handled as at `max_clients`
    /// (stale buckets are dropped first). Why: the daemon's memory ceiling.
    pub(crate) fn limit_growth(&mut self, bytes: usize) {
        self.growth_limit = bytes / BUCKET_BYTES;
    }

    /// Bucket capacity in milli-tokens.
    fn capacity(&self) -> u64 {
        u64::from(self.cfg.burst.max(1)) * 1000
    }

    /// Charges one response to `ip` at `now`.
    pub(crate) fn check(&mut self, now: Instant, ip: IpAddr) -> Verdict {
        let cap = self.capacity();
        let rate = u64::from(self.cfg.per_second);
        let max = self.cfg.max_clients.min(self.growth_limit.max(1));
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= max {
            // Forget buckets that would be full anyway; if none, forget everything rather
            // than grow without bound (an attacker with many sources gets a fresh start,
            // which is no worse than no limiter).
            self.buckets.retain(|_, b| {
                let gained = now.saturating_duration_since(b.last).as_millis() as u64 * rate;
                b.milli_tokens.saturating_add(gained) < cap
            });
            if self.buckets.len() >= max {
                self.buckets.clear();
            }
        }
        let b = self.buckets.entry(ip).or_insert(Bucket {
            milli_tokens: cap,
            last: now,
            limited: 0,
        });
        let ms = now.saturating_duration_since(b.last).as_millis() as u64;
        b.milli_tokens = b
            .milli_tokens
            .saturating_add(ms.saturating_mul(rate))
            .min(cap);
        b.last = now;
        if b.milli_tokens >= 1000 {
            b.milli_tokens -= 1000;
            return Verdict::Allow;
        }
        b.limited = b.limited.wrapping_add(1);
        if self.cfg.slip > 0 && b.limited.is_multiple_of(self.cfg.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills() {
        let mut rl = RateLimiter::new(RateLimitConfig {
            per_second: 10,
            burst: 3,
            slip: 2,
            max_clients: 2,
        });
        #[expect(clippy::disallowed_methods, reason = "tests need a base instant")]
        let t = Instant::now();
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..3 {
            assert_eq!(rl.check(t, ip), Verdict::Allow);
        }
        assert_eq!(rl.check(t, ip), Verdict::Drop);
        assert_eq!(rl.check(t, ip), Verdict::Slip);
        // 100 ms buys one token at 10/s.
        assert_eq!(rl.check(t + Duration::from_millis(100), ip), Verdict::Allow);
        // Other clients are independent, and the table stays bounded.
        for i in 2..10u8 {
            assert_eq!(rl.check(t, [10, 0, 0, i].into()), Verdict::Allow);
            assert!(rl.buckets.len() <= 2);
        }
    }

    #[test]
    fn growth_limit_bounds_the_table() {
        let mut rl = RateLimiter::new(RateLimitConfig::default());
        rl.limit_growth(4 * BUCKET_BYTES);
        #[expect(clippy::disallowed_methods, reason = "tests need a base instant")]
        let t = Instant::now();
        for i in 0..50u8 {
            assert_eq!(rl.check(t, [10, 0, 1, i].into()), Verdict::Allow);
            assert!(rl.bytes() <= 4 * BUCKET_BYTES);
        }
        rl.limit_growth(usize::MAX);
        for i in 0..50u8 {
            let _ = rl.check(t, [10, 0, 2, i].into());
        }
        assert!(rl.bytes() > 4 * BUCKET_BYTES);
    }
}
