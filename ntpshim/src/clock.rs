//! What the host clock says about itself: the kernel's discipline state read by
//! the daemon with `adjtimex(2)` (modes 0, no privilege needed), plus the
//! stratum and reference the daemon configured or copied from a local NTP
//! daemon. The server only reads it; no system call happens here.

use crate::packet::{Header, Leap, Mode, RefId};
use crate::timestamp::NtpTimestamp;

/// Kernel `STA_INS`: insert a leap second at the end of the UTC day.
pub const STA_INS: i32 = 0x0010;
/// Kernel `STA_DEL`: delete a leap second at the end of the UTC day.
pub const STA_DEL: i32 = 0x0020;
/// Kernel `STA_UNSYNC`: the clock is not synchronised (informational only:
/// chrony clears it only with `rtcsync`, so we judge by `maxerror`).
pub const STA_UNSYNC: i32 = 0x0040;

/// The kernel's `NTP_PHASE_LIMIT`: once `maxerror` reaches 16 s the kernel
/// itself considers the clock unsynchronised. We use the same threshold
/// (systemd does too) instead of trusting `STA_UNSYNC`.
pub const UNSYNC_MAXERROR_US: u64 = 16_000_000;

/// Where our time comes from, as advertised to clients. The kernel knows none
/// of this, so the daemon configures it or copies it from the local NTP daemon
/// (as rsntp does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Stratum to advertise while synchronised (1..=15).
    pub stratum: u8,
    /// Reference ID to advertise while synchronised.
    pub refid: RefId,
    /// Root delay in microseconds.
    pub root_delay_us: u64,
    /// Root dispersion in microseconds known from the source; the advertised
    /// dispersion is never below what the kernel's `maxerror` implies.
    pub root_dispersion_us: u64,
    /// Time of the last clock update, if known; otherwise the server reports
    /// one second before the receive time (what chrony does for its local
    /// reference) so the reference never lies after the transmit time.
    pub time: Option<NtpTimestamp>,
}

impl Reference {
    /// Copies the reference of a local NTP daemon from its reply to our
    /// client request (what rsntp does): stratum, refid, root delay, root
    /// dispersion and reference time are taken verbatim, so we present the
    /// same clock the daemon serves.
    ///
    /// Returns `None` when the reply is not a usable server reply: not mode
    /// 4, leap 3, or stratum 0 (kiss) or ≥ 16 (unsynchronised). The caller
    /// must already have matched the reply to its request (origin timestamp).
    #[must_use]
    pub fn from_server_reply(reply: &Header) -> Option<Self> {
        let usable = reply.mode == Mode::Server
            && reply.leap != Leap::Unsynchronised
            && (1..16).contains(&reply.stratum);
        usable.then(|| Self {
            stratum: reply.stratum,
            refid: reply.refid,
            root_delay_us: reply.root_delay.to_micros(),
            root_dispersion_us: reply.root_dispersion.to_micros(),
            time: Some(reply.reference_ts).filter(|t| *t != NtpTimestamp::ZERO),
        })
    }
}

/// Raw numbers from `struct timex` after `adjtimex` with `modes = 0`, passed
/// as plain integers so the daemon needs no conversion logic.
///
/// `timex.precision` and `timex.tick` are deliberately absent: both are in
/// microseconds and describe the tick-based clock (1 µs and 10 ms on current
/// kernels), not how finely `CLOCK_REALTIME` reads with high-resolution
/// timers. The daemon measures that once and converts it with
/// [`precision_from_resolution_ns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KernelTimex {
    /// `timex.status` bit flags (`STA_*`).
    pub status: i32,
    /// `timex.maxerror`, microseconds.
    pub maxerror: i64,
    /// `timex.esterror`, microseconds.
    pub esterror: i64,
}

/// A snapshot of the clock's state, all the server needs to fill the clock
/// fields of a reply. Plain data: the daemon fills it, tests fake it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClockStatus {
    /// Pending leap second, from `STA_INS`/`STA_DEL`.
    pub leap: Leap,
    /// Kernel `STA_UNSYNC`; reported for diagnostics, not used to decide.
    pub kernel_unsync: bool,
    /// Kernel maximum error bound, microseconds (grows 500 µs/s between
    /// updates; ≥ 16 s means unsynchronised).
    pub maxerror_us: u64,
    /// Kernel estimated error, microseconds.
    pub esterror_us: u64,
    /// Log2 seconds of the clock's reading resolution; see
    /// [`precision_from_resolution_ns`].
    pub precision: i8,
    /// Stratum, reference ID and root delay to advertise.
    pub reference: Reference,
}

impl ClockStatus {
    /// Builds a status from raw `adjtimex` numbers, the precision exponent
    /// the daemon measured once, and the configured or copied reference.
    ///
    /// Negative error values (never produced by Linux) are treated as zero;
    /// setting both `STA_INS` and `STA_DEL` is contradictory and announces no
    /// leap second.
    #[must_use]
    pub fn from_kernel(timex: KernelTimex, precision: i8, reference: Reference) -> Self {
        let ins = timex.status & STA_INS != 0;
        let del = timex.status & STA_DEL != 0;
        let leap = match (ins, del) {
            (true, false) => Leap::Insert,
            (false, true) => Leap::Delete,
            _ => Leap::NoWarning,
        };
        Self {
            leap,
            kernel_unsync: timex.status & STA_UNSYNC != 0,
            maxerror_us: u64::try_from(timex.maxerror).unwrap_or(0),
            esterror_us: u64::try_from(timex.esterror).unwrap_or(0),
            precision,
            reference,
        }
    }

    /// Whether clients may use our time: `maxerror` below 16 s, whatever
    /// `STA_UNSYNC` says (see DESIGN.md, "Sync status").
    #[must_use]
    pub const fn is_synchronised(&self) -> bool {
        self.maxerror_us < UNSYNC_MAXERROR_US
    }
}

/// Anything that can report the clock status. The daemon implements it over
/// `adjtimex`; tests use [`FakeClock`]. `Server::handle` takes the snapshot
/// itself so one reading can serve a batch of packets.
pub trait ClockStatusSource {
    /// The current clock status.
    fn clock_status(&self) -> ClockStatus;
}

impl ClockStatusSource for ClockStatus {
    fn clock_status(&self) -> ClockStatus {
        *self
    }
}

/// A settable clock status for tests (of this crate and of the daemon).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeClock {
    /// The status returned by [`ClockStatusSource::clock_status`].
    pub status: ClockStatus,
}

impl FakeClock {
    /// A synchronised stratum-2 clock with 1 ms `maxerror`, no leap second,
    /// precision 2^-20 s and refid 192.0.2.1: a typical healthy host.
    #[must_use]
    pub const fn synchronised() -> Self {
        Self {
            status: ClockStatus {
                leap: Leap::NoWarning,
                kernel_unsync: false,
                maxerror_us: 1_000,
                esterror_us: 100,
                precision: -20,
                reference: Reference {
                    stratum: 2,
                    refid: RefId([192, 0, 2, 1]),
                    root_delay_us: 500,
                    root_dispersion_us: 0,
                    time: None,
                },
            },
        }
    }

    /// The same clock after the kernel gave up on it (`maxerror` at 16 s,
    /// `STA_UNSYNC` set).
    #[must_use]
    pub const fn unsynchronised() -> Self {
        let mut c = Self::synchronised();
        c.status.kernel_unsync = true;
        c.status.maxerror_us = UNSYNC_MAXERROR_US;
        c
    }
}

impl ClockStatusSource for FakeClock {
    fn clock_status(&self) -> ClockStatus {
        self.status
    }
}

/// NTP precision exponent for a clock that reads in steps of `resolution_ns`
/// nanoseconds (measured by the daemon, e.g. the smallest non-zero difference
/// between consecutive `clock_gettime` calls): the smallest `p` with
/// 2^p s ≥ the resolution, clamped to -32..=0. Zero counts as 1 ns.
#[must_use]
pub fn precision_from_resolution_ns(resolution_ns: u64) -> i8 {
    let res = u128::from(resolution_ns.max(1));
    let mut p: i8 = -32;
    // 2^p s ≥ res ns  <=>  1e9 ≥ res · 2^-p  (for p ≤ 0)
    while p < 0 && res << p.unsigned_abs() > 1_000_000_000 {
        p += 1;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Reference {
        FakeClock::synchronised().status.reference
    }

    #[test]
    fn leap_flags() {
        let t = |status| {
            ClockStatus::from_kernel(
                KernelTimex {
                    status,
                    maxerror: 0,
                    esterror: 0,
                },
                -20,
                reference(),
            )
        };
        assert_eq!(t(0).leap, Leap::NoWarning);
        assert_eq!(t(STA_INS).leap, Leap::Insert);
        assert_eq!(t(STA_DEL).leap, Leap::Delete);
        assert_eq!(t(STA_INS | STA_DEL).leap, Leap::NoWarning);
        assert!(t(STA_UNSYNC).kernel_unsync);
    }

    #[test]
    fn sync_judged_by_maxerror_only() {
        let t = |status, maxerror| {
            ClockStatus::from_kernel(
                KernelTimex {
                    status,
                    maxerror,
                    esterror: -5,
                },
                -20,
                reference(),
            )
        };
        assert!(t(STA_UNSYNC, 15_999_999).is_synchronised());
        assert!(!t(0, 16_000_000).is_synchronised());
        assert!(t(0, -1).is_synchronised());
        assert_eq!(t(0, 5).esterror_us, 0);
    }

    #[test]
    fn copy_reference_from_reply() {
        let mut h = Header {
            leap: Leap::NoWarning,
            version: 4,
            mode: Mode::Server,
            stratum: 3,
            poll: 6,
            precision: -24,
            root_delay: crate::NtpShort::from_micros(2_000),
            root_dispersion: crate::NtpShort::from_micros(3_000),
            refid: RefId([10, 0, 0, 1]),
            reference_ts: NtpTimestamp::from_parts(100, 0),
            origin_ts: NtpTimestamp::ZERO,
            receive_ts: NtpTimestamp::ZERO,
            transmit_ts: NtpTimestamp::ZERO,
        };
        let r = Reference::from_server_reply(&h).unwrap();
        assert_eq!(r.stratum, 3);
        assert_eq!(r.refid, RefId([10, 0, 0, 1]));
        assert!(r.root_delay_us.abs_diff(2_000) <= 16); // 16.16 steps are 15.3 µs
        assert!(r.root_dispersion_us.abs_diff(3_000) <= 16);
        assert_eq!(r.time, Some(NtpTimestamp::from_parts(100, 0)));
        h.leap = Leap::Unsynchronised;
        assert_eq!(Reference::from_server_reply(&h), None);
        h.leap = Leap::NoWarning;
        h.stratum = 16;
        assert_eq!(Reference::from_server_reply(&h), None);
        h.stratum = 0;
        assert_eq!(Reference::from_server_reply(&h), None);
        h.stratum = 2;
        h.mode = Mode::Client;
        assert_eq!(Reference::from_server_reply(&h), None);
    }

    #[test]
    fn precision() {
        assert_eq!(precision_from_resolution_ns(0), -29);
        assert_eq!(precision_from_resolution_ns(1), -29);
        assert_eq!(precision_from_resolution_ns(2), -28);
        assert_eq!(precision_from_resolution_ns(1_000), -19);
        assert_eq!(precision_from_resolution_ns(1_000_000), -9);
        assert_eq!(precision_from_resolution_ns(1_000_000_000), 0);
        assert_eq!(precision_from_resolution_ns(u64::MAX), 0);
    }
}
