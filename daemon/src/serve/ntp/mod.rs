//! The `ntp` service: an NTP server in every namespace, serving the host clock.
//!
//! `CLOCK_REALTIME` is one clock for every namespace (time namespaces only shift the monotonic
//! clocks), so one daemon can answer truthfully everywhere. The protocol is `nsaux-ntpshim`'s
//! sans-IO [`Server`]; this module feeds it:
//!
//! * **Receive time**: the kernel's `SO_TIMESTAMPNS` stamp of the datagram (the listeners ask
//!   for it), so time spent queued in the daemon does not count as network delay.
//! * **Transmit time**: read by the core's closure as its last step before the reply is sent.
//! * **Clock status**: `adjtimex` with modes 0, read at most once a second for all namespaces
//!   (the kernel's `maxerror` grows only 500 µs/s, so a second-old reading is good enough).
//! * **Precision**: measured once at start (the time between two clock reads, never below
//!   `clock_getres`).
//! * **Stratum and reference ID**: the kernel does not know them. They come from the `[ntp]`
//!   section or are copied from the local NTP daemon that disciplines the clock
//!   (`reference = "127.0.0.1:123"`, queried from the daemon's own namespace; see
//!   the `reference` submodule). The copy is refreshed lazily: a request (or
//!   `nsauxctl ntp status`) that finds it older than `reference_max_age` starts one
//!   asynchronous query and is answered from the old copy. No timer runs, so an idle daemon
//!   uses no CPU.
//!
//! * **Interleaved mode** (`interleaved`, on by default): replies to clients that ask for it
//!   leave with a request for their kernel transmit timestamp, read back from the socket's
//!   error queue (the `xleave` submodule); the core keeps them for the client's next request.
//!
//! Each namespace has its own [`Server`] (rate-limit table, table of earlier exchanges) and
//! [`Stats`]; nothing about one namespace's clients is visible to another.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nsaux_ntpshim::reply::{ClockState, clock_fields};
use nsaux_ntpshim::{
    Action, ClockStatus, Config as ServerConfig, HEADER_LEN, KernelTimex, Leap, Mono, NtpTimestamp,
    RateLimitConfig, RefId, Server, Stats, precision_from_resolution_ns,
};
use serde_json::{Value, json};

use super::UdpEndpoint;
use super::{
    ConnFuture, Connection, Datagram, ListenerSpec, NsInfo, NsService, Replies, ReplyTo,
    ServiceKind,
};
use crate::config::{NtpConfig, ServicesConfig};
use crate::lock::lock;
use crate::sys;

mod reference;
mod xleave;

use reference::{RefChoice, References};

/// How long a kernel clock reading is reused.
const KERNEL_MAX_AGE: Duration = Duration::from_secs(1);

/// Converts a real-time reading to NTP time.
fn ntp_time(t: SystemTime) -> NtpTimestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => NtpTimestamp::from_unix(
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(_) => NtpTimestamp::ZERO,
    }
}

/// Measures the precision to advertise: the smallest step seen between consecutive clock reads
/// (reading costs tens of nanoseconds, so that, not the 1 ns resolution, bounds how precisely a
/// timestamp can be taken), never finer than `clock_getres`.
fn measure_precision() -> i8 {
    let mut best = u64::MAX;
    for _ in 0..1000 {
        let a = SystemTime::now();
        let b = SystemTime::now();
        if let Ok(d) = b.duration_since(a) {
            let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            if ns > 0 {
                best = best.min(ns);
            }
        }
    }
    let res = sys::clock::realtime_resolution_ns().unwrap_or(1);
    precision_from_resolution_ns(best.max(res))
}

/// Kernel clock reading cache.
#[derive(Debug, Default)]
struct KernelCache {
    read_at: Option<Instant>,
    timex: KernelTimex,
    error: Option<String>,
}

thread_local! {
    /// The kernel clock reading, cached per runtime thread rather than behind one lock shared
    /// by every namespace: with `worker_threads = N`, NTP answers in namespaces served by
    /// different workers then share nothing on the hot path (one `adjtimex` per thread per
    /// [`KERNEL_MAX_AGE`] costs nothing).
    static KERNEL: std::cell::RefCell<KernelCache> = std::cell::RefCell::new(KernelCache::default());
}

/// State shared by every namespace: the clock is global, and so is the local NTP daemon.
#[derive(Debug)]
struct Shared {
    /// Origin of the monotonic time passed to the rate limiters.
    epoch: Instant,
    /// Measured once at start.
    precision: i8,
    /// Copies of local NTP daemons' references.
    references: Arc<References>,
}

impl Shared {
    /// The kernel clock state, read at most once per [`KERNEL_MAX_AGE`]. A failed read counts
    /// as "unsynchronised": never claim a sync we cannot see.
    fn kernel(&self, now: Instant) -> (KernelTimex, Option<String>) {
        KERNEL.with(|k| refresh_kernel(&mut k.borrow_mut(), now))
    }
}

/// Re-reads the kernel clock state into `k` if it is older than [`KERNEL_MAX_AGE`].
fn refresh_kernel(k: &mut KernelCache, now: Instant) -> (KernelTimex, Option<String>) {
    let fresh = k
        .read_at
        .is_some_and(|t| now.saturating_duration_since(t) < KERNEL_MAX_AGE);
    if !fresh {
        match sys::clock::read_kernel_timex() {
            Ok(t) => {
                k.timex = KernelTimex {
                    status: t.status,
                    maxerror: t.maxerror,
                    esterror: t.esterror,
                };
                k.error = None;
            }
            Err(e) => {
                if k.error.is_none() {
                    tracing::warn!(error = %e, "adjtimex failed; serving as unsynchronised");
                }
                k.timex = KernelTimex {
                    status: nsaux_ntpshim::clock::STA_UNSYNC,
                    maxerror: i64::try_from(nsaux_ntpshim::clock::UNSYNC_MAXERROR_US)
                        .unwrap_or(i64::MAX),
                    esterror: 0,
                };
                k.error = Some(e.to_string());
            }
        }
        k.read_at = Some(now);
    }
    (k.timex, k.error.clone())
}

/// The NTP service kind. Holds what all namespaces share: the precision and the cache of
/// copied references (the kernel clock state is cached per thread, see `KERNEL`).
#[derive(Debug)]
pub(crate) struct Ntp {
    shared: Arc<Shared>,
}

impl Ntp {
    /// Measures the clock's precision once; cheap (a few microseconds).
    pub(crate) fn new() -> Self {
        let epoch = Instant::now();
        Self {
            shared: Arc::new(Shared {
                epoch,
                precision: measure_precision(),
                references: Arc::new(References::new(epoch)),
            }),
        }
    }
}

impl Default for Ntp {
    fn default() -> Self {
        Self::new()
    }
}

/// The `[ntp]` section every namespace's instance shares (see
/// [`crate::serve::shared_cfg`]).
static SETTINGS: crate::serve::shared_cfg::SharedCfg<NtpConfig> =
    crate::serve::shared_cfg::SharedCfg::new();

/// Converts the `[ntp]` section into the core's configuration.
fn server_config(cfg: &NtpConfig, seed: u64) -> ServerConfig {
    let rl = &cfg.rate_limit;
    ServerConfig {
        allow: cfg.allow.clone(),
        deny: cfg.deny.clone(),
        rate_limit: rl.enabled.then_some(RateLimitConfig {
            interval_log2: rl.interval,
            burst: rl.burst,
            leak_log2: rl.leak,
            kod_log2: rl.kiss.then_some(rl.kiss_log2),
            ipv6_prefix: rl.ipv6_prefix,
            max_clients: rl.max_clients,
        }),
        answer_unsynchronised: cfg.answer_unsynchronised,
        symmetric: cfg.symmetric,
        local_stratum: cfg.local_stratum,
        interleave: cfg.interleaved.then_some(rl.max_clients),
        seed,
    }
}

/// One namespace's mutable state.
#[derive(Debug)]
struct NsState {
    /// The `[ntp]` section (shared with the other namespaces running the same one).
    cfg: Arc<NtpConfig>,
    server: Server,
    stats: Stats,
    /// The sockets owing kernel transmit stamps.
    pending: xleave::Pending,
}

/// NTP in one namespace.
#[derive(Debug)]
struct NtpNs {
    ns: Arc<NsInfo>,
    shared: Arc<Shared>,
    state: Mutex<NsState>,
    /// The rate-limit table's share of the daemon's memory ceiling: at the ceiling the table
    /// stops growing and evicts within its slots instead.
    account: crate::budget::Account,
    /// The same for the interleaved-mode table of earlier exchanges.
    xleave_account: crate::budget::Account,
}

impl ServiceKind for Ntp {
    fn name(&self) -> &'static str {
        "ntp"
    }

    fn enabled(&self, cfg: &ServicesConfig) -> bool {
        cfg.ntp.enabled
    }

    fn instantiate(
        &self,
        ns: Arc<NsInfo>,
        cfg: &ServicesConfig,
    ) -> anyhow::Result<Arc<dyn NsService>> {
        let server = Server::new(server_config(&cfg.ntp, crate::seed::random_u64()));
        Ok(Arc::new(NtpNs {
            ns,
            shared: Arc::clone(&self.shared),
            state: Mutex::new(NsState {
                cfg: SETTINGS.get(&cfg.ntp),
                server,
                stats: Stats::default(),
                pending: xleave::Pending::default(),
            }),
            account: crate::budget::Account::default(),
            xleave_account: crate::budget::Account::default(),
        }))
    }
}

fn leap_name(l: Leap) -> &'static str {
    match l {
        Leap::NoWarning => "none",
        Leap::Insert => "insert",
        Leap::Delete => "delete",
        Leap::Unsynchronised => "unsynchronised",
    }
}

/// A reference ID as people read it: ASCII for stratum 0/1 codes, dotted quad otherwise.
fn refid_text(refid: RefId, stratum: u8) -> String {
    let ascii = refid.0.iter().all(|&b| b == 0 || b.is_ascii_graphic());
    if stratum <= 1 && ascii && refid.0[0] != 0 {
        refid
            .0
            .iter()
            .filter(|&&b| b != 0)
            .map(|&b| char::from(b))
            .collect()
    } else {
        std::net::Ipv4Addr::from(refid.0).to_string()
    }
}

impl NtpNs {
    fn clock_status(
        &self,
        cfg: &NtpConfig,
        now: Instant,
    ) -> (ClockStatus, RefChoice, Option<String>) {
        let choice = self.shared.references.choose(cfg, now);
        let (timex, err) = self.shared.kernel(now);
        (
            ClockStatus::from_kernel(timex, self.shared.precision, choice.reference),
            choice,
            err,
        )
    }

    fn status_json(&self) -> Value {
        let st = lock(&self.state);
        let now = Instant::now();
        let (clock, choice, err) = self.clock_status(&st.cfg, now);
        let fields = clock_fields(&clock, st.cfg.local_stratum, ntp_time(SystemTime::now()));
        let state = match fields.state {
            ClockState::Synchronised => "synchronised",
            ClockState::Local => "local stratum",
            ClockState::Unsynchronised => "unsynchronised",
        };
        let stratum_source = match fields.state {
            ClockState::Synchronised => choice.source.to_string(),
            ClockState::Local => "local_stratum".into(),
            ClockState::Unsynchronised => "none (unsynchronised)".into(),
        };
        json!({
            "serving": state,
            "answering": fields.state != ClockState::Unsynchronised || st.cfg.answer_unsynchronised,
            "leap": leap_name(fields.leap),
            "stratum": fields.stratum,
            "refid": refid_text(fields.refid, fields.stratum),
            "stratum_source": stratum_source,
            "reference": choice.source.to_string(),
            "local_stratum": st.cfg.local_stratum,
            "root_delay_us": fields.root_delay.to_micros(),
            "root_dispersion_us": fields.root_dispersion.to_micros(),
            "precision": clock.precision,
            "kernel_synchronised": clock.is_synchronised(),
            "kernel_sta_unsync": clock.kernel_unsync,
            "kernel_leap": leap_name(clock.leap),
            "kernel_maxerror_us": clock.maxerror_us,
            "kernel_esterror_us": clock.esterror_us,
            "kernel_error": err,
            "rate_limit": st.cfg.rate_limit.enabled,
            "interleaved": st.cfg.interleaved,
        })
    }

    fn stats_json(&self) -> Value {
        let st = lock(&self.state);
        let s = st.stats;
        let xleave = st.server.interleave();
        json!({
            "answered_interleaved": xleave.map_or(0, nsaux_ntpshim::Interleave::hits),
            "interleave_exchanges_held": xleave.map_or(0, nsaux_ntpshim::Interleave::held),
            "interleave_kernel_stamps": xleave.map_or(0, nsaux_ntpshim::Interleave::kernel_stamps),
            "requests": s.requests,
            "answered": s.responses,
            "answered_time": s.time,
            "answered_unsynchronised": s.unsynchronised,
            "answered_leaked": s.leaked,
            "kod_sent": s.kiss_rate,
            "dropped": s.dropped,
            "dropped_denied": s.dropped_denied,
            "dropped_malformed": s.dropped_malformed,
            "dropped_mode6": s.dropped_mode6,
            "dropped_mode7": s.dropped_mode7,
            "dropped_other_mode": s.dropped_other_mode,
            "dropped_auth": s.dropped_auth,
            "dropped_unsynchronised": s.dropped_unsynchronised,
            "dropped_rate_limited": s.dropped_rate_limited,
            "dropped_internal": s.dropped_internal,
        })
    }
}

impl NsService for NtpNs {
    fn listeners(&self) -> Vec<ListenerSpec> {
        let st = lock(&self.state);
        st.cfg
            .addresses
            .iter()
            .map(|ip| ListenerSpec::Udp {
                addr: SocketAddr::new(*ip, st.cfg.port),
                rx_timestamps: true,
                dual_stack: false,
            })
            .collect()
    }

    fn reconfigure(&self, cfg: &ServicesConfig) -> anyhow::Result<()> {
        let mut st = lock(&self.state);
        let old = server_config(&st.cfg, 0);
        if server_config(&cfg.ntp, 0) != old {
            // New rules: a fresh rate-limit table (the old one was built for other limits).
            st.server = Server::new(server_config(&cfg.ntp, crate::seed::random_u64()));
            tracing::info!(netns = %self.ns.name, "ntp settings changed");
        }
        st.cfg = SETTINGS.get(&cfg.ntp);
        Ok(())
    }

    fn dual_stack(&self) -> bool {
        // Nothing in an NTP answer depends on the transport's family.
        true
    }

    fn on_datagram(&self, ep: &Arc<UdpEndpoint>, d: &Datagram<'_>, out: &mut Replies) {
        let now = d.received;
        let mono = Mono::from_duration(now.saturating_duration_since(self.shared.epoch));
        // The listener asks for kernel timestamps; the fallback only covers a kernel that
        // silently ignored the option.
        let recv_ts = ntp_time(d.rx_time.unwrap_or_else(SystemTime::now));
        let mut st = lock(&self.state);
        let NsState {
            server, pending, ..
        } = &mut *st;
        xleave::collect(ep, pending, server);
        let (clock, _, _) = self.clock_status(&st.cfg, now);
        let reply = out.buf();
        reply.resize(HEADER_LEN, 0);
        if let Some(rl) = st.server.rate_limiter_mut() {
            rl.limit_growth(self.account.allowed());
        }
        if let Some(table) = st.server.interleave_mut() {
            table.limit_growth(self.xleave_account.allowed());
        }
        let action = st.server.handle_from(
            mono,
            d.peer,
            recv_ts,
            d.data,
            &clock,
            || ntp_time(SystemTime::now()),
            reply,
        );
        st.stats.record(&action);
        self.ns.metrics.ntp(&action);
        self.account.set(
            st.server
                .rate_limiter()
                .map_or(0, nsaux_ntpshim::RateLimiter::table_bytes),
        );
        self.xleave_account.set(
            st.server
                .interleave()
                .map_or(0, nsaux_ntpshim::Interleave::table_bytes),
        );
        match action {
            // The core never answers longer than the request; checked again here because a
            // reply longer than its request would make us an amplifier.
            Action::Respond { len, kind } if len <= d.data.len() && !d.truncated => {
                reply.truncate(len);
                tracing::trace!(netns = %self.ns.name, peer = %d.peer, ?kind, "ntp reply");
                let to = ReplyTo::sender(d);
                if !(st.server.wants_kernel_stamp() && xleave::send(ep, reply, to, &mut st.pending))
                {
                    out.commit(to);
                }
            }
            Action::Respond { .. } => {}
            Action::Ignore(reason) => {
                tracing::trace!(netns = %self.ns.name, peer = %d.peer, ?reason, "ntp drop");
            }
        }
    }

    fn on_connection(self: Arc<Self>, _conn: Connection) -> ConnFuture {
        // NTP has no stream listeners; a connection cannot arrive. Dropping it closes it.
        Box::pin(async {})
    }

    fn status(&self) -> Value {
        let s = lock(&self.state).stats;
        json!({ "requests": s.requests, "answered": s.responses, "kod_sent": s.kiss_rate })
    }

    fn control(&self, action: &str, _args: &Value) -> Result<Value, String> {
        match action {
            "status" => Ok(self.status_json()),
            "stats" => Ok(self.stats_json()),
            other => Err(format!("unknown ntp action {other:?} (status, stats)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_is_plausible() {
        let p = measure_precision();
        assert!((-30..=-6).contains(&p), "{p}");
    }

    #[test]
    fn refid_display() {
        assert_eq!(refid_text(RefId(*b"GPS\0"), 1), "GPS");
        assert_eq!(refid_text(RefId([10, 0, 0, 1]), 2), "10.0.0.1");
        assert_eq!(refid_text(RefId([0; 4]), 16), "0.0.0.0");
    }

    #[test]
    fn config_converts() {
        let mut c = NtpConfig::default();
        c.rate_limit.kiss = false;
        let s = server_config(&c, 1);
        assert_eq!(s.rate_limit.and_then(|r| r.kod_log2), None);
        c.rate_limit.enabled = false;
        assert!(server_config(&c, 1).rate_limit.is_none());
    }
}
