//! The acknowledgement rule as a state machine without I/O: which LSN the slot may be told is
//! flushed, given what was read, batched, handed to the sink and completed.
//!
//! A batch carries the end LSN of the last transaction whose every record is in it or in an
//! earlier batch. Completions arrive in submission order, so `flushed` reaches a commit only
//! once every record of it and of all earlier transactions is durable. When nothing is
//! mid-transaction, batched or in flight, a position the server reports (a keepalive's WAL end,
//! a heartbeat message) is acknowledged as well: an idle database does not keep WAL forever.

use std::collections::VecDeque;

use super::progress::Progress;
use crate::lsn::Lsn;

/// A transaction's end: its end LSN and commit time (µs since 2000-01-01, the server's clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    pub end: Lsn,
    pub time: i64,
}

pub struct AckTracker<'p> {
    /// The acknowledged position; it outlives a connection (a reconnect resumes from it).
    progress: &'p mut Progress,
    in_tx: bool,
    /// The open batch holds records.
    open: bool,
    /// The end of the last transaction whose records are all in the open batch or earlier,
    /// waiting for the batch that carries it.
    pending: Option<Commit>,
    /// What each in-flight batch completes, oldest first.
    inflight: VecDeque<Option<Commit>>,
}

impl<'p> AckTracker<'p> {
    pub fn new(progress: &'p mut Progress) -> Self {
        Self {
            progress,
            in_tx: false,
            open: false,
            pending: None,
            inflight: VecDeque::new(),
        }
    }

    /// What the next standby status update reports.
    pub fn flushed(&self) -> Lsn {
        self.progress.flushed()
    }

    /// Batches handed to the sink and not completed yet.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Nothing read is waiting for the sink: no open transaction, batch or batch in flight.
    pub fn is_idle(&self) -> bool {
        !self.in_tx && !self.open && self.inflight.is_empty()
    }

    /// Nothing batched or in flight (a transaction may be open).
    fn settled(&self) -> bool {
        !self.open && self.inflight.is_empty()
    }

    pub fn begin(&mut self) {
        self.in_tx = true;
    }

    /// A record went into the open batch.
    pub fn record(&mut self) {
        self.open = true;
    }

    /// A transaction ended at `end`: acknowledged now if none of its records is still on its way,
    /// else by the batch that carries its last record (or a later one).
    pub fn commit(&mut self, end: Lsn, time: i64) {
        self.in_tx = false;
        if self.settled() {
            self.progress.complete(end, time);
        } else {
            self.pending = Some(Commit { end, time });
        }
    }

    /// The open batch was handed to the sink; returns what it completes.
    pub fn submit(&mut self) -> Option<Commit> {
        let completes = self.pending.take();
        self.inflight.push_back(completes);
        self.open = false;
        completes
    }

    /// The oldest in-flight batch is durable.
    pub fn batch_done(&mut self) {
        if let Some(c) = self.inflight.pop_front().flatten() {
            self.progress.complete(c.end, c.time);
        }
        // A commit that came while batches were in flight, with nothing of its own left to send.
        if self.settled() {
            if let Some(c) = self.pending.take() {
                self.progress.complete(c.end, c.time);
            }
        }
    }

    /// The server reports a position (a keepalive's WAL end, a heartbeat message read in
    /// source order): everything before it is settled if nothing of ours is pending.
    /// `server_time`: the server's clock when it reported it, if the message carries one.
    pub fn idle_at(&mut self, lsn: Lsn, server_time: Option<i64>) {
        if self.is_idle() {
            self.progress.idle_at(lsn, server_time);
        }
    }

    /// The acknowledged position and its commit time, for the delivery record.
    pub fn progress(&self) -> Progress {
        *self.progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_is_acknowledged_only_once_its_batch_completed() {
        let mut p = Progress::starting_at(Lsn(100));
        let mut t = AckTracker::new(&mut p);
        t.begin();
        t.record();
        t.commit(Lsn(200), 0);
        assert_eq!(t.flushed(), Lsn(100), "its record is still in the open batch");
        assert_eq!(t.submit().map(|c| c.end), Some(Lsn(200)));
        assert_eq!(t.flushed(), Lsn(100), "in flight");
        t.batch_done();
        assert_eq!(t.flushed(), Lsn(200));
    }

    #[test]
    fn completions_in_order_never_acknowledge_a_later_commit_first() {
        let mut p = Progress::starting_at(Lsn(0));
        let mut t = AckTracker::new(&mut p);
        for end in [10, 20] {
            t.begin();
            t.record();
            t.commit(Lsn(end), 0);
            t.submit();
        }
        // A transaction spanning two batches: only the second carries its commit.
        t.begin();
        t.record();
        t.submit();
        t.record();
        t.commit(Lsn(30), 0);
        t.submit();
        let mut seen = Vec::new();
        while t.in_flight() > 0 {
            t.batch_done();
            seen.push(t.flushed().0);
        }
        assert_eq!(seen, [10, 20, 20, 30]);
    }

    #[test]
    fn a_commit_with_nothing_left_to_send_waits_for_the_batches_in_flight() {
        let mut p = Progress::starting_at(Lsn(0));
        let mut t = AckTracker::new(&mut p);
        t.begin();
        t.record();
        t.submit();
        // The commit arrives after its only batch left.
        t.commit(Lsn(50), 0);
        assert_eq!(t.flushed(), Lsn(0));
        t.batch_done();
        assert_eq!(t.flushed(), Lsn(50));
    }

    #[test]
    fn the_server_position_counts_only_when_nothing_is_pending() {
        let mut p = Progress::starting_at(Lsn(10));
        let mut t = AckTracker::new(&mut p);
        t.idle_at(Lsn(40), None);
        assert_eq!(t.flushed(), Lsn(40), "idle: the keepalive's WAL end is safe");
        t.begin();
        t.idle_at(Lsn(60), None);
        assert_eq!(t.flushed(), Lsn(40), "mid-transaction");
        t.record();
        t.commit(Lsn(70), 0);
        t.idle_at(Lsn(80), None);
        assert_eq!(t.flushed(), Lsn(40), "a batch is open");
        t.submit();
        t.idle_at(Lsn(80), None);
        assert_eq!(t.flushed(), Lsn(40), "a batch is in flight");
        t.batch_done();
        t.idle_at(Lsn(90), None);
        assert_eq!(t.flushed(), Lsn(90));
        // An empty transaction (only other tables' changes) acknowledges at once.
        t.begin();
        t.commit(Lsn(95), 0);
        assert_eq!(t.flushed(), Lsn(95));
    }

    #[test]
    fn the_position_survives_the_tracker() {
        let mut p = Progress::starting_at(Lsn(0));
        {
            let mut t = AckTracker::new(&mut p);
            t.begin();
            t.record();
            t.commit(Lsn(5), 0);
            t.submit();
            t.batch_done();
            // A batch in flight when the connection fails is simply dropped: replayed later.
            t.begin();
            t.record();
            t.commit(Lsn(9), 0);
            t.submit();
        }
        assert_eq!(p.flushed(), Lsn(5));
    }
}
