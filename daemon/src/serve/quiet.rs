//! The quiet lane: a thread of its own that serves quiet sockets while another namespace keeps
//! the event loop busy.
//!
//! The fair share (`share.rs`) bounds how long a quiet namespace waits to one turn of each busy
//! namespace, but a flood keeps the loop's thread always runnable, and on a loaded machine the
//! kernel then runs it only in slices: a quiet namespace's datagram waits for the turn in
//! progress and for the busy thread to be scheduled again, while a stock daemon in a process of
//! its own sleeps and is woken (and preferred by the scheduler) within microseconds. So every
//! UDP socket whose queue was drained at the end of its last turn (a *quiet* one) also sits in
//! a second, level-triggered epoll set (`sys/probe.rs`), and while any socket is busy (see
//! [`QuietSocket::turn_ended`]) a lane thread sleeps in `epoll_wait` on that set and serves
//! what arrives there at once, with its own buffers, within its own allowance per namespace
//! (`share::LANE_QUANTUM` a millisecond, not the namespace's share of the loop's rounds) and
//! its own CPU budget (`pace.rs`: three quarters of a CPU). When nothing is busy the
//! lane is parked and the loop alone serves everyone (no extra wakeup per datagram).
//!
//! A socket leaves the set when it is busy (its own turns serve it, under the share), or
//! when the lane found more than [`INLINE_MAX`] datagrams on it or its namespace had spent its
//! lane allowance; its task puts it back after a turn that drained it. The socket's own task is still
//! woken by tokio for datagrams the lane took and then finds the queue empty: one empty read,
//! paid only by quiet sockets while another namespace is busy.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use super::contain::ListenerExit;
use super::pace::LanePace;
use super::share::LANE_WINDOW_NS;
use super::{NsService, UdpEndpoint};
use crate::lock::lock;
use crate::sys::probe::Probe;

/// Turns in a row a socket must leave datagrams queued to count as busy.
const BUSY_STREAK: u32 = 8;

/// How long a busy socket's turns must keep draining its queue before it counts as quiet
/// again. A flood's queue is drained now and then (the client waits for answers, or the
/// flood's sockets take turns); without this the socket left the busy count on every such
/// turn, the lane parked whenever all of them happened to drain at once (about 50 times a
/// second under flood3), and a quiet namespace's datagram then waited for the loop again
/// (about half of them, measured with `perf stat` on the lane thread) until the next streak.
const BUSY_LINGER: Duration = Duration::from_millis(50);

/// The time origin of [`QuietSocket::calm_since`].
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds since [`EPOCH`], never 0 (0 means "not calm" in `calm_since`).
fn now_ns() -> u64 {
    u64::try_from(EPOCH.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Datagrams served from one quiet socket per probe; a socket with more is busy and is left
/// to its own turns.
const INLINE_MAX: usize = 8;

/// The probe set, and the sockets its keys name.
struct Registry {
    /// `None` when the kernel refused an epoll instance: quiet sockets then wait for turns.
    probe: Option<Probe>,
    /// Weak: a listener task that is aborted drops its socket, which leaves the set then.
    sockets: Mutex<HashMap<u64, Weak<QuietSocket>>>,
    /// Sockets in the probe set now.
    joined: AtomicUsize,
    /// Backlogged sockets of all namespaces: the lane serves only while there are some.
    backlogged: AtomicUsize,
    /// The lane thread, to unpark it when a socket becomes backlogged.
    lane: Mutex<Option<std::thread::Thread>>,
    next_key: AtomicU64,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry {
    probe: Probe::new()
        .inspect_err(
            |e| tracing::warn!(error = %e, "no probe epoll: quiet namespaces wait for turns"),
        )
        .ok(),
    sockets: Mutex::new(HashMap::new()),
    joined: AtomicUsize::new(0),
    backlogged: AtomicUsize::new(0),
    lane: Mutex::new(None),
    next_key: AtomicU64::new(1),
});

/// A UDP socket as the probe knows it: what is needed to serve it outside its own task.
pub(crate) struct QuietSocket {
    key: u64,
    ep: Arc<UdpEndpoint>,
    service: Arc<dyn NsService>,
    /// The runtime its service spawns tasks on (DNS misses), entered while the lane serves it.
    runtime: tokio::runtime::Handle,
    /// In the probe set (as far as this side knows).
    joined: AtomicBool,
    /// Turns in a row that left datagrams queued.
    streak: AtomicU32,
    /// Counted in the registry's `backlogged` (its streak reached [`BUSY_STREAK`]).
    busy: AtomicBool,
    /// While busy: since when (see [`now_ns`]) its turns have drained its queue; 0 when the
    /// last one did not.
    calm_since: AtomicU64,
    /// Why its task must end, when serving it here found out (a service panic). Boxed: it
    /// is almost never set, and inline it cost 24 bytes more in every UDP socket's entry.
    exit: Mutex<Option<Box<ListenerExit>>>,
}

impl QuietSocket {
    /// Makes `ep` known to the probe (not yet in the set: see [`QuietSocket::join`]) for as
    /// long as the caller (its task) holds the result.
    /// `None` outside a tokio runtime (the socket is then served by its task alone).
    pub(crate) fn register(
        ep: &Arc<UdpEndpoint>,
        service: &Arc<dyn NsService>,
    ) -> Option<Arc<Self>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        if LANE_CPU_PERCENT.load(Relaxed) == 0 {
            return None;
        }
        let r = &*REGISTRY;
        r.probe.as_ref()?;
        start_lane(r);
        let q = Arc::new(Self {
            key: r.next_key.fetch_add(1, Relaxed),
            ep: Arc::clone(ep),
            service: Arc::clone(service),
            runtime,
            joined: AtomicBool::new(false),
            streak: AtomicU32::new(0),
            busy: AtomicBool::new(false),
            calm_since: AtomicU64::new(0),
            exit: Mutex::new(None),
        });
        lock(&r.sockets).insert(q.key, Arc::downgrade(&q));
        Some(q)
    }

    /// Its queue was drained: datagrams arriving now may be served between others' work.
    pub(crate) fn join(&self) {
        if self.joined.load(Relaxed) || self.joined.swap(true, Relaxed) {
            return;
        }
        let r = &*REGISTRY;
        if let Some(p) = &r.probe
            && p.add(self.ep.sock.as_fd(), self.key).is_ok()
        {
            r.joined.fetch_add(1, Relaxed);
        }
    }

    /// It is backlogged (or its namespace's share is spent): only its own turns serve it.
    pub(crate) fn leave(&self) {
        if !self.joined.load(Relaxed) || !self.joined.swap(false, Relaxed) {
            return;
        }
        let r = &*REGISTRY;
        if let Some(p) = &r.probe
            && p.remove(self.ep.sock.as_fd()).is_ok()
        {
            let _ = r
                .joined
                .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Its task's turn ended with its queue `drained` or not. A socket counts as busy (out of
    /// the probe set, and waking the lane for the others) only after [`BUSY_STREAK`] turns in
    /// a row left datagrams queued: one that is backlogged now and then under a moderate load
    /// changes nothing, so a lone busy namespace pays no `epoll_ctl` or lane wakeups. It
    /// counts as quiet again once its turns have drained it for [`BUSY_LINGER`] (a clock
    /// read per such turn, only while it is busy).
    /// A turn that drained the queue but served more than [`INLINE_MAX`] datagrams counts as
    /// one that left datagrams queued (`served`): a flood the loop drains every turn (cheap
    /// junk, or batches grown by receive coalescing, `coalesce.rs`) is more than the lane
    /// would serve inline, and while it counted as quiet the lane stayed parked and a quiet
    /// namespace's datagrams waited for the loop (junk flood: 2-18 % of B's, measured).
    pub(crate) fn turn_ended(&self, drained: bool, served: usize) {
        if drained && served <= INLINE_MAX {
            self.streak.store(0, Relaxed);
            if self.busy.load(Relaxed) {
                let now = now_ns();
                let since = match self.calm_since.load(Relaxed) {
                    0 => {
                        self.calm_since.store(now, Relaxed);
                        now
                    }
                    t => t,
                };
                let linger = u64::try_from(BUSY_LINGER.as_nanos()).unwrap_or(u64::MAX);
                if now.saturating_sub(since) < linger {
                    return;
                }
                if self.busy.swap(false, Relaxed) {
                    set_backlogged(false);
                }
            }
            // Also after the lane left it (too much queued, share spent): one atomic load
            // when it is in the set already.
            self.join();
        } else {
            self.calm_since.store(0, Relaxed);
            if self.streak.fetch_add(1, Relaxed) + 1 >= BUSY_STREAK
                && !self.busy.swap(true, Relaxed)
            {
                self.leave();
                set_backlogged(true);
            }
        }
    }

    /// Counts it as quiet again if it is busy and its last turn, [`BUSY_LINGER`] or more
    /// before `now`, drained it: a flood that stopped there leaves no turn to do it.
    fn expire_calm(&self, now: u64) {
        let since = self.calm_since.load(Relaxed);
        let linger = u64::try_from(BUSY_LINGER.as_nanos()).unwrap_or(u64::MAX);
        if since == 0 || now.saturating_sub(since) < linger || !self.busy.load(Relaxed) {
            return;
        }
        if self.busy.swap(false, Relaxed) {
            set_backlogged(false);
            self.join();
        }
    }

    /// The exit that serving it outside its task ran into, once.
    pub(crate) fn take_exit(&self) -> Option<ListenerExit> {
        lock(&self.exit).take().map(|e| *e)
    }

    /// Serves up to [`INLINE_MAX`] of its queued datagrams now, in lane window `window` (see
    /// `share::LANE_WINDOW_NS`).
    fn serve(&self, window: u64) {
        let share = &self.ep.ns.share;
        let grant = share.grant_lane(window).min(INLINE_MAX);
        if grant == 0 {
            self.leave();
            return;
        }
        let mut exit = None;
        let _rt = self.runtime.enter();
        let got = match super::udp::serve_between(&self.ep, self.service.as_ref(), grant, &mut exit)
        {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            // An ICMP error from an earlier send, consumed by the read.
            Err(_) => 1,
        };
        share.charge_lane(got);
        share.served_between(got);
        if got >= grant {
            self.leave();
        }
        if let Some(e) = exit {
            self.leave();
            *lock(&self.exit) = Some(Box::new(e));
        }
    }
}

impl Drop for QuietSocket {
    /// Its task ended (or was aborted): out of the probe set and the registry.
    fn drop(&mut self) {
        if self.busy.swap(false, Relaxed) {
            set_backlogged(false);
        }
        self.leave();
        lock(&REGISTRY.sockets).remove(&self.key);
    }
}

/// Times the CPU budget made the lane pause, daemon-wide (metric
/// `nsaux_quiet_lane_pauses_total`).
pub(crate) static LANE_PAUSES: AtomicU64 = AtomicU64::new(0);

/// Whether the lane thread runs (set once it is spawned).
static LANE_UP: AtomicBool = AtomicBool::new(false);

/// The lane's CPU budget in percent of one CPU (`quiet_lane_cpu_percent`, set by [`start`]
/// before any socket exists); 0: no lane, quiet sockets wait for their turns on the loop.
static LANE_CPU_PERCENT: AtomicU64 = AtomicU64::new(super::pace::DEFAULT_LANE_CPU_PERCENT);

/// Whether the lane serves quiet sockets now (a lane thread runs and some socket is busy): a
/// quiet namespace's datagram then does not wait for the loop, so the loop's receive
/// coalescing (`coalesce.rs`) may delay its own wait without delaying that namespace.
pub(crate) fn lane_serving() -> bool {
    LANE_UP.load(Relaxed) && REGISTRY.backlogged.load(Relaxed) > 0
}

/// A socket became busy (`true`) or drained: while any is, the lane serves the quiet ones.
fn set_backlogged(now: bool) {
    let r = &*REGISTRY;
    if now {
        if r.backlogged.fetch_add(1, Relaxed) == 0
            && let Some(t) = lock(&r.lane).as_ref()
        {
            t.unpark();
        }
    } else {
        let _ = r
            .backlogged
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }
}

/// Creates the probe epoll and starts the lane thread, once (at start-up, so they are there
/// before any namespace, and at a lower nice value: see
/// `ops::drop_privileges_and_start_lane`; otherwise on the first socket), with a CPU budget of
/// `cpu_percent` of one CPU; 0 turns the lane off (no thread, no probe set: every socket is
/// served by its own task on the loop, under the fair share alone).
pub(crate) fn start(cpu_percent: u64) {
    LANE_CPU_PERCENT.store(cpu_percent.min(100), Relaxed);
    if cpu_percent == 0 {
        return;
    }
    start_lane(&REGISTRY);
}

/// Starts the lane thread once.
fn start_lane(r: &'static Registry) {
    let mut lane = lock(&r.lane);
    if lane.is_some() {
        return;
    }
    match std::thread::Builder::new()
        .name("nsaux-quiet".into())
        .spawn(move || run_lane(r))
    {
        Ok(h) => {
            // A socket that turned busy before this handle was stored found no thread to
            // unpark: one unpark now makes the lane look again (the lane parks with no
            // timeout, so an idle daemon's lane never wakes).
            h.thread().unpark();
            *lane = Some(h.thread().clone());
            LANE_UP.store(true, Relaxed);
        }
        Err(e) => {
            tracing::warn!(error = %e, "no quiet lane thread: quiet namespaces wait for turns")
        }
    }
}

/// The lane thread's nice value, relative to the daemon's. A quiet namespace's datagram woke the lane and then waited
/// for the scheduler: with the lane at the loop's nice value that wait was 8-28 µs per time
/// slice under flood3 on a loaded machine (chronyd in B: 6-14 µs), at -5 it was 2-5 µs,
/// which took B's answers/s above the stock daemons'. The lane cannot use that weight to take
/// the loop's CPU: its own CPU budget (`pace.rs`) holds it to three quarters of a
/// CPU, and each namespace to
/// `share::LANE_QUANTUM` datagrams a millisecond on it (see the `lane` integration tests).
pub(crate) const LANE_NICE: i32 = -5;

/// The lane thread's time slice (the kernel's minimum; its default is 0.75 ms times
/// 1 + log2 of the CPUs, 1.4 ms on 2 CPUs). Under the DNS-miss flood the thread that hurt a
/// quiet namespace's tail was not the lane's own wait (its scheduling delay p99 11 µs, by
/// `perf sched`) but everything queued behind or ahead of it with a long slice; with a
/// short slice the lane gets an earlier virtual deadline, so on waking it preempts the loop
/// at once, and it never holds a CPU long either (it serves at most [`INLINE_MAX`] datagrams
/// per socket and wakeup). Measured, isolation bench: 7 passes on a loaded machine, B's p99
/// under the miss flood median 159 against 269 µs, answers/s 37,200 against 30,200; 3 quiet
/// passes, 50 against 189 µs and 49,600 against 33,400. Kernels before 6.12 ignore it.
pub(crate) const LANE_SLICE_NS: u64 = 100_000;

/// How long the lane sleeps in the probe before looking whether anything is still backlogged.
const LANE_RECHECK_MS: i32 = 20;

/// How often the lane looks for busy sockets whose flood stopped (see [`sweep`]).
const LANE_RECHECK_NS: u64 = 20_000_000;

/// Counts busy sockets whose flood stopped after a draining turn as quiet again (see
/// [`QuietSocket::expire_calm`]), so the lane parks once every flood is over.
fn sweep(r: &Registry, now: u64) {
    if r.backlogged.load(Relaxed) == 0 {
        return;
    }
    let sockets: Vec<Arc<QuietSocket>> = lock(&r.sockets)
        .values()
        .filter_map(Weak::upgrade)
        .collect();
    for q in sockets {
        q.expire_calm(now);
    }
}

/// The lane: parked while nothing is backlogged, else waits on the probe and serves quiet
/// sockets as their datagrams arrive, within its CPU budget (`pace.rs`).
fn run_lane(r: &'static Registry) {
    let Some(p) = &r.probe else { return };
    match crate::sys::nice::set_own_slice(LANE_SLICE_NS) {
        Ok(true) => {}
        Ok(false) => tracing::debug!("quiet lane: not a normal or batch policy; slice left as is"),
        Err(e) => tracing::debug!(error = %e, "quiet lane: no shorter time slice"),
    }
    let mut keys = [0u64; 8];
    let mut swept = now_ns();
    let cpu = || crate::sys::clock::thread_cpu_ns().ok();
    // No thread CPU clock (never seen on Linux): the lane runs unbudgeted, as it did before.
    let percent = LANE_CPU_PERCENT.load(Relaxed);
    let mut pace = cpu().map(|c| LanePace::new(now_ns(), c, percent));
    loop {
        let now = now_ns();
        if now.saturating_sub(swept) >= LANE_RECHECK_NS {
            swept = now;
            sweep(r, now);
        }
        if r.backlogged.load(Relaxed) == 0 {
            // No timeout: `set_backlogged` unparks it, and `start_lane` once after the handle
            // is stored. A timed park woke an idle daemon every second (issue 16: idle CPU
            // stays 0).
            std::thread::park();
            continue;
        }
        if let Some(pace) = pace.as_mut().filter(|pc| pc.due(now))
            && let Some(c) = cpu()
            && let Some(pause) = pace.check(now, c)
        {
            // Over budget: the sockets stay in the probe set and their own tasks serve them
            // meanwhile, under the loop's fair share.
            LANE_PAUSES.fetch_add(1, Relaxed);
            tracing::trace!(
                pause_ns = pause,
                pauses = pace.pauses(),
                "quiet lane paused"
            );
            std::thread::sleep(Duration::from_nanos(pause));
            continue;
        }
        let n = match p.ready(&mut keys, LANE_RECHECK_MS) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "quiet lane: probe failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // Nothing busy any more: the loop serves everyone again (serving here too would wake
        // two threads per datagram).
        if r.backlogged.load(Relaxed) == 0 {
            continue;
        }
        let window = now_ns() / LANE_WINDOW_NS;
        for key in &keys[..n] {
            let q = lock(&r.sockets).get(key).and_then(Weak::upgrade);
            if let Some(q) = q {
                q.serve(window);
            }
        }
    }
}
