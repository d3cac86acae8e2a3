//! DUMP of a large table (issue 11 item 3): `rpcinfo -p` (v2 DUMP over TCP) and `rpcinfo`
//! (v3/v4 DUMP) against a namespace holding thousands of registrations list every one of them,
//! in registration order, exactly as registered, while another namespace's portmapper keeps
//! answering within a generous bound (the encoding runs off the loop: `serve/rpcbind/dump.rs`).

use std::time::{Duration, Instant};

use nsaux_tests::daemon::Daemon;
use nsaux_tests::env::require;
use nsaux_tests::rpc::{
    self, Cred, PMAP, call, connect_abstract, getport_answered, rpcb, stream_call,
    wait_portmapper_udp,
};

const FIRST: u32 = 500_000;
const N: u32 = 3_000;

/// Registration `i`: alternately TCP and UDP, each on a port of its own.
fn reg(i: u32) -> (u32, &'static str, u16) {
    let proto = if i.is_multiple_of(2) { "tcp" } else { "udp" };
    (
        FIRST + i,
        proto,
        u16::try_from(2_000 + i).unwrap_or(u16::MAX),
    )
}

/// `rpcinfo -p` rows (program, version, protocol, port) from `FIRST` on, in output order.
fn pmap_rows(out: &str) -> Vec<(u32, u32, String, u16)> {
    let mut rows = rpc::pmap_rows(out);
    rows.retain(|r| r.0 >= FIRST);
    rows
}

#[test]
fn rpcinfo_lists_thousands_of_registrations_while_another_namespace_answers() -> anyhow::Result<()>
{
    let name = "rpcinfo_lists_thousands_of_registrations_while_another_namespace_answers";
    if !require(name, &["rpcinfo"]) {
        return Ok(());
    }
    let d = Daemon::start(
        "[rpcbind]\nenabled = true\nmax_registrations = 4000\nmax_registration_bytes = 4194304\n",
    )?;
    let a = d.netns("dump-a")?;
    let b = d.netns("dump-b")?;
    wait_portmapper_udp(&a, "portmapper in A")?;
    wait_portmapper_udp(&b, "portmapper in B")?;
    a.run_in(|| -> anyhow::Result<()> {
        let mut s = connect_abstract("/run/rpcbind.sock")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        for i in 0..N {
            let (prog, proto, port) = reg(i);
            let uaddr = format!("0.0.0.0.{}.{}", port >> 8, port & 255);
            let r = stream_call(
                &mut s,
                &call(i, PMAP, 4, 1, Cred::None, &rpcb(prog, 1, proto, &uaddr, "")),
            );
            anyhow::ensure!(r.as_ref().and_then(rpc::result_u32) == Some(1), "SET {i}");
        }
        Ok(())
    })??;
    let want: Vec<(u32, u32, String, u16)> = (0..N)
        .map(|i| {
            let (prog, proto, port) = reg(i);
            (prog, 1, proto.to_owned(), port)
        })
        .collect();

    let (dumps, probes) = std::thread::scope(|s| -> anyhow::Result<_> {
        let dumper = s.spawn(|| -> anyhow::Result<usize> {
            for round in 0..6 {
                let out = a.sh("rpcinfo -p 127.0.0.1")?;
                let rows = pmap_rows(&String::from_utf8_lossy(&out.stdout));
                anyhow::ensure!(
                    rows == want,
                    "rpcinfo -p round {round}: {} rows",
                    rows.len()
                );
                let out = a.sh("rpcinfo 127.0.0.1")?;
                let text = String::from_utf8_lossy(&out.stdout);
                let ours = text
                    .lines()
                    .filter(|l| {
                        l.split_whitespace()
                            .next()
                            .and_then(|p| p.parse::<u32>().ok())
                            >= Some(FIRST)
                    })
                    .count();
                anyhow::ensure!(ours == N as usize, "rpcinfo round {round}: {ours} rows");
                let first = text
                    .lines()
                    .find(|l| l.split_whitespace().next() == Some("500000"));
                let fields: Vec<&str> = first
                    .map(|l| l.split_whitespace().take(4).collect())
                    .unwrap_or_default();
                anyhow::ensure!(
                    fields == ["500000", "1", "tcp", "0.0.0.0.7.208"],
                    "{first:?}"
                );
            }
            Ok(6)
        });
        let mut probes = 0u32;
        while !dumper.is_finished() {
            let t = Instant::now();
            anyhow::ensure!(
                getport_answered(&b, probes, Duration::from_secs(1))?,
                "B's GETPORT {probes} unanswered (after {:?})",
                t.elapsed()
            );
            probes += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        let dumps = dumper
            .join()
            .map_err(|_| anyhow::anyhow!("dumper panicked"))??;
        Ok((dumps, probes))
    })?;
    assert_eq!(dumps, 6);
    assert!(probes >= 3, "B probed only {probes} times");

    // A change made after the big DUMPs shows in the next one, in its place (at the end).
    a.run_in(|| -> anyhow::Result<()> {
        let mut s = connect_abstract("/run/rpcbind.sock")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let r = stream_call(
            &mut s,
            &call(1, PMAP, 4, 2, Cred::None, &rpcb(FIRST, 1, "", "", "")),
        );
        anyhow::ensure!(r.as_ref().and_then(rpc::result_u32) == Some(1), "UNSET");
        Ok(())
    })??;
    let rows = pmap_rows(&String::from_utf8_lossy(
        &a.sh("rpcinfo -p 127.0.0.1")?.stdout,
    ));
    assert_eq!(rows, want[1..].to_vec());
    Ok(())
}
