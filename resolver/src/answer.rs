//! `StoredAnswer`: an upstream response kept as wire bytes, ready to be replayed to any
//! client by patching ID, flags, question case and TTLs.
//!
//! Why wire bytes: re-encoding through a DNS library loses upstream details (record order,
//! unknown types, EDE options) and costs a full decode/encode per cache hit. Patching a
//! copy is a memcpy plus a few stores (see `tests::render_cost` for a rough figure).

use crate::query::ClientQuery;
use crate::response;
use crate::wire::{
    self, FLAG_AD, FLAG_CD, FLAG_RA, FLAG_RD, FLAG_TC, Header, Layout, OPT_EDE, TYPE_OPT, TYPE_SOA,
    rcode,
};

/// TTL limits applied when an answer is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TtlCaps {
    /// Cap for positive answers, seconds.
    pub(crate) max_ttl: u32,
    /// Cap for negative answers (RFC 2308 §5), seconds.
    pub(crate) max_negative_ttl: u32,
}

/// An upstream response, normalised for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredAnswer {
    /// The message without its OPT record (and anything after it), TTLs already capped.
    wire: Vec<u8>,
    /// Length of the question name at offset 12 (patched with the client's case).
    qname_len: usize,
    /// Offsets of every TTL field to count down.
    ttl_offsets: Vec<usize>,
    /// Upper RCODE bits from the upstream OPT.
    rcode_high: u8,
    /// Upstream AD flag.
    ad: bool,
    /// Upstream TC flag (only kept for TCP answers that still say TC; never cached).
    tc: bool,
    /// Extended DNS Error options (RFC 8914) relayed from upstream.
    ede: Vec<u8>,
    /// How long this may be cached, seconds; 0 means "do not cache".
    lifetime: u32,
}

impl StoredAnswer {
    /// Normalises a validated upstream response. `None` if the bytes do not walk.
    pub(crate) fn from_upstream(buf: &[u8], caps: TtlCaps) -> Option<Self> {
        let header = Header::read(buf)?;
        let layout: Layout = wire::layout(buf)?;
        if header.qdcount != 1 {
            return None;
        }
        let qname_len = wire::qname_end(buf, wire::HEADER_LEN)? - wire::HEADER_LEN;
        let mut rcode_high = 0;
        let mut ede = Vec::new();
        let mut cut = buf.len();
        let mut additionals_kept = header.arcount;
        let mut kept = Vec::with_capacity(layout.records.len());
        let mut seen_additional = 0u16;
        for rec in &layout.records {
            if rec.section == 2 {
                if rec.rtype == TYPE_OPT {
                    if let Some(info) = wire::edns_info(buf, rec) {
                        rcode_high = info.rcode_high;
                    }
                    ede = wire::filter_options(buf.get(rec.rdata_off..rec.end)?, OPT_EDE);
                    // Drop the OPT and anything after it: additional data is optional, and
                    // cutting keeps every compression pointer before it valid.
                    cut = rec.start;
                    additionals_kept = seen_additional;
                    break;
                }
                seen_additional += 1;
            }
            kept.push(*rec);
        }
        let mut wire = buf.get(..cut)?.to_vec();
        wire::put_u16(&mut wire, 10, additionals_kept);

        let rcode_full = (u16::from(rcode_high) << 4) | header.rcode_low();
        let answers = kept.iter().filter(|r| r.section == 0).count();
        let negative =
            rcode_full == rcode::NXDOMAIN || (rcode_full == rcode::NOERROR && answers == 0);
        let tc = header.has(FLAG_TC);
        let min_ttl = kept
            .iter()
            .filter_map(|r| wire::get_u32(&wire, r.ttl_off))
            .min();
        let mut lifetime = if tc || !(rcode_full == rcode::NOERROR || rcode_full == rcode::NXDOMAIN)
        {
            0
        } else if negative {
            // RFC 2308 §5: min(SOA TTL, SOA MINIMUM), and no SOA means no caching.
            kept.iter()
                .filter(|r| r.section == 1 && r.rtype == TYPE_SOA)
                .filter_map(|r| {
                    let ttl = wire::get_u32(&wire, r.ttl_off)?;
                    let minimum = wire::get_u32(&wire, r.end.checked_sub(4)?)?;
                    Some(ttl.min(minimum))
                })
                .min()
                .unwrap_or(0)
                .min(caps.max_negative_ttl)
        } else {
            caps.max_ttl
        };
        if let Some(m) = min_ttl {
            lifetime = lifetime.min(m);
        }
        // Cap every record TTL: negative answers advertise the negative TTL (RFC 2308 §3),
        // positive ones at most max_ttl.
        let cap = if negative { lifetime } else { caps.max_ttl };
        let ttl_offsets: Vec<usize> = kept.iter().map(|r| r.ttl_off).collect();
        for &off in &ttl_offsets {
            if let Some(t) = wire::get_u32(&wire, off) {
                wire::put_u32(&mut wire, off, t.min(cap));
            }
        }
        Some(Self {
            wire,
            qname_len,
            ttl_offsets,
            rcode_high,
            ad: header.has(FLAG_AD),
            tc,
            ede,
            lifetime,
        })
    }

    /// Seconds this answer may stay in the cache (0: not cacheable).
    pub(crate) fn lifetime(&self) -> u32 {
        self.lifetime
    }

    /// Full (extended) RCODE.
    pub(crate) fn rcode(&self) -> u16 {
        (u16::from(self.rcode_high) << 4) | (wire::get_u16(&self.wire, 2).unwrap_or(0) & 0xF)
    }

    /// Approximate memory held, for the cache byte bound.
    pub(crate) fn size(&self) -> usize {
        self.wire.len() + self.ede.len() + self.ttl_offsets.len() * 8 + 96
    }

    /// Writes this answer for client `q` into `out`. `elapsed` seconds are taken off every
    /// TTL; `stale_ttl` replaces all TTLs (RFC 8767 serve-stale). Sets TC (and drops the
    /// records) when it exceeds `limit`.
    pub(crate) fn render(
        &self,
        out: &mut Vec<u8>,
        q: &ClientQuery,
        elapsed: u32,
        stale_ttl: Option<u32>,
        our_payload: u16,
        limit: usize,
    ) {
        out.clear();
        out.extend_from_slice(&self.wire);
        wire::put_u16(out, 0, q.id);
        let mut bits = FLAG_RA;
        if q.rd {
            bits |= FLAG_RD;
        }
        if q.cd {
            bits |= FLAG_CD;
        }
        if self.ad && q.wants_ad() {
            bits |= FLAG_AD;
        }
        if self.tc {
            bits |= FLAG_TC;
        }
        let low = wire::get_u16(&self.wire, 2).unwrap_or(0) & 0xF;
        wire::put_u16(out, 2, wire::response_flags(0, low, bits));
        if self.qname_len == q.question.qname.len()
            && let Some(dst) = out.get_mut(wire::HEADER_LEN..wire::HEADER_LEN + self.qname_len)
        {
            dst.copy_from_slice(&q.question.qname);
        }
        for &off in &self.ttl_offsets {
            let ttl = match stale_ttl {
                Some(s) => s,
                None => wire::get_u32(out, off).unwrap_or(0).saturating_sub(elapsed),
            };
            wire::put_u32(out, off, ttl);
        }
        if let Some(e) = q.edns {
            wire::push_opt(out, our_payload, self.rcode_high, e.dnssec_ok, &self.ede);
            let ar = wire::get_u16(out, 10).unwrap_or(0).saturating_add(1);
            wire::put_u16(out, 10, ar);
        }
        response::fit(out, q, limit, our_payload, self.rcode_high);
        let code = self.rcode();
        if code != rcode::NOERROR && code != rcode::NXDOMAIN && out.len() > q.len {
            // A relayed upstream error (SERVFAIL with EDE text, REFUSED with records...) is
            // never longer than the query: only the bare error goes back.
            response::query_error(out, q, code, our_payload);
        }
    }
}
