//! `Portmapper::handle` driven with hand-built call bytes: every procedure and every refusal.

use super::*;
use crate::context::Caller;
use crate::error::XdrError;
use crate::rmtcall::Forward;
use crate::rpc::{AUTH_NONE, NotACall, ReplyBody, decode_reply, encode_call_header};
use crate::stats::decode_stats;
use crate::types::{RmtCallArgs, decode_list};
use proptest::prelude::*;
use std::net::SocketAddr;

const NFS: u32 = 100_003;

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn ctx(transport: Transport, caller: Caller, local: Option<&str>) -> CallContext {
    CallContext {
        transport,
        caller,
        local_addr: local.map(sa),
        now_unix: 1_700_000_000,
    }
}

/// Loopback UDP from a reserved port (owner "superuser").
fn lo_udp() -> CallContext {
    ctx(
        Transport::Udp,
        Caller::Ip(sa("127.0.0.1:700")),
        Some("127.0.0.1:111"),
    )
}

/// A remote UDP caller reaching 10.0.0.5.
fn remote_udp() -> CallContext {
    ctx(
        Transport::Udp,
        Caller::Ip(sa("10.0.0.9:40000")),
        Some("10.0.0.5:111"),
    )
}

fn local(uid: u32) -> CallContext {
    ctx(Transport::Local, Caller::Local { uid, pid: None }, None)
}

fn pm_with(config: Config) -> Portmapper {
    Portmapper::new(
        config,
        &[
            ("udp", "0.0.0.0.0.111"),
            ("tcp", "0.0.0.0.0.111"),
            ("udp6", "::.0.111"),
            ("tcp6", "::.0.111"),
            ("local", "/run/rpcbind.sock"),
        ],
    )
}

fn pm() -> Portmapper {
    pm_with(Config::default())
}

fn call_flavor(vers: u32, proc_: u32, flavor: u32, args: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    encode_call_header(&mut b, 0x1234, PMAP_PROG, vers, proc_, flavor, &[]);
    b.extend_from_slice(args);
    b
}

fn call(vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    call_flavor(vers, proc_, AUTH_NONE, args)
}

fn pmap(prog: u32, vers: u32, prot: u32, port: u32) -> Vec<u8> {
    let mut b = Vec::new();
    Pmap {
        prog,
        vers,
        prot,
        port,
    }
    .encode(&mut b);
    b
}

fn rpcb(prog: u32, vers: u32, netid: &str, addr: &str) -> Vec<u8> {
    let mut b = Vec::new();
    Rpcb {
        prog,
        vers,
        netid: netid.into(),
        addr: addr.into(),
        owner: "ignored".into(),
    }
    .encode(&mut b);
    b
}

/// Runs a call and returns (outcome, reply bytes).
fn run(p: &mut Portmapper, c: &CallContext, req: &[u8]) -> (Outcome, Vec<u8>) {
    let mut out = Vec::new();
    let o = p.handle(c, req, &mut out);
    (o, out)
}

/// Runs a call that must succeed and returns its results.
fn ok(p: &mut Portmapper, c: &CallContext, req: &[u8]) -> (Vec<Effect>, Vec<u8>) {
    let (o, out) = run(p, c, req);
    assert_eq!(o.verdict, Verdict::Replied, "{o:?}");
    match decode_reply(&out) {
        Some((0x1234, ReplyBody::Success(r))) => (o.effects, r.to_vec()),
        other => panic!("not a success reply: {other:?}"),
    }
}

fn refused_with(p: &mut Portmapper, c: &CallContext, req: &[u8]) -> (Refusal, Vec<u8>) {
    let (o, out) = run(p, c, req);
    match o.verdict {
        Verdict::Refused(r) => (r, out),
        v => panic!("expected a refusal, got {v:?}"),
    }
}

fn as_bool(r: &[u8]) -> bool {
    XdrReader::new(r).u32() == Ok(1)
}

fn as_u32(r: &[u8]) -> u32 {
    XdrReader::new(r).u32().expect("u32 result")
}

fn as_string(r: &[u8]) -> String {
    XdrReader::new(r).string().expect("string result")
}

fn words(b: &[u8]) -> Vec<u32> {
    b.chunks(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn dump_v3(p: &mut Portmapper, c: &CallContext) -> Vec<Rpcb> {
    let (_, r) = ok(p, c, &call(3, 4, &[]));
    decode_list(&mut XdrReader::new(&r), Rpcb::decode).expect("rpcblist")
}

fn dump_v2(p: &mut Portmapper, c: &CallContext) -> Vec<Pmap> {
    let (_, r) = ok(p, c, &call(2, 4, &[]));
    decode_list(&mut XdrReader::new(&r), Pmap::decode).expect("pmaplist")
}

#[test]
fn null_on_every_version_and_transport() {
    let mut p = pm();
    for c in [lo_udp(), remote_udp(), local(1000)] {
        for v in 2..=4 {
            let (e, r) = ok(&mut p, &c, &call(v, 0, &[]));
            assert!(e.is_empty() && r.is_empty());
        }
    }
}

#[test]
fn probe_helpers_roundtrip() {
    let mut p = pm();
    let mut req = Vec::new();
    crate::encode_null_call(77, PMAP_PROG, 4, &mut req);
    let (o, out) = run(&mut p, &remote_udp(), &req);
    assert!(o.should_reply());
    assert!(crate::is_null_reply(77, &out));
    assert!(!crate::is_null_reply(78, &out));
}

#[test]
fn self_registrations_like_rpcbind() {
    let p = pm();
    let got: Vec<(u32, &str)> = p
        .entries()
        .iter()
        .map(|e| (e.vers, e.netid.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, "udp"),
            (3, "udp"),
            (4, "udp"),
            (2, "tcp"),
            (3, "tcp"),
            (4, "tcp"),
            (3, "udp6"),
            (4, "udp6"),
            (3, "tcp6"),
            (4, "tcp6"),
            (3, "local"),
            (4, "local"),
        ]
    );
    assert!(p.entries().iter().all(|e| e.owner == "superuser"));
}

#[test]
fn rpc_mismatch() {
    let mut p = pm();
    let mut req = call(2, 0, &[]);
    req[8..12].copy_from_slice(&3u32.to_be_bytes());
    let (r, out) = refused_with(&mut p, &lo_udp(), &req);
    assert_eq!(r, Refusal::RpcMismatch);
    assert_eq!(words(&out), vec![0x1234, 1, 1, 0, 2, 2]);
}

#[test]
fn not_a_call_is_dropped() {
    let mut p = pm();
    let mut out = vec![1, 2, 3];
    let o = p.handle(&lo_udp(), &[0, 0, 0, 1, 0], &mut out);
    assert_eq!(
        o.verdict,
        Verdict::Dropped(DropReason::NotACall(NotACall::Truncated))
    );
    assert!(out.is_empty() && !o.should_reply());
    let mut reply = Vec::new();
    encode_accepted(&mut reply, 1, AcceptStat::Success);
    let (o, _) = run(&mut p, &lo_udp(), &reply);
    assert_eq!(
        o.verdict,
        Verdict::Dropped(DropReason::NotACall(NotACall::NotCall))
    );
    let req = call(2, 0, &[]);
    let (o, _) = run(&mut p, &lo_udp(), &req[..req.len() - 2]);
    assert_eq!(
        o.verdict,
        Verdict::Dropped(DropReason::NotACall(NotACall::BadHeader))
    );
}

#[test]
fn prog_and_version_errors() {
    let mut p = pm();
    let mut req = call(2, 0, &[]);
    req[12..16].copy_from_slice(&100_001u32.to_be_bytes());
    let (r, out) = refused_with(&mut p, &lo_udp(), &req);
    assert_eq!(r, Refusal::ProgUnavail);
    assert_eq!(words(&out), vec![0x1234, 1, 0, 0, 0, 1]);
    for v in [0, 1, 5, u32::MAX] {
        let (r, out) = refused_with(&mut p, &lo_udp(), &call(v, 0, &[]));
        assert_eq!(r, Refusal::ProgMismatch { low: 2, high: 4 });
        assert_eq!(words(&out), vec![0x1234, 1, 0, 0, 0, 2, 2, 4]);
    }
}

#[test]
fn proc_unavail() {
    let mut p = pm();
    for (v, proc_) in [
        (2, 6),
        (3, 9),
        (3, 10),
        (3, 11),
        (3, 12),
        (4, 13),
        (4, u32::MAX),
    ] {
        let (r, out) = refused_with(&mut p, &lo_udp(), &call(v, proc_, &[]));
        assert_eq!(r, Refusal::ProcUnavail, "v{v} p{proc_}");
        assert_eq!(words(&out), vec![0x1234, 1, 0, 0, 0, 3]);
    }
}

#[test]
fn auth_flavors() {
    let mut p = pm();
    let (r, out) = refused_with(&mut p, &lo_udp(), &call_flavor(2, 0, 2, &[]));
    assert_eq!(r, Refusal::Auth(AuthStat::RejectedCred));
    assert_eq!(words(&out), vec![0x1234, 1, 1, 1, 2]);
    let (r, _) = refused_with(&mut p, &lo_udp(), &call_flavor(2, 0, 1, &[]));
    assert_eq!(r, Refusal::Auth(AuthStat::BadCred));
}

#[test]
fn garbage_args() {
    let mut p = pm();
    for (v, proc_) in [
        (2, 1),
        (2, 2),
        (2, 3),
        (3, 1),
        (3, 2),
        (3, 3),
        (3, 7),
        (3, 8),
        (4, 9),
        (4, 11),
    ] {
        let (r, out) = refused_with(&mut p, &lo_udp(), &call(v, proc_, &[0, 0, 0]));
        assert_eq!(r, Refusal::GarbageArgs, "v{v} p{proc_}");
        assert_eq!(words(&out), vec![0x1234, 1, 0, 0, 0, 4]);
    }
}

#[test]
fn strings_over_9000_bytes_are_garbage() {
    let mut p = pm();
    let long = "a".repeat(9001);
    let (r, _) = refused_with(&mut p, &local(0), &call(4, 1, &rpcb(1, 1, "udp", &long)));
    assert_eq!(r, Refusal::GarbageArgs);
    // A huge claimed length with no data behind it: no allocation, just GARBAGE_ARGS.
    let mut args = 1u32.to_be_bytes().to_vec();
    args.extend_from_slice(&1u32.to_be_bytes());
    args.extend_from_slice(&0xffff_fff0u32.to_be_bytes());
    let (r, _) = refused_with(&mut p, &local(0), &call(4, 1, &args));
    assert_eq!(r, Refusal::GarbageArgs);
    // 9000 bytes still decode, but no netid has such an address: SET answers FALSE.
    let exact = "a".repeat(9000);
    let (e, res) = ok(&mut p, &local(0), &call(4, 1, &rpcb(1, 1, "udp", &exact)));
    assert!(!as_bool(&res) && e.is_empty());
}

#[test]
fn v2_set_getport_dump_unset() {
    let mut p = pm();
    let c = lo_udp();
    let (e, r) = ok(&mut p, &c, &call(2, 1, &pmap(NFS, 3, 17, 2049)));
    assert!(as_bool(&r));
    let want = Entry {
        prog: NFS,
        vers: 3,
        netid: "udp".into(),
        uaddr: "0.0.0.0.8.1".into(),
        owner: "superuser".into(),
    };
    assert_eq!(e, vec![Effect::Registered(want.clone())]);
    // Same again: TRUE, no new effect; another port: FALSE.
    let (e, r) = ok(&mut p, &c, &call(2, 1, &pmap(NFS, 3, 17, 2049)));
    assert!(as_bool(&r) && e.is_empty());
    let (e, r) = ok(&mut p, &c, &call(2, 1, &pmap(NFS, 3, 17, 2050)));
    assert!(!as_bool(&r) && e.is_empty());
    // Unknown protocol: FALSE.
    let (_, r) = ok(&mut p, &c, &call(2, 1, &pmap(NFS, 3, 99, 2049)));
    assert!(!as_bool(&r));
    // GETPORT exact, fallback to another version, wrong protocol.
    let (_, r) = ok(&mut p, &c, &call(2, 3, &pmap(NFS, 3, 17, 0)));
    assert_eq!(as_u32(&r), 2049);
    let (_, r) = ok(&mut p, &c, &call(2, 3, &pmap(NFS, 4, 17, 0)));
    assert_eq!(as_u32(&r), 2049);
    let (_, r) = ok(&mut p, &c, &call(2, 3, &pmap(NFS, 3, 6, 0)));
    assert_eq!(as_u32(&r), 0);
    let (_, r) = ok(&mut p, &c, &call(2, 3, &pmap(PMAP_PROG, 2, 6, 0)));
    assert_eq!(as_u32(&r), 111);
    // v3 DUMP shows it as netid udp with 0.0.0.0.8.1.
    assert!(dump_v3(&mut p, &c).iter().any(|r| r.prog == NFS
        && r.netid == "udp"
        && r.addr == "0.0.0.0.8.1"
        && r.owner == "superuser"));
    // A v4 registration on tcp shows in v2 DUMP; udp6 and local do not.
    for (netid, addr) in [
        ("tcp", "127.0.0.1.8.1"),
        ("udp6", "::.8.1"),
        ("local", "/run/nfs"),
    ] {
        let (_, r) = ok(&mut p, &c, &call(4, 1, &rpcb(NFS, 4, netid, addr)));
        assert!(as_bool(&r));
    }
    let v2 = dump_v2(&mut p, &c);
    assert!(v2.iter().all(|m| m.prot == 6 || m.prot == 17));
    assert!(v2.contains(&Pmap {
        prog: NFS,
        vers: 4,
        prot: 6,
        port: 2049
    }));
    assert_eq!(v2.iter().filter(|m| m.prog == NFS).count(), 2);
    // v2 UNSET removes udp and tcp, leaves udp6/local.
    let (e, r) = ok(&mut p, &c, &call(2, 2, &pmap(NFS, 4, 0, 0)));
    assert!(as_bool(&r));
    assert_eq!(e.len(), 1);
    let left: Vec<_> = p
        .entries()
        .iter()
        .filter(|e| e.prog == NFS)
        .map(|e| e.netid.clone())
        .collect();
    assert_eq!(left, vec!["udp", "udp6", "local"]);
}

#[test]
fn set_unset_need_local_or_loopback() {
    let mut p = pm();
    for (v, proc_, args) in [
        (2, 1, pmap(1, 1, 17, 1)),
        (2, 2, pmap(1, 1, 17, 1)),
        (3, 1, rpcb(1, 1, "udp", "0.0.0.0.0.1")),
        (4, 2, rpcb(1, 1, "", "")),
    ] {
        let (r, out) = refused_with(&mut p, &remote_udp(), &call(v, proc_, &args));
        assert_eq!(r, Refusal::Auth(AuthStat::TooWeak));
        assert_eq!(words(&out), vec![0x1234, 1, 1, 1, 5]);
    }
    // 127.0.0.2 is not rpcbind's loopback.
    let c = ctx(Transport::Tcp, Caller::Ip(sa("127.0.0.2:700")), None);
    let (r, _) = refused_with(&mut p, &c, &call(4, 1, &rpcb(1, 1, "udp", "0.0.0.0.0.1")));
    assert_eq!(r, Refusal::Auth(AuthStat::TooWeak));
    // loopback_may_register = false: only AF_LOCAL.
    let mut p = pm_with(Config {
        loopback_may_register: false,
        ..Config::default()
    });
    let (r, _) = refused_with(
        &mut p,
        &lo_udp(),
        &call(4, 1, &rpcb(1, 1, "udp", "0.0.0.0.0.1")),
    );
    assert_eq!(r, Refusal::Auth(AuthStat::TooWeak));
    let (_, res) = ok(
        &mut p,
        &local(5),
        &call(4, 1, &rpcb(1, 1, "udp", "0.0.0.0.0.1")),
    );
    assert!(as_bool(&res));
}

#[test]
fn owners_and_unset_rights() {
    let mut p = pm();
    let (e, r) = ok(
        &mut p,
        &local(1000),
        &call(4, 1, &rpcb(200, 1, "tcp", "0.0.0.0.4.0")),
    );
    assert!(as_bool(&r));
    assert!(matches!(&e[..], [Effect::Registered(en)] if en.owner == "1000"));
    let c = ctx(Transport::Udp, Caller::Ip(sa("127.0.0.1:40000")), None);
    let (e, _) = ok(&mut p, &c, &call(4, 1, &rpcb(200, 1, "udp", "0.0.0.0.4.0")));
    assert!(matches!(&e[..], [Effect::Registered(en)] if en.owner == "unknown"));
    // uid 1001 may not remove uid 1000's entry; nothing is removed.
    let (e, r) = ok(&mut p, &local(1001), &call(4, 2, &rpcb(200, 1, "tcp", "")));
    assert!(!as_bool(&r) && e.is_empty());
    // The owner may.
    let (e, r) = ok(&mut p, &local(1000), &call(3, 2, &rpcb(200, 1, "tcp", "")));
    assert!(as_bool(&r));
    assert!(matches!(&e[..], [Effect::Unregistered(v)] if v.len() == 1));
    // Unsetting what is not there is TRUE.
    let (e, r) = ok(&mut p, &local(1000), &call(3, 2, &rpcb(999, 1, "", "")));
    assert!(as_bool(&r) && e.is_empty());
    // superuser (uid 0) removes any netid with an empty netid.
    let _ = ok(
        &mut p,
        &local(7),
        &call(4, 1, &rpcb(200, 1, "tcp6", "::.4.0")),
    );
    let (e, r) = ok(&mut p, &local(0), &call(4, 2, &rpcb(200, 1, "", "")));
    assert!(as_bool(&r));
    assert!(matches!(&e[..], [Effect::Unregistered(v)] if v.len() == 2));
    assert!(p.entries().iter().all(|e| e.prog != 200));
}

/// A v2 UNSET removes tcp and udp as two effects; taking them back latest first (what the
/// daemon does when it cannot journal them) restores the table exactly, order included.
#[test]
fn v2_unset_undone_restores_the_table_exactly() {
    let mut p = pm();
    let c = lo_udp();
    let _ = ok(&mut p, &c, &call(2, 1, &pmap(NFS, 3, 6, 2049)));
    let _ = ok(&mut p, &c, &call(2, 1, &pmap(NFS + 1, 1, 17, 900)));
    let _ = ok(&mut p, &c, &call(2, 1, &pmap(NFS, 3, 17, 2049)));
    let _ = ok(&mut p, &c, &call(2, 1, &pmap(NFS + 2, 1, 17, 901)));
    let before = p.entries().to_vec();
    let (e, r) = ok(&mut p, &c, &call(2, 2, &pmap(NFS, 3, 0, 0)));
    assert!(as_bool(&r));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(p.entries().iter().all(|x| x.prog != NFS));
    for eff in e.into_iter().rev() {
        match eff {
            Effect::Unregistered(removed) => p.undo_unset(removed),
            other => panic!("unexpected effect {other:?}"),
        }
    }
    assert_eq!(p.entries(), &before[..]);
}

#[test]
fn getaddr_fallback_and_getversaddr() {
    let mut p = pm();
    let _ = ok(
        &mut p,
        &local(0),
        &call(4, 1, &rpcb(300, 1, "udp", "127.0.0.1.3.0")),
    );
    let c = lo_udp();
    for v in [3, 4] {
        let (_, r) = ok(&mut p, &c, &call(v, 3, &rpcb(300, 1, "udp", "")));
        assert_eq!(as_string(&r), "127.0.0.1.3.0");
        let (_, r) = ok(&mut p, &c, &call(v, 3, &rpcb(300, 2, "udp", "")));
        assert_eq!(as_string(&r), "127.0.0.1.3.0", "GETADDR falls back");
    }
    let (_, r) = ok(&mut p, &c, &call(4, 9, &rpcb(300, 2, "udp", "")));
    assert_eq!(as_string(&r), "", "GETVERSADDR does not");
    let (_, r) = ok(&mut p, &c, &call(4, 9, &rpcb(300, 1, "udp", "")));
    assert_eq!(as_string(&r), "127.0.0.1.3.0");
    // Looked up by the transport's netid: over TCP there is nothing.
    let t = ctx(
        Transport::Tcp,
        Caller::Ip(sa("127.0.0.1:5000")),
        Some("127.0.0.1:111"),
    );
    let (_, r) = ok(&mut p, &t, &call(4, 3, &rpcb(300, 1, "udp", "")));
    assert_eq!(as_string(&r), "");
}

#[test]
fn getaddr_merges_wildcard_with_local_address() {
    let mut p = pm();
    let _ = ok(
        &mut p,
        &local(0),
        &call(4, 1, &rpcb(NFS, 3, "tcp", "0.0.0.0.8.1")),
    );
    let _ = ok(
        &mut p,
        &local(0),
        &call(4, 1, &rpcb(NFS, 3, "tcp6", "::.8.1")),
    );
    let c = ctx(
        Transport::Tcp,
        Caller::Ip(sa("10.0.0.9:1000")),
        Some("10.0.0.5:111"),
    );
    let (_, r) = ok(&mut p, &c, &call(4, 3, &rpcb(NFS, 3, "tcp", "")));
    assert_eq!(as_string(&r), "10.0.0.5.8.1");
    let c6 = ctx(
        Transport::Tcp,
        Caller::Ip(sa("[fd00::9]:1000")),
        Some("[fd00::5]:111"),
    );
    let (_, r) = ok(&mut p, &c6, &call(4, 3, &rpcb(NFS, 3, "tcp6", "")));
    assert_eq!(as_string(&r), "fd00::5.8.1");
    // Without a known local address the registration is returned as is.
    let c = ctx(Transport::Tcp, Caller::Ip(sa("10.0.0.9:1000")), None);
    let (_, r) = ok(&mut p, &c, &call(4, 3, &rpcb(NFS, 3, "tcp", "")));
    assert_eq!(as_string(&r), "0.0.0.0.8.1");
}

#[test]
fn dump_udp_restriction() {
    let mut p = pm();
    let (r, _) = refused_with(&mut p, &remote_udp(), &call(3, 4, &[]));
    assert_eq!(r, Refusal::Auth(AuthStat::TooWeak));
    let (r, _) = refused_with(&mut p, &remote_udp(), &call(2, 4, &[]));
    assert_eq!(r, Refusal::Auth(AuthStat::TooWeak));
    let tcp = ctx(
        Transport::Tcp,
        Caller::Ip(sa("10.0.0.9:1000")),
        Some("10.0.0.5:111"),
    );
    assert_eq!(dump_v3(&mut p, &tcp).len(), 12);
    let lo2 = ctx(Transport::Udp, Caller::Ip(sa("127.0.0.53:1000")), None);
    // portmapper v2, v3 and v4 on udp and tcp, as `rpcinfo -p` shows for rpcbind.
    assert_eq!(dump_v2(&mut p, &lo2).len(), 6);
    // Without the restriction the 2x rule still refuses a remote UDP DUMP (SYSTEM_ERR).
    let mut p = pm_with(Config {
        udp_dump_loopback_only: false,
        ..Config::default()
    });
    let (r, out) = refused_with(&mut p, &remote_udp(), &call(3, 4, &[]));
    assert_eq!(r, Refusal::SystemErr);
    assert_eq!(words(&out), vec![0x1234, 1, 0, 0, 0, 5]);
    assert_eq!(p.reflection_refusals(), 1);
    assert_eq!(dump_v3(&mut p, &tcp).len(), 12);
}

#[test]
fn registration_cap() {
    let mut p = pm_with(Config {
        max_registrations: 13,
        ..Config::default()
    });
    let (_, r) = ok(
        &mut p,
        &local(0),
        &call(4, 1, &rpcb(1, 1, "udp", "0.0.0.0.0.1")),
    );
    assert!(as_bool(&r));
    let (e, r) = ok(
        &mut p,
        &local(0),
        &call(4, 1, &rpcb(2, 1, "udp", "0.0.0.0.0.1")),
    );
    assert!(!as_bool(&r) && e.is_empty());
    let (_, r) = ok(
        &mut p,
        &local(0),
        &call(4, 1, &rpcb(1, 1, "udp", "0.0.0.0.0.1")),
    );
    assert!(as_bool(&r), "re-SET of an existing entry still succeeds");
}

#[test]
fn udp_reply_cap_gives_system_err() {
    let mut p = pm_with(Config {
        udp_max_reply: 100,
        ..Config::default()
    });
    let (r, out) = refused_with(&mut p, &lo_udp(), &call(4, 4, &[]));
    assert_eq!(r, Refusal::SystemErr);
    assert_eq!(words(&out), vec![0x1234, 1, 0, 0, 0, 5]);
    let tcp = ctx(Transport::Tcp, Caller::Ip(sa("127.0.0.1:1000")), None);
    assert_eq!(dump_v3(&mut p, &tcp).len(), 12);
}

#[test]
fn gettime() {
    let mut p = pm();
    for v in [3, 4] {
        let (_, r) = ok(&mut p, &remote_udp(), &call(v, 6, &[]));
        assert_eq!(as_u32(&r), 1_700_000_000);
    }
}

#[test]
fn uaddr_taddr_conversions() {
    let mut p = pm();
    let mut s = Vec::new();
    s.put_string("127.0.0.1.0.111");
    let (_, r) = ok(&mut p, &lo_udp(), &call(4, 7, &s));
    let nb = Netbuf::decode(&mut XdrReader::new(&r)).expect("netbuf");
    assert_eq!(nb.maxlen, 16);
    assert_eq!(nb.buf, [2, 0, 0, 111, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    // Back again.
    let mut a = Vec::new();
    nb.encode(&mut a);
    let (_, r) = ok(&mut p, &lo_udp(), &call(3, 8, &a));
    assert_eq!(as_string(&r), "127.0.0.1.0.111");
    // Junk gives the empty netbuf / empty string.
    let mut s = Vec::new();
    s.put_string("nonsense");
    let (_, r) = ok(&mut p, &lo_udp(), &call(3, 7, &s));
    assert_eq!(words(&r), vec![0, 0]);
    let mut a = Vec::new();
    Netbuf {
        maxlen: 3,
        buf: vec![1, 2, 3],
    }
    .encode(&mut a);
    let (_, r) = ok(&mut p, &lo_udp(), &call(4, 8, &a));
    assert_eq!(as_string(&r), "");
}

#[test]
fn getaddrlist_same_family() {
    let mut p = pm();
    let _ = ok(
        &mut p,
        &local(0),
        &call(4, 1, &rpcb(NFS, 3, "udp", "0.0.0.0.8.1")),
    );
    let _ = ok(
        &mut p,
        &local(0),
        &call(4, 1, &rpcb(NFS, 3, "tcp", "0.0.0.0.8.1")),
    );
    let _ = ok(
        &mut p,
        &local(0),
        &call(4, 1, &rpcb(NFS, 3, "tcp6", "::.8.1")),
    );
    let _ = ok(&mut p, &local(0), &call(4, 1, &rpcb(NFS, 3, "weird", "x")));
    let _ = ok(
        &mut p,
        &local(0),
        &call(4, 1, &rpcb(NFS, 4, "udp", "0.0.0.0.8.1")),
    );
    let c = ctx(
        Transport::Tcp,
        Caller::Ip(sa("10.0.0.9:1000")),
        Some("10.0.0.5:111"),
    );
    let (_, r) = ok(&mut p, &c, &call(4, 11, &rpcb(NFS, 3, "", "")));
    let list = decode_list(&mut XdrReader::new(&r), RpcbEntry::decode).expect("list");
    assert_eq!(
        list,
        vec![
            RpcbEntry {
                maddr: "10.0.0.5.8.1".into(),
                netid: "udp".into(),
                semantics: 1,
                protofmly: "inet".into(),
                proto: "udp".into()
            },
            RpcbEntry {
                maddr: "10.0.0.5.8.1".into(),
                netid: "tcp".into(),
                semantics: 3,
                protofmly: "inet".into(),
                proto: "tcp".into()
            },
        ]
    );
    let (_, r) = ok(&mut p, &c, &call(4, 11, &rpcb(NFS, 9, "", "")));
    assert_eq!(words(&r), vec![0]);
}

#[test]
fn getstat_counts() {
    let mut p = pm();
    let c = lo_udp();
    let _ = ok(&mut p, &c, &call(2, 0, &[]));
    let _ = ok(&mut p, &c, &call(2, 1, &pmap(NFS, 3, 17, 2049)));
    let _ = ok(&mut p, &c, &call(2, 3, &pmap(NFS, 3, 17, 0)));
    let _ = ok(&mut p, &c, &call(2, 3, &pmap(5, 3, 17, 0)));
    let _ = ok(&mut p, &c, &call(3, 3, &rpcb(NFS, 3, "udp", "")));
    let _ = ok(&mut p, &c, &call(4, 2, &rpcb(NFS, 3, "", "")));
    let (_, r) = ok(&mut p, &c, &call(4, 12, &[]));
    let mut rd = XdrReader::new(&r);
    let s = decode_stats(&mut rd).expect("stats");
    assert!(rd.rest().is_empty());
    assert_eq!(s[0].info[..6], [1, 1, 0, 2, 0, 0]);
    assert_eq!(s[0].setinfo, 1);
    assert_eq!(s[0].addrinfo.len(), 2);
    assert_eq!(s[0].addrinfo[1].prog, NFS);
    assert_eq!(s[0].addrinfo[1].success, 1);
    assert_eq!(s[0].addrinfo[0].failure, 1);
    assert_eq!(s[1].info[3], 1);
    assert_eq!(s[1].addrinfo[0].netid, "udp");
    assert_eq!(s[2].unsetinfo, 1);
    assert_eq!(s[2].info[12], 1, "GETSTAT counts itself, as rpcbind does");
    assert_eq!(&p.stats().by_vers[..], &s[..]);
}

fn rmt(prog: u32, vers: u32, proc_: u32) -> Vec<u8> {
    let mut b = Vec::new();
    RmtCallArgs {
        prog,
        vers,
        proc_,
        args: vec![0, 0, 0, 42],
    }
    .encode(&mut b);
    b
}

fn with_statd(p: &mut Portmapper) {
    let _ = ok(
        p,
        &local(0),
        &call(4, 1, &rpcb(100_024, 1, "udp", "0.0.0.0.3.232")),
    );
    let _ = ok(
        p,
        &local(0),
        &call(4, 1, &rpcb(NFS, 3, "udp", "0.0.0.0.8.1")),
    );
}

#[test]
fn remote_calls_disabled_match_rpcbind() {
    let mut p = pm();
    with_statd(&mut p);
    let c = remote_udp();
    // CALLIT/BCAST: silent whatever happens.
    for (v, proc_) in [(2, 5), (3, 5), (4, 5)] {
        let (o, out) = run(&mut p, &c, &call(v, proc_, &rmt(100_024, 1, 1)));
        assert_eq!(o.verdict, Verdict::Dropped(DropReason::RemoteCallSilent));
        assert!(out.is_empty() && o.effects.is_empty());
        let (o, _) = run(&mut p, &c, &call(v, proc_, &[1]));
        assert_eq!(o.verdict, Verdict::Dropped(DropReason::RemoteCallSilent));
    }
    // INDIRECT: the error rpcbind would send.
    let (r, _) = refused_with(&mut p, &c, &call(4, 10, &rmt(100_024, 1, 1)));
    assert_eq!(r, Refusal::SystemErr);
    let (r, _) = refused_with(&mut p, &c, &call(4, 10, &rmt(4242, 1, 1)));
    assert_eq!(r, Refusal::ProgUnavail);
    let (r, out) = refused_with(&mut p, &c, &call(4, 10, &rmt(100_024, 7, 1)));
    assert_eq!(r, Refusal::ProgMismatch { low: 1, high: 1 });
    assert_eq!(words(&out), vec![0x1234, 1, 0, 0, 0, 2, 1, 1]);
    let (r, _) = refused_with(&mut p, &c, &call(4, 10, &[0, 0]));
    assert_eq!(r, Refusal::GarbageArgs);
    // Deny list: AUTH_TOOWEAK even for CALLIT.
    let (r, _) = refused_with(&mut p, &c, &call(4, 10, &rmt(NFS, 3, 1)));
    assert_eq!(r, Refusal::Auth(AuthStat::TooWeak));
    let (r, _) = refused_with(&mut p, &c, &call(2, 5, &rmt(PMAP_PROG, 2, 3)));
    assert_eq!(r, Refusal::Auth(AuthStat::TooWeak));
    // Stream transports: nothing at all.
    let t = ctx(Transport::Tcp, Caller::Ip(sa("10.0.0.9:1000")), None);
    let (o, _) = run(&mut p, &t, &call(4, 10, &rmt(100_024, 1, 1)));
    assert_eq!(
        o.verdict,
        Verdict::Dropped(DropReason::RemoteCallNotDatagram)
    );
}

fn forward_of(o: &Outcome) -> Forward {
    assert_eq!(o.verdict, Verdict::Forwarded);
    match &o.effects[..] {
        [Effect::Forward(f)] => f.clone(),
        e => panic!("expected one Forward effect, got {e:?}"),
    }
}

#[test]
fn remote_calls_enabled_forward() {
    let mut p = pm_with(Config {
        remote_calls: true,
        ..Config::default()
    });
    with_statd(&mut p);
    let c = remote_udp();
    let (o, out) = run(&mut p, &c, &call(4, 10, &rmt(100_024, 1, 1)));
    assert!(out.is_empty() && !o.should_reply());
    let f = forward_of(&o);
    assert_eq!(f.target, sa("127.0.0.1:1000"));
    assert_eq!((f.netid, f.prog, f.vers, f.proc_), ("udp", 100_024, 1, 1));
    assert_eq!(f.pending.caller_xid, 0x1234);
    assert_eq!(f.pending.reply_uaddr, "10.0.0.5.3.232");
    // The forwarded call is a proper call with the daemon's xid.
    let mut fwd = Vec::new();
    f.encode_call(99, &mut fwd);
    let h = decode_call(&fwd).expect("call");
    assert_eq!((h.xid, h.prog, h.vers, h.proc_), (99, 100_024, 1, 1));
    assert_eq!(h.args, &[0, 0, 0, 42]);
    // The target answers: INDIRECT reply carries uaddr + results.
    let mut target_reply = Vec::new();
    encode_accepted(&mut target_reply, 99, AcceptStat::Success);
    target_reply.put_u32(7);
    let mut reply = Vec::new();
    assert!(f.pending.build_reply(&target_reply, &mut reply));
    let Some((0x1234, ReplyBody::Success(body))) = decode_reply(&reply) else {
        panic!("bad reply");
    };
    let mut rd = XdrReader::new(body);
    assert_eq!(rd.string(), Ok("10.0.0.5.3.232".to_owned()));
    assert_eq!(rd.opaque(100), Ok(&[0, 0, 0, 7][..]));
    // Target error: INDIRECT gets SYSTEM_ERR.
    let mut bad = Vec::new();
    encode_accepted(&mut bad, 99, AcceptStat::ProcUnavail);
    assert!(f.pending.build_reply(&bad, &mut reply));
    assert_eq!(words(&reply), vec![0x1234, 1, 0, 0, 0, 5]);
    // v2 CALLIT reply carries the port; its failures are silent.
    let (o, _) = run(&mut p, &c, &call(2, 5, &rmt(100_024, 1, 1)));
    let f2 = forward_of(&o);
    assert!(f2.pending.build_reply(&target_reply, &mut reply));
    let Some((_, ReplyBody::Success(body))) = decode_reply(&reply) else {
        panic!("bad reply");
    };
    assert_eq!(words(body), vec![1000, 4, 7]);
    assert!(!f2.pending.build_reply(&bad, &mut reply));
    assert!(!f2.pending.build_failure(&mut reply));
    // Other credentials than NONE/SYS are refused for INDIRECT.
    let (r, _) = refused_with(&mut p, &c, &call_flavor(4, 10, 2, &rmt(100_024, 1, 1)));
    assert_eq!(r, Refusal::Auth(AuthStat::RejectedCred));
    // Stats counted the remote calls.
    let rows = &p.stats().by_vers[2].rmtinfo;
    assert_eq!(rows[0].prog, 100_024);
    assert_eq!((rows[0].success, rows[0].indirect), (1, 1));
    assert_eq!(p.stats().by_vers[0].rmtinfo[0].prog, 100_024);
}

#[test]
fn restore_and_admin_unset() {
    let mut p = pm();
    let e = Entry {
        prog: 100_021,
        vers: 4,
        netid: "tcp".into(),
        uaddr: "0.0.0.0.160.1".into(),
        owner: "superuser".into(),
    };
    assert_eq!(p.restore([e.clone(), e.clone()]), 1);
    assert!(p.entries().contains(&e));
    let removed = p.unset_admin(100_021, 4, "");
    assert_eq!(removed.entries(), std::slice::from_ref(&e));
    assert!(!p.entries().contains(&e));
    p.undo_unset(removed);
    assert!(p.entries().contains(&e));
    assert_eq!(p.config(), &Config::default());
}

fn arb_ctx() -> impl Strategy<Value = CallContext> {
    (0u8..3, any::<bool>(), any::<u16>(), any::<u32>()).prop_map(|(t, lo, port, uid)| {
        let ip = if lo { "127.0.0.1" } else { "10.1.2.3" };
        let caller = Caller::Ip(SocketAddr::new(ip.parse().expect("ip"), port));
        match t {
            0 => ctx(Transport::Udp, caller, Some("10.1.2.4:111")),
            1 => ctx(Transport::Tcp, caller, Some("[fd00::1]:111")),
            _ => ctx(Transport::Local, Caller::Local { uid, pid: None }, None),
        }
    })
}

/// Valid calls of every procedure, for the truncation property.
fn valid_calls() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for proc_ in 1..=3 {
        v.push(call(2, proc_, &pmap(NFS, 3, 17, 2049)));
    }
    for vers in [3, 4] {
        for proc_ in [1, 2, 3] {
            v.push(call(vers, proc_, &rpcb(NFS, 3, "udp", "0.0.0.0.8.1")));
        }
    }
    v.push(call(4, 9, &rpcb(NFS, 3, "udp", "")));
    v.push(call(4, 11, &rpcb(NFS, 3, "udp", "")));
    v.push(call(4, 10, &rmt(100_024, 1, 1)));
    v
}

proptest! {
    #[test]
    fn random_bytes_never_panic(c in arb_ctx(), b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut p = pm();
        let mut out = Vec::new();
        let o = p.handle(&c, &b, &mut out);
        prop_assert_eq!(o.should_reply(), !out.is_empty());
    }

    #[test]
    fn random_args_never_panic(c in arb_ctx(), vers in 2u32..5, proc_ in 0u32..14,
                               args in proptest::collection::vec(any::<u8>(), 0..200), remote: bool) {
        let mut p = pm_with(Config { remote_calls: remote, ..Config::default() });
        with_statd(&mut p);
        let mut out = Vec::new();
        let o = p.handle(&c, &call(vers, proc_, &args), &mut out);
        prop_assert_eq!(o.should_reply(), !out.is_empty());
    }

    #[test]
    fn truncated_calls_are_garbage_or_dropped(i in 0usize..13, cut in 0usize..200, c in arb_ctx()) {
        let calls = valid_calls();
        let full = &calls[i % calls.len()];
        let cut = cut % full.len();
        let mut p = pm_with(Config { remote_calls: true, ..Config::default() });
        let mut out = Vec::new();
        let o = p.handle(&c, &full[..cut], &mut out);
        let ok = matches!(
            o.verdict,
            Verdict::Dropped(_) | Verdict::Refused(Refusal::GarbageArgs)
        ) || (c.transport == Transport::Udp
            && o.verdict == Verdict::Refused(Refusal::Auth(AuthStat::TooWeak)));
        prop_assert!(ok, "{:?}", o.verdict);
        prop_assert!(o.effects.is_empty());
    }
}

#[test]
fn xdr_error_is_reported() {
    // Keeps the error type in the API exercised: a truncated rpcb.
    let mut r = XdrReader::new(&[0, 0, 0, 1]);
    assert_eq!(Rpcb::decode(&mut r), Err(XdrError::Truncated));
}

#[test]
fn tcp_records_end_to_end() {
    let mut p = pm();
    let mut wire = Vec::new();
    crate::frame_record(&call(4, 0, &[]), &mut wire);
    crate::frame_record(&call(2, 3, &pmap(PMAP_PROG, 2, 6, 0)), &mut wire);
    let c = ctx(
        Transport::Tcp,
        Caller::Ip(sa("10.0.0.9:1000")),
        Some("10.0.0.5:111"),
    );
    let mut dec = crate::RecordDecoder::default();
    let mut replies = Vec::new();
    for chunk in wire.chunks(5) {
        for rec in dec.feed(chunk).expect("records") {
            let mut out = Vec::new();
            let o = p.handle(&c, &rec, &mut out);
            assert!(o.should_reply());
            let mut framed = Vec::new();
            crate::frame_record(&out, &mut framed);
            replies.push(framed);
        }
    }
    assert_eq!(replies.len(), 2);
    let mut back = crate::RecordDecoder::default();
    let rec = back.feed(&replies[1]).expect("reply record");
    let Some((_, ReplyBody::Success(body))) = decode_reply(&rec[0]) else {
        panic!("bad reply");
    };
    assert_eq!(as_u32(body), 111);
}

#[test]
fn kernel_style_registration_over_local() {
    // What the kernel does for lockd/nfsd: v4 UNSET all, then v4 SET per netid with owner "0".
    let mut p = pm();
    let k = local(0);
    let (_, r) = ok(&mut p, &k, &call(4, 2, &rpcb(100_021, 4, "", "")));
    assert!(as_bool(&r));
    for (netid, addr) in [
        ("udp", "0.0.0.0.160.1"),
        ("tcp", "0.0.0.0.160.1"),
        ("udp6", "::.160.1"),
        ("tcp6", "::.160.1"),
    ] {
        let (e, r) = ok(&mut p, &k, &call(4, 1, &rpcb(100_021, 4, netid, addr)));
        assert!(as_bool(&r));
        assert!(
            matches!(&e[..], [Effect::Registered(en)] if en.owner == "superuser" && en.netid == netid)
        );
    }
    // lockd's v2 GETPORT for it works, and statd (v3/v4 GETADDR over udp6) gets the local address.
    let (_, r) = ok(&mut p, &lo_udp(), &call(2, 3, &pmap(100_021, 4, 17, 0)));
    assert_eq!(as_u32(&r), 40961);
    let c6 = ctx(
        Transport::Udp,
        Caller::Ip(sa("[::1]:900")),
        Some("[::1]:111"),
    );
    let (_, r) = ok(&mut p, &c6, &call(4, 3, &rpcb(100_021, 4, "udp6", "")));
    assert_eq!(as_string(&r), "::1.160.1");
}

#[path = "server_reflection_tests.rs"]
mod reflection;

#[test]
fn self_entries_share_the_endpoint_strings() {
    let eps: Vec<(SharedStr, SharedStr)> = vec![
        ("udp".into(), "0.0.0.0.0.111".into()),
        ("local".into(), "/run/rpcbind.sock".into()),
    ];
    let a = Portmapper::with_shared_endpoints(Config::default(), &eps);
    let b = Portmapper::with_shared_endpoints(Config::default(), &eps);
    let plain = Portmapper::new(
        Config::default(),
        &[("udp", "0.0.0.0.0.111"), ("local", "/run/rpcbind.sock")],
    );
    assert_eq!(a.entries(), plain.entries(), "same table as with copies");
    assert_eq!(a.entries().len(), 5);
    for (x, y) in a.entries().iter().zip(b.entries()) {
        assert_eq!(x.netid.as_ptr(), y.netid.as_ptr());
        assert_eq!(x.uaddr.as_ptr(), y.uaddr.as_ptr());
        assert_eq!(x.owner.as_ptr(), y.owner.as_ptr());
    }
}

#[test]
fn a_self_table_is_shared_until_the_first_change() {
    let eps: Vec<(SharedStr, SharedStr)> = vec![
        ("udp".into(), "0.0.0.0.0.111".into()),
        ("tcp".into(), "0.0.0.0.0.111".into()),
    ];
    let table = SelfTable::new(&eps);
    let mut a = Portmapper::with_self_table(Config::default(), &table);
    let b = Portmapper::with_self_table(Config::default(), &table);
    let plain = Portmapper::with_shared_endpoints(Config::default(), &eps);
    assert_eq!(a.entries(), plain.entries());
    assert_eq!(a.registration_bytes(), plain.registration_bytes());
    assert_eq!(a.entries().as_ptr(), b.entries().as_ptr(), "one table");
    let user = Entry {
        prog: 100_024,
        vers: 1,
        netid: "udp".into(),
        uaddr: "0.0.0.0.3.1".into(),
        owner: "0".into(),
    };
    assert_eq!(a.restore([user.clone()]), 1);
    assert_ne!(
        a.entries().as_ptr(),
        b.entries().as_ptr(),
        "copied on change"
    );
    assert_eq!(a.entries().len(), 7);
    assert_eq!(b.entries(), plain.entries(), "the others unchanged");
    // The limits are the portmapper's own, as before: the self entries fill a cap of 6.
    let capped = Config {
        max_registrations: 6,
        ..Config::default()
    };
    let mut c = Portmapper::with_self_table(capped.clone(), &table);
    let mut d = Portmapper::with_shared_endpoints(capped, &eps);
    assert_eq!((c.restore([user.clone()]), d.restore([user])), (0, 0));
}
