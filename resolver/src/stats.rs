//! Counters of one resolver instance, read by the daemon for status and metrics.
//!
//! Why plain `u64`s: the core is single-threaded per instance; the daemon copies a snapshot
//! (`Resolver::stats`) and labels it with the namespace.

/// Counters since the instance was created (never reset by `flush`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Client messages passed to `handle_query`.
    pub queries: u64,
    /// Answered from local records.
    pub local_answers: u64,
    /// Answered from fresh cache.
    pub cache_hits: u64,
    /// Needed upstream (or stale) data.
    pub cache_misses: u64,
    /// Answered with stale data (RFC 8767).
    pub stale_answers: u64,
    /// Answers relayed from upstream.
    pub upstream_answers: u64,
    /// Queries attached to an identical in-flight query.
    pub coalesced: u64,
    /// Messages sent upstream (including TCP retries and probes).
    pub upstream_queries: u64,
    /// Valid upstream responses received.
    pub upstream_responses: u64,
    /// Upstream attempts that timed out or failed (incl. SERVFAIL/REFUSED replies).
    pub upstream_failures: u64,
    /// Upstream messages ignored (bad ID, source, question, garbage).
    pub upstream_ignored: u64,
    /// UDP answers with TC that were retried over TCP.
    pub tcp_retries: u64,
    /// Sum of upstream round-trip times, microseconds (divide by `latency_count`).
    pub latency_sum_us: u64,
    /// Number of round-trip samples.
    pub latency_count: u64,
    /// REFUSED answers (access control).
    pub refused: u64,
    /// FORMERR answers.
    pub formerr: u64,
    /// NOTIMP answers.
    pub notimp: u64,
    /// BADVERS answers.
    pub badvers: u64,
    /// SERVFAIL answers generated here.
    pub servfail: u64,
    /// Queries dropped without answer (malformed, responses, overload).
    pub dropped: u64,
    /// Queries dropped or slipped by the rate limiter.
    pub rate_limited: u64,
    /// ANY queries answered with the RFC 8482 HINFO record.
    pub any_minimal: u64,
    /// Client retransmissions of a query still waiting (answered once, not added again).
    pub retransmits: u64,
}
