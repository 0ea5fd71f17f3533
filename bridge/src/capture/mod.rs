//! `bridge capture`: Postgres logical replication → a sink (Kinesis), under the acknowledgement rule.
//!
//! # Progress tracking
//!
//! ```text
//!  WAL ─▶ decode ─▶ open batch ──submit──▶ in flight, in source order ──completion──▶ Progress.flushed
//!                    │                                                                   │
//!                    └ completes = end LSN of the last commit whose                       ▼
//!                      records are all in this batch or an earlier one      standby status update
//! ```
//!
//! A batch carries the end LSN of the last transaction it completes. Completions are collected
//! in the order the batches were submitted, so `flushed` reaches a transaction's commit only
//! after every record of it and of all earlier transactions was accepted. The standby status
//! update sends `flushed` and nothing else. When nothing is open, in flight or mid-transaction,
//! the keepalive's WAL end is acknowledged too, so an idle database (or one busy only with
//! unpublished tables) does not keep WAL forever. A crash anywhere replays from `flushed`:
//! records may repeat, none is lost.
//!
//! The rule lives in `acks::AckTracker` (no I/O, unit-tested); `session` is the select loop
//! around it, generic over `session::ReplicationStream` so `session_tests` drive it with a
//! scripted walsender and a sink that holds, refuses or fails after writing.
//!
//! Memory is bounded: at most `window` batches in flight, each within PutRecords' limits, and
//! WAL is not read while the open batch is full and cannot be submitted.

mod acks;
pub mod backfill;
mod batch;
pub mod catalog;
pub mod delivery;
mod fit;
pub mod heartbeat;
mod key_order;
mod progress;
pub mod resync;
pub mod routes;
mod session;
#[cfg(test)]
mod session_tests;
mod snapshot;
pub mod snapshot_load;
pub mod standby;
pub mod standby_rule;
mod standby_source;
mod unseen;
#[cfg(test)]
mod status_interval_tests {
    use std::time::Duration;

    #[test]
    fn follows_the_servers_timeout_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(super::status_interval(None), ms(1000));
        assert_eq!(super::status_interval(Some(ms(60_000))), ms(1000));
        assert_eq!(super::status_interval(Some(ms(5_000))), ms(500));
        assert_eq!(super::status_interval(Some(ms(200))), ms(100));
    }
}
pub mod slot_marker;
mod timeline;
mod traces;
mod wal_age;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::dms::EncodeOptions;
use crate::metrics::Metrics;
use crate::replication::slot::{self, SlotError};
use crate::replication::{PgTarget, ReplicationConnection, ReplicationError};
use crate::sink::{Sink, SinkError};
use crate::table::TableName;
use delivery::Identity;
use eventing::retry::Backoff;
pub use progress::Progress;
pub use resync::{OnSlotLoss, Recovery, SlotLoss};
pub use routes::TableRoutes;

#[derive(Clone, Debug)]
pub struct CaptureConfig {
    pub target: PgTarget,
    /// Where writes go: the heartbeat, the publication's DDL, the nudge a slot created on a hot
    /// standby waits for. `target` itself unless capture reads from a standby.
    pub primary: PgTarget,
    pub slot: String,
    pub publication: String,
    pub tables: Vec<TableName>,
    pub routes: TableRoutes,
    pub encode: EncodeOptions,
    /// `pg_logical_emit_message` prefix of the table-less outbox.
    pub message_prefix: String,
    /// Batches in flight at once.
    pub window: usize,
    /// How long a batch may wait for more records before it is sent.
    pub linger: Duration,
    /// How often a standby status update goes out even when nothing changed.
    pub status_interval: Duration,
    /// How long shutdown waits for in-flight batches.
    pub shutdown_timeout: Duration,
    /// Retained WAL above which the slot watcher warns.
    pub retained_wal_warn_bytes: i64,
    /// Retained WAL older than this is logged as a warning at every check.
    pub retained_wal_warn_age: Duration,
    /// How often a heartbeat is written (`None`: never).
    pub heartbeat: Option<Duration>,
    /// Silence from Postgres longer than this means a dead connection (see `Session::stream`).
    pub replication_timeout: Duration,
    /// Which physical standbys must have flushed a commit before it is published (see
    /// `standby`); `None`: none.
    pub synchronous_standby: Option<standby_rule::StandbyRule>,
    /// Whether the slot is made (or turned into) a failover slot (`--failover-slot`).
    pub failover_slot: slot::FailoverSlot,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(
        "the replication slot `{0}` was dropped (or this server never had it: a promoted standby) after it \
         was created for this stream; it is not recreated blindly, since that would skip every change made \
         meanwhile. With --on-slot-loss resync-outbox capture re-publishes the outbox instead; see the docs, \
         Failover and recovery (`bridge setup --recreate-slot` once the gap is dealt with)"
    )]
    SlotDropped(String),
    #[error(
        "the replication slot `{slot}` was invalidated while streaming (Postgres removed WAL it still needed). \
         See docs: Failover and recovery"
    )]
    SlotInvalidated {
        slot: String,
        #[source]
        source: ReplicationError,
    },
    #[error(
        "the server is database system {found}, but the delivery record of slot `{slot}` is of system \
         {recorded}: its slot's positions mean nothing here. See docs: Failover and recovery"
    )]
    OtherSystem {
        slot: String,
        recorded: String,
        found: String,
    },
    #[error(
        "the replication slot `{slot}` is {loss} and the outbox resync cannot prove it would lose nothing: \
         {reason}. To recover: {remedy} (docs: Failover and recovery)"
    )]
    ResyncImpossible {
        slot: String,
        loss: &'static str,
        reason: String,
        remedy: String,
    },
    #[error(transparent)]
    Marker(#[from] slot_marker::MarkerError),
    #[error(
        "the replication slot `{slot}` belongs to a `bridge setup --full-load` that did not finish: the rows \
         it had not sent yet are in neither the stream nor the slot, so streaming from it would lose them. \
         Run `bridge setup --full-load` again (with the same --slot, --publication and --tables): it drops \
         this slot and loads every row again from a new snapshot (or, once those rows were re-sent some \
         other way, `bridge setup --recreate-slot`)"
    )]
    FullLoadUnfinished { slot: String },
}

impl eventing::retry::Transient for CaptureError {
    fn is_transient(&self) -> bool {
        self.is_retryable()
    }
}

impl CaptureError {
    /// The one place capture decides whether reconnecting can help. Sink errors reaching here are
    /// fatal: the sink retries transient failures itself.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Replication(err) => err.is_retryable(),
            Self::Slot(err) => err.is_retryable(),
            Self::Marker(err) => err.is_transient(),
            Self::FullLoadUnfinished { .. }
            | Self::Sink(_)
            | Self::SlotDropped(_)
            | Self::SlotInvalidated { .. }
            | Self::OtherSystem { .. }
            | Self::ResyncImpossible { .. } => false,
        }
    }
}

/// Makes sure the slot exists before streaming: created when it never was (recorded as a tag on
/// the stream), an error when it was and is gone (unless `recreate` says the gap was dealt with).
pub async fn ensure_slot_recorded(
    cfg: &CaptureConfig,
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    recreate: bool,
) -> Result<Source, CaptureError> {
    // Checked first, whether or not the slot still exists: a new slot would skip the rows too.
    // `--recreate-slot` is the operator saying the gap was dealt with (re-sent by other means).
    if slot_marker::full_load_unfinished(kinesis, stream, &cfg.slot).await? {
        if !recreate {
            return Err(CaptureError::FullLoadUnfinished {
                slot: cfg.slot.clone(),
            });
        }
        tracing::warn!(slot = %cfg.slot, "--recreate-slot: the unfinished full load is abandoned; the rows it had not sent are not sent");
        slot_marker::mark_full_load(kinesis, stream, &cfg.slot, "state=abandoned").await?;
    }
    let seen_before = slot_marker::was_created(kinesis, stream, &cfg.slot).await?;
    let source = match prepare_source(cfg, !seen_before || recreate).await {
        Err(CaptureError::SlotDropped(slot)) if seen_before => return Err(CaptureError::SlotDropped(slot)),
        other => other?,
    };
    if source.slot.created || !seen_before {
        slot_marker::mark_created(
            kinesis,
            stream,
            &cfg.slot,
            &source.slot.confirmed_flush.to_string(),
        )
        .await?;
    }
    if let Some(commit_time) = source.slot.created_after {
        // A new slot starts the delivery record: nothing before it is owed, so a slot lost
        // before capture ever acknowledged anything can still be recovered from the outbox.
        let mut conn = ReplicationConnection::connect(&cfg.target).await?;
        let identity = resync::identify(&mut conn).await?;
        if let Err(error) = conn.close().await {
            tracing::debug!(error = %error, "closing the replication connection");
        }
        let delivered = delivery::Delivered {
            lsn: source.slot.confirmed_flush,
            commit_time,
            identity,
        };
        delivery::DeliveryLog::new(kinesis.clone(), stream, &cfg.slot)
            .write(&delivered)
            .await?;
    }
    Ok(source)
}

/// Runs capture until `shutdown` fires or a fatal error occurs, reconnecting with backoff after
/// transient failures. The slot must exist (see `ensure_slot_recorded`) unless `recovery` says
/// to resync the outbox when it is gone.
pub async fn run(
    cfg: &CaptureConfig,
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    recovery: Option<Recovery>,
) -> Result<(), CaptureError> {
    let watcher = tokio::spawn(watch_slot(cfg.clone(), metrics.clone(), shutdown.clone()));
    let _stop_watcher = AbortOnDrop(watcher);
    let _stop_heartbeat = cfg.heartbeat.map(|every| {
        AbortOnDrop(tokio::spawn(heartbeat::run(
            cfg.primary.clone(),
            every,
            shutdown.clone(),
        )))
    });
    let mut progress: Option<Progress> = None;
    let mut backoff = Backoff::call();
    let mut beacons = session::Beacons::new(&metrics.health);
    let _stop_standby_watch = cfg.synchronous_standby.clone().map(|rule| {
        let (released, rx) = tokio::sync::watch::channel(crate::lsn::Lsn::default());
        beacons.standby = Some(rx);
        // Not stopped by the shutdown: `finish` still waits for the standbys (up to its
        // deadline) to let the open batch go; the guard stops it when `run` returns.
        AbortOnDrop(tokio::spawn(standby::watch_standbys(
            cfg.target.clone(),
            rule,
            released,
            metrics.health.clone(),
            CancellationToken::new(),
        )))
    });
    let recorder = CancellationToken::new();
    let _stop_recorder = recorder.clone().drop_guard();
    let (mut recorded, mut pending_loss) = (None, None);
    if let Some(r) = &recovery {
        let startup = Backoff::call();
        let read = eventing::retry::while_transient_until(
            "read the delivery record",
            startup,
            &shutdown,
            || async { Ok::<_, CaptureError>((r.log.read().await?, r.log.read_resync().await?)) },
        )
        .await?;
        let Some((delivered, resync_state)) = read else {
            return Ok(());
        };
        // The system the record speaks of: a server of another system must not be streamed from.
        beacons
            .reports
            .identity
            .send_replace(delivered.as_ref().map(|d| d.identity.clone()));
        recorded = delivered;
        if resync_state.is_some_and(|s| s.running) {
            pending_loss = Some(SlotLoss::Unfinished);
        }
        tokio::spawn(delivery::record(
            r.log.clone(),
            beacons.reports.clone(),
            recorder.clone(),
        ));
        let jobs = backfill::BackfillLog::new(r.log.kinesis().clone(), r.log.stream(), &cfg.slot);
        tokio::spawn(backfill::run_jobs(
            beacons.backfill.clone(),
            jobs,
            cfg.clone(),
            recorder.clone(),
        ));
    }
    loop {
        let result = match (pending_loss, &recovery) {
            (Some(loss), Some(r)) => {
                // The freshest record: this process's own, else the one read at start.
                let last = beacons.reports.current().or_else(|| recorded.clone());
                let watch = resync::Watch {
                    metrics: &metrics,
                    beacons: &beacons,
                };
                let resynced = resync::resync(cfg, r, sink.as_ref(), watch, loss, last, &shutdown).await;
                match resynced {
                    Ok(None) => return Ok(()),
                    Ok(Some((start, identity))) => {
                        pending_loss = None;
                        progress = Some(start);
                        beacons.reports.identity.send_replace(Some(identity));
                        beacons.reports.progress.send_replace(start);
                        recorded = beacons.reports.current();
                        continue;
                    }
                    Err(err) => Err(err),
                }
            }
            _ => {
                stream_once(
                    cfg,
                    sink.as_ref(),
                    &metrics,
                    &beacons,
                    &mut progress,
                    &mut backoff,
                    &shutdown,
                )
                .await
            }
        };
        match result {
            Ok(()) => {
                final_record(recovery.as_ref(), &beacons).await;
                return Ok(());
            }
            // Stopping while the connection failed: shutdown wins, what was not acked is replayed.
            Err(err) if shutdown.is_cancelled() => {
                tracing::info!(error = %err, "stopped while the connection failed");
                final_record(recovery.as_ref(), &beacons).await;
                return Ok(());
            }
            Err(err)
                if recovery
                    .as_ref()
                    .is_some_and(|r| r.policy == OnSlotLoss::ResyncOutbox)
                    && SlotLoss::of(&err).is_some() =>
            {
                tracing::warn!(error = %err, "the replication slot cannot be streamed from");
                pending_loss = SlotLoss::of(&err);
                // What was acknowledged belongs to the lost slot; the resync says where to start.
                progress = None;
            }
            Err(err) if err.is_retryable() => {
                metrics.reconnects.inc();
                let delay = backoff.next_delay();
                tracing::warn!(error = %err, cause = %eventing::error_chain::source_chain(&err), delay_ms = delay.as_millis() as u64, "replication interrupted, reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return Ok(()),
                }
            }
            Err(err) => return Err(err),
        }
    }
}

/// On a clean stop, the last acknowledged position goes to the delivery record at once.
async fn final_record(recovery: Option<&Recovery>, beacons: &session::Beacons) {
    let (Some(r), Some(current)) = (recovery, beacons.reports.current()) else {
        return;
    };
    match r.log.write(&current).await {
        Ok(()) => tracing::info!(lsn = %current.lsn, "delivery record written"),
        Err(error) => tracing::warn!(error = %error, "cannot write the final delivery record"),
    }
}

pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every 10 s: how much WAL the slot holds back (a gauge, and a warning above the threshold)
/// and whether Postgres still reserves it — a slot falling behind fills the primary's disk, and
/// an operator should hear of it long before `max_slot_wal_keep_size` invalidates the slot.
async fn watch_slot(cfg: CaptureConfig, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut client = None;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut clock = wal_age::WalClock::default();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if client
            .as_ref()
            .is_none_or(|c: &tokio_postgres::Client| c.is_closed())
        {
            client = slot::query_client(&cfg.target).await.ok();
        }
        let Some(c) = &client else { continue };
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&cfg.slot];
        let query = c.query_opt(
            "SELECT (pg_current_wal_lsn() - restart_lsn)::bigint, wal_status, \
                    (pg_current_wal_lsn() - '0/0')::bigint, (restart_lsn - '0/0')::bigint \
             FROM pg_replication_slots WHERE slot_name = $1",
            &params,
        );
        // A query on a silently dropped connection never returns: give up on that connection.
        let Ok(row) = tokio::time::timeout(Duration::from_secs(10), query).await else {
            client = None;
            continue;
        };
        let Ok(Some(row)) = row else { continue };
        let retained: Option<i64> = row.get(0);
        let wal_status: Option<String> = row.get(1);
        if let Some(bytes) = retained {
            metrics.slot_retained_wal_bytes.set(bytes);
            if bytes > cfg.retained_wal_warn_bytes {
                tracing::warn!(slot = %cfg.slot, retained_wal_bytes = bytes, threshold = cfg.retained_wal_warn_bytes, "the slot retains a lot of WAL: capture is behind or stuck");
            }
        }
        if let (Some(current), Some(restart)) = (row.get::<_, Option<i64>>(2), row.get::<_, Option<i64>>(3)) {
            let age = clock.observe(Instant::now(), current as u64, restart as u64);
            metrics.slot_retained_wal_age_seconds.set(age.as_secs() as i64);
            if age > cfg.retained_wal_warn_age {
                tracing::warn!(slot = %cfg.slot, retained_wal_age_s = age.as_secs(), threshold_s = cfg.retained_wal_warn_age.as_secs(), "the slot retains old WAL: capture is behind or stuck");
            }
        }
        if wal_status.as_deref() == Some("unreserved") {
            tracing::error!(slot = %cfg.slot, "the slot's WAL is no longer reserved (max_slot_wal_keep_size): it is about to be invalidated");
        }
    }
}

/// Checks (or creates, when absent and allowed) the publication and the slot; returns the
/// slot's state and the server's version number. `bridge setup` calls it too, so a slot can
/// exist before the monolith's first write.
pub async fn prepare_source(cfg: &CaptureConfig, may_create_slot: bool) -> Result<Source, CaptureError> {
    let client = slot::query_client(&cfg.target).await?;
    let inserts_only = cfg.tables.iter().all(|t| cfg.routes.is_outbox(t));
    let server = standby_source::Server::of(&client).await?;
    if server.in_recovery {
        standby_source::check(cfg, &server)?;
        let primary = slot::query_client(&cfg.primary).await?;
        slot::ensure_publication(&primary, &cfg.publication, &cfg.tables, inserts_only).await?;
    } else {
        slot::ensure_publication(&client, &cfg.publication, &cfg.tables, inserts_only).await?;
    }
    let version = server.version;
    // A slot on a standby cannot fail over (17+ refuses it): `auto` makes an ordinary one there.
    let failover = if server.in_recovery && cfg.failover_slot == slot::FailoverSlot::Auto {
        false
    } else {
        cfg.failover_slot.wanted(version)?
    };
    let ensured = slot::ensure_slot(&client, &cfg.slot, may_create_slot, failover);
    let ensured = if server.in_recovery {
        standby_source::while_nudging(&cfg.primary, ensured).await
    } else {
        ensured.await
    };
    let mut state = match ensured {
        Err(SlotError::SlotMissing { slot }) => return Err(CaptureError::SlotDropped(slot)),
        other => other?,
    };
    if version >= 170_000 && state.failover != failover {
        // An existing slot changes only when asked outright: as a failover slot its reader
        // waits for the standbys `synchronized_standby_slots` names, which an upgrade of the
        // bridge alone must not start doing.
        if cfg.failover_slot == slot::FailoverSlot::Auto {
            tracing::warn!(slot = %cfg.slot, failover = state.failover, "the slot predates --failover-slot auto and is left as it is; --failover-slot on (or off) changes it");
        } else {
            set_failover(cfg, failover).await?;
            state.failover = failover;
        }
    }
    let primary_keys = slot::primary_keys(&client, &cfg.publication).await?;
    let wal_sender_timeout_ms: Option<i64> = client
        .query_opt(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_sender_timeout'",
            &[],
        )
        .await
        .map_err(SlotError::from)?
        .map(|row| row.get(0));
    Ok(Source {
        slot: state,
        server_version: version,
        primary_keys,
        wal_sender_timeout: wal_sender_timeout_ms
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(ms.unsigned_abs())),
    })
}

/// `ALTER_REPLICATION_SLOT … (FAILOVER …)` (17+): an existing slot becomes what
/// `--failover-slot` asks for. A slot another walsender streams from is altered on a later start.
async fn set_failover(cfg: &CaptureConfig, failover: bool) -> Result<(), CaptureError> {
    let mut conn = ReplicationConnection::connect(&cfg.target).await?;
    let altered = conn
        .simple_query(&format!(
            "ALTER_REPLICATION_SLOT {} (FAILOVER {failover})",
            crate::sql::quote_ident(&cfg.slot)
        ))
        .await;
    if let Err(error) = conn.close().await {
        tracing::debug!(error = %error, "closing the replication connection");
    }
    match altered {
        Ok(_) => {
            tracing::info!(slot = %cfg.slot, failover, "the slot's failover setting changed");
            Ok(())
        }
        // In use by another walsender (a capture still stopping): streaming goes on, and the
        // next start tries again.
        Err(error) if error.sqlstate() == Some("55006") => {
            tracing::warn!(slot = %cfg.slot, error = %error, "cannot change the slot's failover setting while it is in use");
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// How often a standby status update goes out: a tenth of the server's `wal_sender_timeout`
/// (it drops a standby silent for that long), between 100 ms and 1 s — a second keeps the
/// slot's position fresh for operators and `bridge status` under the default 60 s timeout.
fn status_interval(wal_sender_timeout: Option<Duration>) -> Duration {
    let tenth = wal_sender_timeout.map_or(Duration::from_secs(1), |t| t / 10);
    tenth.clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// What `prepare_source` learnt about the database.
pub struct Source {
    pub slot: slot::SlotState,
    pub server_version: i32,
    pub primary_keys: HashMap<TableName, Vec<String>>,
    /// The server's `wal_sender_timeout` (`None`: disabled).
    pub wal_sender_timeout: Option<Duration>,
}

/// One connection's life: check publication and slot, stream, drain.
async fn stream_once(
    cfg: &CaptureConfig,
    sink: &dyn Sink,
    metrics: &Metrics,
    beacons: &session::Beacons,
    progress: &mut Option<Progress>,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Result<(), CaptureError> {
    let expected = beacons.reports.identity.borrow().clone();
    // Setting up is bounded too: a silently dropped network hangs a connect or a query forever.
    let started = tokio::select! {
        started = tokio::time::timeout(cfg.replication_timeout, start_streaming(cfg, metrics, progress, expected.as_ref())) => started,
        // Shutdown wins over a connection still being made: nothing was read, nothing to hand over.
        () = shutdown.cancelled() => return Ok(()),
    };
    let (mut conn, source, identity) = started.map_err(|_| ReplicationError::Silent {
        secs: cfg.replication_timeout.as_secs(),
    })??;
    beacons.reports.identity.send_replace(Some(identity));
    let progress = progress.get_or_insert_with(|| Progress::starting_at(source.slot.confirmed_flush));
    backoff.reset();

    // Status updates at the pace this server's wal_sender_timeout asks for.
    let cfg = &CaptureConfig {
        status_interval: status_interval(source.wal_sender_timeout),
        ..cfg.clone()
    };
    let mut session = session::Session::new(cfg, sink, metrics, beacons, progress, source.primary_keys);
    let outcome = session
        .stream(&mut conn, shutdown)
        .await
        .map_err(|err| match err {
            // "can no longer get changes from replication slot": max_slot_wal_keep_size was exceeded.
            CaptureError::Replication(source) if source.sqlstate() == Some("55000") => {
                CaptureError::SlotInvalidated {
                    slot: cfg.slot.clone(),
                    source,
                }
            }
            other => other,
        });
    match outcome {
        Ok(()) => {
            session.finish(&mut conn).await;
            if let Err(error) = conn.close().await {
                tracing::debug!(error = %error, "closing the replication connection");
            }
            Ok(())
        }
        // A failed batch means later completions must not count: nothing more is acknowledged.
        Err(err @ CaptureError::Sink(_)) => Err(err),
        Err(err) => {
            // What is in flight may still land: wait for it so the next connection replays less.
            session.drain(shutdown).await?;
            Err(err)
        }
    }
}

/// Checks publication and slot, connects and starts replication where the slot (or what was
/// already acknowledged) stands.
async fn start_streaming(
    cfg: &CaptureConfig,
    metrics: &Metrics,
    progress: &mut Option<Progress>,
    expected: Option<&Identity>,
) -> Result<(ReplicationConnection, Source, Identity), CaptureError> {
    // The slot was created (or found) before `run`; from here on a missing slot was dropped.
    let source = prepare_source(cfg, false).await?;
    let (state, version) = (&source.slot, source.server_version);
    let mut conn = ReplicationConnection::connect(&cfg.target).await?;
    let identity = resync::identify(&mut conn).await?;
    if let Some(recorded) = expected.filter(|e| e.system != identity.system) {
        return Err(CaptureError::OtherSystem {
            slot: cfg.slot.clone(),
            recorded: recorded.system.clone(),
            found: identity.system,
        });
    }
    if let Some(old) = expected.filter(|e| e.timeline != identity.timeline) {
        // Another timeline: what was acknowledged on the old one may lie past the fork, where
        // this server has other commits. Its own slot says where to start (see `timeline`).
        let switch = timeline::switch_point(&mut conn, old.timeline, identity.timeline).await?;
        if let Some(acked) = progress.as_ref().map(Progress::flushed) {
            let past = switch.map_or(acked.0.saturating_sub(state.confirmed_flush.0), |s| {
                acked.0.saturating_sub(s.0)
            });
            if past > 0 {
                metrics.timeline_phantom_bytes.inc_by(past);
                tracing::warn!(
                    slot = %cfg.slot,
                    old_timeline = old.timeline,
                    timeline = identity.timeline,
                    switch = %switch.map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
                    acknowledged = %acked,
                    "records delivered past the timeline switch came from commits the failover took back: possible phantoms"
                );
            }
        }
        tracing::warn!(slot = %cfg.slot, lsn = %state.confirmed_flush, old_timeline = old.timeline, timeline = identity.timeline, "a new timeline: streaming from this server's slot, not from what the old timeline acknowledged");
        *progress = Some(Progress::starting_at(state.confirmed_flush));
    }
    let progress = progress.get_or_insert_with(|| Progress::starting_at(state.confirmed_flush));
    let start = progress.flushed().max(state.confirmed_flush);
    let mut options = vec![
        (
            "proto_version",
            if version >= 140_000 { "2" } else { "1" }.to_owned(),
        ),
        ("publication_names", crate::sql::quote_ident(&cfg.publication)),
    ];
    if version >= 140_000 {
        options.push(("messages", "true".to_owned()));
    }
    conn.start_replication(&cfg.slot, start, &options).await?;
    tracing::info!(slot = %cfg.slot, publication = %cfg.publication, lsn = %start, timeline = identity.timeline, "streaming changes");
    Ok((conn, source, identity))
}
