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
        Self {
            list: addrs
                .iter()
                .map(|&addr| Upstream {
                    addr,
                    srtt: None,
                    failures: 0,
                    retry_at: None,
                    probing: false,
                })
                .collect(),
            cfg,
        }
    }

    /// Number of servers.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Server `i`.
    pub(crate) fn get(&self, i: usize) -> Option<&Upstream> {
        self.list.get(i)
    }

    /// Read-only view for status reporting.
    pub(crate) fn all(&self) -> &[Upstream] {
        &self.list
    }

    /// Index of the server with address `addr`.
    pub(crate) fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.list.iter().position(|u| u.addr == addr)
    }

    /// Whether server `i` is currently down.
    pub(crate) fn is_down(&self, i: usize) -> bool {
        self.list.get(i).is_some_and(|u| u.retry_at.is_some())
    }

    /// Servers in preference order: healthy ones by smoothed RTT (unmeasured first, so they
    /// get measured, then configuration order), then down ones by when they may be retried.
    pub(crate) fn order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.list.len()).collect();
        idx.sort_by_key(|&i| {
            let u = &self.list[i];
            (
                u.retry_at.is_some(),
                u.retry_at,
                u.srtt.unwrap_or(Duration::ZERO),
                i,
            )
        });
        idx
    }

    /// A down server whose retry time has come and that has no probe out, if any. The caller
    /// sends the next query to it as well, and marks it with `start_probe`.
    pub(crate) fn due_probe(&self, now: Instant) -> Option<usize> {
        self.list
            .iter()
            .position(|u| !u.probing && u.retry_at.is_some_and(|t| t <= now))
    }

    /// Records that a probe went out to server `i`.
    pub(crate) fn start_probe(&mut self, i: usize) {
        if let Some(u) = self.list.get_mut(i) {
            u.probing = true;
        }
    }

    /// Server `i` answered after `rtt`: healthy again.
    pub(crate) fn success(&mut self, i: usize, rtt: Duration) {
        if let Some(u) = self.list.get_mut(i) {
            u.srtt = Some(match u.srtt {
                Some(s) => (s * 7 + rtt) / 8,
                None => rtt,
            });
            u.failures = 0;
            u.retry_at = None;
            u.probing = false;
        }
    }

    /// Server `i` timed out (or failed) at `now`: count it, penalise its RTT estimate, and
    /// mark it down after `down_after` failures in a row, backing off exponentially.
    pub(crate) fn failure(&mut self, i: usize, now: Instant, timeout: Duration) {
        let cfg = self.cfg;
        if let Some(u) = self.list.get_mut(i) {
            u.failures = u.failures.saturating_add(1);
            u.probing = false;
            u.srtt = Some(u.srtt.map_or(timeout, |s| (s * 2).min(timeout)));
            if u.failures >= cfg.down_after.max(1) {
                let extra = (u.failures - cfg.down_after.max(1)).min(16);
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
        assert_eq!(ups.order(), vec![0, 1]);
        ups.success(1, Duration::from_millis(5));
        ups.success(0, Duration::from_millis(50));
        assert_eq!(ups.order(), vec![1, 0], "faster first");
        ups.failure(1, t, Duration::from_secs(1));
        assert!(!ups.is_down(1));
        ups.failure(1, t, Duration::from_secs(1));
        assert!(ups.is_down(1));
        assert_eq!(ups.order(), vec![0, 1], "down last");
        assert_eq!(ups.due_probe(t), None);
        assert_eq!(ups.due_probe(t + Duration::from_secs(5)), Some(1));
        ups.start_probe(1);
        assert_eq!(ups.due_probe(t + Duration::from_secs(5)), None);
        ups.success(1, Duration::from_millis(5));
        assert!(!ups.is_down(1));
    }
}
