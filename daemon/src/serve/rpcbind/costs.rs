//! What the portmapper's large-table work costs, measured (issue 11 item 3): run in a release
//! build with
//! `cargo test --release -p nsauxd costs -- --ignored --nocapture`.
//! Prints, per table size, the median over runs of: a DUMP encoded by `handle` (what the loop
//! paid before), the snapshot `take_dump` takes under the lock (what it pays now) and its
//! encoding (now on a blocking thread), a SET with and without such a snapshot held (the copy
//! a change makes then, once per snapshot), a UDP DUMP (bounded by `udp_max_reply`), the
//! copy of the user entries a compaction used to make on the loop (`user_entries`, now on its
//! blocking thread) and a whole-file journal rewrite (now off the loop).

use std::time::{Duration, Instant};

use nsaux_rpcbind::{CallContext, Caller, Transport};

use super::journal::{self, Change};
use super::{new_portmapper, user_entries};
use crate::config::RpcbindConfig;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn call(vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for w in [
        1u32,
        0,
        2,
        nsaux_rpcbind::PMAP_PROG,
        vers,
        proc_,
        0,
        0,
        0,
        0,
    ] {
        b.extend_from_slice(&w.to_be_bytes());
    }
    b.extend_from_slice(args);
    b
}

fn xdr_string(b: &mut Vec<u8>, s: &str) {
    let n = u32::try_from(s.len()).unwrap_or(0);
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(s.as_bytes());
    b.resize(b.len().div_ceil(4) * 4, 0);
}

fn set(prog: u32, netid: &str, uaddr: &str) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&prog.to_be_bytes());
    a.extend_from_slice(&1u32.to_be_bytes());
    xdr_string(&mut a, netid);
    xdr_string(&mut a, uaddr);
    xdr_string(&mut a, "");
    call(4, 1, &a)
}

#[test]
#[ignore = "a measurement: run in a release build with --ignored --nocapture"]
fn costs() {
    let ctx = |transport| CallContext {
        transport,
        caller: match transport {
            Transport::Local => Caller::Local { uid: 0, pid: None },
            _ => Caller::Ip("127.0.0.1:700".parse().expect("addr")),
        },
        local_addr: match transport {
            Transport::Local => None,
            _ => Some("127.0.0.1:111".parse().expect("addr")),
        },
        now_unix: 1_700_000_000,
    };
    let (local, udp) = (ctx(Transport::Local), ctx(Transport::Udp));
    let dir = tempfile::tempdir().expect("tempdir");
    let us = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e6);
    println!(
        "entries | DUMP v4 by handle µs | take_dump µs | encode µs | SET µs | SET, snapshot \
         held µs | DUMP v2 by handle µs | UDP DUMP µs | user_entries µs | journal rewrite µs | \
         reply bytes"
    );
    for n in [1024u32, 8192, 65_536] {
        let cfg = RpcbindConfig {
            max_registrations: 100_000,
            max_registration_bytes: 1 << 30,
            ..RpcbindConfig::default()
        };
        let mut pm = new_portmapper(&cfg);
        let mut out = Vec::new();
        for i in 0..n {
            // Half tcp (in the v2 view), half AF_LOCAL paths of typical length.
            let req = if i % 2 == 0 {
                set(
                    300_000 + i,
                    "tcp",
                    &format!("10.{}.{}.1.8.1", i >> 8 & 255, i & 255),
                )
            } else {
                set(300_000 + i, "local", &format!("/run/service-{i}/socket"))
            };
            let _ = pm.handle(&local, &req, &mut out);
        }
        assert!(pm.entries().len() >= n as usize);
        let (dump4, dump2) = (call(4, 4, &[]), call(2, 4, &[]));
        let runs = if n > 10_000 { 9 } else { 31 };
        let by_handle = time(runs, || drop(pm.handle(&local, &dump4, &mut out)));
        let bytes = out.len();
        let by_handle2 = time(runs, || drop(pm.handle(&local, &dump2, &mut out)));
        let snap = time(runs, || drop(pm.take_dump(&local, &dump4)));
        let (mut plain, mut copying) = (Vec::new(), Vec::new());
        for k in 0..runs {
            let (extra, gone) = (
                set(900_000, "tcp", "10.9.9.9.8.1"),
                call(4, 2, &{
                    let mut a = Vec::new();
                    a.extend_from_slice(&900_000u32.to_be_bytes());
                    a.extend_from_slice(&1u32.to_be_bytes());
                    xdr_string(&mut a, "");
                    xdr_string(&mut a, "");
                    xdr_string(&mut a, "");
                    a
                }),
            );
            let held = (k % 2 == 1).then(|| pm.take_dump(&local, &dump4));
            let t = Instant::now();
            let _ = pm.handle(&local, &extra, &mut out);
            let took = t.elapsed();
            drop(held);
            let _ = pm.handle(&local, &gone, &mut out);
            if k % 2 == 1 {
                copying.push(took)
            } else {
                plain.push(took)
            }
        }
        let (plain, copying) = (median(plain), median(copying));
        let job = pm.take_dump(&local, &dump4).expect("a DUMP");
        let encode = time(runs, || job.encode(&mut out));
        let by_udp = time(runs, || drop(pm.handle(&udp, &dump4, &mut out)));
        let keep = user_entries(&pm, &cfg);
        let snapshot = time(runs, || drop(user_entries(&pm, &cfg)));
        let j = journal::JournalDir::open(dir.path(), "rpcbind")
            .expect("journal dir")
            .journal(crate::netns::NetnsId(u64::from(n)));
        let rewrite = time(runs, || {
            j.rewrite(&keep).expect("rewrite");
        });
        let file = journal::encode_entries(&keep).len();
        assert_eq!(
            file,
            keep.iter()
                .map(|e| journal::line_len(&Change::Set(e.clone())))
                .sum::<usize>()
        );
        println!(
            "{n} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({file} B) | {bytes}",
            us(by_handle),
            us(snap),
            us(encode),
            us(plain),
            us(copying),
            us(by_handle2),
            us(by_udp),
            us(snapshot),
            us(rewrite),
        );
    }
}
