//! Probes of the three product services (portmapper NULL, DNS `c.lan` A, NTP client
//! request) inside namespaces, for benches that time when namespaces start answering: one
//! namespace polled from the calling thread, or every namespace of a directory asked at once.

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sched::{CloneFlags, setns};

/// The three product services' addresses inside a namespace and a request each: portmapper
/// NULL, DNS `c.lan` A (a configured record), NTP client request.
pub fn service_probes() -> [(SocketAddr, Vec<u8>); 3] {
    let rpc_null = [
        0u32, 0, 2, 100_000, 2, 0, 0, 0, 0, 0, // xid, CALL, rpcvers, prog, vers, proc, creds
    ]
    .iter()
    .flat_map(|w| w.to_be_bytes())
    .collect();
    let mut dns = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    dns.extend_from_slice(b"\x01c\x03lan\x00\x00\x01\x00\x01");
    let mut ntp = vec![0u8; 48];
    ntp[0] = 0x23;
    [
        (SocketAddr::from(([127, 0, 0, 1], 111)), rpc_null),
        (SocketAddr::from(([127, 0, 0, 53], 53)), dns),
        (SocketAddr::from(([127, 0, 0, 1], 123)), ntp),
    ]
}

/// Polls all three services from the calling thread's namespace until each has answered
/// (50 µs sleeps between looks).
pub fn probe_all(deadline: Instant) -> anyhow::Result<()> {
    let mut pending: Vec<(UdpSocket, SocketAddr, Vec<u8>)> = Vec::new();
    for (to, q) in service_probes() {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_nonblocking(true)?;
        pending.push((sock, to, q));
    }
    let mut buf = [0u8; 1024];
    while !pending.is_empty() {
        for (sock, to, q) in &pending {
            sock.send_to(q, *to)?;
        }
        for _ in 0..4 {
            std::thread::sleep(Duration::from_micros(50));
            pending.retain(|(sock, _, _)| sock.recv_from(&mut buf).is_err());
            if pending.is_empty() {
                break;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "namespace not served within 5 s");
    }
    Ok(())
}

/// Probe sockets for the three services inside each of many namespaces (made by one thread
/// visiting them), to ask all namespaces at once.
#[derive(Debug)]
pub struct ProbeSet {
    probes: Vec<(UdpSocket, SocketAddr, Vec<u8>)>,
}

impl ProbeSet {
    /// One thread enters each namespace of `dir` named in `names` and makes its three probe
    /// sockets there, so the sockets belong to those namespaces.
    pub fn open(dir: &Path, names: &[String]) -> anyhow::Result<Self> {
        let (dir, names) = (dir.to_path_buf(), names.to_vec());
        std::thread::spawn(move || -> anyhow::Result<Self> {
            let home = File::open("/proc/thread-self/ns/net")?;
            let mut probes = Vec::with_capacity(names.len() * 3);
            for name in names {
                let ns = File::open(dir.join(&name))?;
                setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).context("setns")?;
                let made = (|| -> anyhow::Result<()> {
                    for (to, q) in service_probes() {
                        let sock = UdpSocket::bind("127.0.0.1:0")?;
                        sock.set_nonblocking(true)?;
                        probes.push((sock, to, q));
                    }
                    Ok(())
                })();
                setns(home.as_fd(), CloneFlags::CLONE_NEWNET).context("setns home")?;
                made.with_context(|| name.clone())?;
            }
            Ok(Self { probes })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
    }

    /// Sends every query, again every 5 ms to the sockets not yet answered, until all are.
    pub fn until_answered(mut self, deadline: Instant) -> anyhow::Result<()> {
        let mut buf = [0u8; 1024];
        while !self.probes.is_empty() {
            for (sock, to, q) in &self.probes {
                sock.send_to(q, *to)?;
            }
            let resend = Instant::now() + Duration::from_millis(5);
            while !self.probes.is_empty() && Instant::now() < resend {
                self.probes
                    .retain(|(sock, _, _)| sock.recv_from(&mut buf).is_err());
                std::thread::yield_now();
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} probes unanswered",
                self.probes.len()
            );
        }
        Ok(())
    }
}
