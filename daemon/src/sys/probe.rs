//! A second epoll instance that says which quiet sockets have datagrams queued.
//!
//! tokio's own epoll is only polled between task turns, and its thread is the one a flood keeps
//! busy, so a quiet namespace's datagram waits for whatever turn is running and for the kernel
//! to schedule that busy thread again. The quiet lane (`serve/quiet.rs`) waits on this one
//! (level-triggered) in a thread of its own instead.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The probe's epoll instance. The kernel removes a socket from it when the socket closes.
#[derive(Debug)]
pub(crate) struct Probe {
    fd: OwnedFd,
}

impl Probe {
    /// A new, empty probe set.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain system call with a flag argument; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `sock` for queued datagrams (level-triggered), reported with `key`.
    pub(crate) fn add(&self, sock: BorrowedFd<'_>, key: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: key,
        };
        self.ctl(libc::EPOLL_CTL_ADD, sock, &mut ev)
    }

    /// Stops watching `sock`.
    pub(crate) fn remove(&self, sock: BorrowedFd<'_>) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        self.ctl(libc::EPOLL_CTL_DEL, sock, &mut ev)
    }

    fn ctl(
        &self,
        op: libc::c_int,
        sock: BorrowedFd<'_>,
        ev: &mut libc::epoll_event,
    ) -> io::Result<()> {
        // SAFETY: both descriptors are open for the duration of the call (borrowed/owned), and
        // `ev` points to a valid epoll_event the kernel only reads.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, sock.as_raw_fd(), ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Fills `keys` with the keys of sockets that have datagrams queued, waiting up to
    /// `timeout_ms` for one (0: not at all); returns how many.
    pub(crate) fn ready(&self, keys: &mut [u64], timeout_ms: i32) -> io::Result<usize> {
        const MAX: usize = 8;
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        let want = keys.len().min(MAX);
        let max = libc::c_int::try_from(want).unwrap_or(1);
        // SAFETY: `evs` has room for `want` <= MAX events and lives across the call.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), evs.as_mut_ptr(), max, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        let n = usize::try_from(n).unwrap_or(0).min(want);
        for (k, ev) in keys.iter_mut().zip(&evs[..n]) {
            *k = ev.u64;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn reports_only_sockets_with_datagrams_queued() -> io::Result<()> {
        let p = Probe::new()?;
        let a = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let b = std::net::UdpSocket::bind("127.0.0.1:0")?;
        p.add(a.as_fd(), 1)?;
        p.add(b.as_fd(), 2)?;
        let mut keys = [0u64; 4];
        assert_eq!(p.ready(&mut keys, 0)?, 0);
        b.send_to(b"x", a.local_addr()?)?;
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(p.ready(&mut keys, 0)?, 1);
        assert_eq!(keys[0], 1);
        // Level-triggered: still reported until read.
        assert_eq!(p.ready(&mut keys, 0)?, 1);
        p.remove(a.as_fd())?;
        assert_eq!(p.ready(&mut keys, 0)?, 0);
        Ok(())
    }
}
