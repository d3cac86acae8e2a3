//! Ending a resolution: every waiting client gets its answer (fresh, stale, the last
//! upstream error, or SERVFAIL), rendered for its own query, and the attempts still out are
//! kept as orphans so late replies still count for upstream health.
//!
//! Why one place: every way a resolution ends (reply, failure, timeout) goes through
//! `finish`, so counters and orphan bookkeeping cannot diverge.

use std::time::Instant;

use super::flight::Flight;
use super::{Finish, Resolver};
use crate::cache::Lookup;
use crate::event::{AnswerKind, ClientAnswer, QueryToken, ServFailReason};
use crate::response;
use crate::wire::rcode;

impl Resolver {
    /// Ends `token` after every upstream failed: stale data, the last upstream error
    /// answer, or SERVFAIL.
    pub(super) fn fail(&mut self, now: Instant, token: QueryToken) {
        let Some(p) = Flight::view(&self.flight).pending.get(&token) else {
            return;
        };
        if self.cfg.serve_stale.is_some()
            && let Lookup::Stale(a) | Lookup::Fresh { answer: a, .. } =
                self.cache.get(now, p.key.as_ref())
        {
            self.finish(token, Finish::Answer(a, AnswerKind::Stale));
            return;
        }
        match p.fallback.clone() {
            Some(a) => self.finish(token, Finish::Answer(a, AnswerKind::Upstream)),
            None => self.finish(token, Finish::ServFail(ServFailReason::UpstreamsFailed)),
        }
    }

    /// Completes `token`: answers every waiter and retires its attempts.
    pub(super) fn finish(&mut self, token: QueryToken, how: Finish) {
        let Some(p) = Flight::open(&mut self.flight).pending.remove(&token) else {
            return;
        };
        Flight::open(&mut self.flight).by_key.remove(&p.key);
        for a in p.attempts {
            Flight::open(&mut self.flight).by_id.remove(&a.id);
            Flight::open(&mut self.flight).orphans.insert(a.id, a);
        }
        let stale_ttl = self.cfg.serve_stale.map_or(30, |s| s.stale_ttl);
        for w in p.waiters {
            let limit = w.query.size_limit(self.cfg.max_udp_response);
            let mut payload = Vec::new();
            let kind = match &how {
                Finish::Answer(a, kind) => {
                    let stale = (*kind == AnswerKind::Stale).then_some(stale_ttl);
                    a.render(
                        &mut payload,
                        &w.query,
                        0,
                        stale,
                        self.cfg.edns_udp_size,
                        limit,
                    );
                    match kind {
                        AnswerKind::Stale => self.stats.stale_answers += 1,
                        _ => self.stats.upstream_answers += 1,
                    }
                    *kind
                }
                Finish::ServFail(reason) => {
                    self.stats.servfail += 1;
                    response::query_error(
                        &mut payload,
                        &w.query,
                        rcode::SERVFAIL,
                        self.cfg.edns_udp_size,
                    );
                    AnswerKind::ServFail(*reason)
                }
            };
            Flight::open(&mut self.flight)
                .answers
                .push_back(ClientAnswer {
                    client: w.client,
                    payload,
                    kind,
                    token,
                });
        }
    }
}
