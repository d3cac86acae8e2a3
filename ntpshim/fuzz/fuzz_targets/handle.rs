//! Fuzzes `Server::handle` with arbitrary datagrams, clients, times and clock
//! states: it must never panic and never reply with more bytes than it got.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use nsaux_ntpshim::{
    Action, ClockStatus, Config, KernelTimex, Mono, NtpTimestamp, RateLimitConfig, Reference,
    RefId, Server,
};

fuzz_target!(|data: &[u8]| {
    // The first 24 bytes steer the context; the rest is the datagram.
    let Some((ctx, request)) = data.split_first_chunk::<24>() else {
        return;
    };
    let word = |i: usize| u64::from_le_bytes(ctx[i..i + 8].try_into().unwrap_or_default());
    let flags = ctx[0];
    let config = Config {
        rate_limit: (flags & 1 != 0).then(|| RateLimitConfig {
            interval_log2: ctx[1] as i8,
            burst: ctx[2],
            leak_log2: ctx[3],
            kod_log2: (flags & 2 != 0).then_some(ctx[4]),
            ipv6_prefix: ctx[5],
            max_clients: usize::from(ctx[6]) * 8,
        }),
        answer_unsynchronised: flags & 4 != 0,
        symmetric: flags & 8 != 0,
        local_stratum: (flags & 16 != 0).then_some(ctx[7]),
        interleave: (flags & 64 != 0).then_some(usize::from(ctx[10]) * 4),
        seed: word(8),
        ..Config::default()
    };
    let clock = ClockStatus::from_kernel(
        KernelTimex {
            status: i32::from(ctx[1]) << 4,
            maxerror: word(16) as i64,
            esterror: word(8) as i64,
        },
        ctx[2] as i8,
        Reference {
            stratum: ctx[3],
            refid: RefId([ctx[4], ctx[5], ctx[6], ctx[7]]),
            root_delay_us: word(8) >> 20,
            root_dispersion_us: word(16) >> 20,
            time: None,
        },
    );
    let client = if flags & 32 != 0 {
        IpAddr::V6(Ipv6Addr::from(u128::from(word(8)) << 64 | u128::from(word(16))))
    } else {
        IpAddr::V4((word(16) as u32).into())
    };
    let mut server = Server::new(config);
    let mut out = vec![0u8; usize::from(ctx[9]) * 8];
    // Send the datagram a few times to exercise the rate limiter too.
    for i in 0..4u64 {
        let action = server.handle(
            Mono::from_nanos(word(16).wrapping_mul(i)),
            client,
            NtpTimestamp::from_bits(word(8)),
            request,
            &clock,
            || NtpTimestamp::from_bits(word(16)),
            &mut out,
        );
        if let Action::Respond { len, .. } = action {
            assert!(len <= request.len());
            assert!(len <= out.len());
            // The reply handed back as if the kernel had stamped it (interleaved mode).
            let reply = out[..len].to_vec();
            server.kernel_transmit(&reply, NtpTimestamp::from_bits(word(16) ^ i));
        }
    }
});
