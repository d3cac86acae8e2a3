//! Counters over [`Action`]s, for a daemon that wants them ready-made.
//! Plain `u64` fields so the daemon can serialise or sum them as it likes.

use crate::action::{Action, DropReason, ResponseKind};

/// Per-server counters; [`Stats::record`] updates them from one verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    /// Every request seen.
    pub requests: u64,
    /// Replies sent, of any kind.
    pub responses: u64,
    /// Normal time replies.
    pub time: u64,
    /// Time replies flagged unsynchronised (leap 3).
    pub unsynchronised: u64,
    /// Replies leaked past the rate limit.
    pub leaked: u64,
    /// RATE kiss-o'-death replies.
    pub kiss_rate: u64,
    /// Requests not answered, any reason.
    pub dropped: u64,
    /// Dropped: denied by allow/deny lists.
    pub dropped_denied: u64,
    /// Dropped: too short, too long, malformed or bad version.
    pub dropped_malformed: u64,
    /// Dropped: mode 6 (control).
    pub dropped_mode6: u64,
    /// Dropped: mode 7 (private).
    pub dropped_mode7: u64,
    /// Dropped: any other mode we do not answer (0, 1 when disabled, 2, 4, 5).
    pub dropped_other_mode: u64,
    /// Dropped: MAC or NTS we cannot handle.
    pub dropped_auth: u64,
    /// Dropped: our clock is unsynchronised.
    pub dropped_unsynchronised: u64,
    /// Dropped: over the rate limit.
    pub dropped_rate_limited: u64,
    /// Dropped: output buffer too small (daemon bug).
    pub dropped_internal: u64,
}

impl Stats {
    /// Counts one verdict.
    pub fn record(&mut self, action: &Action) {
        self.requests += 1;
        match *action {
            Action::Respond { kind, .. } => {
                self.responses += 1;
                match kind {
                    ResponseKind::Time => self.time += 1,
                    ResponseKind::Unsynchronised => self.unsynchronised += 1,
                    ResponseKind::Leaked => self.leaked += 1,
                    ResponseKind::KissRate => self.kiss_rate += 1,
                }
            }
            Action::Ignore(reason) => {
                self.dropped += 1;
                let counter = match reason {
                    DropReason::Denied => &mut self.dropped_denied,
                    DropReason::TooShort
                    | DropReason::TooLong
                    | DropReason::Malformed
                    | DropReason::BadVersion => &mut self.dropped_malformed,
                    DropReason::Mode6 => &mut self.dropped_mode6,
                    DropReason::Mode7 => &mut self.dropped_mode7,
                    DropReason::Mode0
                    | DropReason::Mode1
                    | DropReason::Mode2
                    | DropReason::Mode4
                    | DropReason::Mode5 => &mut self.dropped_other_mode,
                    DropReason::Authenticated | DropReason::Nts => &mut self.dropped_auth,
                    DropReason::Unsynchronised => &mut self.dropped_unsynchronised,
                    DropReason::RateLimited => &mut self.dropped_rate_limited,
                    DropReason::BufferTooSmall => &mut self.dropped_internal,
                };
                *counter += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let mut s = Stats::default();
        s.record(&Action::Respond {
            len: 48,
            kind: ResponseKind::Time,
        });
        s.record(&Action::Respond {
            len: 48,
            kind: ResponseKind::KissRate,
        });
        s.record(&Action::Ignore(DropReason::Mode6));
        s.record(&Action::Ignore(DropReason::TooShort));
        assert_eq!(s.requests, 4);
        assert_eq!(s.responses, 2);
        assert_eq!(s.time, 1);
        assert_eq!(s.kiss_rate, 1);
        assert_eq!(s.dropped, 2);
        assert_eq!(s.dropped_mode6, 1);
        assert_eq!(s.dropped_malformed, 1);
    }
}
