//! The acknowledgement position, which only moves forward, and when it was committed.

use crate::lsn::Lsn;

/// `flushed`: everything before it is durable in Kinesis (or was never going to be published),
/// so the slot may release it. `commit_time` is a lower bound of the commit time of whatever
/// comes after it — what outbox recovery needs to know where re-publishing must start
/// (see `delivery`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    flushed: Lsn,
    /// Microseconds since 2000-01-01 on the server's clock (0: not known yet).
    commit_time: i64,
}

impl Progress {
    pub fn starting_at(flushed: Lsn) -> Self {
        Self {
            flushed,
            commit_time: 0,
        }
    }

    /// A starting point whose commit time is known (after a resync: the new slot's snapshot).
    pub fn starting_at_time(flushed: Lsn, commit_time: i64) -> Self {
        Self { flushed, commit_time }
    }

    pub fn flushed(&self) -> Lsn {
        self.flushed
    }

    /// Server time (µs since 2000-01-01) no later than the commit of anything after `flushed`.
    pub fn commit_time(&self) -> i64 {
        self.commit_time
    }

    /// A batch completed a transaction ending at `lsn`, committed at `commit_time`. Completions
    /// arrive in source order, so this can never go back; if it did, an earlier transaction
    /// would be acknowledged late, not lost, and the assertion catches the bug in tests.
    pub fn complete(&mut self, lsn: Lsn, commit_time: i64) {
        debug_assert!(
            lsn >= self.flushed,
            "acknowledgement went backwards: {lsn} < {}",
            self.flushed
        );
        self.flushed = self.flushed.max(lsn);
        self.commit_time = self.commit_time.max(commit_time);
    }

    /// Nothing is pending: the server's WAL end is safe to acknowledge as well. `server_time`
    /// is when the server reported it (a keepalive's clock), if known: whatever commits later
    /// commits after it.
    pub fn idle_at(&mut self, wal_end: Lsn, server_time: Option<i64>) {
        if wal_end > self.flushed {
            self.flushed = wal_end;
            if let Some(t) = server_time {
                self.commit_time = self.commit_time.max(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_moves_forward() {
        let mut p = Progress::starting_at(Lsn(10));
        p.idle_at(Lsn(5), Some(99));
        assert_eq!(p.flushed(), Lsn(10));
        assert_eq!(p.commit_time(), 0, "a position behind changes nothing");
        p.complete(Lsn(20), 7);
        p.idle_at(Lsn(30), None);
        assert_eq!(
            (p.flushed(), p.commit_time()),
            (Lsn(30), 7),
            "no clock: the old time stays"
        );
        p.idle_at(Lsn(40), Some(50));
        assert_eq!((p.flushed(), p.commit_time()), (Lsn(40), 50));
    }
}
