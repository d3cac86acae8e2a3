//! Stage 3b of the client path: QTYPE ANY (255) is answered minimally (RFC 8482) and never
//! forwarded or looked up in the cache.
//!
//! Why: a full ANY answer relayed from upstream is the classic DNS amplification vector, and
//! RFC 8482 lets a resolver answer with one synthesized HINFO record instead. Local names
//! still get their own (single RRset) answer in the stage before this one.

use std::ops::ControlFlow;

use super::{Resolver, Stage};
use crate::event::{AnswerKind, QueryOutcome, Transport};
use crate::query::ClientQuery;
use crate::response;
use crate::wire::{self, FLAG_CD, FLAG_RA, FLAG_RD, Header, TYPE_ANY, rcode};

/// Record type HINFO.
const TYPE_HINFO: u16 = 13;
/// TTL of the synthesized HINFO (RFC 8482 §4.2 suggests 3789 seconds).
const HINFO_TTL: u32 = 3789;
/// HINFO RDATA: CPU "RFC8482", OS "" (RFC 8482 §4.2).
const HINFO_RDATA: &[u8] = b"\x07RFC8482\x00";

/// The size limit for an answer to `q`: over UDP an ANY answer is at most twice the query
/// (beyond that it goes back truncated), so ANY can never amplify much.
pub(super) fn any_limit(q: &ClientQuery, limit: usize) -> usize {
    if q.question.qtype == TYPE_ANY && q.transport == Transport::Udp {
        limit.min(q.len.saturating_mul(2))
    } else {
        limit
    }
}

impl Resolver {
    /// Answers an ANY query with one synthesized `HINFO "RFC8482" ""` record.
    pub(super) fn answer_any(
        &mut self,
        q: &ClientQuery,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Stage<()> {
        if q.question.qtype != TYPE_ANY {
            return ControlFlow::Continue(());
        }
        self.stats.any_minimal += 1;
        minimal_any(out, q, self.cfg.edns_udp_size, limit);
        ControlFlow::Break(QueryOutcome::Answered(AnswerKind::MinimalAny))
    }
}

/// Writes the RFC 8482 answer for `q` (not authoritative: this is a forwarder's answer).
fn minimal_any(out: &mut Vec<u8>, q: &ClientQuery, our_payload: u16, limit: usize) {
    out.clear();
    let echo = (if q.rd { FLAG_RD } else { 0 }) | (if q.cd { FLAG_CD } else { 0 });
    Header {
        id: q.id,
        flags: wire::response_flags(0, rcode::NOERROR, echo | FLAG_RA),
        qdcount: 1,
        ancount: 1,
        nscount: 0,
        arcount: u16::from(q.edns.is_some()),
    }
    .push(out);
    q.question.push(out);
    out.extend_from_slice(&[0xC0, 0x0C]);
    out.extend_from_slice(&TYPE_HINFO.to_be_bytes());
    out.extend_from_slice(&q.question.qclass.to_be_bytes());
    out.extend_from_slice(&HINFO_TTL.to_be_bytes());
    out.extend_from_slice(&(HINFO_RDATA.len() as u16).to_be_bytes());
    out.extend_from_slice(HINFO_RDATA);
    if let Some(e) = q.edns {
        wire::push_opt(out, our_payload, 0, e.dnssec_ok, &[]);
    }
    response::fit(out, q, limit, our_payload, 0);
}
