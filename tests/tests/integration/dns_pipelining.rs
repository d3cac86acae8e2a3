//! DNS over TCP with pipelining (RFC 7766 6.2.1.1): a client that writes many queries on one
//! connection before reading gets every answer, each with its query's ID, however the daemon
//! groups them into writes (it sends the answers already queued in one write). Played with a
//! real socket inside the namespace: 200 queries in one write, then the answers read back.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use nsaux_tests::closed_loop::dns_a_query;
use nsaux_tests::daemon::Daemon;

const EP: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(127, 0, 0, 53),
    53,
));
const QUERIES: u16 = 200;

#[test]
fn pipelined_queries_on_one_connection_are_all_answered_with_their_ids() -> anyhow::Result<()> {
    let d = Daemon::start(
        "[ntp]\nenabled = false\n[rpcbind]\nenabled = false\n[dns]\nlocal_domains = [\"lan\"]\n\
         records = [{ name = \"p.lan\", addr = \"10.0.0.7\" }]\n",
    )?;
    let ns = d.netns("pipe")?;
    let answers = ns.run_in(|| -> anyhow::Result<Vec<Vec<u8>>> {
        let mut s = nsaux_tests::daemon::wait_for("DNS over TCP", Duration::from_secs(10), || {
            TcpStream::connect(EP).ok()
        })?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut all = Vec::new();
        for id in 0..QUERIES {
            let q = dns_a_query(id, "p.lan");
            all.extend_from_slice(&u16::try_from(q.len())?.to_be_bytes());
            all.extend_from_slice(&q);
        }
        s.write_all(&all)?;
        let mut got = Vec::new();
        for _ in 0..QUERIES {
            let mut len = [0u8; 2];
            s.read_exact(&mut len)?;
            let mut m = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut m)?;
            got.push(m);
        }
        Ok(got)
    })??;
    let mut ids = BTreeSet::new();
    for m in &answers {
        anyhow::ensure!(m.len() > 12, "short answer {m:?}");
        // QR set, RCODE 0, one answer record.
        assert!(
            m[2] & 0x80 != 0 && m[3] & 0x0f == 0,
            "not a NOERROR answer: {m:?}"
        );
        assert_eq!(u16::from_be_bytes([m[6], m[7]]), 1, "ANCOUNT of {m:?}");
        ids.insert(u16::from_be_bytes([m[0], m[1]]));
    }
    assert_eq!(
        ids,
        (0..QUERIES).collect::<BTreeSet<_>>(),
        "every query answered once, with its own ID"
    );
    Ok(())
}
