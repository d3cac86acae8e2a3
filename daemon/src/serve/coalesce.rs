//! Receive coalescing (issue 16 target 5): under sustained load a worker waits up to
//! `receive_coalesce_us` before it blocks in `epoll_wait`, so one wakeup serves more datagrams.
//!
//! Why: with the load generator on another CPU every wakeup of the worker is a cross-CPU one
//! (IPI, idle exit, context switch, `epoll_wait`, the read that finds the queue empty, one
//! wakeup of the client per batch), and a wakeup served only ~8-9 datagrams, so those costs
//! dominated what user space can change. Sleeping a few tens of µs when the previous waits
//! were short and served work lets the queue fill; the kernel's per-datagram work stays, the
//! per-wakeup work is divided by a larger batch (measured on the bench's floor server:
//! README, "Cross-CPU").
//!
//! Bounded: the decision ([`Coalescer::before_wait`]) is made in tokio's `on_thread_park`
//! hook, which runs only when the worker has nothing runnable and is about to block; it
//! delays that wait by at most the configured bound, only after [`ARM_AFTER`] wake periods in
//! a row in which the worker's wait had been shorter than the bound, at least [`MIN_SERVED`]
//! datagrams were served, and no socket's turn served a lone datagram. A lone request-response
//! client (one datagram per wakeup), paced or light load (waits longer than the bound) and an
//! idle daemon (no wakeups) never trigger it.
//!
//! Fair to quiet namespaces: a turn that found a single datagram on its socket is a client with
//! one request in flight, which a delay only slows down, in whichever namespace it is. While
//! the quiet lane is parked (no socket backlogged) such a turn disarms the delay, so a
//! namespace flooded moderately (its queues drained every turn) cannot make the loop sleep
//! while another namespace's lone request waits: with junk at 60,000 datagrams/s into A, B's
//! probe waited 35-116 µs at the median when any turn could keep the delay armed, 18-25 µs
//! without (README, "Paced load"). While a socket is backlogged the lane serves quiet sockets
//! at once (its turns count on its own thread), and the delay stays: it leaves the CPU to the
//! lane and to quiet clients (under the open-loop junk flood, disarming it on the lone turns
//! of datagrams the loop picked up first cost B a third of its answers).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Wake periods in a row that must look loaded before the worker starts delaying its waits.
pub(crate) const ARM_AFTER: u32 = 3;

/// Datagrams a wake period must serve to count as loaded: one datagram per wakeup is a
/// request-response client that would only be slowed down.
pub(crate) const MIN_SERVED: u64 = 2;

/// Largest accepted `receive_coalesce_us`: beyond a millisecond a delay is a latency cost
/// no client expects from a local resolver or time server.
pub(crate) const MAX_COALESCE_US: u64 = 1_000;

/// The built-in bound: on the cross-CPU DNS bench's floor server 50 µs brought the kernel's
/// cost per answer from ~0.8x to ~0.55x unbound's, and 100 µs to ~0.5x; the daemon itself,
/// with its own per-datagram work, needed 100 µs to stay under 0.6x in every run (0.57-0.58x
/// against 0.61-0.65x at 50 µs, in the same runs), for about 10-25 % more average latency
/// under that sustained load only (README, "Receive coalescing").
pub(crate) const DEFAULT_COALESCE_US: u64 = 100;

/// Waits that were delayed, daemon-wide (metric `nsaux_receive_coalesced_waits_total`).
pub(crate) static DELAYED_WAITS: AtomicU64 = AtomicU64::new(0);

/// One worker thread's coalescing state: what its last wake period looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Coalescer {
    /// The bound (zero: off).
    max: Duration,
    /// When the worker last went into its blocking wait (after any delay).
    wait_started: Option<Instant>,
    /// How long that wait lasted (set when it woke).
    last_wait: Option<Duration>,
    /// Datagrams served on this thread, as counted when it last went to wait.
    served_at_wait: u64,
    /// Loaded wake periods in a row.
    streak: u32,
}

impl Coalescer {
    /// A coalescer that delays waits by at most `max` (zero: never).
    pub(crate) const fn new(max: Duration) -> Self {
        Self {
            max,
            wait_started: None,
            last_wait: None,
            served_at_wait: 0,
            streak: 0,
        }
    }

    /// Called when the worker is about to block, at `now`, with `served` the thread's running
    /// count of datagrams served, `lone_turn` whether a turn since the last wait found a single
    /// datagram on its socket, and `lane_serving` whether the quiet lane serves quiet sockets
    /// now (a lone turn then was a datagram the loop picked up before the lane did, and the
    /// next one will not wait for the loop). Returns how long to sleep before blocking
    /// (`None`: block at once). The caller then reports the start of the wait with
    /// [`Self::waiting`].
    pub(crate) fn before_wait(
        &mut self,
        now: Instant,
        served: u64,
        lone_turn: bool,
        lane_serving: bool,
    ) -> Option<Duration> {
        let period = served.wrapping_sub(self.served_at_wait);
        let lone = lone_turn && !lane_serving;
        self.served_at_wait = served;
        let loaded = !self.max.is_zero()
            && period >= MIN_SERVED
            && !lone
            && self.last_wait.is_some_and(|w| w < self.max);
        self.streak = if loaded {
            self.streak.saturating_add(1)
        } else {
            0
        };
        self.wait_started = Some(now);
        (self.streak >= ARM_AFTER).then_some(self.max)
    }

    /// The worker starts its blocking wait at `now` (after the delay, if any).
    pub(crate) fn waiting(&mut self, now: Instant) {
        self.wait_started = Some(now);
    }

    /// The worker woke from its wait at `now`.
    pub(crate) fn woke(&mut self, now: Instant) {
        self.last_wait = self
            .wait_started
            .take()
            .map(|s| now.saturating_duration_since(s));
    }
}

thread_local! {
    /// Datagrams served on this thread (all sockets), read by the park hook.
    static SERVED: Cell<u64> = const { Cell::new(0) };
    /// Whether a turn on this thread found a single datagram since the park hook last looked.
    static LONE_TURN: Cell<bool> = const { Cell::new(false) };
    /// This worker's state; made on the first park with the configured bound.
    static STATE: RefCell<Option<Coalescer>> = const { RefCell::new(None) };
}

/// Counts a turn that served `n` datagrams on this thread (called once per batch).
#[inline]
pub(crate) fn served(n: usize) {
    SERVED.with(|s| s.set(s.get().wrapping_add(n as u64)));
    if n == 1 {
        LONE_TURN.with(|l| l.set(true));
    }
}

/// tokio `on_thread_park` hook body: delays the coming wait when the worker is under
/// sustained load (see [`Coalescer::before_wait`]).
pub(crate) fn on_park(max: Duration) {
    if max.is_zero() {
        return;
    }
    let served = SERVED.with(Cell::get);
    STATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let first = slot.is_none();
        let state = slot.get_or_insert_with(|| Coalescer::new(max));
        if first {
            // The default 50 µs timer slack would stretch every delay by up to that much.
            if let Err(e) = nix::sys::prctl::set_timerslack(1_000) {
                tracing::debug!(error = %e, "cannot lower the worker's timer slack");
            }
        }
        let lone = LONE_TURN.with(|l| l.replace(false));
        let lane = lone && super::quiet::lane_serving();
        if let Some(d) = state.before_wait(Instant::now(), served, lone, lane) {
            DELAYED_WAITS.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(d);
            state.waiting(Instant::now());
        }
    });
}

/// tokio `on_thread_unpark` hook body: records how long the wait lasted.
pub(crate) fn on_unpark() {
    STATE.with(|cell| {
        if let Some(state) = cell.borrow_mut().as_mut() {
            state.woke(Instant::now());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(50);

    /// Runs one wake period: the worker woke after waiting `wait`, served `n` more
    /// datagrams in one turn within `busy`, and is about to wait again; returns the delay it
    /// takes.
    fn period(
        c: &mut Coalescer,
        t: &mut Instant,
        served: &mut u64,
        wait: Duration,
        busy: Duration,
        n: u64,
    ) -> Option<Duration> {
        *t += wait;
        c.woke(*t);
        *t += busy;
        *served += n;
        let d = c.before_wait(*t, *served, n == 1, false);
        if let Some(d) = d {
            *t += d;
            c.waiting(*t);
        }
        d
    }

    #[test]
    fn sustained_load_arms_after_three_short_waits_and_stays_armed() {
        let mut c = Coalescer::new(MAX);
        let (mut t, mut s) = (Instant::now(), 0);
        assert_eq!(
            c.before_wait(t, s, false, false),
            None,
            "first park: nothing known"
        );
        let us = Duration::from_micros;
        let got: Vec<_> = (0..6)
            .map(|_| period(&mut c, &mut t, &mut s, us(20), us(10), 9))
            .collect();
        assert_eq!(
            got,
            [None, None, Some(MAX), Some(MAX), Some(MAX), Some(MAX)]
        );
        // Delayed, the wait that follows finds datagrams queued at once: stays armed.
        assert_eq!(
            period(&mut c, &mut t, &mut s, Duration::ZERO, us(30), 32),
            Some(MAX)
        );
    }

    #[test]
    fn light_paced_and_ping_pong_load_never_delay() {
        let us = Duration::from_micros;
        // Waits longer than the bound (paced or light load).
        let mut c = Coalescer::new(MAX);
        let (mut t, mut s) = (Instant::now(), 0);
        c.before_wait(t, s, false, false);
        for _ in 0..20 {
            assert_eq!(period(&mut c, &mut t, &mut s, us(100), us(5), 6), None);
        }
        // One datagram per wakeup (a request-response client), however fast.
        let mut c = Coalescer::new(MAX);
        c.before_wait(t, s, false, false);
        for _ in 0..20 {
            assert_eq!(period(&mut c, &mut t, &mut s, us(5), us(2), 1), None);
        }
        // Wakeups with no datagram at all (timers, other tasks).
        let mut c = Coalescer::new(MAX);
        c.before_wait(t, s, false, false);
        for _ in 0..20 {
            assert_eq!(period(&mut c, &mut t, &mut s, us(1), us(1), 0), None);
        }
    }

    #[test]
    fn a_lone_datagram_on_any_socket_disarms_and_keeps_it_off() {
        let us = Duration::from_micros;
        let mut c = Coalescer::new(MAX);
        let (mut t, mut s) = (Instant::now(), 0);
        c.before_wait(t, s, false, false);
        for _ in 0..3 {
            period(&mut c, &mut t, &mut s, us(10), us(10), 8);
        }
        assert_eq!(period(&mut c, &mut t, &mut s, us(10), us(10), 8), Some(MAX));
        // A flooded socket's turn of 6 and another namespace's lone request in the same period.
        let lone = |c: &mut Coalescer, t: &mut Instant, s: &mut u64, lane_serving: bool| {
            *t += us(10);
            c.woke(*t);
            *t += us(10);
            *s += 7;
            c.before_wait(*t, *s, true, lane_serving)
        };
        assert_eq!(lone(&mut c, &mut t, &mut s, false), None);
        // The flood alone re-arms after ARM_AFTER periods; the lone client, every period, never.
        for _ in 0..10 {
            assert_eq!(lone(&mut c, &mut t, &mut s, false), None);
        }
        let got: Vec<_> = (0..3)
            .map(|_| period(&mut c, &mut t, &mut s, us(10), us(10), 8))
            .collect();
        assert_eq!(got, [None, None, Some(MAX)]);
        // While the quiet lane serves quiet sockets, a lone turn (a datagram the loop picked
        // up before the lane) leaves the delay armed.
        assert_eq!(lone(&mut c, &mut t, &mut s, true), Some(MAX));
    }

    #[test]
    fn one_long_wait_disarms_at_once() {
        let us = Duration::from_micros;
        let mut c = Coalescer::new(MAX);
        let (mut t, mut s) = (Instant::now(), 0);
        c.before_wait(t, s, false, false);
        for _ in 0..5 {
            period(&mut c, &mut t, &mut s, us(10), us(10), 8);
        }
        assert_eq!(period(&mut c, &mut t, &mut s, us(10), us(10), 8), Some(MAX));
        // The load stopped: the next wait is long, the period after it is not delayed.
        assert_eq!(period(&mut c, &mut t, &mut s, us(5_000), us(3), 1), None);
        assert_eq!(period(&mut c, &mut t, &mut s, us(10), us(10), 8), None);
    }

    #[test]
    fn zero_bound_is_off() {
        let us = Duration::from_micros;
        let mut c = Coalescer::new(Duration::ZERO);
        let (mut t, mut s) = (Instant::now(), 0);
        c.before_wait(t, s, false, false);
        for _ in 0..10 {
            assert_eq!(period(&mut c, &mut t, &mut s, us(0), us(10), 32), None);
        }
    }
}
