//! `bridge outbox prune`: outbox retention that never deletes a row the slot has not confirmed.
//!
//! Why it is safe, whatever a row's `occurred_at` says: the run takes a snapshot S, then reads
//! the WAL insert position W. Every transaction that finished before S inserted its commit record before
//! W. The run waits until the slot's `confirmed_flush_lsn` reaches W — capture acknowledges a
//! position only once Kinesis holds every transaction committed before it — and then deletes
//! only rows inserted by a transaction older than every transaction still running at S (`xmin`
//! precedes S's xmin). So a row is deleted only if it is delivered *and* older than the
//! retention; a row committed late with an old timestamp, or one capture has not sent yet,
//! stays. Rows that the rule passes over this time (a transaction that was running at S) go on
//! a later run. Each batch is its own short transaction: no long lock on the outbox.
//!
//! Each run that deleted rows records its cut (`pruned_before`: rows that occurred before it
//! may be gone) in `<outbox schema>.outbox_bridge_pruned`, which the outbox resync reads: it
//! must not promise to re-publish rows that may no longer exist (see `capture::resync`).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::replication::slot::{self, SlotError};
use crate::replication::PgTarget;
use crate::table::TableName;

pub struct PruneConfig {
    pub target: PgTarget,
    pub slot: String,
    pub outbox: TableName,
    /// Rows whose `occurred_at` is older than this are deleted once delivered.
    pub older_than: Duration,
    /// Rows per delete statement.
    pub batch: i64,
    /// How long to wait for the slot to confirm the run's starting position.
    pub wait: Duration,
}

/// What a run did.
#[derive(Debug, Serialize)]
pub struct Pruned {
    pub table: String,
    pub deleted: u64,
    pub batches: u64,
    /// The WAL position every deleted row's transaction committed before.
    pub horizon_lsn: String,
    /// Rows older than the retention that stay (not yet deliverable by the rule above).
    pub kept_older_rows: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Connect(#[from] SlotError),
    #[error("outbox prune on {table}: {source}")]
    Query {
        table: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("replication slot `{0}` does not exist: nothing can be proved delivered, nothing deleted")]
    SlotMissing(String),
    #[error(
        "the slot `{slot}` has not confirmed {needed} within {waited_secs} s (it is at {confirmed}): \
         capture is stopped or behind, so nothing was deleted; run again once it is streaming"
    )]
    NotConfirmed {
        slot: String,
        needed: String,
        confirmed: String,
        waited_secs: u64,
    },
}

pub async fn prune(cfg: &PruneConfig) -> Result<Pruned, PruneError> {
    let client = slot::query_client(&cfg.target).await?;
    let table = cfg.outbox.quoted();
    let query_error = |source| PruneError::Query {
        table: cfg.outbox.to_string(),
        source,
    };
    // The snapshot first, the WAL position after it: see the module's comment.
    let snapshot: String = client
        .query_one("SELECT pg_current_snapshot()::text", &[])
        .await
        .map_err(query_error)?
        .get(0);
    // The insert position, not the write position: with `synchronous_commit = off` a commit is
    // visible once inserted, before the WAL writer writes it, so a visible commit can lie past
    // `pg_current_wal_lsn()`.
    let horizon: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .map_err(query_error)?
        .get(0);
    let started = Instant::now();
    loop {
        let row = client
            .query_opt(
                "SELECT confirmed_flush_lsn::text, confirmed_flush_lsn >= $2::text::pg_lsn \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&cfg.slot, &horizon],
            )
            .await
            .map_err(query_error)?
            .ok_or_else(|| PruneError::SlotMissing(cfg.slot.clone()))?;
        let confirmed: Option<String> = row.get(0);
        if row.get::<_, Option<bool>>(1) == Some(true) {
            break;
        }
        if started.elapsed() >= cfg.wait {
            return Err(PruneError::NotConfirmed {
                slot: cfg.slot.clone(),
                needed: horizon,
                confirmed: confirmed.unwrap_or_else(|| "nothing".into()),
                waited_secs: cfg.wait.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let older_than = cfg.older_than.as_secs_f64();
    // A row qualifies when it is older than the retention and its inserting transaction
    // precedes every transaction running at the snapshot (age() compares xids modulo
    // wraparound; a frozen row's xmin counts as the oldest of all).
    let qualifies = "occurred_at < now() - make_interval(secs => $1) \
         AND age(xmin) > age(((pg_snapshot_xmin($2::text::pg_snapshot)::text::numeric % 4294967296)::text)::xid)";
    let delete = format!(
        "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {qualifies} LIMIT $3))"
    );
    // The cut is recorded before anything is deleted: a run that dies halfway has still said so.
    crate::outbox_horizon::record(&client, &cfg.outbox, cfg.older_than)
        .await
        .map_err(query_error)?;
    let (mut deleted, mut batches) = (0, 0);
    loop {
        let n = client
            .execute(&delete, &[&older_than, &snapshot, &cfg.batch])
            .await
            .map_err(query_error)?;
        if n == 0 {
            break;
        }
        deleted += n;
        batches += 1;
        tracing::info!(table = %cfg.outbox, rows = n, total = deleted, "outbox rows pruned");
    }
    let kept: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE occurred_at < now() - make_interval(secs => $1)"),
            &[&older_than],
        )
        .await
        .map_err(query_error)?
        .get(0);
    Ok(Pruned {
        table: cfg.outbox.to_string(),
        deleted,
        batches,
        horizon_lsn: horizon,
        kept_older_rows: kept,
    })
}

/// `90s`, `15m`, `36h`, `7d`, `2w`: a number and a unit.
pub fn parse_duration(text: &str) -> Result<Duration, eventing::duration::DurationError> {
    eventing::duration::parse(text)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        assert!(parse_duration("7").unwrap_err().to_string().contains("unit"));
        assert!(parse_duration("7y")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        assert!(parse_duration("d").is_err());
    }
}
