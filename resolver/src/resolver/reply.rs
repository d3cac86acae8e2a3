//! What comes back from upstreams: replies (checked against the attempt they claim to
//! answer: ID, source, transport, question), late replies for finished resolutions, and
//! delivery failures the daemon reports.
//!
//! Why strict: a reply is accepted only from where its attempt went and for the question
//! asked, which with random IDs and ports is the defence against off-path spoofing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;

use super::{Finish, Resolver};
use crate::answer::{StoredAnswer, TtlCaps};
use crate::event::{AnswerKind, IgnoreReason, QueryToken, Transport, UpstreamOutcome};
use crate::wire::{FLAG_QR, FLAG_TC, Header, RawQuestion, rcode};

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
}
