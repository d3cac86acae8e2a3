//! Issue 10 (no reflection, retransmit suppression): ANY is answered minimally (RFC 8482)
//! on every path, no error answer is ever longer than its query, and a client's
//! retransmissions never take more than one waiter slot.

use hickory_proto::rr::RecordType;

use super::*;
use crate::{DropReason, Overload, RateLimitConfig, ServFailReason};

/// A raw query: `labels` joined as the name, `qdcount` as given (the question is written
/// once), opcode, and an OPT with `version` and `options` when `edns` is set.
fn raw(
    id: u16,
    opcode: u8,
    qdcount: u16,
    labels: &[&[u8]],
    qtype: u16,
    edns: Option<(u8, &[u8])>,
) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01 | (opcode << 3), 0x00]);
    q.extend_from_slice(&qdcount.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for l in labels {
        q.push(l.len() as u8);
        q.extend_from_slice(l);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if let Some((version, options)) = edns {
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, version, 0x80, 0]);
        q.extend_from_slice(&(options.len() as u16).to_be_bytes());
        q.extend_from_slice(options);
    }
    q
}

/// A name of four 61-byte labels (253 characters, near the 255-byte wire limit).
const LONG: [&[u8]; 4] = [&[b'x'; 61], &[b'y'; 61], &[b'z'; 61], &[b'w'; 61]];
/// A short name.
const SHORT: [&[u8]; 2] = [b"a", b"lan"];
/// An EDNS COOKIE option (client cookie, 8 bytes), as `dig` sends.
const COOKIE: &[u8] = &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];

/// Every shape of query the error tests use: short and long names, with and without EDNS
/// (bare, and with a cookie option).
fn shapes(id: u16, opcode: u8, qdcount: u16, qtype: u16, version: u8) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for labels in [&SHORT[..], &LONG[..]] {
        for edns in [None, Some((version, &[][..])), Some((version, COOKIE))] {
            v.push(raw(id, opcode, qdcount, labels, qtype, edns));
        }
    }
    v
}

/// Asserts that `outcome` is an immediate answer of `kind` no longer than `query`.
fn short_error(outcome: QueryOutcome, out: &[u8], query: &[u8], kind: AnswerKind) {
    assert_eq!(outcome, QueryOutcome::Answered(kind), "query {query:?}");
    assert!(out.len() >= 12, "{out:?}");
    assert_eq!(out[..2], query[..2], "ID echoed");
    assert!(
        out.len() <= query.len(),
        "{kind:?} answer of {} bytes to a query of {}",
        out.len(),
        query.len()
    );
}

#[test]
fn refused_and_rate_limit_slips_are_never_longer_than_the_query() {
    let mut cfg = config(&[UP1]);
    cfg.allow.push("10.0.0.0/24".parse().expect("cidr"));
    let mut r = Resolver::new(cfg, [2; 32]).expect("config");
    let mut out = Vec::new();
    let outsider = ClientInfo {
        addr: sa("10.0.1.5:5353"),
        ..udp_client()
    };
    for q in shapes(7, 0, 1, 1, 0) {
        let o = r.handle_query(t0(), outsider, &q, &mut out);
        short_error(o, &out, &q, AnswerKind::Refused);
    }
    // A header that promises a question it does not carry: header only.
    let stub = raw(8, 0, 1, &[], 1, None)[..12].to_vec();
    let o = r.handle_query(t0(), outsider, &stub, &mut out);
    short_error(o, &out, &stub, AnswerKind::Refused);

    let mut cfg = config(&[UP1]);
    cfg.rate_limit = Some(RateLimitConfig {
        per_second: 1,
        burst: 1,
        slip: 1,
        max_clients: 16,
    });
    let mut r = Resolver::new(cfg, [2; 32]).expect("config");
    let now = t0();
    let _ = r.handle_query(now, udp_client(), &shapes(1, 0, 1, 1, 0)[0], &mut out);
    for q in shapes(9, 0, 1, 1, 0).into_iter().chain([stub]) {
        let o = r.handle_query(now, udp_client(), &q, &mut out);
        short_error(o, &out, &q, AnswerKind::Truncated);
    }
}

#[test]
fn formerr_notimp_and_badvers_are_never_longer_than_the_query() {
    let mut r = resolver(&[UP1]);
    let mut out = Vec::new();
    let now = t0();
    let cases = [
        (shapes(1, 0, 2, 1, 0), AnswerKind::FormErr), // two questions
        (shapes(2, 0, 1, 41, 0), AnswerKind::FormErr), // QTYPE OPT
        (shapes(3, 5, 1, 1, 0), AnswerKind::NotImp),  // opcode 5
        (shapes(4, 0, 1, 252, 0), AnswerKind::NotImp), // AXFR
    ];
    for (queries, kind) in cases {
        for q in queries {
            let o = r.handle_query(now, udp_client(), &q, &mut out);
            short_error(o, &out, &q, kind);
        }
    }
    // EDNS version 1 (only shapes with an OPT): the OPT carrying BADVERS still fits.
    for q in shapes(5, 0, 1, 1, 1).into_iter().filter(|q| q[11] == 1) {
        let o = r.handle_query(now, udp_client(), &q, &mut out);
        short_error(o, &out, &q, AnswerKind::BadVers);
        let m = parse(&out);
        assert_eq!(m.edns.expect("OPT kept for BADVERS").rcode_high(), 1);
    }
    // Structurally broken: a label past the end, a pointer loop, a header alone.
    let mut past_end = raw(6, 0, 1, &[], 1, None)[..12].to_vec();
    past_end.extend_from_slice(&[63, b'a', b'b']);
    let mut looped = raw(6, 0, 1, &[], 1, None)[..12].to_vec();
    looped.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
    let header_only = raw(6, 5, 1, &[], 1, None)[..12].to_vec();
    for (q, kind) in [
        (past_end, AnswerKind::FormErr),
        (looped, AnswerKind::FormErr),
        (header_only, AnswerKind::NotImp),
    ] {
        let o = r.handle_query(now, udp_client(), &q, &mut out);
        short_error(o, &out, &q, kind);
    }
}

#[test]
fn servfails_are_never_longer_than_the_query() {
    // No upstreams.
    let mut r = resolver(&[]);
    let mut out = Vec::new();
    for q in shapes(1, 0, 1, 1, 0) {
        let o = r.handle_query(t0(), udp_client(), &q, &mut out);
        short_error(
            o,
            &out,
            &q,
            AnswerKind::ServFail(ServFailReason::NoUpstreams),
        );
    }
    // Overloaded (one outstanding query allowed, the second name is refused service).
    let mut cfg = config(&[UP1]);
    cfg.max_outstanding = 1;
    cfg.overload = Overload::ServFail;
    let mut r = Resolver::new(cfg, [4; 32]).expect("config");
    let now = t0();
    let _ = r.handle_query(
        now,
        udp_client(),
        &query(1, "first.example.", RecordType::A, None),
        &mut out,
    );
    for q in shapes(2, 0, 1, 1, 0) {
        let o = r.handle_query(now, udp_client(), &q, &mut out);
        short_error(
            o,
            &out,
            &q,
            AnswerKind::ServFail(ServFailReason::Overloaded),
        );
    }
    // Every upstream attempt timed out: the deferred SERVFAIL.
    for q in shapes(3, 0, 1, 1, 0) {
        let mut r = resolver(&[UP1]);
        let mut now = t0();
        assert!(matches!(
            r.handle_query(now, udp_client(), &q, &mut out),
            QueryOutcome::Pending(_)
        ));
        let mut answers = Vec::new();
        while answers.is_empty() {
            while r.poll_transmit(now).is_some() {}
            now = r.poll_timeout().expect("timer while pending");
            r.handle_timeout(now);
            answers = drain_answers(&mut r);
        }
        assert_eq!(
            answers[0].kind,
            AnswerKind::ServFail(ServFailReason::UpstreamsFailed)
        );
        assert!(answers[0].payload.len() <= q.len());
    }
}

#[test]
fn relayed_upstream_errors_are_cut_to_the_query_length() {
    for q in shapes(1, 0, 1, 1, 0) {
        let mut r = resolver(&[UP1]);
        let now = t0();
        let mut out = Vec::new();
        let tx = forward(&mut r, now, udp_client(), &q, &mut out);
        // REFUSED with records and a long Extended DNS Error text.
        let name = parse(&q).queries[0].name().to_ascii();
        let rep = reply(
            &tx,
            ResponseCode::Refused,
            vec![
                a_rec(&name, 60, [1, 2, 3, 4]),
                a_rec(&name, 60, [1, 2, 3, 5]),
            ],
            vec![],
            |m| {
                let mut e = Edns::new();
                e.options_mut()
                    .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                        15,
                        [&[0u8, 18][..], &[b'x'; 300][..]].concat(),
                    ));
                m.set_edns(e);
            },
        );
        let _ = r.handle_upstream(now, tx.upstream, tx.transport, &rep);
        let answers = drain_answers(&mut r);
        assert_eq!(answers.len(), 1);
        let a = &answers[0];
        assert!(
            a.payload.len() <= q.len(),
            "{} > {}",
            a.payload.len(),
            q.len()
        );
        assert_eq!(
            parse(&a.payload).metadata.response_code,
            ResponseCode::Refused
        );
    }
}

#[test]
fn any_gets_one_synthesized_hinfo_and_is_never_forwarded() {
    let mut r = resolver(&[UP1]);
    let mut out = Vec::new();
    let now = t0();
    for (q, transport) in [
        (
            query(1, "example.com.", RecordType::ANY, None),
            Transport::Udp,
        ),
        (
            query(2, "Example.COM.", RecordType::ANY, Some((1232, true))),
            Transport::Udp,
        ),
        (
            query(3, "example.com.", RecordType::ANY, None),
            Transport::Tcp,
        ),
    ] {
        let client = if transport == Transport::Udp {
            udp_client()
        } else {
            tcp_client()
        };
        let o = r.handle_query(now, client, &q, &mut out);
        let (kind, m) = answered(o, &out);
        assert_eq!(kind, AnswerKind::MinimalAny);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].record_type(), RecordType::HINFO);
        assert_eq!(
            m.queries[0],
            parse(&q).queries[0],
            "question echoed verbatim"
        );
        assert!(out.len() <= 2 * q.len());
    }
    assert!(r.poll_transmit(now).is_none(), "ANY is never forwarded");
    assert_eq!(r.stats().any_minimal, 3);
    // A one-letter name: the HINFO answer would exceed twice the query, so UDP gets TC.
    let q = raw(4, 0, 1, &[b"a"], 255, None);
    let o = r.handle_query(now, udp_client(), &q, &mut out);
    let (_, m) = answered(o, &out);
    assert!(m.metadata.truncation && m.answers.is_empty());
    assert!(out.len() <= 2 * q.len());
}

#[test]
fn any_after_a_cached_answer_is_still_minimal() {
    let (mut r, now) = cached_www();
    let mut out = Vec::new();
    let q = query(9, "www.example.com.", RecordType::ANY, Some((1232, false)));
    let (kind, m) = answered(r.handle_query(now, udp_client(), &q, &mut out), &out);
    assert_eq!(kind, AnswerKind::MinimalAny);
    assert_eq!(m.answers.len(), 1);
    assert!(r.poll_transmit(now).is_none());
}

#[test]
fn local_any_gets_a_single_rrset() {
    let mut cfg = config(&[UP1]);
    cfg.local_records.push(("dual.lan".into(), ip("10.0.0.1")));
    cfg.local_records.push(("dual.lan".into(), ip("10.0.0.2")));
    cfg.local_records.push(("dual.lan".into(), ip("fd00::1")));
    cfg.local_records.push(("six.lan".into(), ip("fd00::2")));
    let mut r = Resolver::new(cfg, [5; 32]).expect("config");
    let mut out = Vec::new();
    for (name, want) in [("dual.lan.", RecordType::A), ("six.lan.", RecordType::AAAA)] {
        // With EDNS: two A records fit in twice the query (without, UDP would get TC).
        let q = query(1, name, RecordType::ANY, Some((1232, false)));
        let (kind, m) = answered(r.handle_query(t0(), udp_client(), &q, &mut out), &out);
        assert_eq!(kind, AnswerKind::Local);
        assert!(!m.answers.is_empty(), "{m:?}");
        assert!(m.answers.iter().all(|a| a.record_type() == want), "{m:?}");
        assert!(out.len() <= 2 * q.len());
    }
}

#[test]
fn retransmits_with_new_tokens_never_take_a_second_waiter() {
    let mut cfg = config(&[UP1]);
    cfg.max_waiters = 5;
    let mut r = Resolver::new(cfg, [6; 32]).expect("config");
    let now = t0();
    let mut out = Vec::new();
    let q = query(0x4242, "slow.example.", RecordType::A, None);
    // The daemon gives every datagram its own routing token.
    let copy = |token| ClientInfo {
        token,
        ..udp_client()
    };
    let first = r.handle_query(now, copy(100), &q, &mut out);
    assert!(matches!(first, QueryOutcome::Pending(_)));
    for token in 101..120 {
        let o = r.handle_query(now, copy(token), &q, &mut out);
        assert_eq!(o, QueryOutcome::Dropped(DropReason::Retransmit));
    }
    // The same token asked again is the same waiter.
    assert_eq!(r.handle_query(now, copy(100), &q, &mut out), first);
    assert_eq!(r.stats().retransmits, 19);
    // Another client (and the same client with another ID) still join.
    let other = ClientInfo {
        addr: sa("127.0.0.1:40002"),
        token: 200,
        ..udp_client()
    };
    let q2 = query(0x4343, "slow.example.", RecordType::A, None);
    assert_eq!(r.handle_query(now, other, &q, &mut out), first);
    assert_eq!(r.handle_query(now, copy(201), &q2, &mut out), first);
    // Over TCP every message is answered (each has its own place in the stream).
    let tcp = |token| ClientInfo {
        token,
        ..tcp_client()
    };
    let qt = query(0x4444, "slow.example.", RecordType::A, None);
    assert_eq!(r.handle_query(now, tcp(300), &qt, &mut out), first);
    assert_eq!(r.handle_query(now, tcp(301), &qt, &mut out), first);
    let tx = transmit(&mut r, now);
    assert!(r.poll_transmit(now).is_none(), "one upstream query");
    let rep = reply(
        &tx,
        ResponseCode::NoError,
        vec![a_rec("slow.example.", 60, [1, 2, 3, 4])],
        vec![],
        |_| {},
    );
    let _ = r.handle_upstream(now, tx.upstream, tx.transport, &rep);
    let tokens: Vec<u64> = drain_answers(&mut r)
        .iter()
        .map(|a| a.client.token)
        .collect();
    assert_eq!(tokens, vec![100, 200, 201, 300, 301]);
}
