//! Property tests: nothing from the network can panic the core.

use proptest::prelude::*;

use super::*;

/// A resolver with local data, serve-stale and one pending query; returns the transmit.
fn primed() -> (Resolver, UpstreamTransmit, Vec<u8>) {
    let mut cfg = config(&[UP1]);
    cfg.serve_stale = Some(crate::ServeStale::default());
    cfg.local_domains = vec!["lan".into()];
    cfg.local_records = vec![("h.lan".into(), ip("10.0.0.1"))];
    let mut r = Resolver::new(cfg, [12; 32]).expect("config");
    let mut out = Vec::new();
    let _ = r.handle_query(
        t0(),
        udp_client(),
        &query(1, "a.example.", RecordType::A, Some((1232, true))),
        &mut out,
    );
    let tx = transmit(&mut r, t0());
    let good = reply(
        &tx,
        ResponseCode::NoError,
        vec![a_rec("a.example.", 60, [1, 2, 3, 4])],
        vec![soa_rec("example.", 60, 60)],
        |_| {},
    );
    (r, tx, good)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_queries_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), tcp in any::<bool>()) {
        let (mut r, _, _) = primed();
        let client = if tcp { tcp_client() } else { udp_client() };
        let mut out = Vec::new();
        if let QueryOutcome::Answered(_) = r.handle_query(t0(), client, &bytes, &mut out) {
            prop_assert!(out.len() >= 12);
        }
    }

    #[test]
    fn mutated_queries_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let (mut r, _, _) = primed();
        let mut q = query(2, "h.lan.", RecordType::A, Some((1232, true)));
        for (i, b) in flips {
            let at = i.index(q.len());
            q[at] = b;
        }
        let mut out = Vec::new();
        let _ = r.handle_query(t0(), udp_client(), &q, &mut out);
    }

    #[test]
    fn random_upstream_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let (mut r, tx, _) = primed();
        let mut b = bytes;
        if b.len() >= 2 {
            b[..2].copy_from_slice(&tx.dns_id.to_be_bytes());
        }
        let _ = r.handle_upstream(t0(), tx.upstream, Transport::Udp, &b);
        let _ = r.handle_upstream(t0(), tx.upstream, Transport::Tcp, &b);
        r.handle_timeout(after(t0(), 10));
        while r.poll_answer().is_some() {}
    }

    #[test]
    fn mutated_upstream_never_panics(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let (mut r, tx, good) = primed();
        let mut b = good;
        for (i, v) in flips {
            let at = i.index(b.len());
            if at >= 2 {
                b[at] = v;
            }
        }
        let keep = cut.index(b.len() + 1);
        let _ = r.handle_upstream(t0(), tx.upstream, Transport::Udp, &b[..keep.max(b.len() / 2)]);
        let _ = r.handle_upstream(t0(), tx.upstream, Transport::Udp, &b);
        // Whatever was accepted must replay from cache without panicking.
        let mut out = Vec::new();
        let _ = r.handle_query(after(t0(), 1), udp_client(), &query(3, "a.example.", RecordType::A, Some((512, true))), &mut out);
        let _ = r.handle_query(after(t0(), 100), tcp_client(), &query(4, "A.example.", RecordType::A, Some((512, true))), &mut out);
    }
}
