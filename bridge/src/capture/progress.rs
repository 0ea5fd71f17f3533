//! The acknowledgement position, which only moves forward.

use crate::lsn::Lsn;

/// `flushed`: everything before it is durable in Kinesis (or was never going to be published),
/// so the slot may release it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    flushed: Lsn,
}

impl Progress {
    pub fn starting_at(flushed: Lsn) -> Self {
        Self { flushed }
    }

    pub fn flushed(&self) -> Lsn {
        self.flushed
    }

    /// A batch completed a transaction ending at `lsn`. Completions arrive in source order, so
    /// this can never go back; if it did, an earlier transaction would be acknowledged late, not
    /// lost, and the assertion catches the bug in tests.
    pub fn complete(&mut self, lsn: Lsn) {
        debug_assert!(
            lsn >= self.flushed,
            "acknowledgement went backwards: {lsn} < {}",
            self.flushed
        );
        self.flushed = self.flushed.max(lsn);
    }

    /// Nothing is pending: the server's WAL end is safe to acknowledge as well.
    pub fn idle_at(&mut self, wal_end: Lsn) {
        self.flushed = self.flushed.max(wal_end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_moves_forward() {
        let mut p = Progress::starting_at(Lsn(10));
        p.idle_at(Lsn(5));
        assert_eq!(p.flushed(), Lsn(10));
        p.complete(Lsn(20));
        p.idle_at(Lsn(30));
        assert_eq!(p.flushed(), Lsn(30));
    }
}
