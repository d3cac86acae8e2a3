//! Stage 5 of the client path: a cache miss joins the resolution already under way for the
//! same question (cache key), or starts a new one, within the outstanding-query caps.
//!
//! Why: a burst of clients asking the same name costs one upstream query, and a client that
//! retransmits while waiting gets one answer, not two.

use std::time::Instant;

use super::flight::Flight;
use super::{Pending, Resolver, Waiter};
use crate::cache::CacheKeyRef;
use crate::config::Overload;
use crate::event::{ClientInfo, DropReason, QueryOutcome, QueryToken, ServFailReason, Transport};
use crate::query::ClientQuery;

impl Resolver {
    /// Adds the client to the resolution of `key`, starting one (and its first attempt)
    /// when none is outstanding. Over `max_waiters` / `max_outstanding`, the overload policy
    /// answers instead.
    pub(super) fn join_or_start(
        &mut self,
        now: Instant,
        client: ClientInfo,
        key: CacheKeyRef<'_>,
        q: ClientQuery,
        out: &mut Vec<u8>,
    ) -> QueryOutcome {
        if let Some(&token) = Flight::view(&self.flight).by_key.get(&key) {
            return self.join(token, client, q, out);
        }
        if Flight::view(&self.flight).pending.len() >= self.cfg.max_outstanding {
            return self.overloaded(out, &q);
        }
        let token = QueryToken(self.next_token);
        self.next_token += 1;
        let key = key.to_owned_key();
        let mut question = q.question.clone();
        question.qname = question.qname.lowered();
        Flight::open(&mut self.flight)
            .by_key
            .insert(key.clone(), token);
        Flight::open(&mut self.flight).pending.insert(
            token,
            Pending {
                key,
                question,
                waiters: vec![Waiter { client, query: q }],
                attempts: Vec::new(),
                tries: 0,
                tried: Vec::new(),
                deadline: now + self.cfg.query_timeout,
                fallback: None,
            },
        );
        self.advance(now, token);
        QueryOutcome::Pending(token)
    }

    /// Joins the outstanding resolution `token`. A retransmission of a waiting query (same
    /// client address, port and transport, same ID; the question is the same by the key) is
    /// never added twice: with the same routing token it is the same query asked again
    /// (`Pending`); over UDP with another token it is a new datagram whose answer goes to the
    /// first copy's route (`Dropped(Retransmit)`: the daemon keeps no route for it). Over
    /// TCP each message still gets its answer (a dropped TCP query ends the connection).
    fn join(
        &mut self,
        token: QueryToken,
        client: ClientInfo,
        q: ClientQuery,
        out: &mut Vec<u8>,
    ) -> QueryOutcome {
        if let Some(p) = Flight::open(&mut self.flight).pending.get_mut(&token) {
            let first = p.waiters.iter().find(|w| {
                w.client.addr == client.addr
                    && w.client.transport == client.transport
                    && w.query.id == q.id
            });
            if let Some(w) = first {
                if w.client == client {
                    return QueryOutcome::Pending(token);
                }
                if client.transport == Transport::Udp {
                    self.stats.retransmits += 1;
                    return self.drop_query(DropReason::Retransmit);
                }
            }
            if p.waiters.len() < self.cfg.max_waiters {
                p.waiters.push(Waiter { client, query: q });
                self.stats.coalesced += 1;
                return QueryOutcome::Pending(token);
            }
        }
        self.overloaded(out, &q)
    }

    /// Applies the overload policy.
    fn overloaded(&mut self, out: &mut Vec<u8>, q: &ClientQuery) -> QueryOutcome {
        match self.cfg.overload {
            Overload::ServFail => self.servfail_now(out, q, ServFailReason::Overloaded),
            Overload::Drop => self.drop_query(DropReason::Overloaded),
        }
    }
}
