//! A tiny ONC RPC client for tests and the benchmark: hand-written XDR for the portmapper calls,
//! UDP and record-marked stream transports (TCP, abstract AF_LOCAL).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// The portmapper program.
pub const PMAP: u32 = 100_000;

/// XDR encoder.
#[derive(Debug, Default, Clone)]
pub struct Xdr(pub Vec<u8>);

impl Xdr {
    /// Appends a u32.
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a string/opaque with padding.
    pub fn string(mut self, s: &[u8]) -> Self {
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(s);
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self
    }
}

/// Credentials to send.
#[derive(Debug, Clone, Copy)]
pub enum Cred {
    /// AUTH_NONE.
    None,
    /// AUTH_SYS with uid/gid.
    Sys(u32, u32),
}

/// A call message.
pub fn call(xid: u32, prog: u32, vers: u32, proc_: u32, cred: Cred, args: &[u8]) -> Vec<u8> {
    let x = Xdr::default()
        .u32(xid)
        .u32(0)
        .u32(2)
        .u32(prog)
        .u32(vers)
        .u32(proc_);
    let x = match cred {
        Cred::None => x.u32(0).u32(0),
        Cred::Sys(uid, gid) => {
            let body = Xdr::default()
                .u32(0)
                .string(b"test")
                .u32(uid)
                .u32(gid)
                .u32(0);
            x.u32(1).string(&body.0)
        }
    };
    let mut v = x.u32(0).u32(0).0;
    v.extend_from_slice(args);
    v
}

/// v3/v4 `rpcb` arguments.
pub fn rpcb(prog: u32, vers: u32, netid: &str, uaddr: &str, owner: &str) -> Vec<u8> {
    Xdr::default()
        .u32(prog)
        .u32(vers)
        .string(netid.as_bytes())
        .string(uaddr.as_bytes())
        .string(owner.as_bytes())
        .0
}

/// v2 `pmap` arguments (prot 17 = udp, 6 = tcp).
pub fn pmap(prog: u32, vers: u32, prot: u32, port: u32) -> Vec<u8> {
    Xdr::default().u32(prog).u32(vers).u32(prot).u32(port).0
}

/// A decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// MSG_ACCEPTED with accept_stat and the bytes after it.
    Accepted(u32, Vec<u8>),
    /// MSG_DENIED RPC_MISMATCH (low, high).
    RpcMismatch(u32, u32),
    /// MSG_DENIED AUTH_ERROR with auth_stat.
    AuthError(u32),
}

fn be(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
}

/// Parses a reply: (xid, reply).
pub fn parse_reply(b: &[u8]) -> Option<(u32, Reply)> {
    let xid = be(b, 0)?;
    if be(b, 4)? != 1 {
        return None;
    }
    match be(b, 8)? {
        0 => {
            let vlen = be(b, 16)? as usize;
            let at = 20 + vlen.div_ceil(4) * 4;
            let stat = be(b, at)?;
            Some((xid, Reply::Accepted(stat, b.get(at + 4..)?.to_vec())))
        }
        1 => match be(b, 12)? {
            0 => Some((xid, Reply::RpcMismatch(be(b, 16)?, be(b, 20)?))),
            1 => Some((xid, Reply::AuthError(be(b, 16)?))),
            _ => None,
        },
        _ => None,
    }
}

/// The XDR bool (or u32) result of a successful reply.
pub fn result_u32(r: &Reply) -> Option<u32> {
    match r {
        Reply::Accepted(0, body) => be(body, 0),
        _ => None,
    }
}

/// The XDR string result of a successful reply.
pub fn result_string(r: &Reply) -> Option<String> {
    match r {
        Reply::Accepted(0, body) => {
            let n = be(body, 0)? as usize;
            body.get(4..4 + n)
                .map(|s| String::from_utf8_lossy(s).into_owned())
        }
        _ => None,
    }
}

/// Frames one record (single last fragment).
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(0x7fff_ffff) | 0x8000_0000;
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Reads one record from a stream; `None` on EOF or a bad frame.
pub fn read_record(s: &mut impl Read) -> Option<Vec<u8>> {
    let mut rec = Vec::new();
    loop {
        let mut h = [0u8; 4];
        s.read_exact(&mut h).ok()?;
        let h = u32::from_be_bytes(h);
        let len = (h & 0x7fff_ffff) as usize;
        if len > 1 << 20 {
            return None;
        }
        let mut frag = vec![0u8; len];
        s.read_exact(&mut frag).ok()?;
        rec.extend_from_slice(&frag);
        if h & 0x8000_0000 != 0 {
            return Some(rec);
        }
    }
}

/// One call over a stream (TCP or AF_LOCAL): frame, send, read the reply record.
pub fn stream_call<S: Read + Write>(s: &mut S, msg: &[u8]) -> Option<Reply> {
    s.write_all(&frame(msg)).ok()?;
    let rec = read_record(s)?;
    parse_reply(&rec).map(|(_, r)| r)
}

/// Connects to an abstract AF_LOCAL socket in the current network namespace.
pub fn connect_abstract(name: &str) -> std::io::Result<std::os::unix::net::UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let s = std::os::unix::net::UnixStream::connect_addr(&addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// One call over UDP from the current namespace.
pub fn udp_call(to: SocketAddr, msg: &[u8], timeout: Duration) -> Option<Reply> {
    crate::netns::udp_exchange(to, msg, timeout)
        .ok()
        .flatten()
        .and_then(|(b, _)| parse_reply(&b).map(|(_, r)| r))
}

/// Port 111 on IPv4 loopback: where a portmapper answers inside a test namespace.
pub fn lo111() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 111))
}

/// A v4 SET (`set`) of `prog` version 1, netid `local` at `uaddr`, or an UNSET of it, over the
/// abstract socket `/run/rpcbind.sock` of `ns` (as root: owner "superuser"), waiting up to
/// `timeout` for the reply: true when answered TRUE. The registration change of the journal
/// tests.
pub fn change_local(
    ns: &crate::netns::TestNetns,
    set: bool,
    prog: u32,
    uaddr: &str,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let (proc_, args) = if set {
        (1, rpcb(prog, 1, "local", uaddr, "0"))
    } else {
        (2, rpcb(prog, 1, "", "", "0"))
    };
    let r = ns.run_in(move || {
        let mut s = connect_abstract("/run/rpcbind.sock").ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        stream_call(&mut s, &call(prog, PMAP, 4, proc_, Cred::None, &args))
    })?;
    Ok(r.as_ref().and_then(result_u32) == Some(1))
}

/// Rows of `rpcinfo -p` output as (program, version, protocol, port), in output order (the
/// header and anything else that is not a row left out).
pub fn pmap_rows(out: &str) -> Vec<(u32, u32, String, u16)> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.parse().ok()?,
                (*f.get(2)?).to_owned(),
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect()
}

/// A v2 GETPORT of the portmapper itself (UDP) to port 111 in `ns`: true when answered 111
/// within `timeout`. Shows a namespace's portmapper answers while another one is busy.
pub fn getport_answered(
    ns: &crate::netns::TestNetns,
    xid: u32,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let r = ns.run_in(move || {
        udp_call(
            lo111(),
            &call(xid, PMAP, 2, 3, Cred::None, &pmap(PMAP, 2, 17, 0)),
            timeout,
        )
    })?;
    Ok(r.as_ref().and_then(result_u32) == Some(111))
}

/// Starts stock rpcbind in `ns`, in the foreground, in a private mount namespace with a tmpfs on
/// /run (its lock, socket and state go there, never the host's). nsenter, unshare and bash all
/// exec, so the child's pid is rpcbind's: stop it by that pid.
pub fn spawn_stock_rpcbind(ns: &crate::netns::TestNetns) -> std::io::Result<std::process::Child> {
    use std::process::{Command, Stdio};
    Command::new("nsenter")
        .arg(format!("--net={}", ns.path.display()))
        .args([
            "unshare",
            "-m",
            "bash",
            "-c",
            "set -e; mount --make-rprivate /; mount -t tmpfs tmpfs /run; exec rpcbind -f",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// Waits until a portmapper in `ns` answers a v2 NULL call on UDP port 111.
pub fn wait_portmapper_udp(ns: &crate::netns::TestNetns, what: &str) -> anyhow::Result<()> {
    crate::daemon::wait_for(what, Duration::from_secs(5), || {
        ns.run_in(|| {
            udp_call(
                lo111(),
                &call(1, PMAP, 2, 0, Cred::None, &[]),
                Duration::from_millis(200),
            )
        })
        .ok()
        .flatten()
        .map(|_| ())
    })
}
