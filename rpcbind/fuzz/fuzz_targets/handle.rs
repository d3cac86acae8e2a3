//! Fuzz target: random bytes into `Portmapper::handle` for each transport and caller kind, and
//! into `RecordDecoder` (whose records are then handled as TCP calls). Nothing may panic, and a
//! reply is produced exactly when the outcome says so.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nsaux_rpcbind::{CallContext, Caller, Config, Portmapper, RecordDecoder, Transport};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let config = Config {
        remote_calls: sel & 0x10 != 0,
        udp_dump_loopback_only: sel & 0x20 != 0,
        ..Config::default()
    };
    let mut pm = Portmapper::new(
        config,
        &[
            ("udp", "0.0.0.0.0.111"),
            ("tcp", "0.0.0.0.0.111"),
            ("udp6", "::.0.111"),
            ("local", "/run/rpcbind.sock"),
        ],
    );
    let caller = match sel & 0x3 {
        0 => Caller::Ip("127.0.0.1:700".parse().expect("addr")),
        1 => Caller::Ip("10.0.0.9:40000".parse().expect("addr")),
        2 => Caller::Ip("[::1]:5000".parse().expect("addr")),
        _ => Caller::Local {
            uid: u32::from(sel),
            pid: None,
        },
    };
    let transport = match (sel >> 2) & 0x3 {
        0 => Transport::Udp,
        1 => Transport::Tcp,
        _ => Transport::Local,
    };
    let ctx = CallContext {
        transport,
        caller,
        local_addr: Some("10.0.0.5:111".parse().expect("addr")),
        now_unix: 1_700_000_000,
    };
    let mut out = Vec::new();
    // Half the time, wrap the body in a valid call header so the procedures' argument decoding
    // is reached: body[0] picks the version, body[1] the procedure.
    let wrapped;
    let body = if sel & 0x40 != 0 && body.len() >= 2 {
        let mut b = Vec::with_capacity(body.len() + 40);
        for w in [
            7u32,
            0,
            2,
            100_000,
            2 + u32::from(body[0] % 3),
            u32::from(body[1] % 14),
            0,
            0,
            0,
            0,
        ] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        b.extend_from_slice(&body[2..]);
        wrapped = b;
        &wrapped[..]
    } else {
        body
    };
    // No reflection: a UDP reply to a non-loopback caller is at most twice its request.
    let remote_udp = transport == Transport::Udp && sel & 0x3 == 1;
    // The body as one call, then the same body split into several calls in sequence.
    let o = pm.handle(&ctx, body, &mut out);
    assert_eq!(o.should_reply(), !out.is_empty());
    assert!(!remote_udp || out.len() <= 2 * body.len());
    for chunk in body.chunks(64) {
        let o = pm.handle(&ctx, chunk, &mut out);
        assert_eq!(o.should_reply(), !out.is_empty());
        assert!(!remote_udp || out.len() <= 2 * chunk.len());
    }
    // The body as a TCP byte stream.
    let mut dec = RecordDecoder::new(4096);
    for chunk in body.chunks(usize::from(sel % 7) + 1) {
        match dec.feed(chunk) {
            Ok(records) => {
                for r in records {
                    let _ = pm.handle(&ctx, &r, &mut out);
                }
            }
            Err(_) => break,
        }
    }
});
