//! Feeds arbitrary bytes to the resolver as a client query (UDP or TCP) and as an upstream
//! reply to a pending query (with the right ID and source, so the deep parsing paths run),
//! then replays whatever got cached. Nothing may panic.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nsaux_resolver::{ClientInfo, Config, Resolver, ServeStale, Transport};

/// One base instant for every run (the core never reads the clock itself).
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// A fixed query for `a.example.` A with EDNS and DO.
const QUERY: &[u8] = &[
    0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1, //
    1, b'a', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0, 0, 1, 0, 1, //
    0, 0, 41, 0x04, 0xD0, 0, 0, 0x80, 0, 0, 0,
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let upstream: SocketAddr = "192.0.2.1:53".parse().expect("static address");
    let cfg = Config {
        upstreams: vec![upstream],
        serve_stale: Some(ServeStale::default()),
        local_domains: vec!["lan".into()],
        local_records: vec![("h.lan".into(), "10.0.0.1".parse().expect("static address"))],
        ..Config::default()
    };
    let Ok(mut r) = Resolver::new(cfg, [0; 32]) else {
        return;
    };
    let now = base();
    let transport = if mode & 1 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    let client = ClientInfo {
        addr: "127.0.0.1:5353".parse().expect("static address"),
        transport,
        token: 1,
    };
    let mut out = Vec::new();
    if mode & 2 == 0 {
        let _ = r.handle_query(now, client, rest, &mut out);
        return;
    }
    let _ = r.handle_query(now, client, QUERY, &mut out);
    let Some(tx) = r.poll_transmit(now) else {
        return;
    };
    let mut reply = rest.to_vec();
    if reply.len() >= 2 {
        reply[..2].copy_from_slice(&tx.dns_id.to_be_bytes());
    }
    let _ = r.handle_upstream(now, tx.upstream, tx.transport, &reply);
    while let Some(tx) = r.poll_transmit(now) {
        let _ = r.handle_upstream(now, tx.upstream, tx.transport, &reply);
    }
    while r.poll_answer().is_some() {}
    let _ = r.handle_query(now + Duration::from_secs(5), client, QUERY, &mut out);
    r.handle_timeout(now + Duration::from_secs(100_000));
    while r.poll_answer().is_some() {}
});
