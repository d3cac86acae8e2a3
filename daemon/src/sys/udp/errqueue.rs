//! Kernel transmit timestamps of sent datagrams, read back from the socket's error queue.
//!
//! Why: NTP's interleaved mode sends, in its next reply, when the previous reply really left;
//! the kernel knows that better than the daemon (`SOF_TIMESTAMPING_TX_SOFTWARE` stamps the
//! packet as the driver takes it, after the stack's queues). Only the datagrams sent with
//! [`send_stamped`] are stamped (a per-message `SO_TIMESTAMPING` control message), so replies
//! nobody needs a stamp for cost nothing extra; the socket only says how stamps are reported
//! ([`enable_tx_timestamp_reports`]). Each stamped send puts a copy of the packet with its
//! timestamp on the socket's error queue; the copy is how a stamp is matched to its reply
//! (the NTP reply's receive timestamp is its key, as in chrony), so no send-side counter
//! (`OPT_ID`) has to be kept in step with failed sends.
//!
//! The error queue counts against the socket's receive buffer, so whoever sends stamped
//! datagrams must drain it: [`TxStamps::drain`] reads up to a bound per call with `recvmmsg`
//! (`MSG_ERRQUEUE`, never blocking).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};

use super::cmsg::CmsgBuf;

/// `SOF_TIMESTAMPING_*` bits (linux/net_tstamp.h).
const TX_SOFTWARE: u32 = 1 << 1;
const SOFTWARE: u32 = 1 << 4;
/// Linux 6.2: report software receive stamps only when asked (`RX_SOFTWARE`), so received
/// datagrams do not carry an `SCM_TIMESTAMPING` besides their `SO_TIMESTAMPNS`.
const OPT_RX_FILTER: u32 = 1 << 17;

/// Bytes kept of each looped-back packet: link, IP and UDP headers and a 48-byte NTP reply
/// fit with room; a longer packet is cut and its stamp skipped.
const FRAME: usize = 256;

/// Datagrams read per `recvmmsg`.
const BATCH: usize = super::BATCH;

/// Makes the kernel report software timestamps (the transmit stamps [`send_stamped`] asks
/// for, on the error queue) on `fd`; asks for none by itself.
pub(crate) fn enable_tx_timestamp_reports(fd: BorrowedFd<'_>) -> io::Result<()> {
    let set = |flags: u32| -> io::Result<()> {
        // SAFETY: valid fd, pointer to a live u32 (the kernel reads an int) and its size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPING,
                (&raw const flags).cast(),
                size_of::<u32>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    set(SOFTWARE | OPT_RX_FILTER).or_else(|_| set(SOFTWARE))
}

/// Sends one datagram like [`super::send`] (to `dst`, from `src`, never blocking) and asks the
/// kernel for its software transmit timestamp, which comes back on `fd`'s error queue with a
/// copy of the packet (read it with [`TxStamps::drain`]).
pub(crate) fn send_stamped(
    fd: BorrowedFd<'_>,
    payload: &[u8],
    dst: SocketAddr,
    src: Option<IpAddr>,
    ifindex: u32,
) -> io::Result<usize> {
    super::send::send_with(fd, payload, dst, src, ifindex, Some(TX_SOFTWARE))
}

/// Reusable buffers for [`TxStamps::drain`], one set per runtime thread.
pub(crate) struct TxStamps {
    frames: Vec<[u8; FRAME]>,
    cmsgs: Vec<CmsgBuf>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl std::fmt::Debug for TxStamps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxStamps").finish_non_exhaustive()
    }
}

impl TxStamps {
    /// Buffers for [`BATCH`] packets.
    pub(crate) fn new() -> Self {
        Self {
            frames: vec![[0; FRAME]; BATCH],
            // SAFETY (both): plain old data, zero is valid.
            cmsgs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..BATCH)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            hdrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
        }
    }

    /// Reads up to `max` packets from `fd`'s error queue and hands each stamped one to `f`
    /// as (UDP payload, kernel transmit time as Unix seconds and nanoseconds). Returns how many
    /// packets were read; stops early when the queue is empty, never blocks.
    pub(crate) fn drain(
        &mut self,
        fd: BorrowedFd<'_>,
        max: usize,
        mut f: impl FnMut(&[u8], (i64, u32)),
    ) -> usize {
        let mut total = 0;
        while total < max {
            let want = (max - total).min(BATCH);
            for i in 0..want {
                self.iovs[i] = libc::iovec {
                    iov_base: self.frames[i].as_mut_ptr().cast(),
                    iov_len: FRAME,
                };
                // SAFETY: plain old data, zero is valid.
                let mut h: libc::msghdr = unsafe { zeroed() };
                h.msg_iov = &raw mut self.iovs[i];
                h.msg_iovlen = 1;
                h.msg_control = (&raw mut self.cmsgs[i]).cast();
                h.msg_controllen = size_of::<CmsgBuf>();
                self.hdrs[i] = libc::mmsghdr {
                    msg_hdr: h,
                    msg_len: 0,
                };
            }
            // SAFETY: headers 0..want point into this struct's live vectors with matching
            // lengths; MSG_DONTWAIT makes the call return at once.
            let r = unsafe {
                libc::recvmmsg(
                    fd.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    want as libc::c_uint,
                    libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            let Ok(n) = usize::try_from(r) else {
                break;
            };
            for i in 0..n {
                let h = &self.hdrs[i].msg_hdr;
                let len = self.hdrs[i].msg_len as usize;
                if h.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 || len > FRAME {
                    continue;
                }
                // SAFETY: filled in by the successful recvmmsg above, msg_control still
                // points at its live control buffer.
                let stamp = unsafe { tx_stamp(h) };
                if let (Some(at), Some(payload)) = (stamp, udp_payload(&self.frames[i][..len])) {
                    f(payload, at);
                }
            }
            total += n;
            if n < want {
                break;
            }
        }
        total
    }
}

/// The software transmit timestamp of an error-queue message: `SCM_TIMESTAMPING`'s first
/// time, else its `SCM_TIMESTAMPNS`.
///
/// # Safety
/// `hdr` must have been filled in by a successful `recvmsg`/`recvmmsg`, with `msg_control`
/// still pointing at its live control buffer.
unsafe fn tx_stamp(hdr: &libc::msghdr) -> Option<(i64, u32)> {
    let mut found = None;
    // SAFETY: per the contract, the CMSG_* macros walk only within msg_control/msg_controllen;
    // each payload is read unaligned after its level/type fixed its layout.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPING) => {
                    let ts = std::ptr::read_unaligned(data.cast::<[libc::timespec; 3]>());
                    if ts[0].tv_sec != 0 || ts[0].tv_nsec != 0 {
                        return Some((ts[0].tv_sec, u32::try_from(ts[0].tv_nsec).unwrap_or(0)));
                    }
                }
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                    let ts = std::ptr::read_unaligned(data.cast::<libc::timespec>());
                    found = Some((ts.tv_sec, u32::try_from(ts.tv_nsec).unwrap_or(0)));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    found
}

/// The UDP payload of a looped-back packet, which starts at its IP header (devices without a
/// link header) or at an Ethernet header (with up to two VLAN tags). An interpretation is
/// taken only when the IP and UDP lengths match the packet exactly.
pub(crate) fn udp_payload(frame: &[u8]) -> Option<&[u8]> {
    if let Some(p) = ip_udp_payload(frame) {
        return Some(p);
    }
    let mut at = 12;
    for _ in 0..3 {
        let ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
        match ethertype {
            0x8100 | 0x88a8 => at += 4,
            0x0800 | 0x86dd => return ip_udp_payload(frame.get(at + 2..)?),
            _ => return None,
        }
    }
    None
}

fn ip_udp_payload(packet: &[u8]) -> Option<&[u8]> {
    let first = *packet.first()?;
    let udp = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0xf) * 4;
            let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
            if ihl < 20 || total != packet.len() || *packet.get(9)? != 17 {
                return None;
            }
            packet.get(ihl..)?
        }
        6 => {
            let payload = usize::from(u16::from_be_bytes([*packet.get(4)?, *packet.get(5)?]));
            if payload + 40 != packet.len() || *packet.get(6)? != 17 {
                return None;
            }
            packet.get(40..)?
        }
        _ => return None,
    };
    let len = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    if len != udp.len() || len < 8 {
        return None;
    }
    udp.get(8..)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(payload: &[u8]) -> Vec<u8> {
        let mut u = vec![0, 123, 0x30, 0x39];
        u.extend_from_slice(
            &u16::try_from(8 + payload.len())
                .expect("test setup")
                .to_be_bytes(),
        );
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    fn ipv4(udp: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0];
        p.extend_from_slice(
            &u16::try_from(20 + udp.len())
                .expect("test setup")
                .to_be_bytes(),
        );
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        p.extend_from_slice(udp);
        p
    }

    fn ipv6(udp: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&u16::try_from(udp.len()).expect("test setup").to_be_bytes());
        p.extend_from_slice(&[17, 64]);
        p.extend_from_slice(&[0; 32]);
        p.extend_from_slice(udp);
        p
    }

    fn eth(ethertype: u16, vlan: bool, ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0; 12];
        if vlan {
            f.extend_from_slice(&[0x81, 0, 0, 7]);
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    #[test]
    fn finds_the_payload_behind_every_header_shape() {
        let payload = [0x24u8; 48];
        let u = udp(&payload);
        for frame in [
            ipv4(&u),
            ipv6(&u),
            eth(0x0800, false, &ipv4(&u)),
            eth(0x86dd, false, &ipv6(&u)),
            eth(0x0800, true, &ipv4(&u)),
        ] {
            assert_eq!(udp_payload(&frame), Some(&payload[..]), "{frame:x?}");
        }
    }

    #[test]
    fn only_stamped_sends_come_back_stamped() {
        use std::net::UdpSocket;
        use std::os::fd::AsFd;
        let a = UdpSocket::bind("127.0.0.1:0").expect("test setup");
        let b = UdpSocket::bind("127.0.0.1:0").expect("test setup");
        enable_tx_timestamp_reports(a.as_fd()).expect("test setup");
        let to = b.local_addr().expect("test setup");
        // A plain send is not stamped; a stamped one is.
        a.send_to(&[1; 48], to).expect("test setup");
        let payload = [0x24u8; 48];
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("test setup");
        send_stamped(a.as_fd(), &payload, to, Some(to.ip()), 0).expect("test setup");
        let mut stamps = TxStamps::new();
        let mut got = Vec::new();
        for _ in 0..100 {
            stamps.drain(a.as_fd(), 8, |p, at| got.push((p.to_vec(), at)));
            if !got.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got.len(), 1, "one stamp for one send");
        assert_eq!(got[0].0, payload);
        let at =
            std::time::Duration::new(u64::try_from(got[0].1.0).expect("test setup"), got[0].1.1);
        assert!(at >= before && at < before + std::time::Duration::from_secs(1));
        assert_eq!(stamps.drain(a.as_fd(), 8, |_, _| {}), 0, "queue drained");
    }

    #[test]
    fn rejects_what_does_not_add_up() {
        let u = udp(&[1; 48]);
        let mut short = eth(0x0800, false, &ipv4(&u));
        short.pop();
        assert_eq!(udp_payload(&short), None);
        assert_eq!(udp_payload(&eth(0x0806, false, &ipv4(&u))), None);
        let mut tcp = ipv4(&u);
        tcp[9] = 6;
        assert_eq!(udp_payload(&tcp), None);
        assert_eq!(udp_payload(&[]), None);
    }
}
