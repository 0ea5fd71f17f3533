//! One replication connection's streaming loop: decode, batch, submit, collect completions,
//! acknowledge. See the module doc of `capture` for the acknowledgement rule.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::acks::AckTracker;
use super::batch::OpenBatch;
use super::progress::Progress;
use super::{CaptureConfig, CaptureError};
use crate::dms::TxContext;
use crate::lsn::Lsn;
use crate::metrics::Metrics;
use crate::partition::PartitionKey;
use crate::replication::pgoutput::Relation;
use crate::replication::{ReplicationConnection, ReplicationError, StreamMessage};

/// What the streaming loop reads from and reports to: the walsender's copy stream. A trait so
/// unit tests drive the loop with a scripted stream (see `session_tests`).
pub trait ReplicationStream: Send {
    fn next_message(&mut self) -> impl Future<Output = Result<StreamMessage, ReplicationError>> + Send;
    /// A standby status update: `flushed` as write, flush and apply position.
    fn send_status(
        &mut self,
        flushed: Lsn,
        reply: bool,
    ) -> impl Future<Output = Result<(), ReplicationError>> + Send;
}

impl ReplicationStream for ReplicationConnection {
    fn next_message(&mut self) -> impl Future<Output = Result<StreamMessage, ReplicationError>> + Send {
        ReplicationConnection::next_message(self)
    }

    fn send_status(
        &mut self,
        flushed: Lsn,
        reply: bool,
    ) -> impl Future<Output = Result<(), ReplicationError>> + Send {
        ReplicationConnection::send_status(self, flushed, reply)
    }
}
use crate::sink::{Sink, SinkError};
use crate::table::TableName;

mod decode;

/// A completed (or failed) batch, as the in-flight queue yields it.
struct Done {
    result: Result<(), SinkError>,
}

type InFlight = FuturesOrdered<Pin<Box<dyn Future<Output = Done> + Send>>>;

struct CapturedRelation {
    relation: Relation,
    /// Positions of the primary-key columns.
    key_columns: Vec<usize>,
    key: PartitionKey,
    outbox: bool,
}

struct OpenTx {
    ctx: TxContext,
    commit_seconds: f64,
    next_record_id: u64,
    /// Its first row change was reported to the backfill coordinator.
    reported: bool,
}

/// Capture's signs of life for `/healthz`; they outlive a connection, so a reconnect loop that
/// never gets through goes stale.
pub struct Beacons {
    /// Beaten on every message from Postgres (and while backpressure keeps us from reading).
    pub input: Arc<eventing::health::Beacon>,
    /// Beaten whenever a batch is acknowledged, or nothing is waiting for an acknowledgement.
    pub acks: Arc<eventing::health::Beacon>,
    /// The acknowledged position, for the delivery record (see `delivery`).
    pub reports: Arc<super::delivery::Reports>,
    /// With `--synchronous-standby`: how far every named standby has flushed (see `standby`).
    pub standby: Option<tokio::sync::watch::Receiver<Lsn>>,
    /// A running `bridge backfill` (see `backfill`).
    pub backfill: Arc<super::backfill::Coordinator>,
}

impl Beacons {
    pub fn new(health: &eventing::health::Health) -> Self {
        Self {
            input: health.beacon("capture: no message from postgres"),
            acks: health.beacon("capture: captured changes not acknowledged by the sink"),
            reports: Arc::new(super::delivery::Reports::new()),
            standby: None,
            backfill: Arc::default(),
        }
    }
}

pub struct Session<'a> {
    cfg: &'a CaptureConfig,
    beacons: &'a Beacons,
    sink: &'a dyn Sink,
    metrics: &'a Metrics,
    acks: AckTracker<'a>,
    relations: HashMap<u32, Arc<CapturedRelation>>,
    tx: Option<OpenTx>,
    open: OpenBatch,
    inflight: InFlight,
    /// Oldest commit time of each in-flight batch, in the same order, for the age metric.
    inflight_oldest: VecDeque<Option<f64>>,
    /// The outbox rows' traces, per batch (empty unless traces are exported).
    traces: super::traces::BatchTraces,
    /// Per-key order across the batches in flight.
    key_order: super::key_order::KeyOrder,
    primary_keys: HashMap<TableName, Vec<String>>,
    /// How far the synchronous standbys have flushed, if capture waits for them.
    standby: Option<tokio::sync::watch::Receiver<Lsn>>,
}

impl<'a> Session<'a> {
    pub fn new(
        cfg: &'a CaptureConfig,
        sink: &'a dyn Sink,
        metrics: &'a Metrics,
        beacons: &'a Beacons,
        progress: &'a mut Progress,
        primary_keys: HashMap<TableName, Vec<String>>,
    ) -> Self {
        Self {
            cfg,
            beacons,
            sink,
            metrics,
            acks: AckTracker::new(progress),
            relations: HashMap::new(),
            tx: None,
            open: OpenBatch::new(sink.limits()),
            inflight: FuturesOrdered::new(),
            inflight_oldest: VecDeque::new(),
            traces: Default::default(),
            key_order: Default::default(),
            primary_keys,
            standby: beacons.standby.clone(),
        }
    }

    /// Streams until shutdown (`Ok`) or an error.
    pub async fn stream<S: ReplicationStream>(
        &mut self,
        conn: &mut S,
        shutdown: &CancellationToken,
    ) -> Result<(), CaptureError> {
        let mut status = tokio::time::interval(self.cfg.status_interval);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_status = Instant::now();
        // When Postgres last sent anything. The server answers a status update that asks for a
        // reply, so silence past the timeout means the peer or the path to it is gone.
        let mut last_heard = Instant::now();
        loop {
            // Backfilled rows go out at their high watermark's place in the stream: before
            // anything read after it.
            while !self.open.is_full() {
                let Some(record) = self.beacons.backfill.next_load() else {
                    break;
                };
                self.push(record, chrono::Utc::now().timestamp_micros() as f64 / 1e6);
            }
            // A full batch goes as soon as there is room; a partial one when its linger is up.
            // Decided after the loads above: they may have opened or filled the batch.
            let send_at = if self.open.is_full() {
                Some(Instant::now())
            } else {
                self.open.opened.map(|t| Instant::from_std(t) + self.cfg.linger)
            };
            let loading = self.beacons.backfill.has_pending();
            let room = self.inflight.len() < self.cfg.window && self.open_may_go();
            let held_by_standby = !self.open.is_empty() && !self.standby_has(self.open.needs);
            // A batch due but held by the standbys takes no more input (unless mid-transaction,
            // so its commit's end is known): more records would raise what it waits for, and
            // under steady load it would wait until full instead of for the standby's lag.
            let sealed =
                held_by_standby && self.tx.is_none() && send_at.is_some_and(|at| at <= Instant::now());
            let reading_paused = self.open.is_full() || sealed || loading;
            tokio::select! {
                biased;
                // 1. Shutdown: stop taking input; `finish` drains.
                () = shutdown.cancelled() => return Ok(()),
                // 2. Completions before new input, so memory cannot grow without bound.
                Some(done) = self.inflight.next(), if !self.inflight.is_empty() => self.on_done(done)?,
                // 3. Batch deadline.
                () = sleep_until(send_at), if room && send_at.is_some() => self.submit_open(),
                // 3b. The synchronous standbys moved: the held batch may go at its deadline.
                Some(()) = standby_moved(self.standby.as_mut()), if held_by_standby => {}
                // 4. New input, only while the open batch has room.
                msg = conn.next_message(), if !reading_paused => match msg.inspect(|_| {
                    last_heard = Instant::now();
                    self.beacons.input.beat();
                })? {
                    StreamMessage::XLogData { start, data, .. } => {
                        self.on_wal(start, data)?;
                        // While catching up input is always ready and the timer branch below
                        // may starve: report progress from here too.
                        if last_status.elapsed() >= self.cfg.status_interval {
                            conn.send_status(self.acks.flushed(), false).await?;
                            self.report();
                            last_status = Instant::now();
                        }
                    }
                    StreamMessage::Keepalive { wal_end, server_time, reply_requested } => {
                        self.on_keepalive(wal_end, server_time);
                        if reply_requested {
                            conn.send_status(self.acks.flushed(), false).await?;
                            self.report();
                        }
                    }
                    StreamMessage::CopyDone => {
                        return Err(ReplicationError::Io(std::io::ErrorKind::ConnectionAborted.into()).into());
                    }
                },
                // 5. Keepalive timer: standby status updates go out on time, busy or not.
                _ = status.tick() => {
                    self.update_age_metric();
                    if reading_paused {
                        // Not reading (backpressure): the silence is ours, not the server's.
                        last_heard = Instant::now();
                        self.beacons.input.beat();
                    }
                    if self.inflight.is_empty() && self.open.is_empty() {
                        self.beacons.acks.beat();
                    }
                    let silent = last_heard.elapsed();
                    if silent >= self.cfg.replication_timeout {
                        return Err(ReplicationError::Silent { secs: silent.as_secs() }.into());
                    }
                    let ask = silent >= self.cfg.replication_timeout / 3;
                    conn.send_status(self.acks.flushed(), ask).await?;
                    self.report();
                    last_status = Instant::now();
                }
            }
        }
    }

    /// Shutdown: hand over the open batch, wait for everything in flight (bounded by the
    /// shutdown timeout), then send a last status update with the last durable LSN.
    pub async fn finish<S: ReplicationStream>(&mut self, conn: &mut S) {
        let deadline = tokio::time::sleep(self.cfg.shutdown_timeout);
        tokio::pin!(deadline);
        let drained = async {
            while !self.open.is_empty() || !self.inflight.is_empty() {
                if !self.open.is_empty() && self.inflight.len() < self.cfg.window && self.open_may_go() {
                    self.submit_open();
                    continue;
                }
                if !self.inflight.is_empty() {
                    if let Some(done) = self.inflight.next().await {
                        self.on_done(done)?;
                    }
                    continue;
                }
                // Nothing in flight and the open batch may not go: the synchronous standbys
                // have not flushed it. Wait for them to move (an empty `inflight` is ready at
                // once, and polling it here spun without ever letting the deadline fire).
                if standby_moved(self.standby.as_mut()).await.is_none() {
                    break;
                }
            }
            Ok::<(), CaptureError>(())
        };
        tokio::select! {
            result = drained => if let Err(error) = result {
                tracing::error!(error = %error, "a batch failed during shutdown; it will be replayed");
            },
            () = &mut deadline => tracing::warn!(
                inflight = self.inflight.len(),
                held_by_standby = !self.open.is_empty(),
                "shutdown timeout: batches still in flight or held for the synchronous standbys will be replayed on restart"
            ),
        }
        let flushed = self.acks.flushed();
        self.report();
        match conn.send_status(flushed, false).await {
            Ok(()) => tracing::info!(lsn = %flushed, "final status update sent"),
            Err(error) => tracing::warn!(error = %error, lsn = %flushed, "final status update failed"),
        }
    }

    /// After a connection error: let in-flight batches finish so less is replayed.
    pub async fn drain(&mut self, shutdown: &CancellationToken) -> Result<(), CaptureError> {
        while !self.inflight.is_empty() {
            tokio::select! {
                Some(done) = self.inflight.next() => self.on_done(done)?,
                () = shutdown.cancelled() => break,
            }
        }
        Ok(())
    }

    /// Publishes the acknowledged position (what the slot was, or is about to be, told).
    fn report(&self) {
        let now = self.acks.progress();
        self.beacons.backfill.acked(now.flushed());
        self.beacons.reports.progress.send_if_modified(|p| {
            let changed = *p != now;
            *p = now;
            changed
        });
    }

    /// Per-key order: the open batch waits while a batch with one of its keys is in flight.
    fn open_may_go(&self) -> bool {
        self.open.waits_for.is_none_or(|seq| self.key_order.is_done(seq)) && self.standby_has(self.open.needs)
    }

    /// Whether every synchronous standby has flushed `lsn` (always, without any).
    fn standby_has(&self, lsn: Lsn) -> bool {
        self.standby.as_ref().is_none_or(|rx| *rx.borrow() >= lsn)
    }

    fn on_done(&mut self, done: Done) -> Result<(), CaptureError> {
        let oldest_commit = self.inflight_oldest.pop_front().flatten();
        self.traces.completed(&self.cfg.slot, done.result.is_ok());
        self.key_order.completed();
        self.metrics.inflight_batches.set(self.inflight.len() as i64);
        done.result?;
        self.acks.batch_done();
        // A backfill chunk is done once Kinesis holds everything up to its high watermark:
        // its records need not be kept for a replay any longer.
        self.beacons.backfill.acked(self.acks.flushed());
        self.beacons.acks.beat();
        self.metrics.batches_completed.inc();
        if let Some(commit) = oldest_commit {
            let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
            self.metrics
                .commit_to_ack_seconds
                .observe((now - commit).max(0.0));
        }
        self.metrics.flushed_lsn.set(self.acks.flushed().0 as i64);
        Ok(())
    }

    fn submit_open(&mut self) {
        let seq = self
            .key_order
            .submitted(self.open.records().iter().map(|r| r.partition_key.as_str()));
        let (batch, oldest) = self.open.take(seq);
        let completes = self.acks.submit();
        tracing::trace!(seq = batch.seq, records = batch.records.len(), completes = ?completes, "submitting batch");
        let completion = self.sink.submit(batch);
        self.inflight.push_back(Box::pin(async move {
            Done {
                result: completion.await.unwrap_or(Err(SinkError::Gone)),
            }
        }));
        self.inflight_oldest.push_back(oldest);
        self.traces.submitted();
        debug_assert_eq!(
            self.acks.in_flight(),
            self.inflight.len(),
            "one completion per batch"
        );
        self.metrics.inflight_batches.set(self.inflight.len() as i64);
    }

    fn on_keepalive(&mut self, wal_end: Lsn, server_time: i64) {
        self.metrics.server_wal_end_lsn.set(wal_end.0 as i64);
        self.acks.idle_at(wal_end, Some(server_time));
        self.metrics.flushed_lsn.set(self.acks.flushed().0 as i64);
        let lag = wal_end.0.saturating_sub(self.acks.flushed().0);
        self.metrics
            .slot_lag_bytes
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    fn update_age_metric(&self) {
        let oldest = self
            .inflight_oldest
            .iter()
            .flatten()
            .chain(self.open.oldest_commit.iter())
            .copied()
            .reduce(f64::min);
        let age = oldest.map_or(0.0, |t| {
            (chrono::Utc::now().timestamp_micros() as f64 / 1e6 - t).max(0.0)
        });
        self.metrics.oldest_unpublished_age_seconds.set(age);
    }
}

/// Resolves when the standbys' position changes (never without a standby gate).
async fn standby_moved(rx: Option<&mut tokio::sync::watch::Receiver<Lsn>>) -> Option<()> {
    match rx {
        Some(rx) => rx.changed().await.ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
