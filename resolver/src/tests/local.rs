//! Local records through the resolver: AA answers, PTR, NXDOMAIN vs NODATA, run-time edits.

use super::*;
use crate::SharedLocal;

/// A resolver with a hosts file, a config record and a local domain; no upstreams.
fn local_resolver() -> Resolver {
    let mut cfg = config(&[]);
    cfg.local_domains = vec!["vs.internal".into()];
    cfg.local_records = vec![("gw.vs.internal".into(), ip("10.9.0.1"))];
    cfg.local_ttl = 7;
    let mut r = Resolver::new(cfg, [11; 32]).expect("config");
    let errors = r.set_hosts("127.0.0.1 localhost\n10.9.0.5 nfs.vs.internal nfs\nfd00::5 nfs.vs.internal\nnot-an-ip foo\n");
    assert_eq!(errors.len(), 1);
    r
}

/// Asks one question.
fn ask(r: &mut Resolver, name: &str, qtype: RecordType) -> (AnswerKind, Message) {
    let mut out = Vec::new();
    let o = r.handle_query(
        t0(),
        udp_client(),
        &query(0x4242, name, qtype, Some((1232, false))),
        &mut out,
    );
    answered(o, &out)
}

#[test]
fn forward_records_are_authoritative() {
    let mut r = local_resolver();
    let (kind, m) = ask(&mut r, "NFS.vs.internal.", RecordType::A);
    assert_eq!(kind, AnswerKind::Local);
    assert!(m.metadata.authoritative);
    assert_eq!(m.metadata.id, 0x4242);
    assert_eq!(m.queries[0].name().to_ascii(), "NFS.vs.internal.");
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].ttl, 7);
    assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(10, 9, 0, 5))));
    let (_, m) = ask(&mut r, "nfs.vs.internal.", RecordType::AAAA);
    assert_eq!(m.answers.len(), 1);
    let (_, m) = ask(&mut r, "nfs.", RecordType::A);
    assert_eq!(m.answers.len(), 1, "short alias from hosts");
    let (_, m) = ask(&mut r, "gw.vs.internal.", RecordType::A);
    assert_eq!(m.answers.len(), 1, "config record");
    let (_, m) = ask(&mut r, "localhost.", RecordType::A);
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn nxdomain_vs_nodata() {
    let mut r = local_resolver();
    let (_, m) = ask(&mut r, "nfs.vs.internal.", RecordType::MX);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty() && m.metadata.authoritative);
    let (_, m) = ask(&mut r, "gw.vs.internal.", RecordType::AAAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    let (_, m) = ask(&mut r, "missing.vs.internal.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    let (_, m) = ask(&mut r, "vs.internal.", RecordType::A);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "domain apex exists"
    );
    // Outside local data and domains: needs upstream (none here → SERVFAIL).
    let (kind, _) = ask(&mut r, "example.com.", RecordType::A);
    assert!(matches!(kind, AnswerKind::ServFail(_)));
}

#[test]
fn reverse_ptr_generated() {
    let mut r = local_resolver();
    let (kind, m) = ask(&mut r, "5.0.9.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(kind, AnswerKind::Local);
    let targets: Vec<String> = m
        .answers
        .iter()
        .map(|rec| match &rec.data {
            RData::PTR(p) => p.0.to_ascii(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(targets, vec!["nfs.vs.internal.", "nfs."]);
    let v6 = Name::from(ip("fd00::5")).to_ascii();
    let (_, m) = ask(&mut r, &v6, RecordType::PTR);
    assert_eq!(m.answers.len(), 1);
    let (_, m) = ask(&mut r, "1.0.9.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(m.answers.len(), 1, "config record has PTR too");
}

#[test]
fn runtime_add_remove_and_hosts_reload() {
    let mut r = local_resolver();
    r.add_record("new.vs.internal", ip("10.9.0.77"))
        .expect("add");
    let (_, m) = ask(&mut r, "new.vs.internal.", RecordType::A);
    assert_eq!(m.answers.len(), 1);
    let (_, m) = ask(&mut r, "77.0.9.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(m.answers.len(), 1);
    assert!(
        r.remove_record("new.vs.internal", ip("10.9.0.77"))
            .expect("remove")
    );
    assert!(
        !r.remove_record("new.vs.internal", ip("10.9.0.77"))
            .expect("remove")
    );
    let (_, m) = ask(&mut r, "new.vs.internal.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // Reloading hosts replaces hosts records only.
    assert!(r.set_hosts("10.9.0.6 nfs.vs.internal\n").is_empty());
    let (_, m) = ask(&mut r, "nfs.vs.internal.", RecordType::A);
    assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(10, 9, 0, 6))));
    let (_, m) = ask(&mut r, "gw.vs.internal.", RecordType::A);
    assert_eq!(m.answers.len(), 1);
    assert!(r.add_record("bad name", ip("10.0.0.1")).is_err());
}

#[test]
fn resolvers_sharing_local_records_edit_their_own_copy() {
    let mut cfg = config(&[]);
    cfg.local_domains = vec!["vs.internal".into()];
    cfg.local_records = vec![("gw.vs.internal".into(), ip("10.9.0.1"))];
    let shared = SharedLocal::new(&cfg).expect("records");
    assert!(shared.fits(&cfg));
    let mut a = Resolver::with_shared_local(cfg.clone(), [1; 32], &shared).expect("a");
    let mut b = Resolver::with_shared_local(cfg.clone(), [2; 32], &shared).expect("b");
    a.add_record("extra.vs.internal", ip("10.9.0.2"))
        .expect("add");
    let (_, m) = ask(&mut a, "extra.vs.internal.", RecordType::A);
    assert_eq!(m.answers.len(), 1);
    let (_, m) = ask(&mut b, "extra.vs.internal.", RecordType::A);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "b unchanged"
    );
    assert_eq!(
        a.remove_record("extra.vs.internal", ip("10.9.0.2")),
        Ok(true)
    );
    let (_, m) = ask(&mut b, "gw.vs.internal.", RecordType::A);
    assert_eq!(m.answers.len(), 1, "b keeps the shared record");
    // A config with other records does not fit: its resolver parses its own.
    let mut other = cfg;
    other.local_records = vec![("db.vs.internal".into(), ip("10.9.0.3"))];
    assert!(!shared.fits(&other));
    let mut c = Resolver::with_shared_local(other, [3; 32], &shared).expect("c");
    let (_, m) = ask(&mut c, "db.vs.internal.", RecordType::A);
    assert_eq!(m.answers.len(), 1);
    let (_, m) = ask(&mut c, "gw.vs.internal.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn resolvers_share_settings_but_keep_their_own_allow_list() {
    let mut cfg = config(&[]);
    cfg.local_records = vec![("gw.vs.internal".into(), ip("10.9.0.1"))];
    let shared = SharedLocal::new(&cfg).expect("records");
    let mut a = Resolver::with_shared_local(cfg.clone(), [1; 32], &shared).expect("a");
    // Another namespace: its own addresses allowed and its own upstreams, same settings.
    let mut wide = cfg.clone();
    wide.allow = vec![crate::Cidr::new(ip("10.0.0.0"), 8).expect("cidr")];
    wide.upstreams = vec![sa("192.0.2.1:53")];
    assert!(
        shared.fits(&wide),
        "upstreams and allow list are per instance"
    );
    let mut b = Resolver::with_shared_local(wide, [2; 32], &shared).expect("b");
    assert!(a.shares_settings_with(&b), "one copy of the settings");
    let ask_from = |r: &mut Resolver, from: &str| {
        let mut out = Vec::new();
        let client = ClientInfo {
            addr: sa(from),
            ..udp_client()
        };
        let q = query(0x4242, "gw.vs.internal.", RecordType::A, None);
        answered(r.handle_query(t0(), client, &q, &mut out), &out).1
    };
    let m = ask_from(&mut a, "10.1.2.3:5000");
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let m = ask_from(&mut b, "10.1.2.3:5000");
    assert_eq!(m.answers.len(), 1, "b allows its own subnet");
    b.set_allow(Vec::new());
    let m = ask_from(&mut b, "10.1.2.3:5000");
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let m = ask_from(&mut a, "127.0.0.1:5000");
    assert_eq!(m.answers.len(), 1, "a unchanged");
    // Other settings do not fit: that resolver has its own copy, with its own TTL.
    let mut other = cfg;
    other.local_ttl = 99;
    assert!(!shared.fits(&other));
    let mut c = Resolver::with_shared_local(other, [3; 32], &shared).expect("c");
    assert!(!a.shares_settings_with(&c));
    let m = ask_from(&mut c, "127.0.0.1:5000");
    assert_eq!(m.answers[0].ttl, 99);
    let m = ask_from(&mut a, "127.0.0.1:5000");
    assert_eq!(m.answers[0].ttl, 10);
}
