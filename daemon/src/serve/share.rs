//! Each namespace's fair share of the event loop, and what it shed when it wanted more.
//!
//! Every UDP socket is a task of its own, and tokio serves ready tasks in turn, so left alone a
//! namespace with three busy sockets gets three turns for every one of a namespace with one,
//! and a quiet namespace's datagram waits behind a full batch of every busy socket. Here the
//! turn belongs to the namespace: per scheduler *round* a namespace may read [`QUANTUM`]
//! datagrams in total, split between its backlogged sockets, and a socket whose namespace has
//! spent its share gives up its turn without reading. A quiet namespace's datagram then waits
//! for about one quantum of each busy namespace's work, however many sockets those flood.
//! (A namespace whose sockets were drained does not even wait for that while others are
//! busy: the quiet lane, `quiet.rs`, serves it from a thread of its own.)
//!
//! The lane does not spend a namespace's share of the loop's rounds: it has its own allowance
//! per namespace, [`LANE_QUANTUM`] datagrams per [`LANE_WINDOW_NS`] of wall time, and its own
//! CPU bound (`pace.rs`). Rounds pass only when the loop's thread runs; charged to them, a
//! namespace the lane served quickly while that thread was descheduled spent its share, left
//! the lane and waited for the loop after all (issue 11, the DNS-miss flood).
//!
//! A round is one pass of the scheduler over its ready tasks. tokio's `yield_now` defers the
//! waker until the I/O driver has been polled, so a task coming back from it knows a round has
//! passed; [`yield_round`] then advances the round counter, and every namespace's share is
//! refilled lazily on its next turn. Datagrams woken by that driver poll are queued before the
//! deferred (busy) tasks, which favours sockets that were idle. Sharing is work-conserving: a
//! namespace alone on the loop gets every round to itself.
//!
//! What a busy namespace does not read stays in its socket's receive queue; when that is full
//! the kernel drops the excess there, at no cost to the loop, and counts it per socket. The
//! counts of a namespace's sockets (and of those it closed) make its `dropped` figure in
//! `nsauxctl ns list`; `deferred` counts the turns it gave up because its share was spent.
//!
//! The counters are relaxed atomics: with several worker threads a namespace's sockets may
//! race on a refill and take a little more than one quantum in a round, which is harmless.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};

use super::UdpEndpoint;
use crate::lock::lock;
use crate::sys::udp::BATCH;

/// Datagrams a namespace may read per round, across all its sockets: up to one receive batch
/// per socket for a namespace with up to four busy sockets (the portmapper, DNS and NTP of a
/// flood each read full batches, which keeps the CPU per answer of a busy namespace low). A
/// quiet namespace does not wait for rounds: the quiet lane serves it (`serve/quiet.rs`); a
/// namespace that is itself backlogged waits for about one quantum of each other busy one.
pub(crate) const QUANTUM: usize = 4 * BATCH;

/// The smallest read a backlogged socket is granted, so a namespace with many busy sockets
/// still reads several datagrams per system call.
const MIN_GRANT: usize = 4;

/// Datagrams the quiet lane may serve per namespace per [`LANE_WINDOW_NS`]: 128,000 a second,
/// above what one quiet namespace sends (the lane leaves a socket with more than 8 queued),
/// so it binds only a namespace with many quiet sockets; the lane as a whole is bounded by its
/// CPU budget (`pace.rs`).
pub(crate) const LANE_QUANTUM: usize = QUANTUM;

/// The quiet lane's accounting window for [`LANE_QUANTUM`]: about one time slice of a loop
/// thread the scheduler put aside, so an allowance spent while the loop is not running comes
/// back within the wait it would otherwise add.
pub(crate) const LANE_WINDOW_NS: u64 = 1_000_000;

/// Scheduler rounds seen so far (see [`yield_round`]); a namespace's share is per round.
static ROUND: AtomicU64 = AtomicU64::new(0);

/// Gives up the turn until the scheduler has polled the I/O driver (and run the tasks that
/// became ready meanwhile), then counts the round as passed. What every busy socket awaits
/// between its turns.
pub(crate) async fn yield_round() {
    let seen = ROUND.load(Relaxed);
    tokio::task::yield_now().await;
    if ROUND.load(Relaxed) <= seen {
        ROUND.fetch_max(seen + 1, Relaxed);
    }
}

/// One namespace's share of the loop, shared by all its UDP sockets (lives in its `NsInfo`).
#[derive(Debug, Default)]
pub(crate) struct NsShare {
    /// The round `spent` counts for.
    round: AtomicU64,
    /// Datagrams read in `round`.
    spent: AtomicUsize,
    /// Sockets of the namespace whose last turn left datagrams queued.
    backlogged: AtomicUsize,
    /// Turns given up because the share was spent.
    deferred: AtomicU64,
    /// The lane window (see [`LANE_WINDOW_NS`]) `lane_spent` counts for.
    lane_window: AtomicU64,
    /// Datagrams the lane served in `lane_window`.
    lane_spent: AtomicUsize,
    /// Times the lane left the namespace to the loop because its lane allowance was spent.
    lane_deferred: AtomicU64,
    /// Datagrams of its quiet sockets served by the quiet lane (`serve/quiet.rs`).
    between: AtomicU64,
    /// The namespace's open UDP sockets, to read their kernel drop counters for a report.
    sockets: Mutex<Vec<Weak<UdpEndpoint>>>,
    /// Drops counted on sockets that have since closed.
    closed_drops: AtomicU64,
}

impl NsShare {
    /// How many datagrams the socket whose turn it is may read now; 0: the namespace has spent
    /// its share of this round and the socket should [`yield_round`] without reading.
    pub(crate) fn grant(&self) -> usize {
        self.grant_in(ROUND.load(Relaxed))
    }

    fn grant_in(&self, round: u64) -> usize {
        if self.round.load(Relaxed) != round {
            self.round.store(round, Relaxed);
            self.spent.store(0, Relaxed);
        }
        let left = QUANTUM.saturating_sub(self.spent.load(Relaxed));
        if left == 0 {
            self.deferred.fetch_add(1, Relaxed);
            return 0;
        }
        let busy = self.backlogged.load(Relaxed).max(1);
        left.min(QUANTUM.div_ceil(busy).max(MIN_GRANT)).min(BATCH)
    }

    /// Counts `n` datagrams read against this round's share.
    pub(crate) fn charge(&self, n: usize) {
        self.spent.fetch_add(n, Relaxed);
    }

    /// How many datagrams the quiet lane may serve for this namespace in lane window `window`
    /// (wall time / [`LANE_WINDOW_NS`]); 0: its allowance is spent, its own turns serve it.
    /// Only the lane thread calls it.
    pub(crate) fn grant_lane(&self, window: u64) -> usize {
        if self.lane_window.load(Relaxed) != window {
            self.lane_window.store(window, Relaxed);
            self.lane_spent.store(0, Relaxed);
        }
        let left = LANE_QUANTUM.saturating_sub(self.lane_spent.load(Relaxed));
        if left == 0 {
            self.lane_deferred.fetch_add(1, Relaxed);
        }
        left
    }

    /// Counts `n` datagrams the lane served against the namespace's lane allowance.
    pub(crate) fn charge_lane(&self, n: usize) {
        self.lane_spent.fetch_add(n, Relaxed);
    }

    /// Counts datagrams served by the quiet lane while another socket was busy (see
    /// `serve/quiet.rs`).
    pub(crate) fn served_between(&self, n: usize) {
        if n > 0 {
            self.between.fetch_add(n as u64, Relaxed);
        }
    }

    /// A socket's queue went from drained to backlogged (`true`) or back: its siblings' grants
    /// shrink or grow so the namespace's total per round stays one quantum.
    pub(crate) fn set_backlogged(&self, now: bool) {
        if now {
            self.backlogged.fetch_add(1, Relaxed);
        } else {
            let _ = self
                .backlogged
                .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Adds a socket whose kernel drops count for this namespace.
    pub(crate) fn register(&self, ep: &Arc<UdpEndpoint>) {
        let mut v = lock(&self.sockets);
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(ep));
    }

    /// A socket's loop ends: keep its drops in the namespace's total.
    pub(crate) fn unregister(&self, ep: &Arc<UdpEndpoint>) {
        if let Ok(n) = crate::sys::udp::drops(ep.sock.as_fd()) {
            self.closed_drops.fetch_add(n, Relaxed);
        }
        lock(&self.sockets).retain(|w| w.strong_count() > 0 && !w.ptr_eq(&Arc::downgrade(ep)));
    }

    /// Datagrams the kernel dropped on this namespace's UDP sockets (open and closed).
    pub(crate) fn dropped(&self) -> u64 {
        let open: Vec<Arc<UdpEndpoint>> = lock(&self.sockets)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        open.iter()
            .filter_map(|ep| crate::sys::udp::drops(ep.sock.as_fd()).ok())
            .fold(self.closed_drops.load(Relaxed), u64::saturating_add)
    }

    /// For `ns list`: what the namespace shed under load.
    pub(crate) fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "dropped": self.dropped(),
            "deferred": self.deferred.load(Relaxed),
            "served_between": self.between.load(Relaxed),
            "lane_deferred": self.lane_deferred.load(Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_gets_one_quantum_per_round_split_between_its_busy_sockets() {
        let s = NsShare::default();
        // One batch per turn at most.
        assert_eq!(s.grant_in(7), BATCH.min(QUANTUM));
        for _ in 0..8 {
            s.set_backlogged(true);
        }
        let g = s.grant_in(7);
        assert_eq!(g, QUANTUM / 8);
        s.charge(QUANTUM - g);
        assert_eq!(s.grant_in(7), g);
        s.charge(g);
        assert_eq!(s.grant_in(7), 0);
        assert_eq!(s.deferred.load(Relaxed), 1);
        for _ in 0..9 {
            s.set_backlogged(false);
        }
        assert_eq!(s.backlogged.load(Relaxed), 0);
        // Many busy sockets still read a few datagrams per call.
        for _ in 0..100 {
            s.set_backlogged(true);
        }
        assert_eq!(s.grant_in(8), MIN_GRANT);
    }

    #[test]
    fn the_lane_has_its_own_allowance_per_window_and_spends_no_round_share() {
        let s = NsShare::default();
        assert_eq!(s.grant_lane(3), LANE_QUANTUM);
        s.charge_lane(LANE_QUANTUM - 1);
        assert_eq!(s.grant_lane(3), 1);
        s.charge_lane(1);
        // Spent for this window (however many loop rounds pass: there are none here) ...
        assert_eq!(s.grant_lane(3), 0);
        assert_eq!(s.lane_deferred.load(Relaxed), 1);
        // ... and the loop's share of the round is untouched by it.
        assert_eq!(s.grant_in(1), BATCH.min(QUANTUM));
        assert_eq!(s.deferred.load(Relaxed), 0);
        // The next window refills it, without any round having passed.
        assert_eq!(s.grant_lane(4), LANE_QUANTUM);
    }
}
