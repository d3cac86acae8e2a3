//! Minimal XDR (RFC 4506) reader and writer with hard length caps.
//!
//! Why hand-written: the portmapper needs only a few primitive shapes, and owning the reader lets
//! every length be checked against [`MAX_XDR_LEN`] *before* anything is allocated or sliced.

use crate::error::XdrError;

/// Cap on every XDR string or opaque, as rpcbind/libtirpc use (`RPC_MAXDATASIZE`, CVE-2017-8779).
pub const MAX_XDR_LEN: u32 = 9000;

/// Cap on RPC credentials and verifiers (RFC 5531 `MAX_AUTH_BYTES`).
pub(crate) const MAX_AUTH_BYTES: u32 = 400;

/// A cursor over untrusted XDR bytes; every read is bounds-checked and never panics.
#[derive(Debug, Clone)]
pub(crate) struct XdrReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> XdrReader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not yet consumed (e.g. the procedure arguments after an RPC header).
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    /// Takes `n` raw bytes.
    fn take(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        let end = self.pos.checked_add(n).ok_or(XdrError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(XdrError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    /// Reads an unsigned 32-bit integer.
    pub(crate) fn u32(&mut self) -> Result<u32, XdrError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a signed 32-bit integer.
    #[cfg(test)]
    pub(crate) fn i32(&mut self) -> Result<i32, XdrError> {
        self.u32().map(|v| v as i32)
    }

    /// Reads an XDR bool; anything but 0/1 is an error.
    #[cfg(test)]
    pub(crate) fn bool(&mut self) -> Result<bool, XdrError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(XdrError::BadBool(v)),
        }
    }

    /// Reads variable-length opaque data of at most `max` bytes, padding included.
    pub(crate) fn opaque(&mut self, max: u32) -> Result<&'a [u8], XdrError> {
        let len = self.u32()?;
        if len > max {
            return Err(XdrError::TooLong { len, max });
        }
        let len = len as usize;
        let data = self.take(len)?;
        self.take(pad(len))?;
        Ok(data)
    }

    /// Reads a string capped at [`MAX_XDR_LEN`].
    pub(crate) fn string(&mut self) -> Result<String, XdrError> {
        let b = self.opaque(MAX_XDR_LEN)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| XdrError::NotUtf8)
    }
}

/// Number of zero bytes that pad `len` to a multiple of four.
fn pad(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Appends XDR primitives to a byte vector.
pub(crate) trait XdrWrite {
    /// Appends an unsigned 32-bit integer.
    fn put_u32(&mut self, v: u32);
    /// Appends a signed 32-bit integer.
    fn put_i32(&mut self, v: i32) {
        self.put_u32(v as u32);
    }
    /// Appends an XDR bool.
    fn put_bool(&mut self, v: bool) {
        self.put_u32(u32::from(v));
    }
    /// Appends length-prefixed opaque data with padding.
    fn put_opaque(&mut self, data: &[u8]);
    /// Appends an XDR string.
    fn put_string(&mut self, s: &str) {
        self.put_opaque(s.as_bytes());
    }
}

impl XdrWrite for Vec<u8> {
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }

    fn put_opaque(&mut self, data: &[u8]) {
        // Lengths we write come from values we decoded (capped) or built ourselves.
        self.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
        self.extend_from_slice(data);
        self.extend_from_slice(&[0u8; 3][..pad(data.len())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn string_over_cap_is_rejected_before_reading() {
        let mut b = Vec::new();
        b.put_u32(MAX_XDR_LEN + 1);
        let mut r = XdrReader::new(&b);
        assert_eq!(
            r.string(),
            Err(XdrError::TooLong {
                len: MAX_XDR_LEN + 1,
                max: MAX_XDR_LEN
            })
        );
    }

    #[test]
    fn huge_length_is_truncated_not_panic() {
        let b = [0xff, 0xff, 0xff, 0xf0];
        assert!(XdrReader::new(&b).opaque(u32::MAX).is_err());
    }

    #[test]
    fn missing_padding_is_truncated() {
        let b = [0, 0, 0, 1, b'a'];
        assert_eq!(XdrReader::new(&b).string(), Err(XdrError::Truncated));
    }

    #[test]
    fn bad_bool() {
        let b = [0, 0, 0, 2];
        assert_eq!(XdrReader::new(&b).bool(), Err(XdrError::BadBool(2)));
    }

    proptest! {
        #[test]
        fn roundtrip_primitives(a: u32, b: i32, c: bool, s in "[ -~]{0,64}", o in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut w = Vec::new();
            w.put_u32(a);
            w.put_i32(b);
            w.put_bool(c);
            w.put_string(&s);
            w.put_opaque(&o);
            prop_assert_eq!(w.len() % 4, 0);
            let mut r = XdrReader::new(&w);
            prop_assert_eq!(r.u32()?, a);
            prop_assert_eq!(r.i32()?, b);
            prop_assert_eq!(r.bool()?, c);
            prop_assert_eq!(r.string()?, s);
            prop_assert_eq!(r.opaque(MAX_XDR_LEN)?, &o[..]);
            prop_assert!(r.rest().is_empty());
        }
    }
}
