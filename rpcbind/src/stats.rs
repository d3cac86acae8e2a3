//! GETSTAT counters of one namespace, laid out like rpcbind's `rpcb_stat_byvers`.
//!
//! Why kept here: GETSTAT must return them in rpcbind's XDR shape, and counting is a protocol
//! concern; the daemon may read them for its own metrics.

use crate::uaddr::netconfig;
use crate::xdr::XdrWrite;

/// Number of per-procedure counters per version (`RPCBSTAT_HIGHPROC`).
pub const STAT_PROCS: usize = 13;

/// GETADDR/GETPORT lookups of one (prog, vers, netid) (`rpcbs_addrlist`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrStat {
    /// Program asked for.
    pub prog: u32,
    /// Version asked for.
    pub vers: u32,
    /// Transport netid of the lookup.
    pub netid: String,
    /// Lookups that found an address.
    pub success: i32,
    /// Lookups that found nothing.
    pub failure: i32,
}

/// Remote calls to one (prog, vers, proc, netid) (`rpcbs_rmtcalllist`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RmtStat {
    /// Target program.
    pub prog: u32,
    /// Target version.
    pub vers: u32,
    /// Target procedure.
    pub proc_: u32,
    /// Transport netid of the call.
    pub netid: String,
    /// Calls whose exact version was registered.
    pub success: i32,
    /// Calls whose target was missing or of another version.
    pub failure: i32,
    /// Calls made through INDIRECT (rpcbind counts the first call of a row too).
    pub indirect: i32,
}

/// Counters of one portmapper version (`rpcb_stat`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersStats {
    /// Calls per procedure number.
    pub info: [i32; STAT_PROCS],
    /// Successful SETs.
    pub setinfo: i32,
    /// Successful UNSETs.
    pub unsetinfo: i32,
    /// Lookup rows, newest first (rpcbind prepends).
    pub addrinfo: Vec<AddrStat>,
    /// Remote-call rows, newest first.
    pub rmtinfo: Vec<RmtStat>,
}

/// Per-namespace statistics for versions 2, 3 and 4 (index 0, 1, 2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Counters by version, index = version - 2.
    pub by_vers: [VersStats; 3],
    /// Cap on rows per list (see [`crate::Config::max_stat_rows`]).
    max_rows: usize,
}

/// Highest procedure counted per version (`rpcb_highproc_2/3/4`).
const HIGHPROC: [u32; 3] = [5, 8, 12];

impl Stats {
    /// Empty counters with at most `max_rows` lookup/remote-call rows per version.
    pub fn new(max_rows: usize) -> Self {
        Self {
            by_vers: Default::default(),
            max_rows,
        }
    }

    /// The counters of portmapper version `vers` (2..=4).
    fn vers_mut(&mut self, vers: u32) -> Option<&mut VersStats> {
        self.by_vers.get_mut(vers.checked_sub(2)? as usize)
    }

    /// `rpcbs_procinfo`: one call of `proc_` in `vers` (ignored past the version's last proc).
    pub(crate) fn procinfo(&mut self, vers: u32, proc_: u32) {
        let high = vers
            .checked_sub(2)
            .and_then(|i| HIGHPROC.get(i as usize))
            .copied();
        if let (Some(high), Some(v)) = (high, self.vers_mut(vers))
            && proc_ <= high
            && let Some(c) = v.info.get_mut(proc_ as usize)
        {
            *c = c.wrapping_add(1);
        }
    }

    /// `rpcbs_set`: counts successful SETs only.
    pub(crate) fn set(&mut self, vers: u32, ok: bool) {
        if let (true, Some(v)) = (ok, self.vers_mut(vers)) {
            v.setinfo = v.setinfo.wrapping_add(1);
        }
    }

    /// `rpcbs_unset`: counts successful UNSETs only.
    pub(crate) fn unset(&mut self, vers: u32, ok: bool) {
        if let (true, Some(v)) = (ok, self.vers_mut(vers)) {
            v.unsetinfo = v.unsetinfo.wrapping_add(1);
        }
    }

    /// `rpcbs_getaddr`: one lookup of (prog, vers) on `netid`; rows only for known netids.
    pub(crate) fn getaddr(&mut self, vers: u32, prog: u32, pvers: u32, netid: &str, found: bool) {
        let max = self.max_rows;
        let Some(v) = self.vers_mut(vers) else { return };
        if let Some(row) = v
            .addrinfo
            .iter_mut()
            .find(|r| r.prog == prog && r.vers == pvers && r.netid == netid)
        {
            if found {
                row.success = row.success.wrapping_add(1);
            } else {
                row.failure = row.failure.wrapping_add(1);
            }
            return;
        }
        if netconfig(netid).is_none() || v.addrinfo.len() >= max {
            return;
        }
        v.addrinfo.insert(
            0,
            AddrStat {
                prog,
                vers: pvers,
                netid: netid.to_owned(),
                success: i32::from(found),
                failure: i32::from(!found),
            },
        );
    }

    /// `rpcbs_rmtcall`: one remote call; `found` = the exact version was registered.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rmtcall(
        &mut self,
        vers: u32,
        indirect: bool,
        prog: u32,
        pvers: u32,
        proc_: u32,
        netid: &str,
        found: bool,
    ) {
        let max = self.max_rows;
        let Some(v) = self.vers_mut(vers) else { return };
        if let Some(row) = v
            .rmtinfo
            .iter_mut()
            .find(|r| r.prog == prog && r.vers == pvers && r.proc_ == proc_ && r.netid == netid)
        {
            if found {
                row.success = row.success.wrapping_add(1);
            } else {
                row.failure = row.failure.wrapping_add(1);
            }
            if indirect {
                row.indirect = row.indirect.wrapping_add(1);
            }
            return;
        }
        if netconfig(netid).is_none() || v.rmtinfo.len() >= max {
            return;
        }
        v.rmtinfo.insert(
            0,
            RmtStat {
                prog,
                vers: pvers,
                proc_,
                netid: netid.to_owned(),
                success: i32::from(found),
                failure: i32::from(!found),
                indirect: 1,
            },
        );
    }

    /// Encodes `rpcb_stat_byvers` as rpcbind's GETSTAT returns it.
    pub(crate) fn encode(&self, w: &mut Vec<u8>) {
        for v in &self.by_vers {
            for c in v.info {
                w.put_i32(c);
            }
            w.put_i32(v.setinfo);
            w.put_i32(v.unsetinfo);
            for a in &v.addrinfo {
                w.put_bool(true);
                w.put_u32(a.prog);
                w.put_u32(a.vers);
                w.put_i32(a.success);
                w.put_i32(a.failure);
                w.put_string(&a.netid);
            }
            w.put_bool(false);
            for r in &v.rmtinfo {
                w.put_bool(true);
                w.put_u32(r.prog);
                w.put_u32(r.vers);
                w.put_u32(r.proc_);
                w.put_i32(r.success);
                w.put_i32(r.failure);
                w.put_i32(r.indirect);
                w.put_string(&r.netid);
            }
            w.put_bool(false);
        }
    }
}

#[cfg(test)]
pub(crate) fn decode_stats(
    r: &mut crate::xdr::XdrReader<'_>,
) -> Result<[VersStats; 3], crate::error::XdrError> {
    use crate::types::decode_list;
    let mut out: [VersStats; 3] = Default::default();
    for v in &mut out {
        for c in &mut v.info {
            *c = r.i32()?;
        }
        v.setinfo = r.i32()?;
        v.unsetinfo = r.i32()?;
        v.addrinfo = decode_list(r, |r| {
            Ok(AddrStat {
                prog: r.u32()?,
                vers: r.u32()?,
                success: r.i32()?,
                failure: r.i32()?,
                netid: r.string()?,
            })
        })?;
        v.rmtinfo = decode_list(r, |r| {
            Ok(RmtStat {
                prog: r.u32()?,
                vers: r.u32()?,
                proc_: r.u32()?,
                success: r.i32()?,
                failure: r.i32()?,
                indirect: r.i32()?,
                netid: r.string()?,
            })
        })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdr::XdrReader;
    use proptest::prelude::*;

    #[test]
    fn counts_like_rpcbind() {
        let mut s = Stats::new(2);
        s.procinfo(2, 5);
        s.procinfo(2, 6); // past v2's last proc: ignored
        s.procinfo(4, 12);
        s.procinfo(9, 0);
        s.set(3, true);
        s.set(3, false);
        s.getaddr(4, 100003, 3, "tcp", true);
        s.getaddr(4, 100003, 3, "tcp", false);
        s.getaddr(4, 1, 1, "<unknown>", false);
        s.getaddr(4, 2, 1, "udp", false);
        s.getaddr(4, 3, 1, "udp", false); // over the row cap
        assert_eq!(s.by_vers[0].info[5], 1);
        assert_eq!(s.by_vers[2].info[12], 1);
        assert_eq!(s.by_vers[1].setinfo, 1);
        assert_eq!(s.by_vers[2].addrinfo.len(), 2);
        assert_eq!(s.by_vers[2].addrinfo[1].success, 1);
        assert_eq!(s.by_vers[2].addrinfo[1].failure, 1);
        s.rmtcall(4, true, 7, 1, 0, "udp", true);
        s.rmtcall(4, false, 7, 1, 0, "udp", false);
        assert_eq!(s.by_vers[2].rmtinfo[0].indirect, 1);
        assert_eq!(s.by_vers[2].rmtinfo[0].failure, 1);
    }

    proptest! {
        #[test]
        fn stats_roundtrip(ops in proptest::collection::vec((2u32..5, 0u32..14, any::<u32>(), 0u32..3, any::<bool>()), 0..40)) {
            let mut s = Stats::new(16);
            let netids = ["udp", "tcp6", "local"];
            for (v, p, prog, n, ok) in ops {
                s.procinfo(v, p);
                s.set(v, ok);
                s.unset(v, !ok);
                s.getaddr(v, prog % 4, p, netids[n as usize], ok);
                s.rmtcall(v, ok, prog % 4, 1, p, netids[n as usize], !ok);
            }
            let mut w = Vec::new();
            s.encode(&mut w);
            let mut r = XdrReader::new(&w);
            prop_assert_eq!(decode_stats(&mut r)?, s.by_vers.clone());
            prop_assert!(r.rest().is_empty());
        }
    }
}
