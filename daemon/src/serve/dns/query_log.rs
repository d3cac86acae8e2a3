//! The DNS query log's rate limit, per namespace.
//!
//! Why: the query log (`[observe] query_log`) writes one line per answer, so a tenant that
//! floods its own resolver would otherwise decide how much the daemon logs (disk, journald's
//! own rate limit, which then drops every namespace's lines alike). Each namespace gets a
//! fixed window of [`LINES_PER_SECOND`] lines a second; what is over it is counted, and the
//! count is logged once (at WARN, with the namespace) when the next window opens, so an
//! operator sees that and how much was left out. Atomics only: the check runs on the query
//! path, possibly on several workers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Query-log lines a namespace may write per second; the rest are counted, not written.
pub(super) const LINES_PER_SECOND: u64 = 100;

/// One namespace's query-log budget: the current one-second window and what it used.
#[derive(Debug)]
pub(super) struct QueryLogLimit {
    /// When this limiter was made; windows are whole seconds since then.
    epoch: Instant,
    /// The window (seconds since `epoch`) the counts below belong to.
    window: AtomicU64,
    /// Lines asked for in that window (written or not).
    asked: AtomicU64,
    /// Lines suppressed since the last summary.
    suppressed: AtomicU64,
}

/// What the caller should do with one line.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Write it.
    Write,
    /// Write it, after a summary of the `n` lines suppressed in earlier windows.
    WriteAfterSummary(u64),
    /// Leave it out (counted).
    Suppress,
}

impl QueryLogLimit {
    /// A fresh budget.
    pub(super) fn new(now: Instant) -> Self {
        Self {
            epoch: now,
            window: AtomicU64::new(0),
            asked: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether the line asked for at `now` may be written.
    pub(super) fn admit(&self, now: Instant) -> Admit {
        let window = now.saturating_duration_since(self.epoch).as_secs();
        let seen = self.window.load(Ordering::Relaxed);
        let mut summary = 0;
        if window > seen
            && self
                .window
                .compare_exchange(seen, window, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.asked.store(0, Ordering::Relaxed);
            summary = self.suppressed.swap(0, Ordering::Relaxed);
        }
        if self.asked.fetch_add(1, Ordering::Relaxed) >= LINES_PER_SECOND {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return Admit::Suppress;
        }
        if summary > 0 {
            Admit::WriteAfterSummary(summary)
        } else {
            Admit::Write
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_flood_is_cut_to_the_budget_and_counted() {
        let t0 = Instant::now();
        let l = QueryLogLimit::new(t0);
        let written = (0..1000).filter(|_| l.admit(t0) != Admit::Suppress).count();
        assert_eq!(written as u64, LINES_PER_SECOND);
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(l.admit(later), Admit::WriteAfterSummary(900));
        assert_eq!(l.admit(later), Admit::Write);
    }
}
