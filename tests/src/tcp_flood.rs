//! A cheap closed-loop DNS-over-TCP load generator for the benchmarks.
//!
//! Why a second generator: over UDP on loopback the sender pays the delivery of every
//! request into the server's socket, so the UDP generator ([`crate::flood`]) costs about as
//! much CPU per request as the server per answer, and on a 2-CPU machine the two fill it
//! between them whatever the server's `worker_threads`. Over TCP with pipelining (RFC 7766) a
//! whole window of queries leaves in one `write` and many answers arrive per `read`, while the
//! server still reads, parses and answers each query on its own: a load that leaves the server
//! most of the machine, so a second worker has a CPU to use.
//!
//! Each connection keeps `window` queries in flight (refilled as answers come, one `write`
//! per refill); one thread drives every connection from `poll`. Bounded in time and in
//! requests; it reports its own CPU like [`crate::flood::Flood`].

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::flood::{FloodReport, thread_cpu, thread_run_delay};
use crate::netns::in_netns_file;

/// What to ask where, how hard and for how long.
#[derive(Debug, Clone)]
pub struct TcpFlood {
    /// The server's address (the same in every namespace).
    pub target: SocketAddr,
    /// The namespaces (bound namespace files) to connect from, each with its own connections.
    pub namespaces: Vec<PathBuf>,
    /// Connections per namespace.
    pub conns_per_ns: usize,
    /// Queries in flight per connection.
    pub window: usize,
    /// How long to run.
    pub time: Duration,
    /// Requests after which it stops even if `time` has not passed.
    pub max_requests: u64,
    /// Request number → DNS message (without the two-byte length prefix).
    pub request: fn(u64) -> Vec<u8>,
}

/// One pipelined connection.
struct Conn {
    sock: TcpStream,
    in_flight: usize,
    /// Bytes written by the generator but not yet taken by the kernel.
    out: Vec<u8>,
    /// Bytes read but not yet parsed into answers (from `at`).
    inbuf: Vec<u8>,
    at: usize,
    open: bool,
}

impl TcpFlood {
    /// Runs the flood to its end on the calling thread.
    pub fn run(&self) -> anyhow::Result<FloodReport> {
        let mut conns = Vec::new();
        for ns in &self.namespaces {
            let (target, k) = (self.target, self.conns_per_ns);
            let socks = in_netns_file(ns, move || -> anyhow::Result<Vec<TcpStream>> {
                (0..k)
                    .map(|_| {
                        let s = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
                        s.set_nodelay(true)?;
                        s.set_nonblocking(true)?;
                        Ok(s)
                    })
                    .collect()
            })??;
            conns.extend(socks.into_iter().map(|sock| Conn {
                sock,
                in_flight: 0,
                out: Vec::new(),
                inbuf: Vec::with_capacity(1 << 16),
                at: 0,
                open: true,
            }));
        }
        let cpu0 = thread_cpu()?;
        let waited0 = thread_run_delay();
        let started = Instant::now();
        let mut r = FloodReport::default();
        let mut buf = vec![0u8; 1 << 16];
        while started.elapsed() < self.time && r.sent < self.max_requests {
            for c in conns.iter_mut().filter(|c| c.open) {
                let room = self.window.saturating_sub(c.in_flight);
                let room = room.min(usize::try_from(self.max_requests - r.sent).unwrap_or(room));
                if room > 0 && c.out.is_empty() {
                    for i in 0..room as u64 {
                        let q = (self.request)(r.sent + i);
                        let len = u16::try_from(q.len()).unwrap_or(u16::MAX);
                        c.out.extend_from_slice(&len.to_be_bytes());
                        c.out.extend_from_slice(&q);
                    }
                    c.in_flight += room;
                    r.sent += room as u64;
                }
                flush(c);
            }
            let mut fds: Vec<PollFd<'_>> = conns
                .iter()
                .filter(|c| c.open)
                .map(|c| {
                    let mut ev = PollFlags::POLLIN;
                    if !c.out.is_empty() {
                        ev |= PollFlags::POLLOUT;
                    }
                    PollFd::new(c.sock.as_fd(), ev)
                })
                .collect();
            if fds.is_empty() {
                break;
            }
            poll(&mut fds, PollTimeout::from(10u8))?;
            let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
            drop(fds);
            for (c, ready) in conns.iter_mut().filter(|c| c.open).zip(ready) {
                if ready {
                    let got = read_answers(c, &mut buf);
                    c.in_flight = c.in_flight.saturating_sub(got);
                    r.answers += got as u64;
                    if !c.open {
                        // Closed by the server: what was in flight is lost.
                        r.lost += c.in_flight as u64;
                        c.in_flight = 0;
                    }
                }
            }
        }
        r.elapsed = started.elapsed();
        r.cpu = thread_cpu()?.saturating_sub(cpu0);
        r.waited = thread_run_delay().saturating_sub(waited0);
        Ok(r)
    }
}

/// Writes what the kernel takes of the connection's pending bytes.
fn flush(c: &mut Conn) {
    while !c.out.is_empty() {
        match c.sock.write(&c.out) {
            Ok(0) => {
                c.open = false;
                return;
            }
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(_) => {
                c.open = false;
                return;
            }
        }
    }
}

/// Reads what is there and counts the whole answers in it (two-byte length framing).
fn read_answers(c: &mut Conn, buf: &mut [u8]) -> usize {
    loop {
        match c.sock.read(buf) {
            Ok(0) => {
                c.open = false;
                break;
            }
            Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => {
                c.open = false;
                break;
            }
        }
    }
    let mut got = 0;
    while let Some(len) = c
        .inbuf
        .get(c.at..c.at + 2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    {
        if c.inbuf.len() < c.at + 2 + len {
            break;
        }
        c.at += 2 + len;
        got += 1;
    }
    // Keep only the unparsed tail.
    c.inbuf.drain(..c.at);
    c.at = 0;
    got
}
