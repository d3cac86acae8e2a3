//! Upstream path: TCP retry, failover, health, serve-stale, coalescing, bounds, validation.

use super::*;
use crate::{Config, IgnoreReason, Overload, ServFailReason, ServeStale, UpstreamOutcome};
use std::time::Duration;

#[test]
fn tc_over_udp_retries_over_tcp() {
    let mut r = resolver(&[UP1]);
    let now = t0();
    let mut out = Vec::new();
    let tx = forward(
        &mut r,
        now,
        udp_client(),
        &query(1, "big.example.", RecordType::TXT, Some((1232, false))),
        &mut out,
    );
    assert_eq!(tx.transport, Transport::Udp);
    let tc = reply(&tx, ResponseCode::NoError, vec![], vec![], |m| {
        m.metadata.truncation = true
    });
    assert_eq!(
        r.handle_upstream(now, tx.upstream, Transport::Udp, &tc),
        UpstreamOutcome::Accepted
    );
    assert!(r.poll_answer().is_none());
    let tcp = transmit(&mut r, now);
    assert_eq!((tcp.upstream, tcp.transport), (sa(UP1), Transport::Tcp));
    // The UDP ID is retired: a copy of the TC answer now counts as unknown.
    assert!(matches!(
        r.handle_upstream(now, tx.upstream, Transport::Udp, &tc),
        UpstreamOutcome::Ignored(_)
    ));
    // The TCP answer must come over TCP.
    let full = reply(
        &tcp,
        ResponseCode::NoError,
        vec![a_rec("big.example.", 60, [1, 1, 1, 1])],
        vec![],
        |_| {},
    );
    assert_eq!(
        r.handle_upstream(now, tcp.upstream, Transport::Udp, &full),
        UpstreamOutcome::Ignored(IgnoreReason::WrongSource)
    );
    assert_eq!(
        r.handle_upstream(now, tcp.upstream, Transport::Tcp, &full),
        UpstreamOutcome::Accepted
    );
    let a = drain_answers(&mut r);
    assert_eq!(parse(&a[0].payload).answers.len(), 1);
    assert_eq!(r.stats().tcp_retries, 1);
}

#[test]
fn failover_after_timeout_then_prefers_healthy() {
    let mut r = resolver(&[UP1, UP2]);
    let now = t0();
    let mut out = Vec::new();
    let _ = r.handle_query(
        now,
        udp_client(),
        &query(1, "a.example.", RecordType::A, None),
        &mut out,
    );
    let first = transmit(&mut r, now);
    assert_eq!(first.upstream, sa(UP1));
    let deadline = r.poll_timeout().expect("timer armed");
    assert_eq!(deadline, now + Config::default().attempt_timeout);
    r.handle_timeout(deadline);
    let second = transmit(&mut r, deadline);
    assert_eq!(second.upstream, sa(UP2));
    assert_ne!(second.dns_id, first.dns_id);
    // A late answer from UP1 with the old ID is not accepted as the answer.
    let late = reply(
        &first,
        ResponseCode::NoError,
        vec![a_rec("a.example.", 60, [6, 6, 6, 6])],
        vec![],
        |_| {},
    );
    assert!(!matches!(
        r.handle_upstream(deadline, first.upstream, Transport::Udp, &late),
        UpstreamOutcome::Accepted
    ));
    let good = reply(
        &second,
        ResponseCode::NoError,
        vec![a_rec("a.example.", 60, [1, 2, 3, 4])],
        vec![],
        |_| {},
    );
    assert_eq!(
        r.handle_upstream(deadline, second.upstream, Transport::Udp, &good),
        UpstreamOutcome::Accepted
    );
    let a = drain_answers(&mut r);
    assert_eq!(a.len(), 1);
    assert_eq!(
        parse(&a[0].payload).answers[0].data,
        RData::A(A(Ipv4Addr::new(1, 2, 3, 4)))
    );
    // UP2 answered, UP1 timed out: next query goes to UP2 first.
    let _ = r.handle_query(
        deadline,
        udp_client(),
        &query(2, "b.example.", RecordType::A, None),
        &mut out,
    );
    assert_eq!(transmit(&mut r, deadline).upstream, sa(UP2));
}

#[test]
fn all_down_servfail_then_recovery() {
    let mut cfg = config(&[UP1, UP2]);
    cfg.down_after = 1;
    cfg.max_attempts = 2;
    let mut r = Resolver::new(cfg, [5; 32]).expect("config");
    let mut now = t0();
    let mut out = Vec::new();
    let _ = r.handle_query(
        now,
        udp_client(),
        &query(1, "a.example.", RecordType::A, None),
        &mut out,
    );
    let mut sent = Vec::new();
    while let Some(deadline) = r.poll_timeout() {
        while let Some(tx) = r.poll_transmit(now) {
            sent.push(tx.upstream);
        }
        now = deadline;
        r.handle_timeout(now);
        if let Some(a) = r.poll_answer() {
            let m = parse(&a.payload);
            assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
            assert_eq!(
                a.kind,
                AnswerKind::ServFail(ServFailReason::UpstreamsFailed)
            );
            break;
        }
    }
    assert_eq!(sent, vec![sa(UP1), sa(UP2)]);
    assert!(r.upstream_down(sa(UP1)) && r.upstream_down(sa(UP2)));
    // Down servers are still tried when nothing else is left; an answer brings one back.
    let tx = forward(
        &mut r,
        now,
        udp_client(),
        &query(2, "a.example.", RecordType::A, None),
        &mut out,
    );
    let rep = reply(
        &tx,
        ResponseCode::NoError,
        vec![a_rec("a.example.", 60, [1, 2, 3, 4])],
        vec![],
        |_| {},
    );
    assert_eq!(
        r.handle_upstream(now, tx.upstream, Transport::Udp, &rep),
        UpstreamOutcome::Accepted
    );
    assert_eq!(drain_answers(&mut r)[0].kind, AnswerKind::Upstream);
    assert!(!r.upstream_down(tx.upstream));
    assert!(r.stats().servfail >= 1);
}

#[test]
fn down_server_is_probed_after_backoff() {
    let mut cfg = config(&[UP1, UP2]);
    cfg.down_after = 1;
    let probe_interval = cfg.probe_interval;
    let mut r = Resolver::new(cfg, [6; 32]).expect("config");
    let now = t0();
    let mut out = Vec::new();
    let _ = r.handle_query(
        now,
        udp_client(),
        &query(1, "a.example.", RecordType::A, None),
        &mut out,
    );
    let _first = transmit(&mut r, now);
    let t1 = r.poll_timeout().expect("timer");
    r.handle_timeout(t1);
    let second = transmit(&mut r, t1);
    let rep = reply(
        &second,
        ResponseCode::NoError,
        vec![a_rec("a.example.", 60, [1, 2, 3, 4])],
        vec![],
        |_| {},
    );
    let _ = r.handle_upstream(t1, second.upstream, Transport::Udp, &rep);
    drain_answers(&mut r);
    assert!(r.upstream_down(sa(UP1)));
    // Before the back-off: only UP2 is asked.
    let _ = r.handle_query(
        t1,
        udp_client(),
        &query(2, "b.example.", RecordType::A, None),
        &mut out,
    );
    assert_eq!(transmit(&mut r, t1).upstream, sa(UP2));
    assert!(r.poll_transmit(t1).is_none());
    // After it: UP2 is asked and UP1 gets a probe copy; the probe's answer revives UP1.
    let t2 = t1 + probe_interval;
    let _ = r.handle_query(
        t2,
        udp_client(),
        &query(3, "c.example.", RecordType::A, None),
        &mut out,
    );
    let main = transmit(&mut r, t2);
    let probe = transmit(&mut r, t2);
    assert_eq!((main.upstream, probe.upstream), (sa(UP2), sa(UP1)));
    let rep = reply(
        &probe,
        ResponseCode::NoError,
        vec![a_rec("c.example.", 60, [1, 2, 3, 4])],
        vec![],
        |_| {},
    );
    assert_eq!(
        r.handle_upstream(t2, probe.upstream, Transport::Udp, &rep),
        UpstreamOutcome::Accepted
    );
    assert!(!r.upstream_down(sa(UP1)));
    // The main attempt's answer now arrives late: health only.
    let rep = reply(
        &main,
        ResponseCode::NoError,
        vec![a_rec("c.example.", 60, [1, 2, 3, 4])],
        vec![],
        |_| {},
    );
    assert_eq!(
        r.handle_upstream(t2, main.upstream, Transport::Udp, &rep),
        UpstreamOutcome::Late
    );
    assert_eq!(drain_answers(&mut r).len(), 1);
}

#[test]
fn serve_stale_when_upstreams_fail() {
    let mut cfg = config(&[UP1]);
    cfg.serve_stale = Some(ServeStale::default());
    cfg.max_attempts = 1;
    let mut r = Resolver::new(cfg, [8; 32]).expect("config");
    let now = t0();
    resolve_via_upstream(&mut r, now, 1, "stale.example.", 60);
    let later = after(now, 120);
    let mut out = Vec::new();
    let o = r.handle_query(
        later,
        udp_client(),
        &query(2, "stale.example.", RecordType::A, None),
        &mut out,
    );
    assert!(matches!(o, QueryOutcome::Pending(_)));
    let _tx = transmit(&mut r, later);
    let deadline = r.poll_timeout().expect("timer");
    r.handle_timeout(deadline);
    let a = drain_answers(&mut r);
    assert_eq!(a[0].kind, AnswerKind::Stale);
    let m = parse(&a[0].payload);
    assert_eq!(m.answers[0].ttl, 30);
    assert_eq!(m.metadata.id, 2);
    // Beyond the stale window: SERVFAIL.
    let way_later = after(now, 60 + 86_400 + 1);
    let _ = r.handle_query(
        way_later,
        udp_client(),
        &query(3, "stale.example.", RecordType::A, None),
        &mut out,
    );
    let _tx = transmit(&mut r, way_later);
    r.handle_timeout(r.poll_timeout().expect("timer"));
    assert!(matches!(
        drain_answers(&mut r)[0].kind,
        AnswerKind::ServFail(_)
    ));
}

#[test]
fn identical_queries_coalesce() {
    let mut r = resolver(&[UP1]);
    let now = t0();
    let mut out = Vec::new();
    let c2 = ClientInfo {
        token: 99,
        ..tcp_client()
    };
    let o1 = r.handle_query(
        now,
        udp_client(),
        &query(1, "Same.example.", RecordType::A, None),
        &mut out,
    );
    let o2 = r.handle_query(
        now,
        c2,
        &query(2, "same.EXAMPLE.", RecordType::A, None),
        &mut out,
    );
    assert_eq!(o1, o2);
    let tx = transmit(&mut r, now);
    assert!(r.poll_transmit(now).is_none(), "one upstream query");
    let rep = reply(
        &tx,
        ResponseCode::NoError,
        vec![a_rec("same.example.", 60, [1, 2, 3, 4])],
        vec![],
        |_| {},
    );
    let _ = r.handle_upstream(now, tx.upstream, Transport::Udp, &rep);
    let a = drain_answers(&mut r);
    assert_eq!(a.len(), 2);
    let m1 = parse(&a[0].payload);
    let m2 = parse(&a[1].payload);
    assert_eq!((m1.metadata.id, m2.metadata.id), (1, 2));
    assert_eq!(m1.queries[0].name().to_ascii(), "Same.example.");
    assert_eq!(m2.queries[0].name().to_ascii(), "same.EXAMPLE.");
    assert_eq!(a[1].client.token, 99);
    assert_eq!(r.stats().coalesced, 1);
}

#[test]
fn outstanding_bounded() {
    for overload in [Overload::ServFail, Overload::Drop] {
        let mut cfg = config(&[UP1]);
        cfg.max_outstanding = 2;
        cfg.overload = overload;
        let mut r = Resolver::new(cfg, [9; 32]).expect("config");
        let now = t0();
        let mut out = Vec::new();
        for (i, n) in ["a.example.", "b.example."].iter().enumerate() {
            let o = r.handle_query(
                now,
                udp_client(),
                &query(i as u16, n, RecordType::A, None),
                &mut out,
            );
            assert!(matches!(o, QueryOutcome::Pending(_)));
        }
        let o = r.handle_query(
            now,
            udp_client(),
            &query(5, "c.example.", RecordType::A, None),
            &mut out,
        );
        match overload {
            Overload::ServFail => {
                assert_eq!(
                    o,
                    QueryOutcome::Answered(AnswerKind::ServFail(ServFailReason::Overloaded))
                );
                assert_eq!(parse(&out).metadata.response_code, ResponseCode::ServFail);
            }
            Overload::Drop => assert_eq!(o, QueryOutcome::Dropped(crate::DropReason::Overloaded)),
        }
        assert_eq!(r.outstanding(), 2);
    }
}

#[test]
fn mismatched_upstream_answers_ignored() {
    let mut r = resolver(&[UP1]);
    let now = t0();
    let mut out = Vec::new();
    let tx = forward(
        &mut r,
        now,
        udp_client(),
        &query(1, "a.example.", RecordType::A, None),
        &mut out,
    );
    let good = reply(
        &tx,
        ResponseCode::NoError,
        vec![a_rec("a.example.", 60, [1, 2, 3, 4])],
        vec![],
        |_| {},
    );
    // Wrong source.
    assert_eq!(
        r.handle_upstream(now, sa("192.0.2.99:53"), Transport::Udp, &good),
        UpstreamOutcome::Ignored(IgnoreReason::WrongSource)
    );
    assert_eq!(
        r.handle_upstream(now, sa("192.0.2.1:5353"), Transport::Udp, &good),
        UpstreamOutcome::Ignored(IgnoreReason::WrongSource)
    );
    // Wrong ID.
    let mut bad_id = good.clone();
    bad_id[0] ^= 0xFF;
    assert!(matches!(
        r.handle_upstream(now, tx.upstream, Transport::Udp, &bad_id),
        UpstreamOutcome::Ignored(IgnoreReason::UnknownId)
    ));
    // Wrong question.
    let other = reply(&tx, ResponseCode::NoError, vec![], vec![], |m| {
        m.queries[0].set_name(Name::from_ascii("b.example.").expect("n"));
    });
    assert_eq!(
        r.handle_upstream(now, tx.upstream, Transport::Udp, &other),
        UpstreamOutcome::Ignored(IgnoreReason::QuestionMismatch)
    );
    // Garbage tail.
    let mut garbage = good.clone();
    garbage.truncate(garbage.len() - 3);
    assert_eq!(
        r.handle_upstream(now, tx.upstream, Transport::Udp, &garbage),
        UpstreamOutcome::Ignored(IgnoreReason::Malformed)
    );
    assert!(r.poll_answer().is_none());
    // Upper-case echo from upstream is fine (0x20-style servers).
    let upper = reply(
        &tx,
        ResponseCode::NoError,
        vec![a_rec("a.example.", 60, [1, 2, 3, 4])],
        vec![],
        |m| {
            m.queries[0].set_name(Name::from_ascii("A.EXAMPLE.").expect("n"));
        },
    );
    assert_eq!(
        r.handle_upstream(now, tx.upstream, Transport::Udp, &upper),
        UpstreamOutcome::Accepted
    );
    assert_eq!(r.stats().upstream_ignored, 5);
}

#[test]
fn servfail_from_one_upstream_tries_next() {
    let mut r = resolver(&[UP1, UP2]);
    let now = t0();
    let mut out = Vec::new();
    let tx = forward(
        &mut r,
        now,
        udp_client(),
        &query(1, "a.example.", RecordType::A, None),
        &mut out,
    );
    let _ = r.handle_upstream(
        now,
        tx.upstream,
        Transport::Udp,
        &reply(&tx, ResponseCode::ServFail, vec![], vec![], |_| {}),
    );
    assert!(r.poll_answer().is_none());
    let tx2 = transmit(&mut r, now);
    assert_eq!(tx2.upstream, sa(UP2));
    let _ = r.handle_upstream(
        now,
        tx2.upstream,
        Transport::Udp,
        &reply(&tx2, ResponseCode::ServFail, vec![], vec![], |_| {}),
    );
    let a = drain_answers(&mut r);
    assert_eq!(a.len(), 1);
    assert_eq!(
        parse(&a[0].payload).metadata.response_code,
        ResponseCode::ServFail
    );
    assert_eq!(a[0].kind, AnswerKind::Upstream, "relayed, not generated");
}

#[test]
fn upstream_error_report_fails_over_at_once() {
    let mut r = resolver(&[UP1, UP2]);
    let now = t0();
    let mut out = Vec::new();
    let tx = forward(
        &mut r,
        now,
        udp_client(),
        &query(1, "a.example.", RecordType::A, None),
        &mut out,
    );
    r.handle_upstream_error(now, tx.upstream, tx.transport, tx.dns_id);
    assert_eq!(transmit(&mut r, now).upstream, sa(UP2));
}

#[test]
fn query_timeout_bounds_total_time() {
    let mut cfg = config(&[UP1]);
    cfg.max_attempts = 100;
    let mut r = Resolver::new(cfg.clone(), [10; 32]).expect("config");
    let start = t0();
    let mut now = start;
    let mut out = Vec::new();
    let _ = r.handle_query(
        now,
        udp_client(),
        &query(1, "a.example.", RecordType::A, None),
        &mut out,
    );
    let mut rounds = 0;
    while r.poll_answer().is_none() {
        while r.poll_transmit(now).is_some() {}
        now = r.poll_timeout().expect("timer while pending");
        r.handle_timeout(now);
        rounds += 1;
        assert!(rounds < 100);
    }
    assert!(now - start <= cfg.query_timeout);
    assert!(r.poll_timeout().is_none() || r.outstanding() == 0);
}

#[test]
fn client_retransmit_answered_once() {
    let mut r = resolver(&[UP1]);
    let now = t0();
    let mut out = Vec::new();
    let q = query(1, "a.example.", RecordType::A, None);
    let o1 = r.handle_query(now, udp_client(), &q, &mut out);
    let o2 = r.handle_query(after(now, 1), udp_client(), &q, &mut out);
    assert_eq!(o1, o2);
    let tx = transmit(&mut r, now);
    let rep = reply(
        &tx,
        ResponseCode::NoError,
        vec![a_rec("a.example.", 60, [1, 2, 3, 4])],
        vec![],
        |_| {},
    );
    let _ = r.handle_upstream(now, tx.upstream, Transport::Udp, &rep);
    assert_eq!(drain_answers(&mut r).len(), 1);
}

#[test]
fn upstreams_and_allow_list_replaced_at_run_time() {
    let mut r = resolver(&[UP1]);
    let now = t0();
    let mut out = Vec::new();
    let _ = r.handle_query(
        now,
        udp_client(),
        &query(1, "a.example.", RecordType::A, None),
        &mut out,
    );
    let old = transmit(&mut r, now);
    r.set_upstreams(vec![sa(UP2)]);
    // The in-flight attempt to the removed server times out and moves to the new one.
    let t = r.poll_timeout().expect("timer");
    r.handle_timeout(t);
    let new = transmit(&mut r, t);
    assert_eq!((old.upstream, new.upstream), (sa(UP1), sa(UP2)));
    let outsider = ClientInfo {
        addr: sa("10.1.1.1:1000"),
        ..udp_client()
    };
    let q = query(2, "local.test.", RecordType::A, None);
    assert_eq!(
        r.handle_query(t, outsider, &q, &mut out),
        QueryOutcome::Answered(AnswerKind::Refused)
    );
    r.set_allow(vec!["10.1.1.0/24".parse().expect("cidr")]);
    assert!(matches!(
        r.handle_query(t, outsider, &q, &mut out),
        QueryOutcome::Pending(_)
    ));
}

#[test]
fn config_validated() {
    let mut cfg = config(&[UP1]);
    cfg.query_timeout = Duration::MAX;
    assert!(Resolver::new(cfg, [0; 32]).is_err());
    let mut cfg = config(&[UP1]);
    cfg.max_outstanding = 100_000;
    assert!(Resolver::new(cfg, [0; 32]).is_err());
    let mut cfg = config(&[UP1]);
    cfg.local_records.push(("bad name".into(), ip("10.0.0.1")));
    assert!(Resolver::new(cfg, [0; 32]).is_err());
}

#[test]
fn upstream_opt_replaced_and_ede_relayed() {
    let mut r = resolver(&[UP1]);
    let now = t0();
    let mut out = Vec::new();
    let tx = forward(
        &mut r,
        now,
        udp_client(),
        &query(1, "blocked.example.", RecordType::A, Some((1400, false))),
        &mut out,
    );
    let mut rep = reply(
        &tx,
        ResponseCode::NXDomain,
        vec![],
        vec![soa_rec("example.", 60, 60)],
        |m| {
            m.metadata.authoritative = true;
            if let Some(e) = m.edns.as_mut() {
                e.set_max_payload(4096);
            }
        },
    );
    // Append an EDE option (info-code 15 "Blocked") and a cookie to the upstream OPT (last).
    let n = rep.len();
    rep[n - 2..].copy_from_slice(&[0, 18]);
    rep.extend_from_slice(&[0, 15, 0, 2, 0, 15]);
    rep.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        r.handle_upstream(now, tx.upstream, Transport::Udp, &rep),
        UpstreamOutcome::Accepted
    );
    let a = drain_answers(&mut r);
    let raw = &a[0].payload;
    let m = parse(raw);
    assert!(!m.metadata.authoritative, "forwarded data is never AA");
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let e = m.edns.expect("one OPT");
    assert_eq!(e.max_payload(), 1232, "our size, not upstream's");
    // EDE kept, cookie (hop-by-hop) dropped: OPT RDATA is exactly the EDE option.
    assert!(raw.ends_with(&[0, 6, 0, 15, 0, 2, 0, 15]), "{raw:02x?}");
}

#[test]
fn records_after_upstream_opt_are_dropped_safely() {
    let mut r = resolver(&[UP1]);
    let now = t0();
    let mut out = Vec::new();
    let tx = forward(
        &mut r,
        now,
        tcp_client(),
        &query(1, "a.example.", RecordType::A, Some((1232, false))),
        &mut out,
    );
    let mut rep = reply(
        &tx,
        ResponseCode::NoError,
        vec![a_rec("a.example.", 60, [1, 2, 3, 4])],
        vec![],
        |_| {},
    );
    // Add an A record after the OPT in the additional section, compressed against the question.
    rep[11] += 1;
    rep.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 9, 9, 9, 9]);
    assert_eq!(
        r.handle_upstream(now, tx.upstream, Transport::Udp, &rep),
        UpstreamOutcome::Accepted
    );
    let m = parse(&drain_answers(&mut r)[0].payload);
    assert_eq!(m.answers.len(), 1);
    assert!(m.additionals.is_empty());
    assert!(m.edns.is_some());
}

#[test]
fn stale_served_when_upstream_servfails() {
    let mut cfg = config(&[UP1]);
    cfg.serve_stale = Some(ServeStale::default());
    let mut r = Resolver::new(cfg, [13; 32]).expect("config");
    let now = t0();
    resolve_via_upstream(&mut r, now, 1, "s.example.", 10);
    let later = after(now, 20);
    let mut out = Vec::new();
    let _ = r.handle_query(
        later,
        udp_client(),
        &query(2, "s.example.", RecordType::A, None),
        &mut out,
    );
    let tx = transmit(&mut r, later);
    let _ = r.handle_upstream(
        later,
        tx.upstream,
        Transport::Udp,
        &reply(&tx, ResponseCode::ServFail, vec![], vec![], |_| {}),
    );
    let a = drain_answers(&mut r);
    assert_eq!(a[0].kind, AnswerKind::Stale);
    assert_eq!(parse(&a[0].payload).answers[0].ttl, 30);
}

#[test]
fn transmits_carry_their_attempt_deadline() {
    let mut r = resolver(&[UP1, UP2]);
    let attempt = Config::default().attempt_timeout;
    let now = t0();
    let mut out = Vec::new();
    let tx = forward(
        &mut r,
        now,
        udp_client(),
        &query(1, "big.example.", RecordType::TXT, None),
        &mut out,
    );
    assert_eq!(tx.deadline, now + attempt, "UDP: one attempt timeout");
    assert_eq!(
        r.poll_timeout(),
        Some(tx.deadline),
        "the daemon arms the same"
    );
    // Just before the deadline nothing moves; at it, the next server is tried.
    r.handle_timeout(tx.deadline - Duration::from_millis(1));
    assert!(r.poll_transmit(now).is_none());
    r.handle_timeout(tx.deadline);
    let next = transmit(&mut r, tx.deadline);
    assert_eq!(next.upstream, sa(UP2));
    assert_eq!(next.deadline, tx.deadline + attempt);
    // A TCP retry gets twice the time.
    let later = next.deadline - Duration::from_millis(10);
    let tc = reply(&next, ResponseCode::NoError, vec![], vec![], |m| {
        m.metadata.truncation = true
    });
    let _ = r.handle_upstream(later, next.upstream, Transport::Udp, &tc);
    let tcp = transmit(&mut r, later);
    assert_eq!(tcp.transport, Transport::Tcp);
    assert_eq!(tcp.deadline, later + attempt * 2);
}
