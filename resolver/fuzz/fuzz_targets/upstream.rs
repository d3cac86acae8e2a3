//! Feeds arbitrary upstream answers through `handle_upstream` (hickory-proto validation,
//! the record walk, TTL capping, caching and rendering for every waiter) while real client
//! queries are outstanding. Each input is a list of replies, each aimed at one of the
//! transmits the resolver made, with its ID (and, if asked, its question) patched in so the
//! deep paths run; time moves on between them. Nothing may panic, and no error answer a
//! client gets may be longer than its query.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nsaux_resolver::{
    ClientInfo, Config, QueryOutcome, Resolver, ServeStale, Transport, UpstreamTransmit,
};

/// One base instant for every run (the core never reads the clock itself).
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Builds a query for `name` (dotted, no trailing dot) of `qtype`, with an EDNS OPT when
/// `edns` (DO set when `dnssec`).
fn query(id: u16, name: &str, qtype: u16, edns: bool, dnssec: bool) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if edns {
        q.extend_from_slice(&[
            0,
            0,
            41,
            0x04,
            0xD0,
            0,
            0,
            if dnssec { 0x80 } else { 0 },
            0,
            0,
            0,
        ]);
    }
    q
}

/// The question section of an upstream query (bytes 12 to the end of QTYPE/QCLASS).
fn question(payload: &[u8]) -> Option<&[u8]> {
    let mut i = 12;
    loop {
        let len = usize::from(*payload.get(i)?);
        i += 1 + len;
        if len == 0 {
            break;
        }
    }
    payload.get(12..i + 4)
}

fuzz_target!(|data: &[u8]| {
    let up1: SocketAddr = "192.0.2.1:53".parse().expect("static address");
    let up2: SocketAddr = "192.0.2.2:53".parse().expect("static address");
    let cfg = Config {
        upstreams: vec![up1, up2],
        serve_stale: Some(ServeStale::default()),
        max_waiters: 4,
        ..Config::default()
    };
    let Ok(mut r) = Resolver::new(cfg, [3; 32]) else {
        return;
    };
    let mut now = base();
    let client = |port: u16, transport| ClientInfo {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        transport,
        token: u64::from(port),
    };
    let queries = [
        (
            client(1001, Transport::Udp),
            query(0x1111, "a.example", 1, true, true),
        ),
        (
            client(1002, Transport::Udp),
            query(0x2222, "A.example", 1, true, true),
        ),
        (
            client(1003, Transport::Udp),
            query(0x3333, "b.example", 28, false, false),
        ),
        (
            client(1004, Transport::Tcp),
            query(0x4444, "c.example", 16, true, false),
        ),
        (
            client(1005, Transport::Udp),
            query(0x5555, "d.example", 15, true, false),
        ),
    ];
    let mut out = Vec::new();
    for (c, q) in &queries {
        let outcome = r.handle_query(now, *c, q, &mut out);
        if matches!(outcome, QueryOutcome::Answered(_)) {
            check(&out, q);
        }
    }
    let mut sent: Vec<UpstreamTransmit> = Vec::new();
    while let Some(tx) = r.poll_transmit(now) {
        sent.push(tx);
    }
    // Chunks: [selector, length, bytes...].
    let mut rest = data;
    while let [sel, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        if sent.is_empty() {
            break;
        }
        let tx = &sent[usize::from(sel & 0x0F) % sent.len()];
        let mut reply = body.to_vec();
        if reply.len() >= 4 {
            reply[..2].copy_from_slice(&tx.dns_id.to_be_bytes());
            // QR set, opcode 0: past the first checks.
            reply[2] = (reply[2] | 0x80) & 0x87;
        }
        if sel & 0x10 != 0
            && reply.len() >= 12
            && let Some(qs) = question(&tx.payload)
        {
            // Put the real question in, so the claim is accepted and hickory parses the rest.
            reply[4..6].copy_from_slice(&[0, 1]);
            let end = (12 + qs.len()).min(reply.len());
            reply.splice(12..end, qs.iter().copied());
        }
        let from = if sel & 0x20 != 0 { up2 } else { tx.upstream };
        let _ = r.handle_upstream(now, from, tx.transport, &reply);
        if sel & 0x40 != 0 {
            r.handle_upstream_error(now, tx.upstream, tx.transport, tx.dns_id);
        }
        if sel & 0x80 != 0 {
            now += Duration::from_millis(u64::from(*len) * 20);
            r.handle_timeout(now);
        }
        while let Some(tx) = r.poll_transmit(now) {
            sent.push(tx);
        }
        drain(&mut r, &queries);
    }
    // Replay whatever got cached, then let everything time out.
    for (c, q) in &queries {
        if matches!(
            r.handle_query(now, *c, q, &mut out),
            QueryOutcome::Answered(_)
        ) {
            check(&out, q);
        }
    }
    r.handle_timeout(now + Duration::from_secs(100_000));
    drain(&mut r, &queries);
});

/// Delivers every ready answer to its client and checks it.
fn drain(r: &mut Resolver, queries: &[(ClientInfo, Vec<u8>)]) {
    while let Some(a) = r.poll_answer() {
        let q = queries
            .iter()
            .find(|(c, _)| *c == a.client)
            .map(|(_, q)| q)
            .expect("answers go only to clients that asked");
        check(&a.payload, q);
    }
}

/// An answer to `q`: its ID, a response, and if an error no longer than the query.
fn check(answer: &[u8], q: &[u8]) {
    assert!(answer.len() >= 12, "short answer {answer:?}");
    assert_eq!(answer[..2], q[..2], "ID echoed");
    assert!(answer[2] & 0x80 != 0, "QR set");
    let code = answer[3] & 0x0F;
    if code != 0 && code != 3 {
        assert!(
            answer.len() <= q.len(),
            "error answer longer than the query"
        );
    }
}
