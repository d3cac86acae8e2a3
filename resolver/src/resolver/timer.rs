//! Deadlines: each attempt times out on its own (failover to the next server), each
//! resolution as a whole (stale data or SERVFAIL), and orphaned attempts (kept for upstream
//! health) expire.
//!
//! Why the daemon arms one timer: `poll_timeout` is the earliest of all of these, so an
//! idle instance has no timer at all.

use std::time::Instant;

use super::Resolver;
use super::flight::Flight;
use crate::event::QueryToken;

impl Resolver {
    /// The earliest instant at which `handle_timeout` has work, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = Flight::view(&self.flight)
            .pending
            .values()
            .flat_map(|p| std::iter::once(p.deadline).chain(p.attempts.iter().map(|a| a.deadline)));
        pending
            .chain(
                Flight::view(&self.flight)
                    .orphans
                    .values()
                    .map(|a| a.deadline),
            )
            .min()
    }

    /// Expires attempts and queries whose time is up (failover, SERVFAIL, stale answers).
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<u16> = Flight::view(&self.flight)
            .orphans
            .values()
            .filter(|a| a.deadline <= now)
            .map(|a| a.id)
            .collect();
        for id in expired {
            if let Some(a) = Flight::open(&mut self.flight).orphans.remove(&id) {
                self.upstreams
                    .failure(a.upstream, now, self.cfg.attempt_timeout);
            }
        }
        let mut tokens: Vec<QueryToken> =
            Flight::view(&self.flight).pending.keys().copied().collect();
        tokens.sort();
        for token in tokens {
            let Some(p) = Flight::view(&self.flight).pending.get(&token) else {
                continue;
            };
            if p.deadline <= now {
                for a in p.attempts.clone() {
                    self.upstreams
                        .failure(a.upstream, now, self.cfg.attempt_timeout);
                    self.stats.upstream_failures += 1;
                    Flight::open(&mut self.flight).by_id.remove(&a.id);
                }
                if let Some(p) = Flight::open(&mut self.flight).pending.get_mut(&token) {
                    p.attempts.clear();
                }
                self.fail(now, token);
                continue;
            }
            let due: Vec<u16> = p
                .attempts
                .iter()
                .filter(|a| a.deadline <= now)
                .map(|a| a.id)
                .collect();
            for id in due {
                self.attempt_failed(now, token, id);
            }
        }
    }
}
