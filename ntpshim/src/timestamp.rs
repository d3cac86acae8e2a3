//! NTP wire time formats: the 64-bit timestamp (32.32 seconds since 1900,
//! era-relative) and the 32-bit "short" format (16.16 seconds) used for root
//! delay and root dispersion.

use core::time::Duration;

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
///
/// Needed because the wire counts from 1900 but the daemon reads
/// `CLOCK_REALTIME`, which counts from 1970.
pub const UNIX_OFFSET: u64 = 2_208_988_800;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// An NTP timestamp as carried on the wire: 32 bits of seconds and 32 bits of
/// fraction, counting from 1900-01-01 modulo 2^32 seconds (one "era", 136 years).
///
/// Kept as the raw 64-bit value so that echoing the client's transmit timestamp
/// into our origin field is bit-exact (RFC 5905 clients compare it bit for bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NtpTimestamp(u64);

impl NtpTimestamp {
    /// The all-zero timestamp, which NTP uses to mean "unknown" (for example the
    /// reference timestamp of an unsynchronised server).
    pub const ZERO: Self = Self(0);

    /// Wraps a raw 32.32 value, as read from a packet or kept by the caller.
    #[must_use]
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The raw 32.32 value, as written into a packet.
    #[must_use]
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// Builds a timestamp from whole NTP seconds and a 32-bit binary fraction.
    #[must_use]
    pub const fn from_parts(seconds: u32, fraction: u32) -> Self {
        Self(((seconds as u64) << 32) | fraction as u64)
    }

    /// Whole seconds within the era.
    #[must_use]
    pub const fn seconds(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Binary fraction of a second (units of 2^-32 s).
    #[must_use]
    pub const fn fraction(self) -> u32 {
        self.0 as u32
    }

    /// Converts Unix time (as read from `CLOCK_REALTIME` by the daemon) to NTP
    /// time, wrapping into the current era as the wire format requires.
    ///
    /// `nanos` values of one second or more carry into the seconds, so a
    /// caller cannot build an invalid value.
    #[must_use]
    pub fn from_unix(seconds: i64, nanos: u32) -> Self {
        let carry = u64::from(nanos) / NANOS_PER_SEC;
        let nanos = u64::from(nanos) % NANOS_PER_SEC;
        // Wrapping arithmetic is the era arithmetic of the protocol.
        let ntp_secs = (seconds as u64)
            .wrapping_add(UNIX_OFFSET)
            .wrapping_add(carry);
        // Round to nearest 2^-32 s; 1e9 * 2^32 fits easily in u64 arithmetic.
        let frac = ((nanos << 32) + NANOS_PER_SEC / 2) / NANOS_PER_SEC;
        // frac < 2^32 because nanos < 1e9 - 0.5 ulp rounds at most to 2^32 - 1.
        let frac = frac.min(u64::from(u32::MAX));
        Self(((ntp_secs & 0xFFFF_FFFF) << 32) | frac)
    }

    /// Converts to Unix seconds and nanoseconds.
    ///
    /// The era is ambiguous on the wire; like most implementations we pick the
    /// era that places the value between 1968-01-20 and 2104-02-26 (NTP seconds
    /// with the top bit clear are taken to be in era 1, after 2036-02-07).
    #[must_use]
    pub fn to_unix(self) -> (i64, u32) {
        let secs = u64::from(self.seconds());
        let secs = if secs & 0x8000_0000 == 0 {
            secs + (1 << 32)
        } else {
            secs
        };
        let unix = secs as i64 - UNIX_OFFSET as i64;
        let nanos = (u64::from(self.fraction()) * NANOS_PER_SEC) >> 32;
        // nanos < 1e9 by construction.
        (unix, nanos as u32)
    }

    /// Subtracts a duration with era wrap-around; used to place a reference
    /// time a moment before the receive time.
    #[must_use]
    pub fn wrapping_sub(self, d: Duration) -> Self {
        Self(self.0.wrapping_sub(duration_to_bits(d)))
    }

    /// Adds a duration with era wrap-around; used by callers and tests that
    /// model the passing of time.
    #[must_use]
    pub fn wrapping_add(self, d: Duration) -> Self {
        Self(self.0.wrapping_add(duration_to_bits(d)))
    }
}

fn duration_to_bits(d: Duration) -> u64 {
    let frac = (u64::from(d.subsec_nanos()) << 32) / NANOS_PER_SEC;
    (d.as_secs() << 32).wrapping_add(frac)
}

/// The NTP short format (16 bits of seconds, 16 of fraction) used for root
/// delay and root dispersion.
///
/// Conversions saturate instead of wrapping because these fields bound an error:
/// overstating is safe, wrapping to a small value would lie to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NtpShort(u32);

impl NtpShort {
    /// The largest representable value (just under 65536 s).
    pub const MAX: Self = Self(u32::MAX);

    /// Wraps a raw 16.16 value as read from a packet.
    #[must_use]
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    /// The raw 16.16 value, as written into a packet.
    #[must_use]
    pub const fn to_bits(self) -> u32 {
        self.0
    }

    /// Converts microseconds (the unit of the kernel's `maxerror`/`esterror`),
    /// rounding up so a bound is never understated, saturating at [`Self::MAX`].
    #[must_use]
    pub fn from_micros(micros: u64) -> Self {
        let bits = (u128::from(micros) << 16).div_ceil(1_000_000);
        Self(u32::try_from(bits).unwrap_or(u32::MAX))
    }

    /// Converts to microseconds (rounded down); used by tests and by callers
    /// copying the value from another server's reply.
    #[must_use]
    pub fn to_micros(self) -> u64 {
        (u64::from(self.0) * 1_000_000) >> 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_epoch_maps_to_offset() {
        let ts = NtpTimestamp::from_unix(0, 0);
        assert_eq!(u64::from(ts.seconds()), UNIX_OFFSET);
        assert_eq!(ts.fraction(), 0);
        assert_eq!(ts.to_unix(), (0, 0));
    }

    #[test]
    fn half_second_is_top_fraction_bit() {
        let ts = NtpTimestamp::from_unix(1_700_000_000, 500_000_000);
        assert_eq!(ts.fraction(), 0x8000_0000);
        assert_eq!(ts.to_unix(), (1_700_000_000, 500_000_000));
    }

    #[test]
    fn era_one_round_trips() {
        // 2040-01-01 is after the 2036 era rollover.
        let unix = 2_208_988_800;
        let ts = NtpTimestamp::from_unix(unix, 123);
        assert!(ts.seconds() < 0x8000_0000);
        let (s, n) = ts.to_unix();
        assert_eq!(s, unix);
        assert!(n.abs_diff(123) <= 1);
    }

    #[test]
    fn nanos_carry() {
        assert_eq!(
            NtpTimestamp::from_unix(10, 1_500_000_000),
            NtpTimestamp::from_unix(11, 500_000_000)
        );
    }

    #[test]
    fn short_rounds_up_and_saturates() {
        assert_eq!(NtpShort::from_micros(0).to_bits(), 0);
        assert_eq!(NtpShort::from_micros(1_000_000).to_bits(), 0x0001_0000);
        assert_eq!(NtpShort::from_micros(1).to_bits(), 1);
        assert_eq!(NtpShort::from_micros(u64::MAX), NtpShort::MAX);
    }

    #[test]
    fn duration_arithmetic() {
        let ts = NtpTimestamp::from_parts(10, 0);
        assert_eq!(
            ts.wrapping_sub(Duration::from_secs(1)),
            NtpTimestamp::from_parts(9, 0)
        );
        assert_eq!(
            ts.wrapping_add(Duration::from_millis(500)),
            NtpTimestamp::from_parts(10, 0x8000_0000)
        );
    }
}
