//! Connection slots that cannot be starved (issue 10 item 2): a remote host holding hundreds of
//! connections to port 111, a local user holding many to 127.0.0.53:53 and a root user holding
//! many control connections lock nobody out; at a budget the longest-idle connection is closed
//! to admit the newcomer; a record trickled a byte at a time is cut at the record deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::dns::{dig, section, status};
use nsaux_tests::env::{require, require_root};
use nsaux_tests::netns::{TestNetns, veth};
use nsaux_tests::rpc::{
    self, Cred, PMAP, Reply, call, connect_abstract, lo111, rpcb, stream_call, udp_call,
};

const ABSTRACT: &str = "/run/rpcbind.sock";
/// Seconds a record may take from its first byte in these tests.
const RECORD_SECS: u64 = 2;

/// A TCP connection from `src` (bound before connecting) to `dst`.
fn tcp_from(src: Ipv4Addr, dst: SocketAddrV4) -> std::io::Result<TcpStream> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(src, 0)))?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(dst))?;
    Ok(TcpStream::from(fd))
}

/// Whether the peer has closed `s` (EOF or reset), without waiting.
fn closed(s: &TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut b = [0u8; 64];
    let mut r = s;
    let gone = match r.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    let _ = s.set_nonblocking(false);
    gone
}

/// Sends one byte of a record every 300 ms on `s` and returns how long it took the daemon to
/// close it (`None`: still open after 3x the record deadline).
fn trickle_until_cut(mut s: TcpStream, first: &[u8]) -> Option<Duration> {
    let start = Instant::now();
    for b in first.iter().cycle() {
        if s.write_all(&[*b]).is_err() || closed(&s) {
            return Some(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(3 * RECORD_SECS) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    None
}

fn null_v2(xid: u32) -> Vec<u8> {
    call(xid, PMAP, 2, 0, Cred::None, &[])
}

#[test]
fn held_remote_connections_lock_out_neither_local_registration_nor_newcomers() -> anyhow::Result<()>
{
    if !require(
        "held_remote_connections_lock_out_neither_local_registration_nor_newcomers",
        &["rpcinfo"],
    ) {
        return Ok(());
    }
    let d = Daemon::start(&format!(
        "[dns]\nenabled = false\n[ntp]\nenabled = false\n\
         [rpcbind]\nenabled = true\nrecord_timeout_secs = {RECORD_SECS}\n"
    ))?;
    let vs = d.netns("slotvs")?;
    let far_dir = tempfile::tempdir()?;
    let far = TestNetns::create(far_dir.path(), "slotfar")?;
    veth(&vs, "slv0", "10.77.0.1/24", &far, "slf0", "10.77.0.9/24")?;
    // 20 attacker addresses, 15 connections each (under the per-peer cap of 16): 300 held.
    let sources: Vec<Ipv4Addr> = (10..31).map(|i| Ipv4Addr::new(10, 77, 0, i)).collect();
    for s in &sources {
        far.sh(&format!("ip addr add {s}/24 dev slf0"))?;
    }
    let port111 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 111);
    wait_for("portmapper up", Duration::from_secs(5), || {
        far.run_in(move || {
            let mut s = TcpStream::connect(port111).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
            stream_call(&mut s, &null_v2(1))
        })
        .ok()
        .flatten()
    })?;
    let flood = sources[..20].to_vec();
    let held: Vec<TcpStream> = far.run_in(move || {
        let mut v = Vec::new();
        for src in &flood {
            for _ in 0..15 {
                if let Ok(s) = tcp_from(*src, port111) {
                    v.push(s);
                }
            }
        }
        v
    })?;
    assert_eq!(
        held.len(),
        300,
        "the attacker could not open its connections"
    );

    // Meanwhile, in the served namespace: the kernel's registration sequence over the abstract
    // socket, and rpcinfo over loopback TCP.
    let replies = vs.run_in(|| -> Vec<Option<Reply>> {
        let Ok(mut s) = connect_abstract(ABSTRACT) else {
            return Vec::new();
        };
        let mut out = vec![stream_call(&mut s, &call(1, PMAP, 4, 0, Cred::None, &[]))];
        for (i, netid) in ["udp", "tcp", "udp6", "tcp6"].iter().enumerate() {
            let host = if netid.ends_with('6') {
                "::"
            } else {
                "0.0.0.0"
            };
            let args = rpcb(100_003, 3, netid, &format!("{host}.8.1"), "0");
            out.push(stream_call(
                &mut s,
                &call(2 + i as u32, PMAP, 4, 1, Cred::None, &args),
            ));
        }
        out
    })?;
    assert_eq!(replies.len(), 5, "abstract socket connect failed");
    assert!(
        matches!(replies[0], Some(Reply::Accepted(0, _))),
        "{replies:?}"
    );
    for r in &replies[1..] {
        assert_eq!(r.as_ref().and_then(rpc::result_u32), Some(1), "{replies:?}");
    }
    let out = vs.sh("rpcinfo -T tcp 127.0.0.1 100000 4")?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ready and waiting"),
        "{out:?}"
    );

    // Remote newcomers are served: a fresh source, and a flooder over its own per-peer cap.
    let (fresh_src, busy_src) = (sources[20], sources[0]);
    let newcomers = far.run_in(move || {
        [fresh_src, busy_src].map(|src| {
            tcp_from(src, port111).ok().and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                stream_call(&mut s, &null_v2(9))
            })
        })
    })?;
    assert!(
        newcomers
            .iter()
            .all(|r| matches!(r, Some(Reply::Accepted(0, _)))),
        "{newcomers:?}"
    );
    // The held ones were evicted down to the remote budget (64), the longest-idle first.
    wait_for("evicted down to the budget", Duration::from_secs(3), || {
        let open = held.iter().filter(|s| !closed(s)).count();
        (open <= 64).then_some(())
    })?;
    let first_batch_open = held[..100].iter().filter(|s| !closed(s)).count();
    assert_eq!(first_batch_open, 0, "the oldest connections go first");
    drop(held);

    // A record trickled a byte at a time is cut at the record deadline (the idle timeout, 30 s,
    // would not have cut it), and the rest of the service is unaffected.
    let header = rpc::frame(&null_v2(5));
    let cut = far.run_in(move || {
        let s = tcp_from(fresh_src, port111).ok()?;
        trickle_until_cut(s, &header)
    })?;
    let cut = cut.ok_or_else(|| anyhow::anyhow!("trickler never cut"))?;
    assert!(
        cut >= Duration::from_millis(RECORD_SECS * 1000 - 400)
            && cut < Duration::from_millis(RECORD_SECS * 1000 + 1500),
        "trickler cut after {cut:?}, deadline {RECORD_SECS} s"
    );
    let udp = vs.run_in(|| udp_call(lo111(), &null_v2(6), Duration::from_secs(1)))?;
    assert!(udp.is_some());
    Ok(())
}

#[test]
fn held_local_dns_connections_do_not_lock_out_dig_tcp() -> anyhow::Result<()> {
    if !require(
        "held_local_dns_connections_do_not_lock_out_dig_tcp",
        &["dig"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let d = Daemon::start(&format!(
        "[ntp]\nenabled = false\n\n[rpcbind]\nenabled = false\n\n[dns]\nnetns_etc_dir = \"{}\"\n\
         local_domains = [\"lan\"]\nrecords = [{{ name = \"ok.lan\", addr = \"10.1.1.1\" }}]\n\
         tcp_record_timeout = {RECORD_SECS}\n",
        etc.path().display()
    ))?;
    let vs = d.netns("slotdns")?;
    wait_for("dns endpoint answers", Duration::from_secs(5), || {
        dig(&vs, "@127.0.0.53 ok.lan A")
            .ok()
            .filter(|o| status(o).is_some())
    })?;
    let ep = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 53), 53);
    // A local user holds 200 connections from 20 loopback addresses, a byte into a query each.
    let held: Vec<TcpStream> = vs.run_in(move || {
        let mut v = Vec::new();
        for i in 2..22 {
            for _ in 0..10 {
                if let Ok(mut s) = tcp_from(Ipv4Addr::new(127, 0, 0, i), ep) {
                    let _ = s.write_all(&[0]);
                    v.push(s);
                }
            }
        }
        v
    })?;
    assert_eq!(held.len(), 200);
    let out = dig(&vs, "@127.0.0.53 +tcp +tries=1 +time=2 ok.lan A")?;
    assert_eq!(
        section(&out, "ANSWER").first().map(|r| r.3.clone()),
        Some("10.1.1.1".to_owned()),
        "{out}"
    );
    drop(held);
    // A query trickled a byte at a time is cut at the record deadline.
    let mut q = vec![0, 29, 0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(&[2, b'o', b'k', 3, b'l', b'a', b'n', 0, 0, 1, 0, 1]);
    let cut = vs.run_in(move || {
        let s = TcpStream::connect(SocketAddr::V4(ep)).ok()?;
        trickle_until_cut(s, &q)
    })?;
    let cut = cut.ok_or_else(|| anyhow::anyhow!("dns trickler never cut"))?;
    assert!(
        cut >= Duration::from_millis(RECORD_SECS * 1000 - 400)
            && cut < Duration::from_millis(RECORD_SECS * 1000 + 1500),
        "dns trickler cut after {cut:?}, deadline {RECORD_SECS} s"
    );
    Ok(())
}

#[test]
fn held_control_connections_do_not_lock_out_status() -> anyhow::Result<()> {
    if !require_root("held_control_connections_do_not_lock_out_status") {
        return Ok(());
    }
    let d = Daemon::start("[dns]\nenabled = false\n[ntp]\nenabled = false\n")?;
    let sock = d.runtime_dir().join("control.sock");
    let held: Vec<UnixStream> = (0..100)
        .filter_map(|_| UnixStream::connect(&sock).ok())
        .collect();
    assert_eq!(held.len(), 100);
    let out = d.ctl(&["status"])?;
    assert!(
        out.status.success(),
        "nsauxctl status with 100 held connections: {out:?}"
    );
    drop(held);
    Ok(())
}
