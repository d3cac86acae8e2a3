//! `Resolver`: one caching forwarder instance (one per network namespace), driven quinn-style
//! by the daemon: bytes and `now` in, answers and transmits out.
//!
//! Why one struct: access control, local data, cache, coalescing and upstream retries are
//! decided in one place per query, so a test can drive all of it with a fake upstream.

use std::collections::VecDeque;

use hashbrown::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::acl::{self, Cidr};
use crate::answer::{StoredAnswer, TtlCaps};
use crate::cache::{Cache, CacheKey, CacheKeyRef, Lookup};
use crate::config::{Config, Overload};
use crate::error::Error;
use crate::event::{
    AnswerKind, ClientAnswer, ClientInfo, DropReason, IgnoreReason, QueryOutcome, QueryToken,
    ServFailReason, Transport, UpstreamOutcome, UpstreamTransmit,
};
use crate::local::{LocalAnswer, LocalRecords, Source};
use crate::query::{self, ClientQuery, Rejection};
use crate::ratelimit::{self, RateLimiter};
use crate::response::{self, ErrorReply};
use crate::stats::Stats;
use crate::upstream::{HealthConfig, Upstreams};
use crate::wire::{self, FLAG_AD, FLAG_CD, FLAG_QR, FLAG_RD, FLAG_TC, Header, RawQuestion, rcode};

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

/// A caching DNS forwarder for one namespace. See the crate docs for the driving loop.
#[derive(Debug)]
pub struct Resolver {
    /// Settings.
    cfg: Config,
    /// Source of query IDs (seeded by the daemon from the OS CSPRNG).
    rng: StdRng,
    /// Answer cache.
    cache: Cache,
    /// Local records.
    local: LocalRecords,
    /// Upstream servers and their health.
    upstreams: Upstreams,
    /// Per-client limiter, if configured.
    limiter: Option<RateLimiter>,
    /// Resolutions in flight.
    pending: HashMap<QueryToken, Pending>,
    /// Coalescing index.
    by_key: HashMap<CacheKey, QueryToken>,
    /// Outstanding DNS IDs.
    by_id: HashMap<u16, QueryToken>,
    /// Attempts whose resolution already ended (kept for upstream health).
    orphans: HashMap<u16, Attempt>,
    /// Next token.
    next_token: u64,
    /// Messages for the daemon to send upstream.
    transmits: VecDeque<UpstreamTransmit>,
    /// Deferred answers for the daemon to deliver.
    answers: VecDeque<ClientAnswer>,
    /// Counters.
    stats: Stats,
}

impl Resolver {
    /// Creates an instance. `rng_seed` must come from a CSPRNG (the daemon reads
    /// `getrandom`): query IDs are the main defence against off-path spoofing.
    pub fn new(config: Config, rng_seed: [u8; 32]) -> Result<Self, Error> {
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
        let mut local = LocalRecords::new(&config.local_domains)?;
        for (name, addr) in &config.local_records {
            local.add(name, *addr, Source::Config)?;
        }
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
                &config.upstreams,
                HealthConfig {
                    down_after: config.down_after,
                    probe_interval: config.probe_interval,
                    max_probe_interval: config.max_probe_interval,
                },
            ),
            limiter: config.rate_limit.map(RateLimiter::new),
            rng: StdRng::from_seed(rng_seed),
            cfg: config,
            pending: HashMap::new(),
            by_key: HashMap::new(),
            by_id: HashMap::new(),
            orphans: HashMap::new(),
            next_token: 0,
            transmits: VecDeque::new(),
            answers: VecDeque::new(),
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
        let Some(header) = Header::read(query) else {
            return self.drop_query(DropReason::Malformed);
        };
        if header.has(FLAG_QR) {
            return self.drop_query(DropReason::NotAQuery);
        }
        let ip = client.addr.ip();
        if client.transport == Transport::Udp
            && let Some(limiter) = &mut self.limiter
        {
            match limiter.check(now, ip) {
                ratelimit::Verdict::Allow => {}
                ratelimit::Verdict::Drop => {
                    self.stats.rate_limited += 1;
                    return self.drop_query(DropReason::RateLimited);
                }
                ratelimit::Verdict::Slip => {
                    self.stats.rate_limited += 1;
                    self.slip(out, &header, query);
                    return QueryOutcome::Answered(AnswerKind::Truncated);
                }
            }
        }
        if !acl::allowed(&self.cfg.allow, ip) {
            self.stats.refused += 1;
            self.bare_reply(out, &header, query, rcode::REFUSED);
            return QueryOutcome::Answered(AnswerKind::Refused);
        }
        let q = match query::parse(query, client.transport) {
            Ok(q) => q,
            Err(Rejection::Drop(reason)) => return self.drop_query(reason),
            Err(Rejection::Error {
                rcode: code,
                id,
                opcode,
                flags,
                question,
                edns,
            }) => {
                let kind = match code {
                    rcode::NOTIMP => {
                        self.stats.notimp += 1;
                        AnswerKind::NotImp
                    }
                    rcode::BADVERS => {
                        self.stats.badvers += 1;
                        AnswerKind::BadVers
                    }
                    _ => {
                        self.stats.formerr += 1;
                        AnswerKind::FormErr
                    }
                };
                response::error(
                    out,
                    &ErrorReply {
                        id,
                        opcode,
                        client_flags: flags,
                        question: question.as_deref(),
                        edns,
                        rcode: code,
                    },
                    self.cfg.edns_udp_size,
                );
                return QueryOutcome::Answered(kind);
            }
        };
        let limit = q.size_limit(self.cfg.max_udp_response);
        // The lower-cased name on the stack: a cache hit allocates nothing for it.
        let mut lower_buf = [0u8; 256];
        let lowered;
        let qname: &[u8] = match lower_buf.get_mut(..q.question.qname.len()) {
            Some(buf) => {
                buf.copy_from_slice(&q.question.qname);
                buf.make_ascii_lowercase();
                buf
            }
            None => {
                lowered = q.question.lower_qname();
                &lowered
            }
        };
        let local_rcode = match self
            .local
            .lookup(qname, q.question.qtype, q.question.qclass)
        {
            LocalAnswer::NotLocal => None,
            LocalAnswer::Data(data) => Some((data, rcode::NOERROR)),
            LocalAnswer::NoData => Some((Vec::new(), rcode::NOERROR)),
            LocalAnswer::NxDomain => Some((Vec::new(), rcode::NXDOMAIN)),
        };
        if let Some((data, code)) = local_rcode {
            self.stats.local_answers += 1;
            response::local(
                out,
                &q,
                &data,
                self.cfg.local_ttl,
                code,
                self.cfg.edns_udp_size,
                limit,
            );
            return QueryOutcome::Answered(AnswerKind::Local);
        }
        let key = CacheKeyRef {
            qname,
            qtype: q.question.qtype,
            qclass: q.question.qclass,
            dnssec_ok: q.dnssec_ok(),
            checking_disabled: q.cd,
        };
        let stale = match self.cache.get(now, key) {
            Lookup::Fresh { answer, elapsed } => {
                self.stats.cache_hits += 1;
                answer.render(out, &q, elapsed, None, self.cfg.edns_udp_size, limit);
                return QueryOutcome::Answered(AnswerKind::Cache);
            }
            Lookup::Stale(a) => Some(a),
            Lookup::Miss => None,
        };
        self.stats.cache_misses += 1;
        if self.upstreams.len() == 0 {
            if let (Some(a), Some(ss)) = (stale, self.cfg.serve_stale) {
                self.stats.stale_answers += 1;
                a.render(
                    out,
                    &q,
                    0,
                    Some(ss.stale_ttl),
                    self.cfg.edns_udp_size,
                    limit,
                );
                return QueryOutcome::Answered(AnswerKind::Stale);
            }
            return self.servfail_now(out, &q, ServFailReason::NoUpstreams);
        }
        if let Some(&token) = self.by_key.get(&key) {
            if let Some(p) = self.pending.get_mut(&token) {
                // A client retransmitting while we wait gets one answer, not two.
                let retransmit = p
                    .waiters
                    .iter()
                    .any(|w| w.client == client && w.query.id == q.id);
                if retransmit {
                    return QueryOutcome::Pending(token);
                }
                if p.waiters.len() < self.cfg.max_waiters {
                    p.waiters.push(Waiter { client, query: q });
                    self.stats.coalesced += 1;
                    return QueryOutcome::Pending(token);
                }
            }
            return self.overloaded(out, &q);
        }
        if self.pending.len() >= self.cfg.max_outstanding {
            return self.overloaded(out, &q);
        }
        let token = QueryToken(self.next_token);
        self.next_token += 1;
        let key = key.to_owned_key();
        let mut question = q.question.clone();
        question.qname = question.qname.lowered();
        self.by_key.insert(key.clone(), token);
        self.pending.insert(
            token,
            Pending {
                key,
                question,
                waiters: vec![Waiter { client, query: q }],
                attempts: Vec::new(),
                tries: 0,
                tried: Vec::new(),
                deadline: now + self.cfg.query_timeout,
                fallback: None,
            },
        );
        self.advance(now, token);
        QueryOutcome::Pending(token)
    }

    /// Counts and returns a drop.
    fn drop_query(&mut self, reason: DropReason) -> QueryOutcome {
        self.stats.dropped += 1;
        QueryOutcome::Dropped(reason)
    }

    /// Writes a reply with no records and `rcode`, echoing ID, flags and (if readable) the
    /// question: what refusals and rate-limit slips send.
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
                edns: None,
                rcode,
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

    /// Answers SERVFAIL immediately.
    fn servfail_now(
        &mut self,
        out: &mut Vec<u8>,
        q: &ClientQuery,
        reason: ServFailReason,
    ) -> QueryOutcome {
        self.stats.servfail += 1;
        response::query_error(out, q, rcode::SERVFAIL, self.cfg.edns_udp_size);
        QueryOutcome::Answered(AnswerKind::ServFail(reason))
    }

    /// Applies the overload policy.
    fn overloaded(&mut self, out: &mut Vec<u8>, q: &ClientQuery) -> QueryOutcome {
        match self.cfg.overload {
            Overload::ServFail => self.servfail_now(out, q, ServFailReason::Overloaded),
            Overload::Drop => self.drop_query(DropReason::Overloaded),
        }
    }

    /// Draws a DNS ID not in use by any outstanding attempt.
    fn fresh_id(&mut self) -> u16 {
        loop {
            let id: u16 = self.rng.random();
            if !self.by_id.contains_key(&id) && !self.orphans.contains_key(&id) {
                return id;
            }
        }
    }

    /// Builds the upstream query: RD and AD set (RFC 6840 §5.7: ask for AD status), CD and
    /// DO as the client asked, EDNS with our UDP size.
    fn build_upstream_query(&self, id: u16, p: &Pending) -> Vec<u8> {
        let mut out = Vec::with_capacity(p.question.wire_len() + 40);
        let mut flags = FLAG_RD | FLAG_AD;
        if p.key.checking_disabled {
            flags |= FLAG_CD;
        }
        Header {
            id,
            flags,
            qdcount: 1,
            ancount: 0,
            nscount: 0,
            arcount: 1,
        }
        .push(&mut out);
        p.question.push(&mut out);
        wire::push_opt(&mut out, self.cfg.edns_udp_size, 0, p.key.dnssec_ok, &[]);
        out
    }

    /// Sends one attempt for `token` to upstream `addr` over `transport`.
    fn send_attempt(
        &mut self,
        now: Instant,
        token: QueryToken,
        addr: SocketAddr,
        transport: Transport,
        probe: bool,
    ) {
        let id = self.fresh_id();
        let Some(p) = self.pending.get(&token) else {
            return;
        };
        let payload = self.build_upstream_query(id, p);
        let timeout = match transport {
            Transport::Udp => self.cfg.attempt_timeout,
            Transport::Tcp => self.cfg.attempt_timeout * 2,
        };
        if let Some(p) = self.pending.get_mut(&token) {
            p.attempts.push(Attempt {
                id,
                upstream: addr,
                transport,
                sent_at: now,
                deadline: now + timeout,
                probe,
            });
        }
        self.by_id.insert(id, token);
        self.stats.upstream_queries += 1;
        self.transmits.push_back(UpstreamTransmit {
            upstream: addr,
            transport,
            token,
            dns_id: id,
            payload,
        });
    }

    /// Starts the next attempt for `token`, or ends it when out of attempts or time.
    fn advance(&mut self, now: Instant, token: QueryToken) {
        let Some(p) = self.pending.get(&token) else {
            return;
        };
        let n = self.upstreams.len();
        let all_tried = p.tried.len() >= n;
        if n == 0
            || p.tries >= self.cfg.max_attempts
            || now >= p.deadline
            || (all_tried && p.fallback.is_some())
        {
            self.fail(now, token);
            return;
        }
        let order = self.upstreams.order();
        let choice = order
            .iter()
            .copied()
            .find(|i| !p.tried.contains(i))
            .unwrap_or_else(|| order[(p.tries as usize) % order.len()]);
        if let Some(p) = self.pending.get_mut(&token) {
            p.tries += 1;
            if !p.tried.contains(&choice) {
                p.tried.push(choice);
            }
        }
        self.send_attempt(now, token, choice, Transport::Udp, false);
        // A down server whose back-off has passed gets a copy of this query as a probe;
        // the client is not made to wait on it.
        if let Some(probe) = self.upstreams.due_probe(now)
            && probe != choice
        {
            self.upstreams.start_probe(probe);
            self.send_attempt(now, token, probe, Transport::Udp, true);
        }
    }

    /// Ends `token` after every upstream failed: stale data, the last upstream error
    /// answer, or SERVFAIL.
    fn fail(&mut self, now: Instant, token: QueryToken) {
        let Some(p) = self.pending.get(&token) else {
            return;
        };
        if self.cfg.serve_stale.is_some()
            && let Lookup::Stale(a) | Lookup::Fresh { answer: a, .. } =
                self.cache.get(now, p.key.as_ref())
        {
            self.finish(token, Finish::Answer(a, AnswerKind::Stale));
            return;
        }
        match p.fallback.clone() {
            Some(a) => self.finish(token, Finish::Answer(a, AnswerKind::Upstream)),
            None => self.finish(token, Finish::ServFail(ServFailReason::UpstreamsFailed)),
        }
    }

    /// Completes `token`: answers every waiter and retires its attempts.
    fn finish(&mut self, token: QueryToken, how: Finish) {
        let Some(p) = self.pending.remove(&token) else {
            return;
        };
        self.by_key.remove(&p.key);
        for a in p.attempts {
            self.by_id.remove(&a.id);
            self.orphans.insert(a.id, a);
        }
        let stale_ttl = self.cfg.serve_stale.map_or(30, |s| s.stale_ttl);
        for w in p.waiters {
            let limit = w.query.size_limit(self.cfg.max_udp_response);
            let mut payload = Vec::new();
            let kind = match &how {
                Finish::Answer(a, kind) => {
                    let stale = (*kind == AnswerKind::Stale).then_some(stale_ttl);
                    a.render(
                        &mut payload,
                        &w.query,
                        0,
                        stale,
                        self.cfg.edns_udp_size,
                        limit,
                    );
                    match kind {
                        AnswerKind::Stale => self.stats.stale_answers += 1,
                        _ => self.stats.upstream_answers += 1,
                    }
                    *kind
                }
                Finish::ServFail(reason) => {
                    self.stats.servfail += 1;
                    response::query_error(
                        &mut payload,
                        &w.query,
                        rcode::SERVFAIL,
                        self.cfg.edns_udp_size,
                    );
                    AnswerKind::ServFail(*reason)
                }
            };
            self.answers.push_back(ClientAnswer {
                client: w.client,
                payload,
                kind,
                token,
            });
        }
    }

    /// Removes attempt `id` of `token` after a failure and moves the query on if no regular
    /// attempt is left.
    fn attempt_failed(&mut self, now: Instant, token: QueryToken, id: u16) {
        let Some(p) = self.pending.get_mut(&token) else {
            return;
        };
        let Some(pos) = p.attempts.iter().position(|a| a.id == id) else {
            return;
        };
        let a = p.attempts.remove(pos);
        self.by_id.remove(&id);
        self.stats.upstream_failures += 1;
        self.upstreams
            .failure(a.upstream, now, self.cfg.attempt_timeout);
        let waiting_on_regular = p.attempts.iter().any(|x| !x.probe);
        if !waiting_on_regular {
            self.advance(now, token);
        }
    }

    /// Handles a message from an upstream server. `from` and `transport` must be where the
    /// message really came from: answers from anywhere else are ignored.
    pub fn handle_upstream(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        payload: &[u8],
    ) -> UpstreamOutcome {
        let outcome = self.upstream_inner(now, from, transport, payload);
        if let UpstreamOutcome::Ignored(_) = outcome {
            self.stats.upstream_ignored += 1;
        }
        outcome
    }

    /// Body of `handle_upstream`.
    fn upstream_inner(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        payload: &[u8],
    ) -> UpstreamOutcome {
        let Some(h) = Header::read(payload) else {
            return UpstreamOutcome::Ignored(IgnoreReason::Malformed);
        };
        if !h.has(FLAG_QR) || h.opcode() != 0 {
            return UpstreamOutcome::Ignored(IgnoreReason::Malformed);
        }
        let Some(&token) = self.by_id.get(&h.id) else {
            return self.late(now, from, transport, &h);
        };
        let Some(p) = self.pending.get(&token) else {
            return UpstreamOutcome::Ignored(IgnoreReason::UnknownId);
        };
        let Some(att) = p.attempts.iter().find(|a| a.id == h.id).copied() else {
            return UpstreamOutcome::Ignored(IgnoreReason::UnknownId);
        };
        if att.upstream != from || att.transport != transport {
            return UpstreamOutcome::Ignored(IgnoreReason::WrongSource);
        }
        let question_ok =
            h.qdcount == 1 && RawQuestion::read(payload).is_some_and(|q| q.same_as(&p.question));
        // Some servers send FORMERR/REFUSED/NOTIMP without the question.
        let bare_error = h.qdcount == 0 && h.rcode_low() != rcode::NOERROR;
        if !question_ok && !bare_error {
            return UpstreamOutcome::Ignored(IgnoreReason::QuestionMismatch);
        }
        let valid = Message::from_vec(payload).is_ok();
        let stored = if valid && question_ok {
            StoredAnswer::from_upstream(
                payload,
                TtlCaps {
                    max_ttl: self.cfg.max_ttl,
                    max_negative_ttl: self.cfg.max_negative_ttl,
                },
            )
        } else {
            None
        };
        if !valid || (question_ok && stored.is_none()) {
            if transport == Transport::Udp {
                // Could be an off-path forgery: keep waiting for the real answer.
                return UpstreamOutcome::Ignored(IgnoreReason::Malformed);
            }
            self.attempt_failed(now, token, att.id);
            return UpstreamOutcome::Ignored(IgnoreReason::Malformed);
        }
        // A genuine reply: the attempt is over and the server is alive.
        if let Some(p) = self.pending.get_mut(&token) {
            p.attempts.retain(|a| a.id != att.id);
        }
        self.by_id.remove(&att.id);
        self.record_rtt(att.upstream, now.saturating_duration_since(att.sent_at));
        self.stats.upstream_responses += 1;

        if h.has(FLAG_TC) && transport == Transport::Udp {
            self.stats.tcp_retries += 1;
            self.send_attempt(now, token, att.upstream, Transport::Tcp, false);
            return UpstreamOutcome::Accepted;
        }
        let Some(stored) = stored else {
            // Bare error without question.
            self.lame(now, token, None);
            return UpstreamOutcome::Accepted;
        };
        let code = stored.rcode();
        if matches!(
            code,
            rcode::SERVFAIL | rcode::REFUSED | rcode::NOTIMP | rcode::FORMERR
        ) {
            self.lame(now, token, Some(Arc::new(stored)));
            return UpstreamOutcome::Accepted;
        }
        let answer = Arc::new(stored);
        if let Some(p) = self.pending.get(&token) {
            let key = p.key.clone();
            self.cache.insert(now, key, answer.clone());
        }
        self.finish(token, Finish::Answer(answer, AnswerKind::Upstream));
        UpstreamOutcome::Accepted
    }

    /// An upstream answered with an error RCODE: remember it and try elsewhere.
    fn lame(&mut self, now: Instant, token: QueryToken, answer: Option<Arc<StoredAnswer>>) {
        self.stats.upstream_failures += 1;
        if let Some(p) = self.pending.get_mut(&token) {
            if answer.is_some() {
                p.fallback = answer;
            }
            if !p.attempts.iter().any(|a| !a.probe) {
                self.advance(now, token);
            }
        }
    }

    /// Updates health and latency statistics for a reply after `rtt`.
    fn record_rtt(&mut self, upstream: SocketAddr, rtt: Duration) {
        self.upstreams.success(upstream, rtt);
        self.stats.latency_sum_us = self
            .stats
            .latency_sum_us
            .saturating_add(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX));
        self.stats.latency_count += 1;
    }

    /// A reply for an attempt whose query already ended: still good health information.
    fn late(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        h: &Header,
    ) -> UpstreamOutcome {
        let Some(att) = self.orphans.get(&h.id).copied() else {
            return UpstreamOutcome::Ignored(IgnoreReason::UnknownId);
        };
        if att.upstream != from || att.transport != transport {
            return UpstreamOutcome::Ignored(IgnoreReason::WrongSource);
        }
        self.orphans.remove(&h.id);
        self.record_rtt(att.upstream, now.saturating_duration_since(att.sent_at));
        UpstreamOutcome::Late
    }

    /// The daemon could not deliver an attempt (TCP connect refused or reset, ICMP
    /// unreachable): treated like a timeout, but at once.
    pub fn handle_upstream_error(
        &mut self,
        now: Instant,
        upstream: SocketAddr,
        transport: Transport,
        dns_id: u16,
    ) {
        if let Some(&token) = self.by_id.get(&dns_id) {
            let matches = self.pending.get(&token).is_some_and(|p| {
                p.attempts
                    .iter()
                    .any(|a| a.id == dns_id && a.transport == transport && a.upstream == upstream)
            });
            if matches {
                self.attempt_failed(now, token, dns_id);
            }
        } else if let Some(a) = self.orphans.get(&dns_id).copied()
            && a.upstream == upstream
        {
            self.orphans.remove(&dns_id);
            self.upstreams
                .failure(a.upstream, now, self.cfg.attempt_timeout);
        }
    }

    /// The earliest instant at which `handle_timeout` has work, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self
            .pending
            .values()
            .flat_map(|p| std::iter::once(p.deadline).chain(p.attempts.iter().map(|a| a.deadline)));
        pending
            .chain(self.orphans.values().map(|a| a.deadline))
            .min()
    }

    /// Expires attempts and queries whose time is up (failover, SERVFAIL, stale answers).
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<u16> = self
            .orphans
            .values()
            .filter(|a| a.deadline <= now)
            .map(|a| a.id)
            .collect();
        for id in expired {
            if let Some(a) = self.orphans.remove(&id) {
                self.upstreams
                    .failure(a.upstream, now, self.cfg.attempt_timeout);
            }
        }
        let mut tokens: Vec<QueryToken> = self.pending.keys().copied().collect();
        tokens.sort();
        for token in tokens {
            let Some(p) = self.pending.get(&token) else {
                continue;
            };
            if p.deadline <= now {
                for a in p.attempts.clone() {
                    self.upstreams
                        .failure(a.upstream, now, self.cfg.attempt_timeout);
                    self.stats.upstream_failures += 1;
                    self.by_id.remove(&a.id);
                }
                if let Some(p) = self.pending.get_mut(&token) {
                    p.attempts.clear();
                }
                self.fail(now, token);
                continue;
            }
            let due: Vec<u16> = p
                .attempts
                .iter()
                .filter(|a| a.deadline <= now)
                .map(|a| a.id)
                .collect();
            for id in due {
                self.attempt_failed(now, token, id);
            }
        }
    }

    /// Next message to send upstream, if any.
    pub fn poll_transmit(&mut self, _now: Instant) -> Option<UpstreamTransmit> {
        self.transmits.pop_front()
    }

    /// Next deferred answer to deliver, if any.
    pub fn poll_answer(&mut self) -> Option<ClientAnswer> {
        self.answers.pop_front()
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

    /// Number of distinct queries waiting on upstreams.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
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
        self.cfg.upstreams = upstreams;
    }

    /// Replaces the allow list (the namespace's addresses changed).
    pub fn set_allow(&mut self, allow: Vec<Cidr>) {
        self.cfg.allow = allow;
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
