//! Builders for the answers the resolver writes itself: errors, local (authoritative) data
//! and the truncated form of any answer that does not fit.
//!
//! Why by hand: these messages have a fixed shape, and writing them directly keeps the
//! client's question bytes verbatim (case preserved, RFC 1035 §7.3 echo).

use std::net::IpAddr;

use crate::query::ClientQuery;
use crate::wire::{
    self, CLASS_IN, FLAG_AA, FLAG_CD, FLAG_RA, FLAG_RD, FLAG_TC, Header, RawQuestion, TYPE_A,
    TYPE_AAAA, TYPE_PTR,
};

/// Echo bits (RD, CD) copied from client flags.
fn echo_bits(client_flags: u16) -> u16 {
    client_flags & (FLAG_RD | FLAG_CD)
}

/// What an error answer echoes back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorReply<'a> {
    /// Client's message ID.
    pub(crate) id: u16,
    /// Client's opcode (echoed, also for NOTIMP).
    pub(crate) opcode: u8,
    /// Client's flags word (RD and CD are echoed).
    pub(crate) client_flags: u16,
    /// Question to echo, when readable.
    pub(crate) question: Option<&'a RawQuestion>,
    /// Client EDNS: an OPT goes back only if one came in.
    pub(crate) edns: Option<wire::EdnsInfo>,
    /// RCODE, possibly extended (BADVERS).
    pub(crate) rcode: u16,
    /// Length of the query: the answer is never longer (an error must not amplify).
    pub(crate) max_len: usize,
}

/// Wire length of an OPT record without options.
const OPT_LEN: usize = 11;

/// Writes an error answer: header, the question if readable, and an OPT if the client sent
/// one (which also carries the high bits of an extended RCODE such as BADVERS). Whatever
/// would make it longer than `max_len` is left out: the OPT first (unless the RCODE needs
/// it), then the question; the header alone always fits a query that was read at all.
pub(crate) fn error(out: &mut Vec<u8>, e: &ErrorReply<'_>, our_payload: u16) {
    out.clear();
    let q_len = e.question.map_or(0, RawQuestion::wire_len);
    let opt_len = if e.edns.is_some() { OPT_LEN } else { 0 };
    let needs_opt = e.rcode > 0xF;
    let fits = |with_q: bool, with_opt: bool| {
        wire::HEADER_LEN + if with_q { q_len } else { 0 } + if with_opt { opt_len } else { 0 }
            <= e.max_len
    };
    let (question, edns) = if fits(true, true) {
        (e.question, e.edns)
    } else if !needs_opt && fits(true, false) {
        (e.question, None)
    } else if fits(false, true) {
        (None, e.edns)
    } else {
        (None, None)
    };
    Header {
        id: e.id,
        flags: wire::response_flags(e.opcode, e.rcode & 0xF, echo_bits(e.client_flags) | FLAG_RA),
        qdcount: u16::from(question.is_some()),
        ancount: 0,
        nscount: 0,
        arcount: u16::from(edns.is_some()),
    }
    .push(out);
    if let Some(q) = question {
        q.push(out);
    }
    if let Some(ed) = edns {
        wire::push_opt(out, our_payload, (e.rcode >> 4) as u8, ed.dnssec_ok, &[]);
    }
}

/// Error answer for a vetted query.
pub(crate) fn query_error(out: &mut Vec<u8>, q: &ClientQuery, rcode: u16, our_payload: u16) {
    error(
        out,
        &ErrorReply {
            id: q.id,
            opcode: 0,
            client_flags: client_flags(q),
            question: Some(&q.question),
            edns: q.edns,
            rcode,
            max_len: q.len,
        },
        our_payload,
    );
}

/// Reconstructs the echoable client flags.
fn client_flags(q: &ClientQuery) -> u16 {
    (if q.rd { FLAG_RD } else { 0 }) | (if q.cd { FLAG_CD } else { 0 })
}

/// Local data for one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LocalData {
    /// An address (A or AAAA by family).
    Addr(IpAddr),
    /// A PTR target, as an uncompressed wire name.
    Ptr(Vec<u8>),
}

/// Writes an authoritative local answer (AA set). Every record's owner is the question name,
/// so it is a pointer to offset 12. `rcode` is NOERROR (data or NODATA) or NXDOMAIN.
pub(crate) fn local(
    out: &mut Vec<u8>,
    q: &ClientQuery,
    data: &[LocalData],
    ttl: u32,
    rcode: u16,
    our_payload: u16,
    limit: usize,
) {
    out.clear();
    let ancount = u16::try_from(data.len()).unwrap_or(u16::MAX);
    Header {
        id: q.id,
        flags: wire::response_flags(0, rcode, client_flags(q) | FLAG_RA | FLAG_AA),
        qdcount: 1,
        ancount,
        nscount: 0,
        arcount: u16::from(q.edns.is_some()),
    }
    .push(out);
    q.question.push(out);
    for d in data.iter().take(usize::from(ancount)) {
        out.extend_from_slice(&[0xC0, 0x0C]);
        let (rtype, rdata): (u16, Vec<u8>) = match d {
            LocalData::Addr(IpAddr::V4(a)) => (TYPE_A, a.octets().to_vec()),
            LocalData::Addr(IpAddr::V6(a)) => (TYPE_AAAA, a.octets().to_vec()),
            LocalData::Ptr(name) => (TYPE_PTR, name.clone()),
        };
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&u16::try_from(rdata.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    if let Some(e) = q.edns {
        wire::push_opt(out, our_payload, 0, e.dnssec_ok, &[]);
    }
    fit(out, q, limit, our_payload, 0);
}

/// If `out` exceeds `limit`, replaces it with the same header (TC set, no records), the
/// question and the OPT: the client retries over TCP (RFC 1035 §4.2.1, RFC 7766).
pub(crate) fn fit(
    out: &mut Vec<u8>,
    q: &ClientQuery,
    limit: usize,
    our_payload: u16,
    rcode_high: u8,
) {
    if out.len() <= limit {
        return;
    }
    let flags = wire::get_u16(out, 2).unwrap_or(0) | FLAG_TC;
    out.clear();
    Header {
        id: q.id,
        flags,
        qdcount: 1,
        ancount: 0,
        nscount: 0,
        arcount: u16::from(q.edns.is_some()),
    }
    .push(out);
    q.question.push(out);
    if let Some(e) = q.edns {
        wire::push_opt(out, our_payload, rcode_high, e.dnssec_ok, &[]);
    }
}
