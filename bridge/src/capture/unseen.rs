//! Decoded transactions that no snapshot has shown yet: what a backfill chunk read later may
//! not see although their changes already streamed (see `backfill`).
//!
//! Postgres writes a commit record before it makes the transaction visible (the gap is the WAL
//! flush, and a synchronous standby's acknowledgement). So a chunk read after its low watermark
//! may miss a change that streamed before it. Each chunk carries the snapshot it was read in;
//! this list tells which decoded transactions it does not show, and which rows they changed.

use std::collections::{HashSet, VecDeque};

use super::snapshot::{precedes, Snapshot};
use crate::table::TableName;

/// How many transactions are kept at most (4 bytes each, plus noted keys). Snapshots trim the
/// list long before: every chunk's, one per pacing pause and one per poll between jobs.
const CAP: usize = 1 << 20;

/// Transactions decoded (with a row change) that no snapshot has shown yet.
#[derive(Default)]
pub struct Unseen {
    /// Each with the job whose noting covered its row changes (0: none; its keys are unknown).
    xids: VecDeque<(u32, u64)>,
    /// Rows they changed while a job ran.
    keys: Vec<(u32, TableName, String)>,
    /// Transactions running when capture started, not decoded since: one may have committed
    /// and been streamed by an earlier process while it waited to become visible.
    seeded: HashSet<u32>,
    /// The newest snapshot seen: whatever it shows, every later one shows.
    snapshot: Option<Snapshot>,
    /// The newest xid dropped from a full list without a snapshot showing it.
    dropped: Option<u32>,
}

impl Unseen {
    fn shown(&self, xid: u32) -> bool {
        self.snapshot.as_ref().is_some_and(|s| s.shows(xid))
    }

    pub fn is_empty(&self) -> bool {
        self.xids.is_empty() && self.keys.is_empty() && self.seeded.is_empty()
    }

    /// The first row change of `xid` was decoded while job `job` noted changes (0: none did).
    pub fn decoded(&mut self, xid: u32, job: u64) {
        // Its commit is in this process's stream after all: an ordinary transaction now.
        self.seeded.remove(&xid);
        if self.shown(xid) {
            return;
        }
        if self.xids.len() >= CAP {
            if let Some((old, _)) = self.xids.pop_front() {
                self.dropped = Some(self.dropped.filter(|d| precedes(old, *d)).unwrap_or(old));
            }
        }
        self.xids.push_back((xid, job));
    }

    pub fn note(&mut self, xid: u32, table: &TableName, key: String) {
        if !self.shown(xid) {
            self.keys.push((xid, table.clone(), key));
        }
    }

    /// Transactions running when capture started (`snapshot`): a previous process may have
    /// streamed one that had committed and waited to become visible; its keys are unknown here.
    /// Each counts until a snapshot shows it or this process decodes it.
    pub fn seed(&mut self, snapshot: &Snapshot, running: impl IntoIterator<Item = u32>) {
        self.observe(snapshot);
        self.seeded
            .extend(running.into_iter().filter(|xid| !snapshot.shows(*xid)));
    }

    /// For a chunk of `table` read in `snapshot` by job `job`, at its high watermark: the keys a
    /// transaction it does not show changed; or a transaction it does not show whose changes
    /// that job did not note (decoded before it began, or by an earlier process).
    pub fn stale_for(
        &self,
        snapshot: &Snapshot,
        table: &TableName,
        job: u64,
    ) -> Result<HashSet<String>, u32> {
        let unknown = |noted_by: u64| noted_by == 0 || noted_by != job;
        if let Some(&(xid, _)) = self
            .xids
            .iter()
            .find(|(x, by)| unknown(*by) && !snapshot.shows(*x))
        {
            return Err(xid);
        }
        if let Some(&xid) = self.seeded.iter().find(|x| !snapshot.shows(**x)) {
            return Err(xid);
        }
        if let Some(dropped) = self.dropped.filter(|d| !precedes(*d, snapshot.xmin)) {
            return Err(dropped);
        }
        Ok(self
            .keys
            .iter()
            .filter(|(xid, t, _)| t == table && !snapshot.shows(*xid))
            .map(|(_, _, key)| key.clone())
            .collect())
    }

    /// Forgets what `snapshot` shows: every later snapshot shows it too. Only with no chunk
    /// in flight whose snapshot is older (it may not show what this one does).
    pub fn observe(&mut self, snapshot: &Snapshot) {
        self.xids.retain(|(xid, _)| !snapshot.shows(*xid));
        self.keys.retain(|(xid, _, _)| !snapshot.shows(*xid));
        self.seeded.retain(|xid| !snapshot.shows(*xid));
        if self.dropped.is_some_and(|d| precedes(d, snapshot.xmin)) {
            self.dropped = None;
        }
        self.snapshot = Some(snapshot.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(xmin: u32, xmax: u32, xip: &[u32]) -> Snapshot {
        Snapshot {
            xmin,
            xmax,
            xip: xip.iter().copied().collect(),
        }
    }

    #[test]
    fn a_chunk_leaves_out_rows_of_transactions_its_snapshot_does_not_show() {
        let customers: TableName = "public.customers".parse().unwrap();
        let orders: TableName = "public.orders".parse().unwrap();
        let mut unseen = Unseen::default();
        for (xid, table, key) in [
            (10, &customers, "a"),
            (11, &customers, "b"),
            (12, &orders, "a"),
            (13, &customers, "c"),
        ] {
            unseen.decoded(xid, 1);
            unseen.note(xid, table, key.into());
        }
        // 11 still commits (a synchronous standby), 13 ended after the snapshot.
        let chunk = snap(11, 13, &[11]);
        let stale = unseen.stale_for(&chunk, &customers, 1).unwrap();
        assert_eq!(stale, HashSet::from(["b".to_owned(), "c".to_owned()]));
        unseen.observe(&chunk);
        assert_eq!(unseen.xids.iter().map(|x| x.0).collect::<Vec<_>>(), [11, 13]);
        // What the snapshot showed is not noted again.
        unseen.decoded(9, 1);
        unseen.note(9, &customers, "z".into());
        assert_eq!(unseen.xids.len(), 2);
        assert_eq!(unseen.keys.len(), 2);
        // A later snapshot shows both: nothing is left out, nothing kept.
        let later = snap(14, 14, &[]);
        assert!(unseen.stale_for(&later, &customers, 1).unwrap().is_empty());
        unseen.observe(&later);
        assert!(unseen.is_empty());
    }

    #[test]
    fn an_unseen_transaction_whose_keys_this_job_did_not_note_makes_the_chunk_read_again() {
        let customers: TableName = "public.customers".parse().unwrap();
        let mut unseen = Unseen::default();
        unseen.decoded(20, 0);
        unseen.decoded(21, 2);
        unseen.note(21, &customers, "a".into());
        // Noted by job 1, which ended: job 2 cannot know all it changed.
        unseen.decoded(19, 1);
        assert_eq!(unseen.stale_for(&snap(19, 22, &[20]), &customers, 2), Err(20));
        assert_eq!(unseen.stale_for(&snap(19, 22, &[19]), &customers, 2), Err(19));
        // Once they are visible the chunk goes out, without what 21 changed if it is not.
        let stale = unseen.stale_for(&snap(21, 22, &[21]), &customers, 2).unwrap();
        assert_eq!(stale, HashSet::from(["a".to_owned()]));
    }

    #[test]
    fn transactions_running_at_start_are_unknown_until_shown_or_decoded() {
        let customers: TableName = "public.customers".parse().unwrap();
        let mut unseen = Unseen::default();
        // At start 30 and 35 (past xmax) ran; either may have been streamed already.
        unseen.seed(&snap(30, 33, &[30]), [30, 35]);
        assert_eq!(unseen.stale_for(&snap(31, 35, &[]), &customers, 1), Err(35));
        assert!(unseen.stale_for(&snap(36, 36, &[]), &customers, 1).is_ok());
        // Decoded here (while job 1 runs), 35 is known: its noted keys are left out instead.
        unseen.decoded(35, 1);
        unseen.note(35, &customers, "k".into());
        let stale = unseen.stale_for(&snap(31, 35, &[]), &customers, 1).unwrap();
        assert_eq!(stale, HashSet::from(["k".to_owned()]));
    }

    #[test]
    fn a_full_list_that_dropped_an_unseen_transaction_is_not_trusted_until_a_snapshot_shows_it() {
        let customers: TableName = "public.customers".parse().unwrap();
        let mut unseen = Unseen::default();
        for xid in 100..100 + CAP as u32 + 2 {
            unseen.decoded(xid, 1);
        }
        assert_eq!(unseen.dropped, Some(101));
        assert_eq!(unseen.stale_for(&snap(101, 200, &[]), &customers, 1), Err(101));
        unseen.observe(&snap(102, 102, &[]));
        assert_eq!(unseen.dropped, None);
        assert!(unseen.stale_for(&snap(102, 102, &[]), &customers, 1).is_ok());
    }
}
