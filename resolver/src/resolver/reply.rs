//! What comes back from upstreams: replies (checked against the attempt they claim to
//! answer: ID, source, transport, question), late replies for finished resolutions, and
//! delivery failures the daemon reports.
//!
//! Why strict: a reply is accepted only from where its attempt went and for the question
//! asked, which with random IDs and ports is the defence against off-path spoofing.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;

use super::flight::Flight;
use super::{Attempt, Finish, Resolver};
use crate::answer::{StoredAnswer, TtlCaps};
use crate::event::{AnswerKind, IgnoreReason, QueryToken, Transport, UpstreamOutcome};
use crate::wire::{FLAG_QR, FLAG_TC, Header, RawQuestion, rcode};

/// A reply matched to its outstanding attempt (see [`Resolver::claim`]).
#[derive(Debug)]
struct Claim {
    /// The resolution it answers.
    token: QueryToken,
    /// The attempt it answers.
    attempt: Attempt,
    /// TC was set.
    truncated: bool,
    /// It carries the question asked (false: a bare error without question).
    question_ok: bool,
}

impl Resolver {
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
        let claim = match self.claim(now, from, transport, payload) {
            ControlFlow::Continue(claim) => claim,
            ControlFlow::Break(outcome) => return outcome,
        };
        let valid = Message::from_vec(payload).is_ok();
        let stored = if valid && claim.question_ok {
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
        if !valid || (claim.question_ok && stored.is_none()) {
            if transport == Transport::Udp {
                // Could be an off-path forgery: keep waiting for the real answer.
                return UpstreamOutcome::Ignored(IgnoreReason::Malformed);
            }
            self.attempt_failed(now, claim.token, claim.attempt.id);
            return UpstreamOutcome::Ignored(IgnoreReason::Malformed);
        }
        // A genuine reply: the attempt is over and the server is alive.
        let att = claim.attempt;
        if let Some(p) = Flight::open(&mut self.flight).pending.get_mut(&claim.token) {
            p.attempts.retain(|a| a.id != att.id);
        }
        Flight::open(&mut self.flight).by_id.remove(&att.id);
        self.record_rtt(att.upstream, now.saturating_duration_since(att.sent_at));
        self.stats.upstream_responses += 1;
        self.use_reply(now, transport, &claim, stored);
        UpstreamOutcome::Accepted
    }

    /// Matches a reply to the attempt it claims to answer: a response header, a known ID
    /// (or a finished resolution's: `late`), the attempt's source and transport, and the
    /// question asked (or none, for a bare error).
    fn claim(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        payload: &[u8],
    ) -> ControlFlow<UpstreamOutcome, Claim> {
        let ignored = |why| ControlFlow::Break(UpstreamOutcome::Ignored(why));
        let Some(h) = Header::read(payload) else {
            return ignored(IgnoreReason::Malformed);
        };
        if !h.has(FLAG_QR) || h.opcode() != 0 {
            return ignored(IgnoreReason::Malformed);
        }
        let Some(&token) = Flight::view(&self.flight).by_id.get(&h.id) else {
            return ControlFlow::Break(self.late(now, from, transport, &h));
        };
        let Some(p) = Flight::view(&self.flight).pending.get(&token) else {
            return ignored(IgnoreReason::UnknownId);
        };
        let Some(attempt) = p.attempts.iter().find(|a| a.id == h.id).copied() else {
            return ignored(IgnoreReason::UnknownId);
        };
        if attempt.upstream != from || attempt.transport != transport {
            return ignored(IgnoreReason::WrongSource);
        }
        let question_ok =
            h.qdcount == 1 && RawQuestion::read(payload).is_some_and(|q| q.same_as(&p.question));
        // Some servers send FORMERR/REFUSED/NOTIMP without the question.
        let bare_error = h.qdcount == 0 && h.rcode_low() != rcode::NOERROR;
        if !question_ok && !bare_error {
            return ignored(IgnoreReason::QuestionMismatch);
        }
        ControlFlow::Continue(Claim {
            token,
            attempt,
            truncated: h.has(FLAG_TC),
            question_ok,
        })
    }

    /// What a genuine reply means for its resolution: a TCP retry when truncated, the next
    /// server on an error RCODE (kept as the fallback answer), otherwise the answer itself,
    /// cached and sent to every waiter.
    fn use_reply(
        &mut self,
        now: Instant,
        transport: Transport,
        claim: &Claim,
        stored: Option<StoredAnswer>,
    ) {
        let token = claim.token;
        if claim.truncated && transport == Transport::Udp {
            self.stats.tcp_retries += 1;
            self.send_attempt(now, token, claim.attempt.upstream, Transport::Tcp, false);
            return;
        }
        let Some(stored) = stored else {
            // Bare error without question.
            self.lame(now, token, None);
            return;
        };
        let code = stored.rcode();
        if matches!(
            code,
            rcode::SERVFAIL | rcode::REFUSED | rcode::NOTIMP | rcode::FORMERR
        ) {
            self.lame(now, token, Some(Arc::new(stored)));
            return;
        }
        let answer = Arc::new(stored);
        if let Some(p) = Flight::view(&self.flight).pending.get(&token) {
            let key = p.key.clone();
            self.cache.insert(now, key, answer.clone());
        }
        self.finish(token, Finish::Answer(answer, AnswerKind::Upstream));
    }

    /// An upstream answered with an error RCODE: remember it and try elsewhere.
    fn lame(&mut self, now: Instant, token: QueryToken, answer: Option<Arc<StoredAnswer>>) {
        self.stats.upstream_failures += 1;
        if let Some(p) = Flight::open(&mut self.flight).pending.get_mut(&token) {
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
        let Some(att) = Flight::view(&self.flight).orphans.get(&h.id).copied() else {
            return UpstreamOutcome::Ignored(IgnoreReason::UnknownId);
        };
        if att.upstream != from || att.transport != transport {
            return UpstreamOutcome::Ignored(IgnoreReason::WrongSource);
        }
        Flight::open(&mut self.flight).orphans.remove(&h.id);
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
        if let Some(&token) = Flight::view(&self.flight).by_id.get(&dns_id) {
            let matches = Flight::view(&self.flight)
                .pending
                .get(&token)
                .is_some_and(|p| {
                    p.attempts.iter().any(|a| {
                        a.id == dns_id && a.transport == transport && a.upstream == upstream
                    })
                });
            if matches {
                self.attempt_failed(now, token, dns_id);
            }
        } else if let Some(a) = Flight::view(&self.flight).orphans.get(&dns_id).copied()
            && a.upstream == upstream
        {
            Flight::open(&mut self.flight).orphans.remove(&dns_id);
            self.upstreams
                .failure(a.upstream, now, self.cfg.attempt_timeout);
        }
    }
}
