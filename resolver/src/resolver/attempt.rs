//! Upstream attempts of a resolution: drawing an unused random ID, building the query sent
//! upstream, choosing the next server (failover, round-robin once all were tried, probes of
//! down servers) and retiring failed attempts.
//!
//! Why together: these decide how many messages a miss costs and where they go; every
//! transmit the daemon sends is made here, with the deadline it must arm.

use std::net::SocketAddr;
use std::time::Instant;

use rand::RngExt;

use super::flight::Flight;
use super::{Attempt, Pending, Resolver};
use crate::event::{QueryToken, Transport, UpstreamTransmit};
use crate::wire::{self, FLAG_AD, FLAG_CD, FLAG_RD, Header};

impl Resolver {
    /// Draws a DNS ID not in use by any outstanding attempt.
    fn fresh_id(&mut self) -> u16 {
        loop {
            let id: u16 = self.rng.get().random();
            if !Flight::view(&self.flight).by_id.contains_key(&id)
                && !Flight::view(&self.flight).orphans.contains_key(&id)
            {
                return id;
            }
        }
    }

    /// Builds the upstream query: RD and AD set (RFC 6840 §5.7: ask for AD status), CD and
    /// DO as the client asked, EDNS with our UDP size.
    fn build_upstream_query(&self, id: u16, p: &Pending) -> Vec<u8> {
        let mut out = Vec::with_capacity(p.question.wire_len() + 40);
        let mut flags = FLAG_RD | FLAG_AD;
        if p.key.checking_disabled {
            flags |= FLAG_CD;
        }
        Header {
            id,
            flags,
            qdcount: 1,
            ancount: 0,
            nscount: 0,
            arcount: 1,
        }
        .push(&mut out);
        p.question.push(&mut out);
        wire::push_opt(&mut out, self.cfg.edns_udp_size, 0, p.key.dnssec_ok, &[]);
        out
    }

    /// Sends one attempt for `token` to upstream `addr` over `transport`.
    pub(super) fn send_attempt(
        &mut self,
        now: Instant,
        token: QueryToken,
        addr: SocketAddr,
        transport: Transport,
        probe: bool,
    ) {
        let id = self.fresh_id();
        let Some(p) = Flight::view(&self.flight).pending.get(&token) else {
            return;
        };
        let payload = self.build_upstream_query(id, p);
        let timeout = match transport {
            Transport::Udp => self.cfg.attempt_timeout,
            Transport::Tcp => self.cfg.attempt_timeout * 2,
        };
        let deadline = now + timeout;
        if let Some(p) = Flight::open(&mut self.flight).pending.get_mut(&token) {
            p.attempts.push(Attempt {
                id,
                upstream: addr,
                transport,
                sent_at: now,
                deadline,
                probe,
            });
        }
        Flight::open(&mut self.flight).by_id.insert(id, token);
        self.stats.upstream_queries += 1;
        Flight::open(&mut self.flight)
            .transmits
            .push_back(UpstreamTransmit {
                upstream: addr,
                transport,
                token,
                dns_id: id,
                payload,
                deadline,
            });
    }

    /// Starts the next attempt for `token`, or ends it when out of attempts or time.
    pub(super) fn advance(&mut self, now: Instant, token: QueryToken) {
        let Some(p) = Flight::view(&self.flight).pending.get(&token) else {
            return;
        };
        let n = self.upstreams.len();
        let all_tried = p.tried.len() >= n;
        if n == 0
            || p.tries >= self.cfg.max_attempts
            || now >= p.deadline
            || (all_tried && p.fallback.is_some())
        {
            self.fail(now, token);
            return;
        }
        let order = self.upstreams.order();
        let choice = order
            .iter()
            .copied()
            .find(|i| !p.tried.contains(i))
            .unwrap_or_else(|| order[(p.tries as usize) % order.len()]);
        if let Some(p) = Flight::open(&mut self.flight).pending.get_mut(&token) {
            p.tries += 1;
            if !p.tried.contains(&choice) {
                p.tried.push(choice);
            }
        }
        self.send_attempt(now, token, choice, Transport::Udp, false);
        // A down server whose back-off has passed gets a copy of this query as a probe;
        // the client is not made to wait on it.
        if let Some(probe) = self.upstreams.due_probe(now)
            && probe != choice
        {
            self.upstreams.start_probe(probe);
            self.send_attempt(now, token, probe, Transport::Udp, true);
        }
    }

    /// Removes attempt `id` of `token` after a failure and moves the query on if no regular
    /// attempt is left.
    pub(super) fn attempt_failed(&mut self, now: Instant, token: QueryToken, id: u16) {
        let flight = Flight::open(&mut self.flight);
        let Some(p) = flight.pending.get_mut(&token) else {
            return;
        };
        let Some(pos) = p.attempts.iter().position(|a| a.id == id) else {
            return;
        };
        let a = p.attempts.remove(pos);
        let waiting_on_regular = p.attempts.iter().any(|x| !x.probe);
        flight.by_id.remove(&id);
        self.stats.upstream_failures += 1;
        self.upstreams
            .failure(a.upstream, now, self.cfg.attempt_timeout);
        if !waiting_on_regular {
            self.advance(now, token);
        }
    }
}
