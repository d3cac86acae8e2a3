//! Which stratum and reference ID to advertise when they are copied from a
//! local NTP daemon (as rsntp does), as a state machine with time passed in.
//!
//! The daemon only sends the query and reads the clock: it asks
//! [`ReferenceState::due`] whether to query, reports the outcome with
//! [`ReferenceState::on_reply`] or [`ReferenceState::on_failure`], and asks
//! [`ReferenceState::current`] what to serve. The rules:
//!
//! * A copy is refreshed after `max_age`; after a failed or unsynchronised
//!   answer the next query waits [`REFERENCE_RETRY`] (never longer than
//!   `max_age`).
//! * A copy outlives failed refreshes for [`REFERENCE_GRACE_FACTOR`] ×
//!   `max_age` from when it was taken, so one lost packet does not flip the
//!   advertised stratum; after that, and before any answer, the configured
//!   reference is served.
//! * A daemon that answers as unsynchronised is believed at once: stratum 16,
//!   which the server turns into an unsynchronised (or local-stratum) reply.
//!
//! `max_age` is an argument of each call rather than state: one local NTP
//! daemon can be shared by namespaces configured with different ages.

use core::time::Duration;

use crate::clock::Reference;
use crate::mono::Mono;
use crate::packet::RefId;

/// Retry interval after a failed or unsynchronised answer (capped by
/// `max_age`): soon enough to pick up a daemon that just synchronised, rare
/// enough to cost nothing.
pub const REFERENCE_RETRY: Duration = Duration::from_secs(8);

/// A copied reference outlives failed refreshes for this many `max_age`s, so
/// one lost packet does not flip the advertised stratum.
pub const REFERENCE_GRACE_FACTOR: u32 = 4;

/// What the last query said.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Last<W> {
    /// Never answered nor failed yet.
    Pending,
    /// A synchronised server answered; this is what we copy.
    Copied(Reference),
    /// It answered, but as unsynchronised (leap 3, stratum 0 or 16).
    Unsynchronised,
    /// No usable answer, for this reason.
    Failed(W),
}

/// The copy of one local NTP daemon's reference and when to refresh it.
///
/// `W` is the caller's description of a failure (an error text, say); it is
/// kept so that status output can tell why a copy is stale or missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceState<W> {
    last: Last<W>,
    /// The last good copy and when it was taken (survives failed refreshes).
    last_good: Option<(Reference, Mono)>,
    /// When the last query finished.
    checked: Option<Mono>,
    /// A query is running; never start a second one.
    in_flight: bool,
}

/// Why [`ReferenceState::current`] chose its reference; the caller turns it
/// into words (with the address it queried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceSource<'a, W> {
    /// Copied from the local NTP daemon's last answer.
    Copied,
    /// The local NTP daemon said it is unsynchronised.
    Unsynchronised,
    /// The last good copy, kept because the latest refresh failed for this
    /// reason.
    CopiedStale(&'a W),
    /// No usable copy: the configured reference. `None`: not queried yet.
    Fallback(Option<&'a W>),
}

/// The reference to advertise now and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferenceChoice<'a, W> {
    /// Stratum, refid and root values to serve.
    pub reference: Reference,
    /// Where they come from.
    pub source: ReferenceSource<'a, W>,
}

impl<W> Default for ReferenceState<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W> ReferenceState<W> {
    /// A reference never queried: [`Self::due`] at once, the configured
    /// reference until an answer comes.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            last: Last::Pending,
            last_good: None,
            checked: None,
            in_flight: false,
        }
    }

    /// Whether a query should start now: none is running and the last one
    /// finished at least `max_age` ago (after a copy) or the retry interval
    /// ago (otherwise), or there was none yet. The caller then calls
    /// [`Self::on_query_started`] if it really starts one.
    #[must_use]
    pub fn due(&self, now: Mono, max_age: Duration) -> bool {
        let wait = match self.last {
            Last::Copied(_) => max_age,
            _ => REFERENCE_RETRY.min(max_age),
        };
        !self.in_flight && self.checked.is_none_or(|t| elapsed(now, t) >= wait)
    }

    /// A query is under way: [`Self::due`] says no until its outcome is
    /// reported.
    pub fn on_query_started(&mut self) {
        self.in_flight = true;
    }

    /// The local NTP daemon answered at `now`: `Some` with the reference of a
    /// synchronised server ([`Reference::from_server_reply`]), `None` when it
    /// is unsynchronised (which also discards the last good copy: a daemon
    /// that says it lost sync is believed at once).
    pub fn on_reply(&mut self, now: Mono, reference: Option<Reference>) {
        self.in_flight = false;
        self.checked = Some(now);
        self.last = match reference {
            Some(r) => {
                self.last_good = Some((r, now));
                Last::Copied(r)
            }
            None => {
                self.last_good = None;
                Last::Unsynchronised
            }
        };
    }

    /// The query finished at `now` without a usable answer, for reason `why`.
    /// The last good copy stays for its grace period.
    pub fn on_failure(&mut self, now: Mono, why: W) {
        self.in_flight = false;
        self.checked = Some(now);
        self.last = Last::Failed(why);
    }

    /// The reference to advertise at `now`: the copy, stratum 16 when the
    /// local daemon is unsynchronised, a stale copy within its grace period,
    /// or else `configured`.
    #[must_use]
    pub fn current(
        &self,
        now: Mono,
        max_age: Duration,
        configured: Reference,
    ) -> ReferenceChoice<'_, W> {
        match &self.last {
            Last::Copied(r) => ReferenceChoice {
                reference: *r,
                source: ReferenceSource::Copied,
            },
            Last::Unsynchronised => ReferenceChoice {
                // Stratum 16 is not a valid reference stratum: the server
                // serves this as unsynchronised (or as the local stratum, if
                // configured).
                reference: Reference {
                    stratum: 16,
                    refid: RefId::UNSYNC,
                    ..configured
                },
                source: ReferenceSource::Unsynchronised,
            },
            Last::Pending | Last::Failed(_) => {
                let why = match &self.last {
                    Last::Failed(w) => Some(w),
                    _ => None,
                };
                let grace = max_age.saturating_mul(REFERENCE_GRACE_FACTOR);
                match (self.last_good, why) {
                    (Some((r, at)), Some(why)) if elapsed(now, at) < grace => ReferenceChoice {
                        reference: r,
                        source: ReferenceSource::CopiedStale(why),
                    },
                    _ => ReferenceChoice {
                        reference: configured,
                        source: ReferenceSource::Fallback(why),
                    },
                }
            }
        }
    }
}

/// Time from `earlier` to `now`, zero if the caller's clock went backwards.
fn elapsed(now: Mono, earlier: Mono) -> Duration {
    Duration::from_nanos(now.saturating_nanos_since(earlier))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_AGE: Duration = Duration::from_secs(60);

    fn configured() -> Reference {
        Reference {
            stratum: 10,
            refid: RefId(*b"LOCL"),
            root_delay_us: 0,
            root_dispersion_us: 0,
            time: None,
        }
    }

    fn copied() -> Reference {
        Reference {
            stratum: 3,
            refid: RefId([10, 0, 0, 1]),
            root_delay_us: 2_000,
            root_dispersion_us: 3_000,
            time: None,
        }
    }

    fn at(secs: u64) -> Mono {
        Mono::from_nanos(1_000_000_000_000).saturating_add(Duration::from_secs(secs))
    }

    #[test]
    fn never_queried_is_due_and_serves_the_configuration() {
        let s = ReferenceState::<&str>::new();
        assert!(s.due(at(0), MAX_AGE));
        let c = s.current(at(0), MAX_AGE, configured());
        assert_eq!(c.reference, configured());
        assert_eq!(c.source, ReferenceSource::Fallback(None));
    }

    #[test]
    fn one_query_at_a_time() {
        let mut s = ReferenceState::<&str>::new();
        s.on_query_started();
        assert!(!s.due(at(0), MAX_AGE));
        assert!(!s.due(at(10_000), MAX_AGE), "still running, however long");
        s.on_failure(at(1), "no answer");
        assert!(!s.due(at(1), MAX_AGE));
    }

    #[test]
    fn fresh_copy_is_served_and_refreshed_after_max_age() {
        let mut s = ReferenceState::<&str>::new();
        s.on_query_started();
        s.on_reply(at(0), Some(copied()));
        let c = s.current(at(1), MAX_AGE, configured());
        assert_eq!(c.reference, copied());
        assert_eq!(c.source, ReferenceSource::Copied);
        assert!(!s.due(at(59), MAX_AGE));
        assert!(s.due(at(60), MAX_AGE));
        // Still served while the refresh runs.
        s.on_query_started();
        assert_eq!(s.current(at(61), MAX_AGE, configured()).reference, copied());
    }

    #[test]
    fn failure_right_after_success_keeps_the_copy() {
        let mut s = ReferenceState::new();
        s.on_reply(at(0), Some(copied()));
        s.on_failure(at(1), "no answer");
        let c = s.current(at(1), MAX_AGE, configured());
        assert_eq!(c.reference, copied());
        assert_eq!(c.source, ReferenceSource::CopiedStale(&"no answer"));
    }

    #[test]
    fn stale_copy_lasts_the_grace_period_then_falls_back() {
        let mut s = ReferenceState::new();
        s.on_reply(at(0), Some(copied()));
        // Refreshes keep failing; the grace counts from when the copy was taken.
        for t in [60, 68, 200, 239] {
            s.on_failure(at(t), "no answer");
            let c = s.current(at(t), MAX_AGE, configured());
            assert_eq!(c.reference, copied(), "at {t} s");
            assert_eq!(c.source, ReferenceSource::CopiedStale(&"no answer"));
        }
        // 4 × 60 s after the copy it expires, even without another failure.
        let c = s.current(at(240), MAX_AGE, configured());
        assert_eq!(c.reference, configured());
        assert_eq!(c.source, ReferenceSource::Fallback(Some(&"no answer")));
        // A new copy is served again at once.
        s.on_reply(at(241), Some(copied()));
        assert_eq!(
            s.current(at(241), MAX_AGE, configured()).source,
            ReferenceSource::Copied
        );
    }

    #[test]
    fn failure_without_a_copy_falls_back_to_the_configuration() {
        let mut s = ReferenceState::new();
        s.on_failure(at(0), "connect: refused");
        let c = s.current(at(0), MAX_AGE, configured());
        assert_eq!(c.reference, configured());
        assert_eq!(
            c.source,
            ReferenceSource::Fallback(Some(&"connect: refused"))
        );
    }

    #[test]
    fn retry_after_failure_uses_the_retry_interval_capped_by_max_age() {
        let mut s = ReferenceState::new();
        s.on_failure(at(0), "no answer");
        assert!(!s.due(at(7), MAX_AGE));
        assert!(s.due(at(8), MAX_AGE));
        // A max age below the retry interval wins.
        let short = Duration::from_secs(2);
        assert!(!s.due(at(1), short));
        assert!(s.due(at(2), short));
        // After a copy, the retry interval no longer applies.
        s.on_reply(at(10), Some(copied()));
        assert!(!s.due(at(18), MAX_AGE));
        assert!(s.due(at(70), MAX_AGE));
    }

    #[test]
    fn unsynchronised_answer_is_believed_at_once() {
        let mut s = ReferenceState::<&str>::new();
        s.on_reply(at(0), Some(copied()));
        s.on_reply(at(1), None);
        let c = s.current(at(1), MAX_AGE, configured());
        assert_eq!(c.source, ReferenceSource::Unsynchronised);
        assert_eq!(c.reference.stratum, 16);
        assert_eq!(c.reference.refid, RefId::UNSYNC);
        assert_eq!(c.reference.root_delay_us, configured().root_delay_us);
        // Retried like a failure, and a later failure finds no copy to keep.
        assert!(!s.due(at(8), MAX_AGE));
        assert!(s.due(at(9), MAX_AGE));
        s.on_failure(at(9), "no answer");
        assert_eq!(
            s.current(at(9), MAX_AGE, configured()).reference,
            configured()
        );
    }

    #[test]
    fn clock_going_backwards_is_not_elapsed_time() {
        let mut s = ReferenceState::new();
        s.on_reply(at(100), Some(copied()));
        s.on_failure(at(100), "no answer");
        assert!(!s.due(at(0), MAX_AGE));
        assert_eq!(s.current(at(0), MAX_AGE, configured()).reference, copied());
    }
}
