//! The quiet lane's bound on its own CPU: at most `quiet_lane_cpu_percent` (default
//! [`DEFAULT_LANE_CPU_PERCENT`]) of one CPU over time, whatever it serves and however many
//! namespaces ask.
//!
//! The lane (`quiet.rs`) runs at a nice value below the loop's, so the kernel prefers it; its
//! datagrams were once charged to each namespace's share of a loop round, and rounds pass only
//! when the loop runs, which bounded it, but also made a quiet namespace wait for the loop
//! whenever the loop's thread was descheduled for longer than that namespace's share lasted
//! (issue 11, the DNS-miss flood: B's share spent on the lane 1,149 times in a run, each time
//! its next datagram waiting for the loop's next round). The lane now keeps its own accounts:
//! a per-namespace allowance per millisecond (`share::NsShare::grant_lane`) and this lane-wide
//! CPU budget. A tenant who owns many namespaces, each flooded just gently enough to stay
//! quiet, can then make the lane use at most three quarters of a CPU, and the loop keeps the
//! rest of a core they share, however many namespaces the tenant floods.
//!
//! It is a token bucket in nanoseconds of CPU: credit accrues at the budgeted fraction of wall
//! time (up to [`LANE_CPU_BURST_NS`]) and the lane's own CPU time (its thread CPU clock, read
//! every [`LANE_CPU_CHECK_NS`] of wall time) is taken from it. With no credit the lane sleeps
//! until there is some again; its sockets stay in the probe set, and their own tasks on the
//! loop serve them meanwhile, under the loop's fair share. Time is passed in, so the arithmetic
//! is tested without sleeping.

/// The lane may use this percentage of one CPU by default (`quiet_lane_cpu_percent`). Half a CPU
/// was tried first: the lane then paused about 800 times a second under the DNS-miss flood
/// while serving one namespace probed back to back (0.45 CPUs for 28,000 answers a second on
/// the 2-CPU bench VM, where chronyd in B used 0.46 for 40,000), and each pause was a wait in
/// B's tail. At three quarters the loop keeps at least a quarter of a core it shares with the
/// lane, whatever the lane's nice value and however many namespaces ask.
/// An operator may lower it (a small container, where the lane's CPU would come out of the
/// loop's) or raise it up to a whole CPU.
pub(crate) const DEFAULT_LANE_CPU_PERCENT: u64 = 75;

/// Credit the lane may save while idle: how long it may run flat out after a quiet spell.
pub(crate) const LANE_CPU_BURST_NS: u64 = 2_000_000;

/// How often (wall time) the lane reads its thread CPU clock, a system call: the budget is
/// overrun by at most this much CPU between two reads.
pub(crate) const LANE_CPU_CHECK_NS: u64 = 250_000;

/// The lane's CPU budget (see the module documentation).
#[derive(Debug)]
pub(crate) struct LanePace {
    /// Wall time of the last check (ns, any fixed origin).
    wall: u64,
    /// The lane thread's CPU clock at the last check (ns).
    cpu: u64,
    /// CPU nanoseconds the lane may still use; negative: owed.
    credit: i64,
    /// Times the lane had to pause.
    pauses: u64,
    /// Its share of one CPU, in percent (1..=100).
    percent: u64,
}

impl LanePace {
    /// A full budget of `percent` of one CPU (clamped to 1..=100) as of `wall` (wall clock)
    /// and `cpu` (the lane thread's CPU clock).
    pub(crate) fn new(wall: u64, cpu: u64, percent: u64) -> Self {
        Self {
            wall,
            cpu,
            credit: burst(),
            pauses: 0,
            percent: percent.clamp(1, 100),
        }
    }

    /// Whether the thread CPU clock is due for a read at wall time `now`.
    pub(crate) fn due(&self, now: u64) -> bool {
        now.saturating_sub(self.wall) >= LANE_CPU_CHECK_NS
    }

    /// Accounts the CPU used up to `cpu` at wall time `now`. `None`: go on serving;
    /// `Some(ns)`: the budget is spent, pause that long (the lane's sockets are served by the
    /// loop meanwhile).
    pub(crate) fn check(&mut self, now: u64, cpu: u64) -> Option<u64> {
        let earned = now.saturating_sub(self.wall).saturating_mul(self.percent) / 100;
        let used = cpu.saturating_sub(self.cpu);
        self.wall = self.wall.max(now);
        self.cpu = self.cpu.max(cpu);
        let credit = i128::from(self.credit) + i128::from(earned) - i128::from(used);
        self.credit = i64::try_from(credit.min(i128::from(burst()))).unwrap_or(i64::MIN);
        if self.credit > 0 {
            return None;
        }
        self.pauses += 1;
        // Until the credit is back above 0 (plus one nanosecond).
        let owed = self.credit.unsigned_abs().saturating_add(1);
        Some(owed.saturating_mul(100).div_ceil(self.percent))
    }

    /// Times the budget made the lane pause.
    pub(crate) fn pauses(&self) -> u64 {
        self.pauses
    }
}

fn burst() -> i64 {
    i64::try_from(LANE_CPU_BURST_NS).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const P: u64 = DEFAULT_LANE_CPU_PERCENT;

    #[test]
    fn a_lane_within_its_fraction_never_pauses() {
        let mut p = LanePace::new(0, 0, P);
        // Just under the fraction of every millisecond for ten seconds.
        for ms in 1..=10_000 {
            let cpu = ms * MS * P / 100 * 99 / 100;
            assert_eq!(p.check(ms * MS, cpu), None, "at {ms} ms");
        }
        assert_eq!(p.pauses(), 0);
    }

    #[test]
    fn a_lane_running_flat_out_is_held_to_its_fraction() {
        for percent in [P, 10, 100] {
            held_to(percent);
        }
    }

    fn held_to(percent: u64) {
        let mut p = LanePace::new(0, 0, percent);
        let (mut wall, mut cpu) = (0u64, 0u64);
        // Run flat out (CPU = wall) between checks, sleep when told: over 10 s of wall time
        // the CPU used is the fraction plus at most the burst and one check interval.
        while wall < 10_000 * MS {
            wall += LANE_CPU_CHECK_NS;
            cpu += LANE_CPU_CHECK_NS;
            if let Some(pause) = p.check(wall, cpu) {
                assert!(pause > 0);
                wall += pause;
            }
        }
        let allowed = wall * percent / 100 + LANE_CPU_BURST_NS + LANE_CPU_CHECK_NS;
        assert!(
            cpu <= allowed,
            "{percent} %: used {cpu} ns of CPU in {wall} ns, allowed {allowed}"
        );
        assert!(
            cpu + LANE_CPU_BURST_NS + 2 * LANE_CPU_CHECK_NS >= wall * percent / 100,
            "{percent} %: held below its fraction: {cpu} ns of CPU in {wall} ns"
        );
        // A whole CPU never runs out; less always does.
        assert_eq!(p.pauses() > 0, percent < 100, "{percent} %");
    }

    #[test]
    fn idle_time_saves_only_a_burst() {
        let mut p = LanePace::new(0, 0, P);
        // Ten idle seconds, then flat out: the first pause comes once the burst is spent.
        let start = 10_000 * MS;
        assert_eq!(p.check(start, 0), None);
        let mut ran = 0;
        let mut wall = start;
        loop {
            wall += LANE_CPU_CHECK_NS;
            ran += LANE_CPU_CHECK_NS;
            if p.check(wall, ran).is_some() {
                break;
            }
        }
        // Flat out it earns the fraction of what it uses back: the burst lasts
        // DEN / (DEN - NUM) times as long.
        let lasts = LANE_CPU_BURST_NS * 100 / (100 - P);
        assert!(ran <= lasts + LANE_CPU_CHECK_NS, "ran {ran} ns");
        assert!(ran >= LANE_CPU_BURST_NS, "ran {ran} ns");
    }

    #[test]
    fn due_every_check_interval() {
        let p = LanePace::new(5 * MS, 0, P);
        assert!(!p.due(5 * MS));
        assert!(!p.due(5 * MS + LANE_CPU_CHECK_NS - 1));
        assert!(p.due(5 * MS + LANE_CPU_CHECK_NS));
        // A clock that went back reads as not due.
        assert!(!p.due(0));
    }
}
