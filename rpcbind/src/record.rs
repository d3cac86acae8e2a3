//! TCP/AF_LOCAL record marking (RFC 5531 §11), sans-IO: feed bytes, get whole records; frame
//! replies.
//!
//! Why a state machine: fragment headers can be split across reads, and the size cap must be
//! enforced before buffering a fragment, not after.

use crate::error::RecordError;

/// Default cap on one record: rpcbind's calls are small (the largest argument is 3 × 9000-byte
/// strings), so 64 KiB leaves room without letting a peer pin memory.
pub const DEFAULT_MAX_RECORD: usize = 64 * 1024;

/// Last-fragment flag in the fragment header.
const LAST_FRAG: u32 = 0x8000_0000;

/// Reassembles records from a byte stream; one decoder per connection.
#[derive(Debug, Clone)]
pub struct RecordDecoder {
    /// Largest record accepted (sum of fragment lengths).
    max: usize,
    /// Fragment header bytes collected so far (0..4 of them).
    header: [u8; 4],
    /// How many of `header` are filled.
    header_len: usize,
    /// Bytes still to read of the current fragment.
    remaining: usize,
    /// Whether the current fragment is the last of its record.
    last: bool,
    /// The record being assembled.
    record: Vec<u8>,
}

impl RecordDecoder {
    /// A decoder that refuses records larger than `max_record` bytes.
    pub fn new(max_record: usize) -> Self {
        Self {
            max: max_record,
            header: [0; 4],
            header_len: 0,
            remaining: 0,
            last: false,
            record: Vec::new(),
        }
    }

    /// Consumes `bytes` and returns every record they complete, in order. On error the stream is
    /// unusable and the daemon should close the connection.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, RecordError> {
        let mut out = Vec::new();
        loop {
            if self.remaining == 0 && self.header_len < 4 {
                // Need (more of) a fragment header.
                if bytes.is_empty() {
                    return Ok(out);
                }
                let n = (4 - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
                if self.header_len < 4 {
                    return Ok(out);
                }
                let h = u32::from_be_bytes(self.header);
                self.last = h & LAST_FRAG != 0;
                let len = (h & !LAST_FRAG) as usize;
                let size = self.record.len().saturating_add(len);
                if size > self.max {
                    return Err(RecordError::TooLarge {
                        size,
                        max: self.max,
                    });
                }
                self.remaining = len;
            }
            let n = self.remaining.min(bytes.len());
            self.record.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.remaining -= n;
            if self.remaining > 0 {
                return Ok(out);
            }
            // Fragment complete.
            self.header_len = 0;
            if self.last {
                self.last = false;
                out.push(std::mem::take(&mut self.record));
            }
        }
    }

    /// True when no partial record or header is buffered (a clean point to close an idle
    /// connection).
    pub fn is_idle(&self) -> bool {
        self.header_len == 0 && self.remaining == 0 && self.record.is_empty()
    }
}

impl Default for RecordDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_RECORD)
    }
}

/// Appends `payload` to `out` as one record (one fragment, or several if it exceeds 2^31 - 1).
pub fn frame_record(payload: &[u8], out: &mut Vec<u8>) {
    const MAX_FRAG: usize = 0x7fff_ffff;
    let mut chunks = payload.chunks(MAX_FRAG).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&LAST_FRAG.to_be_bytes());
        return;
    }
    while let Some(c) = chunks.next() {
        // c.len() <= MAX_FRAG, so it fits in 31 bits.
        let mut h = c.len() as u32;
        if chunks.peek().is_none() {
            h |= LAST_FRAG;
        }
        out.extend_from_slice(&h.to_be_bytes());
        out.extend_from_slice(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn multi_fragment_split_anywhere() {
        let mut s = Vec::new();
        s.extend_from_slice(&3u32.to_be_bytes());
        s.extend_from_slice(b"abc");
        s.extend_from_slice(&0u32.to_be_bytes());
        s.extend_from_slice(&(2 | LAST_FRAG).to_be_bytes());
        s.extend_from_slice(b"de");
        frame_record(b"xyz", &mut s);
        for split in 0..s.len() {
            let mut d = RecordDecoder::new(100);
            let mut got = d.feed(&s[..split]).expect("ok");
            got.extend(d.feed(&s[split..]).expect("ok"));
            assert_eq!(got, vec![b"abcde".to_vec(), b"xyz".to_vec()]);
            assert!(d.is_idle());
        }
    }

    #[test]
    fn too_large_is_error_before_buffering() {
        let mut d = RecordDecoder::new(10);
        let mut s = 8u32.to_be_bytes().to_vec();
        s.extend_from_slice(&[0; 8]);
        s.extend_from_slice(&(3 | LAST_FRAG).to_be_bytes());
        assert_eq!(d.feed(&s), Err(RecordError::TooLarge { size: 11, max: 10 }));
        let mut d = RecordDecoder::new(10);
        assert!(d.feed(&0xffff_ffffu32.to_be_bytes()).is_err());
    }

    #[test]
    fn empty_record() {
        let mut s = Vec::new();
        frame_record(&[], &mut s);
        assert_eq!(RecordDecoder::new(0).feed(&s), Ok(vec![vec![]]));
    }

    proptest! {
        #[test]
        fn roundtrip(records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..5), cut in 1usize..50) {
            let mut s = Vec::new();
            for r in &records {
                frame_record(r, &mut s);
            }
            let mut d = RecordDecoder::new(1000);
            let mut got = Vec::new();
            for c in s.chunks(cut) {
                got.extend(d.feed(c)?);
            }
            prop_assert_eq!(got, records);
        }

        #[test]
        fn junk_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = RecordDecoder::new(64).feed(&b);
        }
    }
}
