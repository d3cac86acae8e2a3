//! The portmapper comparison: one scripted sequence of calls — every procedure of v2, v3 and
//! v4 with edge arguments, over UDP, TCP, IPv6 and AF_LOCAL, from loopback and from a remote
//! namespace, plus TCP record edges — played against nsauxd and against stock rpcbind (each
//! with a fresh table), replies compared call by call.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::env::require;
use nsaux_tests::netns::{TestNetns, veth};
use nsaux_tests::rpc::{
    Cred, PMAP, Reply, Xdr, call, connect_abstract, frame, parse_reply, pmap, read_record, rpcb,
    spawn_stock_rpcbind, udp_call, wait_portmapper_udp,
};

use super::judged::{Diff, check};

/// How a call travels.
#[derive(Debug, Clone, Copy)]
enum Via {
    Udp,
    Tcp,
    Udp6,
    Tcp6,
    Local,
    /// UDP from the remote namespace to the server's veth address.
    RemoteUdp,
    /// TCP from the remote namespace.
    RemoteTcp,
}

/// How a reply body is compared.
#[derive(Debug, Clone, Copy)]
enum Body {
    /// Byte for byte.
    Raw,
    /// Only the accept status (GETTIME, GETSTAT: clocks and counters).
    StatOnly,
    /// A v2 DUMP list, the portmapper's own entries left out.
    Dump2,
    /// A v3/v4 DUMP list, the portmapper's own entries left out.
    Dump3,
    /// An XDR string, the server's own addresses replaced by a placeholder.
    Addr,
}

/// One call of the script.
struct Step {
    id: &'static str,
    via: Via,
    msg: Vec<u8>,
    body: Body,
}

const PROG: u32 = 0x2000_0101;

fn st(id: &'static str, via: Via, vers: u32, proc_: u32, args: Vec<u8>, body: Body) -> Step {
    Step {
        id,
        via,
        msg: call(0x5151, PMAP, vers, proc_, Cred::None, &args),
        body,
    }
}

/// The script. Order matters: registrations made early are seen by later lookups and dumps.
fn script() -> Vec<Step> {
    use Body::{Addr, Dump2, Dump3, Raw, StatOnly};
    use Via::{Local, RemoteTcp, RemoteUdp, Tcp, Tcp6, Udp, Udp6};
    let callit = |prog| Xdr::default().u32(prog).u32(1).u32(0).string(b"").0;
    let mut v = vec![
        st("v2-null", Udp, 2, 0, vec![], Raw),
        st("v3-null-tcp", Tcp, 3, 0, vec![], Raw),
        st("v4-null-udp6", Udp6, 4, 0, vec![], Raw),
        st("v4-null-tcp6", Tcp6, 4, 0, vec![], Raw),
        st("v4-null-local", Local, 4, 0, vec![], Raw),
        st("v2-set", Udp, 2, 1, pmap(PROG, 1, 17, 4001), Raw),
        st("v2-set-again", Udp, 2, 1, pmap(PROG, 1, 17, 4001), Raw),
        st("v2-set-conflict", Udp, 2, 1, pmap(PROG, 1, 17, 4002), Raw),
        st("v2-set-tcp", Tcp, 2, 1, pmap(PROG, 2, 6, 4003), Raw),
        st("v2-set-badprot", Udp, 2, 1, pmap(PROG, 3, 99, 4004), Raw),
        st(
            "v2-set-short",
            Udp,
            2,
            1,
            pmap(PROG, 1, 17, 1)[..8].to_vec(),
            Raw,
        ),
        st("v2-getport", Udp, 2, 3, pmap(PROG, 1, 17, 0), Raw),
        st("v2-getport-othervers", Udp, 2, 3, pmap(PROG, 9, 17, 0), Raw),
        st("v2-getport-tcp", Tcp, 2, 3, pmap(PROG, 2, 6, 0), Raw),
        st("v2-getport-none", Udp, 2, 3, pmap(PROG + 1, 1, 17, 0), Raw),
        st("v2-getport-badprot", Udp, 2, 3, pmap(PROG, 1, 99, 0), Raw),
        st(
            "v3-set-udp",
            Udp,
            3,
            1,
            rpcb(PROG, 5, "udp", "0.0.0.0.15.162", "x"),
            Raw,
        ),
        st(
            "v3-set-udp6",
            Udp,
            3,
            1,
            rpcb(PROG, 5, "udp6", "::.15.163", "x"),
            Raw,
        ),
        st(
            "v3-set-tcp-v6addr",
            Udp,
            3,
            1,
            rpcb(PROG, 6, "tcp", "::1.15.164", "x"),
            Raw,
        ),
        st(
            "v3-set-upper-netid",
            Udp,
            3,
            1,
            rpcb(PROG, 7, "UDP", "0.0.0.0.15.165", "x"),
            Raw,
        ),
        st(
            "v3-set-badaddr",
            Udp,
            3,
            1,
            rpcb(PROG, 8, "udp", "1.2.3", "x"),
            Raw,
        ),
        st(
            "v4-set-local",
            Local,
            4,
            1,
            rpcb(PROG, 9, "local", "/run/x.sock", "x"),
            Raw,
        ),
        st("v3-getaddr", Udp, 3, 3, rpcb(PROG, 5, "udp", "", ""), Addr),
        st(
            "v3-getaddr-none",
            Udp,
            3,
            3,
            rpcb(PROG + 1, 1, "udp", "", ""),
            Addr,
        ),
        st(
            "v3-getaddr-udp6",
            Udp6,
            3,
            3,
            rpcb(PROG, 5, "udp6", "", ""),
            Addr,
        ),
        st(
            "v4-getversaddr",
            Udp,
            4,
            9,
            rpcb(PROG, 5, "udp", "", ""),
            Addr,
        ),
        st(
            "v4-getversaddr-miss",
            Udp,
            4,
            9,
            rpcb(PROG, 4, "udp", "", ""),
            Addr,
        ),
        st(
            "v4-getaddrlist",
            Tcp,
            4,
            11,
            rpcb(PROG, 5, "udp", "", ""),
            Raw,
        ),
        st("v2-getport-v3entry", Udp, 2, 3, pmap(PROG, 5, 17, 0), Raw),
        st("v2-getport-v6entry", Udp, 2, 3, pmap(PROG, 6, 6, 0), Raw),
        st("v2-getport-upper", Udp, 2, 3, pmap(PROG, 7, 17, 0), Raw),
        st("v2-dump", Tcp, 2, 4, vec![], Dump2),
        st("v2-dump-udp", Udp, 2, 4, vec![], Dump2),
        st("v3-dump", Tcp, 3, 4, vec![], Dump3),
        st("v4-dump-local", Local, 4, 4, vec![], Dump3),
        st("v3-gettime", Udp, 3, 6, vec![], StatOnly),
        st(
            "v3-uaddr2taddr",
            Udp,
            3,
            7,
            Xdr::default().string(b"127.0.0.1.0.111").0,
            Raw,
        ),
        st(
            "v3-taddr2uaddr",
            Udp,
            3,
            8,
            Xdr::default()
                .u32(16)
                .u32(16)
                .string(&[0, 2, 0, 111, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0])
                .0,
            Raw,
        ),
        st("v4-getstat", Tcp, 4, 12, vec![], StatOnly),
        st("v2-callit-unregistered", Tcp, 2, 5, callit(PROG + 2), Raw),
        st("v3-callit-unregistered", Tcp, 3, 5, callit(PROG + 2), Raw),
        st(
            "v4-indirect-unregistered",
            Tcp,
            4,
            10,
            callit(PROG + 2),
            Raw,
        ),
        st("v2-badproc", Udp, 2, 9, vec![], Raw),
        st("v3-badproc", Udp, 3, 42, vec![], Raw),
        st("v5-progmismatch", Udp, 5, 0, vec![], Raw),
        st("v3-getaddr-short", Udp, 3, 3, vec![0, 0, 0, 1], Raw),
        st(
            "remote-v2-getport",
            RemoteUdp,
            2,
            3,
            pmap(PROG, 1, 17, 0),
            Raw,
        ),
        st(
            "remote-v2-set",
            RemoteUdp,
            2,
            1,
            pmap(PROG, 11, 17, 4011),
            Raw,
        ),
        st(
            "remote-v3-set",
            RemoteTcp,
            3,
            1,
            rpcb(PROG, 12, "udp", "0.0.0.0.15.170", "x"),
            Raw,
        ),
        st(
            "remote-v3-getaddr",
            RemoteUdp,
            3,
            3,
            rpcb(PROG, 5, "udp", "", ""),
            Addr,
        ),
        st("remote-v2-dump-tcp", RemoteTcp, 2, 4, vec![], Dump2),
        st("v3-unset", Udp, 3, 2, rpcb(PROG, 5, "", "", "x"), Raw),
        st("v2-unset", Udp, 2, 2, pmap(PROG, 1, 17, 0), Raw),
        st("v3-dump-after", Tcp, 3, 4, vec![], Dump3),
    ];
    let mut rpcvers3 = call(0x5151, PMAP, 2, 0, Cred::None, &[]);
    rpcvers3[8..12].copy_from_slice(&3u32.to_be_bytes());
    v.push(Step {
        id: "rpcvers3",
        via: Udp,
        msg: rpcvers3,
        body: Raw,
    });
    v.push(Step {
        id: "v2-null-authsys",
        via: Tcp,
        msg: call(0x5151, PMAP, 2, 0, Cred::Sys(1000, 1000), &[]),
        body: Raw,
    });
    v
}

/// A portmapper under test: its namespace, its veth address, how to reach AF_LOCAL.
struct Target {
    ns: TestNetns,
    remote_addr: SocketAddr,
    local: Local,
}

#[derive(Clone)]
enum Local {
    Abstract,
    Path(PathBuf),
}

fn stream_exchange<S: std::io::Read + std::io::Write>(s: &mut S, bytes: &[u8]) -> Option<Vec<u8>> {
    s.write_all(bytes).ok()?;
    read_record(s)
}

/// Sends raw stream bytes (already framed) and reads one record back.
fn over_stream(via: Via, local: &Local, to: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let wait = Duration::from_millis(1500);
    match via {
        Via::Local => {
            let mut s = match local {
                Local::Abstract => connect_abstract("/run/rpcbind.sock").ok()?,
                Local::Path(p) => UnixStream::connect(p).ok()?,
            };
            s.set_read_timeout(Some(wait)).ok()?;
            stream_exchange(&mut s, bytes)
        }
        _ => {
            let mut s = TcpStream::connect_timeout(&to, wait).ok()?;
            s.set_read_timeout(Some(wait)).ok()?;
            stream_exchange(&mut s, bytes)
        }
    }
}

fn send(step: &Step, local: &Local, remote: SocketAddr) -> Option<Reply> {
    let lo4: SocketAddr = "127.0.0.1:111".parse().ok()?;
    let lo6: SocketAddr = "[::1]:111".parse().ok()?;
    let wait = Duration::from_millis(1500);
    let rec = match step.via {
        Via::Udp | Via::Udp6 | Via::RemoteUdp => {
            let to = match step.via {
                Via::Udp => lo4,
                Via::Udp6 => lo6,
                _ => remote,
            };
            return udp_call(to, &step.msg, wait);
        }
        Via::Tcp => over_stream(step.via, local, lo4, &frame(&step.msg))?,
        Via::Tcp6 => over_stream(step.via, local, lo6, &frame(&step.msg))?,
        Via::RemoteTcp => over_stream(step.via, local, remote, &frame(&step.msg))?,
        Via::Local => over_stream(step.via, local, lo4, &frame(&step.msg))?,
    };
    parse_reply(&rec).map(|(_, r)| r)
}

struct XdrRead<'a>(&'a [u8]);

impl XdrRead<'_> {
    fn u32(&mut self) -> Option<u32> {
        let (h, t) = self.0.split_first_chunk::<4>()?;
        self.0 = t;
        Some(u32::from_be_bytes(*h))
    }
    fn string(&mut self) -> Option<String> {
        let n = usize::try_from(self.u32()?).ok()?;
        let s = String::from_utf8_lossy(self.0.get(..n)?).into_owned();
        self.0 = self.0.get(n.div_ceil(4) * 4..)?;
        Some(s)
    }
}

/// A DUMP list without the portmapper's own (program 100000) entries.
fn dump(body: &[u8], v3: bool) -> Option<String> {
    let mut r = XdrRead(body);
    let mut out = Vec::new();
    while r.u32()? == 1 {
        let (prog, vers) = (r.u32()?, r.u32()?);
        let rest = if v3 {
            let (netid, addr, owner) = (r.string()?, r.string()?, r.string()?);
            format!("{netid} {addr} {owner}")
        } else {
            let (prot, port) = (r.u32()?, r.u32()?);
            format!("{prot} {port}")
        };
        if prog != PMAP {
            out.push(format!("{prog:x}.{vers} {rest}"));
        }
    }
    Some(out.join(" | "))
}

/// What is compared of one reply.
fn describe(reply: Option<&Reply>, body: Body, server: &str) -> String {
    match reply {
        None => "no reply".to_owned(),
        Some(Reply::RpcMismatch(lo, hi)) => format!("RPC_MISMATCH {lo}-{hi}"),
        Some(Reply::AuthError(s)) => format!("AUTH_ERROR {s}"),
        Some(Reply::Accepted(stat, b)) if *stat != 0 || matches!(body, Body::StatOnly) => {
            if *stat == 2 {
                // PROG_MISMATCH carries the low and high versions.
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                return format!("accept_stat {stat} {hex}");
            }
            format!("accept_stat {stat}")
        }
        Some(Reply::Accepted(_, b)) => {
            let text = match body {
                Body::Raw | Body::StatOnly => Some(b.iter().map(|x| format!("{x:02x}")).collect()),
                Body::Dump2 => dump(b, false),
                Body::Dump3 => dump(b, true),
                Body::Addr => XdrRead(b).string().map(|s| s.replace(server, "SERVER")),
            };
            text.unwrap_or_else(|| format!("undecodable {} bytes", b.len()))
        }
    }
}

/// Plays the script against one target; returns one description per step, then the record
/// edge cases.
fn play(t: &Target, client: &TestNetns, server: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for step in script() {
        let local = t.local.clone();
        let remote = t.remote_addr;
        let body = step.body;
        let reply = match step.via {
            Via::RemoteUdp | Via::RemoteTcp => {
                client.run_in(move || send(&step, &local, remote))?
            }
            _ => t.ns.run_in(move || send(&step, &local, remote))?,
        };
        out.push(describe(reply.as_ref(), body, server));
    }
    // TCP record edges: a call in two fragments, a call written in two pieces, an empty
    // first fragment.
    let null = call(0x6161, PMAP, 2, 0, Cred::None, &[]);
    let mut two = u32::try_from(8)?.to_be_bytes().to_vec();
    two.extend_from_slice(&null[..8]);
    two.extend_from_slice(&(u32::try_from(null.len() - 8)? | 0x8000_0000).to_be_bytes());
    two.extend_from_slice(&null[8..]);
    let mut empty_first = 0u32.to_be_bytes().to_vec();
    empty_first.extend_from_slice(&frame(&null));
    for bytes in [two, empty_first] {
        let local = t.local.clone();
        let r = t.ns.run_in(move || {
            let to: SocketAddr = "127.0.0.1:111".parse().ok()?;
            over_stream(Via::Tcp, &local, to, &bytes).and_then(|r| parse_reply(&r).map(|x| x.1))
        })?;
        out.push(describe(r.as_ref(), Body::Raw, server));
    }
    let split = frame(&null);
    let r = t.ns.run_in(move || {
        let mut s = TcpStream::connect("127.0.0.1:111").ok()?;
        s.set_read_timeout(Some(Duration::from_millis(1500))).ok()?;
        s.write_all(&split[..6]).ok()?;
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(&split[6..]).ok()?;
        read_record(&mut s).and_then(|r| parse_reply(&r).map(|x| x.1))
    })?;
    out.push(describe(r.as_ref(), Body::Raw, server));
    Ok(out)
}

/// Stock rpcbind as a child, stopped by pid when dropped.
struct Stock(std::process::Child);

impl Drop for Stock {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

#[test]
fn portmapper_matches_stock_rpcbind() -> anyhow::Result<()> {
    if !require("portmapper_matches_stock_rpcbind", &["rpcbind"]) {
        return Ok(());
    }
    let d = Daemon::start("[ntp]\nenabled = false\n\n[rpcbind]\nenabled = true\n")?;
    let nsdir = tempfile::tempdir()?;
    let ours = d.netns("cfpm")?;
    let theirs = TestNetns::create(nsdir.path(), "cfpmstock")?;
    let client = TestNetns::create(nsdir.path(), "cfpmclient")?;
    veth(
        &client,
        "cfc1",
        "10.132.1.1/24",
        &ours,
        "cfs",
        "10.132.1.2/24",
    )?;
    veth(
        &client,
        "cfc2",
        "10.132.2.1/24",
        &theirs,
        "cfs",
        "10.132.2.2/24",
    )?;
    let stock = Stock(spawn_stock_rpcbind(&theirs)?);
    wait_portmapper_udp(&theirs, "stock rpcbind up")?;
    wait_portmapper_udp(&ours, "nsauxd portmapper up")?;
    let sock = PathBuf::from(format!("/proc/{}/root/run/rpcbind.sock", stock.0.id()));
    wait_for("stock rpcbind socket", Duration::from_secs(5), || {
        sock.exists().then_some(())
    })?;
    let ours = Target {
        ns: ours,
        remote_addr: "10.132.1.2:111".parse()?,
        local: Local::Abstract,
    };
    let theirs = Target {
        ns: theirs,
        remote_addr: "10.132.2.2:111".parse()?,
        local: Local::Path(sock),
    };
    let a = play(&ours, &client, "10.132.1.2")?;
    let b = play(&theirs, &client, "10.132.2.2")?;
    let ids: Vec<&str> = script()
        .iter()
        .map(|s| s.id)
        .chain([
            "tcp-two-fragments",
            "tcp-empty-first-fragment",
            "tcp-split-write",
        ])
        .collect();
    let diffs: Vec<Diff> = ids
        .iter()
        .zip(a.iter().zip(&b))
        .filter(|(_, (x, y))| x != y)
        .map(|(id, (x, y))| Diff {
            id: format!("rpcbind/{id}/reply"),
            nsauxd: x.clone(),
            stock: y.clone(),
        })
        .collect();
    if std::env::var_os("NSAUX_CONFORMANCE_VERBOSE").is_some() {
        for (id, (x, y)) in ids.iter().zip(a.iter().zip(&b)) {
            eprintln!("{id}: nsauxd {x:?} stock {y:?}");
        }
    }
    drop(stock);
    check("rpcbind", &diffs)
}
