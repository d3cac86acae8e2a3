//! Upstream health: smoothed round-trip times, consecutive-failure counting, "down" marking
//! with exponential back-off, and the order in which to try servers.
//!
//! Why: a forwarder with several upstreams should stop waiting on a dead one (each timeout
//! costs the client a full attempt timeout), still notice when it comes back, and prefer the
//! fastest healthy server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Health settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HealthConfig {
    /// Consecutive failures after which a server counts as down.
    pub(crate) down_after: u32,
    /// First wait before a down server is probed again.
    pub(crate) probe_interval: Duration,
    /// Longest wait between probes (the interval doubles up to this).
    pub(crate) max_probe_interval: Duration,
}

/// What is known about one upstream.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    /// Where it is.
    pub(crate) addr: SocketAddr,
    /// Smoothed RTT (RFC 6298-style 7/8 weighting); `None` until the first answer.
    pub(crate) srtt: Option<Duration>,
    /// Failures since the last answer.
    pub(crate) failures: u32,
    /// While set, the server is down; once `now` passes it, one probe may be sent.
    pub(crate) retry_at: Option<Instant>,
    /// A probe is outstanding (so only one is sent per interval).
    pub(crate) probing: bool,
}

/// All upstreams of one instance.
#[derive(Debug, Clone)]
pub(crate) struct Upstreams {
    /// Servers in configuration order.
    list: Vec<Upstream>,
    /// Settings.
    cfg: HealthConfig,
}

impl Upstreams {
    /// Creates the table, all servers presumed healthy.
    pub(crate) fn new(addrs: &[SocketAddr], cfg: HealthConfig) -> Self {
        let mut u = Self {
            list: Vec::new(),
            cfg,
        };
        u.replace(addrs);
        u
    }

    /// Replaces the server list (e.g. resolv.conf changed), keeping what is known about
    /// servers that stay. Queries in flight to removed servers time out and fail over.
    pub(crate) fn replace(&mut self, addrs: &[SocketAddr]) {
        let old = std::mem::take(&mut self.list);
        for &addr in addrs {
            if self.list.iter().any(|u| u.addr == addr) {
                continue;
            }
            let known = old.iter().find(|u| u.addr == addr).cloned();
            self.list.push(known.unwrap_or(Upstream {
                addr,
                srtt: None,
                failures: 0,
                retry_at: None,
                probing: false,
            }));
        }
    }

    /// Number of servers.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Read-only view for status reporting.
    pub(crate) fn all(&self) -> &[Upstream] {
        &self.list
    }

    /// Mutable entry for `addr`.
    fn entry(&mut self, addr: SocketAddr) -> Option<&mut Upstream> {
        self.list.iter_mut().find(|u| u.addr == addr)
    }

    /// Whether `addr` is one of the configured servers.
    #[cfg(test)]
    pub(crate) fn contains(&self, addr: SocketAddr) -> bool {
        self.list.iter().any(|u| u.addr == addr)
    }

    /// Whether server `addr` is currently down.
    pub(crate) fn is_down(&self, addr: SocketAddr) -> bool {
        self.list
            .iter()
            .any(|u| u.addr == addr && u.retry_at.is_some())
    }

    /// Servers in preference order: healthy ones by smoothed RTT (unmeasured first, so they
    /// get measured, then configuration order), then down ones by when they may be retried.
    pub(crate) fn order(&self) -> Vec<SocketAddr> {
        let mut idx: Vec<(usize, &Upstream)> = self.list.iter().enumerate().collect();
        idx.sort_by_key(|&(i, u)| {
            (
                u.retry_at.is_some(),
                u.retry_at,
                u.srtt.unwrap_or(Duration::ZERO),
                i,
            )
        });
        idx.into_iter().map(|(_, u)| u.addr).collect()
    }

    /// A down server whose retry time has come and that has no probe out, if any. The caller
    /// sends the next query to it as well, and marks it with `start_probe`.
    pub(crate) fn due_probe(&self, now: Instant) -> Option<SocketAddr> {
        self.list
            .iter()
            .find(|u| !u.probing && u.retry_at.is_some_and(|t| t <= now))
            .map(|u| u.addr)
    }

    /// Records that a probe went out to `addr`.
    pub(crate) fn start_probe(&mut self, addr: SocketAddr) {
        if let Some(u) = self.entry(addr) {
            u.probing = true;
        }
    }

    /// `addr` answered after `rtt`: healthy again.
    pub(crate) fn success(&mut self, addr: SocketAddr, rtt: Duration) {
        if let Some(u) = self.entry(addr) {
            u.srtt = Some(match u.srtt {
                Some(s) => (s * 7 + rtt) / 8,
                None => rtt,
            });
            u.failures = 0;
            u.retry_at = None;
            u.probing = false;
        }
    }

    /// `addr` timed out (or failed) at `now`: count it, penalise its RTT estimate, and mark
    /// it down after `down_after` failures in a row, backing off exponentially.
    pub(crate) fn failure(&mut self, addr: SocketAddr, now: Instant, timeout: Duration) {
        let cfg = self.cfg;
        if let Some(u) = self.entry(addr) {
            u.failures = u.failures.saturating_add(1);
            u.probing = false;
            u.srtt = Some(u.srtt.map_or(timeout, |s| (s * 2).min(timeout)));
            let threshold = cfg.down_after.max(1);
            if u.failures >= threshold {
                let extra = (u.failures - threshold).min(16);
                let wait = cfg
                    .probe_interval
                    .saturating_mul(1u32 << extra)
                    .min(cfg.max_probe_interval);
                u.retry_at = Some(now + wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_and_back() {
        let a: SocketAddr = "192.0.2.1:53".parse().expect("addr");
        let b: SocketAddr = "192.0.2.2:53".parse().expect("addr");
        let mut ups = Upstreams::new(
            &[a, b],
            HealthConfig {
                down_after: 2,
                probe_interval: Duration::from_secs(5),
                max_probe_interval: Duration::from_secs(60),
            },
        );
        #[expect(clippy::disallowed_methods, reason = "tests need a base instant")]
        let t = Instant::now();
        assert_eq!(ups.order(), vec![a, b]);
        ups.success(b, Duration::from_millis(5));
        ups.success(a, Duration::from_millis(50));
        assert_eq!(ups.order(), vec![b, a], "faster first");
        ups.failure(b, t, Duration::from_secs(1));
        assert!(!ups.is_down(b));
        ups.failure(b, t, Duration::from_secs(1));
        assert!(ups.is_down(b));
        assert_eq!(ups.order(), vec![a, b], "down last");
        assert_eq!(ups.due_probe(t), None);
        assert_eq!(ups.due_probe(t + Duration::from_secs(5)), Some(b));
        ups.start_probe(b);
        assert_eq!(ups.due_probe(t + Duration::from_secs(5)), None);
        ups.success(b, Duration::from_millis(5));
        assert!(!ups.is_down(b));
        let c: SocketAddr = "192.0.2.3:53".parse().expect("addr");
        ups.failure(a, t, Duration::from_secs(1));
        ups.replace(&[c, a]);
        assert_eq!(ups.len(), 2);
        assert_eq!(
            ups.all()[1].failures,
            1,
            "health kept for servers that stay"
        );
        assert!(!ups.contains(b));
    }
}
