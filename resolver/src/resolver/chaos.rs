//! Stage 3a of the client path: CHAOS-class queries (`version.bind`, `hostname.bind`,
//! `id.server`, `version.server`, RFC 4892) are refused here and never forwarded.
//!
//! Why: forwarded, they would tell any client which software the upstream runs and which
//! instance answered (RFC 4892 §2), across the tenant boundary. Unbound refuses them with
//! `hide-identity`/`hide-version`; refusing is what it does when asked to keep quiet, and
//! the forwarder has no identity of its own worth giving out. No other CHAOS name has an
//! upstream worth asking either, so the whole class is refused.

use std::ops::ControlFlow;

use super::{Resolver, Stage};
use crate::event::{AnswerKind, QueryOutcome};
use crate::query::ClientQuery;
use crate::response;
use crate::wire::rcode;

/// Class CH (CHAOS, RFC 1035 §3.2.4).
pub(super) const CLASS_CH: u16 = 3;

impl Resolver {
    /// Refuses a CHAOS-class query locally.
    pub(super) fn refuse_chaos(&mut self, q: &ClientQuery, out: &mut Vec<u8>) -> Stage<()> {
        if q.question.qclass != CLASS_CH {
            return ControlFlow::Continue(());
        }
        self.stats.refused += 1;
        response::query_error(out, q, rcode::REFUSED, self.cfg.edns_udp_size);
        ControlFlow::Break(QueryOutcome::Answered(AnswerKind::Refused))
    }
}
