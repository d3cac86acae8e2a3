//! The daemon-wide memory ceiling over the per-namespace tables (`[limits] memory_max_bytes`).
//!
//! Why a shared counter and not `/proc/self/status`: every table already knows its own size in
//! accounted bytes, so a sum kept in one atomic answers "may this table grow?" with one load per
//! request; reading `/proc` per request would cost a syscall and a parse. Each table owns an
//! [`Account`] that publishes its size; the sum is only an estimate of what the tables hold
//! (not of the whole process), which is what the ceiling bounds.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes accounted by every table of every namespace.
static TOTAL: AtomicUsize = AtomicUsize::new(0);
/// The ceiling; 0 means none.
static CEILING: AtomicUsize = AtomicUsize::new(0);

/// Installs the ceiling from the configuration (at start and on every reload); 0 removes it.
pub(crate) fn set_ceiling(bytes: u64) {
    CEILING.store(
        usize::try_from(bytes).unwrap_or(usize::MAX),
        Ordering::Relaxed,
    );
}

/// Bytes accounted by all tables now (for `status`).
pub(crate) fn total() -> usize {
    TOTAL.load(Ordering::Relaxed)
}

/// The ceiling in force (0: none), for `status`.
pub(crate) fn ceiling() -> usize {
    CEILING.load(Ordering::Relaxed)
}

/// How many more bytes the tables together may grow by (`usize::MAX` without a ceiling).
pub(crate) fn headroom() -> usize {
    match ceiling() {
        0 => usize::MAX,
        c => c.saturating_sub(total()),
    }
}

/// One table's share of [`TOTAL`]: set its size after each change; dropping it takes the share
/// back. Why per table: a namespace that goes must not leave its bytes counted.
#[derive(Debug, Default)]
pub(crate) struct Account {
    /// What this table published last.
    bytes: AtomicUsize,
}

/// Log lines allowed at most [`LOG_BURST`] per 10 s window. Why: refusals come at the rate an
/// attacker sends requests, and each would otherwise be a log line.
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    /// The current window's start (Unix seconds) in the high bits, lines allowed in it in the
    /// low 8 bits.
    window: AtomicU64,
}

/// Lines allowed per window.
const LOG_BURST: u64 = 5;

impl LogLimit {
    /// Whether to log now.
    pub(crate) fn allow(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let cur = self.window.load(Ordering::Relaxed);
        let (start, count) = (cur >> 8, cur & 0xff);
        let next = if now >= start.saturating_add(10) {
            (now << 8) | 1
        } else if count < LOG_BURST {
            cur + 1
        } else {
            return false;
        };
        self.window
            .compare_exchange(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

impl Account {
    /// Publishes the table's size now.
    pub(crate) fn set(&self, bytes: usize) {
        let old = self.bytes.swap(bytes, Ordering::Relaxed);
        if bytes >= old {
            TOTAL.fetch_add(bytes - old, Ordering::Relaxed);
        } else {
            TOTAL.fetch_sub(old - bytes, Ordering::Relaxed);
        }
    }

    /// What the table published last.
    pub(crate) fn get(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The most this table may hold now under the ceiling: its size plus the headroom.
    pub(crate) fn allowed(&self) -> usize {
        self.get().saturating_add(headroom())
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_add_up_and_give_back_on_drop() {
        // Other tests in this binary may hold accounts: work with differences only.
        let a = Account::default();
        let before = total();
        a.set(1000);
        assert_eq!(total(), before + 1000);
        a.set(400);
        assert_eq!(total(), before + 400);
        drop(a);
        assert_eq!(total(), before);
        let l = LogLimit::default();
        for _ in 0..LOG_BURST {
            assert!(l.allow());
        }
        assert!(
            !l.allow(),
            "past the burst, refusals within 10 s are not logged"
        );
    }
}
