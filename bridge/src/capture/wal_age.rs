//! How old the WAL a slot retains is. Postgres reports the slot's `restart_lsn` but not when
//! that WAL was written, so the watcher samples the server's WAL position over time and dates
//! the retained WAL by the first sample that had already reached it: an age with the sampling
//! interval as its resolution, never an overestimate.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct WalClock {
    /// (when, the server's WAL position then), oldest first.
    samples: VecDeque<(Instant, u64)>,
}

impl WalClock {
    /// Records the server's current WAL position and returns the age of the WAL from
    /// `restart_lsn` on; the samples the slot has moved past are dropped, so memory stays bounded
    /// by how far back the slot holds WAL.
    pub fn observe(&mut self, now: Instant, current_lsn: u64, restart_lsn: u64) -> Duration {
        if self.samples.back().is_none_or(|&(_, lsn)| lsn <= current_lsn) {
            self.samples.push_back((now, current_lsn));
        }
        // restart_lsn only moves forward: samples below it will never date anything again.
        while self.samples.len() > 1 && self.samples.front().is_some_and(|&(_, lsn)| lsn < restart_lsn) {
            self.samples.pop_front();
        }
        if restart_lsn >= current_lsn {
            return Duration::ZERO;
        }
        match self.samples.front() {
            Some(&(at, lsn)) if lsn >= restart_lsn => now.saturating_duration_since(at),
            _ => Duration::ZERO,
        }
    }

    #[cfg(test)]
    fn samples(&self) -> usize {
        self.samples.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retained_wal_is_dated_by_the_first_sample_that_reached_it() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut clock = WalClock::default();
        // A slot that keeps up: its retained WAL is as old as the newest sample.
        assert_eq!(clock.observe(at(0), 100, 100), Duration::ZERO);
        assert_eq!(clock.observe(at(10), 200, 200), Duration::ZERO);
        // It stops acknowledging at 200 while the server writes on: the age grows from the
        // sample that first reached 200.
        assert_eq!(clock.observe(at(20), 300, 200), Duration::from_secs(10));
        assert_eq!(clock.observe(at(30), 400, 200), Duration::from_secs(20));
        // It catches up to 350: dated by the first sample at or past 350 (t=30).
        assert_eq!(clock.observe(at(40), 500, 350), Duration::from_secs(10));
        // Samples before that are gone; memory stays bounded.
        assert!(clock.samples() <= 3, "{}", clock.samples());
        // Fully caught up: nothing retained, nothing old.
        assert_eq!(clock.observe(at(50), 500, 500), Duration::ZERO);
        // An idle server: WAL from before the first sample is at least as old as that sample.
        let mut idle = WalClock::default();
        idle.observe(at(0), 500, 480);
        assert_eq!(idle.observe(at(20), 500, 480), Duration::from_secs(20));
    }
}
