//! No reflection: UDP replies to non-loopback callers stay within twice their request, GETSTAT
//! and DUMP over UDP are for loopback only, and SET refuses arguments no real server sends.

use super::*;

fn tcp_remote() -> CallContext {
    ctx(
        Transport::Tcp,
        Caller::Ip(sa("10.0.0.9:40000")),
        Some("10.0.0.5:111"),
    )
}

/// SETs through the local transport as root; returns the RPC boolean.
fn set(p: &mut Portmapper, vers: u32, netid: &str, uaddr: &str) -> bool {
    let (_, r) = ok(
        p,
        &local(0),
        &call(vers, 1, &rpcb(9_000_001, 1, netid, uaddr)),
    );
    as_bool(&r)
}

#[test]
fn getstat_over_udp_is_for_loopback_only() {
    let mut p = pm();
    let (r, out) = refused_with(&mut p, &remote_udp(), &call(4, 12, &[]));
    assert_eq!(r, Refusal::Auth(AuthStat::TooWeak));
    assert_eq!(words(&out), vec![0x1234, 1, 1, 1, 5]);
    ok(&mut p, &lo_udp(), &call(4, 12, &[]));
    ok(&mut p, &tcp_remote(), &call(4, 12, &[]));
    ok(&mut p, &local(1000), &call(4, 12, &[]));
}

#[test]
fn dump_over_udp_is_for_loopback_only_on_every_version() {
    let mut p = pm();
    for v in 2..=4 {
        let (r, _) = refused_with(&mut p, &remote_udp(), &call(v, 4, &[]));
        assert_eq!(r, Refusal::Auth(AuthStat::TooWeak), "v{v}");
        ok(&mut p, &tcp_remote(), &call(v, 4, &[]));
        ok(&mut p, &lo_udp(), &call(v, 4, &[]));
    }
    assert_eq!(p.reflection_refusals(), 0);
}

#[test]
fn long_getaddrlist_to_a_remote_udp_caller_is_refused_and_counted() {
    let mut p = pm();
    let widest = "255.255.255.255.255.255";
    for netid in ["udp", "tcp"] {
        let r = ok(
            &mut p,
            &local(0),
            &call(4, 1, &rpcb(9_000_002, 1, netid, widest)),
        );
        assert!(as_bool(&r.1));
    }
    let req = call(4, 11, &rpcb(9_000_002, 1, "", ""));
    let (r, out) = refused_with(&mut p, &remote_udp(), &req);
    assert_eq!(r, Refusal::SystemErr);
    assert!(out.len() <= 2 * req.len());
    assert_eq!(p.reflection_refusals(), 1);
    // The same question over TCP, or from loopback, gets the whole list.
    let (_, list) = ok(&mut p, &tcp_remote(), &req);
    assert!(list.len() + 24 > 2 * req.len());
    ok(&mut p, &lo_udp(), &req);
    assert_eq!(p.reflection_refusals(), 1);
}

#[test]
fn short_answers_to_remote_udp_callers_still_flow() {
    let mut p = pm();
    assert!(set(&mut p, 4, "udp", "0.0.0.0.8.1"));
    let (_, r) = ok(
        &mut p,
        &remote_udp(),
        &call(2, 3, &pmap(9_000_001, 1, 17, 0)),
    );
    assert_eq!(as_u32(&r), 2049);
    let (_, r) = ok(
        &mut p,
        &remote_udp(),
        &call(3, 3, &rpcb(9_000_001, 1, "udp", "")),
    );
    assert_eq!(as_string(&r), "10.0.0.5.8.1");
    let (_, r) = ok(
        &mut p,
        &remote_udp(),
        &call(4, 9, &rpcb(9_000_001, 1, "udp", "")),
    );
    assert_eq!(as_string(&r), "10.0.0.5.8.1");
    assert_eq!(p.reflection_refusals(), 0);
}

#[test]
fn set_refuses_unknown_netids_and_bad_uaddrs() {
    let mut p = pm();
    let before = p.entries().len();
    for (vers, netid, uaddr) in [
        (3, "udp7", "0.0.0.0.8.1"),
        (4, "", "0.0.0.0.8.1"),
        (4, "udp", "::.8.1"),
        (3, "tcp6", "0.0.0.0.8.1"),
        (4, "tcp", "not an address"),
        (4, "tcp", "1.2.3.4.999.1"),
        (4, "local", ""),
    ] {
        assert!(!set(&mut p, vers, netid, uaddr), "v{vers} {netid} {uaddr}");
    }
    let long = "a".repeat(109);
    assert!(!set(&mut p, 4, "local", &long));
    let long_v4 = format!("{}1.2.3.4.0.1", "0".repeat(200));
    assert!(!set(&mut p, 4, "tcp", &long_v4));
    assert_eq!(p.entries().len(), before);
    // An over-long owner argument is refused although it would not be stored.
    let mut args = Vec::new();
    Rpcb {
        prog: 9_000_003,
        vers: 1,
        netid: "udp".into(),
        addr: "0.0.0.0.8.1".into(),
        owner: "o".repeat(256),
    }
    .encode(&mut args);
    let (e, r) = ok(&mut p, &local(0), &call(4, 1, &args));
    assert!(!as_bool(&r) && e.is_empty());
    // What real servers register still passes.
    assert!(set(&mut p, 4, "udp", "0.0.0.0.8.1"));
    assert!(set(&mut p, 4, "tcp6", "::.8.1"));
    assert!(set(&mut p, 3, "local", "/run/gssproxy.sock"));
    assert_eq!(p.entries().len(), before + 3);
    // v2 SET builds its uaddr itself; an unknown protocol stays refused.
    let (_, r) = ok(&mut p, &lo_udp(), &call(2, 1, &pmap(9_000_004, 1, 6, 2049)));
    assert!(as_bool(&r));
    let (_, r) = ok(
        &mut p,
        &lo_udp(),
        &call(2, 1, &pmap(9_000_004, 1, 99, 2049)),
    );
    assert!(!as_bool(&r));
}

#[test]
fn restore_skips_what_set_refuses_today() {
    let mut p = pm();
    let entry = |netid: &str, uaddr: &str| Entry {
        prog: 9_000_005,
        vers: 1,
        netid: netid.into(),
        uaddr: uaddr.into(),
        owner: "superuser".into(),
    };
    let n = p.restore([
        entry("udp", &"9".repeat(8700)),
        entry("bogus", "0.0.0.0.8.1"),
        entry("tcp", "0.0.0.0.8.1"),
    ]);
    assert_eq!(n, 1);
}

#[test]
fn forwarded_answers_to_remote_udp_callers_stay_within_twice_the_request() {
    let mut p = pm_with(Config {
        remote_calls: true,
        ..Config::default()
    });
    with_statd(&mut p);
    let req = call(4, 10, &rmt(100_024, 1, 1));
    let (o, _) = run(&mut p, &remote_udp(), &req);
    let f = forward_of(&o);
    assert_eq!(f.pending.max_reply, Some(2 * req.len()));
    let target_reply = |results: usize| {
        let mut b = Vec::new();
        encode_accepted(&mut b, 99, AcceptStat::Success);
        b.extend(std::iter::repeat_n(7u8, results));
        b
    };
    let mut reply = Vec::new();
    assert!(f.pending.build_reply(&target_reply(4), &mut reply));
    assert!(reply.len() <= 2 * req.len());
    // A large answer from the target: INDIRECT gets SYSTEM_ERR instead.
    assert!(f.pending.build_reply(&target_reply(4000), &mut reply));
    assert_eq!(words(&reply), vec![0x1234, 1, 0, 0, 0, 5]);
    // CALLIT stays silent; a loopback caller gets everything.
    let (o, _) = run(&mut p, &remote_udp(), &call(2, 5, &rmt(100_024, 1, 1)));
    assert!(
        !forward_of(&o)
            .pending
            .build_reply(&target_reply(4000), &mut reply)
    );
    let (o, _) = run(&mut p, &lo_udp(), &req);
    let f = forward_of(&o);
    assert_eq!(f.pending.max_reply, None);
    assert!(f.pending.build_reply(&target_reply(4000), &mut reply));
    assert!(reply.len() > 4000);
}

proptest! {
    /// Whatever was registered and whatever a remote host sends over UDP, the reply is at most
    /// twice the request.
    #[test]
    fn remote_udp_replies_stay_within_twice_the_request(
        vers in 2u32..=4,
        proc_ in 0u32..=13,
        netid in prop::sample::select(vec!["udp", "tcp", "udp6", "tcp6", "", "local"]),
        prog in prop::sample::select(vec![9_000_001u32, 100_000, 1]),
        tail in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut p = pm();
        for (n, u) in [
            ("udp", "255.255.255.255.255.255"),
            ("tcp", "255.255.255.255.255.254"),
            ("udp6", "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255.255.255"),
            ("tcp6", "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.254.255.255"),
            ("local", &"/".repeat(108)),
        ] {
            set(&mut p, 4, n, u);
        }
        let mut args = rpcb(prog, 1, netid, "");
        args.extend_from_slice(&tail);
        let req = call(vers, proc_, &args);
        let (_, out) = run(&mut p, &remote_udp(), &req);
        prop_assert!(out.len() <= 2 * req.len(), "{} > 2 x {}", out.len(), req.len());
    }
}
