//! What the operator sees of one namespace's resolver: its counters copied into the
//! namespace's metrics, upstream down/up transitions logged once each, and the optional
//! query log (`[observe] query_log`).
//!
//! Why deltas of the core's own statistics: the core already counts every outcome exactly
//! once (cache hits, misses, upstream failures); copying the difference after each pump,
//! every [`SYNC_EVERY`] queries and before each scrape keeps one definition of each number
//! and adds no branch to the core's hot path.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nsaux_resolver::{AnswerKind, ClientAnswer, ClientInfo, QueryOutcome, Stats};

use super::query_log::{Admit, LINES_PER_SECOND};
use super::{DnsNs, Inner};
use crate::metrics::C;

/// What was last copied: the core's counters the metrics follow and each upstream's down flag.
#[derive(Debug, Default)]
pub(super) struct Seen {
    stats: Copied,
    down: Vec<(SocketAddr, bool)>,
    /// Client queries since the last copy.
    unsynced: u32,
}

/// Client queries between two copies on the query path: copying costs more than the answer's
/// other bookkeeping, and every scrape copies first anyway (through `NsService::sync_metrics`,
/// which the manager's namespace count for a scrape calls), so a scrape never sees stale counts.
const SYNC_EVERY: u32 = 64;

/// The core's counters the metrics follow, as last copied. Why not the whole [`Stats`]: it
/// has ten more counters, 72 bytes per namespace for nothing (issue 16: bytes per namespace).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Copied {
    queries: u64,
    answers: u64,
    dropped: u64,
    rate_limited: u64,
    refused: u64,
    local_answers: u64,
    cache_hits: u64,
    cache_misses: u64,
    stale_answers: u64,
    upstream_answers: u64,
    upstream_queries: u64,
    upstream_failures: u64,
    servfail: u64,
    upstream_responses: u64,
}

impl From<&Stats> for Copied {
    fn from(s: &Stats) -> Self {
        Self {
            queries: s.queries,
            answers: s.local_answers
                + s.cache_hits
                + s.stale_answers
                + s.upstream_answers
                + s.refused
                + s.formerr
                + s.notimp
                + s.badvers
                + s.servfail
                + s.any_minimal,
            dropped: s.dropped,
            rate_limited: s.rate_limited,
            refused: s.refused,
            local_answers: s.local_answers,
            cache_hits: s.cache_hits,
            cache_misses: s.cache_misses,
            stale_answers: s.stale_answers,
            upstream_answers: s.upstream_answers,
            upstream_queries: s.upstream_queries,
            upstream_failures: s.upstream_failures,
            servfail: s.servfail,
            upstream_responses: s.upstream_responses,
        }
    }
}

/// `cur - prev` (never negative, whatever the core did).
fn delta(cur: u64, prev: u64) -> u64 {
    cur.saturating_sub(prev)
}

impl DnsNs {
    /// Copies what the core counted since the last call, and logs upstream transitions.
    pub(super) fn sync_metrics(&self, g: &mut Inner) {
        g.seen.unsynced = 0;
        let s = Copied::from(&g.resolver.stats());
        if s == g.seen.stats {
            return;
        }
        // A core replaced by a settings change counts from zero again (queries never fall
        // otherwise): then everything it counted is new.
        let p = if s.queries < g.seen.stats.queries {
            Copied::default()
        } else {
            g.seen.stats
        };
        let m = &self.ns.metrics;
        for (c, cur, prev) in [
            (C::DnsRequests, s.queries, p.queries),
            (C::DnsAnswers, s.answers, p.answers),
            (C::DnsDropped, s.dropped, p.dropped),
            (C::DnsRateLimited, s.rate_limited, p.rate_limited),
            (C::DnsRefused, s.refused, p.refused),
            (C::DnsLocal, s.local_answers, p.local_answers),
            (C::DnsCacheHits, s.cache_hits, p.cache_hits),
            (C::DnsCacheMisses, s.cache_misses, p.cache_misses),
            (C::DnsStale, s.stale_answers, p.stale_answers),
            (
                C::DnsUpstreamAnswers,
                s.upstream_answers,
                p.upstream_answers,
            ),
            (
                C::DnsUpstreamQueries,
                s.upstream_queries,
                p.upstream_queries,
            ),
            (
                C::DnsUpstreamFailures,
                s.upstream_failures,
                p.upstream_failures,
            ),
            (C::DnsServfail, s.servfail, p.servfail),
        ] {
            let d = delta(cur, prev);
            if d > 0 {
                m.add(c, d);
            }
        }
        let upstream_moved = s.upstream_failures != p.upstream_failures
            || s.upstream_responses != p.upstream_responses;
        g.seen.stats = s;
        if upstream_moved {
            self.log_transitions(g);
        }
    }

    /// Logs each upstream that went down (WARN) or came back (INFO) since the last look.
    fn log_transitions(&self, g: &mut Inner) {
        let now: Vec<(SocketAddr, bool)> = g
            .resolver
            .upstream_status()
            .iter()
            .map(|u| (u.addr, u.down))
            .collect();
        for (addr, down) in &now {
            let before = g
                .seen
                .down
                .iter()
                .find(|(a, _)| a == addr)
                .is_some_and(|(_, d)| *d);
            match (before, *down) {
                (false, true) => tracing::warn!(netns = %self.ns.name, upstream = %addr,
                    "dns: upstream down; trying the others and probing it"),
                (true, false) => {
                    tracing::info!(netns = %self.ns.name, upstream = %addr, "dns: upstream up again");
                }
                _ => {}
            }
        }
        g.seen.down = now;
    }

    /// Copies the counters now (before a scrape reads them).
    pub(super) fn sync_now(&self) {
        let mut g = self.lock();
        self.sync_metrics(&mut g);
    }

    /// After a client query: copies counters now and then, and logs an immediate answer when asked to.
    pub(super) fn after_query(
        &self,
        g: &mut Inner,
        client: ClientInfo,
        reply: &[u8],
        outcome: QueryOutcome,
    ) {
        g.seen.unsynced += 1;
        if g.seen.unsynced >= SYNC_EVERY {
            self.sync_metrics(g);
        }
        if let QueryOutcome::Answered(kind) = outcome
            && self.ns.metrics.query_log()
        {
            self.log_query(client.addr, reply, kind, Duration::ZERO);
        }
    }

    /// A deferred answer leaves: records the upstream latency and logs it when asked to.
    pub(super) fn on_deferred_answer(&self, a: &ClientAnswer, since: Instant) {
        let latency = since.elapsed();
        if a.kind == AnswerKind::Upstream {
            crate::metrics::observe_latency(latency);
        }
        if self.ns.metrics.query_log() {
            self.log_query(a.client.addr, &a.payload, a.kind, latency);
        }
    }

    /// One query-log line: client, name, type, rcode, where the answer came from, latency.
    /// At most `query_log::LINES_PER_SECOND` a second per namespace; the lines left out are
    /// counted and the count logged before the next line written.
    fn log_query(&self, client: SocketAddr, reply: &[u8], kind: AnswerKind, latency: Duration) {
        match self.query_log.admit(Instant::now()) {
            Admit::Suppress => return,
            Admit::WriteAfterSummary(n) => {
                tracing::warn!(target: "nsaux::query", netns = %self.ns.name, suppressed = n,
                    per_second = LINES_PER_SECOND, "dns query log: lines over the namespace's rate limit left out");
            }
            Admit::Write => {}
        }
        let (name, qtype) = question(reply).unwrap_or_else(|| ("?".into(), 0));
        let rcode = reply.get(3).map_or(0, |b| b & 0x0f);
        let from = match kind {
            AnswerKind::Local => "local",
            AnswerKind::Cache => "cache",
            AnswerKind::Stale => "stale",
            AnswerKind::Upstream => "upstream",
            _ => "generated",
        };
        tracing::info!(target: "nsaux::query", netns = %self.ns.name, %client, %name,
            qtype = %type_name(qtype), rcode = %rcode_name(rcode), from = %from,
            latency_ms = format_args!("{:.3}", latency.as_secs_f64() * 1e3), "dns query");
    }
}

/// The question name (dotted, absolute) and type of a DNS message, if it has one.
fn question(msg: &[u8]) -> Option<(String, u16)> {
    if u16::from_be_bytes([*msg.get(4)?, *msg.get(5)?]) == 0 {
        return None;
    }
    let mut i = 12;
    let mut name = String::new();
    loop {
        let len = usize::from(*msg.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        for &b in msg.get(i..i + len)? {
            if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                name.push(char::from(b));
            } else {
                name.push_str(&format!("\\{b:03}"));
            }
        }
        name.push('.');
        i += len;
    }
    if name.is_empty() {
        name.push('.');
    }
    Some((name, u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?])))
}

fn type_name(t: u16) -> String {
    let n = match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        65 => "HTTPS",
        255 => "ANY",
        _ => return format!("TYPE{t}"),
    };
    n.to_owned()
}

fn rcode_name(r: u8) -> &'static str {
    match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_is_read_from_a_reply() {
        let mut m = vec![0u8; 12];
        m[5] = 1;
        m.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x1c\x00\x01");
        assert_eq!(question(&m), Some(("www.example.com.".into(), 28)));
        assert_eq!(question(&m[..14]), None);
        assert_eq!(type_name(28), "AAAA");
        assert_eq!(type_name(99), "TYPE99");
    }
}
