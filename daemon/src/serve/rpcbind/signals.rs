//! Two one-way signals of one namespace's portmapper, waited for by its connections and
//! held calls: the journal replay is done, and a journal rewrite off the loop ended (how many
//! have, and whether the last one succeeded).
//!
//! Why not two `tokio::sync::watch` channels, as before: each channel's shared state is a heap
//! block of about 350 bytes (a lock, a version, and eight `Notify`s for its receivers), 0.7 KiB
//! per namespace for two flags that change a handful of times in its life (issue 16: bytes per
//! namespace). Two atomics and one `Notify` held inline do the same: a waiter registers with the
//! `Notify` before it reads the atomics, so a change made between its read and its sleep still
//! wakes it.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

/// The replay flag and the count of rewrite ends, and what wakes their waiters.
#[derive(Debug)]
pub(super) struct Signals {
    /// The journal replay is done: the table is complete.
    replayed: AtomicBool,
    /// Rewrites ended so far, shifted left by one, with bit 0 set if the last one succeeded
    /// (one word, so a waiter never pairs a count with another end's outcome).
    turns: AtomicU64,
    /// Woken (all waiters) on every change of either.
    changed: Notify,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            replayed: AtomicBool::new(false),
            // No rewrite ended yet; "the last one succeeded" until one fails.
            turns: AtomicU64::new(1),
            changed: Notify::new(),
        }
    }
}

impl Signals {
    /// Marks the replay done and wakes those waiting for it.
    pub(super) fn set_replayed(&self) {
        self.replayed.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Waits until the replay is done.
    pub(super) async fn replayed(&self) {
        self.wait_until(|s| s.replayed.load(Ordering::Acquire).then_some(()))
            .await;
    }

    /// Rewrites ended so far.
    pub(super) fn turns(&self) -> u64 {
        self.turns.load(Ordering::Acquire) >> 1
    }

    /// Counts the end of a rewrite (`ok`: it succeeded) and wakes those waiting for one.
    pub(super) fn end_turn(&self, ok: bool) {
        let bump = |v: u64| Some((((v >> 1) + 1) << 1) | u64::from(ok));
        // `fetch_update` with a closure that always returns `Some` cannot fail.
        let _ = self
            .turns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, bump);
        self.changed.notify_waiters();
    }

    /// Waits until more than `seen` rewrites ended; true if the last of them succeeded.
    pub(super) async fn turn_after(&self, seen: u64) -> bool {
        self.wait_until(|s| {
            let v = s.turns.load(Ordering::Acquire);
            (v >> 1 > seen).then_some(v & 1 == 1)
        })
        .await
    }

    /// Waits until `ready` gives a value: registered with [`Signals::changed`] before each
    /// look, so no change is missed between a look and the sleep.
    async fn wait_until<T>(&self, ready: impl Fn(&Self) -> Option<T>) -> T {
        loop {
            let mut notified = pin!(self.changed.notified());
            notified.as_mut().enable();
            if let Some(t) = ready(self) {
                return t;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::Signals;

    #[tokio::test]
    async fn waiters_wake_on_each_signal() {
        let s = Arc::new(Signals::default());
        assert_eq!(s.turns(), 0);
        let s2 = Arc::clone(&s);
        let replay = tokio::spawn(async move { s2.replayed().await });
        let s3 = Arc::clone(&s);
        let turn = tokio::spawn(async move { s3.turn_after(0).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!replay.is_finished() && !turn.is_finished());
        s.set_replayed();
        s.end_turn(false);
        let waited =
            tokio::time::timeout(Duration::from_secs(5), async { (replay.await, turn.await) })
                .await;
        assert!(matches!(waited, Ok((Ok(()), Ok(false)))), "{waited:?}");
        assert_eq!(s.turns(), 1);
        // Already true: no wait at all.
        s.replayed().await;
        s.end_turn(true);
        assert!(s.turn_after(1).await);
        assert_eq!(s.turns(), 2);
    }
}
