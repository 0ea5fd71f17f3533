//! Outbox recovery: the outbox table is the recovery log.
//!
//! When the slot is gone — dropped, invalidated by `max_slot_wal_keep_size`, or absent on a
//! promoted standby (PostgreSQL < 17 does not copy logical slots) — the changes it held are
//! gone too, but the events are still rows of the outbox. Capture then, in one transaction:
//!
//! 1. creates a new slot with `USE_SNAPSHOT`: the transaction sees exactly what committed
//!    before the slot's consistent point, and the slot streams exactly what commits after it;
//! 2. re-publishes, from that snapshot, every outbox row whose `occurred_at` is at or after the
//!    last delivered commit (the delivery record, see `delivery`) minus `--resync-margin`, as DMS
//!    `load` records, and waits until Kinesis holds them all;
//! 3. streams from the consistent point.
//!
//! No gap: a row not delivered committed after the recorded commit, so its transaction began
//! at most the margin (the longest transaction allowed) before it, and `occurred_at` is set in
//! that transaction. Duplicates are allowed (consumers dedupe by event id). It proves
//! completeness or stops: without a delivery record, with published tables other than the
//! outbox (their changes cannot be re-derived), or when `bridge outbox prune` may already have
//! deleted rows of the window, it stops with the reason and what to do.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::delivery::{self, Delivered, DeliveryLog, Identity, ResyncCursor, ResyncState};
use super::progress::Progress;
use super::snapshot_load::{create_slot_with_snapshot, load_reads, TableRead};
use super::{CaptureConfig, CaptureError};
use crate::dms::TxContext;
use crate::lsn::Lsn;
use crate::metrics::Metrics;
use crate::replication::slot::{self, SlotError};
use crate::replication::{ReplicationConnection, ReplicationError};
use crate::sink::Sink;

/// What to do when the slot is gone (`--on-slot-loss`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnSlotLoss {
    /// Re-publish the outbox rows that may have been missed, then stream from a new slot.
    ResyncOutbox,
    /// Stop with the reason (an operator recovers by hand: docs: Failover and recovery).
    Stop,
}

/// How capture recovers a lost slot.
#[derive(Clone, Debug)]
pub struct Recovery {
    pub log: DeliveryLog,
    pub policy: OnSlotLoss,
    /// How far before the last delivered commit re-publishing starts: the longest transaction
    /// the monolith runs (its `occurred_at` may be that much older than its commit).
    pub margin: Duration,
}

/// Why the slot cannot be streamed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotLoss {
    /// Dropped, or never on this server (a promoted standby).
    Missing,
    /// `wal_status = lost`: Postgres removed WAL the slot still needed.
    Lost,
    /// Invalidated while streaming.
    Invalidated,
    /// The server is another database system than the one the delivery record names.
    OtherSystem,
    /// A resync was cut short: its slot may not stream until the rows are all re-published.
    Unfinished,
}

impl SlotLoss {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Lost => "lost",
            Self::Invalidated => "invalidated",
            Self::OtherSystem => "other-system",
            Self::Unfinished => "unfinished",
        }
    }

    /// The loss an error reports, if it is one.
    pub fn of(err: &CaptureError) -> Option<Self> {
        match err {
            CaptureError::SlotDropped(_) => Some(Self::Missing),
            CaptureError::Slot(SlotError::SlotLost { .. }) => Some(Self::Lost),
            CaptureError::SlotInvalidated { .. } => Some(Self::Invalidated),
            CaptureError::OtherSystem { .. } => Some(Self::OtherSystem),
            _ => None,
        }
    }
}

/// Where a resync reports progress: the process's metrics, and the health beacons that must
/// see it move (a long resync is not a stuck capture).
#[derive(Clone, Copy)]
pub struct Watch<'a> {
    pub metrics: &'a Metrics,
    pub beacons: &'a super::session::Beacons,
}

/// Re-publishes the outbox rows that may have been missed and returns where streaming starts
/// (`None`: shutdown came first; the next start does it again).
pub async fn resync(
    cfg: &CaptureConfig,
    recovery: &Recovery,
    sink: &dyn Sink,
    watch: Watch<'_>,
    loss: SlotLoss,
    last: Option<Delivered>,
    shutdown: &CancellationToken,
) -> Result<Option<(Progress, Identity)>, CaptureError> {
    let Watch { metrics, beacons } = watch;
    let client = slot::query_client(&cfg.target).await?;
    let (last, window) = possible(cfg, recovery, &client, loss, last).await?;
    let outbox = &cfg.routes.outbox;
    let started = Utc::now();
    // Whatever the loss, a resync of this slot still running (cut short by a restart, or by an
    // error of this process that it retries) resumes where it stood if its slot is still there.
    let previous = recovery.log.read_resync().await?;
    let resumable = match &previous {
        Some(p) if p.running => resumable(&client, &cfg.slot, p.clone()).await?,
        _ => None,
    };
    let relation = super::catalog::table_relation(&client, outbox)
        .await
        .map_err(SlotError::from)?;
    let key_columns: Vec<usize> = slot::primary_keys(&client, &cfg.publication)
        .await?
        .get(outbox)
        .map(|names| {
            names
                .iter()
                .filter_map(|n| relation.columns.iter().position(|c| &c.name == n))
                .collect()
        })
        .unwrap_or_default();
    let occurred_at = relation
        .columns
        .iter()
        .position(|c| c.name == cfg.routes.outbox_occurred_at);

    let mut conn = ReplicationConnection::connect(&cfg.target).await?;
    let identity = identify(&mut conn).await?;
    conn.simple_query("BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ")
        .await?;
    let (mut state, tail, filenode) = match resumable {
        Some((state, lsn)) => {
            // The slot this resync made is still there, at its consistent point: rows before
            // the cursor are in Kinesis, rows committed since are the slot's. Any snapshot
            // now holds the rest.
            let filenode = lock_and_read_file(&mut conn, outbox).await?;
            let tail = resume_tail(&state, filenode);
            tracing::warn!(
                slot = %cfg.slot,
                lsn = %lsn,
                rows = state.rows,
                resume = %tail,
                "resuming the outbox resync a restart cut short"
            );
            (state, tail, filenode)
        }
        None => {
            if previous.as_ref().is_some_and(|p| p.running) {
                tracing::warn!(slot = %cfg.slot, "the outbox resync a restart cut short cannot resume (its slot is gone): starting it again");
            }
            drop_slot(&client, &cfg.slot).await?;
            // Server time before the slot exists: whatever the snapshot lacks commits after it.
            let since = super::catalog::server_now(&client)
                .await
                .map_err(SlotError::from)?;
            let lsn = create_slot_with_snapshot(&mut conn, &cfg.slot, cfg.failover_slot).await?;
            let filenode = lock_and_read_file(&mut conn, outbox).await?;
            let state = ResyncState {
                running: true,
                started: started.timestamp_micros(),
                window_from: window.timestamp_micros(),
                rows: 0,
                lsn: Some(lsn),
                reason: loss.as_str().into(),
                since: Some(since),
                cursor: None,
            };
            metrics.slot_resyncs.inc();
            tracing::warn!(
                slot = %cfg.slot,
                loss = loss.as_str(),
                last_delivered_lsn = %last.lsn,
                last_delivered_commit = %last.committed_at().to_rfc3339(),
                window_from = %window.to_rfc3339(),
                lsn = %lsn,
                "the replication slot is gone: re-publishing the outbox rows that may have been missed"
            );
            // Rows of one transaction share `occurred_at`; `ctid` keeps them in the order they
            // were inserted (an aggregate's versions in order), as far as the heap allows.
            let tail = format!("WHERE occurred_at >= '{}'::timestamptz", window.to_rfc3339());
            (state, tail, filenode)
        }
    };
    recovery.log.write_resync(&state).await?;
    drop(client);
    let (Some(lsn), Some(since)) = (state.lsn, state.since) else {
        return Err(ReplicationError::Protocol("a resync without its slot's position".into()).into());
    };
    let read = TableRead {
        table: outbox.clone(),
        relation,
        key_columns,
        tail: format!("{tail} ORDER BY occurred_at, ctid"),
        cursor: occurred_at,
    };
    let tx = TxContext {
        xid: 0,
        commit_lsn: lsn,
        commit_time: delivery::to_pg_time(Utc::now()),
    };
    let before = state.rows;
    let mut last_written = std::time::Instant::now();
    let log = &recovery.log;
    let state_ref = &mut state;
    let work = async {
        let rows = load_reads(&mut conn, cfg, sink, std::slice::from_ref(&read), &tx, |rows, at| {
            // A resync is progress too: /healthz must not call it stuck (and have it killed).
            beacons.input.beat();
            beacons.acks.beat();
            state_ref.rows = before + rows;
            if let Some((micros, ctid)) = at {
                state_ref.cursor = Some(ResyncCursor {
                    occurred_at: micros,
                    ctid,
                    filenode,
                });
            }
            // At most every few seconds: tag writes are rate-limited per account.
            let due = last_written.elapsed() >= PROGRESS_EVERY;
            if due {
                last_written = std::time::Instant::now();
            }
            let snapshot = state_ref.clone();
            async move {
                if due {
                    if let Err(error) = log.write_resync(&snapshot).await {
                        tracing::warn!(error = %error, "cannot record the resync's progress; a restart re-sends more");
                    }
                    tracing::info!(rows = snapshot.rows, "outbox resync progress");
                }
            }
        })
        .await?;
        conn.simple_query("COMMIT").await?;
        conn.close().await?;
        Ok::<u64, CaptureError>(rows)
    };
    let rows = tokio::select! {
        done = work => done?,
        () = shutdown.cancelled() => return Ok(None),
    };
    let delivered = Delivered {
        lsn,
        commit_time: since,
        identity: identity.clone(),
    };
    recovery.log.write(&delivered).await?;
    super::slot_marker::mark_created(
        recovery.log.kinesis(),
        recovery.log.stream(),
        &cfg.slot,
        &lsn.to_string(),
    )
    .await?;
    state.running = false;
    state.rows = before + rows;
    recovery.log.write_resync(&state).await?;
    metrics.resync_rows.inc_by(rows);
    tracing::warn!(
        slot = %cfg.slot,
        lsn = %lsn,
        rows = state.rows,
        timeline = identity.timeline,
        seconds = (Utc::now() - started).num_milliseconds() as f64 / 1000.0,
        "outbox resync done: streaming from the new slot"
    );
    Ok(Some((
        Progress::starting_at_time(lsn, delivered.commit_time),
        identity,
    )))
}

/// Whether the outbox can cover what the lost slot held: a delivery record says from when, no
/// other table is published, and prune has not deleted into the window. The last delivered
/// commit and the window's start, or why not with the remedy.
async fn possible(
    cfg: &CaptureConfig,
    recovery: &Recovery,
    client: &tokio_postgres::Client,
    loss: SlotLoss,
    last: Option<Delivered>,
) -> Result<(Delivered, DateTime<Utc>), CaptureError> {
    let impossible = |reason: String, remedy: String| CaptureError::ResyncImpossible {
        slot: cfg.slot.clone(),
        loss: loss.as_str(),
        reason,
        remedy,
    };
    let Some(last) = last else {
        return Err(impossible(
            "there is no delivery record (tag outbox-bridge.delivered.<slot> on the stream): nothing says \
             how far delivery got"
                .into(),
            "re-publish by hand what consumers may lack, then run `bridge setup --recreate-slot`".into(),
        ));
    };
    // What the publication holds, not only what --tables names: an operator may have added a
    // table (`ALTER PUBLICATION … ADD TABLE`), and its changes of the gap are gone with the slot.
    let (all_tables, published) = slot::published_tables(client, &cfg.publication).await?;
    let mut others: Vec<String> = cfg
        .tables
        .iter()
        .chain(&published)
        .filter(|t| !cfg.routes.is_outbox(t))
        .map(ToString::to_string)
        .collect();
    others.sort();
    others.dedup();
    if all_tables {
        others.insert(0, format!("publication {} is FOR ALL TABLES", cfg.publication));
    }
    if !others.is_empty() {
        return Err(impossible(
            format!(
                "tables other than the outbox are published ({}): their changes since {} cannot be re-derived \
                 from the outbox",
                others.join(", "),
                last.committed_at().to_rfc3339()
            ),
            "run `bridge setup --recreate-slot`, then re-send those tables' current rows (a full load) to \
             their consumers"
                .into(),
        ));
    }
    let window = last.committed_at() - chrono::Duration::from_std(recovery.margin).unwrap_or_default();
    let outbox = &cfg.routes.outbox;
    if let Some(pruned_before) = crate::outbox_horizon::pruned_before(client, outbox)
        .await
        .map_err(SlotError::from)?
    {
        if pruned_before > window {
            return Err(impossible(
                format!(
                    "`bridge outbox prune` deleted rows of {outbox} that occurred before {}, and the rows to \
                     re-publish start at {} (last delivered commit {} minus --resync-margin): some may be gone",
                    pruned_before.to_rfc3339(),
                    window.to_rfc3339(),
                    last.committed_at().to_rfc3339()
                ),
                format!(
                    "make sure consumers have every event of {outbox} since {}, then run `bridge setup \
                     --recreate-slot`; keep the outbox longer than the longest outage you want recovered \
                     automatically",
                    window.to_rfc3339()
                ),
            ));
        }
    }
    Ok((last, window))
}

/// How often a running resync records its progress on the stream.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Locks the outbox against rewrites (`VACUUM FULL`, `CLUSTER`: they need an exclusive lock)
/// for the rest of the read's transaction on `conn`, then reads which file the read scans: the
/// cursor's `ctid`s mean something only in that file.
async fn lock_and_read_file(
    conn: &mut ReplicationConnection,
    outbox: &crate::table::TableName,
) -> Result<u32, CaptureError> {
    conn.simple_query(&format!("LOCK TABLE {} IN ACCESS SHARE MODE", outbox.quoted()))
        .await?;
    let rows = conn
        .simple_query(&format!(
            "SELECT pg_relation_filenode('{}'::regclass)",
            outbox.quoted().replace('\'', "''")
        ))
        .await?;
    Ok(rows
        .first()
        .and_then(|row| row.first().cloned().flatten())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// A resync cut short may resume when the slot it made is still at its consistent point (nothing
/// streamed from it: streaming only starts once the resync is done).
async fn resumable(
    client: &tokio_postgres::Client,
    slot: &str,
    state: ResyncState,
) -> Result<Option<(ResyncState, Lsn)>, SlotError> {
    let (Some(lsn), Some(_)) = (state.lsn, state.since) else {
        return Ok(None);
    };
    let row = client
        .query_opt(
            "SELECT coalesce(confirmed_flush_lsn::text, ''), coalesce(wal_status, '') \
             FROM pg_replication_slots WHERE slot_name = $1 AND plugin = 'pgoutput'",
            &[&slot],
        )
        .await?;
    let usable = row.is_some_and(|r| {
        r.get::<_, String>(0).parse::<Lsn>().ok() == Some(lsn) && r.get::<_, String>(1) != "lost"
    });
    Ok(usable.then_some((state, lsn)))
}

/// The rows a resumed resync still owes: from its window, past its cursor. The cursor's `ctid`
/// holds only in the file it was read from; after a rewrite every row of the cursor's instant
/// goes again (duplicates, never a gap).
fn resume_tail(state: &ResyncState, filenode: u32) -> String {
    let window = DateTime::from_timestamp_micros(state.window_from).unwrap_or_default();
    let mut tail = format!("WHERE occurred_at >= '{}'::timestamptz", window.to_rfc3339());
    if let Some(cursor) = state.cursor {
        let at = DateTime::from_timestamp_micros(cursor.occurred_at)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        if cursor.filenode == filenode && filenode != 0 {
            tail.push_str(&format!(
                " AND (occurred_at, ctid) > ('{at}'::timestamptz, '{}'::tid)",
                cursor.tid()
            ));
        } else {
            tail.push_str(&format!(" AND occurred_at >= '{at}'::timestamptz"));
        }
    }
    tail
}

/// Drops the slot of this name, if any: one that exists here cannot be streamed from (lost, or
/// made by a resync that cannot resume).
async fn drop_slot(client: &tokio_postgres::Client, slot: &str) -> Result<(), SlotError> {
    client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(())
}

/// `IDENTIFY_SYSTEM`: the system identifier and timeline of the server behind `conn`.
pub async fn identify(conn: &mut ReplicationConnection) -> Result<Identity, ReplicationError> {
    let rows = conn.simple_query("IDENTIFY_SYSTEM").await?;
    let row = rows
        .first()
        .ok_or_else(|| ReplicationError::Protocol("IDENTIFY_SYSTEM returned no row".into()))?;
    let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    Ok(Identity {
        system: field(0),
        timeline: field(1).parse().unwrap_or(0),
    })
}
