//! The 48-byte NTP header (RFC 5905 §7.3): parsing and writing, nothing else.
//!
//! Bytes after the header (extension fields, MACs) are classified by
//! [`crate::trailer`]; deciding what to answer is [`crate::server`]'s job.

use crate::error::PacketError;
use crate::timestamp::{NtpShort, NtpTimestamp};

/// Length of the fixed NTP header; every valid request is at least this long
/// and every reply we send is exactly this long.
pub const HEADER_LEN: usize = 48;

/// Leap indicator (the top two bits of the first byte).
///
/// `Unsynchronised` (3) doubles as the "alarm" state and is what kiss-o'-death
/// packets carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Leap {
    /// No leap second pending.
    #[default]
    NoWarning,
    /// The last minute of the day has 61 seconds (kernel `STA_INS`).
    Insert,
    /// The last minute of the day has 59 seconds (kernel `STA_DEL`).
    Delete,
    /// The clock is not synchronised; clients must not use our time.
    Unsynchronised,
}

impl Leap {
    /// Decodes the two-bit wire value.
    #[must_use]
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => Self::NoWarning,
            1 => Self::Insert,
            2 => Self::Delete,
            _ => Self::Unsynchronised,
        }
    }

    /// Encodes the two-bit wire value.
    #[must_use]
    pub const fn to_bits(self) -> u8 {
        match self {
            Self::NoWarning => 0,
            Self::Insert => 1,
            Self::Delete => 2,
            Self::Unsynchronised => 3,
        }
    }
}

/// Association mode (the low three bits of the first byte).
///
/// All eight values exist on the wire, so decoding is total; the server decides
/// which ones it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// 0: reserved (NTPv1 clients used it; we never answer it).
    Reserved,
    /// 1: symmetric active (a peer wanting to synchronise both ways).
    SymmetricActive,
    /// 2: symmetric passive (our answer to mode 1).
    SymmetricPassive,
    /// 3: client request.
    Client,
    /// 4: server reply.
    Server,
    /// 5: broadcast.
    Broadcast,
    /// 6: NTP control messages (ntpq); an amplification vector, never answered.
    Control,
    /// 7: private (ntpdc `monlist`, CVE-2013-5211); never answered.
    Private,
}

impl Mode {
    /// Decodes the three-bit wire value.
    #[must_use]
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 7 {
            0 => Self::Reserved,
            1 => Self::SymmetricActive,
            2 => Self::SymmetricPassive,
            3 => Self::Client,
            4 => Self::Server,
            5 => Self::Broadcast,
            6 => Self::Control,
            _ => Self::Private,
        }
    }

    /// Encodes the three-bit wire value.
    #[must_use]
    pub const fn to_bits(self) -> u8 {
        match self {
            Self::Reserved => 0,
            Self::SymmetricActive => 1,
            Self::SymmetricPassive => 2,
            Self::Client => 3,
            Self::Server => 4,
            Self::Broadcast => 5,
            Self::Control => 6,
            Self::Private => 7,
        }
    }
}

/// The 32-bit reference identifier: an IPv4 address, a four-letter ASCII code
/// (stratum 1 source or kiss code), or a hash of an IPv6 address.
///
/// Kept as raw bytes because its meaning depends on the stratum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RefId(pub [u8; 4]);

impl RefId {
    /// Zero, chrony's reference ID for an unsynchronised server.
    pub const UNSYNC: Self = Self([0; 4]);
    /// 127.127.1.1, what chrony sends when serving its local clock
    /// (`local stratum N`), kept for compatibility with tools that know it.
    pub const LOCAL: Self = Self([127, 127, 1, 1]);
    /// Kiss code "RATE": the client is polling too fast (RFC 5905 §7.4).
    pub const RATE: Self = Self(*b"RATE");

    /// Builds a reference ID from an ASCII kiss code or clock name such as
    /// `"GPS"` or `"LOCL"`, NUL-padded; longer strings are truncated.
    #[must_use]
    pub fn from_ascii(code: &str) -> Self {
        let mut out = [0u8; 4];
        for (o, b) in out.iter_mut().zip(code.bytes()) {
            *o = b;
        }
        Self(out)
    }

    /// The big-endian integer form, as logged by chrony and ntpq.
    #[must_use]
    pub const fn to_u32(self) -> u32 {
        u32::from_be_bytes(self.0)
    }
}

/// A decoded NTP header. Every field is public because this is plain data:
/// the server fills one in and writes it, tests read one back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Leap indicator.
    pub leap: Leap,
    /// Protocol version, 0..=7 as on the wire (we answer 1..=4).
    pub version: u8,
    /// Association mode.
    pub mode: Mode,
    /// Stratum: 0 = kiss-o'-death / unspecified, 1 = primary, 16 = unsynchronised.
    pub stratum: u8,
    /// Log2 of the poll interval in seconds (signed).
    pub poll: i8,
    /// Log2 of the clock precision in seconds (signed, e.g. -23 ≈ 119 ns).
    pub precision: i8,
    /// Round-trip delay to the primary reference.
    pub root_delay: NtpShort,
    /// Maximum error relative to the primary reference.
    pub root_dispersion: NtpShort,
    /// Reference identifier (see [`RefId`]).
    pub refid: RefId,
    /// When the clock was last set or corrected.
    pub reference_ts: NtpTimestamp,
    /// In a reply: the client's transmit timestamp, echoed.
    pub origin_ts: NtpTimestamp,
    /// In a reply: when the request arrived.
    pub receive_ts: NtpTimestamp,
    /// When this packet left the sender.
    pub transmit_ts: NtpTimestamp,
}

impl Header {
    /// A minimal NTPv4 client request (mode 3) revealing nothing but
    /// `transmit_ts`, as chrony sends them. The daemon can use it to ask a
    /// local NTP daemon for the reference to copy (see
    /// [`crate::Reference::from_server_reply`]); `transmit_ts` should be
    /// random or the real time, and must be matched against the reply's
    /// origin timestamp.
    #[must_use]
    pub const fn client_request(transmit_ts: NtpTimestamp) -> Self {
        Self {
            leap: Leap::NoWarning,
            version: 4,
            mode: Mode::Client,
            stratum: 0,
            poll: 0,
            precision: 0,
            root_delay: NtpShort::from_bits(0),
            root_dispersion: NtpShort::from_bits(0),
            refid: RefId([0; 4]),
            reference_ts: NtpTimestamp::ZERO,
            origin_ts: NtpTimestamp::ZERO,
            receive_ts: NtpTimestamp::ZERO,
            transmit_ts,
        }
    }

    /// Parses the first [`HEADER_LEN`] bytes of `buf`; trailing bytes are
    /// ignored here (see [`crate::trailer`]).
    ///
    /// # Errors
    /// [`PacketError::TooShort`] when `buf` is shorter than a header. Every bit
    /// pattern of the 48 bytes is a valid header, so nothing else can fail.
    pub fn parse(buf: &[u8]) -> Result<Self, PacketError> {
        let h: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(PacketError::TooShort { len: buf.len() })?;
        let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
        Ok(Self {
            leap: Leap::from_bits(h[0] >> 6),
            version: (h[0] >> 3) & 7,
            mode: Mode::from_bits(h[0]),
            stratum: h[1],
            poll: h[2] as i8,
            precision: h[3] as i8,
            root_delay: NtpShort::from_bits(u32_at(4)),
            root_dispersion: NtpShort::from_bits(u32_at(8)),
            refid: RefId([h[12], h[13], h[14], h[15]]),
            reference_ts: NtpTimestamp::from_bits(u64_at(16)),
            origin_ts: NtpTimestamp::from_bits(u64_at(24)),
            receive_ts: NtpTimestamp::from_bits(u64_at(32)),
            transmit_ts: NtpTimestamp::from_bits(u64_at(40)),
        })
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out` and
    /// returns the number of bytes written.
    ///
    /// # Errors
    /// [`PacketError::BufferTooSmall`] when `out` cannot hold a header.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, PacketError> {
        let len = out.len();
        let h: &mut [u8; HEADER_LEN] = out
            .get_mut(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(PacketError::BufferTooSmall { len })?;
        h[0] = (self.leap.to_bits() << 6) | ((self.version & 7) << 3) | self.mode.to_bits();
        h[1] = self.stratum;
        h[2] = self.poll as u8;
        h[3] = self.precision as u8;
        h[4..8].copy_from_slice(&self.root_delay.to_bits().to_be_bytes());
        h[8..12].copy_from_slice(&self.root_dispersion.to_bits().to_be_bytes());
        h[12..16].copy_from_slice(&self.refid.0);
        h[16..24].copy_from_slice(&self.reference_ts.to_bits().to_be_bytes());
        h[24..32].copy_from_slice(&self.origin_ts.to_bits().to_be_bytes());
        h[32..40].copy_from_slice(&self.receive_ts.to_bits().to_be_bytes());
        write_transmit(h, self.transmit_ts);
        Ok(HEADER_LEN)
    }
}

/// Overwrites only the transmit timestamp of an already written header, so the
/// server can read the clock after everything else is in place.
pub(crate) fn write_transmit(h: &mut [u8; HEADER_LEN], ts: NtpTimestamp) {
    h[40..48].copy_from_slice(&ts.to_bits().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            leap: Leap::Insert,
            version: 4,
            mode: Mode::Server,
            stratum: 2,
            poll: -6,
            precision: -23,
            root_delay: NtpShort::from_bits(0x0001_8000),
            root_dispersion: NtpShort::from_bits(0x10),
            refid: RefId::from_ascii("GPS"),
            reference_ts: NtpTimestamp::from_bits(1),
            origin_ts: NtpTimestamp::from_bits(2),
            receive_ts: NtpTimestamp::from_bits(3),
            transmit_ts: NtpTimestamp::from_bits(u64::MAX),
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = [0u8; 60];
        assert_eq!(sample().write(&mut buf), Ok(HEADER_LEN));
        assert_eq!(Header::parse(&buf), Ok(sample()));
        assert_eq!(buf[0], 0b01_100_100);
        assert_eq!(buf[2], 0xFA);
        assert_eq!(&buf[12..16], b"GPS\0");
    }

    #[test]
    fn short_inputs_fail() {
        assert_eq!(
            Header::parse(&[0; 47]),
            Err(PacketError::TooShort { len: 47 })
        );
        assert_eq!(
            sample().write(&mut [0; 47]),
            Err(PacketError::BufferTooSmall { len: 47 })
        );
    }

    #[test]
    fn every_mode_and_leap_round_trips() {
        for b in 0..8u8 {
            assert_eq!(Mode::from_bits(b).to_bits(), b);
        }
        for b in 0..4u8 {
            assert_eq!(Leap::from_bits(b).to_bits(), b);
        }
    }
}
