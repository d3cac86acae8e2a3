//! End-to-end tests of `Server::handle`: every reply field, every drop
//! reason, rate limiting, access lists, and property tests on random input.

use core::time::Duration;
use std::net::IpAddr;

use proptest::prelude::*;

use crate::*;

const RECV: NtpTimestamp = NtpTimestamp::from_parts(3_990_000_000, 0x1000_0000);
const XMT: NtpTimestamp = NtpTimestamp::from_parts(3_990_000_000, 0x1000_8000);
const CLIENT_XMT: NtpTimestamp = NtpTimestamp::from_parts(3_989_999_999, 0xDEAD_BEEF);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn request(version: u8, mode: u8, poll: i8) -> Vec<u8> {
    let h = Header {
        leap: Leap::Unsynchronised,
        version,
        mode: Mode::from_bits(mode),
        stratum: 0,
        poll,
        precision: -6,
        root_delay: NtpShort::default(),
        root_dispersion: NtpShort::default(),
        refid: RefId::default(),
        reference_ts: NtpTimestamp::ZERO,
        origin_ts: NtpTimestamp::ZERO,
        receive_ts: NtpTimestamp::ZERO,
        transmit_ts: CLIENT_XMT,
    };
    let mut buf = vec![0u8; HEADER_LEN];
    h.write(&mut buf).unwrap();
    buf
}

fn no_limit() -> Config {
    Config {
        rate_limit: None,
        ..Config::default()
    }
}

struct Run {
    action: Action,
    reply: Option<Header>,
    transmit_called: bool,
}

fn run_with(server: &mut Server, now: Mono, client: &str, req: &[u8], clock: &ClockStatus) -> Run {
    let mut out = [0u8; 1500];
    let mut called = false;
    let action = server.handle(
        now,
        ip(client),
        RECV,
        req,
        clock,
        || {
            called = true;
            XMT
        },
        &mut out,
    );
    let reply = match action {
        Action::Respond { len, .. } => Some(Header::parse(&out[..len]).unwrap()),
        Action::Ignore(_) => None,
    };
    Run {
        action,
        reply,
        transmit_called: called,
    }
}

fn run(config: Config, req: &[u8], clock: &ClockStatus) -> Run {
    run_with(
        &mut Server::new(config),
        Mono::default(),
        "192.0.2.10",
        req,
        clock,
    )
}

fn synced() -> ClockStatus {
    FakeClock::synchronised().status
}

#[test]
fn reply_fields_follow_request_and_clock() {
    let r = run(no_limit(), &request(4, 3, 6), &synced());
    assert_eq!(
        r.action,
        Action::Respond {
            len: 48,
            kind: ResponseKind::Time
        }
    );
    let h = r.reply.unwrap();
    assert_eq!(h.mode, Mode::Server);
    assert_eq!(h.version, 4);
    assert_eq!(h.leap, Leap::NoWarning);
    assert_eq!(h.stratum, 2);
    assert_eq!(h.poll, 6);
    assert_eq!(h.precision, -20);
    assert_eq!(h.refid, RefId([192, 0, 2, 1]));
    assert_eq!(h.root_delay, NtpShort::from_micros(500));
    assert_eq!(h.root_dispersion, NtpShort::from_micros(750));
    assert_eq!(h.origin_ts, CLIENT_XMT);
    assert_eq!(h.receive_ts, RECV);
    assert_eq!(h.transmit_ts, XMT);
    assert!(h.receive_ts <= h.transmit_ts);
    assert!(h.reference_ts <= h.receive_ts);
    assert!(r.transmit_called);
}

#[test]
fn client_request_builder_is_answered_and_copyable() {
    let mut req = [0u8; 48];
    Header::client_request(CLIENT_XMT).write(&mut req).unwrap();
    let h = run(no_limit(), &req, &synced()).reply.unwrap();
    assert_eq!(h.origin_ts, CLIENT_XMT);
    let copied = Reference::from_server_reply(&h).unwrap();
    assert_eq!(copied.stratum, 2);
    assert_eq!(copied.refid, RefId([192, 0, 2, 1]));
}

#[test]
fn version_echoed_for_1_to_4() {
    for v in 1..=4 {
        let r = run(no_limit(), &request(v, 3, 4), &synced());
        assert_eq!(r.reply.unwrap().version, v);
    }
}

#[test]
fn bad_versions_dropped() {
    for v in [0, 5, 6, 7] {
        let r = run(no_limit(), &request(v, 3, 4), &synced());
        assert_eq!(r.action, Action::Ignore(DropReason::BadVersion));
        assert!(!r.transmit_called);
    }
}

#[test]
fn poll_echoed_and_raised_to_rate_limit_interval() {
    for p in [-7i8, 0, 10, 17, 127, -128] {
        let r = run(no_limit(), &request(4, 3, p), &synced());
        assert_eq!(r.reply.unwrap().poll, p);
    }
    let r = run(Config::default(), &request(4, 3, 1), &synced());
    assert_eq!(r.reply.unwrap().poll, 3);
    let r = run(Config::default(), &request(4, 3, 10), &synced());
    assert_eq!(r.reply.unwrap().poll, 10);
}

#[test]
fn leap_follows_clock() {
    for leap in [Leap::NoWarning, Leap::Insert, Leap::Delete] {
        let mut c = synced();
        c.leap = leap;
        assert_eq!(
            run(no_limit(), &request(4, 3, 4), &c).reply.unwrap().leap,
            leap
        );
    }
}

#[test]
fn stratum_follows_clock() {
    let mut c = synced();
    c.reference.stratum = 1;
    c.reference.refid = RefId::from_ascii("GPS");
    let h = run(no_limit(), &request(4, 3, 4), &c).reply.unwrap();
    assert_eq!(h.stratum, 1);
    assert_eq!(&h.refid.0, b"GPS\0");
}

#[test]
fn unsynchronised_answered_by_default() {
    let r = run(
        no_limit(),
        &request(4, 3, 4),
        &FakeClock::unsynchronised().status,
    );
    assert_eq!(
        r.action,
        Action::Respond {
            len: 48,
            kind: ResponseKind::Unsynchronised
        }
    );
    let h = r.reply.unwrap();
    assert_eq!(h.leap, Leap::Unsynchronised);
    assert_eq!(h.stratum, 16);
    assert_eq!(h.refid, RefId::UNSYNC);
    assert_eq!(h.reference_ts, NtpTimestamp::ZERO);
    assert_eq!(h.origin_ts, CLIENT_XMT);
}

#[test]
fn unsynchronised_judged_by_maxerror_not_kernel_flag() {
    let mut c = synced();
    c.kernel_unsync = true; // chrony without rtcsync leaves this set
    let r = run(no_limit(), &request(4, 3, 4), &c);
    assert_eq!(r.reply.unwrap().leap, Leap::NoWarning);
    c.kernel_unsync = false;
    c.maxerror_us = 16_000_000;
    let r = run(no_limit(), &request(4, 3, 4), &c);
    assert_eq!(r.reply.unwrap().leap, Leap::Unsynchronised);
}

#[test]
fn unsynchronised_silent_when_configured() {
    let config = Config {
        answer_unsynchronised: false,
        ..no_limit()
    };
    let r = run(
        config.clone(),
        &request(4, 3, 4),
        &FakeClock::unsynchronised().status,
    );
    assert_eq!(r.action, Action::Ignore(DropReason::Unsynchronised));
    assert!(!r.transmit_called);
    // Still answers when synchronised.
    assert!(run(config, &request(4, 3, 4), &synced()).reply.is_some());
}

#[test]
fn local_stratum_serves_unsynchronised_clock() {
    let config = Config {
        local_stratum: Some(8),
        answer_unsynchronised: false,
        ..no_limit()
    };
    let r = run(
        config,
        &request(4, 3, 4),
        &FakeClock::unsynchronised().status,
    );
    assert_eq!(
        r.action,
        Action::Respond {
            len: 48,
            kind: ResponseKind::Time
        }
    );
    let h = r.reply.unwrap();
    assert_eq!(h.stratum, 8);
    assert_eq!(h.leap, Leap::NoWarning);
    assert_eq!(h.refid, RefId::LOCAL);
    assert!(h.reference_ts < h.transmit_ts);
}

#[test]
fn symmetric_active_off_by_default() {
    let r = run(no_limit(), &request(4, 1, 4), &synced());
    assert_eq!(r.action, Action::Ignore(DropReason::Mode1));
    let config = Config {
        symmetric: true,
        ..no_limit()
    };
    let h = run(config, &request(4, 1, 4), &synced()).reply.unwrap();
    assert_eq!(h.mode, Mode::SymmetricPassive);
    assert_eq!(h.origin_ts, CLIENT_XMT);
}

#[test]
fn other_modes_dropped() {
    let cases = [
        (0, DropReason::Mode0),
        (2, DropReason::Mode2),
        (4, DropReason::Mode4),
        (5, DropReason::Mode5),
        (6, DropReason::Mode6),
        (7, DropReason::Mode7),
    ];
    for (mode, reason) in cases {
        let config = Config {
            symmetric: true,
            ..no_limit()
        };
        let r = run(config, &request(4, mode, 4), &synced());
        assert_eq!(r.action, Action::Ignore(reason), "mode {mode}");
        assert!(!r.transmit_called);
    }
}

#[test]
fn mode6_and_7_dropped_at_any_length() {
    // ntpq/ntpdc packets are 12 and 8+ bytes; short ones are TooShort,
    // header-sized ones are dropped by mode.
    let r = run(
        no_limit(),
        &[0x16, 0x02, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        &synced(),
    );
    assert_eq!(r.action, Action::Ignore(DropReason::TooShort));
    let mut m7 = request(2, 7, 0);
    m7.extend([0u8; 144]);
    assert_eq!(
        run(no_limit(), &m7, &synced()).action,
        Action::Ignore(DropReason::Mode7)
    );
}

#[test]
fn short_and_empty_dropped() {
    for len in [0, 1, 47] {
        let r = run(no_limit(), &request(4, 3, 4)[..len], &synced());
        assert_eq!(r.action, Action::Ignore(DropReason::TooShort));
    }
}

#[test]
fn extension_fields_answered_with_bare_header() {
    let mut req = request(4, 3, 4);
    let mut ef = vec![0u8; 64];
    ef[..4].copy_from_slice(&[0x01, 0x09, 0, 64]);
    req.extend(&ef);
    let r = run(no_limit(), &req, &synced());
    assert_eq!(
        r.action,
        Action::Respond {
            len: 48,
            kind: ResponseKind::Time
        }
    );
}

#[test]
fn mac_and_nts_dropped() {
    let mut v4_mac = request(4, 3, 4);
    v4_mac.extend([1u8; 20]);
    assert_eq!(
        run(no_limit(), &v4_mac, &synced()).action,
        Action::Ignore(DropReason::Authenticated)
    );
    let mut v3_mac = request(3, 3, 4);
    v3_mac.extend([1u8; 20]);
    assert_eq!(
        run(no_limit(), &v3_mac, &synced()).action,
        Action::Ignore(DropReason::Authenticated)
    );
    let mut nts = request(4, 3, 4);
    let mut uid = vec![0u8; 36];
    uid[..4].copy_from_slice(&[0x01, 0x04, 0, 36]);
    nts.extend(&uid);
    assert_eq!(
        run(no_limit(), &nts, &synced()).action,
        Action::Ignore(DropReason::Nts)
    );
}

#[test]
fn malformed_and_oversize_dropped() {
    let mut odd = request(4, 3, 4);
    odd.push(0);
    assert_eq!(
        run(no_limit(), &odd, &synced()).action,
        Action::Ignore(DropReason::Malformed)
    );
    let mut huge = request(4, 3, 4);
    huge.resize(2048, 0);
    assert_eq!(
        run(no_limit(), &huge, &synced()).action,
        Action::Ignore(DropReason::TooLong)
    );
}

#[test]
fn small_output_buffer_is_reported_not_panicking() {
    let mut server = Server::new(no_limit());
    let mut out = [0u8; 40];
    let action = server.handle(
        Mono::default(),
        ip("192.0.2.1"),
        RECV,
        &request(4, 3, 4),
        &synced(),
        || XMT,
        &mut out,
    );
    assert_eq!(action, Action::Ignore(DropReason::BufferTooSmall));
}

#[test]
fn deny_and_allow() {
    let config = Config {
        allow: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
        deny: vec!["10.9.0.0/16".parse().unwrap()],
        ..no_limit()
    };
    let mut server = Server::new(config);
    let req = request(4, 3, 4);
    let go = |s: &mut Server, c: &str| run_with(s, Mono::default(), c, &req, &synced()).action;
    assert!(matches!(
        go(&mut server, "10.1.2.3"),
        Action::Respond { .. }
    ));
    assert!(matches!(
        go(&mut server, "::ffff:10.1.2.3"),
        Action::Respond { .. }
    ));
    assert!(matches!(go(&mut server, "fd00::5"), Action::Respond { .. }));
    assert_eq!(
        go(&mut server, "10.9.0.1"),
        Action::Ignore(DropReason::Denied)
    );
    assert_eq!(
        go(&mut server, "192.0.2.1"),
        Action::Ignore(DropReason::Denied)
    );
    assert_eq!(
        go(&mut server, "2001:db8::1"),
        Action::Ignore(DropReason::Denied)
    );
}

#[test]
fn rate_limit_burst_kisses_and_spares_others() {
    let config = Config {
        rate_limit: Some(RateLimitConfig {
            kod_log2: Some(1),
            ..RateLimitConfig::default()
        }),
        seed: 42,
        ..Config::default()
    };
    let mut server = Server::new(config);
    let req = request(4, 3, 0);
    let now = Mono::from_nanos(1_000);
    let mut stats = Stats::default();
    let mut kisses = Vec::new();
    for _ in 0..400 {
        let r = run_with(&mut server, now, "198.51.100.1", &req, &synced());
        stats.record(&r.action);
        if r.action
            == (Action::Respond {
                len: 48,
                kind: ResponseKind::KissRate,
            })
        {
            kisses.push(r.reply.unwrap());
        }
    }
    assert_eq!(stats.time, 8);
    assert!(stats.leaked > 50, "{stats:?}");
    assert!(stats.kiss_rate > 50, "{stats:?}");
    assert!(stats.dropped_rate_limited > 50, "{stats:?}");
    assert_eq!(stats.requests, 400);
    for k in &kisses {
        assert_eq!(k.stratum, 0);
        assert_eq!(k.refid, RefId::RATE);
        assert_eq!(k.leap, Leap::Unsynchronised);
        assert_eq!(k.mode, Mode::Server);
        assert_eq!(k.origin_ts, CLIENT_XMT);
        assert_eq!(k.poll, 3);
    }
    // Another client keeps being served at its own pace.
    let mut t = now;
    for _ in 0..20 {
        let r = run_with(&mut server, t, "198.51.100.2", &req, &synced());
        assert_eq!(
            r.action,
            Action::Respond {
                len: 48,
                kind: ResponseKind::Time
            }
        );
        t = t.saturating_add(Duration::from_secs(8));
    }
}

#[test]
fn rate_limit_leak_fraction_default() {
    let config = Config {
        rate_limit: Some(RateLimitConfig {
            kod_log2: None,
            ..RateLimitConfig::default()
        }),
        seed: 1,
        ..Config::default()
    };
    let mut server = Server::new(config);
    let req = request(4, 3, 0);
    let mut stats = Stats::default();
    for _ in 0..4008 {
        stats.record(&run_with(&mut server, Mono::default(), "192.0.2.99", &req, &synced()).action);
    }
    assert_eq!(stats.kiss_rate, 0);
    // 4000 over the limit, 1 in 4 leaked.
    assert!((850..1150).contains(&stats.leaked), "{stats:?}");
    assert_eq!(stats.leaked + stats.dropped_rate_limited, 4000);
}

#[test]
fn rate_limit_table_bounded_under_spoofing() {
    let config = Config {
        rate_limit: Some(RateLimitConfig {
            max_clients: 256,
            ..RateLimitConfig::default()
        }),
        ..Config::default()
    };
    let mut server = Server::new(config);
    let req = request(4, 3, 0);
    let mut out = [0u8; 48];
    for i in 0..50_000u32 {
        let _ = server.handle(
            Mono::from_nanos(u64::from(i) * 1000),
            IpAddr::V4(i.into()),
            RECV,
            &req,
            &synced(),
            || XMT,
            &mut out,
        );
    }
    assert!(server.rate_limiter().unwrap().capacity() <= 256);
}

#[test]
fn drops_do_not_spend_tokens() {
    // Mode 6 floods must not rate-limit the same client's real requests.
    let mut server = Server::new(Config::default());
    for _ in 0..100 {
        let r = run_with(
            &mut server,
            Mono::default(),
            "192.0.2.5",
            &request(2, 6, 0),
            &synced(),
        );
        assert_eq!(r.action, Action::Ignore(DropReason::Mode6));
    }
    let r = run_with(
        &mut server,
        Mono::default(),
        "192.0.2.5",
        &request(4, 3, 0),
        &synced(),
    );
    assert_eq!(
        r.action,
        Action::Respond {
            len: 48,
            kind: ResponseKind::Time
        }
    );
}

proptest! {
    #[test]
    fn random_bytes_never_panic_nor_amplify(
        bytes in proptest::collection::vec(any::<u8>(), 0..1300),
        first in any::<u8>(),
        out_len in 0usize..100,
        symmetric in any::<bool>(),
        maxerror in any::<u64>(),
        local in proptest::option::of(any::<u8>()),
    ) {
        let mut bytes = bytes;
        if let Some(b) = bytes.first_mut() { *b = first; }
        let mut server = Server::new(Config { symmetric, local_stratum: local, ..Config::default() });
        let mut clock = synced();
        clock.maxerror_us = maxerror;
        let mut out = vec![0u8; out_len];
        let action = server.handle(Mono::default(), ip("192.0.2.1"), RECV, &bytes, &clock, || XMT, &mut out);
        if let Action::Respond { len, .. } = action {
            prop_assert!(len <= bytes.len());
            prop_assert!(len <= out.len());
            prop_assert_eq!(len, HEADER_LEN);
        }
    }

    #[test]
    fn client_requests_always_answered(
        version in 1u8..=4,
        poll in any::<i8>(),
        rest in proptest::array::uniform32(any::<u8>()),
        xmt in any::<u64>(),
    ) {
        let mut req = request(version, 3, poll);
        req[1..33].copy_from_slice(&rest);
        req[2] = poll as u8;
        req[40..48].copy_from_slice(&xmt.to_be_bytes());
        let r = run(no_limit(), &req, &synced());
        let h = r.reply.unwrap();
        prop_assert_eq!(h.origin_ts, NtpTimestamp::from_bits(xmt));
        prop_assert_eq!(h.version, version);
        prop_assert_eq!(h.poll, poll);
    }

    #[test]
    fn header_round_trip(bytes in proptest::array::uniform32(any::<u8>()), more in proptest::array::uniform16(any::<u8>())) {
        let mut buf = [0u8; 48];
        buf[..32].copy_from_slice(&bytes);
        buf[32..].copy_from_slice(&more);
        let h = Header::parse(&buf).unwrap();
        let mut again = [0u8; 48];
        prop_assert_eq!(h.write(&mut again), Ok(48));
        prop_assert_eq!(buf, again);
    }

    #[test]
    fn unix_round_trip(secs in -70_000_000i64..4_300_000_000, nanos in 0u32..1_000_000_000) {
        let ts = NtpTimestamp::from_unix(secs, nanos);
        let (s, n) = ts.to_unix();
        // 2^-32 s resolution: within a nanosecond, accounting for carry.
        let back = i128::from(s) * 1_000_000_000 + i128::from(n);
        let orig = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        // Only the pivot window round-trips: NTP seconds 2^31 ..< 2^32 + 2^31 (era 0's second
        // half and era 1's first), i.e. Unix 2^31 - UNIX_OFFSET ..< 2^32 + 2^31 - UNIX_OFFSET
        // (1968-01-20 .. 2104-02-26). The old upper bound was 472,704 s too high, so a
        // rare draw in that gap failed.
        if (-61_505_152..4_233_462_144i64).contains(&secs) {
            prop_assert!((back - orig).abs() <= 1, "{secs} {nanos} -> {s} {n}");
        }
    }
}

#[test]
fn unix_pivot_window_edges() {
    // The last second of the window round-trips; the next one wraps to its start.
    assert_eq!(
        NtpTimestamp::from_unix(4_233_462_143, 0).to_unix(),
        (4_233_462_143, 0)
    );
    assert_eq!(
        NtpTimestamp::from_unix(4_233_462_144, 0).to_unix(),
        (-61_505_152, 0)
    );
    assert_eq!(
        NtpTimestamp::from_unix(-61_505_152, 0).to_unix(),
        (-61_505_152, 0)
    );
}

#[test]
fn ntpv1_clients_get_a_server_reply_like_chrony() {
    let req = request(1, 0, 6);
    let r = run(no_limit(), &req, &synced());
    let h = r.reply.expect("a v1 client is answered");
    assert_eq!((h.version, h.mode), (1, Mode::Server));
    assert_eq!(h.origin_ts, CLIENT_XMT);
    // From port 123 it is a v1 peer: chrony drops it, so do we.
    let mut out = [0u8; 1500];
    let from = core::net::SocketAddr::new(ip("192.0.2.10"), 123);
    let action = Server::new(no_limit()).handle_from(
        Mono::default(),
        from,
        RECV,
        &req,
        &synced(),
        || XMT,
        &mut out,
    );
    assert_eq!(action, Action::Ignore(DropReason::Mode0));
    // Mode 0 in a later version stays dropped.
    let r = run(no_limit(), &request(2, 0, 6), &synced());
    assert_eq!(r.action, Action::Ignore(DropReason::Mode0));
}

/// A chrony client with `xleave`: the first request basic (origin zero), the second's origin
/// is our first receive timestamp (saved now), the third's our second: answered interleaved
/// with the kernel's transmit time of the second reply, and only once.
#[test]
fn interleaved_from_the_third_reply() {
    let mut server = Server::new(Config {
        interleave: Some(64),
        ..no_limit()
    });
    let clock = FakeClock::synchronised().status;
    let exchange = |server: &mut Server, origin: u64, receive: u64, recv: NtpTimestamp| {
        let mut req = request(4, 3, 6);
        req[24..32].copy_from_slice(&origin.to_be_bytes());
        req[32..40].copy_from_slice(&receive.to_be_bytes());
        let mut out = [0u8; 48];
        let tx = recv.wrapping_add(Duration::from_micros(30));
        let action = server.handle(
            Mono::from_nanos(0),
            ip("192.0.2.9"),
            recv,
            &req,
            &clock,
            || tx,
            &mut out,
        );
        assert!(matches!(action, Action::Respond { len: 48, .. }));
        (out, Header::parse(&out).unwrap())
    };
    let r1 = RECV;
    let (_, h1) = exchange(&mut server, 0, 0, r1);
    assert_eq!(h1.origin_ts, CLIENT_XMT);
    assert_eq!(h1.receive_ts.to_bits(), r1.to_bits() | 1);
    assert_eq!(h1.transmit_ts.to_bits() & 1, 0);
    let r2 = RECV.wrapping_add(Duration::from_secs(1));
    let (bytes2, h2) = exchange(&mut server, h1.receive_ts.to_bits(), 77, r2);
    assert_eq!(
        h2.origin_ts, CLIENT_XMT,
        "nothing saved for the first: basic"
    );
    let kernel_tx = r2.wrapping_add(Duration::from_micros(12));
    server.kernel_transmit(&bytes2, kernel_tx);
    let r3 = RECV.wrapping_add(Duration::from_secs(2));
    let (_, h3) = exchange(&mut server, h2.receive_ts.to_bits(), 88, r3);
    assert_eq!(
        h3.origin_ts.to_bits(),
        88,
        "origin = the request's receive timestamp"
    );
    assert_eq!(h3.receive_ts.to_bits(), r3.to_bits() | 1);
    assert!(h3.transmit_ts.to_bits().abs_diff(kernel_tx.to_bits()) <= 2);
    // The same earlier exchange again (a replay or a spoofed copy): basic.
    let (_, h4) = exchange(
        &mut server,
        h2.receive_ts.to_bits(),
        88,
        r3.wrapping_add(Duration::from_secs(1)),
    );
    assert_eq!(h4.origin_ts, CLIENT_XMT);
    assert_eq!(server.interleave().map(Interleave::hits), Some(1));
}

/// Off (the core's default), timestamps are exactly the caller's and nothing is kept.
#[test]
fn interleave_off_keeps_timestamps_exact() {
    let mut server = Server::new(no_limit());
    let mut req = request(4, 3, 6);
    req[24..32].copy_from_slice(&(RECV.to_bits() | 1).to_be_bytes());
    let r = run_with(
        &mut server,
        Mono::from_nanos(0),
        "192.0.2.9",
        &req,
        &FakeClock::synchronised().status,
    );
    let h = r.reply.unwrap();
    assert_eq!(h.receive_ts, RECV);
    assert_eq!(h.origin_ts, CLIENT_XMT);
    assert!(server.interleave().is_none());
}
