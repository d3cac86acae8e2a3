//! Classification of the bytes after the 48-byte header: nothing, NTPv4
//! extension fields (RFC 7822), a MAC, or NTS fields (RFC 8915).
//!
//! The rules follow chrony's `parse_packet` (ntp_core.c) so that a request
//! chrony would consider malformed is malformed here too:
//! * the total length is a multiple of 4;
//! * NTPv1–3 have no extension fields: any trailer is a MAC;
//! * in NTPv4 a trailer of exactly 4 zero bytes is a crypto-NAK, a remainder
//!   of 20..=24 bytes is a MAC (RFC 7822 §7.5), anything longer must start
//!   with an extension field of at least 16 bytes whose length is a multiple
//!   of 4 and fits in the packet.

use crate::packet::HEADER_LEN;

/// Largest request we accept: header plus chrony's extension/MAC allowance
/// (1024 bytes of fields plus a 68-byte MAC). Longer datagrams are not NTP
/// any implementation sends, so they are dropped rather than parsed.
pub const MAX_REQUEST_LEN: usize = HEADER_LEN + 1024 + 4 + 64;

/// Smallest NTPv4 MAC (key ID + 128-bit digest).
const MIN_MAC_LEN: usize = 4 + 16;
/// Largest MAC allowed directly after an NTPv4 header (key ID + 160-bit digest).
const MAX_V4_MAC_LEN: usize = 4 + 20;
/// Smallest extension field (RFC 7822 §7.5).
const MIN_EF_LEN: usize = 16;

/// Extension field types used by NTS (RFC 8915 §5.7); a request carrying any
/// of them expects an authenticated reply we cannot give.
const NTS_FIELD_TYPES: [u16; 4] = [0x0104, 0x0204, 0x0304, 0x0404];

/// What follows the header of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trailer {
    /// A plain 48-byte request.
    None,
    /// Only well-formed, non-NTS NTPv4 extension fields (counted). We answer
    /// such requests with a bare header: a reply may omit fields it does not
    /// understand, and it stays shorter than the request.
    Extensions(usize),
    /// A symmetric-key MAC or crypto-NAK; we hold no keys, so the request is
    /// dropped as chrony does for unknown keys (an unauthenticated answer to an
    /// authenticated request would be rejected by the client anyway).
    Mac,
    /// NTS extension fields; we hold no NTS keys and drop the request (chrony
    /// without NTS server keys behaves the same).
    Nts,
}

/// Why a trailer is not acceptable as NTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrailerError {
    /// Shorter than a header (cannot happen after header parsing, kept total).
    TooShort,
    /// Longer than [`MAX_REQUEST_LEN`].
    TooLong,
    /// Length not a multiple of 4, or an invalid extension field layout.
    Malformed,
}

/// Classifies the bytes after the header of `packet`, whose version field is
/// `version`.
///
/// # Errors
/// See [`TrailerError`].
pub fn classify(packet: &[u8], version: u8) -> Result<Trailer, TrailerError> {
    let len = packet.len();
    if len < HEADER_LEN {
        return Err(TrailerError::TooShort);
    }
    if len > MAX_REQUEST_LEN {
        return Err(TrailerError::TooLong);
    }
    if !len.is_multiple_of(4) {
        return Err(TrailerError::Malformed);
    }
    let rest = packet.get(HEADER_LEN..).unwrap_or_default();
    if rest.is_empty() {
        return Ok(Trailer::None);
    }
    if version <= 3 {
        return Ok(Trailer::Mac);
    }
    if rest.len() == 4 && rest.iter().all(|&b| b == 0) {
        return Ok(Trailer::Mac);
    }
    let mut fields = 0usize;
    let mut nts = false;
    let mut rest = rest;
    while !rest.is_empty() {
        if (MIN_MAC_LEN..=MAX_V4_MAC_LEN).contains(&rest.len()) {
            return Ok(if nts { Trailer::Nts } else { Trailer::Mac });
        }
        if rest.len() <= MAX_V4_MAC_LEN {
            return Err(TrailerError::Malformed);
        }
        let Some(&[t0, t1, l0, l1]) = rest.first_chunk::<4>() else {
            return Err(TrailerError::Malformed);
        };
        let field_type = u16::from_be_bytes([t0, t1]);
        let field_len = usize::from(u16::from_be_bytes([l0, l1]));
        if field_len < MIN_EF_LEN || field_len % 4 != 0 || field_len > rest.len() {
            return Err(TrailerError::Malformed);
        }
        nts |= NTS_FIELD_TYPES.contains(&field_type);
        fields += 1;
        rest = rest.get(field_len..).unwrap_or_default();
    }
    Ok(if nts {
        Trailer::Nts
    } else {
        Trailer::Extensions(fields)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(version: u8, trailer: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        p[0] = (version << 3) | 3;
        p.extend_from_slice(trailer);
        p
    }

    fn field(field_type: u16, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..2].copy_from_slice(&field_type.to_be_bytes());
        f[2..4].copy_from_slice(&u16::try_from(len).unwrap_or(0).to_be_bytes());
        f
    }

    #[test]
    fn plain() {
        assert_eq!(classify(&packet(4, &[]), 4), Ok(Trailer::None));
    }

    #[test]
    fn lengths() {
        assert_eq!(classify(&[0; 47], 4), Err(TrailerError::TooShort));
        assert_eq!(
            classify(&packet(4, &[0; 2]), 4),
            Err(TrailerError::Malformed)
        );
        let big = vec![0u8; MAX_REQUEST_LEN + 4];
        assert_eq!(classify(&big, 4), Err(TrailerError::TooLong));
    }

    #[test]
    fn v3_trailer_is_mac() {
        assert_eq!(classify(&packet(3, &[1; 20]), 3), Ok(Trailer::Mac));
    }

    #[test]
    fn v4_macs_and_nak() {
        assert_eq!(classify(&packet(4, &[0; 4]), 4), Ok(Trailer::Mac));
        assert_eq!(classify(&packet(4, &[1; 20]), 4), Ok(Trailer::Mac));
        assert_eq!(classify(&packet(4, &[1; 24]), 4), Ok(Trailer::Mac));
        assert_eq!(
            classify(&packet(4, &[1; 8]), 4),
            Err(TrailerError::Malformed)
        );
    }

    #[test]
    fn v4_extension_fields() {
        let mut t = field(0x0109, 28);
        assert_eq!(classify(&packet(4, &t), 4), Ok(Trailer::Extensions(1)));
        t.extend(field(0x2005, 32));
        assert_eq!(classify(&packet(4, &t), 4), Ok(Trailer::Extensions(2)));
        t.extend([1u8; 20]);
        assert_eq!(classify(&packet(4, &t), 4), Ok(Trailer::Mac));
    }

    #[test]
    fn v4_nts() {
        let t = field(0x0104, 36);
        assert_eq!(classify(&packet(4, &t), 4), Ok(Trailer::Nts));
    }

    #[test]
    fn v4_bad_field_lengths() {
        let mut t = field(0x0109, 28);
        t[3] = 200; // claims more than present
        assert_eq!(classify(&packet(4, &t), 4), Err(TrailerError::Malformed));
        let mut t = field(0x0109, 28);
        t[3] = 26; // not a multiple of 4
        assert_eq!(classify(&packet(4, &t), 4), Err(TrailerError::Malformed));
        let mut t = field(0x0109, 28);
        t[3] = 0; // zero length would loop forever if accepted
        assert_eq!(classify(&packet(4, &t), 4), Err(TrailerError::Malformed));
    }
}
