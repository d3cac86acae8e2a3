//! Stage 4 of the client path: the answer cache. A fresh entry answers at once; a miss goes
//! on to the upstreams, unless there are none, in which case stale data (if allowed) or
//! SERVFAIL answers now.
//!
//! Why the no-upstream case here: it is the last point where stale data can be served
//! without starting a resolution that could never succeed.

use std::ops::ControlFlow;
use std::time::Instant;

use super::{Resolver, Stage};
use crate::cache::{CacheKeyRef, Lookup};
use crate::event::{AnswerKind, QueryOutcome, ServFailReason};
use crate::query::ClientQuery;
use crate::response;
use crate::wire::rcode;

impl Resolver {
    /// Answers `q` from the cache under `key`, or (no upstreams) with stale data or SERVFAIL.
    pub(super) fn answer_cached(
        &mut self,
        now: Instant,
        key: CacheKeyRef<'_>,
        q: &ClientQuery,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Stage<()> {
        let stale = match self.cache.get(now, key) {
            Lookup::Fresh { answer, elapsed } => {
                self.stats.cache_hits += 1;
                answer.render(out, q, elapsed, None, self.cfg.edns_udp_size, limit);
                return ControlFlow::Break(QueryOutcome::Answered(AnswerKind::Cache));
            }
            Lookup::Stale(a) => Some(a),
            Lookup::Miss => None,
        };
        self.stats.cache_misses += 1;
        if self.upstreams.len() > 0 {
            return ControlFlow::Continue(());
        }
        if let (Some(a), Some(ss)) = (stale, self.cfg.serve_stale) {
            self.stats.stale_answers += 1;
            a.render(out, q, 0, Some(ss.stale_ttl), self.cfg.edns_udp_size, limit);
            return ControlFlow::Break(QueryOutcome::Answered(AnswerKind::Stale));
        }
        ControlFlow::Break(self.servfail_now(out, q, ServFailReason::NoUpstreams))
    }

    /// Answers SERVFAIL immediately.
    pub(super) fn servfail_now(
        &mut self,
        out: &mut Vec<u8>,
        q: &ClientQuery,
        reason: ServFailReason,
    ) -> QueryOutcome {
        self.stats.servfail += 1;
        response::query_error(out, q, rcode::SERVFAIL, self.cfg.edns_udp_size);
        QueryOutcome::Answered(AnswerKind::ServFail(reason))
    }
}
