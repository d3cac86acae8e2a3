//! Copying stratum and reference ID from the local NTP daemon that disciplines the clock
//! (`reference = "127.0.0.1:123"` in `[ntp]`): the query I/O and one cache per address.
//!
//! When to query and what to serve meanwhile (retry, grace period, fallback to the
//! configuration) is decided by the sans-IO [`ReferenceState`] in `nsaux-ntpshim`; this module
//! reads the clock, runs the query as a task, and words the choice for `ntp status`. The copy
//! is refreshed lazily: a request that finds it due starts one asynchronous query and is
//! answered from the old copy. No timer runs, so an idle daemon uses no CPU.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nsaux_ntpshim::reference::{ReferenceSource, ReferenceState};
use nsaux_ntpshim::{HEADER_LEN, Header, Mode, Mono, NtpTimestamp, Reference};

use super::ntp_time;
use crate::config::NtpConfig;
use crate::lock::lock;

/// How long to wait for the local NTP daemon's answer.
const REFERENCE_TIMEOUT: Duration = Duration::from_secs(1);

/// The copied references, one per local NTP daemon address (shared by every namespace
/// configured with it, so a thousand namespaces cost one query).
#[derive(Debug)]
pub(super) struct References {
    /// Origin of the monotonic time passed to the state machines.
    epoch: Instant,
    /// Failure reasons are shared text: read on every request, cloned without allocating.
    entries: Mutex<HashMap<SocketAddr, ReferenceState<Arc<str>>>>,
}

/// Where the advertised stratum and reference ID come from right now, for `ntp status`.
#[derive(Debug, Clone)]
pub(super) struct RefChoice {
    /// What to advertise.
    pub(super) reference: Reference,
    /// Why.
    pub(super) source: RefSource,
}

/// Why a reference was chosen. Built on every request, so it holds no owned text: the words
/// are made only when `ntp status` displays it.
#[derive(Debug, Clone)]
pub(super) enum RefSource {
    /// Stratum and refid from the configuration.
    Config,
    /// Copied from the local NTP daemon at this address.
    Copied(SocketAddr),
    /// The local NTP daemon reports unsynchronised.
    Unsynchronised(SocketAddr),
    /// The last copy, kept because the latest refresh failed for this reason.
    CopiedStale(SocketAddr, Arc<str>),
    /// No usable copy: from the configuration, for this reason.
    ConfigFallback(SocketAddr, Arc<str>),
}

impl std::fmt::Display for RefSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config => write!(f, "config"),
            Self::Copied(a) => write!(f, "copied from {a}"),
            Self::Unsynchronised(a) => write!(f, "{a} reports unsynchronised"),
            Self::CopiedStale(a, why) => {
                write!(f, "copied from {a} (last refresh failed: {why})")
            }
            Self::ConfigFallback(a, why) => write!(f, "config ({a}: {why})"),
        }
    }
}

impl References {
    /// An empty cache; `epoch` is any fixed instant (only differences matter).
    pub(super) fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            entries: Mutex::default(),
        }
    }

    fn mono(&self, t: Instant) -> Mono {
        Mono::from_duration(t.saturating_duration_since(self.epoch))
    }

    /// The reference to advertise for a namespace with configuration `cfg`; starts an
    /// asynchronous refresh of a copied reference when it is due.
    pub(super) fn choose(self: &Arc<Self>, cfg: &NtpConfig, now: Instant) -> RefChoice {
        let configured = Reference {
            stratum: cfg.stratum,
            refid: cfg.refid,
            root_delay_us: 0,
            root_dispersion_us: 0,
            time: None,
        };
        let Some(addr) = cfg.reference else {
            return RefChoice {
                reference: configured,
                source: RefSource::Config,
            };
        };
        let max_age = Duration::from_secs(cfg.reference_max_age.max(1));
        let now = self.mono(now);
        let mut entries = lock(&self.entries);
        let entry = entries.entry(addr).or_default();
        if entry.due(now, max_age)
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            entry.on_query_started();
            let this = Arc::clone(self);
            rt.spawn(async move {
                let result = query_reference(addr).await;
                this.store(addr, result);
            });
        }
        let choice = entry.current(now, max_age, configured);
        let source = match choice.source {
            ReferenceSource::Copied => RefSource::Copied(addr),
            ReferenceSource::Unsynchronised => RefSource::Unsynchronised(addr),
            ReferenceSource::CopiedStale(why) => RefSource::CopiedStale(addr, Arc::clone(why)),
            ReferenceSource::Fallback(why) => RefSource::ConfigFallback(
                addr,
                why.map_or_else(|| Arc::from("not queried yet"), Arc::clone),
            ),
        };
        RefChoice {
            reference: choice.reference,
            source,
        }
    }

    /// Records the outcome of a query of `addr`.
    fn store(&self, addr: SocketAddr, result: Result<Option<Reference>, String>) {
        let now = self.mono(Instant::now());
        let mut entries = lock(&self.entries);
        let Some(entry) = entries.get_mut(&addr) else {
            return;
        };
        match result {
            Ok(Some(r)) => {
                tracing::debug!(%addr, stratum = r.stratum, "reference copied");
                entry.on_reply(now, Some(r));
            }
            Ok(None) => {
                tracing::info!(%addr, "local NTP daemon reports unsynchronised");
                entry.on_reply(now, None);
            }
            Err(e) => {
                tracing::info!(%addr, error = %e, "local NTP daemon did not answer");
                entry.on_failure(now, e.into());
            }
        }
    }
}

/// Asks the local NTP daemon at `addr` once. `Ok(None)`: it answered but is unsynchronised.
async fn query_reference(addr: SocketAddr) -> Result<Option<Reference>, String> {
    let bind: SocketAddr = if addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("bind: {e}"))?;
    sock.connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // The transmit timestamp doubles as a nonce: the real time plus random low bits, matched
    // against the reply's origin so a stray or spoofed packet is not copied.
    let tx = NtpTimestamp::from_bits(
        ntp_time(SystemTime::now()).to_bits() ^ (crate::seed::random_u64() & 0xFFFF_FFFF),
    );
    let mut buf = [0u8; 512];
    Header::client_request(tx)
        .write(&mut buf)
        .map_err(|e| format!("encode: {e}"))?;
    sock.send(&buf[..HEADER_LEN])
        .await
        .map_err(|e| format!("send: {e}"))?;
    let deadline = tokio::time::Instant::now() + REFERENCE_TIMEOUT;
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Err(_) => return Err("no answer".into()),
            Ok(Err(e)) => return Err(format!("receive: {e}")),
            Ok(Ok(n)) => n,
        };
        let Ok(h) = Header::parse(&buf[..n]) else {
            continue;
        };
        if h.origin_ts != tx || h.mode != Mode::Server {
            continue;
        }
        return Ok(Reference::from_server_reply(&h));
    }
}
