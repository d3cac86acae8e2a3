//! Low-level DNS wire helpers: header fields, the question name, the record walk that finds
//! TTL offsets, and hand-built responses.
//!
//! Why hand-built: the answers the resolver sends are either upstream bytes patched in place
//! (cache hits keep every upstream flag, record and option byte-for-byte) or tiny local/error
//! messages whose layout is fixed. Writing those few bytes directly keeps the client's
//! question exactly as it arrived (case included) and avoids a decode/encode round trip on the
//! hot path. Anything that needs real validation goes through `hickory-proto`.

use hickory_proto::rr::Name;
use smallvec::SmallVec;

/// Length of the fixed DNS header.
pub(crate) const HEADER_LEN: usize = 12;
/// Record type of the EDNS OPT pseudo-record.
pub(crate) const TYPE_OPT: u16 = 41;
/// Record type SOA (negative caching).
pub(crate) const TYPE_SOA: u16 = 6;
/// Record type A.
pub(crate) const TYPE_A: u16 = 1;
/// Record type AAAA.
pub(crate) const TYPE_AAAA: u16 = 28;
/// Record type PTR.
pub(crate) const TYPE_PTR: u16 = 12;
/// Record type ANY.
pub(crate) const TYPE_ANY: u16 = 255;
/// Class IN.
pub(crate) const CLASS_IN: u16 = 1;
/// EDNS option code of Extended DNS Errors (RFC 8914), the only upstream option relayed.
pub(crate) const OPT_EDE: u16 = 15;

/// QR bit: message is a response.
pub(crate) const FLAG_QR: u16 = 0x8000;
/// AA bit: authoritative answer.
pub(crate) const FLAG_AA: u16 = 0x0400;
/// TC bit: truncated.
pub(crate) const FLAG_TC: u16 = 0x0200;
/// RD bit: recursion desired.
pub(crate) const FLAG_RD: u16 = 0x0100;
/// RA bit: recursion available.
pub(crate) const FLAG_RA: u16 = 0x0080;
/// AD bit: authentic data.
pub(crate) const FLAG_AD: u16 = 0x0020;
/// CD bit: checking disabled.
pub(crate) const FLAG_CD: u16 = 0x0010;

/// Response codes used by the resolver itself (the low four bits in the header).
pub(crate) mod rcode {
    /// No error.
    pub(crate) const NOERROR: u16 = 0;
    /// Format error.
    pub(crate) const FORMERR: u16 = 1;
    /// Server failure.
    pub(crate) const SERVFAIL: u16 = 2;
    /// Name does not exist.
    pub(crate) const NXDOMAIN: u16 = 3;
    /// Not implemented.
    pub(crate) const NOTIMP: u16 = 4;
    /// Refused.
    pub(crate) const REFUSED: u16 = 5;
    /// Bad EDNS version (extended, needs OPT).
    pub(crate) const BADVERS: u16 = 16;
}

/// The fixed header, decoded into host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Message ID.
    pub(crate) id: u16,
    /// Flags word (QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE).
    pub(crate) flags: u16,
    /// Question count.
    pub(crate) qdcount: u16,
    /// Answer count.
    pub(crate) ancount: u16,
    /// Authority count.
    pub(crate) nscount: u16,
    /// Additional count.
    pub(crate) arcount: u16,
}

impl Header {
    /// Reads the header, or `None` when fewer than 12 bytes arrived.
    pub(crate) fn read(buf: &[u8]) -> Option<Self> {
        let h = buf.get(..HEADER_LEN)?;
        let w = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        Some(Self {
            id: w(0),
            flags: w(2),
            qdcount: w(4),
            ancount: w(6),
            nscount: w(8),
            arcount: w(10),
        })
    }

    /// The 4-bit opcode.
    pub(crate) fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xF) as u8
    }

    /// The low 4 bits of the RCODE.
    pub(crate) fn rcode_low(&self) -> u16 {
        self.flags & 0xF
    }

    /// Whether `bit` is set in the flags word.
    pub(crate) fn has(&self, bit: u16) -> bool {
        self.flags & bit != 0
    }

    /// Appends the header to `out`.
    pub(crate) fn push(&self, out: &mut Vec<u8>) {
        for w in [
            self.id,
            self.flags,
            self.qdcount,
            self.ancount,
            self.nscount,
            self.arcount,
        ] {
            out.extend_from_slice(&w.to_be_bytes());
        }
    }
}

/// The 16-bit message ID of a DNS message (its first two bytes), `None` when too short.
///
/// Why public: the daemon tracks which attempts a shared upstream socket still carries by
/// ID, and must read it from a reply the same way the core does.
pub fn message_id(message: &[u8]) -> Option<u16> {
    get_u16(message, 0)
}

/// Reads a big-endian u16 at `off`.
pub(crate) fn get_u16(buf: &[u8], off: usize) -> Option<u16> {
    let b = buf.get(off..off.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Reads a big-endian u32 at `off`.
pub(crate) fn get_u32(buf: &[u8], off: usize) -> Option<u32> {
    let b = buf.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Writes a big-endian u16 at `off`; `false` when out of range.
pub(crate) fn put_u16(buf: &mut [u8], off: usize, v: u16) -> bool {
    match buf.get_mut(off..off + 2) {
        Some(b) => {
            b.copy_from_slice(&v.to_be_bytes());
            true
        }
        None => false,
    }
}

/// Writes a big-endian u32 at `off`; `false` when out of range.
pub(crate) fn put_u32(buf: &mut [u8], off: usize, v: u32) -> bool {
    match buf.get_mut(off..off + 4) {
        Some(b) => {
            b.copy_from_slice(&v.to_be_bytes());
            true
        }
        None => false,
    }
}

/// Longest uncompressed wire name (RFC 1035 §3.1).
pub(crate) const MAX_NAME_LEN: usize = 255;

/// An uncompressed wire name held inline: every query carries one, and a heap copy of it was
/// the last allocation on the cache-hit path.
#[derive(Clone, Copy)]
pub(crate) struct WireName {
    len: u8,
    bytes: [u8; MAX_NAME_LEN],
}

impl WireName {
    /// Copies `name`; `None` when it is longer than a wire name may be.
    pub(crate) fn new(name: &[u8]) -> Option<Self> {
        let mut bytes = [0u8; MAX_NAME_LEN];
        bytes.get_mut(..name.len())?.copy_from_slice(name);
        Some(Self {
            len: u8::try_from(name.len()).ok()?,
            bytes,
        })
    }

    /// The same name with ASCII letters folded to lower case (see [`lower_wire_name`]).
    pub(crate) fn lowered(&self) -> Self {
        let mut name = *self;
        name.bytes.make_ascii_lowercase();
        name
    }
}

impl std::ops::Deref for WireName {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl PartialEq for WireName {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for WireName {}

impl std::fmt::Debug for WireName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WireName({:?})", self.escape_ascii().to_string())
    }
}

/// The question of a message, as the raw bytes it arrived in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawQuestion {
    /// Uncompressed wire name, case as received.
    pub(crate) qname: WireName,
    /// Query type.
    pub(crate) qtype: u16,
    /// Query class.
    pub(crate) qclass: u16,
}

impl RawQuestion {
    /// Reads the first question right after the header. Compression pointers are refused:
    /// nothing precedes the first question a pointer could legitimately refer to.
    pub(crate) fn read(buf: &[u8]) -> Option<Self> {
        let end = qname_end(buf, HEADER_LEN)?;
        let qtype = get_u16(buf, end)?;
        let qclass = get_u16(buf, end + 2)?;
        Some(Self {
            qname: WireName::new(buf.get(HEADER_LEN..end)?)?,
            qtype,
            qclass,
        })
    }

    /// Wire length of the question entry (name + type + class).
    pub(crate) fn wire_len(&self) -> usize {
        self.qname.len() + 4
    }

    /// Appends the question entry to `out`.
    pub(crate) fn push(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.qname);
        out.extend_from_slice(&self.qtype.to_be_bytes());
        out.extend_from_slice(&self.qclass.to_be_bytes());
    }

    /// Whether `other` asks the same thing, ignoring ASCII case in the name.
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        self.qtype == other.qtype
            && self.qclass == other.qclass
            && self.qname.eq_ignore_ascii_case(&other.qname)
    }
}

/// Lower-cases the label bytes of an uncompressed wire name (length bytes are < 64 and thus
/// never ASCII letters, so a plain byte-wise fold is exact).
pub(crate) fn lower_wire_name(name: &[u8]) -> Vec<u8> {
    name.to_ascii_lowercase()
}

/// Returns the offset just past an uncompressed name starting at `off`, enforcing the label
/// (63) and name (255) limits. Pointers and reserved label types yield `None`.
pub(crate) fn qname_end(buf: &[u8], off: usize) -> Option<usize> {
    let mut pos = off;
    loop {
        let len = usize::from(*buf.get(pos)?);
        if len == 0 {
            pos += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        pos += 1 + len;
        if pos - off > 254 {
            return None;
        }
    }
    if pos > buf.len() {
        return None;
    }
    Some(pos)
}

/// Converts a parsed `Name` into an uncompressed wire name, preserving case.
pub(crate) fn name_to_wire(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        // Labels from `Name` are at most 63 bytes, so the cast is exact.
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

/// One resource record located in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordPos {
    /// Offset of the owner name.
    pub(crate) start: usize,
    /// Offset of the TTL field.
    pub(crate) ttl_off: usize,
    /// Offset of the RDATA.
    pub(crate) rdata_off: usize,
    /// Offset just past the record.
    pub(crate) end: usize,
    /// Record type.
    pub(crate) rtype: u16,
    /// Section: 0 answer, 1 authority, 2 additional.
    pub(crate) section: u8,
}

/// Where every record of a message sits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Offset just past the question section.
    pub(crate) question_end: usize,
    /// Every record, in message order. Inline up to four: a query carries at most an OPT,
    /// and the walk runs on every query.
    pub(crate) records: SmallVec<[RecordPos; 4]>,
}

/// Returns the offset just past the name at `off`, which may end in a compression pointer.
///
/// Enforces what a decoder must (RFC 1035 §4.1.4, RFC 9267): labels of at most 63 bytes inside
/// the message, no reserved label types, at most 255 bytes once decompressed, and every pointer
/// strictly before the start of the name piece it ends, so pointer chains always terminate
/// (no loops, at most one hop per earlier offset). Walks without allocating: this runs on
/// every query.
pub(crate) fn skip_name(buf: &[u8], off: usize) -> Option<usize> {
    let mut pos = off;
    // Start of the name piece being read: a pointer must point before it.
    let mut piece = off;
    // Where the name ends in the message (set by the first pointer).
    let mut end = None;
    let mut total = 0usize;
    loop {
        let b = *buf.get(pos)?;
        match b & 0xC0 {
            0x00 => {
                let len = usize::from(b);
                total += len + 1;
                if total > 255 || pos + 1 + len > buf.len() {
                    return None;
                }
                if len == 0 {
                    return Some(end.unwrap_or(pos + 1));
                }
                pos += 1 + len;
            }
            0xC0 => {
                let target = usize::from(u16::from_be_bytes([b & 0x3F, *buf.get(pos + 1)?]));
                if target >= piece {
                    return None;
                }
                end.get_or_insert(pos + 2);
                piece = target;
                pos = target;
            }
            // 0x40 (extended) and 0x80 label types are reserved.
            _ => return None,
        }
    }
}

/// Big-endian u16 at `*pos`, advancing past it.
fn take_u16(buf: &[u8], pos: &mut usize) -> Option<u16> {
    let v = get_u16(buf, *pos)?;
    *pos += 2;
    Some(v)
}

/// Walks a whole message and records where each record and its TTL live; `None` for
/// anything malformed (see [`skip_name`]) or with trailing garbage.
pub(crate) fn layout(buf: &[u8]) -> Option<Layout> {
    let header = Header::read(buf)?;
    let mut pos = HEADER_LEN;
    for _ in 0..header.qdcount {
        pos = skip_name(buf, pos)?.checked_add(4)?;
    }
    if pos > buf.len() {
        return None;
    }
    let question_end = pos;
    let counts = [header.ancount, header.nscount, header.arcount];
    let total: usize = counts.iter().map(|c| usize::from(*c)).sum();
    let mut records = SmallVec::with_capacity(total.min(64));
    for (section, count) in counts.iter().enumerate() {
        for _ in 0..*count {
            let start = pos;
            pos = skip_name(buf, pos)?;
            let rtype = take_u16(buf, &mut pos)?;
            take_u16(buf, &mut pos)?;
            let ttl_off = pos;
            get_u32(buf, pos)?;
            pos += 4;
            let rdlen = usize::from(take_u16(buf, &mut pos)?);
            let rdata_off = pos;
            pos = pos.checked_add(rdlen).filter(|&p| p <= buf.len())?;
            records.push(RecordPos {
                start,
                ttl_off,
                rdata_off,
                end: pos,
                rtype,
                section: section as u8,
            });
        }
    }
    if pos != buf.len() {
        return None;
    }
    Some(Layout {
        question_end,
        records,
    })
}

/// EDNS parameters taken from an OPT record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EdnsInfo {
    /// Advertised UDP payload size (raw, may be below 512).
    pub(crate) payload: u16,
    /// DO bit.
    pub(crate) dnssec_ok: bool,
    /// EDNS version.
    pub(crate) version: u8,
    /// Upper 8 bits of the extended RCODE.
    pub(crate) rcode_high: u8,
}

/// Reads the EDNS fields of the OPT record at `rec`.
pub(crate) fn edns_info(buf: &[u8], rec: &RecordPos) -> Option<EdnsInfo> {
    // class sits right before the TTL.
    let payload = get_u16(buf, rec.ttl_off - 2)?;
    let ttl = get_u32(buf, rec.ttl_off)?;
    Some(EdnsInfo {
        payload,
        rcode_high: (ttl >> 24) as u8,
        version: (ttl >> 16) as u8,
        dnssec_ok: ttl & 0x8000 != 0,
    })
}

/// Extracts the options with code `code` (code, length and data) from OPT RDATA.
pub(crate) fn filter_options(rdata: &[u8], code: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let (Some(c), Some(len)) = (get_u16(rdata, pos), get_u16(rdata, pos + 2)) {
        let end = pos + 4 + usize::from(len);
        let Some(opt) = rdata.get(pos..end) else {
            break;
        };
        if c == code {
            out.extend_from_slice(opt);
        }
        pos = end;
    }
    out
}

/// Whether OPT RDATA is a sequence of complete options (code, length, data) and nothing else.
pub(crate) fn options_well_formed(rdata: &[u8]) -> bool {
    let mut pos = 0;
    while pos < rdata.len() {
        let Some(len) = get_u16(rdata, pos + 2) else {
            return false;
        };
        pos += 4 + usize::from(len);
    }
    pos == rdata.len()
}

/// Appends an OPT record (root owner, our payload size, extended RCODE, DO, options).
pub(crate) fn push_opt(
    out: &mut Vec<u8>,
    payload: u16,
    rcode_high: u8,
    dnssec_ok: bool,
    options: &[u8],
) {
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&payload.to_be_bytes());
    let ttl = (u32::from(rcode_high) << 24) | if dnssec_ok { 0x8000 } else { 0 };
    out.extend_from_slice(&ttl.to_be_bytes());
    let len = u16::try_from(options.len()).unwrap_or(0);
    out.extend_from_slice(&len.to_be_bytes());
    if len > 0 {
        out.extend_from_slice(options);
    }
}

/// Builds the flags word of a response from its parts.
pub(crate) fn response_flags(opcode: u8, rcode_low: u16, bits: u16) -> u16 {
    FLAG_QR | (u16::from(opcode & 0xF) << 11) | bits | (rcode_low & 0xF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_is_the_first_two_bytes() {
        assert_eq!(message_id(&[0xAB, 0xCD, 0x81, 0x80]), Some(0xABCD));
        assert_eq!(message_id(&[0x00, 0x01]), Some(1));
        assert_eq!(message_id(&[0xAB]), None);
        assert_eq!(message_id(&[]), None);
    }

    #[test]
    fn qname_limits() {
        let mut buf = vec![0u8; HEADER_LEN];
        buf.extend_from_slice(b"\x03www\x07Example\x03com\x00\x00\x01\x00\x01");
        let q = RawQuestion::read(&buf).expect("valid");
        assert_eq!(&*q.qname, b"\x03www\x07Example\x03com\x00");
        assert_eq!(&*q.qname.lowered(), b"\x03www\x07example\x03com\x00");
        // Pointer in the question is refused.
        let mut bad = vec![0u8; HEADER_LEN];
        bad.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        assert!(RawQuestion::read(&bad).is_none());
        // Label over 63.
        let mut long = vec![0u8; HEADER_LEN];
        long.push(64);
        long.extend_from_slice(&[b'a'; 64]);
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(RawQuestion::read(&long).is_none());
    }

    #[test]
    fn options_filter() {
        let rdata = [0, 10, 0, 2, 1, 2, 0, 15, 0, 3, 0, 5, 9, 0, 12, 0, 0];
        assert_eq!(filter_options(&rdata, OPT_EDE), vec![0, 15, 0, 3, 0, 5, 9]);
        // Truncated option ends the walk without panicking.
        assert!(filter_options(&[0, 15, 0, 9, 1], OPT_EDE).is_empty());
    }

    #[test]
    fn skip_name_follows_backward_pointers_only() {
        // Header, then "a.b." at 12, then "c" + pointer to "b." at 14.
        let mut buf = vec![0u8; HEADER_LEN];
        buf.extend_from_slice(b"\x01a\x01b\x00");
        buf.extend_from_slice(&[1, b'c', 0xC0, 14]);
        assert_eq!(skip_name(&buf, 12), Some(17));
        assert_eq!(skip_name(&buf, 17), Some(21), "ends after the pointer");
        // A pointer to itself, to a later offset, or into its own piece loops: refused.
        let mut own = vec![0u8; HEADER_LEN];
        own.extend_from_slice(&[1, b'x', 0xC0, 12]);
        assert_eq!(skip_name(&own, 12), None);
        let mut fwd = vec![0u8; HEADER_LEN];
        fwd.extend_from_slice(&[0xC0, 14, 0]);
        assert_eq!(skip_name(&fwd, 12), None);
        // Two pieces pointing at each other.
        let mut pair = vec![0u8; HEADER_LEN];
        pair.extend_from_slice(&[1, b'p', 0xC0, 16, 1, b'q', 0xC0, 12]);
        assert_eq!(skip_name(&pair, 16), None);
        // Reserved label types, truncation, pointer cut short.
        for tail in [&[0x40u8, 0][..], &[0x80, 0], &[5, b'a', b'b'], &[0xC0]] {
            let mut b = vec![0u8; HEADER_LEN];
            b.extend_from_slice(tail);
            assert_eq!(skip_name(&b, 12), None, "{tail:?}");
        }
    }

    #[test]
    fn skip_name_bounds_the_decompressed_length() {
        // 127 one-byte labels = 254 bytes with the root: fits; one more label does not.
        let mut ok = vec![0u8; HEADER_LEN];
        for _ in 0..127 {
            ok.extend_from_slice(&[1, b'a']);
        }
        ok.push(0);
        assert_eq!(skip_name(&ok, 12), Some(ok.len()));
        let mut long = vec![0u8; HEADER_LEN];
        for _ in 0..128 {
            long.extend_from_slice(&[1, b'a']);
        }
        long.push(0);
        assert_eq!(skip_name(&long, 12), None);
        // The same limit across a pointer: 100 labels, then 40 more pointing back at them.
        let mut ptr = vec![0u8; HEADER_LEN];
        for _ in 0..100 {
            ptr.extend_from_slice(&[1, b'a']);
        }
        ptr.push(0);
        let second = ptr.len();
        for _ in 0..40 {
            ptr.extend_from_slice(&[1, b'b']);
        }
        ptr.extend_from_slice(&[0xC0, 12]);
        assert_eq!(skip_name(&ptr, second), None, "281 bytes decompressed");
    }
}
