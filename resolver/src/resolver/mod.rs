//! `Resolver`: one caching forwarder instance (one per network namespace), driven quinn-style
//! by the daemon: bytes and `now` in, answers and transmits out.
//!
//! Why one struct: access control, local data, cache, coalescing and upstream retries are
//! decided in one place per query, so a test can drive all of it with a fake upstream.
//!
//! A client query passes the stages below in order; each either decides it (answer in `out`,
//! or drop) or hands it on:
//!
//! | file | stage / job |
//! | --- | --- |
//! | `admit` | header sanity, rate limit, allow list |
//! | `parse` | full query vetting; FORMERR / NOTIMP / BADVERS answers |
//! | `chaos` | CHAOS-class identity queries refused, never forwarded (RFC 4892) |
//! | `local_answer` | hosts, config and run-time records |
//! | `any` | QTYPE ANY answered minimally (RFC 8482), never forwarded |
//! | `cached` | fresh cache hits; stale data or SERVFAIL when there is no upstream |
//! | `coalesce` | join an outstanding resolution of the same question, or start one |
//! | `attempt` | upstream attempts: IDs, query building, failover order, probes |
//! | `finish` | ending a resolution: answers to every waiter, stale / fallback / SERVFAIL |
//! | `reply` | upstream replies and delivery failures |
//! | `timer` | attempt and query deadlines |

use std::ops::ControlFlow;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use self::flight::Flight;
use crate::acl::Cidr;
use crate::answer::StoredAnswer;
use crate::cache::{Cache, CacheKey, CacheKeyRef};
use crate::config::Config;
use crate::error::Error;
use crate::event::{
    AnswerKind, ClientAnswer, ClientInfo, QueryOutcome, ServFailReason, Transport, UpstreamTransmit,
};
use crate::local::{LocalRecords, SharedLocal, Source};
use crate::query::ClientQuery;
use crate::ratelimit::RateLimiter;
use crate::stats::Stats;
use crate::upstream::{HealthConfig, Upstreams};
use crate::wire::RawQuestion;

mod admit;
mod any;
mod attempt;
mod cached;
mod chaos;
mod coalesce;
mod finish;
mod flight;
mod local_answer;
mod parse;
mod reply;
mod timer;

/// What a query stage returns: `Break` when it decided the query (the answer is in `out`,
/// or it is dropped), `Continue` with what the next stage needs otherwise.
type Stage<T> = ControlFlow<QueryOutcome, T>;

/// Largest accepted `max_outstanding` (keeps random IDs cheap to draw without collision).
const MAX_OUTSTANDING_LIMIT: usize = 16_384;

/// A client waiting for an upstream answer.
#[derive(Debug, Clone)]
struct Waiter {
    /// Where to answer.
    client: ClientInfo,
    /// What it asked (ID, case, EDNS).
    query: ClientQuery,
}

/// One message sent upstream and not yet answered.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    /// DNS ID used.
    id: u16,
    /// Upstream server.
    upstream: SocketAddr,
    /// Transport used.
    transport: Transport,
    /// When it was sent (RTT).
    sent_at: Instant,
    /// When it times out.
    deadline: Instant,
    /// Sent only to test a down server (its timeout does not move the query on).
    probe: bool,
}

/// One distinct question being resolved upstream.
#[derive(Debug)]
struct Pending {
    /// Cache key (also the coalescing key).
    key: CacheKey,
    /// Question sent upstream (lower-cased).
    question: RawQuestion,
    /// Clients to answer.
    waiters: Vec<Waiter>,
    /// Messages outstanding.
    attempts: Vec<Attempt>,
    /// Non-probe attempts started so far.
    tries: u32,
    /// Upstreams tried so far.
    tried: Vec<SocketAddr>,
    /// Give up at this instant.
    deadline: Instant,
    /// Last error answer (SERVFAIL/REFUSED/...) from an upstream, relayed if all fail.
    fallback: Option<Arc<StoredAnswer>>,
}

/// How a pending resolution ends.
#[derive(Debug)]
enum Finish {
    /// With an answer (fresh from upstream, or stale).
    Answer(Arc<StoredAnswer>, AnswerKind),
    /// With a generated SERVFAIL.
    ServFail(ServFailReason),
}

/// The query-ID generator, kept as its seed until first used.
#[derive(Debug)]
struct LazyRng {
    /// The seed, zeroed once the generator is made from it.
    seed: [u8; 32],
    /// The generator, from the first upstream attempt on.
    rng: Option<Box<StdRng>>,
}

impl LazyRng {
    fn new(seed: [u8; 32]) -> Self {
        Self { seed, rng: None }
    }

    /// The generator, made from the seed on first use.
    fn get(&mut self) -> &mut StdRng {
        let seed = &mut self.seed;
        self.rng.get_or_insert_with(|| {
            let rng = Box::new(StdRng::from_seed(*seed));
            *seed = [0; 32];
            rng
        })
    }
}

/// A caching DNS forwarder for one namespace. See the crate docs for the driving loop.
#[derive(Debug)]
pub struct Resolver {
    /// Settings, without the upstreams, allow list and local records (kept apart below):
    /// shared by every resolver made from one [`SharedLocal`], since a daemon makes one
    /// resolver per namespace from the same settings (issue 16: about 250 bytes per namespace).
    cfg: Arc<Config>,
    /// Clients allowed to query (`Config::allow`): per instance, as it follows the
    /// namespace's own addresses.
    allow: Vec<Cidr>,
    /// Source of query IDs (seeded by the daemon from the OS CSPRNG), made from the seed
    /// at the first upstream attempt: a generator is about 300 bytes, and most namespaces
    /// never forward a query (issue 16: bytes per namespace).
    rng: LazyRng,
    /// Answer cache.
    cache: Cache,
    /// Local records.
    local: LocalRecords,
    /// Upstream servers and their health.
    upstreams: Upstreams,
    /// Per-client limiter, if configured (boxed: most resolvers have none, and the inline
    /// struct would cost each of them its size).
    limiter: Option<Box<RateLimiter>>,
    /// Resolutions in flight and what they owe the daemon, from the first miss on.
    flight: Option<Box<Flight>>,
    /// Next token.
    next_token: u64,
    /// Counters.
    stats: Stats,
}

impl Resolver {
    /// Creates an instance. `rng_seed` must come from a CSPRNG (the daemon reads
    /// `getrandom`): query IDs are the main defence against off-path spoofing.
    pub fn new(config: Config, rng_seed: [u8; 32]) -> Result<Self, Error> {
        Self::build(config, rng_seed, None)
    }

    /// As [`Resolver::new`], with the configured local records taken from `shared` (shared,
    /// not copied) when it was built from the same ones as `config` has. Why: a daemon makes
    /// one resolver per namespace from the same settings (issue 16: bytes per namespace).
    pub fn with_shared_local(
        config: Config,
        rng_seed: [u8; 32],
        shared: &SharedLocal,
    ) -> Result<Self, Error> {
        Self::build(config, rng_seed, Some(shared))
    }

    /// Checks the settings and makes the instance.
    fn build(
        mut config: Config,
        rng_seed: [u8; 32],
        shared: Option<&SharedLocal>,
    ) -> Result<Self, Error> {
        if config.max_outstanding > MAX_OUTSTANDING_LIMIT {
            return Err(Error::Config("max_outstanding above 16384"));
        }
        if config.edns_udp_size < 512 {
            return Err(Error::Config("edns_udp_size below 512"));
        }
        // Bounded so that `now + duration` can never overflow an `Instant`.
        let hour = Duration::from_secs(3_600);
        if [
            config.attempt_timeout,
            config.query_timeout,
            config.probe_interval,
            config.max_probe_interval,
        ]
        .iter()
        .any(|d| *d > hour || d.is_zero())
        {
            return Err(Error::Config("timeouts must be between 0 and 1 hour"));
        }
        if config
            .serve_stale
            .is_some_and(|s| s.max_stale_age > Duration::from_secs(30 * 86_400))
        {
            return Err(Error::Config("max_stale_age above 30 days"));
        }
        let made;
        let shared = match shared.filter(|s| s.fits(&config)) {
            Some(s) => s,
            None => {
                made = SharedLocal::new(&config)?;
                &made
            }
        };
        let local = LocalRecords::from_shared(shared);
        // The per-instance parts; the local records were only read to build the store above.
        let allow = std::mem::take(&mut config.allow);
        let upstreams = std::mem::take(&mut config.upstreams);
        let stale_window = config
            .serve_stale
            .map_or(Duration::ZERO, |s| s.max_stale_age);
        Ok(Self {
            cache: Cache::new(
                config.cache_max_entries,
                config.cache_max_bytes,
                stale_window,
            ),
            local,
            upstreams: Upstreams::new(
                &upstreams,
                HealthConfig {
                    down_after: config.down_after,
                    probe_interval: config.probe_interval,
                    max_probe_interval: config.max_probe_interval,
                },
            ),
            limiter: config.rate_limit.map(|r| Box::new(RateLimiter::new(r))),
            rng: LazyRng::new(rng_seed),
            cfg: shared.settings(),
            allow,
            flight: None,
            next_token: 0,
            stats: Stats::default(),
        })
    }

    /// Handles one client query (a UDP payload or one TCP message without its length
    /// prefix). When the outcome is `Answered`, `out` holds the reply to send now.
    pub fn handle_query(
        &mut self,
        now: Instant,
        client: ClientInfo,
        query: &[u8],
        out: &mut Vec<u8>,
    ) -> QueryOutcome {
        self.stats.queries += 1;
        out.clear();
        match self.query_stages(now, client, query, out) {
            ControlFlow::Break(outcome) | ControlFlow::Continue(outcome) => outcome,
        }
    }

    /// The client path, stage by stage (see the module docs).
    fn query_stages(
        &mut self,
        now: Instant,
        client: ClientInfo,
        query: &[u8],
        out: &mut Vec<u8>,
    ) -> Stage<QueryOutcome> {
        self.admit(now, client, query, out)?;
        let q = self.parse(query, client.transport, out)?;
        let limit = any::any_limit(&q, q.size_limit(self.cfg.max_udp_response));
        // The lower-cased name on the stack: a cache hit allocates nothing for it.
        let qname = q.question.qname.lowered();
        self.refuse_chaos(&q, out)?;
        self.answer_local(&q, &qname, limit, out)?;
        self.answer_any(&q, limit, out)?;
        let key = CacheKeyRef {
            qname: &qname,
            qtype: q.question.qtype,
            qclass: q.question.qclass,
            dnssec_ok: q.dnssec_ok(),
            checking_disabled: q.cd,
        };
        self.answer_cached(now, key, &q, limit, out)?;
        ControlFlow::Continue(self.join_or_start(now, client, key, q, out))
    }

    /// Next message to send upstream, if any.
    pub fn poll_transmit(&mut self, _now: Instant) -> Option<UpstreamTransmit> {
        self.flight.as_mut()?.transmits.pop_front()
    }

    /// Next deferred answer to deliver, if any.
    pub fn poll_answer(&mut self) -> Option<ClientAnswer> {
        self.flight.as_mut()?.answers.pop_front()
    }

    /// Adds a run-time local record (e.g. from `nsauxctl`).
    pub fn add_record(&mut self, name: &str, addr: IpAddr) -> Result<(), Error> {
        self.local.add(name, addr, Source::Runtime)
    }

    /// Removes a run-time local record; `Ok(false)` if it did not exist.
    pub fn remove_record(&mut self, name: &str, addr: IpAddr) -> Result<bool, Error> {
        self.local.remove(name, addr, Source::Runtime)
    }

    /// Replaces the records that came from the namespace's hosts file with those in
    /// `text`. Returns the lines or names that were skipped, for the daemon to log.
    pub fn set_hosts(&mut self, text: &str) -> Vec<Error> {
        self.local.set_hosts(text)
    }

    /// What a [`HostsTable`](crate::HostsTable) for this resolver is built with: the daemon
    /// builds big tables away from its event loop and installs them with
    /// [`Resolver::install_hosts`].
    pub fn hosts_builder(&self) -> crate::HostsBuilder {
        self.local.hosts_builder()
    }

    /// Replaces the hosts-file records with a table built by [`Resolver::hosts_builder`]
    /// (a move; re-indexed only if the local domains changed in between). Returns the table
    /// it replaces, so the caller chooses where a big one is freed.
    pub fn install_hosts(&mut self, table: crate::HostsTable) -> crate::HostsTable {
        self.local.install_hosts(table)
    }

    /// Empties the cache (e.g. after upstreams change or on operator request).
    pub fn flush(&mut self) {
        self.cache.flush();
    }

    /// Snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Number of cached answers (for status output).
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// Bytes the cache holds (approximate): the daemon sums them for its memory ceiling.
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Past `bytes` held, the cache stores no new answer (queries are still answered). Why:
    /// the daemon's memory ceiling; `usize::MAX` lifts it.
    pub fn limit_cache_growth(&mut self, bytes: usize) {
        self.cache.set_growth_limit(bytes);
    }

    /// Bytes the per-client rate-limit table is accounted as (0 without rate limiting).
    pub fn rate_limit_bytes(&self) -> usize {
        self.limiter.as_deref().map_or(0, RateLimiter::bytes)
    }

    /// Holds the rate-limit table to `bytes`: past it, new clients push out stale ones as at
    /// `max_clients`. Why: the daemon's memory ceiling.
    pub fn limit_rate_table(&mut self, bytes: usize) {
        if let Some(l) = self.limiter.as_mut() {
            l.limit_growth(bytes);
        }
    }

    /// Answers not cached so far because of [`Self::limit_cache_growth`].
    pub fn cache_refused(&self) -> u64 {
        self.cache.refused()
    }

    /// Number of distinct queries waiting on upstreams.
    pub fn outstanding(&self) -> usize {
        Flight::view(&self.flight).pending.len()
    }

    /// Upstream health for status output.
    pub fn upstream_status(&self) -> Vec<UpstreamStatus> {
        self.upstreams
            .all()
            .iter()
            .map(|u| UpstreamStatus {
                addr: u.addr,
                srtt: u.srtt,
                failures: u.failures,
                down: u.retry_at.is_some(),
            })
            .collect()
    }

    /// Whether upstream `addr` is currently considered down.
    pub fn upstream_down(&self, addr: SocketAddr) -> bool {
        self.upstreams.is_down(addr)
    }

    /// Replaces the upstream list (the namespace's resolv.conf changed). Health of servers
    /// that stay is kept; queries in flight to removed servers time out and fail over. The
    /// cache is kept: flush explicitly if the new servers answer differently.
    pub fn set_upstreams(&mut self, upstreams: Vec<SocketAddr>) {
        self.upstreams.replace(&upstreams);
    }

    /// Whether the two hold one copy of the settings (tests of the sharing).
    #[cfg(test)]
    pub(crate) fn shares_settings_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.cfg, &other.cfg)
    }

    /// Replaces the allow list (the namespace's addresses changed).
    pub fn set_allow(&mut self, allow: Vec<Cidr>) {
        self.allow = allow;
    }
}

/// Health of one upstream, for `nsauxctl status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamStatus {
    /// Server address.
    pub addr: SocketAddr,
    /// Smoothed round-trip time, once measured.
    pub srtt: Option<Duration>,
    /// Consecutive failures.
    pub failures: u32,
    /// Marked down (only probed until it answers).
    pub down: bool,
}
