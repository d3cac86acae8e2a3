//! Fixes found by the differential run against unbound and dnsmasq (issue 13): error answers
//! keep the client's OPT, CHAOS identity queries stay local.

use hickory_proto::rr::DNSClass;

use super::*;

/// Sets the opcode of a built query.
fn with_opcode(mut q: Vec<u8>, opcode: u16) -> Vec<u8> {
    let flags = u16::from_be_bytes([q[2], q[3]]) & !0x7800 | (opcode << 11);
    q[2..4].copy_from_slice(&flags.to_be_bytes());
    q
}

#[test]
fn error_answers_to_edns_queries_carry_an_opt() {
    let mut r = resolver(&[UP1]);
    let mut out = Vec::new();
    // NOTIMP for another opcode.
    let q = with_opcode(
        query(1, "example.com.", RecordType::A, Some((1232, true))),
        2,
    );
    let (kind, m) = answered(r.handle_query(t0(), udp_client(), &q, &mut out), &out);
    assert_eq!(kind, AnswerKind::NotImp);
    let edns = m.edns.as_ref().expect("OPT in the NOTIMP answer");
    assert!(edns.flags().dnssec_ok, "DO echoed");
    // FORMERR for two questions, with an OPT.
    let mut two = query(2, "example.com.", RecordType::A, Some((1232, false)));
    let qlen = b"\x07example\x03com\x00\x00\x01\x00\x01".len();
    let question = two[12..12 + qlen].to_vec();
    two.splice(12 + qlen..12 + qlen, question);
    two[5] = 2;
    let (kind, m) = answered(r.handle_query(t0(), udp_client(), &two, &mut out), &out);
    assert_eq!(kind, AnswerKind::FormErr);
    assert!(m.edns.is_some(), "OPT in the FORMERR answer");
    // Without EDNS, none.
    let q = with_opcode(query(3, "example.com.", RecordType::A, None), 2);
    let (_, m) = answered(r.handle_query(t0(), udp_client(), &q, &mut out), &out);
    assert!(m.edns.is_none());
}

#[test]
fn refusals_to_edns_queries_carry_an_opt() {
    let mut cfg = config(&[UP1]);
    cfg.allow = Vec::new();
    let mut r = Resolver::new(cfg, [7; 32]).expect("config");
    let mut out = Vec::new();
    let q = query(4, "example.com.", RecordType::A, Some((1232, false)));
    let (kind, m) = answered(r.handle_query(t0(), udp_client(), &q, &mut out), &out);
    assert_eq!(kind, AnswerKind::Refused);
    assert!(m.edns.is_some());
}

#[test]
fn chaos_identity_queries_are_refused_and_never_forwarded() {
    let mut r = resolver(&[UP1]);
    let mut out = Vec::new();
    for name in [
        "version.bind.",
        "hostname.bind.",
        "id.server.",
        "version.server.",
    ] {
        let mut m = Message::new(5, MessageType::Query, OpCode::Query);
        let mut question = Query::query(Name::from_ascii(name).expect("name"), RecordType::TXT);
        question.set_query_class(DNSClass::CH);
        m.add_query(question);
        m.set_edns(Edns::new());
        let q = m.to_vec().expect("encode");
        let (kind, a) = answered(r.handle_query(t0(), udp_client(), &q, &mut out), &out);
        assert_eq!(kind, AnswerKind::Refused, "{name}");
        assert_eq!(a.metadata.response_code, ResponseCode::Refused);
        assert!(a.edns.is_some());
        assert_eq!(a.queries[0].query_class(), DNSClass::CH);
        assert!(r.poll_transmit(t0()).is_none(), "{name} forwarded");
    }
}
