//! FORMERR / NOTIMP / drop suite for hostile or broken client queries.

use super::*;
use crate::DropReason;

/// Header bytes with the given ID, flags and counts.
fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    [id, flags, qd, an, ns, ar]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect()
}

/// Runs one raw query through a fresh resolver.
fn run(bytes: &[u8]) -> (QueryOutcome, Vec<u8>) {
    let mut r = resolver(&[UP1]);
    let mut out = Vec::new();
    let o = r.handle_query(t0(), udp_client(), bytes, &mut out);
    (o, out)
}

/// Asserts FORMERR with the ID echoed; returns the parsed answer.
fn expect_formerr(bytes: &[u8], id: u16) -> Message {
    let (o, out) = run(bytes);
    let (kind, m) = answered(o, &out);
    assert_eq!(kind, AnswerKind::FormErr, "{bytes:02x?}");
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(m.metadata.id, id);
    assert!(m.metadata.message_type == MessageType::Response);
    m
}

#[test]
fn truncated_header_dropped() {
    for len in 0..12 {
        let (o, out) = run(&vec![0u8; len]);
        assert_eq!(o, QueryOutcome::Dropped(DropReason::Malformed));
        assert!(out.is_empty());
    }
}

#[test]
fn responses_are_dropped() {
    let mut q = query(1, "example.com.", RecordType::A, None);
    q[2] |= 0x80;
    assert_eq!(run(&q).0, QueryOutcome::Dropped(DropReason::NotAQuery));
}

#[test]
fn zero_and_two_questions() {
    let m = expect_formerr(&header(0x1111, 0x0100, 0, 0, 0, 0), 0x1111);
    assert!(m.queries.is_empty());
    let mut two = header(0x2222, 0x0100, 2, 0, 0, 0);
    two.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01\x01b\x00\x00\x01\x00\x01");
    let m = expect_formerr(&two, 0x2222);
    assert!(m.queries.is_empty());
}

#[test]
fn bad_lengths() {
    // Question announced, not present.
    expect_formerr(&header(3, 0, 1, 0, 0, 0), 3);
    // Question cut inside the name, and inside type/class.
    let mut cut = header(4, 0, 1, 0, 0, 0);
    cut.extend_from_slice(b"\x07exam");
    expect_formerr(&cut, 4);
    let mut cut2 = header(5, 0, 1, 0, 0, 0);
    cut2.extend_from_slice(b"\x01a\x00\x00");
    expect_formerr(&cut2, 5);
    // Records announced but missing: question still echoed.
    let mut q = query(6, "Example.com.", RecordType::A, None);
    q[7] = 3; // ancount = 3
    let m = expect_formerr(&q, 6);
    assert_eq!(m.queries[0].name().to_ascii(), "Example.com.");
    // RDLENGTH past the end.
    let mut q = query(7, "example.com.", RecordType::A, None);
    q[7] = 1;
    q.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0x00, 0xFF, 1, 2, 3, 4]);
    expect_formerr(&q, 7);
    // Label longer than 63.
    let mut long = header(8, 0, 1, 0, 0, 0);
    long.push(64);
    long.extend_from_slice(&[b'a'; 64]);
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    let m = expect_formerr(&long, 8);
    assert!(m.queries.is_empty());
    // Name longer than 255.
    let mut huge = header(9, 0, 1, 0, 0, 0);
    for _ in 0..5 {
        huge.push(63);
        huge.extend_from_slice(&[b'x'; 63]);
    }
    huge.extend_from_slice(&[0, 0, 1, 0, 1]);
    expect_formerr(&huge, 9);
    // Trailing bytes after the message.
    let mut q = query(10, "example.com.", RecordType::A, None);
    q.extend_from_slice(&[1, 2, 3]);
    expect_formerr(&q, 10);
}

#[test]
fn compression_loops() {
    // Question name is a pointer to itself.
    let mut selfptr = header(11, 0, 1, 0, 0, 0);
    selfptr.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    expect_formerr(&selfptr, 11);
    // Answer record whose owner is a two-pointer loop.
    let mut q = query(12, "example.com.", RecordType::A, None);
    q[7] = 1;
    let at = q.len() as u8;
    q.extend_from_slice(&[
        0xC0,
        at + 2,
        0xC0,
        at,
        0,
        1,
        0,
        1,
        0,
        0,
        0,
        60,
        0,
        4,
        1,
        2,
        3,
        4,
    ]);
    let m = expect_formerr(&q, 12);
    assert_eq!(m.queries.len(), 1, "question echoed when readable");
    // Forward pointer.
    let mut q = query(13, "example.com.", RecordType::A, None);
    q[7] = 1;
    let at = q.len() as u8;
    q.extend_from_slice(&[
        0xC0,
        at + 20,
        0,
        1,
        0,
        1,
        0,
        0,
        0,
        60,
        0,
        4,
        1,
        2,
        3,
        4,
        0,
        0,
        0,
        0,
        0,
        0,
    ]);
    expect_formerr(&q, 13);
    // Reserved label type 0b10.
    let mut q = header(14, 0, 1, 0, 0, 0);
    q.extend_from_slice(&[0x80, 0, 0, 1, 0, 1]);
    expect_formerr(&q, 14);
}

#[test]
fn duplicate_opt_is_formerr() {
    let mut q = query(15, "example.com.", RecordType::A, Some((1232, false)));
    let opt = q[q.len() - 11..].to_vec();
    q.extend_from_slice(&opt);
    q[11] = 2;
    expect_formerr(&q, 15);
}

#[test]
fn unsupported_opcodes_and_types_notimp() {
    for opcode in [1u16, 2, 4, 5, 15] {
        let mut q = query(20, "Example.com.", RecordType::A, None);
        let flags = u16::from_be_bytes([q[2], q[3]]) & !0x7800 | (opcode << 11);
        q[2..4].copy_from_slice(&flags.to_be_bytes());
        let (o, out) = run(&q);
        assert_eq!(
            o,
            QueryOutcome::Answered(AnswerKind::NotImp),
            "opcode {opcode}"
        );
        let h = crate::wire::Header::read(&out).expect("header");
        assert_eq!(h.rcode_low(), 4);
        assert_eq!(h.opcode(), opcode as u8, "opcode echoed");
        assert_eq!(h.id, 20);
    }
    let (o, _) = run(&query(21, "example.com.", RecordType::AXFR, None));
    assert_eq!(o, QueryOutcome::Answered(AnswerKind::NotImp));
}

#[test]
fn bad_opt_is_formerr() {
    // Option length past the RDATA.
    let mut q = query(30, "example.com.", RecordType::A, Some((1232, false)));
    let n = q.len();
    q[n - 2..].copy_from_slice(&[0, 4]);
    q.extend_from_slice(&[0, 10, 0, 9]);
    expect_formerr(&q, 30);
    // OPT owner not the root.
    let mut q = query(31, "example.com.", RecordType::A, None);
    q[11] = 1;
    q.extend_from_slice(&[0xC0, 0x0C, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 0]);
    expect_formerr(&q, 31);
    // OPT in the answer section.
    let mut q = query(32, "example.com.", RecordType::A, None);
    q[7] = 1;
    q.extend_from_slice(&[0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 0]);
    expect_formerr(&q, 32);
    // A well-formed option (cookie) is accepted.
    let mut q = query(33, "example.com.", RecordType::A, Some((1232, false)));
    let n = q.len();
    q[n - 2..].copy_from_slice(&[0, 12]);
    q.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(matches!(run(&q).0, QueryOutcome::Pending(_)));
}
