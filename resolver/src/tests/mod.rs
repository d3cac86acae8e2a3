//! Resolver tests with a fake upstream built on hickory-proto: every protocol rule of the
//! crate driven through the public API with virtual time.

#![expect(
    clippy::disallowed_methods,
    reason = "tests need one real base instant"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::{
    AnswerKind, ClientAnswer, ClientInfo, Config, QueryOutcome, Resolver, Transport,
    UpstreamTransmit,
};

mod abuse;
mod alloc;
mod budget;
mod conformance;
mod local;
mod malformed;
mod props;
mod query;
mod upstream;

/// First upstream used by tests.
pub(crate) const UP1: &str = "192.0.2.1:53";
/// Second upstream used by tests.
pub(crate) const UP2: &str = "192.0.2.2:53";

/// A fixed base instant.
pub(crate) fn t0() -> Instant {
    Instant::now()
}

/// Parses a socket address.
pub(crate) fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// A loopback UDP client.
pub(crate) fn udp_client() -> ClientInfo {
    ClientInfo {
        addr: sa("127.0.0.1:40000"),
        transport: Transport::Udp,
        token: 7,
    }
}

/// A loopback TCP client.
pub(crate) fn tcp_client() -> ClientInfo {
    ClientInfo {
        addr: sa("127.0.0.1:40001"),
        transport: Transport::Tcp,
        token: 8,
    }
}

/// Config with the given upstreams.
pub(crate) fn config(ups: &[&str]) -> Config {
    Config {
        upstreams: ups.iter().map(|u| sa(u)).collect(),
        ..Config::default()
    }
}

/// A resolver with the given upstreams and a fixed seed.
pub(crate) fn resolver(ups: &[&str]) -> Resolver {
    Resolver::new(config(ups), [7; 32]).expect("valid config")
}

/// Builds a client query.
pub(crate) fn query(id: u16, name: &str, qtype: RecordType, edns: Option<(u16, bool)>) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    if let Some((size, dnssec_ok)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        e.set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    m.to_vec().expect("encode query")
}

/// Parses any message.
pub(crate) fn parse(b: &[u8]) -> Message {
    Message::from_vec(b).expect("parseable message")
}

/// An A record.
pub(crate) fn a_rec(name: &str, ttl: u32, ip: [u8; 4]) -> Record {
    Record::from_rdata(
        Name::from_ascii(name).expect("name"),
        ttl,
        RData::A(A(Ipv4Addr::from(ip))),
    )
}

/// A SOA record with the given TTL and MINIMUM.
pub(crate) fn soa_rec(zone: &str, ttl: u32, minimum: u32) -> Record {
    Record::from_rdata(
        Name::from_ascii(zone).expect("name"),
        ttl,
        RData::SOA(SOA::new(
            Name::from_ascii("ns.example.").expect("name"),
            Name::from_ascii("host.example.").expect("name"),
            1,
            3600,
            600,
            86400,
            minimum,
        )),
    )
}

/// Builds an upstream reply to `tx` with the given sections.
pub(crate) fn reply(
    tx: &UpstreamTransmit,
    rcode: ResponseCode,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    tweak: impl FnOnce(&mut Message),
) -> Vec<u8> {
    let q = parse(&tx.payload);
    let mut m = Message::response(q.metadata.id, OpCode::Query);
    m.metadata.response_code = rcode;
    m.metadata.recursion_desired = true;
    m.metadata.recursion_available = true;
    m.add_queries(q.queries.clone());
    m.add_answers(answers);
    m.add_authorities(authorities);
    if let Some(e) = &q.edns {
        let mut r = Edns::new();
        r.set_max_payload(1232);
        r.set_dnssec_ok(e.flags().dnssec_ok);
        m.set_edns(r);
    }
    tweak(&mut m);
    m.to_vec().expect("encode reply")
}

/// Expects an immediate answer and parses it.
pub(crate) fn answered(outcome: QueryOutcome, out: &[u8]) -> (AnswerKind, Message) {
    match outcome {
        QueryOutcome::Answered(kind) => (kind, parse(out)),
        other => panic!("expected an answer, got {other:?}"),
    }
}

/// Drains one transmit.
pub(crate) fn transmit(r: &mut Resolver, now: Instant) -> UpstreamTransmit {
    r.poll_transmit(now).expect("a transmit")
}

/// Hands `query` from `client` to the resolver, which must forward it, and returns the upstream
/// transmit (the set-up of every test that then plays the upstream).
pub(crate) fn forward(
    r: &mut Resolver,
    now: Instant,
    client: ClientInfo,
    query: &[u8],
    out: &mut Vec<u8>,
) -> UpstreamTransmit {
    let _ = r.handle_query(now, client, query, out);
    transmit(r, now)
}

/// A resolver whose cache holds `www.example.com.` A (four records, TTL 300), filled through
/// its upstream at the returned instant: the set-up of the cache-hit cost tests.
pub(crate) fn cached_www() -> (Resolver, Instant) {
    let mut r = resolver(&[UP1]);
    let now = t0();
    let mut out = Vec::new();
    let tx = forward(
        &mut r,
        now,
        udp_client(),
        &query(1, "www.example.com.", RecordType::A, Some((1232, false))),
        &mut out,
    );
    let recs: Vec<Record> = (0..4u8)
        .map(|i| a_rec("www.example.com.", 300, [192, 0, 2, i]))
        .collect();
    let _ = r.handle_upstream(
        now,
        tx.upstream,
        tx.transport,
        &reply(&tx, ResponseCode::NoError, recs, vec![], |_| {}),
    );
    drain_answers(&mut r);
    (r, now)
}

/// Drains all deferred answers.
pub(crate) fn drain_answers(r: &mut Resolver) -> Vec<ClientAnswer> {
    std::iter::from_fn(|| r.poll_answer()).collect()
}

/// Sends `name` A through the resolver and answers it from the fake upstream with one A
/// record of `ttl`; returns the client's parsed answer.
pub(crate) fn resolve_via_upstream(
    r: &mut Resolver,
    now: Instant,
    id: u16,
    name: &str,
    ttl: u32,
) -> Message {
    let mut out = Vec::new();
    let o = r.handle_query(
        now,
        udp_client(),
        &query(id, name, RecordType::A, None),
        &mut out,
    );
    assert!(matches!(o, QueryOutcome::Pending(_)), "{o:?}");
    let tx = transmit(r, now);
    let rep = reply(
        &tx,
        ResponseCode::NoError,
        vec![a_rec(name, ttl, [192, 0, 2, 10])],
        vec![],
        |_| {},
    );
    r.handle_upstream(now, tx.upstream, tx.transport, &rep);
    let answers = drain_answers(r);
    assert_eq!(answers.len(), 1);
    parse(&answers[0].payload)
}

/// An IP helper.
pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// Advances a base instant.
pub(crate) fn after(t: Instant, secs: u64) -> Instant {
    t + Duration::from_secs(secs)
}
