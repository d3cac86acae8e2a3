//! Stage 3 of the client path: names this instance answers itself (hosts file, config and
//! run-time records, local domains), before the cache is consulted.
//!
//! Why before the cache: local data is authoritative and changes at run time (`nsauxctl dns
//! add`, a new hosts file); it must never be shadowed by a cached upstream answer.

use std::ops::ControlFlow;

use super::{Resolver, Stage};
use crate::event::{AnswerKind, QueryOutcome};
use crate::local::LocalAnswer;
use crate::query::ClientQuery;
use crate::response;
use crate::wire::rcode;

impl Resolver {
    /// Answers `q` from local data when its (lower-cased) `qname` is local. `limit` is the
    /// client's answer size limit.
    pub(super) fn answer_local(
        &mut self,
        q: &ClientQuery,
        qname: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Stage<()> {
        let (data, code) = match self
            .local
            .lookup(qname, q.question.qtype, q.question.qclass)
        {
            LocalAnswer::NotLocal => return ControlFlow::Continue(()),
            LocalAnswer::Data(data) => (data, rcode::NOERROR),
            LocalAnswer::NoData => (Vec::new(), rcode::NOERROR),
            LocalAnswer::NxDomain => (Vec::new(), rcode::NXDOMAIN),
        };
        self.stats.local_answers += 1;
        response::local(
            out,
            q,
            &data,
            self.cfg.local_ttl,
            code,
            self.cfg.edns_udp_size,
            limit,
        );
        ControlFlow::Break(QueryOutcome::Answered(AnswerKind::Local))
    }
}
