//! Counters for the Prometheus exposition: what each namespace's services did, kept where a
//! reload cannot reset them.
//!
//! Why this shape: the hot path pays one relaxed atomic add per event on a struct its
//! namespace owns ([`NsMetrics`], held by `NsInfo`), with no lock and no shared cache line
//! between namespaces. Daemon-wide series are summed at scrape time over the live namespaces
//! plus [`Retired`] (what namespaces that are gone had counted, folded in when their struct is
//! dropped), so daemon-wide counters never go backwards when a namespace leaves. `NsInfo`
//! outlives reloads and service rebuilds, so counters survive both. Per-namespace series are
//! emitted only for names matching the `[observe] per_namespace` globs, straight from the
//! live structs: a namespace that leaves takes its series with it.

pub(crate) mod encode;
pub(crate) mod observe;
pub(crate) mod rpcbind;

use rpcbind::RPC_SLOTS;
pub(crate) use rpcbind::{NsRpc, RPC_PROCS};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// One counter of a namespace. The order is the order of [`SERIES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum C {
    NtpRequests,
    NtpAnswers,
    NtpKisses,
    NtpDropDenied,
    NtpDropMalformed,
    NtpDropMode,
    NtpDropAuth,
    NtpDropUnsynchronised,
    NtpDropRateLimited,
    DnsRequests,
    DnsAnswers,
    DnsDropped,
    DnsRateLimited,
    DnsRefused,
    DnsLocal,
    DnsCacheHits,
    DnsCacheMisses,
    DnsStale,
    DnsUpstreamAnswers,
    DnsUpstreamQueries,
    DnsUpstreamFailures,
    DnsServfail,
    RpcRequests,
    RpcAnswers,
    RpcDropped,
}

/// Number of [`C`] counters.
pub(crate) const N: usize = C::RpcDropped as usize + 1;

/// The series a counter belongs to, with its labels, and whether it is also shown per
/// namespace (a short list, so opted-in namespaces cost few series each).
#[derive(Debug)]
pub(crate) struct Series {
    /// Metric name without `_total` (the encoder adds it).
    pub(crate) name: &'static str,
    /// `# HELP` text.
    pub(crate) help: &'static str,
    /// Labels of this sample.
    pub(crate) labels: &'static [(&'static str, &'static str)],
    /// Also emitted as `nsaux_netns_*` with a `netns` label for opted-in namespaces.
    pub(crate) per_ns: bool,
}

const REQ: &str = "Requests received, by service";
const ANS: &str = "Answers sent, by service";
const DROP: &str = "Requests dropped without an answer, by service and reason";

const fn s(
    name: &'static str,
    help: &'static str,
    labels: &'static [(&'static str, &'static str)],
    per_ns: bool,
) -> Series {
    Series {
        name,
        help,
        labels,
        per_ns,
    }
}

/// Description of every [`C`], in the same order.
pub(crate) static SERIES: [Series; N] = [
    s("nsaux_requests", REQ, &[("service", "ntp")], true),
    s("nsaux_answers", ANS, &[("service", "ntp")], true),
    s(
        "nsaux_ntp_kisses",
        "NTP rate-limit kiss-o'-death (RATE) replies sent",
        &[],
        false,
    ),
    s(
        "nsaux_drops",
        DROP,
        &[("service", "ntp"), ("reason", "denied")],
        true,
    ),
    s(
        "nsaux_drops",
        DROP,
        &[("service", "ntp"), ("reason", "malformed")],
        true,
    ),
    s(
        "nsaux_drops",
        DROP,
        &[("service", "ntp"), ("reason", "mode")],
        true,
    ),
    s(
        "nsaux_drops",
        DROP,
        &[("service", "ntp"), ("reason", "authenticated")],
        true,
    ),
    s(
        "nsaux_drops",
        DROP,
        &[("service", "ntp"), ("reason", "unsynchronised")],
        true,
    ),
    s(
        "nsaux_drops",
        DROP,
        &[("service", "ntp"), ("reason", "rate_limited")],
        true,
    ),
    s("nsaux_requests", REQ, &[("service", "dns")], true),
    s("nsaux_answers", ANS, &[("service", "dns")], true),
    s(
        "nsaux_drops",
        DROP,
        &[("service", "dns"), ("reason", "malformed_or_overload")],
        true,
    ),
    s(
        "nsaux_drops",
        DROP,
        &[("service", "dns"), ("reason", "rate_limited")],
        true,
    ),
    s(
        "nsaux_dns_answers_by_source",
        "DNS answers by where they came from",
        &[("source", "refused")],
        false,
    ),
    s(
        "nsaux_dns_answers_by_source",
        "DNS answers by where they came from",
        &[("source", "local")],
        false,
    ),
    s(
        "nsaux_dns_cache_hits",
        "DNS queries answered from fresh cache",
        &[],
        true,
    ),
    s(
        "nsaux_dns_cache_misses",
        "DNS queries that needed upstream (or stale) data",
        &[],
        true,
    ),
    s(
        "nsaux_dns_answers_by_source",
        "DNS answers by where they came from",
        &[("source", "stale")],
        false,
    ),
    s(
        "nsaux_dns_answers_by_source",
        "DNS answers by where they came from",
        &[("source", "upstream")],
        false,
    ),
    s(
        "nsaux_dns_upstream_queries",
        "DNS messages sent to upstream servers (retries and probes included)",
        &[],
        false,
    ),
    s(
        "nsaux_dns_upstream_failures",
        "DNS upstream attempts that timed out or failed (SERVFAIL/REFUSED replies included)",
        &[],
        true,
    ),
    s(
        "nsaux_dns_answers_by_source",
        "DNS answers by where they came from",
        &[("source", "servfail")],
        false,
    ),
    s("nsaux_requests", REQ, &[("service", "rpcbind")], true),
    s("nsaux_answers", ANS, &[("service", "rpcbind")], true),
    s(
        "nsaux_drops",
        DROP,
        &[("service", "rpcbind"), ("reason", "unanswered")],
        true,
    ),
];

/// Upper bounds (seconds) of the upstream latency histogram: 1 ms to 5 s.
pub(crate) const LATENCY_BOUNDS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// One namespace's counters. Why atomics in a struct of its own: every service of the
/// namespace adds to it from whatever task it runs on, without a lock.
#[derive(Debug)]
pub(crate) struct Counters {
    c: [AtomicU64; N],
    rpc: [AtomicU64; RPC_SLOTS],
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            c: std::array::from_fn(|_| AtomicU64::new(0)),
            rpc: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Counters {
    /// Adds `n` to counter `c` (relaxed: counters order nothing).
    #[inline]
    pub(crate) fn add(&self, c: C, n: u64) {
        self.c[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one to counter `c`.
    #[inline]
    pub(crate) fn inc(&self, c: C) {
        self.add(c, 1);
    }

    /// The value of counter index `i`.
    pub(crate) fn get(&self, i: usize) -> u64 {
        self.c.get(i).map_or(0, |a| a.load(Ordering::Relaxed))
    }

    fn fold_into(&self, other: &Self) {
        for (a, b) in self.c.iter().zip(other.c.iter()) {
            b.fetch_add(a.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        for (a, b) in self.rpc.iter().zip(other.rpc.iter()) {
            b.fetch_add(a.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Counts one NTP request and what the core decided about it.
    pub(crate) fn ntp(&self, action: &nsaux_ntpshim::Action) {
        use nsaux_ntpshim::{Action, DropReason as D, ResponseKind};
        self.inc(C::NtpRequests);
        let c = match action {
            Action::Respond {
                kind: ResponseKind::KissRate,
                ..
            } => {
                self.inc(C::NtpAnswers);
                C::NtpKisses
            }
            Action::Respond { .. } => C::NtpAnswers,
            Action::Ignore(D::Denied) => C::NtpDropDenied,
            Action::Ignore(D::Mode0 | D::Mode1 | D::Mode2 | D::Mode4 | D::Mode5)
            | Action::Ignore(D::Mode6 | D::Mode7) => C::NtpDropMode,
            Action::Ignore(D::Authenticated | D::Nts) => C::NtpDropAuth,
            Action::Ignore(D::Unsynchronised) => C::NtpDropUnsynchronised,
            Action::Ignore(D::RateLimited) => C::NtpDropRateLimited,
            Action::Ignore(_) => C::NtpDropMalformed,
        };
        self.inc(c);
    }
}

/// What one namespace counts, plus the flags the manager sets from `[observe]`.
#[derive(Debug, Default)]
pub(crate) struct NsMetrics {
    /// The counters.
    pub(crate) counters: Counters,
    /// Log every DNS query of this namespace (`[observe] query_log` matched its name).
    pub(crate) query_log: AtomicBool,
    /// Portmapper registrations now in the namespace's table (a gauge, not folded on drop).
    registrations: AtomicU64,
}

impl NsMetrics {
    /// Whether the DNS query log is on for this namespace.
    #[inline]
    pub(crate) fn query_log(&self) -> bool {
        self.query_log.load(Ordering::Relaxed)
    }
}

impl std::ops::Deref for NsMetrics {
    type Target = Counters;
    fn deref(&self) -> &Counters {
        &self.counters
    }
}

impl Drop for NsMetrics {
    fn drop(&mut self) {
        self.counters.fold_into(&TALLY.retired);
    }
}

/// A live namespace as the scrape sees it.
#[derive(Debug)]
struct Live {
    name: String,
    gone: CancellationToken,
    metrics: Weak<NsMetrics>,
}

/// Everything daemon-wide: the live namespaces, what gone ones counted, the histogram and
/// the journal counters.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    live: Mutex<Vec<Live>>,
    /// What namespaces that are gone had counted.
    retired: Counters,
    /// Upstream latency histogram buckets (non-cumulative), plus sum (µs) and count.
    latency: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    latency_sum_us: AtomicU64,
    /// Journal writes (appends and rewrites) that succeeded.
    pub(crate) journal_writes: AtomicU64,
    /// Journal writes that failed.
    pub(crate) journal_failures: AtomicU64,
    /// `[observe] per_namespace` globs now in force.
    per_ns: Mutex<Vec<glob::Pattern>>,
    /// `[observe] query_log` globs now in force.
    query_log: Mutex<Vec<glob::Pattern>>,
}

/// The one tally of the process.
pub(crate) static TALLY: LazyLock<Tally> = LazyLock::new(Tally::default);

/// Creates the counters of a new namespace and lists them for scrapes; `gone` (the
/// namespace's cancel token) hides its per-namespace series as soon as it leaves.
pub(crate) fn register(name: &str, gone: &CancellationToken) -> Arc<NsMetrics> {
    let m = Arc::new(NsMetrics::default());
    let log = crate::lock::lock(&TALLY.query_log)
        .iter()
        .any(|g| g.matches(name));
    m.query_log.store(log, Ordering::Relaxed);
    let mut live = crate::lock::lock(&TALLY.live);
    // Entries of gone namespaces are dropped every 1024 arrivals: amortised O(1) per
    // namespace (a retain per arrival would be quadratic when 10,000 arrive at once).
    if live.len() % 1024 == 1023 {
        live.retain(|l| l.metrics.strong_count() > 0);
    }
    live.push(Live {
        name: name.to_owned(),
        gone: gone.clone(),
        metrics: Arc::downgrade(&m),
    });
    m
}

/// Records one upstream-answered DNS query's latency (from query to answer).
pub(crate) fn observe_latency(d: Duration) {
    let secs = d.as_secs_f64();
    let i = LATENCY_BOUNDS
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(LATENCY_BOUNDS.len());
    TALLY.latency[i].fetch_add(1, Ordering::Relaxed);
    TALLY.latency_sum_us.fetch_add(
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// Counts a journal write's result.
pub(crate) fn journal<T>(r: &std::io::Result<T>) {
    let c = if r.is_ok() {
        &TALLY.journal_writes
    } else {
        &TALLY.journal_failures
    };
    c.fetch_add(1, Ordering::Relaxed);
}

/// Counts a journal write that failed before it was attempted (file not openable).
pub(crate) fn journal_failed() {
    TALLY.journal_failures.fetch_add(1, Ordering::Relaxed);
}

/// Installs the `[observe]` globs (at start and on every reload): which namespaces get their
/// own series and which log their DNS queries, including those already running.
pub(crate) fn configure(cfg: &crate::config::ObserveConfig) {
    *crate::lock::lock(&TALLY.per_ns) = cfg.per_namespace.clone();
    *crate::lock::lock(&TALLY.query_log) = cfg.query_log.clone();
    for l in crate::lock::lock(&TALLY.live).iter() {
        if let Some(m) = l.metrics.upgrade() {
            let on = cfg.query_log.iter().any(|g| g.matches(&l.name));
            m.query_log.store(on, Ordering::Relaxed);
        }
    }
}

/// A consistent-enough copy of every counter for one scrape.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Daemon-wide sums of every [`C`].
    pub(crate) totals: Vec<u64>,
    /// Daemon-wide portmapper calls, `[version index][procedure]`.
    pub(crate) rpc: Vec<Vec<u64>>,
    /// Per-namespace values of the `per_ns` series, for opted-in namespaces, by name.
    pub(crate) per_ns: Vec<(String, Vec<u64>)>,
    /// Portmapper registrations in all live namespaces.
    pub(crate) registrations: u64,
    /// Per-namespace portmapper calls and registrations, same namespaces and order as `per_ns`.
    pub(crate) per_ns_rpc: Vec<NsRpc>,
    /// Cumulative histogram buckets `(upper bound, count)`, then sum (s) and count.
    pub(crate) latency: Vec<(f64, u64)>,
    /// Sum of the latencies, seconds.
    pub(crate) latency_sum: f64,
    /// Number of latencies.
    pub(crate) latency_count: u64,
    /// Journal writes and failures.
    pub(crate) journal: (u64, u64),
    /// Waits a worker delayed to coalesce receives (`serve::coalesce`).
    pub(crate) coalesced_waits: u64,
    /// Times the quiet lane paused over its CPU budget (`serve::pace`).
    pub(crate) lane_pauses: u64,
}

/// Reads every counter.
pub(crate) fn snapshot() -> Snapshot {
    let globs = crate::lock::lock(&TALLY.per_ns).clone();
    let live: Vec<(String, bool, Arc<NsMetrics>)> = crate::lock::lock(&TALLY.live)
        .iter()
        .filter_map(|l| {
            l.metrics
                .upgrade()
                .map(|m| (l.name.clone(), l.gone.is_cancelled(), m))
        })
        .collect();
    let mut totals: Vec<u64> = (0..N).map(|i| TALLY.retired.get(i)).collect();
    let mut rpc: Vec<Vec<u64>> = RPC_PROCS
        .iter()
        .enumerate()
        .map(|(v, p)| (0..p.len()).map(|i| TALLY.retired.rpc_get(v, i)).collect())
        .collect();
    let mut per_ns = Vec::new();
    let mut per_ns_rpc = Vec::new();
    let mut registrations = 0;
    for (name, gone, m) in &live {
        for (i, t) in totals.iter_mut().enumerate() {
            *t += m.get(i);
        }
        for (v, row) in rpc.iter_mut().enumerate() {
            for (p, t) in row.iter_mut().enumerate() {
                *t += m.rpc_get(v, p);
            }
        }
        if !gone && globs.iter().any(|g| g.matches(name)) {
            let vals = (0..N)
                .filter(|i| SERIES[*i].per_ns)
                .map(|i| m.get(i))
                .collect();
            per_ns.push((name.clone(), vals));
            per_ns_rpc.push(m.rpc_of(name));
        }
        if !gone {
            registrations += m.registrations();
        }
    }
    per_ns.sort_by(|a, b| a.0.cmp(&b.0));
    per_ns_rpc.sort_by(|a, b| a.netns.cmp(&b.netns));
    let mut cumulative = 0;
    let latency = LATENCY_BOUNDS
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(TALLY.latency.iter())
        .map(|(b, c)| {
            cumulative += c.load(Ordering::Relaxed);
            (b, cumulative)
        })
        .collect();
    Snapshot {
        totals,
        rpc,
        per_ns,
        registrations,
        per_ns_rpc,
        latency,
        latency_sum: TALLY.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        latency_count: cumulative,
        journal: (
            TALLY.journal_writes.load(Ordering::Relaxed),
            TALLY.journal_failures.load(Ordering::Relaxed),
        ),
        coalesced_waits: crate::serve::coalesce::DELAYED_WAITS.load(Ordering::Relaxed),
        lane_pauses: crate::serve::quiet::LANE_PAUSES.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_table_matches_the_counter_enum() {
        assert_eq!(SERIES.len(), N);
        // A name's series share one help text and one set of label keys.
        for a in &SERIES {
            for b in SERIES.iter().filter(|b| b.name == a.name) {
                assert_eq!(a.help, b.help, "{}", a.name);
                let keys = |s: &Series| s.labels.iter().map(|l| l.0).collect::<Vec<_>>();
                assert_eq!(keys(a), keys(b), "{}", a.name);
            }
        }
    }

    #[test]
    fn ten_thousand_namespaces_cost_no_series_unless_opted_in() {
        let gone = CancellationToken::new();
        let all: Vec<_> = (0..10_000)
            .map(|i| register(&format!("bulk-{i}"), &gone))
            .collect();
        for m in &all {
            m.inc(C::NtpRequests);
        }
        let snap = snapshot();
        assert!(snap.totals[C::NtpRequests as usize] >= 10_000);
        assert!(snap.per_ns.iter().all(|(n, _)| !n.starts_with("bulk-")));
        let text = encode::text(snap, Vec::new());
        assert!(text.lines().count() < 200, "{} lines", text.lines().count());
        drop(all);
        // What they counted stays in the daemon-wide totals.
        assert!(snapshot().totals[C::NtpRequests as usize] >= 10_000);
    }

    #[test]
    fn rpc_calls_are_counted_by_version_and_procedure() {
        let c = Counters::default();
        let mut msg = vec![0u8; 24];
        msg[12..16].copy_from_slice(&100_000u32.to_be_bytes());
        msg[16..20].copy_from_slice(&2u32.to_be_bytes());
        msg[20..24].copy_from_slice(&3u32.to_be_bytes());
        c.rpc_call(&msg, true);
        c.rpc_call(&msg[..10], false);
        assert_eq!(c.rpc_get(0, 3), 1);
        assert_eq!(c.get(C::RpcRequests as usize), 2);
        assert_eq!(c.get(C::RpcDropped as usize), 1);
    }
}
