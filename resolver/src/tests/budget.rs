//! The cache under the daemon's memory ceiling: nothing new is stored, queries still answered.

use super::*;

#[test]
fn growth_limit_stops_storing_but_queries_are_still_answered() {
    let (mut r, now) = cached_www();
    let held = r.cache_bytes();
    assert!(held > 0);
    assert_eq!(r.cache_len(), 1);
    r.limit_cache_growth(held);
    // A new name is resolved through the upstream and answered, but not cached.
    let mut out = Vec::new();
    resolve_mail(&mut r, now, 2, &mut out);
    let answers = drain_answers(&mut r);
    assert_eq!(answers.len(), 1, "the client is answered");
    assert_eq!((r.cache_len(), r.cache_bytes()), (1, held));
    assert_eq!(r.cache_refused(), 1);
    // What was cached is still served from the cache.
    let q = query(3, "www.example.com.", RecordType::A, Some((1232, false)));
    let (_, m) = answered(r.handle_query(now, udp_client(), &q, &mut out), &out);
    assert_eq!(m.answers.len(), 4);
    // Lifted: new answers are stored again.
    r.limit_cache_growth(usize::MAX);
    resolve_mail(&mut r, now, 4, &mut out);
    assert_eq!(r.cache_len(), 2);
    assert!(r.cache_bytes() > held);
}

/// A client asks for mail.example.com (query `id`) and the upstream answers it.
fn resolve_mail(r: &mut Resolver, now: Instant, id: u16, out: &mut Vec<u8>) {
    let tx = forward(
        r,
        now,
        udp_client(),
        &query(id, "mail.example.com.", RecordType::A, Some((1232, false))),
        out,
    );
    let _ = r.handle_upstream(
        now,
        tx.upstream,
        tx.transport,
        &reply(
            &tx,
            ResponseCode::NoError,
            vec![a_rec("mail.example.com.", 300, [192, 0, 2, 9])],
            vec![],
            |_| {},
        ),
    );
}
