//! Issue 10 item 1, no reflection: a remote host behind a veth plays the attacker against the
//! portmapper and the ident responder, then real clients check that service goes on.
//!
//! - A local user registers the longest addresses SET still accepts (an 8,700-byte one is
//!   refused), the attacker grows GETSTAT, and every UDP answer it gets is at most twice its
//!   request; over TCP it is still answered in full; loopback `rpcinfo -p` and `-m` work.
//! - SET with a bad netid or uaddr answers FALSE.
//! - Two ident responders aimed at each other with one forged datagram exchange at most one.

use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, sendto, socket,
};
use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::env::{require, require_root};
use nsaux_tests::netns::{TestNetns, udp_exchange, veth};
use nsaux_tests::rpc::{
    self, Cred, PMAP, Reply, call, lo111, parse_reply, pmap, rpcb, stream_call, udp_call,
    wait_portmapper_udp,
};

const ON: &str = "[rpcbind]\nenabled = true\n";
const AUTH_TOOWEAK: u32 = 5;

/// Waits until the portmapper answers NULL over loopback UDP in `ns`.
fn wait_up(ns: &TestNetns) -> anyhow::Result<()> {
    wait_portmapper_udp(ns, &format!("portmapper in {}", ns.name))
}

/// A SET over loopback UDP from an unprivileged port, as a local user's program makes it.
fn loopback_set(
    ns: &TestNetns,
    vers: u32,
    netid: &str,
    uaddr: &str,
) -> anyhow::Result<Option<u32>> {
    let msg = call(
        9,
        PMAP,
        vers,
        1,
        Cred::None,
        &rpcb(420_000, 1, netid, uaddr, "1000"),
    );
    Ok(ns
        .run_in(move || udp_call(lo111(), &msg, Duration::from_secs(1)))?
        .as_ref()
        .and_then(rpc::result_u32))
}

#[test]
fn remote_udp_answers_stay_within_twice_the_request() -> anyhow::Result<()> {
    if !require(
        "remote_udp_answers_stay_within_twice_the_request",
        &["rpcinfo"],
    ) {
        return Ok(());
    }
    let d = Daemon::start(ON)?;
    let vs = d.netns("rf-vs")?;
    let client_dir = tempfile::tempdir()?;
    let attacker = TestNetns::create(client_dir.path(), "rf-far")?;
    veth(&vs, "rf0", "10.0.0.5/24", &attacker, "rf1", "10.0.0.9/24")?;
    wait_up(&vs)?;
    // The 8,700-byte uaddr of the issue is refused; the longest real addresses are accepted.
    assert_eq!(loopback_set(&vs, 3, "udp", &"1".repeat(8700))?, Some(0));
    for (vers, netid, uaddr) in [
        (3, "udp", "255.255.255.255.255.255"),
        (3, "tcp", "255.255.255.255.255.254"),
        (
            4,
            "udp6",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255.255.255",
        ),
        (
            4,
            "tcp6",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.254.255.255",
        ),
    ] {
        assert_eq!(
            loopback_set(&vs, vers, netid, uaddr)?,
            Some(1),
            "{netid} {uaddr}"
        );
    }
    let far = SocketAddr::from(([10, 0, 0, 5], 111));
    // (name, request): the smallest requests, the worst ratio.
    let asks: Vec<(&str, Vec<u8>)> = vec![
        (
            "v2 GETPORT",
            call(1, PMAP, 2, 3, Cred::None, &pmap(420_000, 1, 17, 0)),
        ),
        (
            "v3 GETADDR",
            call(2, PMAP, 3, 3, Cred::None, &rpcb(420_000, 1, "", "", "")),
        ),
        (
            "v4 GETADDR",
            call(3, PMAP, 4, 3, Cred::None, &rpcb(420_000, 1, "", "", "")),
        ),
        (
            "v4 GETVERSADDR",
            call(4, PMAP, 4, 9, Cred::None, &rpcb(420_000, 1, "", "", "")),
        ),
        (
            "v4 GETADDRLIST",
            call(5, PMAP, 4, 11, Cred::None, &rpcb(420_000, 1, "", "", "")),
        ),
        ("v4 GETSTAT", call(6, PMAP, 4, 12, Cred::None, &[])),
        ("v2 DUMP", call(7, PMAP, 2, 4, Cred::None, &[])),
        ("v3 DUMP", call(8, PMAP, 3, 4, Cred::None, &[])),
        ("v4 DUMP", call(9, PMAP, 4, 4, Cred::None, &[])),
    ];
    let asks2 = asks.clone();
    let answers =
        attacker.run_in(move || -> anyhow::Result<Vec<(String, usize, Vec<u8>)>> {
            // First grow GETSTAT with lookups of many programs, as any sender could.
            for prog in 0..300u32 {
                let msg = call(
                    prog,
                    PMAP,
                    4,
                    3,
                    Cred::None,
                    &rpcb(500_000 + prog, 1, "", "", ""),
                );
                let _ = udp_exchange(far, &msg, Duration::from_millis(100))?;
            }
            let mut v = Vec::new();
            for (name, msg) in asks2 {
                let got = udp_exchange(far, &msg, Duration::from_secs(1))?;
                let reply = got.map(|(b, _)| b).unwrap_or_default();
                v.push((name.to_owned(), msg.len(), reply));
            }
            Ok(v)
        })??;
    for (name, req, reply) in &answers {
        assert!(!reply.is_empty(), "{name}: no answer at all");
        assert!(
            reply.len() <= 2 * req,
            "{name}: {} bytes for a {req}-byte request",
            reply.len()
        );
    }
    let by_name = |n: &str| {
        answers
            .iter()
            .find(|a| a.0 == n)
            .and_then(|a| parse_reply(&a.2))
            .map(|(_, r)| r)
    };
    // Lookups are still answered properly; listings are refused as rpcbind's access check does.
    assert_eq!(
        by_name("v2 GETPORT").as_ref().and_then(rpc::result_u32),
        Some(65535)
    );
    assert_eq!(
        by_name("v3 GETADDR")
            .as_ref()
            .and_then(rpc::result_string)
            .as_deref(),
        Some("255.255.255.255.255.255")
    );
    for n in ["v4 GETSTAT", "v2 DUMP", "v3 DUMP", "v4 DUMP"] {
        assert_eq!(by_name(n), Some(Reply::AuthError(AUTH_TOOWEAK)), "{n}");
    }
    // udp + tcp entries of 420000 v1 make a GETADDRLIST too long for UDP: SYSTEM_ERR.
    assert_eq!(
        by_name("v4 GETADDRLIST"),
        Some(Reply::Accepted(5, Vec::new()))
    );
    let refused = d
        .ns("rf-vs")?
        .map(|e| e["services"]["rpcbind"]["status"]["udp_reflection_refused"].clone());
    assert!(
        refused
            .as_ref()
            .and_then(|v| v.as_u64())
            .is_some_and(|n| n >= 1),
        "{refused:?}"
    );
    // Over TCP the same host still gets every answer in full.
    let tcp = attacker.run_in(move || -> Vec<(String, Option<Reply>)> {
        asks.into_iter()
            .map(|(name, msg)| {
                let r = TcpStream::connect(far).ok().and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                    stream_call(&mut s, &msg)
                });
                (name.to_owned(), r)
            })
            .collect()
    })?;
    for (name, r) in &tcp {
        assert!(
            matches!(r, Some(Reply::Accepted(0, _))),
            "{name} over TCP: {r:?}"
        );
    }
    let dump = tcp
        .iter()
        .find(|t| t.0 == "v3 DUMP")
        .and_then(|t| t.1.clone());
    let Some(Reply::Accepted(0, body)) = dump else {
        anyhow::bail!("no TCP DUMP");
    };
    assert!(
        String::from_utf8_lossy(&body)
            .contains("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255.255.255"),
        "the v6 registration is listed over TCP"
    );
    // Loopback clients inside the namespace are served as before.
    let out = vs.sh("rpcinfo -p 127.0.0.1")?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("420000"), "{out:?}");
    let out = vs.sh("rpcinfo -m 127.0.0.1")?;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("PMAP_GETPORT"),
        "{out:?}"
    );
    Ok(())
}

#[test]
fn set_with_a_bad_netid_or_uaddr_is_refused() -> anyhow::Result<()> {
    if !require_root("set_with_a_bad_netid_or_uaddr_is_refused") {
        return Ok(());
    }
    let d = Daemon::start(ON)?;
    let ns = d.netns("rf-set")?;
    wait_up(&ns)?;
    for (vers, netid, uaddr) in [
        (3, "udp7", "0.0.0.0.8.1"),
        (4, "", "0.0.0.0.8.1"),
        (4, "udp", "::.8.1"),
        (4, "tcp6", "127.0.0.1.8.1"),
        (3, "tcp", "127.0.0.1"),
        (3, "tcp", "127.0.0.1.300.1"),
        (4, "local", ""),
    ] {
        assert_eq!(
            loopback_set(&ns, vers, netid, uaddr)?,
            Some(0),
            "{netid:?} {uaddr:?}"
        );
    }
    // A real registration still works, and v2 with an unknown protocol is refused.
    assert_eq!(loopback_set(&ns, 4, "tcp", "0.0.0.0.8.1")?, Some(1));
    let v2 = ns.run_in(|| {
        udp_call(
            lo111(),
            &call(3, PMAP, 2, 1, Cred::None, &pmap(420_001, 1, 99, 2049)),
            Duration::from_secs(1),
        )
    })?;
    assert_eq!(v2.as_ref().and_then(rpc::result_u32), Some(0));
    let rows = d.ctl_json(&["rpc", "list", "--ns", "rf-set"])?.to_string();
    assert!(!rows.contains("udp7") && !rows.contains("420001"), "{rows}");
    Ok(())
}

/// UDP datagrams sent by namespace `ns` so far (`Udp: OutDatagrams` of its `/proc/net/snmp`).
fn udp_out(ns: &TestNetns) -> anyhow::Result<u64> {
    let out = ns.sh("cat /proc/net/snmp")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        anyhow::bail!("no Udp lines in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "OutDatagrams")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no OutDatagrams"))
}

/// Sends one UDP datagram from `src_port` of this namespace to `dst` through a raw socket, so
/// the source port may be one a listener already holds (as a forger would).
fn forge_udp(src_port: u16, dst: SocketAddrV4, payload: &[u8]) -> anyhow::Result<()> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::empty(),
        SockProtocol::Udp,
    )?;
    let len = u16::try_from(8 + payload.len())?;
    let mut pkt = Vec::with_capacity(usize::from(len));
    pkt.extend_from_slice(&src_port.to_be_bytes());
    pkt.extend_from_slice(&dst.port().to_be_bytes());
    pkt.extend_from_slice(&len.to_be_bytes());
    pkt.extend_from_slice(&[0, 0]); // no checksum (allowed over IPv4)
    pkt.extend_from_slice(payload);
    let to = SockaddrIn::from(dst);
    sendto(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &pkt,
        &to,
        MsgFlags::empty(),
    )?;
    Ok(())
}

#[test]
fn two_ident_responders_aimed_at_each_other_do_not_ping_pong() -> anyhow::Result<()> {
    if !require_root("two_ident_responders_aimed_at_each_other_do_not_ping_pong") {
        return Ok(());
    }
    // Only ident runs, so every UDP datagram a namespace sends is an ident answer.
    let d = Daemon::start(
        "[ident]\nenabled = true\n[rpcbind]\nenabled = false\n[dns]\nenabled = false\n\
         [ntp]\nenabled = false\n\n[[netns]]\nmatch = \"pp-b\"\nident = { enabled = true, port = 7868 }\n",
    )?;
    let a = d.netns("pp-a")?;
    let b = d.netns("pp-b")?;
    veth(&a, "pp0", "10.0.1.1/24", &b, "pp1", "10.0.1.2/24")?;
    let ident_a = SocketAddrV4::new([10, 0, 1, 1].into(), 7867);
    let ident_b = SocketAddrV4::new([10, 0, 1, 2].into(), 7868);
    // Both answer a proper query from the other side.
    wait_for("ident a from b", Duration::from_secs(5), || {
        b.udp_query(
            SocketAddr::V4(ident_a),
            &[b'?'; 256],
            Duration::from_millis(200),
        )
        .ok()
        .flatten()
    })?;
    wait_for("ident b from a", Duration::from_secs(5), || {
        a.udp_query(
            SocketAddr::V4(ident_b),
            &[b'?'; 256],
            Duration::from_millis(200),
        )
        .ok()
        .flatten()
    })?;
    // Forged: a query to A that seems to come from B's ident port, A's own port, and echo.
    for (src, dst, from) in [
        (7868, ident_a, &b),
        (7867, ident_a, &b),
        (7, ident_a, &b),
        (7867, ident_b, &a),
    ] {
        let (a0, b0) = (udp_out(&a)?, udp_out(&b)?);
        from.run_in(move || forge_udp(src, dst, &[b'?'; 256]))??;
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(1000));
        let (sent_a, sent_b) = (udp_out(&a)? - a0, udp_out(&b)? - b0);
        assert!(
            sent_a + sent_b <= 1,
            "forged from port {src} to {dst}: a sent {sent_a}, b sent {sent_b} in {:?}",
            start.elapsed()
        );
    }
    Ok(())
}
