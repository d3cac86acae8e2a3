//! `Portmapper`: one namespace's portmapper — registry, statistics and configuration — and the
//! dispatch of program 100000 versions 2, 3 and 4 to their procedures.
//!
//! Why one entry point: the daemon hands every datagram or record to [`Portmapper::handle`] and
//! gets reply bytes plus effects back; nothing here touches a socket or a clock.

use crate::config::Config;
use crate::context::{CallContext, SUPERUSER, Transport};
use crate::outcome::{Answer, DropReason, Effect, Outcome, Refusal, Verdict};
use crate::registry::{Entry, Registry, Removed, SelfTable, SetResult, pmap_of, prot_to_netid};
use crate::rmtcall::{RemoteKind, callit};
use crate::rpc::{
    AcceptStat, AuthStat, CallHeader, PMAP_PROG, RPC_VERSION, check_cred, decode_call,
    encode_accepted, encode_auth_error, encode_rpc_mismatch,
};
use crate::shared_str::SharedStr;
use crate::stats::Stats;
use crate::types::{Netbuf, Pmap, Rpcb, RpcbEntry, encode_list, encode_list_within};
use crate::uaddr::{merge, netconfig, taddr_to_uaddr, uaddr_to_taddr};
use crate::validate::check_set;
use crate::xdr::{XdrReader, XdrWrite};

/// Lowest portmapper version served.
const VERS_LOW: u32 = 2;
/// Highest portmapper version served.
const VERS_HIGH: u32 = 4;

/// One namespace's portmapper state; the daemon keeps one per network namespace.
#[derive(Debug, Clone)]
pub struct Portmapper {
    /// Protocol settings.
    config: Config,
    /// Registrations of this namespace.
    registry: Registry,
    /// GETSTAT counters of this namespace.
    stats: Stats,
    /// UDP replies to non-loopback callers replaced by SYSTEM_ERR because they would have been
    /// more than [`UDP_REPLY_FACTOR`] times their request.
    reflection_refusals: u64,
}

/// A UDP reply to a caller outside this host may be at most this many times its request.
///
/// Why: a UDP source address is not proof of anything, so a larger reply lets anyone aim this
/// namespace's portmapper at a victim as an amplifier. Twice is enough for every reply a remote
/// client legitimately needs over UDP (GETPORT, GETADDR, GETVERSADDR, NULL, GETTIME and the
/// error replies); larger answers (DUMP, GETSTAT, long GETADDRLISTs) are served over TCP.
pub const UDP_REPLY_FACTOR: usize = 2;

impl Portmapper {
    /// A portmapper with its self registrations, as rpcbind makes them: for each endpoint the
    /// daemon listens on, in order, 100000 v2 (udp/tcp only), v3 and v4, owned by "superuser".
    /// `self_endpoints` are (netid, uaddr), e.g. ("udp", "0.0.0.0.0.111"),
    /// ("local", "/run/rpcbind.sock").
    pub fn new<N: AsRef<str>, U: AsRef<str>>(config: Config, self_endpoints: &[(N, U)]) -> Self {
        let endpoints: Vec<(SharedStr, SharedStr)> = self_endpoints
            .iter()
            .map(|(n, u)| (n.as_ref().into(), u.as_ref().into()))
            .collect();
        Self::with_shared_endpoints(config, &endpoints)
    }

    /// As [`Portmapper::new`], the self registrations pointing at the given strings rather
    /// than copies. Why: a daemon makes one portmapper per namespace with the same self
    /// endpoints, and these entries are most of an idle table (issue 16: bytes per namespace).
    pub fn with_shared_endpoints(
        config: Config,
        self_endpoints: &[(SharedStr, SharedStr)],
    ) -> Self {
        Self::with_self_table(config, &SelfTable::new(self_endpoints))
    }

    /// As [`Portmapper::new`], starting from `table`'s self registrations, held in common with
    /// every other portmapper made from it until this one's first change (copy on write).
    pub fn with_self_table(config: Config, table: &SelfTable) -> Self {
        let registry = Registry::from_shared(
            &table.registry,
            config.max_registrations,
            config.max_registration_bytes,
        );
        let stats = Stats::new(config.max_stat_rows);
        Self {
            config,
            registry,
            stats,
            reflection_refusals: 0,
        }
    }

    /// Reloads journaled registrations at start-up, with SET's rules (duplicates, conflicts and
    /// arguments SET refuses today skipped, cap enforced). Returns how many were added.
    pub fn restore(&mut self, entries: impl IntoIterator<Item = Entry>) -> usize {
        entries
            .into_iter()
            .filter(|e| {
                check_set(&e.netid, &e.uaddr, &e.owner).is_ok()
                    && matches!(
                        self.registry
                            .set(e.prog, e.vers, &e.netid, &e.uaddr, &e.owner),
                        SetResult::Added(_)
                    )
            })
            .count()
    }

    /// The registration table, in DUMP order.
    pub fn entries(&self) -> &[Entry] {
        self.registry.entries()
    }

    /// Bytes the registration table is accounted as (the daemon sums them for its memory
    /// ceiling).
    pub fn registration_bytes(&self) -> usize {
        self.registry.bytes()
    }

    /// SETs refused so far because the table had no room left in bytes (for the daemon's log).
    pub fn registrations_refused_for_bytes(&self) -> u64 {
        self.registry.refused_for_bytes()
    }

    /// Holds SETs to `max_bytes` of registrations, or the configured cap if lower. Why: the
    /// daemon's memory ceiling lowers the room of every namespace while the daemon is near it.
    pub fn limit_registration_bytes(&mut self, max_bytes: usize) {
        self.registry
            .set_byte_limit(max_bytes.min(self.config.max_registration_bytes));
    }

    /// The GETSTAT counters (for the daemon's metrics).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// How many UDP replies to non-loopback callers were refused for being more than
    /// [`UDP_REPLY_FACTOR`] times their request (for the daemon's status and metrics).
    pub fn reflection_refusals(&self) -> u64 {
        self.reflection_refusals
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Operator removal of (prog, vers, netid) as superuser (empty netid = all netids). Returns
    /// the removed entries, which the daemon journals.
    pub fn unset_admin(&mut self, prog: u32, vers: u32, netid: &str) -> Removed {
        self.registry
            .unset(prog, vers, netid, SUPERUSER)
            .unwrap_or_default()
    }

    /// Takes back a removal ([`Effect::Unregistered`] or [`Self::unset_admin`]): every entry
    /// returns to its old place in the table.
    ///
    /// Why: the daemon acknowledges a removal only once it is journaled. When the journal write
    /// fails it sends no reply and calls this, so the table again matches both what clients were
    /// told and what a journal replay after a restart rebuilds. Exact only as the next change
    /// after that removal; undo several latest first (a v2 UNSET yields two effects). GETSTAT
    /// counters are not taken back.
    pub fn undo_unset(&mut self, removed: Removed) {
        self.registry.reinsert(removed);
    }

    /// Handles one call: a UDP datagram, or one record reassembled by
    /// [`crate::RecordDecoder`] for TCP/AF_LOCAL. `out` is cleared and receives the reply (not
    /// record-framed); send it iff [`Outcome::should_reply`]. Never panics on any input.
    pub fn handle(&mut self, ctx: &CallContext, request: &[u8], out: &mut Vec<u8>) -> Outcome {
        out.clear();
        let mut effects = Vec::new();
        let h = match decode_call(request) {
            Ok(h) => h,
            Err(e) => return dropped(DropReason::NotACall(e), effects),
        };
        if h.rpcvers != RPC_VERSION {
            encode_rpc_mismatch(out, h.xid);
            return refused(Refusal::RpcMismatch, effects);
        }
        if let Err(stat) = check_cred(&h.cred) {
            encode_auth_error(out, h.xid, stat);
            return refused(Refusal::Auth(stat), effects);
        }
        let answer = if h.prog != PMAP_PROG {
            Answer::Err(Refusal::ProgUnavail)
        } else {
            match h.vers {
                2 => self.v2(ctx, &h, &mut effects),
                3 | 4 => self.v34(ctx, &h, &mut effects),
                _ => Answer::Err(Refusal::ProgMismatch {
                    low: VERS_LOW,
                    high: VERS_HIGH,
                }),
            }
        };
        let verdict = match answer {
            Answer::Ok(body) => {
                encode_accepted(out, h.xid, AcceptStat::Success);
                out.extend_from_slice(&body);
                Verdict::Replied
            }
            Answer::Err(r) => {
                encode_refusal(out, h.xid, r);
                Verdict::Refused(r)
            }
            Answer::Drop(d) => Verdict::Dropped(d),
            Answer::Forward(mut f) => {
                if ctx.transport == Transport::Udp && !ctx.is_loopback_any() {
                    f.pending.max_reply = Some(request.len().saturating_mul(UDP_REPLY_FACTOR));
                }
                effects.push(Effect::Forward(f));
                Verdict::Forwarded
            }
        };
        if ctx.transport == Transport::Udp && out.len() > self.config.udp_max_reply {
            out.clear();
            encode_refusal(out, h.xid, Refusal::SystemErr);
            return refused(Refusal::SystemErr, effects);
        }
        if ctx.transport == Transport::Udp
            && !ctx.is_loopback_any()
            && out.len() > request.len().saturating_mul(UDP_REPLY_FACTOR)
        {
            // The refusal is 24 bytes and a call header at least 40: always within the bound.
            out.clear();
            encode_refusal(out, h.xid, Refusal::SystemErr);
            self.reflection_refusals += 1;
            return refused(Refusal::SystemErr, effects);
        }
        Outcome { verdict, effects }
    }

    /// Version 2 (PMAP) procedures, as rpcbind's `pmap_service`.
    fn v2(&mut self, ctx: &CallContext, h: &CallHeader<'_>, effects: &mut Vec<Effect>) -> Answer {
        self.stats.procinfo(2, h.proc_);
        let mut body = Vec::new();
        match h.proc_ {
            0 => {}
            1 | 2 => {
                let Ok(p) = Pmap::decode(&mut XdrReader::new(h.args)) else {
                    return Answer::Err(Refusal::GarbageArgs);
                };
                if !ctx.may_register(self.config.loopback_may_register) {
                    return Answer::Err(Refusal::Auth(AuthStat::TooWeak));
                }
                let owner = ctx.owner();
                let ok = if h.proc_ == 1 {
                    let ok = match prot_to_netid(p.prot) {
                        Some(netid) => {
                            let port = p.port & 0xffff;
                            let uaddr = format!("0.0.0.0.{}.{}", port >> 8, port & 0xff);
                            self.apply_set(p.prog, p.vers, netid, &uaddr, &owner, effects)
                        }
                        None => false,
                    };
                    self.stats.set(2, ok);
                    ok
                } else {
                    let a = self.apply_unset(p.prog, p.vers, "tcp", &owner, effects);
                    let b = self.apply_unset(p.prog, p.vers, "udp", &owner, effects);
                    self.stats.unset(2, a || b);
                    a || b
                };
                body.put_bool(ok);
            }
            3 => {
                let Ok(p) = Pmap::decode(&mut XdrReader::new(h.args)) else {
                    return Answer::Err(Refusal::GarbageArgs);
                };
                let port = match prot_to_netid(p.prot) {
                    Some(_) => self.registry.find_pmap(p.prog, p.vers, p.prot).unwrap_or(0),
                    None => 0,
                };
                let netid = prot_to_netid(p.prot).unwrap_or("<unknown>");
                self.stats.getaddr(2, p.prog, p.vers, netid, port != 0);
                body.put_u32(port);
            }
            4 => {
                if let Some(r) = self.udp_listing_refusal(ctx) {
                    return Answer::Err(r);
                }
                let (entries, limit) = (self.registry.entries(), self.dump_limit(ctx));
                encode_list_within(
                    &mut body,
                    entries.iter().filter_map(pmap_of),
                    limit,
                    |p, w| {
                        p.encode(w);
                    },
                );
            }
            5 => {
                return callit(
                    RemoteKind::CallitV2,
                    h,
                    ctx,
                    &self.registry,
                    &mut self.stats,
                    self.config.remote_calls,
                );
            }
            _ => return Answer::Err(Refusal::ProcUnavail),
        }
        Answer::Ok(body)
    }

    /// Versions 3 and 4 (RPCBIND) procedures, as rpcbind's `rpcb_service_3/4`.
    fn v34(&mut self, ctx: &CallContext, h: &CallHeader<'_>, effects: &mut Vec<Effect>) -> Answer {
        let vers = h.vers;
        self.stats.procinfo(vers, h.proc_);
        let v4 = vers == 4;
        let mut args = XdrReader::new(h.args);
        let mut body = Vec::new();
        match h.proc_ {
            0 => {}
            1 | 2 => {
                let Ok(r) = Rpcb::decode(&mut args) else {
                    return Answer::Err(Refusal::GarbageArgs);
                };
                if !ctx.may_register(self.config.loopback_may_register) {
                    return Answer::Err(Refusal::Auth(AuthStat::TooWeak));
                }
                let owner = ctx.owner();
                let ok = if h.proc_ == 1 {
                    let ok = check_set(&r.netid, &r.addr, &r.owner).is_ok()
                        && self.apply_set(r.prog, r.vers, &r.netid, &r.addr, &owner, effects);
                    self.stats.set(vers, ok);
                    ok
                } else {
                    let ok = self.apply_unset(r.prog, r.vers, &r.netid, &owner, effects);
                    self.stats.unset(vers, ok);
                    ok
                };
                body.put_bool(ok);
            }
            3 | 9 if h.proc_ == 3 || v4 => {
                let Ok(r) = Rpcb::decode(&mut args) else {
                    return Answer::Err(Refusal::GarbageArgs);
                };
                let uaddr = self.getaddr(ctx, vers, &r, h.proc_ == 3);
                body.put_string(&uaddr);
            }
            4 => {
                if let Some(r) = self.udp_listing_refusal(ctx) {
                    return Answer::Err(r);
                }
                let limit = self.dump_limit(ctx);
                encode_list_within(&mut body, self.registry.entries(), limit, |e, w| {
                    w.put_u32(e.prog);
                    w.put_u32(e.vers);
                    w.put_string(&e.netid);
                    w.put_string(&e.uaddr);
                    w.put_string(&e.owner);
                });
            }
            5 | 10 if h.proc_ == 5 || v4 => {
                let kind = match (vers, h.proc_) {
                    (3, _) => RemoteKind::CallitV3,
                    (_, 5) => RemoteKind::BcastV4,
                    _ => RemoteKind::IndirectV4,
                };
                return callit(
                    kind,
                    h,
                    ctx,
                    &self.registry,
                    &mut self.stats,
                    self.config.remote_calls,
                );
            }
            6 => {
                // xdr_u_long of time_t: 32 bits on the wire.
                body.put_u32(ctx.now_unix as u32);
            }
            7 => {
                let Ok(uaddr) = args.string() else {
                    return Answer::Err(Refusal::GarbageArgs);
                };
                let taddr = netconfig(ctx.netid()).and_then(|(_, f, _)| uaddr_to_taddr(f, &uaddr));
                let nb = match taddr {
                    Some(buf) => Netbuf {
                        maxlen: u32::try_from(buf.len()).unwrap_or(0),
                        buf,
                    },
                    None => Netbuf {
                        maxlen: 0,
                        buf: Vec::new(),
                    },
                };
                nb.encode(&mut body);
            }
            8 => {
                let Ok(nb) = Netbuf::decode(&mut args) else {
                    return Answer::Err(Refusal::GarbageArgs);
                };
                let uaddr = netconfig(ctx.netid())
                    .and_then(|(_, f, _)| taddr_to_uaddr(f, &nb.buf))
                    .unwrap_or_default();
                body.put_string(&uaddr);
            }
            11 if v4 => {
                let Ok(r) = Rpcb::decode(&mut args) else {
                    return Answer::Err(Refusal::GarbageArgs);
                };
                let list = self.getaddrlist(ctx, &r);
                encode_list(&mut body, &list, |e, w| e.encode(w));
            }
            12 if v4 => {
                if let Some(r) = self.udp_listing_refusal(ctx) {
                    return Answer::Err(r);
                }
                self.stats.encode(&mut body);
            }
            _ => return Answer::Err(Refusal::ProcUnavail),
        }
        Answer::Ok(body)
    }

    /// SET through the registry; records the effect. Returns the RPC boolean.
    fn apply_set(
        &mut self,
        prog: u32,
        vers: u32,
        netid: &str,
        uaddr: &str,
        owner: &str,
        effects: &mut Vec<Effect>,
    ) -> bool {
        // The owner argument of the call is not used (the owner is the caller's identity), so
        // only what is stored is checked here; `v34` checks the argument's length.
        if check_set(netid, uaddr, "").is_err() {
            return false;
        }
        match self.registry.set(prog, vers, netid, uaddr, owner) {
            SetResult::Added(e) => {
                effects.push(Effect::Registered(e));
                true
            }
            SetResult::Unchanged => true,
            SetResult::Conflict | SetResult::Full => false,
        }
    }

    /// UNSET through the registry; records the effect. Returns the RPC boolean.
    fn apply_unset(
        &mut self,
        prog: u32,
        vers: u32,
        netid: &str,
        owner: &str,
        effects: &mut Vec<Effect>,
    ) -> bool {
        match self.registry.unset(prog, vers, netid, owner) {
            Ok(removed) => {
                if !removed.is_empty() {
                    effects.push(Effect::Unregistered(removed));
                }
                true
            }
            Err(_) => false,
        }
    }

    /// rpcbind `rpcbproc_getaddr_com`: GETADDR (`allvers`, falls back to another version of the
    /// program) or GETVERSADDR (exact version only), keyed by the *transport's* netid as rpcbind
    /// does (the request's netid is ignored), merged with the local address.
    fn getaddr(&mut self, ctx: &CallContext, vers: u32, r: &Rpcb, allvers: bool) -> String {
        let netid = ctx.netid();
        let uaddr = match self.registry.find_service(r.prog, r.vers, netid) {
            Some(e) if allvers || e.vers == r.vers => merge(&e.uaddr, ctx.local_addr),
            _ => String::new(),
        };
        self.stats
            .getaddr(vers, r.prog, r.vers, netid, !uaddr.is_empty());
        uaddr
    }

    /// rpcbind `rpcbproc_getaddrlist_4_local`: every registration of exactly (prog, vers) in the
    /// transport's protocol family. Unknown netids are skipped (rpcbind would fail the whole call).
    fn getaddrlist(&mut self, ctx: &CallContext, r: &Rpcb) -> Vec<RpcbEntry> {
        let netid = ctx.netid();
        let Some((_, family, _)) = netconfig(netid) else {
            return Vec::new();
        };
        let list: Vec<RpcbEntry> = self
            .registry
            .entries()
            .iter()
            .filter(|e| e.prog == r.prog && e.vers == r.vers)
            .filter_map(|e| {
                let (semantics, fam, proto) = netconfig(&e.netid)?;
                (fam == family).then(|| RpcbEntry {
                    maddr: merge(&e.uaddr, ctx.local_addr),
                    netid: e.netid.to_string(),
                    semantics,
                    protofmly: fam.as_str().to_owned(),
                    proto: proto.to_owned(),
                })
            })
            .collect();
        self.stats
            .getaddr(4, r.prog, r.vers, netid, !list.is_empty());
        list
    }

    /// How many bytes of a DUMP body are worth encoding: over UDP a reply past `udp_max_reply`
    /// becomes a SYSTEM_ERR refusal, so encoding stops there (a large table costs a UDP DUMP
    /// at most that much); over a stream, all of it.
    fn dump_limit(&self, ctx: &CallContext) -> usize {
        if ctx.transport == Transport::Udp {
            self.config.udp_max_reply
        } else {
            usize::MAX
        }
    }

    /// The table, shared (see [`Registry::snapshot`]).
    pub fn registry_snapshot(&self) -> std::sync::Arc<Vec<Entry>> {
        self.registry.snapshot()
    }

    /// Counts a DUMP taken apart from [`Self::handle`] (`dump.rs`) as `handle` counts one.
    pub(crate) fn count_dump(&mut self, vers: u32) {
        self.stats.procinfo(vers, 4);
    }

    /// DUMP (v2/v3/v4) and GETSTAT over UDP from a non-loopback caller are refused with
    /// AUTH_TOOWEAK (when configured): both are reflection amplifiers (their size depends on
    /// what others registered or asked, not on the request), and AUTH_TOOWEAK is what rpcbind
    /// sends when its access check (`check_access` → `svcerr_weakauth`) denies a call, a 20-byte
    /// reply that libtirpc clients report as "authentication error". Over TCP everyone is served.
    fn udp_listing_refusal(&self, ctx: &CallContext) -> Option<Refusal> {
        (ctx.transport == Transport::Udp
            && self.config.udp_dump_loopback_only
            && !ctx.is_loopback_any())
        .then_some(Refusal::Auth(AuthStat::TooWeak))
    }
}

/// Writes the reply for a refusal.
fn encode_refusal(out: &mut Vec<u8>, xid: u32, r: Refusal) {
    match r {
        Refusal::RpcMismatch => encode_rpc_mismatch(out, xid),
        Refusal::Auth(s) => encode_auth_error(out, xid, s),
        Refusal::ProgUnavail => encode_accepted(out, xid, AcceptStat::ProgUnavail),
        Refusal::ProgMismatch { low, high } => {
            encode_accepted(out, xid, AcceptStat::ProgMismatch { low, high });
        }
        Refusal::ProcUnavail => encode_accepted(out, xid, AcceptStat::ProcUnavail),
        Refusal::GarbageArgs => encode_accepted(out, xid, AcceptStat::GarbageArgs),
        Refusal::SystemErr => encode_accepted(out, xid, AcceptStat::SystemErr),
    }
}

/// An outcome that sends nothing.
fn dropped(d: DropReason, effects: Vec<Effect>) -> Outcome {
    Outcome {
        verdict: Verdict::Dropped(d),
        effects,
    }
}

/// An outcome that sends an error reply.
fn refused(r: Refusal, effects: Vec<Effect>) -> Outcome {
    Outcome {
        verdict: Verdict::Refused(r),
        effects,
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
