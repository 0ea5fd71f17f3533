//! What the streaming loop and the runner share: the chunk between its watermarks, the keys
//! changed in that window, and the decision at the high watermark.

use super::job::Job;
use super::*;

/// A chunk read between its watermarks, waiting for the streaming loop to reach the high one.
pub(super) struct Chunk {
    pub(super) seq: u64,
    pub(super) table: TableName,
    pub(super) relation: Arc<Relation>,
    pub(super) key_columns: Vec<usize>,
    pub(super) key: PartitionKey,
    pub(super) rows: Vec<Vec<Option<String>>>,
    /// What the chunk was read in, and by which job (see `Unseen`).
    pub(super) snapshot: Snapshot,
    pub(super) job: u64,
    /// The job's progress once this chunk is durable.
    pub(super) after: Job,
}

/// A chunk sent at `lsn`: counted once the slot's acknowledged position passes it; sent again
/// if the stream replays its high watermark before that.
pub(super) struct Mark {
    pub(super) seq: u64,
    pub(super) lsn: Lsn,
    pub(super) records: Vec<Record>,
    pub(super) after: Job,
}

pub(super) struct Window {
    pub(super) seq: u64,
    pub(super) table: TableName,
    pub(super) keys: HashSet<String>,
}

#[derive(Default)]
pub(super) struct Shared {
    /// Watermarks of this process's chunk task carry it; others (a previous run's) are ignored.
    pub(super) run: String,
    /// The chunk whose low watermark comes next, and its table.
    pub(super) expecting: Option<(u64, TableName)>,
    pub(super) window: Option<Window>,
    pub(super) ready: Option<Chunk>,
    pub(super) pending: VecDeque<Record>,
    pub(super) marks: VecDeque<Mark>,
    pub(super) durable: Option<Job>,
    /// The last chunk was not sent: this transaction, decoded before the job began, was not
    /// yet visible to it.
    pub(super) reread: Option<u32>,
    /// The last chunk whose high watermark was processed (sent or to be read again).
    pub(super) processed: u64,
}

/// How often a chunk that must be read again waits for the transaction it did not see.
pub(super) const REREAD_PAUSE: Duration = Duration::from_millis(200);

/// A chunk at its high watermark: rows sent as load records, and rows left out because a
/// change between the watermarks carries a newer state.
#[derive(Clone, Copy, Debug)]
pub struct ChunkSent {
    pub records: u64,
    pub superseded: u64,
    /// The chunk is read again instead (see `Unseen`).
    pub reread: u64,
}

/// What the streaming loop and the chunk task share.
#[derive(Default)]
pub struct Coordinator {
    pub(super) shared: Mutex<Shared>,
    /// Outlives jobs: a transaction decoded before one begins may be invisible to its chunks.
    pub(super) unseen: Mutex<Unseen>,
    pub(super) processed: Notify,
    /// A job was begun and is not done: without one, the streaming loop's checks (per message
    /// and per change) skip the lock.
    pub(super) active: AtomicBool,
    /// Counts jobs begun: row changes are noted for the current one (`Unseen`).
    pub(super) job: AtomicU64,
    /// Transactions a previous process may have streamed before they were visible are known.
    pub(super) seeded: AtomicBool,
}

impl Coordinator {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A poisoned lock means a panic elsewhere, which already stops the process.
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a job runs: row changes are then noted (`changed`).
    pub fn noting(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    pub(super) fn unseen(&self) -> std::sync::MutexGuard<'_, Unseen> {
        self.unseen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The first row change of transaction `xid` was decoded (whether or not a job runs).
    pub fn decoded(&self, xid: u32) {
        let job = if self.noting() {
            self.job.load(Ordering::Acquire)
        } else {
            0
        };
        self.unseen().decoded(xid, job);
    }

    /// A row change while a job runs: the chunk copy of this key is stale if the change is in
    /// its window or its transaction is invisible to the chunk's snapshot.
    pub fn changed(&self, table: &TableName, key: String, xid: u32) {
        {
            let mut s = self.lock();
            if let Some(w) = s.window.as_mut().filter(|w| &w.table == table) {
                w.keys.insert(key.clone());
            }
        }
        self.unseen().note(xid, table, key);
    }

    /// A snapshot taken now: what it shows need not be remembered.
    pub(super) fn observe(&self, snapshot: &Snapshot) {
        self.unseen().observe(snapshot);
    }

    /// Waits until chunk `seq`'s high watermark was processed; then, if it was not sent and
    /// must be read again, the transaction why. A wake-up left over from an earlier chunk
    /// (one whose job was interrupted) is not taken for this one's.
    pub(super) async fn processed(&self, seq: u64) -> Option<u32> {
        loop {
            {
                let mut s = self.lock();
                if s.processed >= seq {
                    return s.reread.take();
                }
            }
            self.processed.notified().await;
        }
    }

    /// A watermark read from the stream at `lsn`. At a chunk's high watermark: how many of
    /// its rows go out, and how many were superseded by a change in the window.
    pub fn watermark(
        &self,
        content: &[u8],
        lsn: Lsn,
        opts: EncodeOptions,
        limit: usize,
    ) -> Option<ChunkSent> {
        let text = String::from_utf8_lossy(content);
        let mut parts = text.split_whitespace();
        let (Some(run), Some(seq), Some(edge)) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        let seq = seq.parse::<u64>().ok()?;
        let mut s = self.lock();
        if run != s.run {
            return None;
        }
        match edge {
            "low" => {
                if let Some((_, table)) = s.expecting.clone().filter(|(n, _)| *n == seq) {
                    s.window = Some(Window {
                        seq,
                        table,
                        keys: HashSet::new(),
                    });
                }
            }
            "high" => {
                if let Some(chunk) = s.ready.take_if(|c| c.seq == seq) {
                    let mut keys = s
                        .window
                        .take()
                        .filter(|w| w.seq == seq)
                        .map(|w| w.keys)
                        .unwrap_or_default();
                    s.processed = seq;
                    let stale = self.unseen().stale_for(&chunk.snapshot, &chunk.table, chunk.job);
                    match stale {
                        Ok(stale) => keys.extend(stale),
                        Err(xid) => {
                            tracing::debug!(%lsn, xid, table = %chunk.table, "backfill chunk read before a transaction already streamed was visible: reading it again");
                            s.reread = Some(xid);
                            drop(s);
                            self.processed.notify_one();
                            return Some(ChunkSent {
                                records: 0,
                                superseded: 0,
                                reread: 1,
                            });
                        }
                    }
                    let records = encode_chunk(&chunk, &keys, lsn, opts, limit);
                    tracing::debug!(%lsn, table = %chunk.table, rows = chunk.rows.len(), sent = records.len(), "backfill chunk at its high watermark");
                    s.pending.extend(records.iter().cloned());
                    let sent = ChunkSent {
                        records: records.len() as u64,
                        superseded: (chunk.rows.len() - records.len()) as u64,
                        reread: 0,
                    };
                    s.marks.push_back(Mark {
                        seq,
                        lsn,
                        records,
                        after: chunk.after,
                    });
                    drop(s);
                    self.processed.notify_one();
                    return Some(sent);
                } else if let Some(mark) = s.marks.iter().find(|m| m.seq == seq) {
                    // Replayed after a reconnect: what went out with it may not have landed.
                    let again = mark.records.clone();
                    let sent = ChunkSent {
                        records: again.len() as u64,
                        superseded: 0,
                        reread: 0,
                    };
                    s.pending.extend(again);
                    return Some(sent);
                }
            }
            _ => {}
        }
        None
    }

    /// The next load record for the open batch, if any.
    pub fn next_load(&self) -> Option<Record> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        self.lock().pending.pop_front()
    }

    pub fn has_pending(&self) -> bool {
        self.active.load(Ordering::Acquire) && !self.lock().pending.is_empty()
    }

    /// Kinesis holds everything up to `flushed` (the slot is, or is about to be, told so):
    /// chunks whose high watermark it passed are durable.
    pub fn acked(&self, flushed: Lsn) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        let mut s = self.lock();
        while s.marks.front().is_some_and(|m| m.lsn <= flushed) {
            if let Some(mark) = s.marks.pop_front() {
                s.durable = Some(mark.after);
            }
        }
    }

    pub(super) fn durable(&self) -> Option<Job> {
        self.lock().durable.clone()
    }

    /// The job ended (done, failed or interrupted): no chunk of it is in flight any more (a late
    /// high watermark of one sends nothing). Load records of an interrupted job still pending
    /// are dropped by the next `begin`; that job resumes from what Kinesis holds.
    pub(super) fn finish(&self) {
        self.active.store(false, Ordering::Release);
        let mut s = self.lock();
        s.expecting = None;
        s.window = None;
        s.ready = None;
    }

    pub(super) fn begin(&self, run: &str, job: &Job) {
        self.job.fetch_add(1, Ordering::AcqRel);
        self.active.store(true, Ordering::Release);
        let mut s = self.lock();
        let processed = s.processed;
        *s = Shared {
            run: run.to_owned(),
            durable: Some(job.clone()),
            processed,
            ..Shared::default()
        };
    }

    pub(super) fn set_ready(&self, mut chunk: Chunk) {
        chunk.job = self.job.load(Ordering::Acquire);
        // Trimming by the chunk's own snapshot keeps all it needs (what it does not show).
        self.observe(&chunk.snapshot);
        self.lock().ready = Some(chunk);
    }

    /// A job under way whose first chunk of `rows` (of `relation`'s table) was read: the
    /// state the chunk task leaves before it writes the chunk's high watermark.
    #[cfg(test)]
    pub(in crate::capture) fn stage_chunk(
        &self,
        run: &str,
        relation: Arc<Relation>,
        key: PartitionKey,
        rows: Vec<Vec<Option<String>>>,
    ) {
        let table = TableName {
            schema: relation.namespace.clone(),
            name: relation.name.clone(),
        };
        let job = Job {
            id: "test".into(),
            tables: vec![table.clone()],
            where_sql: None,
            chunk_rows: 1000,
            rows_per_second: 0,
            state: JobState::Running,
            table_index: 0,
            last_key: None,
            rows: 0,
            reason: None,
        };
        self.begin(run, &job);
        self.expect(1, &table);
        let key_columns = relation
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_key)
            .map(|(i, _)| i)
            .collect();
        self.set_ready(Chunk {
            seq: 1,
            table,
            relation,
            key_columns,
            key,
            rows,
            // Shows every transaction of the tests' few xids.
            snapshot: Snapshot {
                xmin: 1 << 20,
                xmax: 1 << 20,
                xip: HashSet::new(),
            },
            job: 0,
            after: job,
        });
    }

    /// Before the low watermark: the window opens when the stream reaches it.
    pub(super) fn expect(&self, seq: u64, table: &TableName) {
        let mut s = self.lock();
        s.window = None;
        s.ready = None;
        s.expecting = Some((seq, table.clone()));
    }
}

pub(super) fn encode_chunk(
    chunk: &Chunk,
    changed: &HashSet<String>,
    lsn: Lsn,
    opts: EncodeOptions,
    limit: usize,
) -> Vec<Record> {
    let tx = TxContext {
        xid: 0,
        commit_lsn: lsn,
        commit_time: crate::capture::delivery::to_pg_time(chrono::Utc::now()),
    };
    let mut records = Vec::with_capacity(chunk.rows.len());
    for (i, values) in chunk.rows.iter().enumerate() {
        let key = key_text(
            chunk
                .key_columns
                .iter()
                .map(|&c| values.get(c).and_then(|v| v.as_deref()).map(str::as_bytes)),
        );
        if changed.contains(&key) {
            continue;
        }
        let tuple = Tuple(
            values
                .iter()
                .map(|v| {
                    v.as_ref()
                        .map_or(Datum::Null, |t| Datum::Text(Bytes::from(t.clone())))
                })
                .collect(),
        );
        let change = Change {
            relation: &chunk.relation,
            key_columns: &chunk.key_columns,
            operation: Operation::Load,
            row: &tuple,
            before: None,
            lsn,
            record_id: i as u64 + 1,
            dropped_columns: &[],
        };
        let (record, oversized) = crate::capture::fit::encode_within(&change, &tx, &chunk.key, opts, limit);
        if oversized {
            tracing::warn!(%lsn, table = %chunk.table, "backfilled row above the stream's record limit: sent by claim check");
        }
        records.push(record);
    }
    records
}

/// The decisions at the watermarks, scripted: a chunk of three rows keyed `1`, `2`, `3`, staged
/// as the runner leaves it, then the stream's watermarks and changes in the order a test picks.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::pgoutput::Column;

    const LIMIT: usize = 1 << 20;

    fn relation() -> Arc<Relation> {
        let column = |name: &str, is_key| Column {
            name: name.into(),
            type_oid: 25,
            is_key,
        };
        Arc::new(Relation {
            id: 1,
            namespace: "public".into(),
            name: "customers".into(),
            columns: vec![column("id", true), column("name", false)],
        })
    }

    fn table() -> TableName {
        TableName {
            schema: "public".into(),
            name: "customers".into(),
        }
    }

    fn staged() -> Coordinator {
        let coordinator = Coordinator::default();
        let rows = (1..=3)
            .map(|n| vec![Some(n.to_string()), Some(format!("c{n}"))])
            .collect();
        coordinator.stage_chunk("run1", relation(), PartitionKey::PrimaryKey, rows);
        coordinator
    }

    fn mark(c: &Coordinator, edge: &str, lsn: u64) -> Option<ChunkSent> {
        let text = format!("run1 1 {edge}");
        c.watermark(text.as_bytes(), Lsn(lsn), EncodeOptions::default(), LIMIT)
    }

    fn loads(c: &Coordinator) -> Vec<String> {
        std::iter::from_fn(|| c.next_load())
            .map(|r| r.partition_key)
            .collect()
    }

    #[test]
    fn a_row_changed_between_the_watermarks_is_left_out_the_others_go() {
        let c = staged();
        assert!(mark(&c, "low", 0x10).is_none());
        c.changed(&table(), "2".into(), 7);
        let sent = mark(&c, "high", 0x20).map(|s| (s.records, s.superseded, s.reread));
        assert_eq!(sent, Some((2, 1, 0)));
        assert_eq!(loads(&c).len(), 2);
    }

    #[test]
    fn a_change_before_the_low_watermark_or_of_another_table_supersedes_nothing() {
        let c = staged();
        c.changed(&table(), "1".into(), 7);
        mark(&c, "low", 0x10);
        let other = TableName {
            schema: "public".into(),
            name: "orders".into(),
        };
        c.changed(&other, "2".into(), 8);
        let sent = mark(&c, "high", 0x20).map(|s| (s.records, s.superseded));
        assert_eq!(sent, Some((3, 0)));
    }

    #[test]
    fn another_runs_watermarks_are_not_this_chunks() {
        let c = staged();
        let stray = c.watermark(b"run0 1 high", Lsn(0x20), EncodeOptions::default(), LIMIT);
        assert!(stray.is_none());
        assert!(loads(&c).is_empty(), "nothing sent for another run's watermark");
        mark(&c, "low", 0x30);
        assert_eq!(mark(&c, "high", 0x40).map(|s| s.records), Some(3));
    }

    #[test]
    fn a_high_watermark_replayed_after_a_reconnect_sends_the_chunk_again_until_it_is_durable() {
        let c = staged();
        mark(&c, "low", 0x10);
        assert_eq!(mark(&c, "high", 0x20).map(|s| s.records), Some(3));
        assert_eq!(loads(&c).len(), 3);
        // The stream replays from before the high watermark: the same records go out again.
        assert_eq!(mark(&c, "high", 0x20).map(|s| s.records), Some(3));
        assert_eq!(loads(&c).len(), 3);
        let awaiting = |c: &Coordinator| c.lock().marks.len();
        assert_eq!(awaiting(&c), 1, "not durable before Kinesis holds the watermark");
        c.acked(Lsn(0x1f));
        assert_eq!(awaiting(&c), 1);
        c.acked(Lsn(0x20));
        assert_eq!(awaiting(&c), 0, "durable once the acknowledgement passed it");
        assert!(c.durable().is_some());
        assert!(
            mark(&c, "high", 0x20).is_none(),
            "a durable chunk is not sent again"
        );
    }
}
