//! What our reply says about our clock: leap, stratum, reference ID, root
//! delay and dispersion and reference time, derived from a [`ClockStatus`]
//! the way chrony's `REF_GetReferenceParams` (reference.c) does:
//!
//! 1. **Synchronised** (`maxerror` < 16 s and a reference stratum 1..=15):
//!    the configured or copied reference, the kernel's leap flags, and a root
//!    dispersion of at least `maxerror − root_delay/2`, so the client's root
//!    distance (delay/2 + dispersion) is never below the kernel's error bound.
//! 2. **Local stratum** (configured, and the clock is unsynchronised or its
//!    root distance exceeds 1 s — chrony's `local` default `distance 1.0`):
//!    stratum N, refid 127.127.1.1, no leap, zero root delay and dispersion.
//! 3. **Unsynchronised**: leap 3, stratum 16, refid 0, zero reference time,
//!    root delay and dispersion 1 s (chrony's values). chrony writes stratum
//!    0 on the wire here; RFC 5905 says clients read 0 as 16, and we send 16
//!    so the packet cannot be mistaken for a kiss-o'-death.

use core::time::Duration;

use crate::clock::ClockStatus;
use crate::packet::{Leap, RefId};
use crate::timestamp::{NtpShort, NtpTimestamp};

/// Stratum meaning "unsynchronised" (RFC 5905 §7.3).
pub const STRATUM_UNSYNC: u8 = 16;

/// Root distance above which a configured local stratum takes over.
const LOCAL_DISTANCE_US: u64 = 1_000_000;

/// Root delay and dispersion advertised while unsynchronised.
const UNSYNC_ROOT_US: u64 = 1_000_000;

/// Which of the three cases of the module documentation applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockState {
    /// Case 1.
    Synchronised,
    /// Case 2.
    Local,
    /// Case 3.
    Unsynchronised,
}

/// The clock-describing fields of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockFields {
    /// Which case applied.
    pub state: ClockState,
    /// Leap indicator.
    pub leap: Leap,
    /// Stratum.
    pub stratum: u8,
    /// Reference ID.
    pub refid: RefId,
    /// Root delay.
    pub root_delay: NtpShort,
    /// Root dispersion.
    pub root_dispersion: NtpShort,
    /// Reference timestamp.
    pub reference_ts: NtpTimestamp,
}

/// Derives the reply's clock fields; `recv_ts` anchors the reference time
/// when the real one is unknown.
#[must_use]
pub fn clock_fields(
    clock: &ClockStatus,
    local_stratum: Option<u8>,
    recv_ts: NtpTimestamp,
) -> ClockFields {
    let reference = &clock.reference;
    let fallback_ref =
        NtpTimestamp::from_parts(recv_ts.seconds(), 0).wrapping_sub(Duration::from_secs(1));
    let valid_stratum = (1..STRATUM_UNSYNC).contains(&reference.stratum);
    let root_dispersion_us = reference.root_dispersion_us.max(
        clock
            .maxerror_us
            .saturating_sub(reference.root_delay_us / 2),
    );
    let distance_us = (reference.root_delay_us / 2).saturating_add(root_dispersion_us);
    let synchronised = clock.is_synchronised() && valid_stratum;

    match local_stratum {
        Some(n) if !synchronised || distance_us > LOCAL_DISTANCE_US => ClockFields {
            state: ClockState::Local,
            leap: Leap::NoWarning,
            stratum: n.clamp(1, STRATUM_UNSYNC - 1),
            refid: RefId::LOCAL,
            root_delay: NtpShort::default(),
            root_dispersion: NtpShort::default(),
            reference_ts: fallback_ref,
        },
        _ if synchronised => ClockFields {
            state: ClockState::Synchronised,
            leap: clock.leap,
            stratum: reference.stratum,
            refid: reference.refid,
            root_delay: NtpShort::from_micros(reference.root_delay_us),
            root_dispersion: NtpShort::from_micros(root_dispersion_us),
            reference_ts: reference.time.unwrap_or(fallback_ref),
        },
        _ => ClockFields {
            state: ClockState::Unsynchronised,
            leap: Leap::Unsynchronised,
            stratum: STRATUM_UNSYNC,
            refid: RefId::UNSYNC,
            root_delay: NtpShort::from_micros(UNSYNC_ROOT_US),
            root_dispersion: NtpShort::from_micros(UNSYNC_ROOT_US),
            reference_ts: NtpTimestamp::ZERO,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    const RECV: NtpTimestamp = NtpTimestamp::from_parts(3_900_000_000, 0x4000_0000);

    #[test]
    fn synchronised_uses_reference() {
        let mut c = FakeClock::synchronised().status;
        c.leap = Leap::Delete;
        c.maxerror_us = 2_000;
        c.reference.root_delay_us = 1_000;
        let f = clock_fields(&c, None, RECV);
        assert_eq!(f.state, ClockState::Synchronised);
        assert_eq!(f.leap, Leap::Delete);
        assert_eq!(f.stratum, 2);
        assert_eq!(f.refid, RefId([192, 0, 2, 1]));
        assert_eq!(f.root_delay, NtpShort::from_micros(1_000));
        assert_eq!(f.root_dispersion, NtpShort::from_micros(1_500));
        assert_eq!(f.reference_ts, NtpTimestamp::from_parts(3_899_999_999, 0));
    }

    #[test]
    fn copied_dispersion_wins_when_larger() {
        let mut c = FakeClock::synchronised().status;
        c.reference.root_dispersion_us = 50_000;
        c.reference.time = Some(NtpTimestamp::from_parts(5, 0));
        let f = clock_fields(&c, None, RECV);
        assert_eq!(f.root_dispersion, NtpShort::from_micros(50_000));
        assert_eq!(f.reference_ts, NtpTimestamp::from_parts(5, 0));
    }

    #[test]
    fn unsynchronised() {
        let f = clock_fields(&FakeClock::unsynchronised().status, None, RECV);
        assert_eq!(f.state, ClockState::Unsynchronised);
        assert_eq!(f.leap, Leap::Unsynchronised);
        assert_eq!(f.stratum, 16);
        assert_eq!(f.refid, RefId::UNSYNC);
        assert_eq!(f.reference_ts, NtpTimestamp::ZERO);
    }

    #[test]
    fn invalid_reference_stratum_is_unsynchronised() {
        for s in [0, 16, 255] {
            let mut c = FakeClock::synchronised().status;
            c.reference.stratum = s;
            assert_eq!(
                clock_fields(&c, None, RECV).state,
                ClockState::Unsynchronised
            );
        }
    }

    #[test]
    fn local_stratum_takes_over_when_unsynchronised() {
        let f = clock_fields(&FakeClock::unsynchronised().status, Some(10), RECV);
        assert_eq!(f.state, ClockState::Local);
        assert_eq!(f.stratum, 10);
        assert_eq!(f.refid, RefId::LOCAL);
        assert_eq!(f.leap, Leap::NoWarning);
        assert_eq!(f.root_delay, NtpShort::default());
        assert!(f.reference_ts < RECV);
    }

    #[test]
    fn local_stratum_idle_when_synchronised_and_close() {
        let f = clock_fields(&FakeClock::synchronised().status, Some(10), RECV);
        assert_eq!(f.state, ClockState::Synchronised);
        let mut c = FakeClock::synchronised().status;
        c.maxerror_us = 3_000_000;
        assert_eq!(clock_fields(&c, Some(10), RECV).state, ClockState::Local);
        assert_eq!(clock_fields(&c, Some(0), RECV).stratum, 1);
        assert_eq!(clock_fields(&c, Some(200), RECV).stratum, 15);
    }
}
