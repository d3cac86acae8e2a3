//! A cheap closed-loop UDP load generator for the benchmarks.
//!
//! A generator that pays one `send` and one `recv` system call per request (the std
//! `UdpSocket` way) costs about as much CPU as the server it loads, so on a small machine it
//! holds a core of its own and the server can never be shown using more than the rest. This one
//! sends each burst of equal-length requests as one UDP GSO `sendmsg` (`UDP_SEGMENT`: the server
//! still receives separate datagrams) and reads the answers with `UDP_GRO` on, so a run of equal
//! replies the server sent as one GSO packet arrives in one `recvmsg`. Many client sockets
//! (several per namespace, each its own port, so the server sees many peers) are driven by a few
//! threads that wait in `poll`, each socket with its own window of requests in flight.
//!
//! Bounded in time and in requests ([`Flood::time`], [`Flood::max_requests`]); it reports the
//! CPU its own threads used, so a bench can print the generator's cost next to the server's.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg, setsockopt, sockopt,
};

use crate::netns::in_netns_file;

/// Most segments the kernel accepts in one UDP GSO send (`UDP_MAX_SEGMENTS`).
pub const MAX_BURST: usize = 64;

/// How long a socket may wait for any answer before its window counts as lost and is
/// refilled (a request or answer dropped by a full queue would otherwise stall it).
const STALL: Duration = Duration::from_millis(200);

/// What to send where, how hard and for how long.
#[derive(Debug, Clone)]
pub struct Flood {
    /// The server's address (the same in every namespace).
    pub target: SocketAddr,
    /// The namespaces (bound namespace files) to flood from, each with its own client sockets.
    pub namespaces: Vec<PathBuf>,
    /// Client sockets per namespace (distinct ports).
    pub sockets_per_ns: usize,
    /// Requests in flight per socket.
    pub window: usize,
    /// Requests per GSO send (at most [`MAX_BURST`]).
    pub burst: usize,
    /// Generator threads; the sockets are dealt out between them.
    pub threads: usize,
    /// How long to run.
    pub time: Duration,
    /// Requests after which it stops even if `time` has not passed.
    pub max_requests: u64,
    /// Request number → datagram. Requests of one burst must be of equal length to leave as
    /// one GSO send (others are sent one by one).
    pub request: fn(u64) -> Vec<u8>,
}

/// What a flood did.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloodReport {
    /// Requests sent.
    pub sent: u64,
    /// Answers received.
    pub answers: u64,
    /// Requests given up as lost (a socket's window after [`STALL`] without an answer).
    pub lost: u64,
    /// Wall time from the first send to the end.
    pub elapsed: Duration,
    /// CPU time (user + system) of the generator threads.
    pub cpu: Duration,
    /// Time the generator threads were runnable but waiting for a CPU (`schedstat` run delay):
    /// on a loaded machine, says whether the generator or the machine set the pace.
    pub waited: Duration,
}

impl FloodReport {
    /// Answers per second.
    pub fn rate(&self) -> f64 {
        self.answers as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The generator's CPU per request sent, in µs.
    pub fn cpu_us_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.sent.max(1) as f64
    }
}

/// One client socket and its window.
#[derive(Debug)]
struct Client {
    sock: UdpSocket,
    in_flight: usize,
    last_answer: Instant,
}

impl Flood {
    /// Runs the flood to its end and adds up what every thread did.
    pub fn run(&self) -> anyhow::Result<FloodReport> {
        anyhow::ensure!(
            (1..=MAX_BURST).contains(&self.burst),
            "burst must be 1..={MAX_BURST}"
        );
        let mut clients = Vec::new();
        for ns in &self.namespaces {
            let (target, k) = (self.target, self.sockets_per_ns);
            clients.extend(in_netns_file(ns, move || open_clients(target, k))??);
        }
        let threads = self.threads.clamp(1, clients.len().max(1));
        let mut shares: Vec<Vec<Client>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, c) in clients.into_iter().enumerate() {
            shares[i % threads].push(c);
        }
        let started = Instant::now();
        let per_thread = self.max_requests.div_ceil(threads as u64);
        let reports = std::thread::scope(|s| {
            let handles: Vec<_> = shares
                .into_iter()
                .map(|mine| s.spawn(move || self.drive(mine, started, per_thread)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("flood thread panicked"))?
                })
                .collect::<anyhow::Result<Vec<FloodReport>>>()
        })?;
        let mut total = FloodReport {
            elapsed: started.elapsed(),
            ..FloodReport::default()
        };
        for r in reports {
            total.sent += r.sent;
            total.answers += r.answers;
            total.lost += r.lost;
            total.cpu += r.cpu;
            total.waited += r.waited;
        }
        Ok(total)
    }

    /// One generator thread: keeps every window of its clients full until the end.
    fn drive(
        &self,
        mut clients: Vec<Client>,
        started: Instant,
        max_requests: u64,
    ) -> anyhow::Result<FloodReport> {
        let cpu0 = thread_cpu()?;
        let waited0 = thread_run_delay();
        let mut r = FloodReport::default();
        let mut buf = vec![0u8; 65_536];
        let mut cmsg = nix::cmsg_space!(i32);
        while started.elapsed() < self.time && r.sent < max_requests {
            for c in &mut clients {
                let room = self.window.saturating_sub(c.in_flight);
                let room = room.min(usize::try_from(max_requests - r.sent).unwrap_or(room));
                if room > 0 {
                    let n = self.send(&c.sock, r.sent, room);
                    c.in_flight += n;
                    r.sent += n as u64;
                }
            }
            let mut fds: Vec<PollFd<'_>> = clients
                .iter()
                .map(|c| PollFd::new(c.sock.as_fd(), PollFlags::POLLIN))
                .collect();
            poll(&mut fds, PollTimeout::from(10u8))?;
            let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
            drop(fds);
            let now = Instant::now();
            for (c, ready) in clients.iter_mut().zip(ready) {
                if ready {
                    let got = drain(&c.sock, &mut buf, &mut cmsg);
                    if got > 0 {
                        c.in_flight = c.in_flight.saturating_sub(got);
                        c.last_answer = now;
                        r.answers += got as u64;
                    }
                }
                if c.in_flight > 0 && now.duration_since(c.last_answer) > STALL {
                    r.lost += c.in_flight as u64;
                    c.in_flight = 0;
                    c.last_answer = now;
                }
            }
        }
        r.cpu = thread_cpu()?.saturating_sub(cpu0);
        r.waited = thread_run_delay().saturating_sub(waited0);
        Ok(r)
    }

    /// Sends up to `room` requests numbered from `first` in GSO bursts; returns how many left.
    fn send(&self, sock: &UdpSocket, first: u64, room: usize) -> usize {
        let mut sent = 0;
        while sent < room {
            let k = (room - sent).min(self.burst);
            let reqs: Vec<Vec<u8>> = (0..k as u64)
                .map(|i| (self.request)(first + sent as u64 + i))
                .collect();
            let len = reqs[0].len();
            let gso = k > 1 && reqs.iter().all(|q| q.len() == len);
            let ok = match gso.then(|| {
                let seg = u16::try_from(len).unwrap_or(u16::MAX);
                sendmsg::<()>(
                    sock.as_raw_fd(),
                    &[IoSlice::new(&reqs.concat())],
                    &[ControlMessage::UdpGsoSegments(&seg)],
                    MsgFlags::MSG_DONTWAIT,
                    None,
                )
            }) {
                Some(Ok(_)) => k,
                // A full socket buffer: try again after the next answers.
                Some(Err(Errno::EAGAIN | Errno::ENOBUFS)) => 0,
                // No GSO here (or lengths differ): one datagram per call.
                _ => reqs.iter().take_while(|q| sock.send(q).is_ok()).count(),
            };
            sent += ok;
            if ok < k {
                break;
            }
        }
        sent
    }
}

/// `k` non-blocking client sockets in the current namespace, connected to `target`, with
/// `UDP_GRO` on and room for a full window of answers.
fn open_clients(target: SocketAddr, k: usize) -> anyhow::Result<Vec<Client>> {
    (0..k)
        .map(|_| {
            let local: SocketAddr = if target.is_ipv4() {
                "127.0.0.1:0".parse()?
            } else {
                "[::1]:0".parse()?
            };
            let sock = UdpSocket::bind(local)?;
            setsockopt(&sock, sockopt::RcvBufForce, &(4 << 20))?;
            setsockopt(&sock, sockopt::UdpGroSegment, &true)?;
            sock.connect(target)?;
            sock.set_nonblocking(true)?;
            Ok(Client {
                sock,
                in_flight: 0,
                last_answer: Instant::now(),
            })
        })
        .collect()
}

/// Reads every queued answer; a GRO read holding several counts each segment.
fn drain(sock: &UdpSocket, buf: &mut [u8], cmsg: &mut [u8]) -> usize {
    let mut got = 0;
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let Ok(msg) = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(cmsg),
            MsgFlags::MSG_DONTWAIT,
        ) else {
            return got;
        };
        let seg = msg
            .cmsgs()
            .ok()
            .and_then(|mut it| {
                it.find_map(|c| match c {
                    ControlMessageOwned::UdpGroSegments(s) => usize::try_from(s).ok(),
                    _ => None,
                })
            })
            .filter(|&s| s > 0);
        got += match seg {
            Some(s) => msg.bytes.div_ceil(s),
            None => 1,
        };
    }
}

/// CPU time (user + system) of the calling thread.
pub(crate) fn thread_cpu() -> anyhow::Result<Duration> {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_THREAD)?;
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::new(
            u64::try_from(t.tv_sec()).unwrap_or(0),
            u32::try_from(t.tv_usec()).unwrap_or(0) * 1000,
        )
    };
    Ok(tv(u.user_time()) + tv(u.system_time()))
}

/// How long the calling thread has been runnable but not running (second field of
/// `/proc/thread-self/schedstat`; zero when the kernel does not keep it).
pub(crate) fn thread_run_delay() -> Duration {
    Duration::from_nanos(
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0),
    )
}
