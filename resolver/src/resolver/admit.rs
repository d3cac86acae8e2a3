//! Stage 1 of the client path: is this a query at all, and may this client ask now?
//!
//! Why first: the checks here need only the 12-byte header and the source address, so a
//! flood of junk or of refused clients costs no parsing.

use std::ops::ControlFlow;
use std::time::Instant;

use super::{Resolver, Stage};
use crate::acl;
use crate::event::{AnswerKind, ClientInfo, DropReason, QueryOutcome, Transport};
use crate::ratelimit;
use crate::response::{self, ErrorReply};
use crate::wire::{self, FLAG_QR, FLAG_TC, Header, RawQuestion, rcode};

impl Resolver {
    /// Drops what is not a query, applies the UDP rate limit, then the allow list.
    pub(super) fn admit(
        &mut self,
        now: Instant,
        client: ClientInfo,
        query: &[u8],
        out: &mut Vec<u8>,
    ) -> Stage<()> {
        let Some(header) = Header::read(query) else {
            return ControlFlow::Break(self.drop_query(DropReason::Malformed));
        };
        if header.has(FLAG_QR) {
            return ControlFlow::Break(self.drop_query(DropReason::NotAQuery));
        }
        let ip = client.addr.ip();
        if client.transport == Transport::Udp
            && let Some(limiter) = &mut self.limiter
        {
            match limiter.check(now, ip) {
                ratelimit::Verdict::Allow => {}
                ratelimit::Verdict::Drop => {
                    self.stats.rate_limited += 1;
                    return ControlFlow::Break(self.drop_query(DropReason::RateLimited));
                }
                ratelimit::Verdict::Slip => {
                    self.stats.rate_limited += 1;
                    self.slip(out, &header, query);
                    return ControlFlow::Break(QueryOutcome::Answered(AnswerKind::Truncated));
                }
            }
        }
        if !acl::allowed(&self.allow, ip) {
            self.stats.refused += 1;
            self.bare_reply(out, &header, query, rcode::REFUSED);
            return ControlFlow::Break(QueryOutcome::Answered(AnswerKind::Refused));
        }
        ControlFlow::Continue(())
    }

    /// Counts and returns a drop (every stage drops through here, so `stats.dropped` is
    /// complete).
    pub(super) fn drop_query(&mut self, reason: DropReason) -> QueryOutcome {
        self.stats.dropped += 1;
        QueryOutcome::Dropped(reason)
    }

    /// Writes a reply with no records and `rcode`, echoing ID, flags and (if readable) the
    /// question and the client's OPT: what refusals and rate-limit slips send.
    fn bare_reply(&self, out: &mut Vec<u8>, header: &Header, query: &[u8], rcode: u16) {
        let question = (header.qdcount == 1)
            .then(|| RawQuestion::read(query))
            .flatten();
        response::error(
            out,
            &ErrorReply {
                id: header.id,
                opcode: header.opcode(),
                client_flags: header.flags,
                question: question.as_ref(),
                edns: crate::query::readable_edns(query),
                rcode,
                max_len: query.len(),
            },
            self.cfg.edns_udp_size,
        );
    }

    /// Writes the empty TC=1 reply for a rate-limited client.
    fn slip(&self, out: &mut Vec<u8>, header: &Header, query: &[u8]) {
        self.bare_reply(out, header, query, rcode::NOERROR);
        let flags = wire::get_u16(out, 2).unwrap_or(0) | FLAG_TC;
        wire::put_u16(out, 2, flags);
    }
}
