//! `bridge backfill`: re-send a table (or a slice of it) while capture keeps streaming, so a
//! consumer that applies the stream in order ends with each row's current state.
//!
//! The DBLog / Debezium incremental-snapshot algorithm, run by capture itself (only capture
//! knows the order records reach Kinesis in). For each chunk of a table, in primary-key order:
//!
//! 1. a low watermark goes into the WAL (`pg_logical_emit_message(false, …)`, decoded at its
//!    position), then the chunk is SELECTed, then a high watermark;
//! 2. while the streaming loop is between the two watermarks, it notes the key of every change
//!    of that table: such a row's newer change is (or will be) in the stream, so its chunk copy
//!    could be stale;
//! 3. at the high watermark the chunk's other rows go out as DMS `load` records, in stream
//!    position. A change committed before the low watermark is older than the chunk copy; one
//!    after the high watermark follows it. Nothing stale lands after something newer.
//!
//! Step 3 has one exception DBLog does not cover: a transaction whose commit record is in the
//! WAL (so it streams before the low watermark) but which is not yet visible to queries — it
//! waits for a synchronous standby, or for its WAL flush. The chunk copy is then older than a
//! change already in the stream. So each chunk is read in a repeatable-read transaction whose
//! snapshot (`pg_current_snapshot()`) travels with it, the streaming loop remembers decoded
//! transactions until a snapshot shows them (`Unseen`), and at the high watermark:
//! - rows a transaction the snapshot does not show changed are left out, like rows changed in
//!   the window (their newer state is in the stream);
//! - if such a transaction's keys are unknown (decoded before the job began, or — under
//!   synchronous replication — running when capture started, so an earlier capture may have
//!   streamed it), the chunk is not sent and is read again once that transaction is visible.
//!
//! The job lives in a tag on the stream (`outbox-bridge.backfill.<slot>`): `bridge backfill`
//! writes the request, capture runs it and records how far it got — a chunk counts once
//! Kinesis holds everything up to its high watermark (capture's acknowledged position passed
//! it). A capture that dies resumes after the last such chunk; a chunk replayed after a
//! reconnect before that is sent again. A chunk's share of time is paced to `--rows-per-second`.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::slot_marker::{self, MarkerError};
use super::snapshot::Snapshot;
use super::unseen::Unseen;
use super::CaptureConfig;
use crate::dms::{Change, EncodeOptions, Operation, Record, TxContext};
use crate::lsn::Lsn;
use crate::partition::PartitionKey;
use crate::replication::pgoutput::{Datum, Relation, Tuple};
use crate::replication::slot::{self, SlotError};
use crate::sql::quote_ident;
use crate::table::TableName;

/// Prefix of the watermark messages (never published).
pub const WATERMARK_PREFIX: &str = "outbox-bridge.watermark";

/// How often capture looks for a new request.
const POLL: Duration = Duration::from_secs(3);

/// Tag values allow letters, digits, spaces and `_ . / = + - % @`: free text is
/// percent-encoded, and `+` separates list items.
const TAG_TEXT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'.').remove(b'-');

fn enc(text: &str) -> String {
    utf8_percent_encode(text, TAG_TEXT).to_string()
}

fn dec(text: &str) -> Option<String> {
    percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Requested,
    Running,
    Done,
    Failed,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(self, Self::Requested | Self::Running)
    }
}

/// A backfill request and how far it got (what is durable in Kinesis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    /// Empty: every table of the publication (`--all`).
    pub tables: Vec<TableName>,
    pub where_sql: Option<String>,
    pub chunk_rows: u64,
    /// 0: as fast as capture takes them.
    pub rows_per_second: u64,
    pub state: JobState,
    /// The table being read (index into the resolved list).
    pub table_index: usize,
    /// The primary key of the last row sent of that table.
    pub last_key: Option<Vec<String>>,
    pub rows: u64,
    /// Why it failed.
    pub reason: Option<String>,
}

impl Job {
    pub fn to_tag(&self) -> String {
        let list = |items: Vec<String>| {
            if items.is_empty() {
                "-".to_owned()
            } else {
                items.join("+")
            }
        };
        format!(
            "id={} state={} tables={} where={} chunk={} rps={} at={} last={} rows={} reason={}",
            enc(&self.id),
            self.state.as_str(),
            if self.tables.is_empty() {
                "all".to_owned()
            } else {
                list(self.tables.iter().map(|t| enc(&t.to_string())).collect())
            },
            self.where_sql.as_deref().map_or_else(|| "-".to_owned(), enc),
            self.chunk_rows,
            self.rows_per_second,
            self.table_index,
            list(self.last_key.iter().flatten().map(|k| enc(k)).collect()),
            self.rows,
            self.reason.as_deref().map_or_else(|| "-".to_owned(), enc),
        )
    }

    pub fn from_tag(value: &str) -> Option<Self> {
        let field = |name: &str| super::slot_marker::tag_field(value, name);
        let opt = |text: &str| (text != "-").then(|| dec(text)).flatten();
        let tables = match field("tables")? {
            "all" => Vec::new(),
            list => list
                .split('+')
                .map(|t| dec(t)?.parse().ok())
                .collect::<Option<Vec<TableName>>>()?,
        };
        let last = field("last")?;
        Some(Self {
            id: dec(field("id")?)?,
            tables,
            where_sql: opt(field("where")?),
            chunk_rows: field("chunk")?.parse().ok()?,
            rows_per_second: field("rps")?.parse().ok()?,
            state: match field("state")? {
                "requested" => JobState::Requested,
                "running" => JobState::Running,
                "done" => JobState::Done,
                _ => JobState::Failed,
            },
            table_index: field("at")?.parse().ok()?,
            last_key: (last != "-")
                .then(|| last.split('+').map(dec).collect::<Option<Vec<_>>>())
                .flatten(),
            rows: field("rows")?.parse().ok()?,
            reason: field("reason").and_then(opt),
        })
    }
}

/// Where the job lives: a tag on the stream.
#[derive(Clone, Debug)]
pub struct BackfillLog {
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
    key: String,
}

impl BackfillLog {
    pub fn new(kinesis: aws_sdk_kinesis::Client, stream: &str, slot: &str) -> Self {
        Self {
            kinesis,
            stream: stream.into(),
            key: format!("outbox-bridge.backfill.{slot}"),
        }
    }

    pub async fn read(&self) -> Result<Option<Job>, MarkerError> {
        let value = slot_marker::read_tag(&self.kinesis, &self.stream, &self.key).await?;
        Ok(value.as_deref().and_then(Job::from_tag))
    }

    pub async fn write(&self, job: &Job) -> Result<(), MarkerError> {
        slot_marker::write_tag(&self.kinesis, &self.stream, &self.key, &job.to_tag()).await
    }
}

/// A chunk read between its watermarks, waiting for the streaming loop to reach the high one.
struct Chunk {
    seq: u64,
    table: TableName,
    relation: Arc<Relation>,
    key_columns: Vec<usize>,
    key: PartitionKey,
    rows: Vec<Vec<Option<String>>>,
    /// What the chunk was read in, and by which job (see `Unseen`).
    snapshot: Snapshot,
    job: u64,
    /// The job's progress once this chunk is durable.
    after: Job,
}

/// A chunk sent at `lsn`: counted once the slot's acknowledged position passes it; sent again
/// if the stream replays its high watermark before that.
struct Mark {
    seq: u64,
    lsn: Lsn,
    records: Vec<Record>,
    after: Job,
}

struct Window {
    seq: u64,
    table: TableName,
    keys: HashSet<String>,
}

#[derive(Default)]
struct Shared {
    /// Watermarks of this process's chunk task carry it; others (a previous run's) are ignored.
    run: String,
    /// The chunk whose low watermark comes next, and its table.
    expecting: Option<(u64, TableName)>,
    window: Option<Window>,
    ready: Option<Chunk>,
    pending: VecDeque<Record>,
    marks: VecDeque<Mark>,
    durable: Option<Job>,
    /// The last chunk was not sent: this transaction, decoded before the job began, was not
    /// yet visible to it.
    reread: Option<u32>,
    /// The last chunk whose high watermark was processed (sent or to be read again).
    processed: u64,
}

/// How often a chunk that must be read again waits for the transaction it did not see.
const REREAD_PAUSE: Duration = Duration::from_millis(200);

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
    shared: Mutex<Shared>,
    /// Outlives jobs: a transaction decoded before one begins may be invisible to its chunks.
    unseen: Mutex<Unseen>,
    processed: Notify,
    /// A job was begun and is not done: without one, the streaming loop's checks (per message
    /// and per change) skip the lock.
    active: AtomicBool,
    /// Counts jobs begun: row changes are noted for the current one (`Unseen`).
    job: AtomicU64,
    /// Transactions a previous process may have streamed before they were visible are known.
    seeded: AtomicBool,
}

impl Coordinator {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A poisoned lock means a panic elsewhere, which already stops the process.
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a job runs: row changes are then noted (`changed`).
    pub fn noting(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    fn unseen(&self) -> std::sync::MutexGuard<'_, Unseen> {
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
    fn observe(&self, snapshot: &Snapshot) {
        self.unseen().observe(snapshot);
    }

    /// Waits until chunk `seq`'s high watermark was processed; then, if it was not sent and
    /// must be read again, the transaction why. A wake-up left over from an earlier chunk
    /// (one whose job was interrupted) is not taken for this one's.
    async fn processed(&self, seq: u64) -> Option<u32> {
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

    fn durable(&self) -> Option<Job> {
        self.lock().durable.clone()
    }

    /// The job ended (done, failed or interrupted): no chunk of it is in flight any more (a late
    /// high watermark of one sends nothing). Load records of an interrupted job still pending
    /// are dropped by the next `begin`; that job resumes from what Kinesis holds.
    fn finish(&self) {
        self.active.store(false, Ordering::Release);
        let mut s = self.lock();
        s.expecting = None;
        s.window = None;
        s.ready = None;
    }

    fn begin(&self, run: &str, job: &Job) {
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

    fn set_ready(&self, mut chunk: Chunk) {
        chunk.job = self.job.load(Ordering::Acquire);
        // Trimming by the chunk's own snapshot keeps all it needs (what it does not show).
        self.observe(&chunk.snapshot);
        self.lock().ready = Some(chunk);
    }

    /// A job under way whose first chunk of `rows` (of `relation`'s table) was read: the
    /// state the chunk task leaves before it writes the chunk's high watermark.
    #[cfg(test)]
    pub(super) fn stage_chunk(
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
    fn expect(&self, seq: u64, table: &TableName) {
        let mut s = self.lock();
        s.window = None;
        s.ready = None;
        s.expecting = Some((seq, table.clone()));
    }
}

/// The key a change or a chunk row is known by: its primary-key values, as text.
pub fn key_text<'a>(values: impl Iterator<Item = Option<&'a [u8]>>) -> String {
    let mut key = String::new();
    for (i, v) in values.enumerate() {
        if i > 0 {
            key.push('\u{1}');
        }
        key.push_str(&v.map(String::from_utf8_lossy).unwrap_or_default());
    }
    key
}

/// The key of a pgoutput row (`None` when a key column is missing from it).
pub fn tuple_key(row: &Tuple, key_columns: &[usize]) -> Option<String> {
    let values: Option<Vec<Option<&[u8]>>> = key_columns
        .iter()
        .map(|&i| match row.0.get(i)? {
            Datum::Text(b) | Datum::Binary(b) => Some(Some(&b[..])),
            Datum::Null => Some(None),
            Datum::UnchangedToast => None,
        })
        .collect();
    values.map(|v| key_text(v.into_iter()))
}

fn encode_chunk(
    chunk: &Chunk,
    changed: &HashSet<String>,
    lsn: Lsn,
    opts: EncodeOptions,
    limit: usize,
) -> Vec<Record> {
    let tx = TxContext {
        xid: 0,
        commit_lsn: lsn,
        commit_time: super::delivery::to_pg_time(chrono::Utc::now()),
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
        let (record, oversized) = super::fit::encode_within(&change, &tx, &chunk.key, opts, limit);
        if oversized {
            tracing::warn!(%lsn, table = %chunk.table, "backfilled row above the stream's record limit: sent by claim check");
        }
        records.push(record);
    }
    records
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Postgres(#[from] SlotError),
    #[error(transparent)]
    Tag(#[from] MarkerError),
    /// The request cannot be carried out as asked: the job fails with this reason.
    #[error("{0}")]
    Refused(String),
}

impl From<tokio_postgres::Error> for BackfillError {
    fn from(err: tokio_postgres::Error) -> Self {
        Self::Postgres(SlotError::Postgres(err))
    }
}

/// Looks for requests and runs them, one at a time, until shutdown. A failure of Postgres or
/// Kinesis is retried; a request that cannot work (no such table, no primary key, a bad
/// `--where`) fails with its reason.
pub async fn run_jobs(
    coordinator: Arc<Coordinator>,
    log: BackfillLog,
    cfg: CaptureConfig,
    shutdown: CancellationToken,
) {
    let run = format!("{:016x}", rand::random::<u64>());
    let mut idle_client = None;
    // Chunks are numbered across jobs: a late watermark of an interrupted one matches nothing.
    let mut seq = 0_u64;
    let mut seed_failing = false;
    loop {
        if !coordinator.seeded.load(Ordering::Acquire) {
            // Until then no job runs: a transaction an earlier process streamed before it was
            // visible would go unnoticed.
            match seed(&cfg, &coordinator).await {
                Ok(()) => coordinator.seeded.store(true, Ordering::Release),
                Err(error) => {
                    if !seed_failing {
                        tracing::warn!(error = %error, "cannot list the running transactions; no backfill runs until that works (retrying)");
                    }
                    seed_failing = true;
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(POLL) => {}
                    }
                    continue;
                }
            }
        }
        let job = match log.read().await {
            Ok(Some(job)) if job.state.is_active() => Some(job),
            Ok(_) => None,
            Err(error) => {
                tracing::debug!(error = %error, "cannot read the backfill request; retrying");
                None
            }
        };
        if let Some(job) = job {
            coordinator.begin(&run, &job);
            let outcome = tokio::select! {
                outcome = execute(&coordinator, &log, &cfg, job.clone(), &run, &mut seq) => outcome,
                () = shutdown.cancelled() => return,
            };
            coordinator.finish();
            match outcome {
                Ok(()) => {}
                Err(BackfillError::Refused(reason)) => {
                    tracing::error!(id = %job.id, reason = %reason, "backfill refused");
                    let failed = Job {
                        state: JobState::Failed,
                        reason: Some(reason),
                        ..coordinator.durable().unwrap_or(job)
                    };
                    if let Err(error) = log.write(&failed).await {
                        tracing::warn!(error = %error, "cannot record the failed backfill");
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, "backfill interrupted; it resumes where it got to")
                }
            }
        }
        if !coordinator.unseen().is_empty() {
            // No chunk is in flight: a snapshot now trims the list (the next job's chunks need
            // only what it does not show), and keeps it short and its xids recent.
            match idle_snapshot(&cfg, &mut idle_client).await {
                Ok(snapshot) => coordinator.observe(&snapshot),
                Err(error) => {
                    idle_client = None;
                    tracing::debug!(error = %error, "cannot take a snapshot to trim the list of unseen transactions; retrying");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Transactions an earlier process may have streamed (and had the slot acknowledge) before
/// they were visible: under synchronous replication a commit waits, visible to nobody, for the
/// standby. Postgres does not tell such a commit from a transaction still at work
/// (`pg_xact_status` says "in progress" for both), so every transaction running now counts
/// (`xip`, and from `xmax` to the next xid) until a snapshot shows it or this process decodes
/// it. Without synchronous replication a commit is visible right after its WAL flush, long
/// before a restarted capture reads a chunk: nothing is seeded. The probe takes an xid to learn
/// the next one, and rolls back.
async fn seed(cfg: &CaptureConfig, coordinator: &Coordinator) -> Result<(), BackfillError> {
    const RUNNING: &str = "\
        WITH now AS (SELECT pg_current_snapshot() AS snap, pg_current_xact_id() AS next), \
             running AS ( \
               SELECT pg_snapshot_xip(snap) AS x FROM now \
               UNION SELECT g::text::xid8 FROM now, \
                 generate_series(pg_snapshot_xmax(snap)::text::numeric, next::text::numeric - 1) AS g) \
        SELECT (SELECT snap::text FROM now), \
               coalesce((SELECT string_agg(x::text, ',') FROM running), ''), \
               current_setting('synchronous_standby_names') <> ''";
    let mut client = slot::query_client(&cfg.target).await?;
    let tx = client.transaction().await?;
    let row = tx.query_one(RUNNING, &[]).await?;
    tx.rollback().await?;
    let (text, running, synchronous): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
    let snapshot = Snapshot::parse(&text)
        .ok_or_else(|| BackfillError::Refused(format!("unreadable pg_current_snapshot(): {text}")))?;
    let running: Vec<u32> = if synchronous {
        running
            .split(',')
            .filter_map(|x| x.parse::<u64>().ok())
            .map(|x| x as u32)
            .collect()
    } else {
        Vec::new()
    };
    if !running.is_empty() {
        tracing::info!(transactions = ?running, "synchronous replication: a backfill reads rows these running transactions changed only once they are visible");
    }
    coordinator.unseen().seed(&snapshot, running);
    Ok(())
}

async fn idle_snapshot(
    cfg: &CaptureConfig,
    client: &mut Option<tokio_postgres::Client>,
) -> Result<Snapshot, BackfillError> {
    let c = match client.take() {
        Some(c) if !c.is_closed() => c,
        _ => slot::query_client(&cfg.target).await?,
    };
    let snapshot = current_snapshot(&c).await?;
    *client = Some(c);
    Ok(snapshot)
}

async fn current_snapshot(client: &impl tokio_postgres::GenericClient) -> Result<Snapshot, BackfillError> {
    let text: String = client
        .query_one("SELECT pg_current_snapshot()::text", &[])
        .await?
        .get(0);
    Snapshot::parse(&text)
        .ok_or_else(|| BackfillError::Refused(format!("unreadable pg_current_snapshot(): {text}")))
}

async fn execute(
    coordinator: &Coordinator,
    log: &BackfillLog,
    cfg: &CaptureConfig,
    mut job: Job,
    run: &str,
    seq: &mut u64,
) -> Result<(), BackfillError> {
    let mut client = slot::query_client(&cfg.target).await?;
    let tables = if job.tables.is_empty() {
        publication_tables(&client, &cfg.publication).await?
    } else {
        job.tables.clone()
    };
    let mut plans = Vec::with_capacity(tables.len());
    for table in &tables {
        let relation = super::catalog::table_relation(&client, table).await?;
        if relation.columns.is_empty() {
            return Err(BackfillError::Refused(format!("{table} does not exist")));
        }
        let key_columns = super::catalog::primary_key_columns(&client, table, &relation).await?;
        if key_columns.is_empty() {
            return Err(BackfillError::Refused(format!(
                "{table} has no primary key: a backfill reads in primary-key order"
            )));
        }
        plans.push((table.clone(), Arc::new(relation), key_columns));
    }
    if let Some(sql) = &job.where_sql {
        // Checked once up front, so a typo fails the job with Postgres' reason.
        for (table, _, _) in &plans {
            client
                .simple_query(&format!("SELECT 1 FROM {} WHERE ({sql}) LIMIT 0", table.quoted()))
                .await
                .map_err(|e| BackfillError::Refused(format!("--where on {table}: {}", error_text(&e))))?;
        }
    }
    if job.state == JobState::Requested {
        job.state = JobState::Running;
        log.write(&job).await?;
        coordinator.begin(run, &job);
        tracing::info!(id = %job.id, tables = tables.len(), "backfill started");
    } else {
        tracing::info!(id = %job.id, table_index = job.table_index, rows = job.rows, "backfill resumed");
    }
    let mut rereads = 0_u64;
    let mut written = Instant::now();
    let mut progress = job.clone();
    while progress.table_index < plans.len() {
        let chunk_started = Instant::now();
        let (table, relation, key_columns) = &plans[progress.table_index];
        *seq += 1;
        let seq = *seq;
        coordinator.expect(seq, table);
        emit(&client, run, seq, "low").await?;
        let (rows, snapshot) = read_chunk(
            &mut client,
            table,
            relation,
            key_columns,
            &progress,
            job.chunk_rows,
        )
        .await?;
        let n = rows.len() as u64;
        let mut after = progress.clone();
        after.rows += n;
        if n < job.chunk_rows {
            after.table_index += 1;
            after.last_key = None;
        } else {
            after.last_key = rows.last().map(|r| {
                key_columns
                    .iter()
                    .map(|&c| r.get(c).cloned().flatten().unwrap_or_default())
                    .collect()
            });
        }
        coordinator.set_ready(Chunk {
            seq,
            table: table.clone(),
            relation: relation.clone(),
            key_columns: key_columns.clone(),
            key: cfg.routes.key_for(table),
            rows,
            snapshot,
            job: 0,
            after: after.clone(),
        });
        emit(&client, run, seq, "high").await?;
        let reread = coordinator.processed(seq).await;
        if let Some(xid) = reread {
            rereads += 1;
            if rereads == 1 || rereads.is_multiple_of(100) {
                tracing::info!(id = %job.id, %table, xid, rereads, "backfill chunk read again: transaction {xid} is in the stream but was not yet visible to the read (a commit waiting for a synchronous standby?)");
            }
        } else {
            rereads = 0;
            progress = after;
        }
        if written.elapsed() >= POLL {
            // `bridge backfill --restart` replaced the request: leave it to the next round.
            if log.read().await?.is_none_or(|current| current.id != job.id) {
                tracing::info!(id = %job.id, "backfill replaced by a new request");
                return Ok(());
            }
            if let Some(durable) = coordinator.durable() {
                log.write(&durable).await?;
            }
            written = Instant::now();
        }
        if reread.is_some() {
            tokio::time::sleep(REREAD_PAUSE).await;
        } else if job.rows_per_second > 0 && n > 0 {
            // A chunk's share of time counts from its start: reading and sending it are part
            // of it, so the rate is --rows-per-second, not less.
            let share = Duration::from_secs_f64(n as f64 / job.rows_per_second as f64);
            pause_until(coordinator, &client, chunk_started + share).await?;
        }
    }
    // Done once the last chunk is in Kinesis.
    loop {
        if let Some(durable) = coordinator.durable().filter(|d| d.table_index >= plans.len()) {
            let done = Job {
                state: JobState::Done,
                ..durable
            };
            log.write(&done).await?;
            tracing::info!(id = %done.id, rows = done.rows, "backfill done");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sleeps until `until`, trimming the unseen list every poll meanwhile (no chunk is in flight):
/// a slow `--rows-per-second` must not let it grow for minutes.
async fn pause_until(
    coordinator: &Coordinator,
    client: &tokio_postgres::Client,
    until: Instant,
) -> Result<(), BackfillError> {
    loop {
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        tokio::time::sleep((until - now).min(POLL)).await;
        if Instant::now() < until {
            coordinator.observe(&current_snapshot(client).await?);
        }
    }
}

async fn emit(client: &tokio_postgres::Client, run: &str, seq: u64, edge: &str) -> Result<(), BackfillError> {
    client
        .execute(
            "SELECT pg_logical_emit_message(false, $1, $2)",
            &[&WATERMARK_PREFIX, &format!("{run} {seq} {edge}")],
        )
        .await?;
    Ok(())
}

/// The next chunk after `progress.last_key`, every column in its output function's text
/// (pgoutput's form), in primary-key order; and the snapshot it was read in.
async fn read_chunk(
    client: &mut tokio_postgres::Client,
    table: &TableName,
    relation: &Relation,
    key_columns: &[usize],
    progress: &Job,
    limit: u64,
) -> Result<(Vec<Vec<Option<String>>>, Snapshot), BackfillError> {
    let columns: Vec<String> = relation.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let keys: Vec<String> = key_columns
        .iter()
        .map(|&i| quote_ident(&relation.columns[i].name))
        .collect();
    let mut conditions = Vec::new();
    if let Some(last) = &progress.last_key {
        let literals: Vec<String> = last
            .iter()
            .map(|v| format!("'{}'", v.replace('\'', "''")))
            .collect();
        conditions.push(format!("({}) > ({})", keys.join(", "), literals.join(", ")));
    }
    if let Some(sql) = &progress.where_sql {
        conditions.push(format!("({sql})"));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {} FROM {}{filter} ORDER BY {} LIMIT {limit}",
        columns.join(", "),
        table.quoted(),
        keys.join(", ")
    );
    // Repeatable read: the snapshot asked for first is the one the rows are read in.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let snapshot = current_snapshot(&tx).await?;
    let mut rows = Vec::new();
    for message in tx.simple_query(&sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            rows.push((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect());
        }
    }
    tx.commit().await?;
    Ok((rows, snapshot))
}

async fn publication_tables(
    client: &tokio_postgres::Client,
    publication: &str,
) -> Result<Vec<TableName>, BackfillError> {
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2",
            &[&publication],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TableName {
            schema: r.get(0),
            name: r.get(1),
        })
        .collect())
}

fn error_text(err: &tokio_postgres::Error) -> String {
    err.as_db_error()
        .map_or_else(|| err.to_string(), |db| db.message().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_read_back_as_written_in_tag_characters() {
        let job = Job {
            id: "a1b2".into(),
            tables: vec![
                "public.customers".parse().unwrap(),
                "public.orders".parse().unwrap(),
            ],
            where_sql: Some("created_at >= '2026-11-01' AND id % 2 = 0".into()),
            chunk_rows: 500,
            rows_per_second: 1000,
            state: JobState::Running,
            table_index: 1,
            last_key: Some(vec!["it's+a key".into(), "7".into()]),
            rows: 1234,
            reason: None,
        };
        let tag = job.to_tag();
        assert!(
            tag.chars()
                .all(|c| c.is_ascii_alphanumeric() || " _./=+-%@".contains(c)),
            "{tag}"
        );
        assert_eq!(Job::from_tag(&tag), Some(job.clone()));
        let all = Job {
            tables: Vec::new(),
            where_sql: None,
            last_key: None,
            state: JobState::Failed,
            reason: Some("no primary key: x".into()),
            ..job
        };
        assert_eq!(Job::from_tag(&all.to_tag()), Some(all));
    }
}
