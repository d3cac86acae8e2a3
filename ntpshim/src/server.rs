//! The request pipeline: access check → header → version → mode → trailer →
//! clock state → rate limit → reply. Each step either continues or returns an
//! [`Action::Ignore`] with its reason; nothing here can panic on input.

use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

use crate::acl::{AccessList, IpNet, canonical};
use crate::action::{Action, DropReason, ResponseKind};
use crate::clock::ClockStatus;
use crate::interleave::{Interleave, Lookup};
use crate::mono::Mono;
use crate::packet::{HEADER_LEN, Header, Leap, Mode, RefId, write_transmit};
use crate::ratelimit::{RateLimitConfig, RateLimiter, Verdict};
use crate::reply::{ClockState, clock_fields};
use crate::timestamp::NtpTimestamp;
use crate::trailer::{Trailer, TrailerError, classify};

/// The NTP port: an NTPv1 packet from it is a peer's, not a client's.
const NTP_PORT: u16 = 123;

/// Protocol settings of one namespace's NTP server. The daemon converts its
/// TOML into this; I/O settings (listen addresses) stay in the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Networks allowed to get time; empty means everyone (see
    /// [`crate::acl`] for how allow and deny combine).
    pub allow: Vec<IpNet>,
    /// Networks refused; a deny at least as specific as the matching allow wins.
    pub deny: Vec<IpNet>,
    /// Per-client rate limiting; `None` disables it. Default: chrony's
    /// defaults (see [`RateLimitConfig`]).
    pub rate_limit: Option<RateLimitConfig>,
    /// Answer (with leap 3, stratum 16) while our clock is unsynchronised, as
    /// chrony does, so `chronyd -Q`/`ntpdig` can see the state; `false` stays
    /// silent so clients fail over to another server. Default `true`.
    pub answer_unsynchronised: bool,
    /// Answer symmetric active (mode 1) requests with symmetric passive
    /// (mode 2) replies. We never synchronise to such peers. Default `false`:
    /// few deployments use it and it lets anyone set up "peering" traffic.
    pub symmetric: bool,
    /// Serve the host clock at this stratum (1..=15, refid 127.127.1.1) when it
    /// is unsynchronised or too far from its reference, like chrony's
    /// `local stratum N`. Default `None`.
    pub local_stratum: Option<u8>,
    /// Serve interleaved mode to clients that ask (chrony's `xleave`), keeping at most this
    /// many earlier exchanges (see [`crate::interleave`]). `None` (the default here, so the
    /// receive and transmit timestamps are exactly what the caller passed in): basic mode
    /// only. The daemon turns it on by default, as chrony serves it to any client.
    pub interleave: Option<usize>,
    /// Seed for the rate limiter's hash key and leak/kiss coin flips. The
    /// daemon should pass random bits; tests pass constants.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            deny: Vec::new(),
            rate_limit: Some(RateLimitConfig::default()),
            answer_unsynchronised: true,
            symmetric: false,
            local_stratum: None,
            interleave: None,
            seed: 0x6E73_6175_786E_7470,
        }
    }
}

/// One namespace's NTP server: configuration plus rate-limit state. Create
/// one per namespace so no state crosses namespaces.
#[derive(Debug, Clone)]
pub struct Server {
    access: AccessList,
    limiter: Option<RateLimiter>,
    answer_unsynchronised: bool,
    symmetric: bool,
    local_stratum: Option<u8>,
    interleave: Option<Interleave>,
    /// The last reply built was saved as an earlier exchange (see [`Server::wants_kernel_stamp`]).
    last_saved: bool,
}

/// What [`Server::prepare`] decided besides the header: the reply's kind and its
/// interleaved-mode lookup.
struct Prepared {
    header: Header,
    kind: ResponseKind,
    lookup: Lookup,
}

impl Server {
    /// Builds a server from its configuration.
    #[must_use]
    pub fn new(config: Config) -> Self {
        Self {
            access: AccessList::new(config.allow, config.deny),
            limiter: config
                .rate_limit
                .map(|rl| RateLimiter::new(rl, config.seed)),
            answer_unsynchronised: config.answer_unsynchronised,
            symmetric: config.symmetric,
            local_stratum: config.local_stratum,
            interleave: config
                .interleave
                .map(|max| Interleave::new(max, config.seed.rotate_left(17))),
            last_saved: false,
        }
    }

    /// Whether the reply [`Server::handle_from`] just built was saved for interleaved mode, so
    /// the daemon should ask the kernel for its transmit timestamp and hand it back with
    /// [`Server::kernel_transmit`]. Why: replies to basic clients need no stamp, and asking
    /// for one costs the kernel a copy of the packet.
    #[must_use]
    pub const fn wants_kernel_stamp(&self) -> bool {
        self.last_saved
    }

    /// The table of earlier exchanges, if interleaved mode is on (status output).
    #[must_use]
    pub const fn interleave(&self) -> Option<&Interleave> {
        self.interleave.as_ref()
    }

    /// The table of earlier exchanges, to hold it under the daemon's memory ceiling.
    pub const fn interleave_mut(&mut self) -> Option<&mut Interleave> {
        self.interleave.as_mut()
    }

    /// Tells the server when one of its replies really left: `reply` is the reply as sent
    /// (the kernel hands it back with its transmit timestamp), `at` that timestamp. Why: the
    /// next interleaved reply to that client carries it instead of the daemon's earlier clock
    /// read. Anything not one of our 48-byte server replies is ignored.
    pub fn kernel_transmit(&mut self, reply: &[u8], at: NtpTimestamp) {
        let Some(table) = self.interleave.as_mut() else {
            return;
        };
        let Ok(h) = Header::parse(reply) else {
            return;
        };
        if reply.len() == HEADER_LEN && matches!(h.mode, Mode::Server | Mode::SymmetricPassive) {
            table.kernel_transmit(h.receive_ts, at);
        }
    }

    /// The rate limiter, if enabled (for the daemon's status output).
    #[must_use]
    pub const fn rate_limiter(&self) -> Option<&RateLimiter> {
        self.limiter.as_ref()
    }

    /// The rate limiter, to hold its table under the daemon's memory ceiling.
    pub const fn rate_limiter_mut(&mut self) -> Option<&mut RateLimiter> {
        self.limiter.as_mut()
    }

    /// Handles one datagram.
    ///
    /// * `now`: the daemon's monotonic clock, for rate limiting.
    /// * `client`: the source address (IPv4-mapped IPv6 is treated as IPv4).
    /// * `recv_ts`: when the datagram arrived, ideally the kernel's
    ///   `SO_TIMESTAMPNS` time converted with [`NtpTimestamp::from_unix`].
    /// * `request`: the datagram.
    /// * `clock`: a recent [`ClockStatus`].
    /// * `transmit_ts`: reads the real-time clock; called at most once, as the
    ///   last step before returning, and only when a reply is built.
    /// * `out`: the reply buffer, at least 48 bytes.
    ///
    /// On [`Action::Respond`] `out[..len]` holds the reply, and `len` is 48,
    /// never more than `request.len()` (no amplification). Requests with
    /// extension fields are answered with a bare header; requests with a MAC
    /// or NTS fields are dropped (see [`crate::trailer`]).
    ///
    /// Without the client's port an NTPv1 request (mode field 0) is taken to come from a
    /// client port; [`Self::handle_from`] tells them apart as chrony does.
    #[allow(clippy::too_many_arguments)] // flat on purpose: mirrors the datagram's metadata
    pub fn handle(
        &mut self,
        now: Mono,
        client: IpAddr,
        recv_ts: NtpTimestamp,
        request: &[u8],
        clock: &ClockStatus,
        transmit_ts: impl FnOnce() -> NtpTimestamp,
        out: &mut [u8],
    ) -> Action {
        let from = SocketAddr::new(client, 0);
        self.handle_from(now, from, recv_ts, request, clock, transmit_ts, out)
    }

    /// [`Self::handle`] with the client's port. Why the port: NTPv1 has no mode field (it is
    /// reserved, 0) and a v1 request is a client's only when it does not come from port 123
    /// (RFC 1059 §3.2); chrony's `process_rx` (ntp_core.c) answers exactly those, in mode 4,
    /// and drops a v1 packet from port 123 (a peer's, answering it could start a loop).
    #[allow(clippy::too_many_arguments)] // flat on purpose: mirrors the datagram's metadata
    pub fn handle_from(
        &mut self,
        now: Mono,
        from: SocketAddr,
        recv_ts: NtpTimestamp,
        request: &[u8],
        clock: &ClockStatus,
        transmit_ts: impl FnOnce() -> NtpTimestamp,
        out: &mut [u8],
    ) -> Action {
        let client = canonical(from.ip());
        let from_ntp_port = from.port() == NTP_PORT;
        self.last_saved = false;
        // Checked first so a daemon bug cannot spend rate-limit tokens.
        if out.len() < HEADER_LEN {
            return Action::Ignore(DropReason::BufferTooSmall);
        }
        match self.prepare(now, (client, from_ntp_port), recv_ts, request, clock) {
            Ok(Prepared {
                header,
                kind,
                lookup,
            }) => {
                let Some(buf) = out.first_chunk_mut::<HEADER_LEN>() else {
                    return Action::Ignore(DropReason::BufferTooSmall);
                };
                if header.write(buf).is_err() {
                    return Action::Ignore(DropReason::BufferTooSmall);
                }
                // Read the clock as late as possible: everything else is
                // already in the buffer.
                let now_tx = transmit_ts();
                let Some(table) = self.interleave.as_mut() else {
                    write_transmit(buf, now_tx);
                    return Action::Respond {
                        len: HEADER_LEN,
                        kind,
                    };
                };
                let tx = match lookup {
                    Lookup::Interleaved(earlier) => earlier,
                    Lookup::NotAsked | Lookup::Basic => now_tx,
                };
                // chrony's marks: our transmit timestamps have the lowest bit clear (so a
                // basic client's echo never looks interleaved) and never equal the receive or
                // origin timestamp.
                let mut tx = NtpTimestamp::from_bits(tx.to_bits() & !1);
                if tx == header.origin_ts {
                    tx = NtpTimestamp::from_bits(tx.to_bits().wrapping_add(2));
                }
                write_transmit(buf, tx);
                if lookup != Lookup::NotAsked {
                    table.save(header.receive_ts, now_tx);
                    self.last_saved = true;
                }
                Action::Respond {
                    len: HEADER_LEN,
                    kind,
                }
            }
            Err(reason) => Action::Ignore(reason),
        }
    }

    /// Every check, then the reply header without its transmit timestamp.
    fn prepare(
        &mut self,
        now: Mono,
        (client, from_ntp_port): (IpAddr, bool),
        recv_ts: NtpTimestamp,
        request: &[u8],
        clock: &ClockStatus,
    ) -> Result<Prepared, DropReason> {
        if !self.access.is_allowed(client) {
            return Err(DropReason::Denied);
        }
        let request_header = Header::parse(request).map_err(|_| DropReason::TooShort)?;
        if !(1..=4).contains(&request_header.version) {
            return Err(DropReason::BadVersion);
        }
        let v1_client =
            request_header.version == 1 && request_header.mode == Mode::Reserved && !from_ntp_port;
        let reply_mode = if v1_client {
            Mode::Server
        } else {
            self.reply_mode(request_header.mode)?
        };
        match classify(request, request_header.version) {
            Ok(Trailer::None | Trailer::Extensions(_)) => {}
            Ok(Trailer::Mac) => return Err(DropReason::Authenticated),
            Ok(Trailer::Nts) => return Err(DropReason::Nts),
            Err(TrailerError::TooShort) => return Err(DropReason::TooShort),
            Err(TrailerError::TooLong) => return Err(DropReason::TooLong),
            Err(TrailerError::Malformed) => return Err(DropReason::Malformed),
        }
        let fields = clock_fields(clock, self.local_stratum, recv_ts);
        if fields.state == ClockState::Unsynchronised && !self.answer_unsynchronised {
            return Err(DropReason::Unsynchronised);
        }
        let verdict = self
            .limiter
            .as_mut()
            .map_or(Verdict::Pass, |rl| rl.check(now, client));
        let min_poll = self
            .limiter
            .as_ref()
            .map_or(i8::MIN, |rl| rl.config().interval_log2);
        let mut reply = Header {
            leap: fields.leap,
            version: request_header.version,
            mode: reply_mode,
            stratum: fields.stratum,
            poll: request_header.poll.max(min_poll),
            precision: clock.precision,
            root_delay: fields.root_delay,
            root_dispersion: fields.root_dispersion,
            refid: fields.refid,
            reference_ts: fields.reference_ts,
            origin_ts: request_header.transmit_ts,
            receive_ts: recv_ts,
            transmit_ts: NtpTimestamp::ZERO,
        };
        let kind = match verdict {
            Verdict::Drop => return Err(DropReason::RateLimited),
            Verdict::Kiss => {
                reply.leap = Leap::Unsynchronised;
                reply.stratum = 0;
                reply.refid = RefId::RATE;
                ResponseKind::KissRate
            }
            Verdict::Leak => ResponseKind::Leaked,
            Verdict::Pass if fields.state == ClockState::Unsynchronised => {
                ResponseKind::Unsynchronised
            }
            Verdict::Pass => ResponseKind::Time,
        };
        let lookup = self.interleave_lookup(&request_header, &mut reply, kind);
        Ok(Prepared {
            header: reply,
            kind,
            lookup,
        })
    }

    /// chrony's interleaved-mode rules on a reply about to be written: marks its receive
    /// timestamp (lowest bit set, never equal to the origin or the request's origin), and for
    /// an interleaved request whose earlier exchange is held, makes it interleaved (origin =
    /// the request's receive timestamp). See [`crate::interleave`].
    fn interleave_lookup(
        &mut self,
        request: &Header,
        reply: &mut Header,
        kind: ResponseKind,
    ) -> Lookup {
        let Some(table) = self.interleave.as_mut() else {
            return Lookup::NotAsked;
        };
        let asks = Interleave::asks(
            request.version,
            kind == ResponseKind::KissRate,
            request.origin_ts,
            request.receive_ts,
            request.transmit_ts,
        );
        let lookup = if asks {
            table.lookup(request.origin_ts)
        } else {
            Lookup::NotAsked
        };
        if matches!(lookup, Lookup::Interleaved(_)) {
            reply.origin_ts = request.receive_ts;
        }
        let mut rx = reply.receive_ts.to_bits() | 1;
        while rx == reply.origin_ts.to_bits() || rx == request.origin_ts.to_bits() {
            rx = rx.wrapping_add(2);
        }
        reply.receive_ts = NtpTimestamp::from_bits(rx);
        lookup
    }

    fn reply_mode(&self, mode: Mode) -> Result<Mode, DropReason> {
        match mode {
            Mode::Client => Ok(Mode::Server),
            Mode::SymmetricActive if self.symmetric => Ok(Mode::SymmetricPassive),
            Mode::Reserved => Err(DropReason::Mode0),
            Mode::SymmetricActive => Err(DropReason::Mode1),
            Mode::SymmetricPassive => Err(DropReason::Mode2),
            Mode::Server => Err(DropReason::Mode4),
            Mode::Broadcast => Err(DropReason::Mode5),
            Mode::Control => Err(DropReason::Mode6),
            Mode::Private => Err(DropReason::Mode7),
        }
    }
}
