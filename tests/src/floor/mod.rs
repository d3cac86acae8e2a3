//! The *floor* server of the NTP and DNS benches (issue 16): what the kernel alone costs per
//! answer with the best batching, so a CPU-per-answer target can be judged reachable or not.
//!
//! It is the same bench binary started again (`--nsaux-floor SPEC`, see [`child_main`]) inside
//! the server's namespace, one thread, pinned like the other servers. It makes the socket the
//! way nsauxd does for that service (dual-stack `[::]` or plain IPv4, the same receive control
//! messages: pktinfo, `SO_TIMESTAMPNS`), then loops: one blocking `recvmmsg` with
//! `MSG_WAITFORONE` (no `epoll_wait`: the socket is its only work), a fixed valid answer per
//! request with no protocol work (NTP: a stratum-10 server packet echoing the origin stamp, the
//! kernel receive stamp as receive and transmit time, no clock read; DNS: the query with its
//! question kept, the answer bit set and one fixed A record), and one `sendmmsg` per batch in
//! which the replies to one peer of one length share a UDP GSO message, each leaving from the
//! address queried (pktinfo), as nsauxd's do.

use std::net::SocketAddr;
use std::process::{Child, Stdio};

use anyhow::{Context as _, bail};

use crate::netns::TestNetns;

/// The argument that makes a bench binary run as a floor server instead (see [`child_main`]).
pub const FLOOR_ARG: &str = "--nsaux-floor";

/// Datagrams per `recvmmsg`/`sendmmsg`, as nsauxd's batch.
const BATCH: usize = 32;

/// Receive slot size: the requests are small; a longer datagram is cut and not answered.
const SLOT: usize = 2048;

/// Which fixed answer the floor gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A 48-byte NTP server packet, stratum 10.
    Ntp,
    /// The query, answered with `A 10.0.0.1`.
    Dns,
}

/// How a floor server's socket is made: the options that decide the kernel's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloorSpec {
    /// The answer it gives.
    pub answer: Answer,
    /// Where it binds.
    pub addr: SocketAddr,
    /// An IPv6 socket with `IPV6_V6ONLY` off (IPv4 arrives v4-mapped), as nsauxd's NTP socket.
    pub dual_stack: bool,
    /// Receive pktinfo (nsauxd asks for it on wildcard and IPv6 sockets).
    pub pktinfo: bool,
    /// `SO_TIMESTAMPNS` receive stamps and `SO_TIMESTAMPING` report flags (nsauxd's NTP).
    pub timestamps: bool,
    /// Receive coalescing delay, µs (0: off): after a batch that was not full the server
    /// sleeps this long before the next `recvmmsg`, so across CPUs more requests arrive per
    /// wakeup (issue 16 target 5: what batching by waiting can buy at the floor).
    pub coalesce_us: u32,
}

impl FloorSpec {
    /// nsauxd's NTP socket with the default config: one dual-stack `[::]:123` socket with
    /// pktinfo and receive timestamps.
    pub fn ntp_dual_stack() -> Self {
        Self {
            answer: Answer::Ntp,
            addr: "[::]:123".parse().expect("literal address"),
            dual_stack: true,
            pktinfo: true,
            timestamps: true,
            coalesce_us: 0,
        }
    }

    /// The same service on a plain IPv4 `0.0.0.0:123` socket (the lever "AF_INET instead of
    /// the dual-stack socket" measured on the floor itself).
    pub fn ntp_v4() -> Self {
        Self {
            addr: "0.0.0.0:123".parse().expect("literal address"),
            dual_stack: false,
            ..Self::ntp_dual_stack()
        }
    }

    /// nsauxd's DNS socket with the default config: IPv4 bound to `127.0.0.53:53`, no receive
    /// control messages.
    pub fn dns_stub() -> Self {
        Self {
            answer: Answer::Dns,
            addr: "127.0.0.53:53".parse().expect("literal address"),
            dual_stack: false,
            pktinfo: false,
            timestamps: false,
            coalesce_us: 0,
        }
    }

    fn to_arg(self) -> String {
        let answer = match self.answer {
            Answer::Ntp => "ntp",
            Answer::Dns => "dns",
        };
        format!(
            "{answer},{},{},{},{},{}",
            self.addr,
            u8::from(self.dual_stack),
            u8::from(self.pktinfo),
            u8::from(self.timestamps),
            self.coalesce_us
        )
    }

    fn from_arg(s: &str) -> anyhow::Result<Self> {
        let f: Vec<&str> = s.split(',').collect();
        let [answer, addr, dual, pktinfo, ts, coalesce] = f[..] else {
            bail!("bad floor spec {s:?}");
        };
        Ok(Self {
            answer: match answer {
                "ntp" => Answer::Ntp,
                "dns" => Answer::Dns,
                _ => bail!("bad floor answer {answer:?}"),
            },
            addr: addr.parse()?,
            dual_stack: dual == "1",
            pktinfo: pktinfo == "1",
            timestamps: ts == "1",
            coalesce_us: coalesce.parse()?,
        })
    }
}

/// The extra floor rows a bench runs: `NSAUX_FLOOR_COALESCE_US` as a comma-separated list of
/// receive coalescing delays in µs (e.g. `10,25,50,100`; unset or empty: none). Each becomes a
/// row `floor +D µs` next to the plain floor (issue 16 target 5).
pub fn coalesce_delays() -> anyhow::Result<Vec<u32>> {
    let raw = std::env::var("NSAUX_FLOOR_COALESCE_US").unwrap_or_default();
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .with_context(|| format!("NSAUX_FLOOR_COALESCE_US: bad delay {s:?}"))
        })
        .filter(|d| !matches!(d, Ok(0)))
        .collect()
}

/// A running floor server (its own process, killed by pid when dropped).
#[derive(Debug)]
pub struct Floor {
    /// The server process: its pid is what a bench pins and reads CPU time from.
    pub child: Child,
}

impl Floor {
    /// Starts a floor server made as `spec` says inside `ns` (the bench binary run again).
    pub fn start(ns: &TestNetns, spec: FloorSpec) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("the bench's own binary")?;
        let child = ns
            .command(&exe.display().to_string())
            .arg(FLOOR_ARG)
            .arg(spec.to_arg())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting the floor server")?;
        Ok(Self { child })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        // Our own child, by pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Call first in a bench's `main`: when the process was started as a floor server
/// (`FLOOR_ARG SPEC` among its arguments) it serves until killed and never returns; otherwise
/// it returns at once.
pub fn child_main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == FLOOR_ARG) else {
        return Ok(());
    };
    let spec = FloorSpec::from_arg(args.get(i + 1).context("floor spec missing")?)?;
    let err = sys::serve(spec);
    eprintln!("floor server {spec:?} stopped: {err:?}");
    std::process::exit(1);
}

/// The fixed answer to `req` in `out`; its length, or `None` for a request it does not answer.
/// `rx` is the kernel's receive stamp (seconds, nanoseconds since the Unix epoch).
fn answer(kind: Answer, req: &[u8], rx: (i64, u32), out: &mut [u8; SLOT]) -> Option<usize> {
    match kind {
        Answer::Ntp => {
            if req.len() < 48 {
                return None;
            }
            let secs = u64::try_from(rx.0).unwrap_or(0) + 2_208_988_800;
            let frac = (u64::from(rx.1) << 32) / 1_000_000_000;
            let stamp = ((secs << 32) | frac).to_be_bytes();
            out[..48].fill(0);
            out[0] = 0x24; // LI 0, version 4, mode 4 (server)
            out[1] = 10; // stratum
            out[2] = req[2]; // poll
            out[3] = 0xe9; // precision 2^-23
            out[12..16].copy_from_slice(&[127, 127, 1, 1]);
            out[16..24].copy_from_slice(&stamp); // reference
            out[24..32].copy_from_slice(&req[40..48]); // origin = client's transmit
            out[32..40].copy_from_slice(&stamp); // receive
            out[40..48].copy_from_slice(&stamp); // transmit
            Some(48)
        }
        Answer::Dns => {
            // End of the (single) question: labels, then type and class.
            let mut at = 12;
            loop {
                let l = usize::from(*req.get(at)?);
                if l == 0 || l > 63 {
                    break;
                }
                at += 1 + l;
            }
            let end = at + 5;
            const RR: [u8; 16] = [0xc0, 12, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 10, 0, 0, 1];
            if req.get(at) != Some(&0) || end > req.len() || end + RR.len() > SLOT {
                return None;
            }
            out[..end].copy_from_slice(&req[..end]);
            out[2] = 0x81 | (req[2] & 0x01); // QR, opcode 0, RD copied
            out[3] = 0x80; // RA, NOERROR
            out[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]); // one answer, no others
            out[end..end + RR.len()].copy_from_slice(&RR);
            Some(end + RR.len())
        }
    }
}

#[allow(unsafe_code)]
mod sys;

#[cfg(test)]
mod tests {
    use super::{Answer, FloorSpec, SLOT, answer};

    #[test]
    fn dns_answer_keeps_id_and_question_and_adds_one_record() {
        // id 0x4242, RD, one question www.benchzone A IN, one OPT record after it.
        let mut q = vec![0x42, 0x42, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
        for l in ["www", "benchzone"] {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        let question_end = q.len();
        q.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
        let mut out = [0u8; SLOT];
        let n = answer(Answer::Dns, &q, (0, 0), &mut out).expect("answered");
        assert_eq!(&out[..2], &[0x42, 0x42]);
        assert_eq!(out[2] & 0x81, 0x81, "QR and RD");
        assert_eq!(&out[4..12], &[0, 1, 0, 1, 0, 0, 0, 0]);
        assert_eq!(&out[12..question_end], &q[12..question_end]);
        assert_eq!(&out[n - 4..n], &[10, 0, 0, 1]);
        assert!(answer(Answer::Dns, &q[..14], (0, 0), &mut out).is_none());
    }

    #[test]
    fn ntp_answer_is_a_stratum_10_server_packet_echoing_the_origin() {
        let mut q = [0u8; 48];
        q[0] = 0x23;
        q[40..48].copy_from_slice(&7u64.to_be_bytes());
        let mut out = [0u8; SLOT];
        assert_eq!(answer(Answer::Ntp, &q, (1, 0), &mut out), Some(48));
        assert_eq!((out[0] & 7, out[1]), (4, 10));
        assert_eq!(&out[24..32], &7u64.to_be_bytes());
        assert!(answer(Answer::Ntp, &q[..47], (1, 0), &mut out).is_none());
    }

    #[test]
    fn spec_survives_the_command_line() {
        for s in [
            FloorSpec::ntp_dual_stack(),
            FloorSpec::ntp_v4(),
            FloorSpec::dns_stub(),
            FloorSpec {
                coalesce_us: 25,
                ..FloorSpec::dns_stub()
            },
        ] {
            assert_eq!(FloorSpec::from_arg(&s.to_arg()).ok(), Some(s));
        }
    }
}
