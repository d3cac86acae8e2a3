//! A small DNS message reader for the comparison: names decompressed and lower-cased, RDATA
//! with names (CNAME, NS, PTR, MX, SRV, SOA) rewritten without compression, so two servers
//! that compress differently compare equal. Why not hickory: the test crate keeps to its
//! own few dependencies, and this needs only the header, names and raw RDATA.

/// One resource record, normalized.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Rec {
    /// Owner, lower case.
    pub(super) name: String,
    /// Type.
    pub(super) rtype: u16,
    /// Class.
    pub(super) class: u16,
    /// RDATA in hex, names decompressed.
    pub(super) rdata: String,
}

/// The client's view of an OPT record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Opt {
    /// EDNS version.
    pub(super) version: u8,
    /// DO bit.
    pub(super) dnssec_ok: bool,
}

/// A parsed message.
#[derive(Debug, Clone)]
pub(super) struct Msg {
    /// Header flags word (QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE low bits).
    pub(super) flags: u16,
    /// Questions: name (case kept), type, class.
    pub(super) questions: Vec<(String, u16, u16)>,
    /// Answer, authority and additional (OPT left out) sections, each sorted.
    pub(super) sections: [Vec<Rec>; 3],
    /// The OPT record, if any.
    pub(super) opt: Option<Opt>,
    /// The extended RCODE (OPT high bits joined with the header's).
    pub(super) rcode: u16,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Reads the name at `at`: (dotted name, offset past it in the message).
fn name(b: &[u8], at: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut pos = at;
    let mut end = None;
    for _ in 0..128 {
        let len = *b.get(pos)?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                if out.is_empty() {
                    out.push('.');
                }
                return Some((out, end.unwrap_or(pos + 1)));
            }
            0x00 => {
                let label = b.get(pos + 1..pos + 1 + usize::from(len))?;
                for &c in label {
                    if c.is_ascii_graphic() && c != b'.' && c != b'\\' {
                        out.push(char::from(c));
                    } else {
                        out.push_str(&format!("\\{c:03}"));
                    }
                }
                out.push('.');
                pos += 1 + usize::from(len);
            }
            0xC0 => {
                let ptr = usize::from(u16_at(b, pos)? & 0x3FFF);
                end.get_or_insert(pos + 2);
                pos = ptr;
            }
            _ => return None,
        }
    }
    None
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// RDATA of a record at `[start, end)`, names decompressed for the types that carry them.
fn rdata(b: &[u8], rtype: u16, start: usize, end: usize) -> Option<String> {
    let names_then = |skip: usize, names: usize| -> Option<String> {
        let mut s = hex(b.get(start..start + skip)?);
        let mut pos = start + skip;
        for _ in 0..names {
            let (n, next) = name(b, pos)?;
            s.push(' ');
            s.push_str(&n.to_ascii_lowercase());
            pos = next;
        }
        s.push(' ');
        s.push_str(&hex(b.get(pos..end)?));
        Some(s)
    };
    match rtype {
        2 | 5 | 12 => names_then(0, 1),
        15 => names_then(2, 1),
        33 => names_then(6, 1),
        6 => names_then(0, 2),
        _ => Some(hex(b.get(start..end)?)),
    }
}

/// Parses a whole message; `None` if it does not walk.
pub(super) fn parse(b: &[u8]) -> Option<Msg> {
    let flags = u16_at(b, 2)?;
    let counts = [u16_at(b, 4)?, u16_at(b, 6)?, u16_at(b, 8)?, u16_at(b, 10)?];
    let mut pos = 12;
    let mut questions = Vec::new();
    for _ in 0..counts[0] {
        let (n, next) = name(b, pos)?;
        questions.push((n, u16_at(b, next)?, u16_at(b, next + 2)?));
        pos = next + 4;
    }
    let mut sections: [Vec<Rec>; 3] = Default::default();
    let mut opt = None;
    let mut rcode = flags & 0xF;
    for (i, count) in counts[1..].iter().enumerate() {
        for _ in 0..*count {
            let (n, next) = name(b, pos)?;
            let rtype = u16_at(b, next)?;
            let class = u16_at(b, next + 2)?;
            let ttl_hi = u16_at(b, next + 4)?;
            let ttl_lo = u16_at(b, next + 6)?;
            let len = usize::from(u16_at(b, next + 8)?);
            let start = next + 10;
            let end = start + len;
            if end > b.len() {
                return None;
            }
            if rtype == 41 {
                rcode |= (ttl_hi >> 8) << 4;
                opt = Some(Opt {
                    version: (ttl_hi & 0xFF) as u8,
                    dnssec_ok: ttl_lo & 0x8000 != 0,
                });
            } else {
                sections[i].push(Rec {
                    name: n.to_ascii_lowercase(),
                    rtype,
                    class,
                    rdata: rdata(b, rtype, start, end)?,
                });
            }
            pos = end;
        }
    }
    for s in &mut sections {
        s.sort();
    }
    Some(Msg {
        flags,
        questions,
        sections,
        opt,
        rcode,
    })
}

/// Builds a query: `flags` is the whole flags word, `edns` = (payload, DO, version).
pub(super) fn query(
    id: u16,
    flags: u16,
    questions: &[(&str, u16, u16)],
    edns: Option<(u16, bool, u8)>,
) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&flags.to_be_bytes());
    let qd = u16::try_from(questions.len()).unwrap_or(0);
    q.extend_from_slice(&qd.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for (n, t, c) in questions {
        for label in n.split('.').filter(|l| !l.is_empty()) {
            q.push(u8::try_from(label.len()).unwrap_or(63));
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&t.to_be_bytes());
        q.extend_from_slice(&c.to_be_bytes());
    }
    if let Some((payload, dnssec_ok, version)) = edns {
        q.push(0);
        q.extend_from_slice(&41u16.to_be_bytes());
        q.extend_from_slice(&payload.to_be_bytes());
        q.extend_from_slice(&[0, version]);
        q.extend_from_slice(&(if dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
        q.extend_from_slice(&[0, 0]);
    }
    q
}
