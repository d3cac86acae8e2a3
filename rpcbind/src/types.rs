//! The portmapper's own XDR types (RFC 1833 and rpcbind's `rpcb_prot.x`), with encode/decode.
//!
//! Why a separate module: these shapes are shared by several procedures and are what the
//! round-trip property tests pin down.

use crate::error::XdrError;
use crate::xdr::{XdrReader, XdrWrite};

/// Cap on decoded list lengths in replies we parse (tests, liveness probes); replies we build are
/// bounded by the registry cap instead.
#[cfg(test)]
const MAX_LIST: usize = 4096;

/// Version 2 mapping (`struct pmap`): program, version, IP protocol number and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pmap {
    /// RPC program number.
    pub(crate) prog: u32,
    /// RPC program version.
    pub(crate) vers: u32,
    /// IP protocol: 6 (TCP) or 17 (UDP).
    pub(crate) prot: u32,
    /// Port number (only the low 16 bits are meaningful, as in rpcbind).
    pub(crate) port: u32,
}

impl Pmap {
    /// Decodes a `pmap` argument.
    pub(crate) fn decode(r: &mut XdrReader<'_>) -> Result<Self, XdrError> {
        Ok(Self {
            prog: r.u32()?,
            vers: r.u32()?,
            prot: r.u32()?,
            port: r.u32()?,
        })
    }

    /// Encodes a `pmap`.
    pub(crate) fn encode(&self, w: &mut Vec<u8>) {
        w.put_u32(self.prog);
        w.put_u32(self.vers);
        w.put_u32(self.prot);
        w.put_u32(self.port);
    }
}

/// Version 3/4 mapping (`struct rpcb`): program, version, netid, universal address, owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rpcb {
    /// RPC program number.
    pub(crate) prog: u32,
    /// RPC program version.
    pub(crate) vers: u32,
    /// Transport id ("udp", "tcp6", "local", ...).
    pub(crate) netid: String,
    /// Universal address (RFC 1833 section 2.2 / libtirpc format).
    pub(crate) addr: String,
    /// Owner string; ignored on input (the owner comes from the caller's credentials).
    pub(crate) owner: String,
}

impl Rpcb {
    /// Decodes an `rpcb` argument; every string is capped at 9000 bytes.
    pub(crate) fn decode(r: &mut XdrReader<'_>) -> Result<Self, XdrError> {
        Ok(Self {
            prog: r.u32()?,
            vers: r.u32()?,
            netid: r.string()?,
            addr: r.string()?,
            owner: r.string()?,
        })
    }

    /// Encodes an `rpcb`.
    #[cfg(test)]
    pub(crate) fn encode(&self, w: &mut Vec<u8>) {
        w.put_u32(self.prog);
        w.put_u32(self.vers);
        w.put_string(&self.netid);
        w.put_string(&self.addr);
        w.put_string(&self.owner);
    }
}

/// One element of a GETADDRLIST reply (`struct rpcb_entry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RpcbEntry {
    /// Merged universal address the caller can use.
    pub(crate) maddr: String,
    /// Netid of the registration.
    pub(crate) netid: String,
    /// Netconfig semantics (1 = CLTS, 2 = COTS, 3 = COTS_ORD).
    pub(crate) semantics: u32,
    /// Protocol family ("inet", "inet6", "loopback").
    pub(crate) protofmly: String,
    /// Protocol ("udp", "tcp", "-").
    pub(crate) proto: String,
}

impl RpcbEntry {
    /// Decodes an `rpcb_entry`.
    #[cfg(test)]
    pub(crate) fn decode(r: &mut XdrReader<'_>) -> Result<Self, XdrError> {
        Ok(Self {
            maddr: r.string()?,
            netid: r.string()?,
            semantics: r.u32()?,
            protofmly: r.string()?,
            proto: r.string()?,
        })
    }

    /// Encodes an `rpcb_entry`.
    pub(crate) fn encode(&self, w: &mut Vec<u8>) {
        w.put_string(&self.maddr);
        w.put_string(&self.netid);
        w.put_u32(self.semantics);
        w.put_string(&self.protofmly);
        w.put_string(&self.proto);
    }
}

/// A transport address as raw `struct sockaddr` bytes (`struct netbuf`), used by
/// UADDR2TADDR/TADDR2UADDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Netbuf {
    /// Buffer size the sender had; echoed, not interpreted.
    pub(crate) maxlen: u32,
    /// The sockaddr bytes.
    pub(crate) buf: Vec<u8>,
}

impl Netbuf {
    /// Decodes a `netbuf` (buffer capped at 9000 bytes).
    pub(crate) fn decode(r: &mut XdrReader<'_>) -> Result<Self, XdrError> {
        let maxlen = r.u32()?;
        let buf = r.opaque(crate::xdr::MAX_XDR_LEN)?.to_vec();
        Ok(Self { maxlen, buf })
    }

    /// Encodes a `netbuf`.
    pub(crate) fn encode(&self, w: &mut Vec<u8>) {
        w.put_u32(self.maxlen);
        w.put_opaque(&self.buf);
    }
}

/// Arguments of CALLIT/BCAST/INDIRECT (`rpcb_rmtcallargs`, same shape as v2 `rmtcallargs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RmtCallArgs {
    /// Target program.
    pub(crate) prog: u32,
    /// Target version.
    pub(crate) vers: u32,
    /// Target procedure.
    pub(crate) proc_: u32,
    /// XDR-encoded arguments for the target procedure.
    pub(crate) args: Vec<u8>,
}

impl RmtCallArgs {
    /// Decodes remote-call arguments (args capped at 9000 bytes).
    pub(crate) fn decode(r: &mut XdrReader<'_>) -> Result<Self, XdrError> {
        Ok(Self {
            prog: r.u32()?,
            vers: r.u32()?,
            proc_: r.u32()?,
            args: r.opaque(crate::xdr::MAX_XDR_LEN)?.to_vec(),
        })
    }

    /// Encodes remote-call arguments.
    #[cfg(test)]
    pub(crate) fn encode(&self, w: &mut Vec<u8>) {
        w.put_u32(self.prog);
        w.put_u32(self.vers);
        w.put_u32(self.proc_);
        w.put_opaque(&self.args);
    }
}

/// Encodes an XDR optional-data linked list (`*next` chains): `1, item, 1, item, ..., 0`.
pub(crate) fn encode_list<T>(w: &mut Vec<u8>, items: &[T], mut f: impl FnMut(&T, &mut Vec<u8>)) {
    for it in items {
        w.put_bool(true);
        f(it, w);
    }
    w.put_bool(false);
}

/// [`encode_list`] over an iterator that stops early once `w` holds more than `limit` bytes,
/// leaving the list unterminated: a UDP DUMP past `udp_max_reply` is replaced by a refusal
/// anyway, so encoding the rest of a large table would only cost time.
pub(crate) fn encode_list_within<T>(
    w: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    limit: usize,
    mut f: impl FnMut(&T, &mut Vec<u8>),
) {
    for it in items {
        if w.len() > limit {
            return;
        }
        w.put_bool(true);
        f(&it, w);
    }
    w.put_bool(false);
}

#[cfg(test)]
/// Decodes an XDR optional-data linked list, capped at an internal maximum length.
pub(crate) fn decode_list<'a, T>(
    r: &mut XdrReader<'a>,
    mut f: impl FnMut(&mut XdrReader<'a>) -> Result<T, XdrError>,
) -> Result<Vec<T>, XdrError> {
    let mut v = Vec::new();
    while r.bool()? {
        if v.len() >= MAX_LIST {
            return Err(XdrError::ListTooLong);
        }
        v.push(f(r)?);
    }
    Ok(v)
}

#[cfg(test)]
pub(crate) mod strategies {
    //! Proptest generators shared by the round-trip tests.
    use super::*;
    use proptest::prelude::*;

    /// Short printable strings, as netids and addresses are.
    pub(crate) fn s() -> impl Strategy<Value = String> {
        "[ -~]{0,40}"
    }

    /// Any `rpcb`.
    pub(crate) fn rpcb() -> impl Strategy<Value = Rpcb> {
        (any::<u32>(), any::<u32>(), s(), s(), s()).prop_map(|(prog, vers, netid, addr, owner)| {
            Rpcb {
                prog,
                vers,
                netid,
                addr,
                owner,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::strategies::*;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pmap_roundtrip(prog: u32, vers: u32, prot: u32, port: u32) {
            let p = Pmap { prog, vers, prot, port };
            let mut w = Vec::new();
            p.encode(&mut w);
            prop_assert_eq!(Pmap::decode(&mut XdrReader::new(&w))?, p);
        }

        #[test]
        fn rpcb_roundtrip(r in rpcb()) {
            let mut w = Vec::new();
            r.encode(&mut w);
            prop_assert_eq!(Rpcb::decode(&mut XdrReader::new(&w))?, r);
        }

        #[test]
        fn rpcb_entry_roundtrip(maddr in s(), netid in s(), semantics: u32, protofmly in s(), proto in s()) {
            let e = RpcbEntry { maddr, netid, semantics, protofmly, proto };
            let mut w = Vec::new();
            e.encode(&mut w);
            prop_assert_eq!(RpcbEntry::decode(&mut XdrReader::new(&w))?, e);
        }

        #[test]
        fn netbuf_roundtrip(maxlen: u32, buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let n = Netbuf { maxlen, buf };
            let mut w = Vec::new();
            n.encode(&mut w);
            prop_assert_eq!(Netbuf::decode(&mut XdrReader::new(&w))?, n);
        }

        #[test]
        fn rmtcall_roundtrip(prog: u32, vers: u32, proc_: u32, args in proptest::collection::vec(any::<u8>(), 0..64)) {
            let a = RmtCallArgs { prog, vers, proc_, args };
            let mut w = Vec::new();
            a.encode(&mut w);
            prop_assert_eq!(RmtCallArgs::decode(&mut XdrReader::new(&w))?, a);
        }

        #[test]
        fn list_roundtrip(items in proptest::collection::vec(rpcb(), 0..8)) {
            let mut w = Vec::new();
            encode_list(&mut w, &items, |r, w| r.encode(w));
            let back = decode_list(&mut XdrReader::new(&w), Rpcb::decode)?;
            prop_assert_eq!(back, items);
        }
    }
}
