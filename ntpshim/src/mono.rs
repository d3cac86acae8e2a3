//! Monotonic time as a plain value: the rate limiter needs elapsed time, and
//! sans-IO means the caller supplies it.

use core::time::Duration;

/// A point on the caller's monotonic clock (e.g. `CLOCK_MONOTONIC` or
/// `tokio::time::Instant` minus a start instant), in nanoseconds since an
/// arbitrary epoch. Only differences matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mono(u64);

impl Mono {
    /// From nanoseconds since the caller's epoch.
    #[must_use]
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// From a duration since the caller's epoch (saturating after 584 years).
    #[must_use]
    pub fn from_duration(d: Duration) -> Self {
        Self(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Nanoseconds since the caller's epoch.
    #[must_use]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if the clock went backwards (a
    /// caller bug must not create rate-limit credit).
    #[must_use]
    pub const fn saturating_nanos_since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// `self` moved forward by `d`, saturating; convenient in tests.
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}
